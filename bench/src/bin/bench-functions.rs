//! `bench-functions`: the benchmark's functions as a StateFun HTTP endpoint,
//! in a process of its own so their CPU is not counted as the runtime's.
//!
//! Serves `bench/counter` (see `statefun_bench::counter`), the shopping
//! cart's `shoppingcart/cart` and `shoppingcart/inventory`, and the hostile
//! scenario's `bench/failing`, `bench/scheduler`, `bench/arrivals` and
//! `bench/fanout` (see `statefun_bench::hostile_functions`) with the Rust SDK's
//! HTTP server. Once bound it prints `listening on http://<addr>` to stdout,
//! then every 20 ms `processed <unix ms> <messages> <arrivals> <fan-out
//! messages> <fan-out depth> <failed batches>`: how many messages the counter
//! has processed so far, then the hostile functions' counts.

use std::io::Write;

use clap::Parser;
use statefun_sdk::http::Server;

/// The allocator the runtime uses, so that neither side of a call is slowed by the other's choice.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Serve the benchmark's functions over HTTP")]
struct Args {
    /// The address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The stream the counter's results go to.
    #[arg(long, default_value = statefun_bench::counter::EGRESS_STREAM)]
    egress_stream: String,
    /// Worker threads of the server.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(async {
        let server = Server::bind(&args.listen).await?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on http://{}", server.local_addr())?;
        stdout.flush()?;
        std::thread::spawn(|| {
            let mut stdout = std::io::stdout();
            loop {
                let processed = statefun_bench::counter::PROCESSED.load(std::sync::atomic::Ordering::Relaxed);
                let [arrivals, fanout, depth, failed] = statefun_bench::hostile_functions::counts();
                let now = statefun_bench::now_ms();
                let line = format!("processed {now} {processed} {arrivals} {fanout} {depth} {failed}");
                if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        let functions = statefun_bench::counter::functions(&args.egress_stream);
        let functions = statefun_bench::hostile_functions::register(functions);
        let terminate = async {
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                term.recv().await;
            }
        };
        server.serve_with_shutdown(functions, terminate).await?;
        Ok(())
    })
}
