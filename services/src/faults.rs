//! Fault injection (latency, error rate, decline rate, hang): settings set at
//! start by flag, changed at run time through `meshwatch.admin.v1.FaultService`
//! served on the service's admin listener (`--admin-listen`, loopback only),
//! never on its public port.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use meshwatch_proto::admin::v1 as pb;
use tonic::{Request, Response, Status};

use crate::deadline::Deadline;

/// Why fault settings were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("{field} must be within [0, 1], got {value}")]
    Rate { field: &'static str, value: f64 },
}

/// The faults in force for one service.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultSettings {
    /// Added before each RPC is handled.
    pub latency: Duration,
    /// Probability that an RPC fails with UNAVAILABLE.
    pub error_rate: f64,
    /// Probability that a charge is declined (payment only).
    pub decline_rate: f64,
    /// RPCs answer only when the caller's deadline has passed.
    pub hang: bool,
}

impl FaultSettings {
    pub fn validate(&self) -> Result<(), FaultError> {
        for (field, value) in [
            ("error_rate", self.error_rate),
            ("decline_rate", self.decline_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultError::Rate { field, value });
            }
        }
        Ok(())
    }
}

/// A change to some of the settings; `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultUpdate {
    pub latency: Option<Duration>,
    pub error_rate: Option<f64>,
    pub decline_rate: Option<f64>,
    pub hang: Option<bool>,
}

/// An injected failure for the current RPC.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Injected {
    #[error("injected fault in {service} (error_rate {rate})")]
    Error { service: String, rate: f64 },
    #[error("injected hang in {service}: no answer before the deadline")]
    Hang { service: String },
    #[error("injected latency in {service} ({latency:?}) outlasted the deadline")]
    TooSlow { service: String, latency: Duration },
}

impl From<Injected> for Status {
    fn from(e: Injected) -> Self {
        match e {
            Injected::Error { .. } => Status::unavailable(e.to_string()),
            Injected::Hang { .. } | Injected::TooSlow { .. } => {
                Status::deadline_exceeded(e.to_string())
            }
        }
    }
}

/// Shared handle on one service's fault settings.
#[derive(Debug, Clone)]
pub struct Faults {
    service: String,
    settings: Arc<RwLock<FaultSettings>>,
}

impl Faults {
    pub fn new(service: &str, settings: FaultSettings) -> Result<Self, FaultError> {
        settings.validate()?;
        Ok(Self {
            service: service.to_owned(),
            settings: Arc::new(RwLock::new(settings)),
        })
    }

    /// No faults.
    pub fn none(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            settings: Arc::new(RwLock::new(FaultSettings::default())),
        }
    }

    pub fn get(&self) -> FaultSettings {
        *self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `update` as a whole or not at all.
    pub fn update(&self, update: FaultUpdate) -> Result<FaultSettings, FaultError> {
        let mut guard = self.settings.write().unwrap_or_else(|e| e.into_inner());
        let mut next = *guard;
        if let Some(v) = update.latency {
            next.latency = v;
        }
        if let Some(v) = update.error_rate {
            next.error_rate = v;
        }
        if let Some(v) = update.decline_rate {
            next.decline_rate = v;
        }
        if let Some(v) = update.hang {
            next.hang = v;
        }
        next.validate()?;
        *guard = next;
        Ok(next)
    }

    /// Runs the faults in force before an RPC is handled: latency (bounded by
    /// the deadline), hang (until the deadline), then the error roll.
    pub async fn before_rpc(&self, deadline: Deadline) -> Result<(), Injected> {
        let settings = self.get();
        if settings.hang {
            tokio::time::sleep_until(deadline.instant()).await;
            return Err(Injected::Hang {
                service: self.service.clone(),
            });
        }
        if !settings.latency.is_zero() {
            if settings.latency >= deadline.remaining() {
                tokio::time::sleep_until(deadline.instant()).await;
                return Err(Injected::TooSlow {
                    service: self.service.clone(),
                    latency: settings.latency,
                });
            }
            tokio::time::sleep(settings.latency).await;
        }
        if settings.error_rate > 0.0 && rand::random::<f64>() < settings.error_rate {
            return Err(Injected::Error {
                service: self.service.clone(),
                rate: settings.error_rate,
            });
        }
        Ok(())
    }

    /// True when the decline rate says this charge is declined.
    pub fn roll_decline(&self) -> bool {
        let rate = self.get().decline_rate;
        rate > 0.0 && rand::random::<f64>() < rate
    }
}

