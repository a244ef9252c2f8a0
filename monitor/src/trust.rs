//! Which records of the heartbeats topic count as heartbeats: only those in
//! the shape the runtime's emitter writes. Everything else is refused with a
//! [`Refusal`] that names why; the monitor counts refusals by reason and
//! reports them once per report period ([`RefusalLog`]), never once per record.
//!
//! The shape: a JSON object with `event.dataset` `meshwatch.heartbeat`; short
//! names of a plain alphabet (`service.name`, `heartbeat.target_service` up to
//! [`MAX_NAME`] bytes, `service.instance.id` up to [`MAX_INSTANCE_ID`],
//! `service.version` up to [`MAX_VERSION`]); an interval within
//! [`TrustConfig::min_interval`]..=[`TrustConfig::max_interval`]; a timestamp
//! at most [`TrustConfig::max_clock_skew`] ahead of the monitor's clock and at
//! most [`TrustConfig::max_age`] behind it; and no tag from a shipper (a
//! shipper marks lines that are not its own child's, see [`SHIPPER_TAG_PREFIX`]).
//! The sequence check (within a window of the instance's last one) needs the
//! instance's history and lives in [`crate::detector`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{self, Heartbeat};
use serde_json::{Map, Value};
use tokio::time::Instant;

/// Longest `service.name` / `heartbeat.target_service` accepted.
pub const MAX_NAME: usize = 64;
/// Longest `service.instance.id` accepted (the runtime writes `<name>-<12 hex>`).
pub const MAX_INSTANCE_ID: usize = 128;
/// Longest `service.version` accepted.
pub const MAX_VERSION: usize = 64;
/// Shortest interval a heartbeat may announce.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest interval a heartbeat may announce.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(300);
/// How far ahead of the monitor's clock a heartbeat's timestamp may be.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);
/// The field shippers tag lines with, and the prefix of every shipper tag.
/// A heartbeat that carries any shipper tag is refused: the runtime never
/// writes tags, so a tagged heartbeat was altered on its way (truncated,
/// re-encoded) or written by a program in another service's name (the
/// shipper marks those; the exact tag is the shipper's business, any tag
/// with this prefix is enough here).
pub const TAGS_FIELD: &str = "tags";
pub const SHIPPER_TAG_PREFIX: &str = "meshwatch_shipper_";
/// How often refusals are reported (one log line with the counts by reason).
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Bounds on what a heartbeat may say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustConfig {
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub max_clock_skew: Duration,
    /// Older heartbeats say nothing about the present (the registry's
    /// forget-after: such an instance would be forgotten at once).
    pub max_age: Duration,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            min_interval: DEFAULT_MIN_INTERVAL,
            max_interval: DEFAULT_MAX_INTERVAL,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            max_age: crate::registry::DEFAULT_FORGET_AFTER,
        }
    }
}

/// Why a record of the heartbeats topic does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a heartbeat: {0}")]
    NotHeartbeat(String),
    #[error("heartbeat carries the shipper tag {0:?}")]
    Tagged(String),
    #[error("heartbeat field {field} is not a plain name of at most {max} bytes")]
    BadName { field: &'static str, max: usize },
    #[error("heartbeat interval {0:?} is outside the accepted bounds")]
    Interval(Duration),
    #[error("heartbeat timestamp is {0:?} ahead of the monitor's clock")]
    Future(Duration),
    #[error("heartbeat timestamp is {0:?} old")]
    TooOld(Duration),
    #[error("heartbeat sequence {got} is not within the window after the instance's last {last}")]
    SequenceJump { last: u64, got: u64 },
    #[error("instance limit of {0} reached; a new instance is refused")]
    TooManyInstances(usize),
    #[error("service limit of {0} reached; a new service is refused")]
    TooManyServices(usize),
}

impl Refusal {
    /// A stable label for counting.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotHeartbeat(_) => "not_a_heartbeat",
            Self::Tagged(_) => "shipper_tag",
            Self::BadName { .. } => "bad_name",
            Self::Interval(_) => "interval",
            Self::Future(_) => "future_timestamp",
            Self::TooOld(_) => "too_old",
            Self::SequenceJump { .. } => "sequence_jump",
            Self::TooManyInstances(_) => "max_instances",
            Self::TooManyServices(_) => "max_services",
        }
    }
}

/// A plain name: `[A-Za-z0-9._/:-]`, 1 to `max` bytes.
fn plain(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':'))
}

