//! Turns one raw line into the record we ship: the service's JSON object with
//! our enrichment spliced in (its own bytes are never rewritten), or, for bad
//! input, a well-formed event that says what was wrong and keeps the content.
//!
//! Every record gets `agent.*` (which shipper carried it), `host.name` and
//! `event.ingested` unless the line has them, `service.name` unless it claims
//! one, and `event.id` (here for a tailed line, by the spool for a piped one).
//! Identity ([`crate::identity`]): a line claiming another service, or a
//! heartbeat the shipper cannot vouch for, is tagged and never routed as a
//! heartbeat. Size: no record is larger than `max_record_bytes`; content that
//! would not fit is truncated, its original length recorded.

use std::borrow::Cow;
use std::fmt;

use meshwatch_ecs::{self as ecs, field, HEARTBEAT_DATASET};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::event_id::{self, EventId};
use crate::identity::{Agent, Claim, Speaker, Verdict};
use crate::route::{self, Destination, Key, Traceparent};
use crate::scan::{self, Fields};

/// Tag on a line that is not JSON at all.
pub const TAG_INVALID_JSON: &str = "meshwatch_shipper_invalid_json";
/// Tag on a line that is JSON but not an object (a number, string, array…).
pub const TAG_NOT_OBJECT: &str = "meshwatch_shipper_not_object";
/// Tag on a line cut at `--max-line-bytes` or to fit `--max-record-bytes`.
pub const TAG_TRUNCATED: &str = "meshwatch_shipper_truncated";
/// Tag on a line with invalid UTF-8: invalid bytes became U+FFFD.
pub const TAG_INVALID_UTF8: &str = "meshwatch_shipper_invalid_utf8";
/// Tag on the last line of a stream that ended without a newline.
pub const TAG_NO_NEWLINE: &str = "meshwatch_shipper_no_final_newline";
/// Tag on a line whose own `agent.*` or `event.id` the shipper replaced.
pub const TAG_FIELDS_REPLACED: &str = "meshwatch_shipper_fields_replaced";
/// Length in bytes of a line before truncation.
pub const FIELD_ORIGINAL_BYTES: &str = "shipper.original_bytes";
/// Our explanation, when the service's object already has an `error.message` of its own.
pub const FIELD_SHIPPER_ERROR: &str = "shipper.error.message";
/// Record keys (`service.instance.id`) are cut to this many bytes.
pub const MAX_KEY_BYTES: usize = 255;

const HOST_NAME: &str = "host.name";
const EVENT_INGESTED: &str = "event.ingested";
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
    /// The line's `event.id` when known now (tail); `None` when the spool adds it.
    pub id: Option<EventId>,
}

impl<'a> RawLine<'a> {
    /// A complete, untruncated line with no file position and no id yet.
    pub fn plain(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            original_len: bytes.len(),
            truncated: false,
            no_newline: false,
            file: None,
            id: None,
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

/// The fields the fast path needs when the scanner is in doubt (escapes in
/// keys or extracted values, exponents…): read by serde, everything else only
/// syntax-checked. Fails (and so sends the line to the full parse) on a
/// repeated or non-string extracted field, as the scanner does.
#[derive(Default)]
struct Known<'a> {
    service_name: Option<Cow<'a, str>>,
    instance_id: Option<Cow<'a, str>>,
    dataset: Option<Cow<'a, str>>,
    trace_id: Option<Cow<'a, str>>,
    span_id: Option<Cow<'a, str>>,
    host_name: bool,
    ingested: bool,
    file_path: bool,
    offset: bool,
    tags: bool,
    target_service: bool,
    owned: bool,
}

impl<'de> Deserialize<'de> for Known<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Known<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Known<'de>, A::Error> {
                use serde::de::Error;
                let mut k = Known::default();
                while let Some(key) = m.next_key::<Cow<'de, str>>()? {
                    let text = match &*key {
                        "service.name" => Some(&mut k.service_name),
                        "service.instance.id" => Some(&mut k.instance_id),
                        "event.dataset" => Some(&mut k.dataset),
                        "trace.id" => Some(&mut k.trace_id),
                        "span.id" => Some(&mut k.span_id),
                        _ => None,
                    };
                    if let Some(slot) = text {
                        if slot.is_some() {
                            return Err(A::Error::custom("repeated field"));
                        }
                        *slot = Some(m.next_value::<Cow<'de, str>>()?);
                        continue;
                    }
                    let flag = match &*key {
                        "host.name" => Some(&mut k.host_name),
                        "event.ingested" => Some(&mut k.ingested),
                        "log.file.path" => Some(&mut k.file_path),
                        "log.offset" => Some(&mut k.offset),
                        "tags" => Some(&mut k.tags),
                        "heartbeat.target_service" => Some(&mut k.target_service),
                        _ => None,
                    };
                    k.owned |= scan::owned_key(key.as_bytes());
                    match flag {
                        Some(flag) => {
                            let value: Value = m.next_value()?;
                            if *flag || value.is_null() {
                                return Err(A::Error::custom("repeated or null field"));
                            }
                            *flag = true;
                        }
                        None => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(k)
            }
        }
        d.deserialize_map(V)
    }
}

