//! Failure detection for one service instance: a phi-accrual detector
//! (Hayashibara et al., as in Akka) over heartbeat gaps, bounded by a hard
//! silence limit, plus what the instance last said about itself and the
//! sequence window its next heartbeat must fall in.
//!
//! Where the sender's clock is trustworthy, silence is measured from when the
//! last heartbeat *would* have arrived on the fastest path seen recently
//! (its own timestamp plus the smallest recent delay), not from when it did
//! arrive: a heartbeat held up on its way (a broker's fetch wait, a shipper's
//! batch) then neither delays the verdict by its own lateness nor widens the
//! learned gaps. The clock counts as trustworthy while the recent delays
//! (arrival minus timestamp: path delay plus clock offset) stay within the
//! acceptable pause of each other; otherwise (a clock step, a replay, a
//! stalled path) silence is measured from the arrival, as Akka does. The hard
//! bound is always measured from the arrival.
//!
//! Everything here is a pure function of the heartbeats seen and the
//! `tokio::time::Instant` passed in, so tests drive it with paused time.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use tokio::time::Instant;

use crate::trust::Refusal;

/// Akka's default suspicion threshold.
pub const DEFAULT_THRESHOLD: f64 = 8.0;
/// Akka's default bound on remembered gaps.
pub const DEFAULT_MAX_SAMPLE_SIZE: usize = 1000;
/// Floor of the standard deviation. Akka uses 500 ms with a 3 s acceptable
/// pause, which detects a 1 s heartbeat's silence only after ~6.5 s; the
/// meshwatch target is < 2 s, so the floor is lower and the learned deviation
/// (which grows with real jitter) does the rest.
pub const DEFAULT_MIN_STD_DEVIATION: Duration = Duration::from_millis(100);
/// Extra silence tolerated on top of the mean gap before phi starts to rise.
pub const DEFAULT_ACCEPTABLE_PAUSE: Duration = Duration::from_millis(250);
/// Hard bound = this many announced intervals + the acceptable pause.
pub const DEFAULT_HARD_BOUND_INTERVALS: u32 = 3;
/// A heartbeat older than this when it arrives (replayed from the topic at
/// start, or held up somewhere) says nothing about the instance being alive now.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(10);
/// Intervals shorter than this are treated as this (a zero interval would
/// make every gap infinitely suspicious).
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Recent delays (arrival minus timestamp) kept to judge the sender's clock.
const DELAY_SAMPLES: usize = 16;
/// Delays needed before the sender's clock is trusted.
const MIN_DELAY_SAMPLES: usize = 4;
/// A sequence may run this far ahead of the last one, plus two per interval
/// of silence since it arrived (heartbeats lost on the way): anything further
/// is not this instance's next heartbeat.
pub const SEQUENCE_SLACK: u64 = 32;

/// How old a heartbeat was on arrival by the sender's clock, in milliseconds;
/// negative when the sender's clock is ahead of the monitor's.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Age(pub f64);

impl From<Duration> for Age {
    fn from(d: Duration) -> Self {
        Self(d.as_secs_f64() * 1000.0)
    }
}

impl Age {
    fn exceeds(self, d: Duration) -> bool {
        self.0 > d.as_secs_f64() * 1000.0
    }
}

/// Detector parameters, shared by every instance.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Suspected when phi exceeds this (phi 8 ≈ 1e-8 probability of a false suspicion).
    pub threshold: f64,
    /// At most this many gaps are remembered (oldest dropped first).
    pub max_sample_size: usize,
    pub min_std_deviation: Duration,
    pub acceptable_pause: Duration,
    pub hard_bound_intervals: u32,
    pub stale_after: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            max_sample_size: DEFAULT_MAX_SAMPLE_SIZE,
            min_std_deviation: DEFAULT_MIN_STD_DEVIATION,
            acceptable_pause: DEFAULT_ACCEPTABLE_PAUSE,
            hard_bound_intervals: DEFAULT_HARD_BOUND_INTERVALS,
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

