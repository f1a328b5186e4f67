//! The supplier: another service, over HTTP, that the inventory awaits on a
//! restock to learn how much of the order arrives (the example of an
//! asynchronous function: [`crate::functions_with_supplier`]).
//!
//! `POST <url>` with `{"item_id": "...", "quantity": n}` answers
//! `{"delivered": m}`, `0 <= m <= n`. Anything else is an error the runtime
//! retries: the supplier may be down for a moment, and the restock must not be
//! lost.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// The largest answer read from the supplier.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A client of the supplier's API, cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub struct Supplier {
    url: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Why the supplier did not say what it delivers.
#[derive(Debug, thiserror::Error)]
pub enum SupplierError {
    /// The configured URL is not an `http://` URL.
    #[error("supplier URL `{url}`: {detail}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The request did not get an answer.
    #[error("supplier {url}: {detail}")]
    Unreachable {
        /// The supplier's URL.
        url: Uri,
        /// The transport's error.
        detail: String,
    },
    /// The answer is not a delivery of at most the quantity ordered.
    #[error("supplier {url} answered {status}: {detail}")]
    BadAnswer {
        /// The supplier's URL.
        url: Uri,
        /// The HTTP status.
        status: u16,
        /// What is wrong with the answer.
        detail: String,
    },
}

#[derive(Serialize)]
struct Order<'a> {
    item_id: &'a str,
    quantity: i32,
}

#[derive(Deserialize)]
struct Delivery {
    delivered: i32,
}

impl Supplier {
    /// A client of the supplier at `url` (plain HTTP).
    pub fn new(url: &str) -> Result<Self, SupplierError> {
        let bad = |detail: &str| SupplierError::BadUrl { url: url.to_owned(), detail: detail.to_owned() };
        let parsed: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        if parsed.scheme_str() != Some("http") || parsed.host().is_none() {
            return Err(bad("expected http://host[:port]/path"));
        }
        Ok(Self { url: parsed, client: Client::builder(TokioExecutor::new()).build_http() })
    }

    /// Orders `quantity` of `item` and returns how many the supplier delivers.
    pub async fn deliver(&self, item: &str, quantity: i32) -> Result<i32, SupplierError> {
        let order = serde_json::to_vec(&Order { item_id: item, quantity }).unwrap_or_default();
        let unreachable = |detail: String| SupplierError::Unreachable { url: self.url.clone(), detail };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(order)))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let bad = |detail: String| SupplierError::BadAnswer { url: self.url.clone(), status, detail };
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| bad(format!("cannot read the answer: {e}")))?
            .to_bytes();
        if status != 200 {
            return Err(bad(String::from_utf8_lossy(&body).chars().take(200).collect()));
        }
        let delivery: Delivery =
            serde_json::from_slice(&body).map_err(|e| bad(format!("expected {{\"delivered\": n}}: {e}")))?;
        if !(0..=quantity).contains(&delivery.delivered) {
            return Err(bad(format!("delivered {} of {quantity} ordered", delivery.delivered)));
        }
        Ok(delivery.delivered)
    }
}
