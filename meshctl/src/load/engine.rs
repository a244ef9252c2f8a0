//! The load engine, independent of what is called: open loop at a fixed
//! rate (latency measured from each request's scheduled start, so a slow
//! server cannot hide its queueing: no coordinated omission), or closed loop
//! at saturation; progress every second and a report with HDR-histogram
//! percentiles and the outcome and error breakdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::Style;

/// Highest latency the histogram tracks (larger values are clamped), in µs.
const MAX_LATENCY_US: u64 = 120_000_000;
/// Most requests in flight (and closed-loop workers) a run starts.
pub const MAX_CONCURRENCY: usize = 10_000;
/// Longest time between two open-loop requests.
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// Rate, duration and concurrency of a load run.
#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    /// Requests per second; 0 or less means closed loop at saturation.
    pub rate: f64,
    pub duration: Duration,
    pub concurrency: usize,
}

/// What a load run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub elapsed: Duration,
    /// Requests started.
    pub sent: u64,
    /// Requests that finished (with any outcome).
    pub completed: u64,
    /// Open loop only: scheduled requests not sent because `concurrency` were in flight.
    pub skipped: u64,
    /// Successful answers by label (for PlaceOrder: the order status).
    pub outcomes: BTreeMap<String, u64>,
    /// Failed calls by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// Latency of every completed request, µs.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q` (0..=1) in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "sent": self.sent,
            "completed": self.completed,
            "skipped": self.skipped,
            "throughput_rps": self.throughput(),
            "latency_ms": {
                "p50": self.latency_ms(0.5), "p90": self.latency_ms(0.9),
                "p99": self.latency_ms(0.99), "p999": self.latency_ms(0.999),
                "max": self.latency_us.max() as f64 / 1000.0,
            },
            "outcomes": self.outcomes,
            "errors": self.errors,
        })
    }

    pub fn render(&self, style: Style) -> String {
        let mut out = String::new();
        out.push_str(&style.bold("load report\n"));
        out.push_str(&format!(
            "  requests   {} sent, {} completed, {} skipped (concurrency limit) in {:.1}s\n",
            self.sent,
            self.completed,
            self.skipped,
            self.elapsed.as_secs_f64()
        ));
        out.push_str(&format!("  throughput {:.1} req/s\n", self.throughput()));
        out.push_str(&format!(
            "  latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms\n",
            self.latency_ms(0.5),
            self.latency_ms(0.9),
            self.latency_ms(0.99),
            self.latency_ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        ));
        for (label, n) in &self.outcomes {
            out.push_str(&format!(
                "  outcome    {} {n}\n",
                style.paint(
                    if label == "CONFIRMED" { "32" } else { "33" },
                    &crate::output::pad(label, 20)
                )
            ));
        }
        for (code, n) in &self.errors {
            out.push_str(&format!(
                "  error      {} {n}\n",
                style.paint("31", &crate::output::pad(code, 20))
            ));
        }
        out
    }
}

struct Tally {
    completed: u64,
    outcomes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn record(&mut self, latency: Duration, result: Result<String, String>) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        // Clamped into range above, so recording cannot fail.
        let _ = self.latency_us.record(us);
        self.completed += 1;
        let (map, key) = match result {
            Ok(label) => (&mut self.outcomes, label),
            Err(code) => (&mut self.errors, code),
        };
        *map.entry(key).or_insert(0) += 1;
    }
}

/// A progress snapshot, once a second.
#[derive(Clone, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub sent: u64,
    pub completed: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