impl DetectorConfig {
    /// The longest silence tolerated for an instance announcing `interval`,
    /// whatever phi says.
    pub fn hard_bound(&self, interval: Duration) -> Duration {
        interval
            .max(MIN_INTERVAL)
            .saturating_mul(self.hard_bound_intervals)
            .saturating_add(self.acceptable_pause)
    }

    /// The standardised silence `y` at which phi reaches the threshold:
    /// the root of `y (1.5976 + 0.070566 y²) = ln(10^threshold - 1)`.
    pub fn crossing(&self) -> f64 {
        let t = self.threshold.max(f64::MIN_POSITIVE) * std::f64::consts::LN_10;
        let z = if t > 30.0 { t } else { t.exp_m1().ln() };
        let (a, b) = (0.070566, 1.5976);
        // Newton from above the root: the cubic is increasing and convex
        // for y > 0, so the iterates fall monotonically onto it.
        let mut y = (z.max(0.0) / a).cbrt().max(z / b).max(0.0);
        for _ in 0..64 {
            let f = a * y * y * y + b * y - z;
            let step = f / (3.0 * a * y * y + b);
            y -= step;
            if step.abs() < 1e-12 {
                break;
            }
        }
        y
    }
}

/// What the monitor concludes about one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Heartbeats on time, saying "up".
    Alive,
    /// Heartbeats on time, saying "not_ready".
    NotReady,
    /// Silent for too long (phi above the threshold or past the hard bound),
    /// or only stale heartbeats seen.
    Suspected,
    /// Said goodbye with a "down" heartbeat.
    Down,
}

impl Liveness {
    /// Whether the instance can take requests.
    pub fn is_serving(self) -> bool {
        self == Self::Alive
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::NotReady => "not_ready",
            Self::Suspected => "suspected",
            Self::Down => "down",
        }
    }
}

/// Gaps between heartbeats in milliseconds, bounded, with running sums.
#[derive(Clone, Debug)]
struct GapHistory {
    gaps: VecDeque<f64>,
    max: usize,
    sum: f64,
    sum_sq: f64,
}

