//! Bounded waits for a server that is still starting: a number of attempts
//! and a total time, both bounded, so a setup job fails instead of hanging.

use std::time::Duration;

use super::ElasticError;

/// How long to wait for a server that is still starting: `attempts` tries,
/// `interval` apart. Both bounded, so a setup job fails instead of hanging.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub interval: Duration,
}

impl Retry {
    /// Tries every `interval` for about `total`: a first attempt at once,
    /// then one after each whole `interval` within `total` (so `--wait 3s`
    /// with a 2 s interval tries at 0 s and 2 s, not only once).
    pub fn for_about(total: Duration, interval: Duration) -> Self {
        let attempts = total.as_millis() / interval.as_millis().max(1) + 1;
        Self {
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            interval,
        }
    }
}

/// What one readiness probe found.
pub(crate) enum Probe {
    Ready,
    NotYet(String),
}

pub(crate) async fn wait_until<F, Fut>(
    what: &'static str,
    url: &str,
    retry: Retry,
    mut probe: F,
) -> Result<(), ElasticError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Probe, ElasticError>>,
{
    let started = tokio::time::Instant::now();
    // Attempts and total time are both bounded: a server that accepts
    // connections but never answers cannot stretch the wait.
    let budget = retry.interval * retry.attempts.max(1);
    let deadline = started + budget;
    let mut last = String::from("no attempt made");
    let mut attempts = 0;
    while attempts < retry.attempts.max(1) {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining.max(MIN_PROBE_TIME), probe()).await {
            Ok(answer) => match answer? {
                Probe::Ready => return Ok(()),
                Probe::NotYet(why) => last = why,
            },
            Err(_) => last = format!("no answer within {:?}", remaining.max(MIN_PROBE_TIME)),
        }
        if attempts >= retry.attempts || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(retry.interval).await;
    }
    Err(ElasticError::NotReady {
        what,
        url: url.to_owned(),
        attempts,
        waited: started.elapsed(),
        last,
    })
}

/// Even the last attempt gets this long to answer.
const MIN_PROBE_TIME: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_is_bounded() {
        let r = Retry::for_about(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(r.attempts, 6);
        let r = Retry::for_about(Duration::from_secs(3), Duration::from_secs(2));
        assert_eq!(r.attempts, 2, "a wait longer than one interval retries");
        let r = Retry::for_about(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(r.attempts, 1);
        let r = Retry::for_about(Duration::ZERO, Duration::from_secs(2));
        assert_eq!(r.attempts, 1);
        let r = Retry::for_about(Duration::MAX, Duration::from_secs(2));
        assert_eq!(r.attempts, u32::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_gives_up_after_the_attempts() {
        let mut calls = 0;
        let err = wait_until(
            "Elasticsearch",
            "http://x",
            Retry {
                attempts: 3,
                interval: Duration::from_secs(1),
            },
            || {
                calls += 1;
                async { Ok(Probe::NotYet("starting".into())) }
            },
        )
        .await
        .unwrap_err();
        assert_eq!(calls, 3);
        assert!(err.to_string().contains("after 3 attempts"), "{err}");
        assert!(err.to_string().contains("starting"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_cannot_stretch_the_wait() {
        let started = tokio::time::Instant::now();
        let err = wait_until(
            "Kibana",
            "http://x",
            Retry {
                attempts: 100,
                interval: Duration::from_secs(2),
            },
            std::future::pending::<Result<Probe, ElasticError>>,
        )
        .await
        .unwrap_err();
        assert!(
            started.elapsed() <= Duration::from_secs(201),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("no answer within"), "{err}");
    }
}
