//! The commit store in a DynamoDB table (the AWS mode): one item per
//! partition, every change a conditional write.
//!
//! ```text
//! partition (N, hash key) | owner (S) | lease (N) | heartbeat (N) | wanted_by (S)
//!                         | epoch (N) | snapshot_epoch (N) | chain_lease (N)
//! ```
//!
//! `lease` is the lease counter, `owner` empty once released, `heartbeat`
//! bumped by every renewal, `wanted_by` a worker that asked for a hand-over;
//! `epoch`, `snapshot_epoch` and `chain_lease` are the [`PartitionManifest`]
//! of the last commit (`epoch = 0`: never committed). Items written before
//! `heartbeat`/`wanted_by` existed read as 0 and empty.
//!
//! - `lease` is a consistent `GetItem`.
//! - `take` writes the new owner with the counter bumped, on the condition
//!   that owner, counter, heartbeat and epoch are still what the caller saw
//!   (`attribute_not_exists` for a new partition), so the manifest it returns
//!   is exactly the one the lease was taken over. A lost race is `Ok(None)`.
//! - `renew` bumps the heartbeat on `owner = :o AND lease = :l` and returns
//!   whether a hand-over was asked for; `release` empties the owner on the
//!   same condition; `request_handover` sets `wanted_by` on the seen owner and
//!   counter (a holder that changed meanwhile makes it a no-op).
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
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue, ScalarAttributeType,
    TableStatus,
};
use statefun_proto::internal::PartitionManifest;

use super::{CommitError, CommitStore, Committed, Lease, Renewal};
use crate::aws::{self, FailureKind};
use crate::log::BoxFuture;

/// How long `create_table` waits for the table to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct DynamoCommitStore {
    client: Client,
    table: String,
    /// Region and endpoint, for error messages.
    target: String,
}

/// Whether a conditional write failed its condition.
fn condition_failed<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    error.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

impl DynamoCommitStore {
    pub fn new(config: &SdkConfig, table: impl Into<String>) -> Self {
        let dynamo_config = aws_sdk_dynamodb::config::Builder::from(config).timeout_config(aws::storage_timeouts());
        Self {
            client: Client::from_conf(dynamo_config.build()),
            table: table.into(),
            target: aws::describe_target(config, "DYNAMODB"),
        }
    }

    /// The store with the fault layer of `plan` on its client, if the plan names
    /// the service (tests: see [`crate::faults`]).
    pub fn with_faults(mut self, plan: &std::sync::Arc<crate::faults::FaultPlan>) -> Self {
        let config = crate::faults::dynamodb(self.client.config().to_builder(), plan);
        self.client = Client::from_conf(config.build());
        self
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

    /// Writes the first lease of a partition nobody ever held; `false` if someone did meanwhile.
    async fn create_lease(&self, partition: u32, owner: &str) -> Result<bool, CommitError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("partition", number(partition))
            .item("owner", AttributeValue::S(owner.to_owned()))
            .item("lease", number(1))
            .item("heartbeat", number(0))
            .item("wanted_by", AttributeValue::S(String::new()))
            .item("epoch", number(0))
            .item("snapshot_epoch", number(0))
            .item("chain_lease", number(0))
            .condition_expression("attribute_not_exists(#partition)")
            .expression_attribute_names("#partition", "partition")
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(self.error("PutItem (take lease)", &e)),
        }
    }

    /// Takes over the lease seen in `seen`, if nothing moved since; `false` if something did.
    async fn take_lease(&self, partition: u32, owner: &str, seen: &Committed) -> Result<bool, CommitError> {
        // Items from before heartbeats existed have none: it reads as 0.
        let heartbeat_unchanged = if seen.heartbeat == 0 {
            "(#heartbeat = :heartbeat OR attribute_not_exists(#heartbeat))"
        } else {
            "#heartbeat = :heartbeat"
        };
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("partition", number(partition))
            .update_expression("SET #owner = :owner, #lease = :next, #heartbeat = :zero, #wanted_by = :nobody")
            .condition_expression(format!(
                "#owner = :seen_owner AND #lease = :seen AND #epoch = :epoch AND {heartbeat_unchanged}"
            ))
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#lease", "lease")
            .expression_attribute_names("#epoch", "epoch")
            .expression_attribute_names("#heartbeat", "heartbeat")
            .expression_attribute_names("#wanted_by", "wanted_by")
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":next", number(seen.counter + 1))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":nobody", AttributeValue::S(String::new()))
            .expression_attribute_values(":seen_owner", AttributeValue::S(seen.owner.clone()))
            .expression_attribute_values(":seen", number(seen.counter))
            .expression_attribute_values(":epoch", number(seen.manifest.epoch))
            .expression_attribute_values(":heartbeat", number(seen.heartbeat))
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(self.error("UpdateItem (take lease)", &e)),
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
    let string = |attribute: &str| match item.get(attribute) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(malformed(attribute, "string")),
    };
    Ok(Committed {
        owner: string("owner")?,
        counter: int("lease")?,
        heartbeat: if item.contains_key("heartbeat") { int("heartbeat")? } else { 0 },
        wanted_by: if item.contains_key("wanted_by") { string("wanted_by")? } else { String::new() },
        manifest: PartitionManifest {
            epoch: int("epoch")?,
            snapshot_epoch: int("snapshot_epoch")?,
            lease: int("chain_lease")?,
        },
    })
}

