//! `statefun state` and `statefun dead-letters`: read what the runtime committed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use prost::Message;
use serde_json::{Value, json};
use statefun_proto::internal::DeadLetter;
use statefun_runtime::address::{self, FunctionType};
use statefun_runtime::checkpoint;
use statefun_runtime::log::{LogError, Position};
use statefun_runtime::partition::{NoEndpoints, Partition};
use statefun_runtime::values::ValueCodec;

use super::{Storage, patiently};

#[derive(Args)]
pub struct StateArgs {
    #[command(flatten)]
    storage: Storage,
    /// Only addresses of this function type (namespace/name).
    #[arg(long)]
    function: Option<String>,
    #[arg(long)]
    descriptor_set: Vec<PathBuf>,
    /// One JSON object: {"namespace/type/id": {"state": value, ...}, ...}.
    #[arg(long)]
    json: bool,
    /// The exchange, whose shard count is the partition count.
    #[arg(long, env = "STATEFUN_EXCHANGE_STREAM", default_value = "statefun-exchange")]
    exchange_stream: String,
}

#[derive(Args)]
pub struct DeadLetterArgs {
    #[command(flatten)]
    storage: Storage,
    #[arg(long, env = "STATEFUN_DEAD_LETTER_STREAM", default_value = "statefun-dead-letters")]
    stream: String,
    #[arg(long)]
    json: bool,
}

pub async fn state(args: StateArgs) -> anyhow::Result<()> {
    let filter = match &args.function {
        Some(text) => Some(FunctionType::parse(text).with_context(|| format!("--function `{text}` is not namespace/name"))?),
        None => None,
    };
    let codec = ValueCodec::new(&args.descriptor_set)?;
    let backends = args.storage.backends().await?;
    let mut all: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    // The exchange has one shard per partition; no exchange means the runtime never ran.
    let partitions = match patiently(|| backends.log.shards(&args.exchange_stream)).await {
        Ok(shards) => shards.len() as u32,
        Err(LogError::NoSuchStream { .. }) => 0,
        Err(e) => return Err(e.into()),
    };
    for partition in 0..partitions {
        // A partition that never committed has no state.
        let Some(manifest) = backends.commits.committed(partition).await?.map(|c| c.manifest) else { continue };
        let history = checkpoint::load_history(backends.blobs.as_ref(), partition, &manifest).await?;
        let restored = Partition::restore(partition, 1, Arc::new(NoEndpoints), history);
        for address in restored.addresses() {
            if filter.as_ref().is_some_and(|f| *f != FunctionType::of(address)) {
                continue;
            }
            let states = restored.states_of(address).unwrap_or_default();
            if states.is_empty() {
                continue;
            }
            let values = states
                .iter()
                .map(|s| {
                    let value = s.value.as_ref().map(|v| codec.decode(Some(&v.typename), &v.value)).unwrap_or(Value::Null);
                    (s.name.clone(), value)
                })
                .collect();
            all.insert(address::display(address), values);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&all)?);
    } else {
        for (address, states) in &all {
            let states: Vec<String> = states.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{address}: {}", states.join(" "));
        }
    }
    Ok(())
}

pub async fn dead_letters(args: DeadLetterArgs) -> anyhow::Result<()> {
    let backends = args.storage.backends().await?;
    for shard in statefun_runtime::log::shard_ids(&backends.log.shards(&args.stream).await?) {
        let mut position = Position::Start;
        loop {
            let (records, next) = patiently(|| backends.log.read(&args.stream, &shard, &position, 1000)).await?;
            if records.is_empty() {
                break;
            }
            position = next;
            for record in records {
                let letter = match DeadLetter::decode(record.data.as_slice()) {
                    Ok(letter) => letter,
                    Err(e) => {
                        println!("#{}: not a dead letter record: {e}", record.sequence);
                        continue;
                    }
                };
                let address = letter.address.as_ref().map(address::display).unwrap_or_default();
                let ids: Vec<&str> = letter.messages.iter().map(|m| m.id.as_str()).collect();
                if args.json {
                    println!(
                        "{}",
                        json!({"id": record.id, "address": address, "reason": letter.reason, "messages": ids, "source": letter.source, "at_ms": letter.at_ms})
                    );
                } else {
                    let what = if ids.is_empty() { letter.source.clone() } else { format!("messages {}", ids.join(", ")) };
                    println!("{address} {what}: {}", letter.reason);
                }
            }
        }
    }
    Ok(())
}