impl GapHistory {
    fn new(max: usize) -> Self {
        let max = max.max(2);
        Self {
            gaps: VecDeque::with_capacity(max.min(64)),
            max,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    fn push(&mut self, gap_ms: f64) {
        if self.gaps.len() == self.max {
            if let Some(old) = self.gaps.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.gaps.push_back(gap_ms);
        self.sum += gap_ms;
        self.sum_sq += gap_ms * gap_ms;
    }

    fn mean(&self) -> f64 {
        self.sum / self.gaps.len().max(1) as f64
    }

    fn std_deviation(&self) -> f64 {
        let mean = self.mean();
        (self.sum_sq / self.gaps.len().max(1) as f64 - mean * mean)
            .max(0.0)
            .sqrt()
    }
}

/// phi for a silence of `elapsed_ms` given gaps of `mean_ms` ± `std_ms`:
/// -log10 of the probability that the next heartbeat is still to come, with
/// the logistic approximation of the normal CDF that Akka uses.
///
/// Computed as log10(1 + e^z) in a form that stays finite however long the
/// silence (Akka's -log10(e / (1 + e)) reaches infinity after a few seconds
/// of silence, which then shows up as a meaningless 1.8e308 in `ListServices`).
pub fn phi(elapsed_ms: f64, mean_ms: f64, std_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / std_ms;
    let z = y * (1.5976 + 0.070566 * y * y);
    if z > 0.0 {
        (z + (-z).exp().ln_1p()) / std::f64::consts::LN_10
    } else {
        z.exp().ln_1p() / std::f64::consts::LN_10
    }
}

/// One instance's detector. Created from its first heartbeat.
#[derive(Clone, Debug)]
pub struct InstanceDetector {
    history: GapHistory,
    interval: Duration,
    last_arrival: Instant,
    last_sent: SystemTime,
    last_status: HeartbeatStatus,
    last_sequence: u64,
    version: String,
    /// The newest heartbeat seen was already stale when it arrived.
    stale: bool,
    /// Recent ages on arrival (ms, signed), oldest first.
    delays: VecDeque<f64>,
}

impl InstanceDetector {
    /// Starts from `hb`, received at `now` when it was already `age` old.
    /// Like Akka, the history is seeded with the announced interval ± a quarter.
    pub fn new(hb: &Heartbeat, now: Instant, age: impl Into<Age>, cfg: &DetectorConfig) -> Self {
        let age = age.into();
        let interval = hb.interval.max(MIN_INTERVAL);
        let mut history = GapHistory::new(cfg.max_sample_size);
        let estimate = interval.as_secs_f64() * 1000.0;
        history.push(estimate * 0.75);
        history.push(estimate * 1.25);
        let mut delays = VecDeque::with_capacity(DELAY_SAMPLES);
        delays.push_back(age.0);
        Self {
            history,
            interval,
            last_arrival: now,
            last_sent: hb.timestamp,
            last_status: hb.status,
            last_sequence: hb.sequence,
            version: hb.version.clone(),
            stale: age.exceeds(cfg.stale_after),
            delays,
        }
    }

    /// Whether the sender's clock is trusted: enough recent delays, all
    /// within the acceptable pause of each other.
    pub fn clock_trusted(&self, cfg: &DetectorConfig) -> bool {
        if self.delays.len() < MIN_DELAY_SAMPLES {
            return false;
        }
        let (min, max) = self.delay_range();
        max - min <= cfg.acceptable_pause.as_secs_f64() * 1000.0
    }

    fn delay_range(&self) -> (f64, f64) {
        self.delays
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), d| {
                (lo.min(*d), hi.max(*d))
            })
    }

    /// How much later than on the fastest recent path the last heartbeat
    /// arrived (ms); 0 when the sender's clock is not trusted.
    pub fn lateness_ms(&self, cfg: &DetectorConfig) -> f64 {
        if !self.clock_trusted(cfg) {
            return 0.0;
        }
        let (min, _) = self.delay_range();
        self.delays.back().map_or(0.0, |last| (last - min).max(0.0))
    }

    /// Whether `sequence` can be this instance's next heartbeat at `now`.
    fn in_window(&self, sequence: u64, now: Instant) -> bool {
        let intervals = self.silent_for(now).as_nanos() / self.interval.as_nanos().max(1);
        let allowed = u64::try_from(intervals.saturating_mul(2))
            .unwrap_or(u64::MAX)
            .saturating_add(SEQUENCE_SLACK);
        sequence <= self.last_sequence.saturating_add(allowed)
    }

    /// Records `hb`, received at `now` when it was already `age` old.
    /// Duplicates and reordered heartbeats (sequence not above the last one)
    /// are ignored: at-least-once delivery may repeat them. A lower sequence
    /// with a later send time is the same instance id restarted: the
    /// detector starts afresh. A sequence beyond the window after the last
    /// one is refused. Returns whether the verdict at `now` changed.
    pub fn heartbeat(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
        age: impl Into<Age>,
        cfg: &DetectorConfig,
    ) -> Result<bool, Refusal> {
        let age = age.into();
        let before = self.liveness(now, cfg);
        if hb.sequence <= self.last_sequence {
            if hb.sequence < self.last_sequence && hb.timestamp > self.last_sent {
                *self = Self::new(hb, now, age, cfg);
                return Ok(self.liveness(now, cfg) != before);
            }
            return Ok(false);
        }
        if !self.in_window(hb.sequence, now) {
            return Err(Refusal::SequenceJump {
                last: self.last_sequence,
                got: hb.sequence,
            });
        }
        let stale = age.exceeds(cfg.stale_after);
        // Like Akka, the gap that ends a suspicion (or a goodbye) is not
        // learned: one long outage would otherwise widen the learned
        // deviation and slow every later detection down to the hard bound.
        let learn = matches!(before, Liveness::Alive | Liveness::NotReady);
        if !stale && learn {
            // The gap from where silence was measured (the previous
            // heartbeat's arrival, or where it would have arrived on the
            // fastest path) to this arrival: what the detector has to
            // tolerate. The sender's own spacing covers heartbeats that
            // arrive bunched (replay, consumer catching up).
            let arrival_gap = now.saturating_duration_since(self.last_arrival);
            let sent_gap = hb
                .timestamp
                .duration_since(self.last_sent)
                .unwrap_or(Duration::ZERO);
            let gap_ms = (arrival_gap.as_secs_f64() * 1000.0 + self.lateness_ms(cfg))
                .max(sent_gap.as_secs_f64() * 1000.0);
            self.history.push(gap_ms);
        }
        if self.delays.len() == DELAY_SAMPLES {
            self.delays.pop_front();
        }
        if age.0.is_finite() {
            self.delays.push_back(age.0);
        }
        self.stale = stale;
        self.interval = hb.interval.max(MIN_INTERVAL);
        self.last_arrival = now;
        self.last_sent = hb.timestamp;
        self.last_status = hb.status;
        self.last_sequence = hb.sequence;
        if self.version != hb.version {
            self.version.clone_from(&hb.version);
        }
        Ok(self.liveness(now, cfg) != before)
    }

    /// Mean and standard deviation (ms) phi judges silence against.
    fn distribution(&self, cfg: &DetectorConfig) -> (f64, f64) {
        let mean = self.history.mean() + cfg.acceptable_pause.as_secs_f64() * 1000.0;
        let std = self
            .history
            .std_deviation()
            .max(cfg.min_std_deviation.as_secs_f64() * 1000.0)
            .max(f64::EPSILON);
        (mean, std)
    }

    /// Current suspicion level: 0 right after a heartbeat, rising with silence.
    pub fn phi(&self, now: Instant, cfg: &DetectorConfig) -> f64 {
        let elapsed = self.silent_for(now).as_secs_f64() * 1000.0 + self.lateness_ms(cfg);
        let (mean, std) = self.distribution(cfg);
        phi(elapsed, mean, std)
    }

    /// The next instant after `now` at which the verdict would change if no
    /// heartbeat came: phi crossing the threshold (`crossing` is
    /// [`DetectorConfig::crossing`]) or the hard bound. `None` when nothing
    /// is pending (down, stale, or suspected already past the hard bound).
    pub fn next_change(
        &self,
        now: Instant,
        cfg: &DetectorConfig,
        crossing: f64,
    ) -> Option<Instant> {
        if self.last_status == HeartbeatStatus::Down || self.stale {
            return None;
        }
        let (mean, std) = self.distribution(cfg);
        let silence_ms = mean + std * crossing - self.lateness_ms(cfg);
        // One millisecond past the crossing, so that phi is above it then.
        let phi_at = Duration::try_from_secs_f64(silence_ms.max(0.0) / 1000.0)
            .ok()
            .and_then(|d| {
                self.last_arrival
                    .checked_add(d.saturating_add(Duration::from_millis(1)))
            });
        let hard_at = self.last_arrival.checked_add(
            cfg.hard_bound(self.interval)
                .saturating_add(Duration::from_millis(1)),
        );
        [phi_at, hard_at]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// The verdict at `now`. A "down" heartbeat wins at once; otherwise
    /// silence (phi or the hard bound) wins over what the instance last said.
    pub fn liveness(&self, now: Instant, cfg: &DetectorConfig) -> Liveness {
        self.liveness_given_input(now, cfg, true)
    }

    /// The verdict at `now`, knowing whether the monitor hears from anyone at
    /// all (`input_live`). When it does not (its broker or consumer stalled,
    /// its host starved, or the whole mesh silent at once), phi, which judges
    /// one instance's silence against that instance's own rhythm, cannot tell
    /// a dead instance from a stalled pipe: only the hard bound applies.
    pub fn liveness_given_input(
        &self,
        now: Instant,
        cfg: &DetectorConfig,
        input_live: bool,
    ) -> Liveness {
        if self.last_status == HeartbeatStatus::Down {
            return Liveness::Down;
        }
        if self.stale
            || self.silent_for(now) > cfg.hard_bound(self.interval)
            || (input_live && self.phi(now, cfg) > cfg.threshold)
        {
            return Liveness::Suspected;
        }
        match self.last_status {
            HeartbeatStatus::Up => Liveness::Alive,
            HeartbeatStatus::NotReady | HeartbeatStatus::Down => Liveness::NotReady,
        }
    }

    /// Time since the last heartbeat arrived.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_arrival)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }
}

#[cfg(test)]
mod tests;
