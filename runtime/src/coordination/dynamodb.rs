//! The commit store in a DynamoDB table (the AWS mode): one item per
//! partition, every change a conditional write.
//!
//! ```text
//! partition (N, hash key) | owner (S) | lease (N) | epoch (N) | snapshot_epoch (N) | chain_lease (N)
//! ```
//!
//! `lease` is the lease counter; `epoch`, `snapshot_epoch` and `chain_lease`
//! are the [`PartitionManifest`] of the last commit (`epoch = 0`: never committed).
//!
//! - `acquire` reads the item (consistent read) and writes the new owner with
//!   the counter bumped, on the condition that neither the counter nor the
//!   epoch moved since the read (`attribute_not_exists` for a new partition),
//!   so the manifest it returns is exactly the one the lease was taken over.
//!   Losing that race to another acquire or a last commit of the old owner
//!   just means reading again.
//! - `commit` is one `UpdateItem` with `owner = :o AND lease = :l AND epoch = :prev`;
//!   a failed condition is [`CommitError::Fenced`]. It makes a single attempt,
//!   without the SDK's retries: a retry of an attempt that was applied but
//!   whose answer was lost would fail its condition and report a commit that
//!   succeeded as fenced. An attempt with an unknown outcome comes back as
//!   [`CommitError::Backend`] instead, which the committer settles with `committed`.
//! - `committed` is a consistent `GetItem`.
//!
//! This module owns the table's item format and its conditions. It must not
//! decide when to take or give up a lease (that is the node's), and it never
//! writes an item without a condition. [`DynamoCommitStore::create_table`] is
//! for tests and local stacks; deployments create the table with Terraform.
//!
//! Errors: throttling, 5xx and timeouts are [`CommitError::Backend`]
//! (retryable); a missing table, denied access and validation errors are
//! [`CommitError::Rejected`], naming the table, region and endpoint.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use statefun_proto::internal::PartitionManifest;

use super::{CommitError, CommitStore, Committed, Lease};
use crate::aws::{self, FailureKind};
use crate::log::BoxFuture;

/// How often `acquire` reads again after losing a race before it gives up (retryably).
const ACQUIRE_ATTEMPTS: u32 = 10;
/// How long `create_table` waits for the table to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct DynamoCommitStore {
    client: Client,
    table: String,
    /// Region and endpoint, for error messages.
    target: String,
}

/// The outcome of a conditional write that may lose a race.
enum Write {
    Done,
    Raced,
}

