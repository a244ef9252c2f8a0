//! One service's sliding window: fixed buckets of request counts, server
//! errors, an HDR latency histogram and example trace ids, and the statistics
//! of the last complete window. Buckets are numbered from the detector's
//! origin; the window holds the current bucket and the `buckets` before it.

use std::collections::VecDeque;

use hdrhistogram::Histogram;

use super::parse::Request;
use super::AnomalyError;

/// Example trace ids kept per bucket and per alert.
pub const EXAMPLES: usize = 5;
/// Histogram range in microseconds: 1 µs to 1 h, 2 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;
const HIST_SIGFIG: u8 = 2;

fn histogram() -> Result<Histogram<u64>, AnomalyError> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)?)
}

#[derive(Debug)]
struct Bucket {
    index: u64,
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
    error_examples: Vec<String>,
    /// The slowest requests with a trace id: (µs, trace id).
    slow_examples: Vec<(u64, String)>,
}

impl Bucket {
    fn new(index: u64) -> Result<Self, AnomalyError> {
        Ok(Self {
            index,
            requests: 0,
            errors: 0,
            latency_us: histogram()?,
            error_examples: Vec::new(),
            slow_examples: Vec::new(),
        })
    }

    fn reset(&mut self, index: u64) {
        self.index = index;
        self.requests = 0;
        self.errors = 0;
        self.latency_us.reset();
        self.error_examples.clear();
        self.slow_examples.clear();
    }

    fn record(&mut self, req: &Request<'_>) {
        self.requests = self.requests.saturating_add(1);
        if req.server_error {
            self.errors = self.errors.saturating_add(1);
            if let Some(t) = &req.trace_id {
                if self.error_examples.len() < EXAMPLES {
                    self.error_examples.push(t.to_string());
                }
            }
        }
        if let Some(d) = req.duration {
            let us = u64::try_from(d.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, HIST_MAX_US);
            self.latency_us.saturating_record(us);
            if let Some(t) = &req.trace_id {
                if self.slow_examples.len() < EXAMPLES {
                    self.slow_examples.push((us, t.to_string()));
                } else if let Some(min) = self.slow_examples.iter_mut().min_by_key(|(u, _)| *u) {
                    if us > min.0 {
                        *min = (us, t.to_string());
                    }
                }
            }
        }
    }
}

/// What one evaluation saw for one service.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowStats {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

/// The buckets of one service, oldest first: at most `keep` (the window plus
/// the current bucket), recycled rather than reallocated.
#[derive(Debug)]
pub struct Window {
    buckets: VecDeque<Bucket>,
    keep: usize,
    merged: Histogram<u64>,
}

impl Window {
    pub fn new(keep: usize) -> Result<Self, AnomalyError> {
        Ok(Self {
            buckets: VecDeque::with_capacity(keep),
            keep: keep.max(1),
            merged: histogram()?,
        })
    }

    /// Counts `req` in bucket `index` (the current one).
    pub fn record(&mut self, req: &Request<'_>, index: u64) -> Result<(), AnomalyError> {
        if self.buckets.back().is_none_or(|b| b.index != index) {
            if self.buckets.len() >= self.keep {
                if let Some(mut old) = self.buckets.pop_front() {
                    old.reset(index);
                    self.buckets.push_back(old);
                }
            } else {
                self.buckets.push_back(Bucket::new(index)?);
            }
        }
        if let Some(bucket) = self.buckets.back_mut() {
            bucket.record(req);
        }
        Ok(())
    }

    /// The bucket of the newest request, if any was counted.
    pub fn newest(&self) -> Option<u64> {
        self.buckets.back().map(|b| b.index)
    }

    fn in_window(&self, first: u64, current: u64) -> impl DoubleEndedIterator<Item = &Bucket> {
        self.buckets
            .iter()
            .filter(move |b| b.index >= first && b.index < current)
    }

    /// Statistics of buckets `first..current`.
    pub fn stats(&mut self, first: u64, current: u64) -> WindowStats {
        let mut requests = 0u64;
        let mut errors = 0u64;
        self.merged.reset();
        for b in self
            .buckets
            .iter()
            .filter(|b| b.index >= first && b.index < current)
        {
            requests = requests.saturating_add(b.requests);
            errors = errors.saturating_add(b.errors);
            // Same bounds: adding cannot fail.
            let _ = self.merged.add(&b.latency_us);
        }
        let p99_ms = if self.merged.is_empty() {
            0.0
        } else {
            self.merged.value_at_quantile(0.99) as f64 / 1000.0
        };
        WindowStats {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p99_ms,
        }
    }

    /// Trace ids of failed requests in `first..current`, newest first.
    pub fn error_examples(&self, first: u64, current: u64) -> Vec<String> {
        self.in_window(first, current)
            .rev()
            .flat_map(|b| b.error_examples.iter().cloned())
            .take(EXAMPLES)
            .collect()
    }

    /// Trace ids of the slowest requests in `first..current`, slowest first.
    pub fn slow_examples(&self, first: u64, current: u64) -> Vec<String> {
        let mut all: Vec<_> = self
            .in_window(first, current)
            .flat_map(|b| b.slow_examples.iter())
            .collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.0));
        all.into_iter()
            .take(EXAMPLES)
            .map(|(_, t)| t.clone())
            .collect()
    }
}
