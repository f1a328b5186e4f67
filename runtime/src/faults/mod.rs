//! Fault injection for tests: makes the AWS clients and the function invoker
//! fail on purpose, so tests can show that the contract holds when services
//! throttle, fail, answer slowly or lose an answer after applying a request.
//!
//! A plan is a value: `statefun run` parses the environment variable
//! `STATEFUN_FAULTS` once at start ([`FaultPlan::parse`]), logs a warning that
//! names every fault in it, and hands it to the backends and the invoker, which
//! wrap themselves with it; nothing here reads the environment. Without a plan
//! (or with the variable empty) nothing is installed: the clients are exactly
//! the production ones. With one, every AWS client the plan names gets the
//! layer of [`sdk`] and every function endpoint the wrapper of [`invoke`].
//! Each injected fault is logged at `info` with the words `injected fault`.
//!
//! ```text
//! STATEFUN_FAULTS = item { ";" item }              whitespace around items is ignored
//! item     = "seed=" u64                           default 0: decisions are a pure function of the seed
//!          | target "." fault "=" value
//! target   = "aws" | service | service "." Operation          e.g. kinesis.PutRecords, dynamodb.UpdateItem
//!          | "invoke" | "invoke:" namespace "/" type [ "/" id ] each part a glob (`*`, `?`)
//! service  = "s3" | "kinesis" | "dynamodb" | "lambda"          "aws" means all four
//! fault    = "error" | "throttle" | "lost" | "latency" | "partial"   for AWS targets
//!          | "error" | "timeout"                                       for invoke targets
//! value    = rate                                   "0.05" or "5%": the chance per attempt (per record for partial)
//!          | duration [ ".." duration ] [ "@" rate ]    latency only: a delay (or a uniform range) at a rate (default 1)
//! ```
//!
//! Example: `seed=7; aws.throttle=5%; s3.error=0.05; dynamodb.UpdateItem.lost=0.1;
//! kinesis.PutRecords.partial=0.3; kinesis.latency=5ms..50ms@0.2; invoke:shoppingcart/cart/bad-*.error=1`.
//!
//! What each fault does to one attempt of an AWS call (the SDK's own retries
//! see each attempt; a fault is decided per attempt):
//!
//! - `error`: nothing is sent; the call gets the service's 500 answer
//!   (Kinesis `InternalFailure`, DynamoDB `InternalServerError`, S3
//!   `InternalError`, Lambda `ServiceException`).
//! - `throttle`: nothing is sent; the call gets the service's throttling
//!   answer (Kinesis `ProvisionedThroughputExceededException`, DynamoDB
//!   `ProvisionedThroughputExceededException` for item operations and
//!   `ThrottlingException` for the others, S3 503 `SlowDown`, Lambda 429
//!   `TooManyRequestsException`).
//! - `lost`: the request is sent and applied; its answer is dropped and the
//!   call gets a timeout instead, as when a connection breaks after the
//!   request went out.
//! - `latency`: the request waits before it is sent (inside the attempt's timeout).
//! - `partial` (`kinesis.PutRecords` only): each record is, at the rate, taken
//!   out of the request before it is signed and sent, and put back into the
//!   answer at its original index as refused with
//!   `ProvisionedThroughputExceededException`, as Kinesis reports a partial
//!   failure. A request whose records are all refused is not sent.
//!
//! Of `error`, `throttle` and `lost`, at most one applies to an attempt (in
//! that order); the most specific rule for a fault wins (operation over
//! service over `aws`; among equals, the later one). Invoke rules are tried in
//! order and the first that fires decides: `error` fails the attempt as a
//! function error, `timeout` waits for the endpoint's call timeout and fails it
//! as a timeout. Either way the invoker's retry budget runs out on a rate of 1,
//! and the batch is dead-lettered with the reason.
//!
//! Decisions are reproducible: the `n`-th attempt of an operation on one client
//! (the `n`-th call for one address) is decided by hashing the seed, the
//! target and `n` ([`FaultPlan::attempt`], [`FaultPlan::refused_records`],
//! [`FaultPlan::invoke_fault`] are pure). Which request is the `n`-th depends
//! on the interleaving of concurrent calls, so a run is repeatable as far as
//! its calls are.
//!
//! An invalid plan is reported naming the item and the problem, and the
//! runtime does not start.

