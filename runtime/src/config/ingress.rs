//! The StateFun Kinesis ingress kind, `io.statefun.kinesis.v1/ingress`, and its startup
//! position (including StateFun's date format).
//!
//! ```yaml
//! kind: io.statefun.kinesis.v1/ingress
//! spec:
//!   id: shop/orders
//!   awsRegion: {type: specific, id: eu-west-1}
//!   awsCredentials: {type: default}
//!   startupPosition: {type: date, date: "2020-02-01 04:15:00.000 +0000"}   # or latest (default) / earliest
//!   streams:
//!     - stream: add-to-cart
//!       valueType: shop/AddToCart
//!       targets: [shop/cart]
//!   clientConfigProperties:
//!     - SocketTimeout: 9999
//! ```
//!
//! Each record becomes a message for every target, addressed by the record's partition key and
//! typed as the stream's `valueType` (see DESIGN.md section 3).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::address::FunctionType;

use super::aws::{self, AwsCredentials, AwsRegion};
use super::walk::{Node, Walked};

/// The `kind` this file parses.
pub const KIND: &str = "io.statefun.kinesis.v1/ingress";

const SPEC_FIELDS: &[&str] =
    &["id", "awsRegion", "awsCredentials", "startupPosition", "streams", "clientConfigProperties"];
const STREAM_FIELDS: &[&str] = &["stream", "valueType", "targets"];

/// One Kinesis ingress document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressConfig {
    /// The ingress id, `namespace/name` (`spec.id`); unique among ingresses.
    pub id: String,
    /// Region and endpoint of the streams (`spec.awsRegion`, default: provider chain).
    pub region: AwsRegion,
    /// Credentials to read with (`spec.awsCredentials`, default: provider chain).
    pub credentials: AwsCredentials,
    /// Where to start reading a shard that has no checkpointed position (`spec.startupPosition`, default latest).
    pub startup_position: StartupPosition,
    /// The streams read and where their records go (`spec.streams`, at least one).
    pub streams: Vec<IngressStream>,
    /// `spec.clientConfigProperties` as given (StateFun passes them to the AWS Java client;
    /// kept here for the Kinesis client to interpret).
    pub client_properties: BTreeMap<String, String>,
    /// The 1-based number of the YAML document that declared this ingress, for messages.
    pub document: usize,
}

/// One entry of `spec.streams`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressStream {
    /// The Kinesis stream name (`stream`); a stream is read by one ingress entry only.
    pub stream: String,
    /// Typename given to each record's payload (`valueType`, e.g. `shop/AddToCart`).
    pub value_type: String,
    /// Function types each record is sent to (`targets`, at least one, no repeats).
    pub targets: Vec<FunctionType>,
}

/// Where an ingress starts reading a shard it has no checkpointed position for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StartupPosition {
    /// At the tip: only records written from now on (`type: latest`).
    #[default]
    Latest,
    /// At the oldest record still retained (`type: earliest`).
    Earliest,
    /// At the first record written at or after this instant (`type: date`).
    Date(SystemTime),
}

/// Parses the `spec` of one Kinesis ingress document.
pub(crate) fn parse(spec: &Node<'_>, document: usize) -> Walked<IngressConfig> {
    let fields = spec.fields(SPEC_FIELDS, &[])?;
    let id = fields.required("id")?.typename()?;
    let region = aws::region(fields.optional("awsRegion"))?;
    let credentials = aws::credentials(fields.optional("awsCredentials"))?;
    let startup_position = match fields.optional("startupPosition") {
        Some(node) => startup_position(&node)?,
        None => StartupPosition::Latest,
    };
    let streams = fields.required("streams")?.non_empty_seq()?.iter().map(stream).collect::<Walked<Vec<_>>>()?;
    let client_properties = aws::client_properties(fields.optional("clientConfigProperties"))?;
    Ok(IngressConfig { id, region, credentials, startup_position, streams, client_properties, document })
}

fn stream(node: &Node<'_>) -> Walked<IngressStream> {
    let fields = node.fields(STREAM_FIELDS, &[])?;
    let stream = fields.required("stream")?.text()?;
    let value_type = fields.required("valueType")?.typename()?;
    let mut targets: Vec<FunctionType> = Vec::new();
    for target in fields.required("targets")?.non_empty_seq()? {
        let function_type = target.function_type()?;
        if targets.contains(&function_type) {
            return Err(target.fault(format!("{function_type} is listed twice (each record would be delivered twice)")));
        }
        targets.push(function_type);
    }
    Ok(IngressStream { stream, value_type, targets })
}

