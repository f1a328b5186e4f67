//! The `shopping-cart` binary: the `listening on` line, a real request over
//! HTTP, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpStream;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message as _;
use statefun_proto::reqreply::FromFunction;
use statefun_proto::shoppingcart::RestockItem;
use statefun_sdk::testing::{TestRequest, invocation_result};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn binary_prints_its_address_serves_requests_and_stops_on_sigterm() -> TestResult {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shopping-cart"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id().to_string();

    // A watchdog, so that a hung child fails the test instead of hanging it.
    let done = Arc::new(AtomicBool::new(false));
    std::thread::spawn({
        let (done, pid) = (Arc::clone(&done), pid.clone());
        move || {
            std::thread::sleep(Duration::from_secs(60));
            if !done.load(Ordering::SeqCst) {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
    });

    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let result = exercise(&mut lines);
    let status = Command::new("kill").args(["-TERM", &pid]).status()?;
    let exit = child.wait()?;
    done.store(true, Ordering::SeqCst);
    result?;
    assert!(status.success());
    assert!(exit.success(), "exit status {exit}");
    let rest: Vec<String> = lines.collect::<Result<_, _>>()?;
    assert!(rest.is_empty(), "more output on stdout: {rest:?}");
    Ok(())
}

fn exercise(lines: &mut Lines<BufReader<ChildStdout>>) -> TestResult {
    let line = lines.next().ok_or("no output")??;
    let addr =
        line.strip_prefix("listening on http://").ok_or_else(|| format!("unexpected first line {line:?}"))?.to_owned();

    let request = TestRequest::new(shopping_cart::inventory_type().address("apple"))
        .with_state(&shopping_cart::in_stock(), Some(&1))?
        .with_state(&shopping_cart::reserved(), None)?
        .with_proto_invocation(None, &RestockItem { item_id: "apple".into(), quantity: 4 })
        .to_bytes();
    let mut stream = TcpStream::connect(&addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST /statefun HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.len()
    )?;
    stream.write_all(&request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = FromFunction::decode(&response[split + 4..])?;
    let result = invocation_result(body).ok_or("no invocation result")?;
    assert_eq!(result.outgoing_egresses.len(), 1);
    Ok(())
}
