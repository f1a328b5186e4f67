//! The connections to one HTTP endpoint: never more open than a fixed bound
//! (the endpoint's in-flight cap), reused most-recently-used first, dropped
//! after their idle time.
//!
//! A general-purpose pool opens a connection whenever none is idle at that
//! instant, also while one is on its way back, and finishes connects that
//! lost the race in the background: under load it holds more connections
//! than requests in flight. Here each open connection holds a permit until
//! its socket is closed, and a request that finds none idle and no permit
//! free waits for whichever comes first, a permit or a returned connection.
//! This module knows nothing of the StateFun protocol or of retries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

pub type Connector = HttpsConnector<HttpConnector>;

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connect or the TLS handshake failed.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP/1.1 handshake on a new connection failed.
    Handshake(hyper::Error),
}

/// One connection, taken from the pool or newly opened.
pub struct Connection {
    pub sender: SendRequest<Full<Bytes>>,
    /// Whether it served a request before: a reused connection may have died
    /// unnoticed (the server was replaced), a new one has not.
    pub reused: bool,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

pub struct Pool {
    connector: Connector,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// One permit per open connection, held by its task until the socket is closed.
    open: Arc<Semaphore>,
    /// Wakes requests waiting for a permit when a connection becomes idle.
    returned: Notify,
}

impl Pool {
    pub fn new(connector: Connector, max_open: usize, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            connector,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.min(max_open),
            idle_timeout,
            open: Arc::new(Semaphore::new(max_open)),
            returned: Notify::new(),
        }
    }

    /// A connection ready to send a request to `uri`'s host: an idle one when
    /// there is one, else a new one once fewer than the bound are open.
    pub async fn get(&self, uri: &http::Uri) -> Result<Connection, ConnectError> {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so a connection returned after the look still wakes this wait.
            returned.as_mut().enable();
            if let Some(sender) = self.take_idle().await {
                return Ok(Connection { sender, reused: true });
            }
            let permit = match self.open.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => tokio::select! {
                    permit = self.open.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(closed) => return Err(ConnectError::Connect(Box::new(closed))),
                    },
                    () = &mut returned => continue,
                },
            };
            let sender = self.connect(uri, permit).await?;
            return Ok(Connection { sender, reused: false });
        }
    }

    /// Gives back a connection whose reply was read whole.
    pub fn put(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle && !connection.sender.is_closed() {
            idle.push(Idle { sender: connection.sender, since: Instant::now() });
            drop(idle);
            self.returned.notify_one();
        }
    }

    /// Closes every idle connection: one of them died unnoticed, so the
    /// function's process was most likely replaced and the others are dead too.
    pub fn clear_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The most recently returned live idle connection; older ones past their
    /// idle time are closed on the way.
    async fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut sender = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.retain(|c| c.since.elapsed() < self.idle_timeout && !c.sender.is_closed());
                idle.pop()?.sender
            };
            // Ready once the connection has finished with its previous reply; an error means it closed.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(
        &self,
        uri: &http::Uri,
        permit: OwnedSemaphorePermit,
    ) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(ConnectError::Connect)?;
        let stream = connector.call(uri.clone()).await.map_err(ConnectError::Connect)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(stream).await.map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("a connection to a function endpoint ended: {error}");
            }
            drop(permit);
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A keep-alive server answering each request after `delay`; counts the
    /// connections it accepted and the most open at once.
    async fn slow_server(delay: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (accepted, peak, open) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (accepted_seen, peak_seen) = (accepted.clone(), peak.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                peak.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                let open = open.clone();
                tokio::spawn(async move {
                    let mut request = vec![0; 64 * 1024];
                    while matches!(stream.read(&mut request).await, Ok(n) if n > 0) {
                        tokio::time::sleep(delay).await;
                        if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                            break;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, accepted_seen, peak_seen)
    }

    #[tokio::test]
    async fn many_concurrent_requests_never_open_more_connections_than_the_bound() {
        let (addr, accepted, peak) = slow_server(Duration::from_millis(5)).await;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::invoke::tls::client_config(&Default::default(), false).expect("TLS config"))
            .https_or_http()
            .enable_http1()
            .wrap_connector(HttpConnector::new());
        let pool = Arc::new(Pool::new(connector, 4, 4, Duration::from_secs(60)));
        let uri: http::Uri = format!("http://{addr}/f").parse().expect("uri");
        let requests = (0..64).map(|_| {
            let (pool, uri) = (pool.clone(), uri.clone());
            tokio::spawn(async move {
                let mut connection = pool.get(&uri).await.expect("connection");
                let request = http::Request::post("/f")
                    .header(http::header::HOST, uri.authority().expect("authority").as_str())
                    .body(Full::new(Bytes::from_static(b"request")))
                    .expect("request");
                let response = connection.sender.send_request(request).await.expect("answer");
                let body = response.into_body().collect().await.expect("body").to_bytes();
                pool.put(connection);
                body
            })
        });
        for request in requests.collect::<Vec<_>>() {
            assert_eq!(request.await.expect("task"), Bytes::from_static(b"ok"));
        }
        assert!(peak.load(Ordering::SeqCst) <= 4, "at most 4 open at once, saw {}", peak.load(Ordering::SeqCst));
        assert_eq!(accepted.load(Ordering::SeqCst), 4, "the 64 requests shared 4 connections");
    }
}
