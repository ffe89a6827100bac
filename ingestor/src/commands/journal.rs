//! The record of command ids already attempted, on disk beside the spool
//! (`commands.journal` in `SPOOL_DIR`), so a command redelivered after a
//! crash is never carried out twice: an id recorded as attempted but with
//! no outcome is answered `failed: unknown_outcome`; one with an outcome
//! gets that receipt again. Ids are kept [`KEEP`] (an hour).
//!
//! One JSON line per record, appended and synced before the platform call
//! (`attempted`) and before the command is acked (`done`). The file is
//! rewritten without expired and superseded lines at start and whenever it
//! holds twice as many lines as live ids.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::command::Receipt;
use serde::{Deserialize, Serialize};

/// How long an id is remembered.
pub const KEEP: Duration = Duration::from_secs(60 * 60);

/// The journal's file name in `SPOOL_DIR`.
pub const FILE_NAME: &str = "commands.journal";

/// What is known of an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The platform may have been called; no outcome was recorded.
    Attempted,
    /// Its outcome.
    Done(Receipt),
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: String,
    at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receipt: Option<Receipt>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    entries: HashMap<String, (DateTime<Utc>, Entry)>,
    lines: usize,
}

/// The on-disk record of attempted command ids.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    keep: chrono::Duration,
    inner: Mutex<Inner>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, forgetting ids older than
    /// `keep`.
    ///
    /// # Errors
    /// When the file cannot be read or written.
    pub fn open(dir: &Path, keep: Duration) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let mut entries = HashMap::new();
        if let Ok(file) = File::open(&path) {
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line?;
                match serde_json::from_str::<Line>(&line) {
                    Ok(l) => {
                        let entry = l.receipt.map_or(Entry::Attempted, Entry::Done);
                        entries.insert(l.id, (l.at, entry));
                    }
                    // A line torn by a crash mid-write is the last one; its
                    // command was not attempted yet (the line comes first).
                    Err(e) => tracing::warn!(
                        path = %path.display(),
                        line = n + 1,
                        error = %e,
                        "skipping an unreadable command journal line"
                    ),
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let journal = Self {
            path,
            keep,
            inner: Mutex::new(Inner {
                file,
                entries,
                lines: 0,
            }),
        };
        journal.compact()?;
        Ok(journal)
    }

    /// What is known of `id`.
    pub fn get(&self, id: &str) -> Option<Entry> {
        let inner = self.inner.lock().expect("journal lock");
        inner
            .entries
            .get(id)
            .filter(|(at, _)| Utc::now() - *at < self.keep)
            .map(|(_, e)| e.clone())
    }

    /// Records that `id` is about to be carried out, on disk, before the
    /// platform is called.
    ///
    /// # Errors
    /// When the record cannot be written and synced (the command must then
    /// not be carried out).
    pub fn attempted(&self, id: &str) -> std::io::Result<()> {
        self.write(Line {
            id: id.to_owned(),
            at: Utc::now(),
            receipt: None,
        })
    }

    /// Records `receipt` as its command's outcome.
    ///
    /// # Errors
    /// When the record cannot be written and synced.
    pub fn done(&self, receipt: &Receipt) -> std::io::Result<()> {
        self.write(Line {
            id: receipt.id.clone(),
            at: Utc::now(),
            receipt: Some(receipt.clone()),
        })
    }

    /// Live ids.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("journal lock").entries.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self, line: Line) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        let compact = {
            let mut inner = self.inner.lock().expect("journal lock");
            inner.file.write_all(&bytes)?;
            inner.file.sync_data()?;
            let entry = line.receipt.map_or(Entry::Attempted, Entry::Done);
            inner.entries.insert(line.id, (line.at, entry));
            inner.lines += 1;
            inner.lines > 2 * inner.entries.len() + 1000
        };
        if compact {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with the live ids only (through a temporary file
    /// and a rename, so a crash leaves the old or the new one).
    fn compact(&self) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("journal lock");
        let now = Utc::now();
        let keep = self.keep;
        inner.entries.retain(|_, (at, _)| now - *at < keep);
        let tmp = self.path.with_extension("journal.tmp");
        {
            let mut out = std::io::BufWriter::new(File::create(&tmp)?);
            for (id, (at, entry)) in &inner.entries {
                let receipt = match entry {
                    Entry::Attempted => None,
                    Entry::Done(r) => Some(r.clone()),
                };
                serde_json::to_writer(
                    &mut out,
                    &Line {
                        id: id.clone(),
                        at: *at,
                        receipt,
                    },
                )?;
                out.write_all(b"\n")?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        inner.file = OpenOptions::new().append(true).open(&self.path)?;
        inner.lines = inner.entries.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use common::command::ReceiptStatus;

    use super::*;

    fn receipt(id: &str) -> Receipt {
        Receipt {
            id: id.into(),
            status: ReceiptStatus::Sent,
            platform_message_id: Some("m1".into()),
            reason: None,
            at: Utc::now(),
        }
    }

    #[test]
    fn attempts_and_outcomes_survive_a_reopen_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), KEEP).unwrap();
        j.attempted("a").unwrap();
        j.attempted("b").unwrap();
        j.done(&receipt("b")).unwrap();
        drop(j);
        // A torn last line (a crash mid-write) is skipped.
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"c\",\"at\":\"20").unwrap();
        drop(f);
        let j = Journal::open(dir.path(), KEEP).unwrap();
        assert_eq!(j.get("a"), Some(Entry::Attempted));
        assert!(
            matches!(j.get("b"), Some(Entry::Done(r)) if r.platform_message_id.as_deref() == Some("m1")),
            "{:?}",
            j.get("b")
        );
        assert_eq!(j.get("c"), None);
        assert_eq!(j.len(), 2);
        drop(j);
        let j = Journal::open(dir.path(), Duration::ZERO).unwrap();
        assert!(j.is_empty(), "nothing is kept past `keep`");
    }

    #[test]
    fn the_file_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), KEEP).unwrap();
        for _ in 0..1100 {
            j.attempted("same").unwrap();
        }
        let lines = std::fs::read_to_string(dir.path().join(FILE_NAME))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 200, "{lines} lines for one id");
        assert_eq!(j.get("same"), Some(Entry::Attempted));
    }
}