impl Known<'_> {
    fn fields(&self) -> Fields<'_> {
        Fields {
            service_name: self.service_name.as_deref(),
            instance_id: self.instance_id.as_deref(),
            dataset: self.dataset.as_deref(),
            trace_id: self.trace_id.as_deref(),
            span_id: self.span_id.as_deref(),
            host_name: self.host_name,
            ingested: self.ingested,
            file_path: self.file_path,
            offset: self.offset,
            tags: self.tags,
            target_service: self.target_service,
            owned: self.owned,
        }
    }
}

/// Encodes lines of one stream. Remembers the last `service.instance.id` it saw so
/// that bad lines of a service land on the same partition as its good ones.
#[derive(Clone, Debug)]
pub struct Enricher {
    speaker: Speaker,
    host_name: String,
    dataset: String,
    agent: Agent,
    max_record: usize,
    last_instance_id: Option<String>,
    /// `"host.name":"…"`, `"service.name":"…"` and the agent fields, encoded once.
    host_field: Vec<u8>,
    service_field: Vec<u8>,
    agent_fields: Vec<u8>,
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
pub(crate) fn encode_field(name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 5);
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out
}

/// What the encoder produces at most, and what a line claims.
fn claim_of<'a>(f: &Fields<'a>) -> Claim<'a> {
    Claim {
        service: f.service_name.map(Some),
        heartbeat: f.dataset == Some(HEARTBEAT_DATASET),
        instance_id: f.instance_id,
        target_service: f.target_service,
    }
}

impl Enricher {
    /// `max_record_bytes`: the largest payload this encoder makes, `event.id` included.
    pub fn new(host_name: &str, speaker: Speaker, agent: &Agent, max_record_bytes: usize) -> Self {
        let service = speaker.service().to_owned();
        Self {
            host_name: host_name.to_owned(),
            dataset: format!("{service}.log"),
            agent: agent.clone(),
            max_record: max_record_bytes,
            last_instance_id: None,
            host_field: encode_field(HOST_NAME, host_name),
            service_field: encode_field(field::SERVICE_NAME, &service),
            agent_fields: agent.encoded_fields(),
            speaker,
            ingested: Cached::default(),
            file_path: Cached::default(),
        }
    }