/// Parses one record of the heartbeats topic and checks its shape at `now`
/// (the monitor's clock). Returns the heartbeat and its signed age in
/// milliseconds (negative: the sender's clock is ahead).
pub fn admit(
    payload: &[u8],
    now: SystemTime,
    cfg: &TrustConfig,
) -> Result<(Heartbeat, f64), Refusal> {
    let obj: Map<String, Value> = serde_json::from_slice(payload)
        .map_err(|e| Refusal::NotHeartbeat(format!("not a JSON object ({e})")))?;
    if !heartbeat::is_heartbeat(&obj) {
        return Err(Refusal::NotHeartbeat(
            "event.dataset is not meshwatch.heartbeat".into(),
        ));
    }
    if let Some(tags) = obj.get(TAGS_FIELD) {
        let tag = match tags {
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .find(|t| t.starts_with(SHIPPER_TAG_PREFIX)),
            Value::String(t) if t.starts_with(SHIPPER_TAG_PREFIX) => Some(t.as_str()),
            _ => None,
        };
        if let Some(tag) = tag {
            return Err(Refusal::Tagged(tag.chars().take(MAX_NAME).collect()));
        }
    }
    let hb = Heartbeat::from_json(&obj).map_err(|e| Refusal::NotHeartbeat(e.to_string()))?;
    check(&hb, now, cfg).map(|age_ms| (hb, age_ms))
}

/// The shape checks of an already parsed heartbeat; returns its signed age in ms.
pub fn check(hb: &Heartbeat, now: SystemTime, cfg: &TrustConfig) -> Result<f64, Refusal> {
    let names = [
        ("service.name", Some(hb.service_name.as_str()), MAX_NAME),
        (
            "service.instance.id",
            Some(hb.instance_id.as_str()),
            MAX_INSTANCE_ID,
        ),
        (
            "heartbeat.target_service",
            hb.target_service.as_deref(),
            MAX_NAME,
        ),
    ];
    for (field, value, max) in names {
        if value.is_some_and(|v| !plain(v, max)) {
            return Err(Refusal::BadName { field, max });
        }
    }
    // The runtime writes the crate version; empty is tolerated (older emitters).
    if !hb.version.is_empty() && !plain(&hb.version, MAX_VERSION) {
        return Err(Refusal::BadName {
            field: "service.version",
            max: MAX_VERSION,
        });
    }
    if hb.interval < cfg.min_interval || hb.interval > cfg.max_interval {
        return Err(Refusal::Interval(hb.interval));
    }
    match now.duration_since(hb.timestamp) {
        Ok(age) if age > cfg.max_age => Err(Refusal::TooOld(age)),
        Ok(age) => Ok(age.as_secs_f64() * 1000.0),
        Err(ahead) if ahead.duration() > cfg.max_clock_skew => {
            Err(Refusal::Future(ahead.duration()))
        }
        Err(ahead) => Ok(-ahead.duration().as_secs_f64() * 1000.0),
    }
}

/// Refusals counted by reason since the last report, with one example.
#[derive(Debug)]
pub struct RefusalLog {
    every: Duration,
    since: Instant,
    counts: BTreeMap<&'static str, u64>,
    example: Option<String>,
    total: u64,
}

/// One report: what was refused during `period`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusalReport {
    pub period: Duration,
    pub counts: BTreeMap<&'static str, u64>,
    pub example: String,
}

impl RefusalReport {
    pub fn total(&self) -> u64 {
        self.counts.values().fold(0, |a, n| a.saturating_add(*n))
    }
}

impl RefusalLog {
    pub fn new(every: Duration, now: Instant) -> Self {
        Self {
            every,
            since: now,
            counts: BTreeMap::new(),
            example: None,
            total: 0,
        }
    }

    /// Counts `refusal`; `about` says which record (service/instance).
    pub fn count(&mut self, refusal: &Refusal, about: &str) {
        self.count_n(refusal, about, 1);
    }

    /// Counts `n` refusals of one kind.
    pub fn count_n(&mut self, refusal: &Refusal, about: &str, n: u64) {
        let count = self.counts.entry(refusal.reason()).or_insert(0);
        *count = count.saturating_add(n);
        self.total = self.total.saturating_add(n);
        if self.example.is_none() {
            self.example = Some(if about.is_empty() {
                refusal.to_string()
            } else {
                format!("{about}: {refusal}")
            });
        }
    }

    /// Every refusal so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The report of the period ending at `now`, once `every` has passed
    /// since the last one and something was refused.
    pub fn report(&mut self, now: Instant) -> Option<RefusalReport> {
        let period = now.saturating_duration_since(self.since);
        if period < self.every || self.counts.is_empty() {
            return None;
        }
        self.since = now;
        Some(RefusalReport {
            period,
            counts: std::mem::take(&mut self.counts),
            example: self.example.take().unwrap_or_default(),
        })
    }
}

/// `service/instance` of a heartbeat for reports, cut to printable length.
pub fn about(hb: &Heartbeat) -> String {
    let cut = |s: &str, n: usize| -> String { s.chars().take(n).collect() };
    format!(
        "{}/{}",
        cut(&hb.service_name, MAX_NAME).escape_debug(),
        cut(&hb.instance_id, MAX_INSTANCE_ID).escape_debug()
    )
}

#[cfg(test)]
mod tests;
