//! Command-line verbs. Each verb is one file; this one holds the argument
//! definitions and the dispatch.

mod inspect;
mod run;
mod send;
mod tail;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "statefun", version, about = "Stateful functions on logs, object storage and conditional writes")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct DataDir {
    /// Directory of the embedded local mode: streams, checkpoints, commit records.
    #[arg(long, env = "STATEFUN_DATA_DIR", default_value = ".statefun")]
    pub data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the partition worker.
    Run(run::RunArgs),
    /// Append records to a stream (an ingress, usually).
    Send(send::SendArgs),
    /// Print the records of a stream (an egress, usually).
    Tail(tail::TailArgs),
    /// Print the committed state of every address.
    State(inspect::StateArgs),
    /// Print the dead letters: what could not be processed, and why.
    DeadLetters(inspect::DeadLetterArgs),
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Send(args) => send::send(args).await,
        Command::Tail(args) => tail::tail(args).await,
        Command::State(args) => inspect::state(args).await,
        Command::DeadLetters(args) => inspect::dead_letters(args).await,
    }
}

/// Parses durations such as `100ms`, `5s`, `2m`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration (e.g. 100ms, 5s): {e}"))
}
