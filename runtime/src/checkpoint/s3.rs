//! Checkpoint objects in an S3 bucket, under a key prefix (the AWS mode).
//!
//! Owns the mapping of [`BlobStore`] calls onto S3: one `PutObject` up to a
//! threshold (16 MiB by default) and a multipart upload above it (8 MiB parts),
//! `GetObject` (a missing key is `None`), `DeleteObject`, `DeleteObjects` (up to
//! 1,000 keys a call), and `ListObjectsV2` followed page by page. Keys are given
//! and returned *without* the configured prefix, so they are exactly what
//! [`super::object_key`] builds.
//!
//! It must not decide anything about checkpoints (which objects make up a
//! history, what is garbage): that is [`super`]'s and the commit store's. It
//! relies on S3's read-after-write consistency: an object whose `put` returned
//! is visible to every later `get` and `list`.
//!
//! Errors: throttling, 5xx, timeouts and connection failures are
//! [`CheckpointError::Backend`] (retryable); a missing bucket, denied access
//! and invalid requests are [`CheckpointError::Rejected`], naming the bucket,
//! region and endpoint.

use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;

use super::{BlobStore, CheckpointError, ChunkSink};
use crate::aws::{self, FailureKind};
use crate::log::BoxFuture;

/// Objects above this size are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// The size of each part of a multipart upload (the last may be smaller).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's maximum number of parts of one upload.
const MAX_PARTS: usize = 10_000;
/// S3's maximum number of keys of one `DeleteObjects` request.
const MAX_DELETE_KEYS: usize = 1000;

pub struct S3BlobStore {
    client: Client,
    bucket: String,
    /// Prepended to every key: empty, or ending in `/`.
    prefix: String,
    multipart_threshold: usize,
    part_size: usize,
    /// `MaxKeys` of each `ListObjectsV2` page (`None`: S3's default of 1000).
    list_page_size: Option<i32>,
    /// Keys of each `DeleteObjects` request.
    delete_batch: usize,
    /// Region and endpoint, for error messages.
    target: String,
}

