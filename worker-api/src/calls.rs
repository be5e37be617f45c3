//! Calls to the supervisor and their answers: each HTTP request that needs the supervisor
//! gets an id, sends an [`ApiCall`] up the link, and reads the [`ApiEvent`]s that come back
//! under that id. A [`Call`] dropped before its answer is complete (the HTTP client went
//! away) tells the supervisor to cancel, so a disconnected client stops its generation.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use mate_protocol::{ApiCall, ApiEvent};
use tokio::sync::mpsc;

/// Where calls go: the supervisor link in the worker, a script in tests.
pub trait Uplink: Send + Sync + 'static {
    /// Sends the call; `false` when the supervisor is gone.
    fn send(&self, call: ApiCall) -> bool;
}

impl Uplink for mate_protocol::worker::LinkSender {
    fn send(&self, call: ApiCall) -> bool {
        mate_protocol::worker::LinkSender::send(self, &mate_protocol::FromWorker::Api(call)).is_ok()
    }
}

/// The calls waiting for answers.
pub struct Calls {
    uplink: Box<dyn Uplink>,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<ApiEvent>>>,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("pending", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Calls {
    pub fn new(uplink: impl Uplink) -> Arc<Calls> {
        Arc::new(Calls {
            uplink: Box::new(uplink),
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<ApiEvent>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the call `make(id)` builds; `None` when the supervisor is gone.
    pub fn start(self: &Arc<Self>, make: impl FnOnce(u64) -> ApiCall) -> Option<Call> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let call = make(id);
        let generates = matches!(call, ApiCall::Generate { .. });
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending().insert(id, tx);
        if !self.uplink.send(call) {
            self.pending().remove(&id);
            return None;
        }
        Some(Call {
            id,
            rx,
            calls: Arc::clone(self),
            open: generates,
        })
    }

    /// Hands an answer to the call it belongs to (a call that ended already drops it).
    pub fn deliver(&self, id: u64, event: ApiEvent) {
        let mut pending = self.pending();
        let last = is_last(&event);
        if let Some(tx) = pending.get(&id) {
            if tx.send(event).is_err() || last {
                pending.remove(&id);
            }
        }
    }

    /// The supervisor is gone: every call ends without its answer.
    pub fn close_all(&self) {
        self.pending().clear();
    }

    /// Calls waiting for (the rest of) their answer.
    pub fn in_flight(&self) -> usize {
        self.pending().len()
    }
}

/// The events after which a call has nothing more to hear.
fn is_last(event: &ApiEvent) -> bool {
    !matches!(
        event,
        ApiEvent::Queued { .. } | ApiEvent::Chunk { .. } | ApiEvent::Resumed { .. }
    )
}

/// One call in flight.
#[derive(Debug)]
pub struct Call {
    id: u64,
    rx: mpsc::UnboundedReceiver<ApiEvent>,
    calls: Arc<Calls>,
    /// A generation that has not ended: dropping the call cancels it.
    open: bool,
}

impl Call {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next answer; `None` when the supervisor went away before the last one.
    pub async fn next(&mut self) -> Option<ApiEvent> {
        let event = self.rx.recv().await;
        if event.as_ref().is_none_or(is_last) {
            self.open = false;
        }
        event
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.calls.pending().remove(&self.id);
        if self.open {
            self.calls.uplink.send(ApiCall::Cancel { id: self.id });
        }
    }
}
