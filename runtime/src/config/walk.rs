//! Walking a parsed YAML document with a path, so every error says where it is.
//!
//! `module.yaml` is parsed into `serde_yaml_ng::Value` and read through [`Node`] and [`Fields`]
//! instead of serde derives: a derive reports "missing field `x`" without saying in which list
//! entry, and cannot tell a typo from a StateFun field we accept but do not use. Each accessor
//! returns a [`Fault`] carrying the field path (`spec.streams[1].targets[0]`); the caller in
//! `mod.rs` adds the file name, document number and kind.
//!
//! Scalar parsers shared by several kinds live here too: durations, positive integers,
//! function types and URLs.

use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::address::FunctionType;

/// What is wrong and where, relative to one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    /// Field path inside the document, e.g. `spec.streams[0].valueType`; empty for the document itself.
    pub path: String,
    /// What is wrong, phrased to be read after the path.
    pub message: String,
}

impl Fault {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

pub(crate) type Walked<T> = Result<T, Fault>;

/// A value inside a document together with its path.
#[derive(Clone, Debug)]
pub(crate) struct Node<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> Node<'a> {
    pub(crate) fn root(value: &'a Value, path: impl Into<String>) -> Self {
        Self { value, path: path.into() }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn value(&self) -> &'a Value {
        self.value
    }

    pub(crate) fn fault(&self, message: impl Into<String>) -> Fault {
        Fault::new(self.path.clone(), message)
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn child(&self, key: &str, value: &'a Value) -> Node<'a> {
        Node { value, path: self.child_path(key) }
    }

    fn item(&self, index: usize, value: &'a Value) -> Node<'a> {
        Node { value, path: format!("{}[{index}]", self.path) }
    }

    fn wrong_type(&self, expected: &str) -> Fault {
        self.fault(format!("expected {expected}, found {}", describe(self.value)))
    }

    /// A string; numbers and booleans are refused (use [`Node::text`] where they make sense).
    pub(crate) fn str(&self) -> Walked<&'a str> {
        match self.value {
            Value::String(text) => Ok(text),
            _ => Err(self.wrong_type("a string")),
        }
    }

    /// A non-empty string without surrounding whitespace.
    pub(crate) fn non_empty_str(&self) -> Walked<&'a str> {
        let text = self.str()?;
        check_trimmed(self, text)?;
        Ok(text)
    }

    /// A scalar read as text: strings as they are, numbers and booleans as YAML wrote them.
    /// For values such as stream names, qualifiers and client properties, where `123` is
    /// a plausible string that YAML happens to read as a number.
    pub(crate) fn text(&self) -> Walked<String> {
        let text = match self.value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => return Err(self.wrong_type("a string")),
        };
        check_trimmed(self, &text)?;
        Ok(text)
    }