impl S3BlobStore {
    /// A store of the objects under `prefix` (e.g. `checkpoints/` or `""`) in
    /// `bucket`. With an endpoint override (LocalStack), requests use
    /// path-style addresses (`http://host/bucket/key`), which need no DNS.
    pub fn new(config: &SdkConfig, bucket: impl Into<String>, prefix: &str) -> Self {
        let path_style = aws::endpoint_override(config, "S3").is_some();
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .timeout_config(aws::storage_timeouts());
        let prefix = match prefix.trim_start_matches('/') {
            "" => String::new(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        };
        Self {
            client: Client::from_conf(s3_config.build()),
            bucket: bucket.into(),
            prefix,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            list_page_size: None,
            delete_batch: MAX_DELETE_KEYS,
            target: aws::describe_target(config, "S3"),
        }
    }

    /// The store with the fault layer of `plan` on its client, if the plan names
    /// the service (tests: see [`crate::faults`]).
    pub fn with_faults(mut self, plan: &std::sync::Arc<crate::faults::FaultPlan>) -> Self {
        let config = crate::faults::s3(self.client.config().to_builder(), plan);
        self.client = Client::from_conf(config.build());
        self
    }

    /// Uploads objects larger than `threshold` bytes in parts of `part_size`
    /// bytes (raised to S3's minimum of 5 MiB).
    pub fn with_multipart(mut self, threshold: usize, part_size: usize) -> Self {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    /// Lists keys `keys` at a time (S3 allows 1 to 1000).
    pub fn with_list_page_size(mut self, keys: i32) -> Self {
        self.list_page_size = Some(keys.clamp(1, 1000));
        self
    }

    /// Deletes keys `keys` at a time (S3 allows 1 to 1000).
    pub fn with_delete_batch(mut self, keys: usize) -> Self {
        self.delete_batch = keys.clamp(1, MAX_DELETE_KEYS);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist yet (for tests and local
    /// stacks; deployments create it with Terraform).
    pub async fn create_bucket(&self) -> Result<(), CheckpointError> {
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that refuses an explicit location constraint.
        if let Some(region) = self.client.config().region().map(|r| r.to_string()).filter(|r| r != "us-east-1") {
            let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region.as_str()))
                .build();
            request = request.create_bucket_configuration(location);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(self.error("CreateBucket", "", &e)),
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Maps an SDK error of `operation` on `key` (without prefix) onto the module's error.
    fn error<E>(&self, operation: &str, key: &str, error: &SdkError<E, HttpResponse>) -> CheckpointError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = aws::classify(operation, error);
        let location = format!("s3://{}/{}", self.bucket, self.full_key(key));
        match failure.kind {
            FailureKind::Retryable => {
                CheckpointError::Backend { key: key.to_owned(), detail: format!("{location}: {}", failure.detail) }
            }
            _ if failure.has_code("NoSuchBucket") => CheckpointError::Rejected {
                key: key.to_owned(),
                detail: format!("bucket `{}` does not exist ({}): {}", self.bucket, self.target, failure.detail),
            },
            _ => CheckpointError::Rejected {
                key: key.to_owned(),
                detail: format!("{location} ({}): {}", self.target, failure.detail),
            },
        }
    }

    async fn put_object(&self, key: &str, data: Bytes) -> Result<(), CheckpointError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, &e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, data: Bytes) -> Result<(), CheckpointError> {
        let full_key = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full_key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", key, &e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(CheckpointError::Backend {
                key: key.to_owned(),
                detail: format!("s3://{}/{full_key}: CreateMultipartUpload returned no upload id", self.bucket),
            });
        };
        let uploaded = self.upload_parts(key, upload_id, data).await;
        if uploaded.is_err() {
            // Best effort: an upload left behind holds storage until a lifecycle rule removes it.
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full_key)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                let e = self.error("AbortMultipartUpload", key, &e);
                tracing::warn!(bucket = %self.bucket, key = %full_key, "aborting a failed multipart upload failed: {e}");
            }
        }
        uploaded
    }

    async fn upload_parts(&self, key: &str, upload_id: &str, data: Bytes) -> Result<(), CheckpointError> {
        let full_key = self.full_key(key);
        // Large enough that no object needs more parts than S3 allows.
        let part_size = self.part_size.max(data.len().div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        for (index, start) in (0..data.len()).step_by(part_size).enumerate() {
            let number = index as i32 + 1;
            let body = data.slice(start..(start + part_size).min(data.len()));
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&full_key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| self.error("UploadPart", key, &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_owned))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full_key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| match self.error("CompleteMultipartUpload", key, &e) {
                // A retried Complete whose first attempt was applied finds the upload gone
                // (S3 answers NoSuchUpload): the object may well be whole. Writing it again
                // is safe (same key, same bytes), so the caller retries.
                CheckpointError::Rejected { key, detail } if detail.contains("NoSuchUpload") => {
                    CheckpointError::Backend { key, detail }
                }
                other => other,
            })?;
        Ok(())
    }

    async fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>, CheckpointError> {
        let output = match self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.error("GetObject", key, &e)),
        };
        let body = output.body.collect().await.map_err(|e| CheckpointError::Backend {
            key: key.to_owned(),
            detail: format!("s3://{}/{}: GetObject: reading the body: {e}", self.bucket, self.full_key(key)),
        })?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    /// GetObject, its body handed to `sink` as it arrives.
    async fn read_object(&self, key: &str, sink: &mut ChunkSink<'_>) -> Result<bool, CheckpointError> {
        let output = match self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(false),
            Err(e) => return Err(self.error("GetObject", key, &e)),
        };
        let mut body = output.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| CheckpointError::Backend {
                key: key.to_owned(),
                detail: format!("s3://{}/{}: GetObject: reading the body: {e}", self.bucket, self.full_key(key)),
            })?;
            sink(&chunk).map_err(|detail| CheckpointError::Corrupt { key: key.to_owned(), detail })?;
        }
        Ok(true)
    }

    async fn delete_object(&self, key: &str) -> Result<(), CheckpointError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, &e))?;
        Ok(())
    }

    /// One `DeleteObjects` request per batch of keys: after a snapshot, a partition deletes the
    /// whole history it replaces, which one request per key spreads over seconds of calls.
    async fn delete_objects(&self, keys: &[String]) -> Result<(), CheckpointError> {
        for batch in keys.chunks(self.delete_batch) {
            let Some(first) = batch.first() else { continue };
            let delete = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(self.full_key(key)).build())
                .collect::<Result<Vec<_>, _>>()
                .and_then(|objects| Delete::builder().set_objects(Some(objects)).quiet(true).build())
                .map_err(|e| CheckpointError::Rejected { key: first.clone(), detail: format!("DeleteObjects: {e}") })?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.error("DeleteObjects", first, &e))?;
            // S3 answers 200 and lists the keys it could not delete (a missing key is no error).
            if let Some(refused) = output.errors().first() {
                let key = refused.key().and_then(|k| k.strip_prefix(self.prefix.as_str())).unwrap_or(first).to_owned();
                let code = refused.code().unwrap_or("no code");
                let detail = format!(
                    "s3://{}/{}: DeleteObjects did not delete it ({}): {code}: {}",
                    self.bucket,
                    self.full_key(&key),
                    self.target,
                    refused.message().unwrap_or("no message")
                );
                return Err(match code {
                    "InternalError" | "SlowDown" | "ServiceUnavailable" => CheckpointError::Backend { key, detail },
                    _ => CheckpointError::Rejected { key, detail },
                });
            }
        }
        Ok(())
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, CheckpointError> {
        let mut keys = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_max_keys(self.list_page_size)
                .set_continuation_token(continuation.take())
                .send()
                .await
                .map_err(|e| self.error("ListObjectsV2", prefix, &e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key()?.strip_prefix(self.prefix.as_str()).map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(token) if page.is_truncated() == Some(true) => continuation = Some(token.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }
}

impl BlobStore for S3BlobStore {
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(async move {
            if data.len() > self.multipart_threshold {
                self.put_multipart(key, data).await
            } else {
                self.put_object(key, data).await
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, CheckpointError>> {
        Box::pin(self.get_object(key))
    }

    fn read<'a>(&'a self, key: &'a str, sink: &'a mut ChunkSink<'_>) -> BoxFuture<'a, Result<bool, CheckpointError>> {
        Box::pin(self.read_object(key, sink))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(self.delete_object(key))
    }

    fn delete_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(self.delete_objects(keys))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, CheckpointError>> {
        Box::pin(self.list_keys(prefix))
    }
}
