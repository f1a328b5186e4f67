//! `statefun send`: append records to a stream, encoding JSON by typename.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;
use statefun_runtime::config::ModuleConfig;
use statefun_runtime::log::{AppendRecord, MAX_RECORD_BYTES, ShardChoice, kpl};
use statefun_runtime::values::ValueCodec;

use super::{Storage, patiently};

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    storage: Storage,
    /// The stream to append to.
    #[arg(long)]
    stream: String,
    /// Partition key: for an ingress, the id of the target function instance.
    #[arg(long, required_unless_present = "lines")]
    key: Option<String>,
    /// The value as JSON (a JSON string for io.statefun.types/string).
    #[arg(long, required_unless_present = "lines")]
    value: Option<String>,
    /// Read records from a file ('-' for stdin), one JSON object per line: {"key": ..., "value": ...}.
    #[arg(long, conflicts_with_all = ["key", "value"])]
    lines: Option<PathBuf>,
    /// Typename of the value; when absent, the stream's valueType in --module.
    #[arg(long = "type")]
    typename: Option<String>,
    /// module.yaml, to find the stream's valueType.
    #[arg(long, env = "STATEFUN_MODULE", default_value = "module.yaml")]
    module: PathBuf,
    /// Extra protobuf FileDescriptorSet files for your own message types.
    #[arg(long)]
    descriptor_set: Vec<PathBuf>,
    /// Shards of the stream if it has to be created (local mode; on AWS the stream must exist).
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Aggregate up to N records into each Kinesis record, as the Kinesis Producer
    /// Library does (its aggregated record format; the outer partition key is the
    /// first user record's). The runtime reads each user record on its own.
    #[arg(long, value_name = "N")]
    kpl_aggregate: Option<usize>,
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let typename = match args.typename {
        Some(t) => t,
        None => stream_value_type(&args.module, &args.stream)?,
    };
    let codec = ValueCodec::new(&args.descriptor_set)?;
    let mut inputs: Vec<(String, Value)> = Vec::new();
    match (&args.lines, args.key, args.value) {
        (Some(path), _, _) => {
            let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
                ))
            };
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let at = || format!("{}, line {}", path.display(), n + 1);
                let record: Value = serde_json::from_str(&line).with_context(|| format!("{}: not JSON", at()))?;
                let key = record
                    .get("key")
                    .and_then(Value::as_str)
                    .with_context(|| format!("{}: missing string field `key`", at()))?;
                let value = record.get("value").with_context(|| format!("{}: missing field `value`", at()))?;
                inputs.push((key.to_owned(), value.clone()));
            }
        }
        (None, Some(key), Some(value)) => {
            let json: Value = serde_json::from_str(&value).with_context(|| format!("--value is not JSON: {value}"))?;
            inputs.push((key, json));
        }
        _ => bail!("give --key and --value, or --lines"),
    }
    let mut records = Vec::with_capacity(inputs.len());
    for (key, value) in inputs {
        if key.is_empty() {
            bail!("empty partition key: every record needs a key (it is the target's id)");
        }
        records.push(AppendRecord {
            partition_key: key,
            shard: ShardChoice::ByKey,
            data: codec.encode(&typename, &value)?,
            id: None,
        });
    }
    let count = records.len();
    if let Some(per_record) = args.kpl_aggregate {
        anyhow::ensure!(per_record >= 1, "--kpl-aggregate must be at least 1");
        records = aggregated(records, per_record)?;
    }
    let log = args.storage.log().await?;
    patiently(|| log.ensure_stream(&args.stream, args.shards)).await?;
    patiently(|| log.append(&args.stream, &records)).await?;
    match args.kpl_aggregate {
        Some(_) => eprintln!(
            "appended {count} record(s) of {typename} to {} in {} KPL-aggregated record(s)",
            args.stream,
            records.len()
        ),
        None => eprintln!("appended {count} record(s) of {typename} to {}", args.stream),
    }
    Ok(())
}

/// Groups `records` into KPL-aggregated records of at most `per_record` user
/// records each, and no larger than a Kinesis record may be.
fn aggregated(records: Vec<AppendRecord>, per_record: usize) -> anyhow::Result<Vec<AppendRecord>> {
    let mut out = Vec::new();
    let mut group: Vec<(String, Vec<u8>)> = Vec::new();
    let mut bytes = 0;
    // Room for the framing: magic, checksum, table entries and field tags.
    let overhead = |key: &str, data: &[u8]| key.len() + data.len() + 32;
    let flush = |group: &mut Vec<(String, Vec<u8>)>, out: &mut Vec<AppendRecord>| {
        if let Some((key, _)) = group.first() {
            let partition_key = key.clone();
            out.push(AppendRecord { partition_key, shard: ShardChoice::ByKey, data: kpl::aggregate(group), id: None });
            group.clear();
        }
    };
    for record in records {
        let size = overhead(&record.partition_key, &record.data);
        anyhow::ensure!(
            size + record.partition_key.len() <= MAX_RECORD_BYTES,
            "a record of {} bytes does not fit in an aggregated record",
            record.data.len()
        );
        if group.len() == per_record || bytes + size + group.first().map_or(0, |(k, _)| k.len()) > MAX_RECORD_BYTES {
            flush(&mut group, &mut out);
            bytes = 0;
        }
        bytes += size;
        group.push((record.partition_key, record.data));
    }
    flush(&mut group, &mut out);
    Ok(out)
}

fn stream_value_type(module: &std::path::Path, stream: &str) -> anyhow::Result<String> {
    let config = ModuleConfig::load(module).with_context(|| {
        format!("no --type given, so the valueType of `{stream}` is read from {}", module.display())
    })?;
    config
        .ingress_streams()
        .find(|(_, s)| s.stream == stream)
        .map(|(_, s)| s.value_type.clone())
        .with_context(|| format!("{} has no ingress stream `{stream}`; give --type", module.display()))
}
