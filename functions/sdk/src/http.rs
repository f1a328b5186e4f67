//! A StateFun HTTP endpoint on hyper.
//!
//! `POST` to any path with a `ToFunction` body (`application/octet-stream`)
//! answers `200` with the `FromFunction` bytes; a request the handler rejects
//! or a function error answers `500` with the error as text, so the runtime
//! retries and eventually dead-letters with that reason; a [`Permanent`]
//! error answers `422`, which the runtime dead-letters at once; other methods
//! answer `405`. Connections are HTTP/1.1 with keep-alive, as the runtime
//! pools them.
//!
//! Functions run on the connection's task (asynchronous ones await there).
//! Bind port 0 to let the OS choose, and read [`Server::local_addr`].
//!
//! [`Permanent`]: crate::Permanent

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::error::Error;
use crate::functions::Functions;

/// The largest request body accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A bound StateFun HTTP endpoint, not yet serving.
///
/// ```no_run
/// # async fn example(functions: statefun_sdk::Functions) -> std::io::Result<()> {
/// use statefun_sdk::http::Server;
///
/// let server = Server::bind("127.0.0.1:0").await?;
/// println!("listening on http://{}", server.local_addr());
/// server
///     .serve_with_shutdown(functions, async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Server {
    /// Binds `addr` (port 0: any free port).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self { listener, local_addr })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `functions` forever.
    pub async fn serve(self, functions: Functions) -> io::Result<()> {
        self.serve_with_shutdown(functions, std::future::pending()).await
    }

    /// Serves `functions` until `shutdown` resolves, then stops accepting and
    /// waits (up to 10 s) for the requests in flight.
    pub async fn serve_with_shutdown(self, functions: Functions, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let functions = Arc::new(functions);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if let Err(error) = stream.set_nodelay(true) {
                            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                        }
                        let functions = Arc::clone(&functions);
                        let service = service_fn(move |request| respond(Arc::clone(&functions), request));
                        let connection = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service);
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            if let Err(error) = connection.await {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::warn!("connections still open after the shutdown grace period");
            }
        }
        Ok(())
    }
}

/// Answers one HTTP request.
async fn respond(functions: Arc<Functions>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only POST is supported\n".into());
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return Ok(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {MAX_REQUEST_BYTES} bytes\n"),
            ));
        }
        Err(error) => {
            return Ok(text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {error}\n")));
        }
    };
    Ok(match functions.handle(&body).await {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
        Err(error) => {
            tracing::warn!(%error, "request failed");
            text(error_status(&error), format!("{error}\n"))
        }
    })
}

/// `422` for a function's permanent error (the runtime does not retry it), else `500`.
pub(crate) fn error_status(error: &Error) -> StatusCode {
    if error.is_permanent() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::INTERNAL_SERVER_ERROR }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestRequest, invocation_result};
    use crate::{FunctionType, IntType, ValueSpec};
    use hyper::client::conn::http1 as client;
    use prost::Message as _;
    use statefun_proto::reqreply::FromFunction;
    use tokio::net::TcpStream;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    fn counter() -> (Functions, ValueSpec<i32>) {
        let seen = ValueSpec::new("seen", IntType);
        let functions = Functions::new().with(FunctionType::new("t", "counter"), &[&seen], {
            let seen = seen.clone();
            move |ctx, _msg| {
                let n = ctx.get(&seen)?.unwrap_or(0);
                ctx.set(&seen, &(n + 1))?;
                Ok(())
            }
        });
        (functions, seen)
    }

    async fn post(
        sender: &mut client::SendRequest<Full<Bytes>>,
        method: Method,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Option<HeaderValue>, Bytes), Box<dyn std::error::Error + Send + Sync>> {
        let request = Request::builder()
            .method(method)
            .uri("/statefun")
            .header("host", "localhost")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, content_type, body))
    }

    #[tokio::test]
    async fn server_on_port_zero_answers_requests_on_one_keep_alive_connection() -> TestResult {
        let (functions, seen) = counter();
        let server = Server::bind("127.0.0.1:0").await?;
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve_with_shutdown(functions, async {
            let _ = stopped.await;
        }));

        let stream = TcpStream::connect(addr).await?;
        let (mut sender, connection) = client::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);

        let request = TestRequest::new(FunctionType::new("t", "counter").address("a"))
            .with_state(&seen, Some(&41))?
            .with_invocation(None, &IntType, &0)?;
        for _ in 0..2 {
            let (status, content_type, body) = post(&mut sender, Method::POST, request.to_bytes()).await?;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(content_type.as_ref().map(|v| v.as_bytes()), Some(&b"application/octet-stream"[..]));
            let result = invocation_result(FromFunction::decode(body)?).unwrap_or_default();
            assert_eq!(result.state_mutations.len(), 1);
            assert_eq!(
                result.state_mutations[0].state_value.as_ref().map(|v| v.value.clone()),
                Some(vec![0x0d, 42, 0, 0, 0])
            );
        }

        let (status, _, _) = post(&mut sender, Method::GET, vec![]).await?;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

        let unknown = TestRequest::new(FunctionType::new("t", "nope").address("a"));
        let (status, content_type, body) = post(&mut sender, Method::POST, unknown.to_bytes()).await?;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(content_type.as_ref().map(|v| v.as_bytes()), Some(&b"text/plain; charset=utf-8"[..]));
        assert_eq!(body, Bytes::from_static(b"function type t/nope is not registered with this endpoint\n"));

        drop(sender);
        let _ = stop.send(());
        serving.await??;
        Ok(())
    }

    /// Serves `functions` on a free port and opens one client connection to it.
    async fn serve_and_connect(
        functions: Functions,
    ) -> Result<
        (client::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<io::Result<()>>),
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let server = Server::bind("127.0.0.1:0").await?;
        let addr = server.local_addr();
        let serving = tokio::spawn(server.serve(functions));
        let stream = TcpStream::connect(addr).await?;
        let (sender, connection) = client::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok((sender, serving))
    }

    #[tokio::test]
    async fn garbage_body_is_a_500_that_says_the_request_does_not_decode() -> TestResult {
        let (functions, _) = counter();
        let (mut sender, serving) = serve_and_connect(functions).await?;
        let (status, _, body) = post(&mut sender, Method::POST, vec![0xff, 0xff, 0xff]).await?;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(String::from_utf8_lossy(&body).starts_with("cannot decode the ToFunction request"));
        serving.abort();
        Ok(())
    }

    #[tokio::test]
    async fn a_permanent_error_answers_422_and_any_other_error_500() -> TestResult {
        let ft = FunctionType::new("t", "strict");
        let functions = Functions::new().with(ft.clone(), &[], |_ctx, msg| match msg.as_value(&IntType)? {
            n if n < 0 => Err(crate::Permanent::new("below zero").into()),
            _ => Err("not now".into()),
        });
        let (mut sender, serving) = serve_and_connect(functions).await?;
        for (n, expected) in [(-1, StatusCode::UNPROCESSABLE_ENTITY), (1, StatusCode::INTERNAL_SERVER_ERROR)] {
            let request = TestRequest::new(ft.address("a")).with_invocation(None, &IntType, &n)?;
            let (status, _, body) = post(&mut sender, Method::POST, request.to_bytes()).await?;
            assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
        }
        serving.abort();
        Ok(())
    }
}
