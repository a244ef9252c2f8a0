//! The one fire/resolve state machine every anomaly signal (error rate, p99
//! latency) runs: a baseline learned by EWMA from the windows judged while
//! the signal is not firing (an anomaly never becomes its own baseline), a
//! threshold above it (a factor or an absolute margin, whichever is higher),
//! hysteresis (a firing signal resolves only once the observation is back
//! below half-way between baseline and threshold), and an optional warm-up
//! (windows learned before any verdict).

use std::time::SystemTime;

use crate::alert::{alert_id, AlertKind, AlertState};

/// How one signal is judged.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdSpec {
    /// What the signal alerts as (the alert id's prefix).
    pub kind: AlertKind,
    /// Threshold = max(baseline × factor, baseline + margin).
    pub factor: f64,
    pub margin: f64,
    /// Weight of the newest window in the baseline.
    pub alpha: f64,
    /// Windows learned before the signal can fire.
    pub warmup: u32,
    /// `true`: the first learned window becomes the baseline (no prior);
    /// `false`: the baseline starts at 0 and moves by EWMA from the start.
    pub learn_from_first: bool,
}

impl ThresholdSpec {
    pub fn threshold(&self, baseline: f64) -> f64 {
        (baseline * self.factor).max(baseline + self.margin)
    }

    /// Where a firing signal resolves: half-way between baseline and threshold.
    pub fn resolve_below(&self, baseline: f64) -> f64 {
        baseline + (self.threshold(baseline) - baseline) / 2.0
    }
}

/// An open incident: its stable id, when it started, and its evidence (a
/// recovery repeats it: its own window may have none).
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    pub id: String,
    pub started_at: SystemTime,
    pub examples: Vec<String>,
}

/// A transition of one signal, with what the alert needs to say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub state: AlertState,
    pub id: String,
    pub started_at: SystemTime,
    pub at: SystemTime,
    pub baseline: f64,
    pub threshold: f64,
    pub examples: Vec<String>,
}

/// One signal of one service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signal {
    baseline: f64,
    /// Windows learned so far (saturating).
    learned: u32,
    firing: Option<Firing>,
}

impl Signal {
    pub fn baseline(&self) -> f64 {
        self.baseline
    }

    pub fn is_firing(&self) -> bool {
        self.firing.is_some()
    }

    /// Judges one window's `observed` value at `now`: fires (taking example
    /// trace ids from `examples`), resolves, or neither; then, unless firing,
    /// learns `learn` (the value to learn from; `None`: nothing to learn, e.g.
    /// no latency recorded).
    pub fn judge(
        &mut self,
        spec: &ThresholdSpec,
        service: &str,
        observed: f64,
        learn: Option<f64>,
        examples: impl FnOnce() -> Vec<String>,
        now: SystemTime,
    ) -> Option<Transition> {
        let mut transition = None;
        if self.learned >= spec.warmup {
            let baseline = self.baseline;
            let threshold = spec.threshold(baseline);
            match &self.firing {
                None if observed > threshold => {
                    let firing = Firing {
                        id: alert_id(spec.kind, service, now),
                        started_at: now,
                        examples: examples(),
                    };
                    transition = Some(Transition {
                        state: AlertState::Firing,
                        id: firing.id.clone(),
                        started_at: now,
                        at: now,
                        baseline,
                        threshold,
                        examples: firing.examples.clone(),
                    });
                    self.firing = Some(firing);
                }
                Some(_) if observed <= spec.resolve_below(baseline) => {
                    transition = self.close(baseline, threshold, now);
                }
                _ => {}
            }
        }
        if self.firing.is_none() {
            if let Some(value) = learn.filter(|v| v.is_finite()) {
                if self.learned == 0 && spec.learn_from_first {
                    self.baseline = value;
                } else {
                    self.baseline += spec.alpha * (value - self.baseline);
                }
                self.learned = self.learned.saturating_add(1);
            }
        }
        transition
    }

    /// Ends an open incident without a verdict (its service fell silent and
    /// is forgotten): the resolution that closes it, if one was open.
    pub fn abandon(&mut self, spec: &ThresholdSpec, now: SystemTime) -> Option<Transition> {
        let baseline = self.baseline;
        self.close(baseline, spec.threshold(baseline), now)
    }

    fn close(&mut self, baseline: f64, threshold: f64, now: SystemTime) -> Option<Transition> {
        let firing = self.firing.take()?;
        Some(Transition {
            state: AlertState::Resolved,
            id: firing.id,
            started_at: firing.started_at,
            at: now,
            baseline,
            threshold,
            examples: firing.examples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(warmup: u32, learn_from_first: bool) -> ThresholdSpec {
        ThresholdSpec {
            kind: AlertKind::Latency,
            factor: 2.0,
            margin: 10.0,
            alpha: 0.5,
            warmup,
            learn_from_first,
        }
    }

    fn judge(s: &mut Signal, spec: &ThresholdSpec, v: f64) -> Option<AlertState> {
        s.judge(
            spec,
            "svc",
            v,
            Some(v),
            || vec!["t".into()],
            SystemTime::UNIX_EPOCH,
        )
        .map(|t| t.state)
    }

    #[test]
    fn warms_up_fires_holds_with_hysteresis_and_resolves() {
        let spec = spec(2, true);
        let mut s = Signal::default();
        // Warm-up: no verdict even for a wild value; the first value is the baseline.
        assert_eq!(judge(&mut s, &spec, 100.0), None);
        assert_eq!(s.baseline(), 100.0);
        assert_eq!(judge(&mut s, &spec, 100.0), None);
        // Threshold max(200, 110) = 200.
        assert_eq!(judge(&mut s, &spec, 199.0), None);
        let base = s.baseline();
        assert_eq!(judge(&mut s, &spec, 1000.0), Some(AlertState::Firing));
        // Firing: the baseline does not learn the anomaly.
        assert_eq!(s.baseline(), base);
        // Between resolve point and threshold: still firing.
        let resolve = spec.resolve_below(base);
        assert_eq!(judge(&mut s, &spec, resolve + 1.0), None);
        assert!(s.is_firing());
        assert_eq!(judge(&mut s, &spec, resolve), Some(AlertState::Resolved));
        assert!(!s.is_firing());
    }

    #[test]
    fn a_zero_prior_moves_by_ewma_and_abandon_closes_once() {
        let spec = spec(0, false);
        let mut s = Signal::default();
        assert_eq!(judge(&mut s, &spec, 4.0), None);
        assert_eq!(s.baseline(), 2.0);
        assert_eq!(judge(&mut s, &spec, 50.0), Some(AlertState::Firing));
        let closed = s
            .abandon(&spec, SystemTime::UNIX_EPOCH)
            .expect("an open incident");
        assert_eq!(closed.state, AlertState::Resolved);
        assert_eq!(closed.examples, ["t"]);
        assert_eq!(s.abandon(&spec, SystemTime::UNIX_EPOCH), None);
    }

    #[test]
    fn non_finite_values_are_not_learned() {
        let spec = spec(0, true);
        let mut s = Signal::default();
        s.judge(
            &spec,
            "svc",
            f64::NAN,
            Some(f64::INFINITY),
            Vec::new,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(s.baseline(), 0.0);
        assert_eq!(judge(&mut s, &spec, 5.0), None);
        assert_eq!(s.baseline(), 5.0);
    }
}