    /// The service this encoder speaks for.
    pub fn service_name(&self) -> &str {
        self.speaker.service()
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
                    if let Some(r) = self.fast(text, &fields, line, ingested) {
                        return r;
                    }
                } else if first_non_ws(text) == Some(b'{') {
                    // What the scanner leaves in doubt (escaped ids, exponents, …).
                    if let Ok(known) = serde_json::from_str::<Known<'_>>(text) {
                        if let Some(r) = self.fast(text, &known.fields(), line, ingested) {
                            return r;
                        }
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
                // Kept in one buffer: instances may alternate line by line.
                match &mut self.last_instance_id {
                    Some(last) if last == id => {}
                    Some(last) => {
                        last.clear();
                        last.push_str(id);
                    }
                    None => self.last_instance_id = Some(id.to_owned()),
                }
                Key::from(&id.as_bytes()[..id.len().min(MAX_KEY_BYTES)])
            }
            None => {
                let id = self
                    .last_instance_id
                    .as_deref()
                    .unwrap_or(self.speaker.service())
                    .as_bytes();
                Key::from(&id[..id.len().min(MAX_KEY_BYTES)])
            }
        }
    }

    /// Bytes to leave for an `event.id` the spool adds later.
    fn id_reserve(line: &RawLine<'_>) -> usize {
        if line.id.is_some() {
            0
        } else {
            event_id::SPLICED_LEN
        }
    }

    /// A valid object: copy it byte for byte and splice our fields in before
    /// its `}`. `None` when the full parse must decide (owned fields, tags to merge).
    fn fast(
        &mut self,
        text: &str,
        known: &Fields<'_>,
        line: &RawLine<'_>,
        ingested: &str,
    ) -> Option<Record> {
        if known.owned {
            return None;
        }
        let claim = claim_of(known);
        let verdict = self.speaker.judge(&claim);
        if verdict.any() && known.tags {
            return None; // our tags join the line's own
        }
        let trimmed = text.trim_end();
        let close = trimmed.len() - 1; // the object's `}`: the parse succeeded
        let open = text.len() - text.trim_start().len();
        let empty = trimmed[open + 1..close].trim().is_empty();
        let mut out = Vec::with_capacity(trimmed.len() + 400);
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
        w.field(&self.agent_fields);
        if verdict.any() {
            w.name(TAGS);
            w.out.push(b'[');
            for (i, tag) in verdict.tags().enumerate() {
                if i > 0 {
                    w.out.push(b',');
                }
                w.out.push(b'"');
                w.out.extend_from_slice(tag.as_bytes());
                w.out.push(b'"');
            }
            w.out.push(b']');
        }
        if let Some(id) = line.id {
            w.sep();
            id.write_field(w.out);
        }
        out.push(b'}');
        if out.len() + Self::id_reserve(line) > self.max_record {
            return Some(self.oversize(text, line, ingested));
        }
        Some(Record {
            destination: destination(&claim, verdict),
            key: self.key_for(known.instance_id),
            traceparent: route::traceparent(known.trace_id, known.span_id),
            payload: out,
        })
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
        let mut verdict = Verdict::default();
        let mut claimed = false;
        let mut heartbeat = false;
        let mut map = match parsed {
            Some(Value::Object(mut map)) => {
                let replaced = remove_owned(&mut map);
                if !replaced.is_empty() {
                    reasons.push(format!(
                        "the line's own {} replaced by the shipper's",
                        replaced.join(", ")
                    ));
                    tags.push(TAG_FIELDS_REPLACED);
                }
                let claim = claim_of_map(&map);
                claimed = claim.service.is_some();
                heartbeat = claim.heartbeat;
                verdict = self.speaker.judge(&claim);
                tags.extend(verdict.tags());
                if !reasons.is_empty() {
                    let name = if map.contains_key(field::ERROR_MESSAGE) {
                        FIELD_SHIPPER_ERROR
                    } else {
                        field::ERROR_MESSAGE
                    };
                    map.insert(name.to_owned(), Value::String(reasons.join("; ")));
                }
                if !tags.is_empty() {
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
        self.enrich_map(&mut map, line, ingested, claimed);
        let str_field = |name: &str| map.get(name).and_then(Value::as_str);
        let destination = if heartbeat && !verdict.foreign_heartbeat {
            Destination::Heartbeats
        } else {
            Destination::Logs
        };
        let traceparent = route::traceparent(str_field(field::TRACE_ID), str_field(field::SPAN_ID));
        let instance_id = str_field(field::SERVICE_INSTANCE_ID).map(str::to_owned);
        let payload = serde_json::to_vec(&map).unwrap_or_default();
        if payload.len() + Self::id_reserve(line) > self.max_record {
            return self.oversize(text, line, ingested);
        }
        let key = self.key_for(instance_id.as_deref());
        Record {
            destination,
            key,
            traceparent,
            payload,
        }
    }

    /// The line does not fit `max_record_bytes` once enriched: an event saying
    /// so, with as much of the line as fits in `message` and its original length.
    fn oversize(&mut self, text: &str, line: &RawLine<'_>, ingested: &str) -> Record {
        let reason = format!(
            "line of {} bytes does not fit the record limit of {} bytes (--max-record-bytes) \
             with the shipper's fields; content truncated",
            line.original_len, self.max_record
        );
        let mut map = self.error_event("", &[reason], &[TAG_TRUNCATED], line, ingested);
        map.insert(
            FIELD_ORIGINAL_BYTES.to_owned(),
            Value::from(line.original_len),
        );
        self.enrich_map(&mut map, line, ingested, false);
        let base = serde_json::to_vec(&map).map_or(0, |b| b.len());
        let budget = self
            .max_record
            .saturating_sub(base + Self::id_reserve(line));
        map.insert(
            field::MESSAGE.to_owned(),
            Value::String(json_prefix(text, budget).to_owned()),
        );
        Record {
            destination: Destination::Logs,
            key: self.key_for(None),
            traceparent: None,
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
        // The line itself, once: `message` is what people search.
        map.insert(field::MESSAGE.to_owned(), s(text));
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

    fn enrich_map(
        &self,
        map: &mut Map<String, Value>,
        line: &RawLine<'_>,
        ingested: &str,
        claimed: bool,
    ) {
        let mut put = |name: &str, value: Value| {
            if !map.contains_key(name) {
                map.insert(name.to_owned(), value);
            }
        };
        put(HOST_NAME, Value::String(self.host_name.clone()));
        put(EVENT_INGESTED, Value::String(ingested.to_owned()));
        if !claimed {
            put(
                field::SERVICE_NAME,
                Value::String(self.speaker.service().to_owned()),
            );
        }
        if let Some((path, offset)) = line.file {
            put(LOG_FILE_PATH, Value::String(path.to_owned()));
            put(LOG_OFFSET, Value::from(offset));
        }
        for (name, value) in self.agent.fields() {
            map.insert(name.to_owned(), Value::String(value));
        }
        if let Some(id) = line.id {
            map.insert(
                event_id::FIELD.to_owned(),
                Value::String(id.to_hex_string()),
            );
        }
    }
}

/// Heartbeats go to the heartbeats topic only when the shipper vouches for them.
fn destination(claim: &Claim<'_>, verdict: Verdict) -> Destination {
    if claim.heartbeat && !verdict.foreign_heartbeat {
        Destination::Heartbeats
    } else {
        Destination::Logs
    }
}

/// What a parsed line claims: `service.name` (dotted, or `service: {name}`).
fn claim_of_map(map: &Map<String, Value>) -> Claim<'_> {
    let service = match map.get(field::SERVICE_NAME) {
        Some(Value::Null) | None => match map.get("service").and_then(|s| s.get("name")) {
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(Value::Null) | None => None,
            Some(_) => Some(None),
        },
        Some(Value::String(s)) => Some(Some(s.as_str())),
        Some(_) => Some(None),
    };
    Claim {
        service,
        heartbeat: route::destination(map.get(field::EVENT_DATASET).and_then(Value::as_str))
            == Destination::Heartbeats,
        instance_id: map.get(field::SERVICE_INSTANCE_ID).and_then(Value::as_str),
        target_service: map.contains_key(field::HEARTBEAT_TARGET_SERVICE),
    }
}

/// Removes the fields the shipper owns (`agent`, `agent.*`, `event.id`,
/// `event: {id}`); returns the names it removed.
fn remove_owned(map: &mut Map<String, Value>) -> Vec<String> {
    let owned: Vec<String> = map
        .keys()
        .filter(|k| *k == "agent" || k.starts_with("agent.") || *k == event_id::FIELD)
        .cloned()
        .collect();
    let mut removed = Vec::new();
    for k in owned {
        map.remove(&k);
        removed.push(k);
    }
    if let Some(Value::Object(event)) = map.get_mut("event") {
        if event.remove("id").is_some() {
            removed.push("event.id".to_owned());
        }
    }
    removed
}

/// The longest prefix of `text` whose JSON string escape takes at most
/// `budget` bytes (serde_json's escaping: two bytes for `"`, `\\` and the
/// short control escapes, six for other control characters).
pub(crate) fn json_prefix(text: &str, budget: usize) -> &str {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let cost = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + cost > budget {
            return &text[..i];
        }
        used += cost;
    }
    text
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
    fn sep(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
    }

    fn name(&mut self, name: &str) {
        self.sep();
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes()); // our constants: nothing to escape
        self.out.extend_from_slice(b"\":");
    }

    /// A whole `"name":value` pair (or several), already encoded.
    fn field(&mut self, encoded: &[u8]) {
        self.sep();
        self.out.extend_from_slice(encoded);
    }

    fn number(&mut self, name: &str, value: u64) {
        self.name(name);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = value;
        loop {
            i -= 1;
            digits[i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
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

    pub(crate) fn agent() -> Agent {
        Agent {
            id: crate::datadir::AgentId(0xabc),
            ephemeral_id: "shipper-000000000001".into(),
            name: "order".into(),
            version: "0.1.0".into(),
        }
    }

    fn enricher(wrap: bool, max_record: usize) -> Enricher {
        Enricher::new("host-a", Speaker::new("order", wrap), &agent(), max_record)
    }

    fn parse(r: &Record) -> Map<String, Value> {
        let v: Value = serde_json::from_slice(&r.payload).expect("payload is JSON");
        let Value::Object(map) = v else {
            panic!("payload is not an object")
        };
        map
    }

    fn enc(line: &RawLine<'_>) -> (Record, Map<String, Value>) {
        let mut e = enricher(false, 1 << 20);
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
            br#"{"service.name":"order","host.name":"h","event.ingested":"x"}"#,
        ));
        assert_eq!(map["service.name"], "order");
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
        assert_eq!(map["message"], "panic: index out of range");
        assert!(
            !map.contains_key("event.original"),
            "the text is stored once"
        );
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
        let mut e = enricher(false, 1 << 20);
        e.encode(
            &RawLine::plain(br#"{"service.instance.id":"order-9"}"#),
            NOW,
        );
        let r = e.encode(&RawLine::plain(b"oops"), NOW);
        assert_eq!(r.key, b"order-9");
        // Instances taking turns (the last one kept in one reused buffer).
        for id in ["order-10", "order-1", "order-1", "order-123456"] {
            let line = format!(r#"{{"service.instance.id":"{id}"}}"#);
            assert_eq!(
                &e.encode(&RawLine::plain(line.as_bytes()), NOW).key[..],
                id.as_bytes()
            );
            assert_eq!(
                &e.encode(&RawLine::plain(b"oops"), NOW).key[..],
                id.as_bytes()
            );
        }
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
            assert_eq!(map["message"], std::str::from_utf8(line).unwrap_or(""));
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
            id: None,
        };
        let (_, map) = enc(&raw);
        assert_eq!(map[FIELD_ORIGINAL_BYTES], 5000);
        assert_eq!(tags(&map), vec![TAG_TRUNCATED]);
        assert_eq!(map["message"], r#"{"message":"aaaa"#);
    }

    #[test]
    fn invalid_utf8_is_lossy_and_flagged() {
        let (_, map) = enc(&RawLine::plain(b"caf\xe9 au lait"));
        assert_eq!(map["message"], "caf\u{fffd} au lait");
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
        assert_eq!(tags(&map), vec![crate::identity::TAG_FOREIGN_SERVICE]);
        let text = std::str::from_utf8(&r.payload).unwrap();
        assert!(
            !text.contains("\"service.name\""),
            "no second service.name: {text}"
        );
    }

    #[test]
    fn already_enriched_line_gains_only_the_agent_fields() {
        let line = br#"{"host.name":"h","event.ingested":"x","service.name":"order","log.file.path":"/p","log.offset":1}"#;
        let mut raw = RawLine::plain(line);
        raw.file = Some(("/var/log/x.log", 99));
        let (r, _) = enc(&raw);
        let mut expected = line[..line.len() - 1].to_vec();
        expected.push(b',');
        expected.extend(agent().encoded_fields());
        expected.push(b'}');
        assert_eq!(
            String::from_utf8(r.payload).unwrap(),
            String::from_utf8(expected).unwrap(),
            "the line as written, plus which shipper carried it"
        );
    }

    #[test]
    fn cached_fields_follow_changes() {
        let mut e = enricher(false, 1 << 20);
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
        assert_eq!(tags(&map), vec![crate::identity::TAG_FOREIGN_SERVICE]);
    }

    #[test]
    fn every_record_says_which_shipper_carried_it() {
        for line in [&br#"{"message":"ok"}"#[..], b"not json", b"{\"a\":1e5}"] {
            let (_, map) = enc(&RawLine::plain(line));
            assert_eq!(map["agent.type"], crate::identity::AGENT_TYPE, "{map:?}");
            assert_eq!(map["agent.id"], "00000000000000000000000000000abc");
            assert_eq!(map["agent.ephemeral_id"], "shipper-000000000001");
            assert_eq!(map["agent.name"], "order");
            assert_eq!(map["agent.version"], "0.1.0");
            assert_eq!(map["host.name"], "host-a");
        }
    }

    #[test]
    fn a_tailed_line_carries_its_event_id_on_every_path() {
        let id = EventId::new(0x1234, 77);
        for line in [
            &br#"{"message":"ok"}"#[..],
            br#"{"message":"ok","tags":["x"],"service.name":"payment"}"#,
            b"not json",
            br#"{"a":1e5}"#,
        ] {
            let mut raw = RawLine::plain(line);
            raw.id = Some(id);
            let (_, map) = enc(&raw);
            assert_eq!(map["event.id"], id.to_hex_string(), "{map:?}");
        }
    }

    #[test]
    fn fields_the_shipper_owns_are_replaced_and_said_so() {
        let mut raw = RawLine::plain(
            br#"{"message":"m","agent.id":"forged","agent":{"name":"x"},"event.id":"mine","event":{"id":"e","kind":"k"}}"#,
        );
        raw.id = Some(EventId::new(1, 2));
        let (_, map) = enc(&raw);
        assert_eq!(map["agent.id"], "00000000000000000000000000000abc");
        assert!(!map.contains_key("agent"));
        assert_eq!(map["event.id"], EventId::new(1, 2).to_hex_string());
        assert_eq!(map["event"], serde_json::json!({"kind": "k"}));
        assert_eq!(tags(&map), vec![TAG_FIELDS_REPLACED]);
        assert!(map["error.message"].as_str().unwrap().contains("agent.id"));
        assert_eq!(map["message"], "m");
    }

    #[test]
    fn heartbeats_of_another_service_or_instance_are_tagged_and_not_routed() {
        let mut e = enricher(true, 1 << 20);
        let beat = |svc: &str, inst: &str| {
            format!(
                r#"{{"event.dataset":"meshwatch.heartbeat","service.name":"{svc}","service.instance.id":"{inst}","heartbeat.status":"up"}}"#
            )
        };
        let own = e.encode(&RawLine::plain(beat("order", "order-1").as_bytes()), NOW);
        assert_eq!(own.destination, Destination::Heartbeats);
        assert!(!parse(&own).contains_key("tags"));
        let other = e.encode(
            &RawLine::plain(beat("payment", "payment-1").as_bytes()),
            NOW,
        );
        assert_eq!(other.destination, Destination::Logs);
        assert_eq!(
            tags(&parse(&other)),
            vec![
                crate::identity::TAG_FOREIGN_SERVICE,
                crate::identity::TAG_FOREIGN_HEARTBEAT
            ]
        );
        let twin = e.encode(&RawLine::plain(beat("order", "order-2").as_bytes()), NOW);
        assert_eq!(twin.destination, Destination::Logs);
        assert_eq!(
            tags(&parse(&twin)),
            vec![crate::identity::TAG_FOREIGN_HEARTBEAT]
        );
        // Through the full parse too (escaped dataset; own tags kept).
        let escaped = r#"{"event.dataset":"meshwatch\u002eheartbeat","service.name":"payment","service.instance.id":"p","tags":["t"]}"#;
        let r = e.encode(&RawLine::plain(escaped.as_bytes()), NOW);
        assert_eq!(r.destination, Destination::Logs);
        assert_eq!(
            tags(&parse(&r)),
            vec![
                "t",
                crate::identity::TAG_FOREIGN_SERVICE,
                crate::identity::TAG_FOREIGN_HEARTBEAT
            ]
        );
        // A shipper's heartbeat shape from the child.
        let shipperish = r#"{"event.dataset":"meshwatch.heartbeat","service.name":"order","service.instance.id":"order-1","heartbeat.target_service":"payment"}"#;
        let r = e.encode(&RawLine::plain(shipperish.as_bytes()), NOW);
        assert_eq!(r.destination, Destination::Logs);
        // A nested service object claims too.
        let nested = r#"{"service":{"name":"payment"},"message":"x"}"#;
        let map = parse(&e.encode(&RawLine::plain(nested.as_bytes()), NOW));
        assert_eq!(tags(&map), vec![crate::identity::TAG_FOREIGN_SERVICE]);
        assert!(
            !map.contains_key("service.name"),
            "no second, dotted claim added"
        );
    }

    #[test]
    fn no_record_exceeds_the_limit_and_cut_content_records_its_length() {
        const LIMIT: usize = 2_000;
        let mut e = enricher(false, LIMIT);
        let cases: Vec<Vec<u8>> = vec![
            format!(r#"{{"message":"{}"}}"#, "x".repeat(1_990)).into_bytes(),
            "y".repeat(3_000).into_bytes(),
            "\u{1}".repeat(1_500).into_bytes(),
            "é\"".repeat(700).into_bytes(),
            format!(r#"{{"a":1e5,"m":"{}"}}"#, "z".repeat(1_980)).into_bytes(),
        ];
        for bytes in &cases {
            for id in [None, Some(EventId::new(9, 9))] {
                let mut raw = RawLine::plain(bytes);
                raw.id = id;
                let mut r = e.encode(&raw, NOW);
                if id.is_none() {
                    EventId::new(9, 9).splice_into(&mut r.payload);
                }
                assert!(r.payload.len() <= LIMIT, "{} > {LIMIT}", r.payload.len());
                let map = parse(&r);
                if bytes.len() > 1_900 {
                    assert_eq!(map[FIELD_ORIGINAL_BYTES], bytes.len(), "{map:?}");
                    assert!(tags(&map).contains(&TAG_TRUNCATED.to_owned()));
                    let kept = map["message"].as_str().unwrap();
                    assert!(!kept.is_empty() && kept.len() < bytes.len());
                    assert!(
                        String::from_utf8_lossy(bytes).starts_with(kept),
                        "a prefix of the line is kept"
                    );
                }
            }
        }
    }

    #[test]
    fn json_prefix_counts_escapes_like_serde() {
        for text in ["plain", "a\"b\\c\n\u{1}é😀", "\u{7f}\u{1f}\t"] {
            for budget in 0..40 {
                let cut = json_prefix(text, budget);
                let escaped = serde_json::to_string(cut).unwrap();
                assert!(escaped.len() - 2 <= budget, "{text:?} {budget}");
                if cut.len() < text.len() {
                    let next =
                        &text[..cut.len() + text[cut.len()..].chars().next().unwrap().len_utf8()];
                    assert!(serde_json::to_string(next).unwrap().len() - 2 > budget);
                }
            }
        }
    }

    #[test]
    fn long_instance_ids_make_bounded_keys() {
        let id = "i".repeat(1_000);
        let (r, _) = enc(&RawLine::plain(
            format!(r#"{{"service.instance.id":"{id}"}}"#).as_bytes(),
        ));
        assert_eq!(r.key.len(), MAX_KEY_BYTES);
    }
}
