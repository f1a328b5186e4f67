//! `statefun`: the runtime's command line. `run` starts a worker; `send`,
//! `tail`, `state` and `dead-letters` work on the same streams and checkpoints.

mod allocator;
mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    args.init_logging();
    if args.runs_worker() {
        // Before the async runtime starts its threads: this may start the process again.
        allocator::settle_for_worker();
    }
    let outcome = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(cli::dispatch(args)),
        Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
