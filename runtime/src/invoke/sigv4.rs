//! AWS SigV4 signing of the requests to an HTTP endpoint that asks for it
//! (`spec.statefun-aws.signing`; a Lambda Function URL whose auth type is
//! `AWS_IAM`), with the worker's standard AWS credentials. Credentials are
//! fetched once and again shortly before they expire, not per request.
//! This module signs; it does not send.

use std::time::{Duration, SystemTime};

pub use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::InvokeError;

/// The worker's AWS identity: where its credentials come from, and its region.
#[derive(Clone, Debug)]
pub struct AwsIdentity {
    pub credentials: SharedCredentialsProvider,
    pub region: Option<String>,
}

impl AwsIdentity {
    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> Option<Self> {
        Some(Self {
            credentials: config.credentials_provider()?,
            region: config.region().map(|region| region.to_string()),
        })
    }
}

/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

pub struct Signer {
    provider: SharedCredentialsProvider,
    service: String,
    region: String,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl Signer {
    pub fn new(identity: &AwsIdentity, service: String, region: String) -> Self {
        Self { provider: identity.credentials.clone(), service, region, cached: tokio::sync::Mutex::new(None) }
    }

    async fn credentials(&self) -> Result<Credentials, InvokeError> {
        let mut cached = self.cached.lock().await;
        let fresh = |c: &Credentials| c.expiry().is_none_or(|at| SystemTime::now() + REFRESH_BEFORE_EXPIRY < at);
        if let Some(credentials) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(credentials.clone());
        }
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| InvokeError::Transport(format!("no AWS credentials to sign the request with: {e}")))?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    /// Adds the signature's headers to `request`, whose headers are all signed.
    pub async fn sign(
        &self,
        request: &mut http::Request<impl Sized>,
        url: &str,
        body: &[u8],
    ) -> Result<(), InvokeError> {
        let credentials = self.credentials().await?;
        let headers: Vec<(&str, &str)> =
            request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
        let added =
            signature_headers(&credentials, &self.region, &self.service, SystemTime::now(), url, &headers, body)
                .map_err(|e| InvokeError::Transport(format!("{url}: signing the request: {e}")))?;
        for (name, value) in added {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| InvokeError::Transport(format!("{url}: signing the request: {e}")))?;
            let mut value = http::HeaderValue::from_str(&value)
                .map_err(|e| InvokeError::Transport(format!("{url}: signing the request: {e}")))?;
            value.set_sensitive(true);
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

/// The headers the SigV4 signature of a POST of `body` to `url` with
/// `headers` adds (`authorization`, `x-amz-date`, and `x-amz-security-token`
/// for temporary credentials), at `time`.
pub fn signature_headers(
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new("POST", url, headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
    Ok(instructions.headers().map(|(name, value)| (name.to_owned(), value.to_owned())).collect())
}
