//! The real PostgreSQL for tests: a fresh database per test, created and
//! dropped by the test, on the server `CHATBUS_TEST_PG_URL` names (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, as `scripts/test.sh`
//! makes sure it answers).
//!
//! PostgreSQL tests never skip: if the server is unreachable they fail,
//! naming the URL and how to start it.

use sqlx::Connection;

/// The administrative URL tests create their databases through.
pub fn admin_url() -> String {
    std::env::var("CHATBUS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The prefix of every test database (`broker-cleanup` drops leftovers).
pub const PREFIX: &str = "chatbus_test_";

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

async fn admin() -> sqlx::PgConnection {
    let url = admin_url();
    sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required for this test and {url} is not reachable: {e}. \
             Run scripts/test.sh (it starts or installs PostgreSQL) or set CHATBUS_TEST_PG_URL."
        )
    })
}

impl TestDatabase {
    /// Creates `chatbus_test_<uuid>`.
    ///
    /// # Panics
    /// When the server is unreachable or refuses.
    pub async fn create() -> Self {
        let name = format!("{PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let base = admin_url();
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => format!("{base}/{name}"),
        };
        Self { url, name }
    }

    /// Drops it (closing whatever is still connected).
    pub async fn drop_now(self) {
        let mut conn = admin().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

/// Drops every database a test left behind (a failed test does not drop
/// its own). Returns how many.
///
/// # Panics
/// When the server is unreachable.
pub async fn drop_leftovers() -> usize {
    let mut conn = admin().await;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{PREFIX}%"))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for name in &names {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
    let _ = conn.close().await;
    names.len()
}

/// The SQLite file of a [`StoreDb::Sqlite`] directory.
fn sqlite_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("store.sqlite")
}

/// A fresh, empty database for a consumer's store: a SQLite file in a
/// directory of its own, or a PostgreSQL database of its own
/// ([`TestDatabase`]). [`StoreDb::finish`] drops it.
#[derive(Debug)]
pub enum StoreDb {
    /// The directory of `store.sqlite`.
    Sqlite(tempfile::TempDir),
    /// A database on the test server.
    Postgres(TestDatabase),
}

impl StoreDb {
    /// SQLite, or PostgreSQL when `postgres`.
    pub async fn new(postgres: bool) -> Self {
        if postgres {
            Self::postgres().await
        } else {
            Self::sqlite()
        }
    }

    /// A SQLite file in a fresh directory.
    ///
    /// # Panics
    /// When no temporary directory can be made.
    pub fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("a temporary directory"))
    }

    /// A PostgreSQL database of its own.
    pub async fn postgres() -> Self {
        Self::Postgres(TestDatabase::create().await)
    }

    /// Its `DATABASE_URL`.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", sqlite_file(dir).display()),
            Self::Postgres(db) => db.url.clone(),
        }
    }

    /// The SQLite file (`None` for PostgreSQL): it exists once a consumer
    /// has opened the store.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match self {
            Self::Sqlite(dir) => Some(sqlite_file(dir)),
            Self::Postgres(_) => None,
        }
    }

    /// `SQLite` or `PostgreSQL`, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// Drops the database (the SQLite directory goes with `self`).
    pub async fn finish(self) {
        if let Self::Postgres(db) = self {
            db.drop_now().await;
        }
    }
}
