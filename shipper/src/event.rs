//! Turns one raw line into the record we ship: the service's JSON object with
//! our enrichment spliced in (its own bytes are never rewritten), or, for bad
//! input, a well-formed event that says what was wrong and keeps the content.

use std::borrow::Cow;

use meshwatch_ecs::{self as ecs, field};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::route::{self, Destination, Key, Traceparent};
use crate::scan::{self, Fields};

/// Tag on a line that is not JSON at all.
pub const TAG_INVALID_JSON: &str = "meshwatch_shipper_invalid_json";
/// Tag on a line that is JSON but not an object (a number, string, array…).
pub const TAG_NOT_OBJECT: &str = "meshwatch_shipper_not_object";
/// Tag on a line longer than `--max-line-bytes`: its content is cut there.
pub const TAG_TRUNCATED: &str = "meshwatch_shipper_truncated";
/// Tag on a line with invalid UTF-8: invalid bytes became U+FFFD.
pub const TAG_INVALID_UTF8: &str = "meshwatch_shipper_invalid_utf8";
/// Tag on the last line of a stream that ended without a newline.
pub const TAG_NO_NEWLINE: &str = "meshwatch_shipper_no_final_newline";
/// Length in bytes of a line before truncation.
pub const FIELD_ORIGINAL_BYTES: &str = "shipper.original_bytes";
/// Our explanation, when the service's object already has an `error.message` of its own.
pub const FIELD_SHIPPER_ERROR: &str = "shipper.error.message";

const HOST_NAME: &str = "host.name";
const EVENT_INGESTED: &str = "event.ingested";
const EVENT_ORIGINAL: &str = "event.original";
const LOG_FILE_PATH: &str = "log.file.path";
const LOG_OFFSET: &str = "log.offset";
const TAGS: &str = "tags";

/// One framed line as read, before any interpretation.
#[derive(Clone, Copy, Debug)]
pub struct RawLine<'a> {
    /// The line without its newline, cut at the line limit.
    pub bytes: &'a [u8],
    /// Length of the line before it was cut (equal to `bytes.len()` unless truncated).
    pub original_len: usize,
    pub truncated: bool,
    /// The stream ended inside this line (no terminating newline).
    pub no_newline: bool,
    /// File and byte offset of the line's start, when tailing a file.
    pub file: Option<(&'a str, u64)>,
}

impl<'a> RawLine<'a> {
    /// A complete, untruncated line with no file position.
    pub fn plain(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            original_len: bytes.len(),
            truncated: false,
            no_newline: false,
            file: None,
        }
    }
}

/// What goes to Kafka for one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub destination: Destination,
    /// `service.instance.id` of the writer: one partition per instance keeps its order.
    pub key: Key,
    /// W3C `traceparent` rebuilt from `trace.id` / `span.id`, when both are valid.
    pub traceparent: Option<Traceparent>,
    pub payload: Vec<u8>,
}

impl Record {
    /// Bytes this record holds in memory, for the in-flight bound.
    pub fn weight(&self) -> usize {
        self.payload.len() + self.key.len() + self.traceparent.as_ref().map_or(0, |t| t.len()) + 64
    }
}

/// The fields the fast path needs; everything else is only syntax-checked.
#[derive(Deserialize)]
struct Known<'a> {
    #[serde(rename = "service.name", borrow, default)]
    service_name: Option<Cow<'a, str>>,
    #[serde(rename = "service.instance.id", borrow, default)]
    instance_id: Option<Cow<'a, str>>,
    #[serde(rename = "event.dataset", borrow, default)]
    dataset: Option<Cow<'a, str>>,
    #[serde(rename = "trace.id", borrow, default)]
    trace_id: Option<Cow<'a, str>>,
    #[serde(rename = "span.id", borrow, default)]
    span_id: Option<Cow<'a, str>>,
    #[serde(rename = "host.name", default)]
    host_name: Option<IgnoredAny>,
    #[serde(rename = "event.ingested", default)]
    ingested: Option<IgnoredAny>,
    #[serde(rename = "log.file.path", default)]
    file_path: Option<IgnoredAny>,
    #[serde(rename = "log.offset", default)]
    offset: Option<IgnoredAny>,
}

