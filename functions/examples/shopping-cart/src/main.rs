//! The shopping cart functions as a process.
//!
//! With `AWS_LAMBDA_RUNTIME_API` set (that is, inside Lambda or under
//! `cargo lambda watch`) it runs the Lambda adapter. Otherwise it serves a
//! StateFun HTTP endpoint on `--listen` (or `LISTEN`, default
//! `127.0.0.1:8000`; port 0 picks a free port) and, once bound, prints exactly
//! one line, `listening on http://<addr>`, to stdout; logs go to stderr. It
//! stops on SIGTERM or SIGINT after the requests in flight. With
//! `--supplier-url` (`SUPPLIER_URL`) the inventory awaits that supplier on
//! every restock (see `shopping_cart::Supplier`).

use std::io::{IsTerminal, Write};

use anyhow::Context as _;
use clap::Parser;
use statefun_sdk::http::Server;
use tracing_subscriber::EnvFilter;

/// Serve the shopping cart functions (shoppingcart/cart, shoppingcart/inventory).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The address to serve HTTP on (ignored under Lambda).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8000")]
    listen: String,
    /// A supplier the inventory awaits on every restock (`POST` of the order,
    /// answering `{"delivered": n}`); without it, restocks arrive whole.
    #[arg(long, env = "SUPPLIER_URL")]
    supplier_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let functions = match &args.supplier_url {
        Some(url) => shopping_cart::functions_with_supplier(shopping_cart::Supplier::new(url)?),
        None => shopping_cart::functions(),
    };
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        tracing::info!("running as a Lambda function");
        return statefun_sdk::lambda::run(functions).await.map_err(|error| anyhow::anyhow!(error));
    }

    let server = Server::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    // Registered before the address is announced: a SIGTERM sent as soon as the
    // line is read must stop the server cleanly, not kill the process.
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    server.serve_with_shutdown(functions, shutdown_signal(terminate)).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal(mut terminate: tokio::signal::unix::Signal) {
    let terminate = async {
        terminate.recv().await;
    };
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
