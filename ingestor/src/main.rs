//! `ingestor`: platform chat to the `chat` exchange.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: in the flood benchmark glibc's
/// allocator (mostly `malloc_consolidate` and `unlink_chunk`) took a fifth
/// of the ingestor's CPU. mimalloc v2 (it returns freed pages to the OS
/// after 10 ms; v3 waits 1 s), without transparent huge pages (which
/// raised the peak RSS to 94-99 MiB in the same benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Join platform chats and publish every event to RabbitMQ.
#[derive(Parser, Debug)]
#[command(name = "ingestor", version, about)]
struct Cli {
    /// Config file (TOML, YAML or JSON). Environment variables override it.
    #[arg(long, env = "CHATBUS_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ingestor::main_with(cli.config.as_deref())
}
