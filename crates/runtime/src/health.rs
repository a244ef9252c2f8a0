//! The `grpc.health.v1.Health` service exactly as the gRPC health-checking
//! spec says. [`HealthState`] owns the statuses and notifies watchers;
//! [`HealthService`] is the thin gRPC adapter over it.
//!
//! Spec points that tonic-health does differently: `Watch` for a name not
//! known yet answers `SERVICE_UNKNOWN` and keeps the stream open, then sends
//! the status once the name appears; removing a name sends `SERVICE_UNKNOWN`
//! and keeps the stream open too; `List` is served.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use meshwatch_proto::health::v1 as pb;
use pb::health_check_response::ServingStatus as PbStatus;

/// Changes a slow watcher may fall behind by before it is resynchronised
/// with the current status (it then sees the latest status, not each step).
const WATCH_BACKLOG: usize = 64;
/// Messages buffered per Watch stream towards the client.
const WATCH_STREAM_BUFFER: usize = 16;
/// `List` answers RESOURCE_EXHAUSTED past this many names, as the spec allows.
pub const LIST_LIMIT: usize = 1000;
/// Open `Watch` streams one server holds at most; one more is answered
/// RESOURCE_EXHAUSTED (each holds a task and a channel until its client leaves).
pub const DEFAULT_MAX_WATCHES: usize = 1000;

/// A known status. An unknown service is simply absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServingStatus {
    Serving,
    NotServing,
}

impl From<ServingStatus> for PbStatus {
    fn from(s: ServingStatus) -> Self {
        match s {
            ServingStatus::Serving => PbStatus::Serving,
            ServingStatus::NotServing => PbStatus::NotServing,
        }
    }
}

fn to_pb(status: Option<ServingStatus>) -> PbStatus {
    status.map_or(PbStatus::ServiceUnknown, PbStatus::from)
}

struct Slot {
    status: Option<ServingStatus>,
    changes: broadcast::Sender<Option<ServingStatus>>,
}

impl Slot {
    fn new() -> Self {
        Self {
            status: None,
            changes: broadcast::channel(WATCH_BACKLOG).0,
        }
    }
}

/// The statuses of named services. Cheap to clone; every clone is the same state.
/// A slot exists for every known name and for every unknown name being watched.
#[derive(Clone)]
pub struct HealthState {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    /// Cancelled when the server drains: open Watch streams deliver what is
    /// pending (the NOT_SERVING of the drain) and end, so they do not hold
    /// the shutdown for the whole grace period.
    closing: tokio_util::sync::CancellationToken,
    /// One permit per open Watch stream, held by its task.
    watches: Arc<Semaphore>,
    max_watches: usize,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::with_max_watches(DEFAULT_MAX_WATCHES)
    }
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.list()).finish()
    }
}

impl HealthState {
    pub fn new() -> Self {
        Self::default()
    }

    /// A state whose `Watch` serves at most `max` streams at once.
    pub fn with_max_watches(max: usize) -> Self {
        Self {
            slots: Arc::default(),
            closing: tokio_util::sync::CancellationToken::new(),
            watches: Arc::new(Semaphore::new(max)),
            max_watches: max,
        }
    }

    /// Watch streams open right now.
    pub fn open_watches(&self) -> usize {
        self.max_watches - self.watches.available_permits()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the lock cannot leave a slot half-written.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the status of `name`, making it known. Watchers are notified only
    /// when the status actually changes.
    pub fn set(&self, name: &str, status: ServingStatus) {
        let mut slots = self.lock();
        let slot = slots.entry(name.to_owned()).or_insert_with(Slot::new);
        if slot.status != Some(status) {
            slot.status = Some(status);
            // No receiver is fine: nobody watches this name right now.
            let _ = slot.changes.send(Some(status));
        }
    }

    /// Forgets `name`. Its watchers see SERVICE_UNKNOWN and stay subscribed.
    pub fn remove(&self, name: &str) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(name) {
            if slot.status.take().is_some() {
                let _ = slot.changes.send(None);
            }
            if slot.changes.receiver_count() == 0 {
                slots.remove(name);
            }
        }
    }