impl Known<'_> {
    fn fields(&self) -> Fields<'_> {
        Fields {
            service_name: self.service_name.as_deref(),
            instance_id: self.instance_id.as_deref(),
            dataset: self.dataset.as_deref(),
            trace_id: self.trace_id.as_deref(),
            span_id: self.span_id.as_deref(),
            host_name: self.host_name.is_some(),
            ingested: self.ingested.is_some(),
            file_path: self.file_path.is_some(),
            offset: self.offset.is_some(),
        }
    }
}

/// Encodes lines of one stream. Remembers the last `service.instance.id` it saw so
/// that bad lines of a service land on the same partition as its good ones.
#[derive(Clone, Debug)]
pub struct Enricher {
    host_name: String,
    service_name: String,
    dataset: String,
    last_instance_id: Option<String>,
    /// `"host.name":"…"` and `"service.name":"…"`, encoded once.
    host_field: Vec<u8>,
    service_field: Vec<u8>,
    /// The last `ingested` time and file path seen, with their encoded fields:
    /// they change once per read, not per line.
    ingested: Cached,
    file_path: Cached,
}

/// A string value and its encoded `"name":"value"` field.
#[derive(Clone, Debug, Default)]
struct Cached {
    value: String,
    field: Vec<u8>,
}

impl Cached {
    fn get(&mut self, name: &str, value: &str) -> &[u8] {
        if self.field.is_empty() || self.value != value {
            self.value.clear();
            self.value.push_str(value);
            self.field = encode_field(name, value);
        }
        &self.field
    }
}

/// `"name":"value"` with the value JSON-escaped (names are our constants).
fn encode_field(name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 5);
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out
}

impl Enricher {
    pub fn new(host_name: &str, service_name: &str) -> Self {
        Self {
            host_name: host_name.to_owned(),
            service_name: service_name.to_owned(),
            dataset: format!("{service_name}.log"),
            last_instance_id: None,
            host_field: encode_field(HOST_NAME, host_name),
            service_field: encode_field(field::SERVICE_NAME, service_name),
            ingested: Cached::default(),
            file_path: Cached::default(),
        }
    }