impl CommitStore for DynamoCommitStore {
    fn lease<'a>(&'a self, partition: u32) -> BoxFuture<'a, Result<Option<Committed>, CommitError>> {
        Box::pin(self.read(partition, "GetItem (lease)"))
    }

    fn take<'a>(
        &'a self,
        partition: u32,
        owner: &'a str,
        seen: Option<&'a Committed>,
    ) -> BoxFuture<'a, Result<Option<Lease>, CommitError>> {
        Box::pin(async move {
            let (taken, counter, manifest) = match seen {
                None => (self.create_lease(partition, owner).await?, 1, None),
                Some(seen) => (
                    self.take_lease(partition, owner, seen).await?,
                    seen.counter + 1,
                    (seen.manifest.epoch > 0).then_some(seen.manifest),
                ),
            };
            Ok(taken.then(|| Lease { partition, owner: owner.to_owned(), counter, manifest }))
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Renewal, CommitError>> {
        Box::pin(async move {
            let renewed = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("partition", number(lease.partition))
                .update_expression("SET #heartbeat = if_not_exists(#heartbeat, :zero) + :one")
                .condition_expression("#owner = :owner AND #lease = :lease")
                .expression_attribute_names("#heartbeat", "heartbeat")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#lease", "lease")
                .expression_attribute_values(":zero", number(0))
                .expression_attribute_values(":one", number(1))
                .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
                .expression_attribute_values(":lease", number(lease.counter))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match renewed {
                Ok(output) => {
                    let wanted = output.attributes().and_then(|a| a.get("wanted_by")).and_then(|v| v.as_s().ok());
                    Ok(Renewal { handover_requested: wanted.is_some_and(|w| !w.is_empty()) })
                }
                Err(e) if condition_failed(&e) => Err(lease.lost()),
                Err(e) => Err(self.error("UpdateItem (renew lease)", &e)),
            }
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), CommitError>> {
        Box::pin(async move {
            let released = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("partition", number(lease.partition))
                .update_expression("SET #owner = :nobody, #wanted_by = :nobody")
                .condition_expression("#owner = :owner AND #lease = :lease")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#wanted_by", "wanted_by")
                .expression_attribute_names("#lease", "lease")
                .expression_attribute_values(":nobody", AttributeValue::S(String::new()))
                .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
                .expression_attribute_values(":lease", number(lease.counter))
                .send()
                .await;
            match released {
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => Err(lease.lost()),
                Err(e) => Err(self.error("UpdateItem (release lease)", &e)),
            }
        })
    }

    fn request_handover<'a>(
        &'a self,
        partition: u32,
        requester: &'a str,
        seen: &'a Committed,
    ) -> BoxFuture<'a, Result<(), CommitError>> {
        Box::pin(async move {
            let requested = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("partition", number(partition))
                .update_expression("SET #wanted_by = :requester")
                .condition_expression("#owner = :owner AND #lease = :lease")
                .expression_attribute_names("#wanted_by", "wanted_by")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#lease", "lease")
                .expression_attribute_values(":requester", AttributeValue::S(requester.to_owned()))
                .expression_attribute_values(":owner", AttributeValue::S(seen.owner.clone()))
                .expression_attribute_values(":lease", number(seen.counter))
                .send()
                .await;
            match requested {
                // A holder that changed meanwhile is asked again next time, if still needed.
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => Ok(()),
                Err(e) => Err(self.error("UpdateItem (request hand-over)", &e)),
            }
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
                .update_expression(
                    "SET #epoch = :epoch, #snapshot_epoch = :snapshot_epoch, #chain_lease = :chain_lease",
                )
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
                Err(e) if condition_failed(&e) => Err(CommitError::Fenced {
                    partition: lease.partition,
                    epoch: manifest.epoch,
                    owner: lease.owner.clone(),
                    counter: lease.counter,
                    previous: previous_epoch,
                }),
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