impl DynamoCommitStore {
    pub fn new(config: &SdkConfig, table: impl Into<String>) -> Self {
        let dynamo_config =
            aws_sdk_dynamodb::config::Builder::from(config).timeout_config(aws::storage_timeouts()).build();
        Self {
            client: Client::from_conf(dynamo_config),
            table: table.into(),
            target: aws::describe_target(config, "DYNAMODB"),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table (on-demand billing) if it does not exist, and waits until it is active.
    pub async fn create_table(&self) -> Result<(), CommitError> {
        let definition =
            AttributeDefinition::builder().attribute_name("partition").attribute_type(ScalarAttributeType::N).build();
        let key = KeySchemaElement::builder().attribute_name("partition").key_type(KeyType::Hash).build();
        let (definition, key) = match (definition, key) {
            (Ok(d), Ok(k)) => (d, k),
            (Err(e), _) | (_, Err(e)) => return Err(CommitError::Rejected(format!("table `{}`: {e}", self.table))),
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(definition)
            .key_schema(key)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
            Err(e) => return Err(self.error("CreateTable", &e)),
        }
        let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
        loop {
            let described = self.client.describe_table().table_name(&self.table).send().await;
            let status = match described {
                Ok(d) => d.table().and_then(|t| t.table_status()).cloned(),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => None,
                Err(e) => return Err(self.error("DescribeTable", &e)),
            };
            if status == Some(TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CommitError::Backend(format!(
                    "table `{}` is not active {TABLE_ACTIVE_TIMEOUT:?} after creation (status {status:?})",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Maps an SDK error of `operation` onto the module's error (conditions are handled by the caller).
    fn error<E>(&self, operation: &str, error: &SdkError<E, HttpResponse>) -> CommitError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = aws::classify(operation, error);
        match failure.kind {
            FailureKind::Retryable => CommitError::Backend(format!("table `{}`: {}", self.table, failure.detail)),
            FailureKind::NotFound => CommitError::Rejected(format!(
                "DynamoDB table `{}` does not exist ({}); create it (infra/, or DynamoCommitStore::create_table) \
                 or fix the table name: {}",
                self.table, self.target, failure.detail
            )),
            FailureKind::ConditionFailed | FailureKind::Permanent => {
                CommitError::Rejected(format!("table `{}` ({}): {}", self.table, self.target, failure.detail))
            }
        }
    }

    async fn read(&self, partition: u32, operation: &str) -> Result<Option<Committed>, CommitError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("partition", number(partition))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(operation, &e))?;
        output.item().map(|item| parse_item(&self.table, partition, item)).transpose()
    }

    /// Writes the first lease of a partition nobody ever held.
    async fn create_lease(&self, partition: u32, owner: &str) -> Result<Write, CommitError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("partition", number(partition))
            .item("owner", AttributeValue::S(owner.to_owned()))
            .item("lease", number(1))
            .item("epoch", number(0))
            .item("snapshot_epoch", number(0))
            .item("chain_lease", number(0))
            .condition_expression("attribute_not_exists(#partition)")
            .expression_attribute_names("#partition", "partition")
            .send()
            .await;
        match written {
            Ok(_) => Ok(Write::Done),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(Write::Raced),
            Err(e) => Err(self.error("PutItem (acquire)", &e)),
        }
    }

    /// Takes over the lease seen in `current`, if nothing moved since.
    async fn take_lease(&self, partition: u32, owner: &str, current: &Committed) -> Result<Write, CommitError> {
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("partition", number(partition))
            .update_expression("SET #owner = :owner, #lease = :next")
            .condition_expression("#lease = :seen AND #epoch = :epoch")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#lease", "lease")
            .expression_attribute_names("#epoch", "epoch")
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":next", number(current.counter + 1))
            .expression_attribute_values(":seen", number(current.counter))
            .expression_attribute_values(":epoch", number(current.manifest.epoch))
            .send()
            .await;
        match written {
            Ok(_) => Ok(Write::Done),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(Write::Raced),
            Err(e) => Err(self.error("UpdateItem (acquire)", &e)),
        }
    }
}

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// Reads a partition's item; a malformed item is a permanent error naming the attribute.
fn parse_item(table: &str, partition: u32, item: &HashMap<String, AttributeValue>) -> Result<Committed, CommitError> {
    let malformed = |attribute: &str, what: &str| {
        CommitError::Rejected(format!("table `{table}`: the item of partition {partition} has no {what} `{attribute}`"))
    };
    let int = |attribute: &str| -> Result<u64, CommitError> {
        match item.get(attribute) {
            Some(AttributeValue::N(n)) => n.parse().map_err(|_| malformed(attribute, "unsigned integer")),
            _ => Err(malformed(attribute, "number")),
        }
    };
    let owner = match item.get("owner") {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => return Err(malformed("owner", "string")),
    };
    Ok(Committed {
        owner,
        counter: int("lease")?,
        manifest: PartitionManifest {
            epoch: int("epoch")?,
            snapshot_epoch: int("snapshot_epoch")?,
            lease: int("chain_lease")?,
        },
    })
}

impl CommitStore for DynamoCommitStore {
    fn acquire<'a>(&'a self, partition: u32, owner: &'a str) -> BoxFuture<'a, Result<Lease, CommitError>> {
        Box::pin(async move {
            for attempt in 0..ACQUIRE_ATTEMPTS {
                let current = self.read(partition, "GetItem (acquire)").await?;
                let (written, counter, manifest) = match &current {
                    None => (self.create_lease(partition, owner).await?, 1, None),
                    Some(c) => (
                        self.take_lease(partition, owner, c).await?,
                        c.counter + 1,
                        (c.manifest.epoch > 0).then_some(c.manifest),
                    ),
                };
                match written {
                    Write::Done => return Ok(Lease { partition, owner: owner.to_owned(), counter, manifest }),
                    Write::Raced => {
                        let pause = 20 * u64::from(attempt + 1) + rand::random_range(0..20);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
            }
            Err(CommitError::Backend(format!(
                "table `{}`: partition {partition}: acquire lost {ACQUIRE_ATTEMPTS} races in a row to other writers",
                self.table
            )))
        })
    }

    fn commit<'a>(
        &'a self,
        lease: &'a Lease,
        previous_epoch: u64,
        manifest: PartitionManifest,
    ) -> BoxFuture<'a, Result<(), CommitError>> {
        Box::pin(async move {
            let written = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("partition", number(lease.partition))
                .update_expression("SET #epoch = :epoch, #snapshot_epoch = :snapshot_epoch, #chain_lease = :chain_lease")
                .condition_expression("#owner = :owner AND #lease = :lease AND #epoch = :previous")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#lease", "lease")
                .expression_attribute_names("#epoch", "epoch")
                .expression_attribute_names("#snapshot_epoch", "snapshot_epoch")
                .expression_attribute_names("#chain_lease", "chain_lease")
                .expression_attribute_values(":epoch", number(manifest.epoch))
                .expression_attribute_values(":snapshot_epoch", number(manifest.snapshot_epoch))
                .expression_attribute_values(":chain_lease", number(manifest.lease))
                .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
                .expression_attribute_values(":lease", number(lease.counter))
                .expression_attribute_values(":previous", number(previous_epoch))
                // One attempt: see the module doc.
                .customize()
                .config_override(aws_sdk_dynamodb::config::Builder::default().retry_config(RetryConfig::disabled()))
                .send()
                .await;
            match written {
                Ok(_) => Ok(()),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                    Err(CommitError::Fenced {
                        partition: lease.partition,
                        epoch: manifest.epoch,
                        owner: lease.owner.clone(),
                        counter: lease.counter,
                        previous: previous_epoch,
                    })
                }
                Err(e) => Err(self.error("UpdateItem (commit)", &e)),
            }
        })
    }

    fn committed<'a>(&'a self, partition: u32) -> BoxFuture<'a, Result<Option<Committed>, CommitError>> {
        Box::pin(async move { Ok(self.read(partition, "GetItem").await?.filter(|c| c.manifest.epoch > 0)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_reads_back_as_its_lease_and_manifest() {
        let item: HashMap<String, AttributeValue> = [
            ("partition", number(3)),
            ("owner", AttributeValue::S("w1".into())),
            ("lease", number(7)),
            ("epoch", number(42)),
            ("snapshot_epoch", number(40)),
            ("chain_lease", number(7)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let committed = parse_item("t", 3, &item).expect("parse");
        assert_eq!(committed.owner, "w1");
        assert_eq!(committed.counter, 7);
        assert_eq!(committed.manifest, PartitionManifest { epoch: 42, snapshot_epoch: 40, lease: 7 });
    }

    #[test]
    fn a_malformed_item_is_a_permanent_error_naming_the_attribute() {
        let item: HashMap<String, AttributeValue> =
            [("owner".to_owned(), AttributeValue::S("w1".into())), ("lease".to_owned(), AttributeValue::S("x".into()))]
                .into_iter()
                .collect();
        let err = parse_item("t", 3, &item).expect_err("malformed");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("`lease`"), "{err}");
    }
}