    /// Encodes one line; `ingested` is the RFC 3339 time the line was read.
    pub fn encode(&mut self, line: &RawLine<'_>, ingested: &str) -> Record {
        let problems = Problems {
            truncated: line.truncated,
            no_newline: line.no_newline,
            invalid_utf8: false,
        };
        match std::str::from_utf8(line.bytes) {
            Ok(text) if !problems.any() => {
                if let Some(fields) = scan::object(text) {
                    return self.fast(text, &fields, line, ingested);
                }
                // What the scanner leaves in doubt (escaped ids, exponents, …).
                if first_non_ws(text) == Some(b'{') {
                    if let Ok(known) = serde_json::from_str::<Known<'_>>(text) {
                        return self.fast(text, &known.fields(), line, ingested);
                    }
                }
                self.slow(text, problems, line, ingested)
            }
            Ok(text) => self.slow(text, problems, line, ingested),
            Err(_) => {
                let lossy = String::from_utf8_lossy(line.bytes);
                let problems = Problems {
                    invalid_utf8: true,
                    ..problems
                };
                self.slow(&lossy, problems, line, ingested)
            }
        }
    }

    fn key_for(&mut self, instance_id: Option<&str>) -> Key {
        match instance_id {
            Some(id) => {
                if self.last_instance_id.as_deref() != Some(id) {
                    self.last_instance_id = Some(id.to_owned());
                }
                Key::from(id)
            }
            None => Key::from(
                self.last_instance_id
                    .as_deref()
                    .unwrap_or(&self.service_name),
            ),
        }
    }

    /// A valid object: copy it byte for byte and splice our fields in before its `}`.
    fn fast(
        &mut self,
        text: &str,
        known: &Fields<'_>,
        line: &RawLine<'_>,
        ingested: &str,
    ) -> Record {
        let trimmed = text.trim_end();
        let close = trimmed.len() - 1; // the object's `}`: the parse succeeded
        let open = text.len() - text.trim_start().len();
        let empty = trimmed[open + 1..close].trim().is_empty();
        let mut out = Vec::with_capacity(trimmed.len() + 192);
        out.extend_from_slice(&trimmed.as_bytes()[..close]);
        let mut w = FieldWriter {
            out: &mut out,
            first: empty,
        };
        if !known.host_name {
            w.field(&self.host_field);
        }
        if !known.ingested {
            w.field(self.ingested.get(EVENT_INGESTED, ingested));
        }
        if known.service_name.is_none() {
            w.field(&self.service_field);
        }
        if let Some((path, offset)) = line.file {
            if !known.file_path {
                w.field(self.file_path.get(LOG_FILE_PATH, path));
            }
            if !known.offset {
                w.number(LOG_OFFSET, offset);
            }
        }
        out.push(b'}');
        Record {
            destination: route::destination(known.dataset),
            key: self.key_for(known.instance_id),
            traceparent: route::traceparent(known.trace_id, known.span_id),
            payload: out,
        }
    }

    /// Anything the fast path cannot take: parse fully and rebuild.
    fn slow(
        &mut self,
        text: &str,
        problems: Problems,
        line: &RawLine<'_>,
        ingested: &str,
    ) -> Record {
        let mut reasons = Vec::new();
        let mut tags = Vec::new();
        if problems.truncated {
            reasons.push(format!(
                "line of {} bytes exceeds the limit of {} bytes (--max-line-bytes); content truncated",
                line.original_len,
                line.bytes.len()
            ));
            tags.push(TAG_TRUNCATED);
        }
        if problems.invalid_utf8 {
            reasons.push("line is not valid UTF-8; invalid bytes replaced by U+FFFD".to_owned());
            tags.push(TAG_INVALID_UTF8);
        }
        if problems.no_newline {
            reasons.push("the input ended inside this line (no final newline)".to_owned());
            tags.push(TAG_NO_NEWLINE);
        }
        let parsed = if problems.truncated {
            None
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(v) => Some(v),
                Err(e) => {
                    reasons.push(format!("line is not valid JSON: {e}"));
                    tags.push(TAG_INVALID_JSON);
                    None
                }
            }
        };
        let mut map = match parsed {
            Some(Value::Object(mut map)) => {
                if !reasons.is_empty() {
                    let name = if map.contains_key(field::ERROR_MESSAGE) {
                        FIELD_SHIPPER_ERROR
                    } else {
                        field::ERROR_MESSAGE
                    };
                    map.insert(name.to_owned(), Value::String(reasons.join("; ")));
                    add_tags(&mut map, &tags);
                }
                map
            }
            Some(other) => {
                reasons.push(format!(
                    "line is JSON but not an object (a {})",
                    json_kind(&other)
                ));
                tags.push(TAG_NOT_OBJECT);
                self.error_event(text, &reasons, &tags, line, ingested)
            }
            None => self.error_event(text, &reasons, &tags, line, ingested),
        };
        self.enrich_map(&mut map, line, ingested);
        let str_field = |name: &str| map.get(name).and_then(Value::as_str);
        let destination = route::destination(str_field(field::EVENT_DATASET));
        let traceparent = route::traceparent(str_field(field::TRACE_ID), str_field(field::SPAN_ID));
        let instance_id = str_field(field::SERVICE_INSTANCE_ID).map(str::to_owned);
        let key = self.key_for(instance_id.as_deref());
        Record {
            destination,
            key,
            traceparent,
            payload: serde_json::to_vec(&map).unwrap_or_default(),
        }
    }

    fn error_event(
        &self,
        text: &str,
        reasons: &[String],
        tags: &[&str],
        line: &RawLine<'_>,
        ingested: &str,
    ) -> Map<String, Value> {
        let mut map = Map::new();
        let s = |v: &str| Value::String(v.to_owned());
        map.insert(field::TIMESTAMP.to_owned(), s(ingested));
        map.insert(field::MESSAGE.to_owned(), s(text));
        map.insert(EVENT_ORIGINAL.to_owned(), s(text));
        map.insert(
            field::ERROR_MESSAGE.to_owned(),
            Value::String(reasons.join("; ")),
        );
        map.insert(field::ECS_VERSION.to_owned(), s(ecs::ECS_VERSION));
        map.insert(field::EVENT_DATASET.to_owned(), s(&self.dataset));
        if line.truncated {
            map.insert(
                FIELD_ORIGINAL_BYTES.to_owned(),
                Value::from(line.original_len),
            );
        }
        add_tags(&mut map, tags);
        map
    }

    fn enrich_map(&self, map: &mut Map<String, Value>, line: &RawLine<'_>, ingested: &str) {
        let mut put = |name: &str, value: Value| {
            if !map.contains_key(name) {
                map.insert(name.to_owned(), value);
            }
        };
        put(HOST_NAME, Value::String(self.host_name.clone()));
        put(EVENT_INGESTED, Value::String(ingested.to_owned()));
        put(
            field::SERVICE_NAME,
            Value::String(self.service_name.clone()),
        );
        if let Some((path, offset)) = line.file {
            put(LOG_FILE_PATH, Value::String(path.to_owned()));
            put(LOG_OFFSET, Value::from(offset));
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Problems {
    truncated: bool,
    no_newline: bool,
    invalid_utf8: bool,
}

impl Problems {
    fn any(self) -> bool {
        self.truncated || self.no_newline || self.invalid_utf8
    }
}

/// Appends `"name":value` pairs to an object under construction.
struct FieldWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl FieldWriter<'_> {
    fn name(&mut self, name: &str) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes()); // our constants: nothing to escape
        self.out.extend_from_slice(b"\":");
    }

    /// A whole `"name":value` pair, already encoded.
    fn field(&mut self, encoded: &[u8]) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.extend_from_slice(encoded);
    }

    fn number(&mut self, name: &str, value: u64) {
        self.name(name);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = value;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[i..]);
    }
}