    pub(crate) fn seq(&self) -> Walked<Vec<Node<'a>>> {
        match self.value {
            Value::Sequence(items) => {
                Ok(items.iter().enumerate().map(|(index, value)| self.item(index, value)).collect())
            }
            _ => Err(self.wrong_type("a list")),
        }
    }

    /// A list with at least one entry.
    pub(crate) fn non_empty_seq(&self) -> Walked<Vec<Node<'a>>> {
        let items = self.seq()?;
        if items.is_empty() {
            return Err(self.fault("must list at least one entry"));
        }
        Ok(items)
    }

    pub(crate) fn mapping(&self) -> Walked<&'a Mapping> {
        match self.value {
            Value::Mapping(mapping) => Ok(mapping),
            _ => Err(self.wrong_type("a mapping")),
        }
    }

    /// The entries of a mapping whose keys are strings, in their order.
    pub(crate) fn entries(&self) -> Walked<Vec<(&'a str, Node<'a>)>> {
        self.mapping()?
            .iter()
            .map(|(key, value)| match key {
                Value::String(name) => Ok((name.as_str(), self.child(name, value))),
                _ => Err(self.fault(format!("keys must be strings, found {}", describe(key)))),
            })
            .collect()
    }

    /// A mapping whose keys must all be among `fields` or `unused` (see [`Fields`]).
    pub(crate) fn fields(
        &self,
        fields: &'static [&'static str],
        unused: &'static [&'static str],
    ) -> Walked<Fields<'a>> {
        Fields::new(self.clone(), fields, unused)
    }

    /// An integer of at least 1.
    pub(crate) fn positive_int(&self) -> Walked<u64> {
        let Value::Number(number) = self.value else {
            return Err(self.wrong_type("a positive integer"));
        };
        match number.as_u64() {
            Some(0) => Err(self.fault("must be at least 1, found 0")),
            Some(value) => Ok(value),
            None if number.as_i64().is_some() => Err(self.fault(format!("must be at least 1, found {number}"))),
            None => Err(self.fault(format!("expected a positive integer, found {number}"))),
        }
    }

    /// A positive integer that fits the platform's `usize`.
    pub(crate) fn positive_usize(&self) -> Walked<usize> {
        let value = self.positive_int()?;
        usize::try_from(value).map_err(|_| self.fault(format!("{value} is too large")))
    }

    /// A duration: a string such as `2m`, `20s`, `100ms`, `1 min` or `1m 30s`, or an integer of milliseconds.
    pub(crate) fn duration(&self) -> Walked<Duration> {
        match self.value {
            Value::Number(number) => match number.as_u64() {
                Some(millis) => Ok(Duration::from_millis(millis)),
                None => Err(self.fault(format!(
                    "{number} is not a duration; use a whole number of milliseconds or a string such as \"20s\""
                ))),
            },
            Value::String(text) => parse_duration(text).ok_or_else(|| {
                self.fault(format!(
                    "{text:?} is not a duration; use a number with a unit such as \"2m\", \"20s\", \"100ms\" or \"1 min\""
                ))
            }),
            _ => Err(self.wrong_type("a duration such as \"20s\"")),
        }
    }

    /// A duration greater than zero (timeouts).
    pub(crate) fn nonzero_duration(&self) -> Walked<Duration> {
        let duration = self.duration()?;
        if duration.is_zero() {
            return Err(self.fault("must be greater than zero"));
        }
        Ok(duration)
    }

    /// A function type `namespace/name`, split at the last `/`.
    pub(crate) fn function_type(&self) -> Walked<FunctionType> {
        let text = self.non_empty_str()?;
        parse_function_type(text).map_err(|problem| self.fault(problem))
    }

    /// A typename `namespace/name` kept as text (ingress and egress ids, value types).
    pub(crate) fn typename(&self) -> Walked<String> {
        let text = self.non_empty_str()?;
        match text.rsplit_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => Ok(text.to_owned()),
            _ => Err(self.fault(format!("{text:?} is not a typename of the form namespace/name"))),
        }
    }

    /// An absolute `http://` or `https://` URL with a host.
    pub(crate) fn http_url(&self) -> Walked<String> {
        let text = self.non_empty_str()?;
        check_http_url(text).map_err(|problem| self.fault(problem))?;
        Ok(text.to_owned())
    }
}

fn check_trimmed(node: &Node<'_>, text: &str) -> Walked<()> {
    if text.is_empty() {
        return Err(node.fault("must not be empty"));
    }
    if text.trim() != text {
        return Err(node.fault(format!("{text:?} has leading or trailing whitespace")));
    }
    Ok(())
}

/// The fields of one mapping, checked against the names a kind allows.
///
/// `fields` are the names this runtime reads. `unused` are StateFun names it accepts so an
/// existing module.yaml loads, but does not act on; [`Fields::unused_present`] reports them so
/// they can be surfaced as warnings. Any other name is an error that lists the allowed ones,
/// which catches typos such as `urlPathTemplte` instead of silently using a default.
pub(crate) struct Fields<'a> {
    node: Node<'a>,
    mapping: &'a Mapping,
    unused: &'static [&'static str],
}

impl<'a> Fields<'a> {
    fn new(node: Node<'a>, fields: &'static [&'static str], unused: &'static [&'static str]) -> Walked<Self> {
        let mapping = node.mapping()?;
        for key in mapping.keys() {
            let Value::String(name) = key else {
                return Err(node.fault(format!("field names must be strings, found {}", describe(key))));
            };
            if fields.contains(&name.as_str()) || unused.contains(&name.as_str()) {
                continue;
            }
            let mut allowed: Vec<&str> = fields.iter().chain(unused).copied().collect();
            allowed.sort_unstable();
            let hint = match closest(name, &allowed) {
                Some(candidate) => format!(" (did you mean `{candidate}`?)"),
                None => String::new(),
            };
            return Err(Fault::new(
                node.child_path(name),
                format!("unknown field{hint}; allowed fields are: {}", allowed.join(", ")),
            ));
        }
        Ok(Self { node, mapping, unused })
    }

    /// A field that must be present and not null.
    pub(crate) fn required(&self, name: &str) -> Walked<Node<'a>> {
        match self.mapping.get(name) {
            None => Err(Fault::new(self.node.child_path(name), "missing required field")),
            Some(Value::Null) => Err(Fault::new(self.node.child_path(name), "required field has no value")),
            Some(value) => Ok(self.node.child(name, value)),
        }
    }

    /// A field that may be absent; an explicit null counts as absent.
    pub(crate) fn optional(&self, name: &str) -> Option<Node<'a>> {
        match self.mapping.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some(self.node.child(name, value)),
        }
    }

    /// Paths of the accepted-but-unused fields present in this mapping.
    pub(crate) fn unused_present(&self) -> Vec<String> {
        self.unused
            .iter()
            .filter(|name| self.mapping.contains_key(**name))
            .map(|name| self.node.child_path(name))
            .collect()
    }
}