pub mod invoke;
pub mod sdk;

use std::time::Duration;

use statefun_proto::reqreply::Address;

pub use sdk::{dynamodb, kinesis, lambda_client, s3};

/// The environment variable holding the plan.
pub const ENV: &str = "STATEFUN_FAULTS";

/// An AWS service the layer can be installed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    S3,
    Kinesis,
    DynamoDb,
    Lambda,
}

impl Service {
    pub const ALL: [Service; 4] = [Service::S3, Service::Kinesis, Service::DynamoDb, Service::Lambda];

    pub fn name(self) -> &'static str {
        match self {
            Service::S3 => "s3",
            Service::Kinesis => "kinesis",
            Service::DynamoDb => "dynamodb",
            Service::Lambda => "lambda",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A fault of an AWS call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsFault {
    Error,
    Throttle,
    Lost,
    Latency,
    Partial,
}

impl AwsFault {
    const ALL: [AwsFault; 5] =
        [AwsFault::Error, AwsFault::Throttle, AwsFault::Lost, AwsFault::Latency, AwsFault::Partial];

    pub fn name(self) -> &'static str {
        match self {
            AwsFault::Error => "error",
            AwsFault::Throttle => "throttle",
            AwsFault::Lost => "lost",
            AwsFault::Latency => "latency",
            AwsFault::Partial => "partial",
        }
    }
}

/// A fault of a function invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvokeFault {
    Error,
    Timeout,
}

impl InvokeFault {
    pub fn name(self) -> &'static str {
        match self {
            InvokeFault::Error => "error",
            InvokeFault::Timeout => "timeout",
        }
    }
}

/// What happens to one attempt of an AWS call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    /// Wait this long before sending.
    pub delay: Option<Duration>,
    /// `Error`, `Throttle`, `Lost` or `Partial` (never `Latency`).
    pub fault: Option<AwsFault>,
}

#[derive(Clone, Debug, PartialEq)]
struct AwsRule {
    /// `None`: every service (`aws`).
    service: Option<Service>,
    operation: Option<String>,
    fault: AwsFault,
    rate: f64,
    /// For latency: the range of delays.
    delay: (Duration, Duration),
}

impl AwsRule {
    fn specificity(&self, service: Service, operation: &str) -> Option<u8> {
        match (self.service, &self.operation) {
            (Some(s), Some(op)) if s == service && op == operation => Some(2),
            (Some(s), None) if s == service => Some(1),
            (None, None) => Some(0),
            _ => None,
        }
    }
}

/// `namespace/type[/id]`, each part a glob.
#[derive(Clone, Debug, PartialEq)]
struct AddressPattern {
    namespace: String,
    name: String,
    id: Option<String>,
}

impl AddressPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, '/');
        let (Some(namespace), Some(name)) = (parts.next(), parts.next()) else {
            return Err(format!("address pattern `{text}` is not namespace/type or namespace/type/id"));
        };
        if namespace.is_empty() || name.is_empty() {
            return Err(format!("address pattern `{text}` has an empty namespace or type"));
        }
        let id = parts.next().map(str::to_owned);
        if id.as_deref() == Some("") {
            return Err(format!("address pattern `{text}` has an empty id (leave `/id` out to match every id)"));
        }
        Ok(Self { namespace: namespace.to_owned(), name: name.to_owned(), id })
    }

    fn matches(&self, address: &Address) -> bool {
        glob(&self.namespace, &address.namespace)
            && glob(&self.name, &address.r#type)
            && self.id.as_deref().is_none_or(|id| glob(id, &address.id))
    }
}

#[derive(Clone, Debug, PartialEq)]
struct InvokeRule {
    /// `None`: every address.
    pattern: Option<AddressPattern>,
    fault: InvokeFault,
    rate: f64,
    /// The item as written, for messages.
    text: String,
}