/// Runs `call(sequence)` under `spec`. Each call resolves to the label of a
/// successful answer or the name of the error code.
pub async fn run_load<F, Fut>(
    spec: LoadSpec,
    call: F,
    mut progress: impl FnMut(&Progress),
) -> LoadReport
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let tally = Arc::new(Mutex::new(Tally {
        completed: 0,
        outcomes: BTreeMap::new(),
        errors: BTreeMap::new(),
        latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
        }),
    }));
    // Bounded here too, whoever builds the spec: a semaphore refuses more
    // permits than this, and each closed-loop worker is a task.
    let concurrency = spec.concurrency.clamp(1, MAX_CONCURRENCY);
    let start = Instant::now();
    let end = start.checked_add(spec.duration).unwrap_or(start);
    let sent = Arc::new(AtomicU64::new(0));
    let mut skipped = 0u64;
    let mut tasks = JoinSet::new();
    let mut report_tick =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let snapshot = |tally: &Mutex<Tally>, sent: u64| {
        let t = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Progress {
            elapsed: start.elapsed(),
            sent,
            completed: t.completed,
            errors: t.errors.values().sum(),
            p99_ms: t.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        }
    };

    if spec.rate > 0.0 {
        let permits = Arc::new(Semaphore::new(concurrency));
        // 1 µs ..= 1 h between requests, whatever the rate: a zero period
        // panics, and 1/rate of a tiny rate does not fit a Duration.
        let period = Duration::try_from_secs_f64(1.0 / spec.rate)
            .unwrap_or(MAX_PERIOD)
            .clamp(Duration::from_micros(1), MAX_PERIOD);
        let mut tick = tokio::time::interval(period);
        // Catch up after a stall: an open loop keeps its schedule.
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                scheduled = tick.tick() => {
                    if scheduled >= end {
                        break;
                    }
                    while tasks.try_join_next().is_some() {}
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        skipped += 1;
                        continue;
                    };
                    let seq = sent.fetch_add(1, Ordering::Relaxed) + 1;
                    let (call, tally) = (call.clone(), Arc::clone(&tally));
                    tasks.spawn(async move {
                        let result = call(seq).await;
                        let latency = scheduled.elapsed();
                        tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(latency, result);
                        drop(permit);
                    });
                }
                _ = report_tick.tick() => progress(&snapshot(&tally, sent.load(Ordering::Relaxed))),
            }
        }
    } else {
        for _ in 0..concurrency {
            let (call, tally, sent) = (call.clone(), Arc::clone(&tally), Arc::clone(&sent));
            tasks.spawn(async move {
                while Instant::now() < end {
                    let seq = sent.fetch_add(1, Ordering::Relaxed) + 1;
                    let begun = Instant::now();
                    let result = call(seq).await;
                    tally
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .record(begun.elapsed(), result);
                }
            });
        }
        let mut stop = std::pin::pin!(tokio::time::sleep_until(end));
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = report_tick.tick() => progress(&snapshot(&tally, sent.load(Ordering::Relaxed))),
            }
        }
    }
    // Every call carries its own deadline, so this wait is bounded.
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let t = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    LoadReport {
        elapsed,
        sent: sent.load(Ordering::Relaxed),
        completed: t.completed,
        skipped,
        outcomes: t.outcomes.clone(),
        errors: t.errors.clone(),
        latency_us: t.latency_us.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn extreme_specs_do_not_panic() {
        for (rate, concurrency) in [
            (f64::MAX, usize::MAX),
            (f64::MIN_POSITIVE, 1),
            (f64::INFINITY, 4),
            (0.0, usize::MAX),
        ] {
            let spec = LoadSpec {
                rate,
                duration: Duration::from_millis(5),
                concurrency,
            };
            let call = |_| async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok("OK".to_owned())
            };
            let report = run_load(spec, call, |_| {}).await;
            assert!(report.sent <= report.completed + report.skipped + MAX_CONCURRENCY as u64);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_keeps_its_rate_and_counts_outcomes() {
        let spec = LoadSpec {
            rate: 100.0,
            duration: Duration::from_secs(2),
            concurrency: 8,
        };
        let mut ticks = 0;
        let report = run_load(
            spec,
            |seq| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if seq % 10 == 0 {
                    Err("UNAVAILABLE".to_owned())
                } else {
                    Ok("CONFIRMED".to_owned())
                }
            },
            |_| ticks += 1,
        )
        .await;
        assert_eq!(report.sent, 200);
        assert_eq!(report.completed, 200);
        assert_eq!(report.skipped, 0);
        assert_eq!(report.outcomes["CONFIRMED"], 180);
        assert_eq!(report.errors["UNAVAILABLE"], 20);
        assert!(ticks >= 1);
        let p50 = report.latency_ms(0.5);
        assert!((9.9..=10.2).contains(&p50), "p50 {p50}");
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_skips_when_concurrency_is_exhausted_and_counts_queueing() {
        // 100/s against calls that take 100 ms with 2 in flight: most ticks find no slot.
        let spec = LoadSpec {
            rate: 100.0,
            duration: Duration::from_secs(1),
            concurrency: 2,
        };
        let report = run_load(
            spec,
            |_| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok("CONFIRMED".to_owned())
            },
            |_| {},
        )
        .await;
        assert_eq!(report.sent + report.skipped, 100);
        assert!(report.sent <= 22, "sent {}", report.sent);
        assert!(report.skipped >= 78);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_saturates_with_the_given_concurrency() {
        let spec = LoadSpec {
            rate: 0.0,
            duration: Duration::from_secs(1),
            concurrency: 4,
        };
        let report = run_load(
            spec,
            |_| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok("CONFIRMED".to_owned())
            },
            |_| {},
        )
        .await;
        // 4 workers × 20 calls of 50 ms in one second.
        assert_eq!(report.completed, 80);
        assert!(
            (report.throughput() - 80.0).abs() < 1.0,
            "{}",
            report.throughput()
        );
    }
}