    /// Ends every open Watch stream after it has delivered the changes already
    /// made (call after setting NOT_SERVING on shutdown). New Watch calls end
    /// right after their first message.
    pub fn close_watches(&self) {
        self.closing.cancel();
    }

    /// The status of `name`, or `None` when it is not known.
    pub fn get(&self, name: &str) -> Option<ServingStatus> {
        self.lock().get(name).and_then(|s| s.status)
    }

    /// Every known name with its status.
    pub fn list(&self) -> BTreeMap<String, ServingStatus> {
        self.lock()
            .iter()
            .filter_map(|(name, slot)| slot.status.map(|s| (name.clone(), s)))
            .collect()
    }

    /// The current status and a receiver of every later change of `name`.
    fn subscribe(
        &self,
        name: &str,
    ) -> (
        Option<ServingStatus>,
        broadcast::Receiver<Option<ServingStatus>>,
    ) {
        let mut slots = self.lock();
        let slot = slots.entry(name.to_owned()).or_insert_with(Slot::new);
        (slot.status, slot.changes.subscribe())
    }

    /// Drops the slot of an unknown name once nobody watches it any more.
    fn release(&self, name: &str) {
        let mut slots = self.lock();
        if slots
            .get(name)
            .is_some_and(|s| s.status.is_none() && s.changes.receiver_count() == 0)
        {
            slots.remove(name);
        }
    }
}

/// The gRPC adapter: `grpc.health.v1.Health` over a [`HealthState`].
#[derive(Clone, Debug)]
pub struct HealthService {
    state: HealthState,
}

impl HealthService {
    pub fn new(state: HealthState) -> Self {
        Self { state }
    }
}

/// The tonic server for `grpc.health.v1.Health` over `state`.
pub fn health_server(state: HealthState) -> pb::health_server::HealthServer<HealthService> {
    pb::health_server::HealthServer::new(HealthService::new(state))
}

fn response(status: PbStatus) -> pb::HealthCheckResponse {
    pb::HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl pb::health_server::Health for HealthService {
    async fn check(
        &self,
        request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let name = request.into_inner().service;
        match self.state.get(&name) {
            Some(status) => Ok(Response::new(response(status.into()))),
            None => Err(Status::not_found(format!(
                "unknown service name {name:?}: no status has been reported for it"
            ))),
        }
    }

    async fn list(
        &self,
        _request: Request<pb::HealthListRequest>,
    ) -> Result<Response<pb::HealthListResponse>, Status> {
        let all = self.state.list();
        if all.len() > LIST_LIMIT {
            return Err(Status::resource_exhausted(format!(
                "{} services exceed the List limit of {LIST_LIMIT}; use Check or Watch per service",
                all.len()
            )));
        }
        let statuses = all
            .into_iter()
            .map(|(name, status)| (name, response(status.into())))
            .collect();
        Ok(Response::new(pb::HealthListResponse { statuses }))
    }

    type WatchStream = ReceiverStream<Result<pb::HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let Ok(permit) = Arc::clone(&self.state.watches).try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "this server already serves {} Watch streams, its limit; use Check, or retry later",
                self.state.max_watches
            )));
        };
        let name = request.into_inner().service;
        let (current, mut changes) = self.state.subscribe(&name);
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER);
        let state = self.state.clone();
        let closing = self.state.closing.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut last = to_pb(current);
            if tx.send(Ok(response(last))).await.is_ok() {
                loop {
                    let received = tokio::select! {
                        // Changes made before the close are delivered first.
                        biased;
                        r = changes.recv() => r,
                        () = closing.cancelled() => break,
                        // The client hung up (tonic drops the stream): end
                        // now, not at the next change, which may never come.
                        () = tx.closed() => break,
                    };
                    let next = match received {
                        Ok(status) => to_pb(status),
                        // Fell behind: resynchronise with the present.
                        Err(broadcast::error::RecvError::Lagged(_)) => to_pb(state.get(&name)),
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if next == last {
                        continue;
                    }
                    last = next;
                    // A failed send means the client has gone.
                    if tx.send(Ok(response(next))).await.is_err() {
                        break;
                    }
                }
            }
            drop(changes);
            state.release(&name);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests;