fn startup_position(node: &Node<'_>) -> Walked<StartupPosition> {
    let fields = node.fields(&["type", "date"], &[])?;
    let kind_node = fields.required("type")?;
    let date = fields.optional("date");
    let position = match kind_node.non_empty_str()? {
        "latest" => StartupPosition::Latest,
        "earliest" => StartupPosition::Earliest,
        "date" => {
            let date_node = fields.required("date")?;
            let text = date_node.non_empty_str()?;
            return parse_date(text).map(StartupPosition::Date).map_err(|problem| date_node.fault(problem));
        }
        other => {
            return Err(kind_node.fault(format!("unknown type {other:?}; one of: latest, earliest, date")));
        }
    };
    if let Some(date) = date {
        return Err(date.fault("only allowed with `type: date`"));
    }
    Ok(position)
}

/// Parses a startup date: StateFun's `yyyy-MM-dd HH:mm:ss.SSS Z` (e.g. `2020-02-01 04:15:00.000 +0000`)
/// or RFC 3339 (`2020-02-01T04:15:00Z`).
///
/// Leniencies, since StateFun's own docs write `2020-02-01 04:15:00.00 Z`: the fraction may have
/// 1 to 9 digits or be absent, and the zone may be `Z`, `UTC`, `+HHMM`, `+HH:MM` or `+HH`.
pub fn parse_date(text: &str) -> Result<SystemTime, String> {
    let invalid = |why: &str| {
        format!(
            "{text:?} is not a date ({why}); use \"yyyy-MM-dd HH:mm:ss.SSS Z\" as in \"2020-02-01 04:15:00.000 +0000\", or RFC 3339"
        )
    };
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let slice = bytes.get(range)?;
        if slice.iter().all(u8::is_ascii_digit) { std::str::from_utf8(slice).ok()?.parse().ok() } else { None }
    };
    let shape_ok = bytes.len() >= 19
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b' ' | b'T' | b't')
        && bytes[13] == b':'
        && bytes[16] == b':';
    let fields = (digits(0..4), digits(5..7), digits(8..10), digits(11..13), digits(14..16), digits(17..19));
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = fields else {
        return Err(invalid("expected yyyy-MM-dd HH:mm:ss"));
    };
    if !shape_ok {
        return Err(invalid("expected yyyy-MM-dd HH:mm:ss"));
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(invalid("no such day"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(invalid("no such time of day"));
    }

    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let count = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if count == 0 || count > 9 {
            return Err(invalid("the fraction of a second needs 1 to 9 digits"));
        }
        let scale = 10u32.pow(9 - count as u32);
        nanos = fraction[..count].parse::<u32>().map_err(|_| invalid("bad fraction"))? * scale;
        rest = &fraction[count..];
    }
    let offset_seconds =
        parse_offset(rest.trim_start()).ok_or_else(|| invalid("expected a zone such as +0000 or Z"))?;

    let days = days_from_civil(i64::from(year), month, day);
    let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let utc = local - offset_seconds;
    let since_epoch = Duration::from_secs(utc.unsigned_abs());
    let whole = if utc >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(since_epoch)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(since_epoch)
    };
    whole
        .and_then(|time| time.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or_else(|| invalid("out of range"))
}