/// A short description of a value for "expected X, found Y" messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(flag) => format!("a boolean ({flag})"),
        Value::Number(number) => format!("a number ({number})"),
        Value::String(text) => format!("a string ({text:?})"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// The allowed name closest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'n>(name: &str, allowed: &[&'n str]) -> Option<&'n str> {
    let lowered = name.to_lowercase();
    allowed
        .iter()
        .map(|candidate| (edit_distance(&lowered, &candidate.to_lowercase()), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 5))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Parses a duration the way StateFun (Flink's `TimeUtils`) and humantime both write them.
///
/// Accepted: a bare number (milliseconds, as in Flink), a number and a unit with or without a
/// space (`20s`, `1 min`, `10 sec`, `100ms`, `1 milli`), and humantime's compound forms (`1m 30s`).
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_millis);
    }
    // Flink unit names humantime does not know.
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        let amount: u64 = text[..digits].parse().ok()?;
        let unit = text[digits..].trim_start();
        let flink = match unit {
            "milli" | "millis" | "millisecond" | "milliseconds" => Some(Duration::from_millis(amount)),
            "micro" | "micros" | "microsecond" | "microseconds" => Some(Duration::from_micros(amount)),
            "nano" | "nanos" | "nanosecond" | "nanoseconds" => Some(Duration::from_nanos(amount)),
            _ => None,
        };
        if flink.is_some() {
            return flink;
        }
    }
    humantime::parse_duration(text).ok()
}

pub(crate) fn parse_function_type(text: &str) -> Result<FunctionType, String> {
    match FunctionType::parse(text) {
        Some(function_type) if !text.contains('*') => Ok(function_type),
        Some(_) => Err(format!("{text:?} is not a function type: `*` is only allowed in endpoint patterns")),
        None => Err(format!("{text:?} is not a function type of the form namespace/name")),
    }
}

/// Checks that `text` is an absolute http(s) URL with a host.
pub(crate) fn check_http_url(text: &str) -> Result<(), String> {
    let not_http = || format!("{text:?} is not an http:// or https:// URL");
    if text.starts_with("http+unix://") || text.starts_with("https+unix://") {
        return Err(format!(
            "{text:?}: Unix domain socket endpoints are not supported; use an http:// or https:// URL"
        ));
    }
    let uri: http::Uri = text.parse().map_err(|error| format!("{}: {error}", not_http()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(not_http()),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(format!("{text:?} has no host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_statefun_and_humantime_spellings() {
        let cases = [
            ("2m", 120_000),
            ("20s", 20_000),
            ("100ms", 100),
            ("1min", 60_000),
            ("1 min", 60_000),
            ("10 sec", 10_000),
            ("1m 30s", 90_000),
            ("250", 250),
            ("5 milli", 5),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_duration(text), Some(Duration::from_millis(millis)), "{text}");
        }
        for bad in ["", "soon", "-1s", "1 fortnight", "s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn misspelt_field_names_get_a_suggestion() {
        let allowed = ["functions", "urlPathTemplate", "maxNumBatchRequests", "transport"];
        assert_eq!(closest("urlPathTemplte", &allowed), Some("urlPathTemplate"));
        assert_eq!(closest("urlpathtemplate", &allowed), Some("urlPathTemplate"));
        assert_eq!(closest("function", &allowed), Some("functions"));
        assert_eq!(closest("something", &allowed), None);
    }

    #[test]
    fn http_urls_need_an_http_scheme_and_a_host() {
        assert!(check_http_url("http://localhost:8000/statefun").is_ok());
        assert!(check_http_url("https://fns.example.com/x").is_ok());
        assert!(check_http_url("ftp://x").expect_err("not http").contains("is not an http:// or https:// URL"));
        assert!(check_http_url("localhost:8000").is_err());
        assert!(check_http_url("http:///path").is_err());
        assert!(check_http_url("http+unix:///uds.sock/path").expect_err("unix").contains("Unix domain socket"));
    }
}
