//! `statefun health`: asks a running worker's admin server for `/health` (or
//! `/ready` with `--ready`); exits 0 on 200 and fails otherwise, naming what it
//! got. The image's `HEALTHCHECK` runs it, so the image needs no HTTP client.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

#[derive(Args)]
pub struct HealthArgs {
    /// The worker's admin server (its --admin-listen).
    #[arg(long, env = "STATEFUN_ADMIN_LISTEN", default_value = "127.0.0.1:9464")]
    admin: SocketAddr,
    /// Ask whether every partition the worker holds serves (`/ready`), not only whether it runs.
    #[arg(long)]
    ready: bool,
    #[arg(long, default_value = "5s", value_parser = super::duration)]
    timeout: Duration,
}

pub fn health(args: HealthArgs) -> anyhow::Result<()> {
    let path = if args.ready { "/ready" } else { "/health" };
    // A server listening on every interface is asked on loopback.
    let address = match args.admin.ip().is_unspecified() {
        true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), args.admin.port()),
        false => args.admin,
    };
    let mut stream = TcpStream::connect_timeout(&address, args.timeout)
        .with_context(|| format!("no admin server answers at {address}"))?;
    stream.set_read_timeout(Some(args.timeout)).context("setting the read timeout")?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").context("sending the request")?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).context("reading the answer")?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).unwrap_or("none");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).trim();
    anyhow::ensure!(status == "200", "{path} at {address} answered {status}: {body}");
    println!("{body}");
    Ok(())
}
