//! `statefun state` and `statefun dead-letters`: read what the runtime
//! committed; `dead-letters --reinject` sends dead-lettered messages again.

use super::out;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};
use statefun_runtime::address::{self, FunctionType};
use statefun_runtime::checkpoint;
use statefun_runtime::dead_letters::{self, Destination};
use statefun_runtime::log::LogError;
use statefun_runtime::partition::NoEndpoints;
use statefun_runtime::values::ValueCodec;

use super::{DeadLetterDestination, Storage, patiently};

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
    /// Where the runtime writes dead letters (as `statefun run --dead-letter-destination`).
    #[arg(long, env = "STATEFUN_DEAD_LETTER_DESTINATION", value_enum, default_value = "stream")]
    dead_letter_destination: DeadLetterDestination,
    /// Only the dead letters of this address (namespace/type/id).
    #[arg(long)]
    address: Option<String>,
    /// Only the dead letters with these ids (as listed).
    #[arg(long)]
    id: Vec<String>,
    /// Send the selected dead letters' messages to their targets again (through the exchange).
    #[arg(long)]
    reinject: bool,
    /// The exchange, whose shard count is the partition count (for --reinject).
    #[arg(long, env = "STATEFUN_EXCHANGE_STREAM", default_value = "statefun-exchange")]
    exchange_stream: String,
    #[arg(long)]
    json: bool,
}

pub async fn state(args: StateArgs) -> anyhow::Result<()> {
    let filter = match &args.function {
        Some(text) => {
            Some(FunctionType::parse(text).with_context(|| format!("--function `{text}` is not namespace/name"))?)
        }
        None => None,
    };
    let codec = ValueCodec::new(&args.descriptor_set)?;
    let backends = args.storage.backends(None).await?;
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
        let restored =
            checkpoint::recover(backends.blobs.as_ref(), partition, 1, Arc::new(NoEndpoints), &manifest).await?;
        for address in restored.addresses() {
            if filter.as_ref().is_some_and(|f| *f != FunctionType::of(&address)) {
                continue;
            }
            let states = restored.states_of(&address).unwrap_or_default();
            if states.is_empty() {
                continue;
            }
            let values = states
                .iter()
                .map(|s| {
                    let value =
                        s.value.as_ref().map(|v| codec.decode(Some(&v.typename), &v.value)).unwrap_or(Value::Null);
                    (s.name.clone(), value)
                })
                .collect();
            all.insert(address::display(&address), values);
        }
    }
    if args.json {
        out!("{}", serde_json::to_string(&all)?);
    } else {
        for (address, states) in &all {
            let states: Vec<String> = states.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out!("{address}: {}", states.join(" "));
        }
    }
    Ok(())
}

pub async fn dead_letters(args: DeadLetterArgs) -> anyhow::Result<()> {
    let backends = args.storage.backends(None).await?;
    let destination = match args.dead_letter_destination {
        DeadLetterDestination::Stream => Destination::Stream(args.stream.clone()),
        DeadLetterDestination::Objects => Destination::Objects(backends.blobs.clone()),
    };
    let entries = match dead_letters::read_all(&destination, backends.log.as_ref(), backends.blobs.as_ref()).await {
        Ok(entries) => entries,
        // Nothing was ever dead-lettered.
        Err(e) if e.downcast_ref::<LogError>().is_some_and(|e| matches!(e, LogError::NoSuchStream { .. })) => {
            Vec::new()
        }
        Err(e) => return Err(e.context(format!("reading dead letters from {destination:?}"))),
    };
    let mut selected = Vec::new();
    for entry in entries {
        let stored = match entry {
            Ok(stored) => stored,
            Err(problem) => {
                eprintln!("{problem}");
                continue;
            }
        };
        let address = stored.letter.address.as_ref().map(address::display).unwrap_or_default();
        if args.address.as_ref().is_some_and(|wanted| *wanted != address)
            || (!args.id.is_empty() && !args.id.contains(&stored.id))
        {
            continue;
        }
        let letter = &stored.letter;
        let ids: Vec<&str> = letter.messages.iter().map(|m| m.id.as_str()).collect();
        if args.json {
            out!(
                "{}",
                json!({"id": stored.id, "address": address, "reason": letter.reason, "messages": ids, "source": letter.source, "at_ms": letter.at_ms})
            );
        } else {
            let what = if ids.is_empty() { letter.source.clone() } else { format!("messages {}", ids.join(", ")) };
            out!("[{}] {address} {what}: {}", stored.id, letter.reason);
        }
        selected.push(stored.letter);
    }
    if args.reinject {
        let partitions = patiently(|| backends.log.shards(&args.exchange_stream))
            .await
            .with_context(|| format!("the exchange stream `{}` (the runtime never ran?)", args.exchange_stream))?
            .len() as u32;
        let (with_messages, without): (Vec<_>, Vec<_>) = selected.into_iter().partition(|l| !l.messages.is_empty());
        let done = dead_letters::reinject(
            backends.log.as_ref(),
            &args.exchange_stream,
            partitions,
            &with_messages,
            statefun_runtime::now_ms(),
        )
        .await?;
        eprintln!(
            "re-injected {} messages of {} dead letters; {} dead letters hold no message (input records \
             that could not be routed, egress records) and were left as they are",
            done.messages,
            with_messages.len(),
            without.len()
        );
        if !done.too_large.is_empty() {
            eprintln!(
                "left out {} messages larger than an exchange record carries (they cannot travel between \
                 partitions): {}",
                done.too_large.len(),
                done.too_large.join(", ")
            );
        }
    }
    Ok(())
}
