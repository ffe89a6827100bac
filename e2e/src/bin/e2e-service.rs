//! `e2e-service ingestor|consumer`: exactly what the real binaries' `main`
//! does (`common::service::serve`: config from the environment and `.env`,
//! logging, signals, bind, run), for the process-level tests and the
//! benchmark.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("ingestor") => {
            common::service::serve::<ingestor::Config, _, _>(None, ingestor::run).await
        }
        Some("consumer") => {
            common::service::serve::<consumer::Config, _, _>(None, consumer::run).await
        }
        other => {
            eprintln!("usage: e2e-service ingestor|consumer (got {other:?})");
            ExitCode::from(2)
        }
    }
}
