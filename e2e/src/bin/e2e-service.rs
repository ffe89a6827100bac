//! `e2e-service ingestor|consumer`: exactly what the real binaries' `main`
//! does (config from the environment and `.env`, logging, signals, bind,
//! run; the ingestor's runtime and allocator), for the process-level tests
//! and the benchmark.

use std::process::ExitCode;

/// The ingestor binary's allocator (see ingestor/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("ingestor") => ingestor::main_with(None),
        Some("consumer") => consumer::main_with(None),
        other => {
            eprintln!("usage: e2e-service ingestor|consumer (got {other:?})");
            ExitCode::from(2)
        }
    }
}
