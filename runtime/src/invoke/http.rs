//! The StateFun HTTP transport: POST the `ToFunction` bytes, read the
//! `FromFunction` bytes of a 2xx reply. One pooled keep-alive client per endpoint.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{FunctionClient, InvokeError};
use crate::address::FunctionType;
use crate::config::{EndpointConfig, EndpointTarget};
use crate::log::BoxFuture;

pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    url_template: String,
    call_timeout: Duration,
    /// The largest reply body read (`payload_max_bytes`): a larger one is refused
    /// as it arrives, before it is held whole.
    reply_max_bytes: usize,
    /// Requests in flight to the endpoint, at most [`MAX_IN_FLIGHT`]: beyond that,
    /// more connections only add overhead, while queued messages wait in their
    /// mailboxes and leave in bigger batches.
    in_flight: tokio::sync::Semaphore,
}

/// Requests in flight per HTTP endpoint.
pub const MAX_IN_FLIGHT: usize = 128;

impl HttpClient {
    pub fn new(endpoint: &EndpointConfig) -> Result<Self, String> {
        let EndpointTarget::Http { url_template } = &endpoint.target else {
            return Err("not an HTTP endpoint".into());
        };
        if url_template.starts_with("https://") {
            return Err(format!("`{url_template}`: https endpoints are not supported by this build yet; use http://"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(endpoint.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(endpoint.pool_ttl)
            .pool_max_idle_per_host(endpoint.pool_size)
            .build(connector);
        Ok(Self {
            client,
            url_template: url_template.clone(),
            call_timeout: endpoint.call_timeout,
            reply_max_bytes: endpoint.payload_max_bytes,
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    async fn post(&self, url: String, body: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let request = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| InvokeError::Transport(format!("{url}: {e}")))?;
        let response =
            self.client.request(request).await.map_err(|e| InvokeError::Transport(format!("{url}: {e:?}")))?;
        let status = response.status();
        let limit = self.reply_max_bytes;
        let too_large = || {
            InvokeError::Malformed(format!(
                "{url}: the reply is larger than the endpoint's payload_max_bytes ({limit} bytes)"
            ))
        };
        let announced =
            response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let body = match Limited::new(response.into_body(), limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
            Err(e) => return Err(InvokeError::Transport(format!("{url}: reading the reply: {e}"))),
        };
        if status.is_success() {
            return Ok(Vec::from(body));
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        if status == http::StatusCode::TOO_MANY_REQUESTS || status == http::StatusCode::SERVICE_UNAVAILABLE {
            return Err(InvokeError::Throttled(format!("HTTP {status}: {text}")));
        }
        Err(InvokeError::Status { status: status.as_u16(), body: text })
    }
}

impl FunctionClient for HttpClient {
    fn call<'a>(
        &'a self,
        function_type: &'a FunctionType,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
        let url = self.url_template.replace("{function.name}", &function_type.name);
        Box::pin(async move {
            // The call timeout runs from when the request may go out, not while it waits its turn.
            let Ok(_turn) = self.in_flight.acquire().await else {
                return Err(InvokeError::Transport("the endpoint's request limiter was closed".into()));
            };
            match tokio::time::timeout(self.call_timeout, self.post(url, request)).await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::Timeout(self.call_timeout)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::ModuleConfig;

    /// Answers every request with `reply` (raw HTTP/1.1 bytes), then closes the connection.
    async fn serve(reply: Vec<u8>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0; 64 * 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(&reply).await;
            }
        });
        addr
    }

    fn client(addr: std::net::SocketAddr) -> HttpClient {
        let text = format!(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: ns/*\n  urlPathTemplate: http://{addr}/f\n  transport:\n    payload_max_bytes: 1000\n"
        );
        let module = ModuleConfig::parse(&text, "module.yaml").expect("module");
        HttpClient::new(&module.endpoints[0]).expect("client")
    }

    #[tokio::test]
    async fn a_reply_over_the_payload_limit_is_refused_whether_or_not_it_announces_its_length() {
        let function_type = FunctionType::new("ns", "f");
        let body = vec![b'x'; 5000];
        let mut announced = b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n".to_vec();
        announced.extend(&body);
        let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.chunks(700) {
            chunked.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend(chunk);
            chunked.extend(b"\r\n");
        }
        chunked.extend(b"0\r\n\r\n");
        for reply in [announced, chunked] {
            let client = client(serve(reply).await);
            let error = client.call(&function_type, b"request".to_vec()).await.expect_err("over the limit");
            assert!(matches!(error, InvokeError::Malformed(_)), "{error}");
            assert!(error.to_string().contains("larger than the endpoint's payload_max_bytes (1000 bytes)"), "{error}");
        }
        let mut small = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n".to_vec();
        small.extend(b"abc");
        let reply =
            client(serve(small).await).call(&function_type, b"request".to_vec()).await.expect("within the limit");
        assert_eq!(reply, b"abc");
    }
}