/// `meshwatch.admin.v1.FaultService` over [`Faults`].
#[derive(Debug, Clone)]
pub struct FaultAdmin {
    faults: Faults,
}

impl FaultAdmin {
    pub fn new(faults: Faults) -> Self {
        Self { faults }
    }

    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> pb::fault_service_server::FaultServiceServer<Self> {
        pb::fault_service_server::FaultServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
    }
}

impl From<FaultSettings> for pb::Faults {
    fn from(s: FaultSettings) -> Self {
        pb::Faults {
            latency_ms: u32::try_from(s.latency.as_millis()).unwrap_or(u32::MAX),
            error_rate: s.error_rate,
            decline_rate: s.decline_rate,
            hang: s.hang,
        }
    }
}

impl From<pb::SetFaultsRequest> for FaultUpdate {
    fn from(r: pb::SetFaultsRequest) -> Self {
        FaultUpdate {
            latency: r.latency_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            error_rate: r.error_rate,
            decline_rate: r.decline_rate,
            hang: r.hang,
        }
    }
}

#[tonic::async_trait]
impl pb::fault_service_server::FaultService for FaultAdmin {
    async fn get_faults(
        &self,
        _request: Request<pb::GetFaultsRequest>,
    ) -> Result<Response<pb::Faults>, Status> {
        Ok(Response::new(self.faults.get().into()))
    }

    async fn set_faults(
        &self,
        request: Request<pb::SetFaultsRequest>,
    ) -> Result<Response<pb::Faults>, Status> {
        let update = FaultUpdate::from(request.into_inner());
        let now = self
            .faults
            .update(update)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::warn!(
            fault.latency_ms = now.latency.as_millis() as u64,
            fault.error_rate = now.error_rate,
            fault.decline_rate = now.decline_rate,
            fault.hang = now.hang,
            "fault injection changed"
        );
        Ok(Response::new(now.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_is_validated_as_a_whole() {
        let f = Faults::none("payment");
        let e = f
            .update(FaultUpdate {
                latency: Some(Duration::from_millis(5)),
                error_rate: Some(1.5),
                ..FaultUpdate::default()
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "error_rate must be within [0, 1], got 1.5");
        assert_eq!(f.get(), FaultSettings::default(), "nothing applied");
        let now = f
            .update(FaultUpdate {
                decline_rate: Some(1.0),
                ..FaultUpdate::default()
            })
            .unwrap();
        assert_eq!(now.decline_rate, 1.0);
        assert!(f.roll_decline());
    }

    #[tokio::test(start_paused = true)]
    async fn latency_hang_and_errors() {
        let f = Faults::none("inventory");
        let deadline = Deadline::after(Duration::from_secs(1));
        assert_eq!(f.before_rpc(deadline).await, Ok(()));

        f.update(FaultUpdate {
            latency: Some(Duration::from_millis(300)),
            ..FaultUpdate::default()
        })
        .unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(f.before_rpc(deadline).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        f.update(FaultUpdate {
            latency: Some(Duration::from_secs(5)),
            ..FaultUpdate::default()
        })
        .unwrap();
        let r = f.before_rpc(Deadline::after(Duration::from_secs(1))).await;
        assert!(matches!(r, Err(Injected::TooSlow { .. })), "{r:?}");

        f.update(FaultUpdate {
            latency: Some(Duration::ZERO),
            hang: Some(true),
            ..FaultUpdate::default()
        })
        .unwrap();
        let start = tokio::time::Instant::now();
        let r = f.before_rpc(Deadline::after(Duration::from_secs(2))).await;
        assert!(matches!(r, Err(Injected::Hang { .. })));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let status = Status::from(r.unwrap_err());
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);

        f.update(FaultUpdate {
            hang: Some(false),
            error_rate: Some(1.0),
            ..FaultUpdate::default()
        })
        .unwrap();
        let status = Status::from(f.before_rpc(deadline).await.unwrap_err());
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("inventory"), "{status:?}");
    }
}
