//! The StateFun HTTP transport: POST the `ToFunction` bytes, read the
//! `FromFunction` bytes of a 2xx reply. One pooled keep-alive client per endpoint.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    async fn post(&self, url: String, body: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let request = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| InvokeError::Transport(format!("{url}: {e}")))?;
        let response = self.client.request(request).await.map_err(|e| InvokeError::Transport(format!("{url}: {e:?}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| InvokeError::Transport(format!("{url}: reading the reply: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        if status == http::StatusCode::TOO_MANY_REQUESTS || status == http::StatusCode::SERVICE_UNAVAILABLE {
            return Err(InvokeError::Throttled(format!("HTTP {status}: {text}")));
        }
        Err(InvokeError::Status { status: status.as_u16(), body: text })
    }
}

impl FunctionClient for HttpClient {
    fn call<'a>(&'a self, function_type: &'a FunctionType, request: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
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