fn add_tags(map: &mut Map<String, Value>, tags: &[&str]) {
    let new = tags.iter().map(|t| Value::String((*t).to_owned()));
    match map.get_mut(TAGS) {
        Some(Value::Array(existing)) => existing.extend(new),
        Some(Value::String(one)) => {
            let mut all = vec![Value::String(std::mem::take(one))];
            all.extend(new);
            map.insert(TAGS.to_owned(), Value::Array(all));
        }
        _ => {
            map.insert(TAGS.to_owned(), Value::Array(new.collect()));
        }
    }
}

fn first_non_ws(text: &str) -> Option<u8> {
    text.bytes().find(|b| !b.is_ascii_whitespace())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-25T07:00:00.000Z";

    fn enc(line: &RawLine<'_>) -> (Record, Map<String, Value>) {
        let mut e = Enricher::new("host-a", "order");
        let r = e.encode(line, NOW);
        let v: Value = serde_json::from_slice(&r.payload).expect("payload is JSON");
        let Value::Object(map) = v else {
            panic!("payload is not an object")
        };
        (r, map)
    }

    fn tags(map: &Map<String, Value>) -> Vec<String> {
        map.get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn valid_object_keeps_its_bytes_and_gains_enrichment() {
        let line = br#"{"@timestamp":"2026-11-25T06:00:00.000Z","message":"hi","service.instance.id":"order-1","trace.id":"0af7651916cd43dd8448eb211c80319c","span.id":"b7ad6b7169203331"}"#;
        let mut raw = RawLine::plain(line);
        raw.file = Some(("/var/log/order.log", 42));
        let (r, map) = enc(&raw);
        assert!(
            r.payload.starts_with(&line[..line.len() - 1]),
            "original bytes kept"
        );
        assert_eq!(map["host.name"], "host-a");
        assert_eq!(map["event.ingested"], NOW);
        assert_eq!(map["service.name"], "order");
        assert_eq!(map["log.file.path"], "/var/log/order.log");
        assert_eq!(map["log.offset"], 42);
        assert_eq!(r.key, b"order-1");
        assert_eq!(r.destination, Destination::Logs);
        assert_eq!(
            r.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }

    #[test]
    fn fields_the_service_wrote_are_not_overwritten() {
        let (_, map) = enc(&RawLine::plain(
            br#"{"service.name":"payment","host.name":"h","event.ingested":"x"}"#,
        ));
        assert_eq!(map["service.name"], "payment");
        assert_eq!(map["host.name"], "h");
        assert_eq!(map["event.ingested"], "x");
    }

    #[test]
    fn empty_object_and_whitespace_are_handled() {
        let (_, map) = enc(&RawLine::plain(b"  { }  \r"));
        assert_eq!(map["service.name"], "order");
        assert!(!map.contains_key("error.message"));
    }

    #[test]
    fn heartbeat_goes_to_heartbeats() {
        let (r, _) = enc(&RawLine::plain(
            br#"{"event.dataset":"meshwatch.heartbeat","service.instance.id":"order-2","heartbeat.status":"up"}"#,
        ));
        assert_eq!(r.destination, Destination::Heartbeats);
        assert_eq!(r.key, b"order-2");
    }

    #[test]
    fn non_json_becomes_an_error_event_keeping_the_text() {
        let (r, map) = enc(&RawLine::plain(b"panic: index out of range"));
        assert_eq!(map["event.original"], "panic: index out of range");
        assert_eq!(map["message"], "panic: index out of range");
        assert!(map["error.message"]
            .as_str()
            .unwrap_or("")
            .contains("not valid JSON"));
        assert_eq!(tags(&map), vec![TAG_INVALID_JSON]);
        assert_eq!(
            r.key, b"order",
            "no instance seen yet: keyed by service name"
        );
        assert_eq!(r.destination, Destination::Logs);
    }

    #[test]
    fn bad_line_is_keyed_like_the_previous_good_line() {
        let mut e = Enricher::new("h", "order");
        e.encode(
            &RawLine::plain(br#"{"service.instance.id":"order-9"}"#),
            NOW,
        );
        let r = e.encode(&RawLine::plain(b"oops"), NOW);
        assert_eq!(r.key, b"order-9");
    }

    #[test]
    fn json_that_is_not_an_object() {
        for (line, kind) in [
            (&b"42"[..], "number"),
            (b"[1,2]", "array"),
            (b"\"s\"", "string"),
        ] {
            let (_, map) = enc(&RawLine::plain(line));
            assert_eq!(tags(&map), vec![TAG_NOT_OBJECT], "{kind}");
            assert!(map["error.message"].as_str().unwrap_or("").contains(kind));
            assert_eq!(
                map["event.original"],
                std::str::from_utf8(line).unwrap_or("")
            );
        }
    }

    #[test]
    fn truncated_line_records_its_original_length() {
        let raw = RawLine {
            bytes: br#"{"message":"aaaa"#,
            original_len: 5000,
            truncated: true,
            no_newline: false,
            file: None,
        };
        let (_, map) = enc(&raw);
        assert_eq!(map[FIELD_ORIGINAL_BYTES], 5000);
        assert_eq!(tags(&map), vec![TAG_TRUNCATED]);
        assert_eq!(map["event.original"], r#"{"message":"aaaa"#);
    }

    #[test]
    fn invalid_utf8_is_lossy_and_flagged() {
        let (_, map) = enc(&RawLine::plain(b"caf\xe9 au lait"));
        assert_eq!(map["event.original"], "caf\u{fffd} au lait");
        assert_eq!(tags(&map), vec![TAG_INVALID_UTF8, TAG_INVALID_JSON]);
        let (_, map) = enc(&RawLine::plain(
            b"{\"message\":\"caf\xe9\",\"tags\":[\"mine\"]}",
        ));
        assert_eq!(map["message"], "caf\u{fffd}");
        assert_eq!(tags(&map), vec!["mine", TAG_INVALID_UTF8]);
        assert!(map.contains_key("error.message"));
    }

    #[test]
    fn final_line_without_newline_is_shipped_and_flagged() {
        let mut raw = RawLine::plain(br#"{"message":"last","error.message":"theirs"}"#);
        raw.no_newline = true;
        let (_, map) = enc(&raw);
        assert_eq!(map["message"], "last");
        assert_eq!(
            map["error.message"], "theirs",
            "the service's own field is kept"
        );
        assert!(map.contains_key(FIELD_SHIPPER_ERROR));
        assert_eq!(tags(&map), vec![TAG_NO_NEWLINE]);
    }

    #[test]
    fn escapes_nesting_and_whitespace_keep_the_bytes() {
        let line = br#" { "message" : "say \"hi\" \u00e9\n" , "ctx" : { "service.name" : "inner", "a" : [1, {"b": null}] } , "service.instance.id":"order-3" } "#;
        let (r, map) = enc(&RawLine::plain(line));
        let body = std::str::from_utf8(line).unwrap().trim_end();
        assert!(
            r.payload.starts_with(&body.as_bytes()[..body.len() - 1]),
            "original bytes kept"
        );
        assert_eq!(map["message"], "say \"hi\" \u{e9}\n");
        assert_eq!(map["ctx"]["service.name"], "inner");
        assert_eq!(
            map["service.name"], "order",
            "a nested field is not the service's"
        );
        assert_eq!(r.key, b"order-3");
        assert!(!map.contains_key("error.message"));
    }

    #[test]
    fn escaped_ids_are_read_through_the_full_parse() {
        let (r, map) = enc(&RawLine::plain(
            br#"{"service.instance.id":"order\u002d4","service\u002ename":"pay"}"#,
        ));
        assert_eq!(r.key, b"order-4");
        assert_eq!(map["service.name"], "pay");
        let text = std::str::from_utf8(&r.payload).unwrap();
        assert_eq!(
            text.matches("service").count(),
            2,
            "no second service.name: {text}"
        );
    }

    #[test]
    fn already_enriched_line_gains_nothing_twice() {
        let line = br#"{"host.name":"h","event.ingested":"x","service.name":"s","log.file.path":"/p","log.offset":1}"#;
        let mut raw = RawLine::plain(line);
        raw.file = Some(("/var/log/x.log", 99));
        let (r, _) = enc(&raw);
        assert_eq!(
            r.payload,
            line.to_vec(),
            "nothing to add: the line as written"
        );
    }

    #[test]
    fn cached_fields_follow_changes() {
        let mut e = Enricher::new("h", "order");
        for (path, now) in [("/a", "t1"), ("/a", "t2"), ("/b", "t2"), ("/b\"q", "t3")] {
            let mut raw = RawLine::plain(b"{}");
            raw.file = Some((path, 5));
            let r = e.encode(&raw, now);
            let v: Value = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!(v["log.file.path"], path);
            assert_eq!(v["event.ingested"], now);
            assert_eq!(v["log.offset"], 5);
        }
        let mut raw = RawLine::plain(b"{}");
        raw.file = Some(("/a", u64::MAX));
        let r = e.encode(&raw, NOW);
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["log.offset"], u64::MAX);
        raw.file = Some(("/a", 0));
        let r = e.encode(&raw, NOW);
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["log.offset"], 0);
    }

    #[test]
    fn duplicate_or_odd_known_fields_fall_back_to_the_full_parse() {
        let (r, map) = enc(&RawLine::plain(
            br#"{"service.name":7,"service.instance.id":"i-1"}"#,
        ));
        assert_eq!(map["service.name"], 7);
        assert_eq!(r.key, b"i-1");
        assert!(!map.contains_key("error.message"));
    }
}
