//! `statefun`: the runtime's command line. `run` starts a worker; `send`,
//! `tail`, `state` and `dead-letters` work on the same streams and checkpoints.

mod cli;

use clap::Parser;

/// glibc's allocator spent close to half of a busy worker's CPU time (the
/// benchmarks' profiles): every message is a handful of small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    args.init_logging();
    match cli::dispatch(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