/// A zone offset in seconds east of UTC: `Z`, `UTC`, `GMT`, `+HHMM`, `+HH:MM` or `+HH`.
fn parse_offset(zone: &str) -> Option<i64> {
    if matches!(zone, "Z" | "z" | "UTC" | "GMT") {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let body = zone[1..].replace(':', "");
    if !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes): (i64, i64) = match body.len() {
        2 => (body.parse().ok()?, 0),
        4 => (body[..2].parse().ok()?, body[2..].parse().ok()?),
        _ => return None,
    };
    if hours > 18 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{error_of, loads};
    use super::*;

    const BASE: &str = "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: shop/orders\n";

    fn at(seconds: u64, nanos: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos)
    }

    #[test]
    fn statefun_and_rfc3339_dates_parse_to_the_same_instant() {
        // 2020-02-01T04:15:00Z = 1580530500.
        for text in [
            "2020-02-01 04:15:00.000 +0000",
            "2020-02-01 04:15:00.00 Z",
            "2020-02-01 05:15:00.000 +0100",
            "2020-01-31 23:15:00.000 -05:00",
            "2020-02-01T04:15:00Z",
            "2020-02-01T04:15:00+00:00",
        ] {
            assert_eq!(parse_date(text), Ok(at(1_580_530_500, 0)), "{text}");
        }
        assert_eq!(parse_date("2020-02-01T04:15:00.5Z"), Ok(at(1_580_530_500, 500_000_000)));
        assert_eq!(parse_date("2024-02-29 00:00:00.000 +0000"), Ok(at(1_709_164_800, 0)));
        for bad in [
            "2020-02-01",
            "2020-02-30 00:00:00.000 +0000",
            "2020-02-01 04:15:00.000",
            "2020-02-01 25:00:00 Z",
            "yesterday",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ingress_without_optional_fields_reads_from_latest_in_the_default_region() {
        let config = loads(&format!(
            "{BASE}  streams:\n    - stream: 42\n      valueType: shop/AddToCart\n      targets: [shop/cart]\n"
        ));
        let ingress = &config.ingresses[0];
        assert_eq!(ingress.startup_position, StartupPosition::Latest);
        assert_eq!(ingress.region, AwsRegion::Default);
        assert_eq!(ingress.credentials, AwsCredentials::Default);
        assert_eq!(ingress.streams[0].stream, "42");
    }

    #[test]
    fn missing_value_type_names_the_stream_entry() {
        let error = error_of(&format!("{BASE}  streams:\n    - stream: s\n      targets: [shop/cart]\n"));
        assert_eq!(
            error,
            "module.yaml, document 1 (io.statefun.kinesis.v1/ingress): spec.streams[0].valueType: missing required field"
        );
    }

    #[test]
    fn bad_target_names_its_index() {
        let error = error_of(&format!(
            "{BASE}  streams:\n    - stream: a\n      valueType: shop/A\n      targets: [shop/cart]\n    - stream: b\n      valueType: shop/B\n      targets: [shop/cart, inventory]\n"
        ));
        assert!(
            error.contains(
                "(io.statefun.kinesis.v1/ingress): spec.streams[1].targets[1]: \"inventory\" is not a function type"
            ),
            "{error}"
        );
    }

    #[test]
    fn value_type_without_slash_and_empty_targets_are_rejected() {
        let error = error_of(&format!(
            "{BASE}  streams:\n    - stream: s\n      valueType: AddToCart\n      targets: [shop/cart]\n"
        ));
        assert!(
            error.contains("spec.streams[0].valueType: \"AddToCart\" is not a typename of the form namespace/name"),
            "{error}"
        );
        let error =
            error_of(&format!("{BASE}  streams:\n    - stream: s\n      valueType: shop/A\n      targets: []\n"));
        assert!(error.contains("spec.streams[0].targets: must list at least one entry"), "{error}");
        let error = error_of(&format!("{BASE}  streams: []\n"));
        assert!(error.contains("spec.streams: must list at least one entry"), "{error}");
        let error = error_of(&format!(
            "{BASE}  streams:\n    - stream: s\n      valueType: shop/A\n      targets: [shop/cart, shop/cart]\n"
        ));
        assert!(error.contains("spec.streams[0].targets[1]: shop/cart is listed twice"), "{error}");
    }

    #[test]
    fn bad_startup_dates_are_reported_with_the_expected_format() {
        let error = error_of(&format!(
            "{BASE}  startupPosition:\n    type: date\n    date: 01/02/2020\n  streams:\n    - stream: s\n      valueType: shop/A\n      targets: [shop/cart]\n"
        ));
        assert!(
            error.contains("spec.startupPosition.date: \"01/02/2020\" is not a date")
                && error.contains("yyyy-MM-dd HH:mm:ss.SSS Z"),
            "{error}"
        );
        let error = error_of(&format!(
            "{BASE}  startupPosition:\n    type: earliest\n    date: 2020-02-01T04:15:00Z\n  streams:\n    - stream: s\n      valueType: shop/A\n      targets: [shop/cart]\n"
        ));
        assert!(error.contains("spec.startupPosition.date: only allowed with `type: date`"), "{error}");
    }
}
