//! What the AWS backends share: loading the SDK configuration, the timeouts of
//! storage calls, where a service's requests go (for error messages), and the
//! sorting of SDK errors into retryable, not-found, condition-failed and
//! permanent, which each backend then maps onto its own module's error type.
//!
//! Owns no client and makes no call. It must not know about logs, objects or
//! leases: the backends are [`crate::log::kinesis`], [`crate::checkpoint::s3`]
//! and [`crate::coordination::dynamodb`].
//!
//! The SDK crates share their smithy error types; they are named here through
//! `aws_sdk_s3`'s re-exports only because the `aws-smithy-*` crates are not
//! direct dependencies.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Loads the SDK configuration from the standard sources: `AWS_REGION`,
/// credentials from the default chain, and endpoints from `AWS_ENDPOINT_URL`
/// and `AWS_ENDPOINT_URL_<SERVICE>` (which is how the local AWS stack is
/// reached). `region` overrides the region from the environment.
pub async fn aws_sdk_config(region: Option<&str>) -> SdkConfig {
    aws_sdk_config_at(region, None).await
}

/// As [`aws_sdk_config`], with every service sent to `endpoint` (what a
/// `custom-endpoint` region in `module.yaml` asks for). An endpoint given here
/// wins over the `AWS_ENDPOINT_URL*` variables.
pub async fn aws_sdk_config_at(region: Option<&str>, endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// Timeouts of the storage backends' calls: a hung connection fails the
/// attempt (and the SDK retries it) instead of stalling a committer or a
/// reader forever. Applied per client, so the shared [`SdkConfig`] stays
/// neutral for callers with long calls (Lambda invocations).
pub(crate) fn storage_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(3100))
        .operation_attempt_timeout(Duration::from_secs(30))
        .build()
}

/// `region <r>, endpoint <url>` for error messages, with the endpoint resolved
/// as the SDK does: an explicitly configured one, else `AWS_ENDPOINT_URL_<SERVICE>`,
/// else `AWS_ENDPOINT_URL`, else the service's public AWS endpoint.
pub(crate) fn describe_target(config: &SdkConfig, service: &str) -> String {
    let region = config.region().map_or_else(|| "<none>".to_owned(), |r| r.to_string());
    let endpoint = endpoint_override(config, service).unwrap_or_else(|| "AWS default".to_owned());
    format!("region {region}, endpoint {endpoint}")
}

/// The endpoint override in force for `service` (`S3`, `KINESIS`, `DYNAMODB`), if any.
pub(crate) fn endpoint_override(config: &SdkConfig, service: &str) -> Option<String> {
    if config.get_origin("endpoint_url").is_client_config() {
        return config.endpoint_url().map(str::to_owned);
    }
    std::env::var(format!("AWS_ENDPOINT_URL_{service}"))
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| config.endpoint_url().map(str::to_owned))
}

/// How an AWS call failed, as far as a caller's next step is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Throttling, 5xx, timeouts, connection failures: trying again later may succeed.
    Retryable,
    /// The resource (table, stream, bucket, key, shard) does not exist.
    NotFound,
    /// A conditional write's condition did not hold.
    ConditionFailed,
    /// The request is wrong (validation, access denied, limits) and will stay wrong.
    Permanent,
}

/// A classified SDK error: its kind, the service's error code and a one-line description.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub code: Option<String>,
    pub detail: String,
}

impl Failure {
    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Error codes that mean "slow down or try again", whatever their HTTP status.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "BandwidthLimitExceeded",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "TransactionConflictException",
    "TransactionInProgressException",
    "KMSThrottlingException",
    "ExpiredToken",
    "ExpiredTokenException",
    "PriorRequestNotComplete",
];

const NOT_FOUND_CODES: &[&str] =
    &["ResourceNotFoundException", "NoSuchBucket", "NoSuchKey", "NoSuchUpload", "NotFound"];

const CONDITION_FAILED_CODES: &[&str] = &["ConditionalCheckFailedException", "PreconditionFailed"];

/// Classifies a service's answer by error code first, then by HTTP status.
pub(crate) fn kind_of(code: Option<&str>, status: u16) -> FailureKind {
    match code {
        Some(c) if RETRYABLE_CODES.contains(&c) => FailureKind::Retryable,
        Some(c) if NOT_FOUND_CODES.contains(&c) => FailureKind::NotFound,
        Some(c) if CONDITION_FAILED_CODES.contains(&c) => FailureKind::ConditionFailed,
        _ if status == 429 || status >= 500 => FailureKind::Retryable,
        None if status == 404 => FailureKind::NotFound,
        _ => FailureKind::Permanent,
    }
}

/// Classifies an SDK error of `operation` (e.g. `PutRecords`).
pub(crate) fn classify<E>(operation: &str, error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code();
            let message = service.err().message().unwrap_or_default();
            let detail = match message.is_empty() {
                true => format!("{operation}: {} (HTTP {status})", code.unwrap_or("error")),
                false => format!("{operation}: {} (HTTP {status}): {message}", code.unwrap_or("error")),
            };
            Failure { kind: kind_of(code, status), code: code.map(str::to_owned), detail }
        }
        SdkError::ConstructionFailure(_) => Failure {
            kind: FailureKind::Permanent,
            code: None,
            detail: format!("{operation}: {}", DisplayErrorContext(error)),
        },
        SdkError::DispatchFailure(dispatch) if dispatch.is_user() => Failure {
            kind: FailureKind::Permanent,
            code: None,
            detail: format!("{operation}: {}", DisplayErrorContext(error)),
        },
        // Timeouts, connection failures, unreadable responses.
        _ => Failure {
            kind: FailureKind::Retryable,
            code: None,
            detail: format!("{operation}: {}", DisplayErrorContext(error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_retryable_validation_is_not() {
        assert_eq!(kind_of(Some("ProvisionedThroughputExceededException"), 400), FailureKind::Retryable);
        assert_eq!(kind_of(Some("ThrottlingException"), 400), FailureKind::Retryable);
        assert_eq!(kind_of(Some("SlowDown"), 503), FailureKind::Retryable);
        assert_eq!(kind_of(None, 500), FailureKind::Retryable);
        assert_eq!(kind_of(Some("SomethingNew"), 502), FailureKind::Retryable);
        assert_eq!(kind_of(None, 429), FailureKind::Retryable);
        assert_eq!(kind_of(Some("ResourceNotFoundException"), 400), FailureKind::NotFound);
        assert_eq!(kind_of(Some("NoSuchKey"), 404), FailureKind::NotFound);
        assert_eq!(kind_of(None, 404), FailureKind::NotFound);
        assert_eq!(kind_of(Some("ConditionalCheckFailedException"), 400), FailureKind::ConditionFailed);
        assert_eq!(kind_of(Some("ValidationException"), 400), FailureKind::Permanent);
        assert_eq!(kind_of(Some("InvalidArgumentException"), 400), FailureKind::Permanent);
        assert_eq!(kind_of(Some("AccessDenied"), 403), FailureKind::Permanent);
    }
}