/// A parsed `STATEFUN_FAULTS`: shown as its items, `; `-separated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    pub seed: u64,
    aws: Vec<AwsRule>,
    invoke: Vec<InvokeRule>,
    /// The items as written, for the warning at start.
    items: Vec<String>,
}

/// A plan that does not parse: the item and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{ENV}: item `{item}`: {detail}")]
pub struct FaultPlanError {
    pub item: String,
    pub detail: String,
}

impl std::fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.items.join("; "))
    }
}

impl FaultPlan {
    pub fn parse(text: &str) -> Result<Self, FaultPlanError> {
        let mut plan = FaultPlan::default();
        for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            plan.parse_item(item).map_err(|detail| FaultPlanError { item: item.to_owned(), detail })?;
            plan.items.push(item.to_owned());
        }
        Ok(plan)
    }

    fn parse_item(&mut self, item: &str) -> Result<(), String> {
        let Some((key, value)) = item.split_once('=') else {
            return Err("expected `target.fault=value` or `seed=<number>`".into());
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "seed" {
            self.seed = value.parse().map_err(|_| format!("seed `{value}` is not an unsigned 64-bit number"))?;
            return Ok(());
        }
        let Some((target, fault)) = key.rsplit_once('.') else {
            return Err(format!("`{key}` names no fault: expected `target.fault`, e.g. `kinesis.throttle`"));
        };
        if target == "invoke" || target.starts_with("invoke:") {
            let pattern = match target.strip_prefix("invoke:") {
                Some(pattern) => Some(AddressPattern::parse(pattern)?),
                None => None,
            };
            let fault = match fault {
                "error" => InvokeFault::Error,
                "timeout" => InvokeFault::Timeout,
                other => return Err(format!("unknown invoke fault `{other}` (expected error or timeout)")),
            };
            let rate = parse_rate(value)?;
            self.invoke.push(InvokeRule { pattern, fault, rate, text: item.to_owned() });
            return Ok(());
        }
        let (service, operation) = match target.split_once('.') {
            Some((service, operation)) => (service, Some(operation)),
            None => (target, None),
        };
        let service = match service {
            "aws" if operation.is_none() => None,
            "aws" => return Err("`aws` stands for every service and takes no operation".into()),
            name => Some(Service::parse(name).ok_or_else(|| {
                format!(
                    "unknown service `{name}` (expected s3, kinesis, dynamodb, lambda, aws, invoke or invoke:<address>)"
                )
            })?),
        };
        if let Some(operation) = operation {
            let valid = operation.starts_with(|c: char| c.is_ascii_uppercase())
                && operation.chars().all(|c| c.is_ascii_alphanumeric());
            if !valid {
                return Err(format!("operation `{operation}` is not an API operation name such as PutRecords"));
            }
        }
        let fault = AwsFault::ALL
            .into_iter()
            .find(|f| f.name() == fault)
            .ok_or_else(|| format!("unknown fault `{fault}` (expected error, throttle, lost, latency or partial)"))?;
        if fault == AwsFault::Partial
            && (service != Some(Service::Kinesis) || operation.is_some_and(|op| op != "PutRecords"))
        {
            return Err("partial failures exist for kinesis.PutRecords only".into());
        }
        let (rate, delay) = match fault {
            AwsFault::Latency => parse_latency(value)?,
            _ => (parse_rate(value)?, (Duration::ZERO, Duration::ZERO)),
        };
        self.aws.push(AwsRule { service, operation: operation.map(str::to_owned), fault, rate, delay });
        Ok(())
    }

    /// Whether any AWS rule applies to `service`.
    pub fn covers(&self, service: Service) -> bool {
        self.aws.iter().any(|r| r.service.is_none_or(|s| s == service))
    }

    /// Whether the plan has invoke rules.
    pub fn has_invoke_faults(&self) -> bool {
        !self.invoke.is_empty()
    }

    /// The rule for `fault` on the operation: the most specific, the later among equals.
    fn rule(&self, service: Service, operation: &str, fault: AwsFault) -> Option<&AwsRule> {
        let candidates = self.aws.iter().filter(|r| r.fault == fault);
        let scored = candidates.filter_map(|r| Some((r.specificity(service, operation)?, r)));
        scored
            .fold(None, |best: Option<(u8, &AwsRule)>, (score, rule)| match best {
                Some((best_score, _)) if best_score > score => best,
                _ => Some((score, rule)),
            })
            .map(|(_, rule)| rule)
    }

    /// A number in [0, 1) for `what` of the `n`-th attempt: the plan's dice.
    fn roll(&self, what: &str, n: u64) -> f64 {
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(format!("{what}#{n}").as_bytes(), self.seed);
        (hash >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The faults of the `n`-th attempt (counting from 0) of `operation` on a `service` client.
    pub fn attempt(&self, service: Service, operation: &str, n: u64) -> Attempt {
        let key = |fault: AwsFault| format!("{}.{operation}.{}", service.name(), fault.name());
        let fires = |fault: AwsFault| {
            self.rule(service, operation, fault).filter(|rule| rule.rate > 0.0 && self.roll(&key(fault), n) < rule.rate)
        };
        let delay = fires(AwsFault::Latency).map(|rule| {
            let (low, high) = rule.delay;
            low + (high - low).mul_f64(self.roll(&format!("{}.delay", key(AwsFault::Latency)), n))
        });
        let mut fault = [AwsFault::Error, AwsFault::Throttle, AwsFault::Lost].into_iter().find(|f| fires(*f).is_some());
        if fault.is_none() && service == Service::Kinesis && operation == "PutRecords" {
            fault =
                self.rule(service, operation, AwsFault::Partial).filter(|r| r.rate > 0.0).map(|_| AwsFault::Partial);
        }
        Attempt { delay, fault }
    }

    /// Which of the `count` records of the `n`-th `PutRecords` attempt are refused.
    pub fn refused_records(&self, n: u64, count: usize) -> Vec<usize> {
        let Some(rule) = self.rule(Service::Kinesis, "PutRecords", AwsFault::Partial) else { return Vec::new() };
        (0..count).filter(|i| self.roll(&format!("kinesis.PutRecords.partial.{i}"), n) < rule.rate).collect()
    }

    /// The fault of the `n`-th call (counting from 0) for `address`, with the rule that fired.
    pub fn invoke_fault(&self, address: &Address, n: u64) -> Option<(InvokeFault, &str)> {
        let target = crate::address::display(address);
        self.invoke.iter().enumerate().find_map(|(index, rule)| {
            let applies = rule.pattern.as_ref().is_none_or(|p| p.matches(address));
            let fires = applies && rule.rate > 0.0 && self.roll(&format!("invoke.{index}.{target}"), n) < rule.rate;
            fires.then_some((rule.fault, rule.text.as_str()))
        })
    }
}

/// `0.05`, `5%`, `1`: a chance between 0 and 1.
fn parse_rate(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(percent) => (percent.trim(), 100.0),
        None => (text, 1.0),
    };
    let rate = number.parse::<f64>().map_err(|_| format!("rate `{text}` is not a number such as 0.05 or 5%"))? / scale;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("rate `{text}` is not between 0 and 1 (0% and 100%)"));
    }
    Ok(rate)
}

/// `50ms`, `10ms..200ms`, `1s@0.1`: delays and the rate they apply at.
fn parse_latency(text: &str) -> Result<(f64, (Duration, Duration)), String> {
    let (range, rate) = match text.split_once('@') {
        Some((range, rate)) => (range.trim(), parse_rate(rate.trim())?),
        None => (text, 1.0),
    };
    let duration = |d: &str| {
        humantime::parse_duration(d.trim()).map_err(|e| format!("latency `{d}` is not a duration such as 50ms: {e}"))
    };
    let (low, high) = match range.split_once("..") {
        Some((low, high)) => (duration(low)?, duration(high)?),
        None => (duration(range)?, duration(range)?),
    };
    if low > high {
        return Err(format!("latency range `{range}` ends before it starts"));
    }
    Ok((rate, (low, high)))
}

/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` any one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it has absorbed up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests;
