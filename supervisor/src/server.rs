//! The supervisor's endpoint: accepting connections, checking who they are, and turning what
//! they say into [`Event`]s for the loop.
//!
//! Every connection is checked three times before it can send anything that matters: the
//! peer's user id must be ours (Linux/BSD, from the socket itself; the socket file is 0600 in
//! a 0700 directory anyway), the `Hello` must arrive within [`HELLO_DEADLINE`] with the right
//! magic and version, and its token must be the control token (clients) or the one-time token
//! of the worker the supervisor is waiting for (also checked against the spawned pid).
//!
//! A flood of connections must not keep anyone out who matters. A process the supervisor
//! spawned (known by its pid) is served at once, outside every limit. Everyone else waits
//! for its hello in a pool of [`MAX_PENDING`] where a newcomer closes the oldest, so silent
//! connections only evict each other while a real client, which says hello at once, gets
//! through. At most [`MAX_CONNECTIONS`] clients are served at once; one more is told
//! [`Rejection::Busy`], which `mate ctl` reports as "busy", not as "not running". Whatever a
//! peer sends, the worst outcome is that its own connection is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use mate_protocol::{
    async_io,
    handshake::HELLO_DEADLINE,
    peer::{self, User},
    AuthToken, FromWorker, Hello, Limit, Rejection, Reply, Request, Role, ToWorker, WorkerKind,
};
use tokio::{
    io::BufReader,
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use crate::event::Event;

/// Clients served at once (workers are not counted: they never compete with clients).
pub const MAX_CONNECTIONS: usize = 128;
/// Connections waiting for their `Hello` at once; a newer one closes the oldest.
pub const MAX_PENDING: usize = 64;
/// Replies queued for one client; a client that falls further behind is dropped.
pub const CLIENT_QUEUE: usize = 4096;

/// Who may say hello, with which token. Worker tokens are single-use.
#[derive(Debug)]
pub struct Auth {
    control: AuthToken,
    workers: Mutex<HashMap<WorkerKind, Expected>>,
}

#[derive(Debug)]
struct Expected {
    token: AuthToken,
    generation: u64,
    pid: Option<u32>,
}

/// Who a verified peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Client,
    Worker { kind: WorkerKind, generation: u64 },
}

impl Auth {
    pub fn new(control: AuthToken) -> Auth {
        Auth {
            control,
            workers: Mutex::new(HashMap::new()),
        }
    }

    pub fn control(&self) -> &AuthToken {
        &self.control
    }

    /// Checks a hello; `peer_pid` is the connecting process as the kernel reports it.
    pub fn verify(&self, hello: &Hello, peer_pid: Option<u32>) -> Result<Admitted, Rejection> {
        let kind = match hello.role {
            Role::Ctl | Role::Tui if hello.token.matches(&self.control) => {
                return Ok(Admitted::Client)
            }
            Role::Ctl | Role::Tui => return Err(Rejection::BadToken),
            Role::LlmWorker => WorkerKind::Llm,
            Role::BridgeWorker => WorkerKind::Bridge,
            Role::ApiWorker => WorkerKind::Api,
            role @ Role::Supervisor => return Err(Rejection::WrongRole { role }),
        };
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        match workers.get(&kind) {
            Some(e)
                if e.token.matches(&hello.token)
                    && (e.pid.is_none() || peer_pid.is_none() || e.pid == peer_pid) =>
            {
                let generation = e.generation;
                workers.remove(&kind);
                Ok(Admitted::Worker { kind, generation })
            }
            _ => Err(Rejection::BadToken),
        }
    }

    /// Arms the one-time token of the next `kind` process.
    pub fn expect_worker(&self, kind: WorkerKind, token: AuthToken, generation: u64) {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                kind,
                Expected {
                    token,
                    generation,
                    pid: None,
                },
            );
    }

    /// Binds the armed token to the process that was spawned with it.
    pub fn spawned(&self, kind: WorkerKind, generation: u64, pid: Option<u32>) {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = workers
            .get_mut(&kind)
            .filter(|e| e.generation == generation)
        {
            e.pid = pid;
        }
    }

    /// True when `pid` is a worker process the supervisor spawned and is waiting for.
    pub fn is_spawned(&self, pid: u32) -> bool {
        lock(&self.workers).values().any(|e| e.pid == Some(pid))
    }

    /// The process is gone: its token must not admit anyone.
    pub fn forget(&self, kind: WorkerKind, generation: u64) {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if workers
            .get(&kind)
            .is_some_and(|e| e.generation == generation)
        {
            workers.remove(&kind);
        }
    }
}

pub async fn accept_loop(listener: Listener, auth: Arc<Auth>, events: mpsc::Sender<Event>) {
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let pending = Arc::new(Mutex::new(Pending::default()));
    let ours = peer::current_user();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let (foreign, pid) = peer(&stream, ours.as_ref());
                // A process the supervisor spawned with a worker token skips the queue: no
                // number of connections that never say hello can keep a worker out.
                let spawned = pid.is_some_and(|pid| auth.is_spawned(pid));
                let evicted = if spawned {
                    None
                } else {
                    let (id, evicted) = lock(&pending).admit();
                    Some((id, evicted))
                };
                let conn = Conn {
                    foreign,
                    pid,
                    auth: auth.clone(),
                    events: events.clone(),
                    clients: clients.clone(),
                    pending: pending.clone(),
                };
                tokio::spawn(conn.serve(stream, evicted));
                // Lets the new connection read a hello that is already there before the next
                // accept can evict it (a spawned task runs next on this thread).
                tokio::task::yield_now().await;
            }
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connections that have not said hello yet, oldest first. When [`MAX_PENDING`] wait, the
/// oldest is closed to make room: a peer that says hello at once (every mate client does,
/// within a millisecond) gets through a flood of silent connections, which only ever evict
/// each other.
#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    waiting: std::collections::BTreeMap<u64, oneshot::Sender<()>>,
}

impl Pending {
    /// Registers a new connection; the receiver fires (or closes) when it is evicted.
    fn admit(&mut self) -> (u64, oneshot::Receiver<()>) {
        if self.waiting.len() >= MAX_PENDING {
            // Dropping the sender closes the oldest's receiver: it gives up.
            self.waiting.pop_first();
        }
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(id, tx);
        (id, rx)
    }

    fn done(&mut self, id: u64) {
        self.waiting.remove(&id);
    }
}

/// The peer's pid, and its user when that is not ours (where the platform can tell).
fn peer(stream: &Stream, ours: Option<&User>) -> (Option<String>, Option<u32>) {
    match stream.peer_creds() {
        Ok(creds) => {
            let foreign = ours.and_then(|ours| peer::check_same_user(&creds, ours).err());
            // pid_t (i32) on Unix, already u32 on Windows.
            #[allow(clippy::unnecessary_cast)]
            let pid = creds.pid().map(|p| p as u32);
            (foreign, pid)
        }
        Err(_) => (None, None),
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    /// The peer's user, when it is not this one.
    foreign: Option<String>,
    pid: Option<u32>,
    auth: Arc<Auth>,
    events: mpsc::Sender<Event>,
    /// Client slots: at most [`MAX_CONNECTIONS`] clients are served at once; workers never
    /// take one.
    clients: Arc<tokio::sync::Semaphore>,
    pending: Arc<Mutex<Pending>>,
}

impl Conn {
    /// Serves one connection; `evicted` (absent for a spawned worker) ends the wait for its
    /// hello when newer connections need the room.
    async fn serve(self, stream: Stream, evicted: Option<(u64, oneshot::Receiver<()>)>) {
        let Conn {
            foreign,
            pid,
            auth,
            events,
            clients,
            pending,
        } = self;
        if let Some(theirs) = foreign {
            let ours = peer::current_user()
                .map(|u| u.to_string())
                .unwrap_or_default();
            let _ = events.try_send(Event::Rejected(format!(
                "connection from {theirs} (mate only talks to its own user, {ours})"
            )));
            if let Some((id, _)) = evicted {
                lock(&pending).done(id);
            }
            return;
        }
        let stream = Arc::new(stream);
        let mut admitted = None;
        let mut slot = None;
        let mut io = &*stream;
        let handshake = async_io::server_handshake(&mut io, HELLO_DEADLINE, |h| {
            let who = auth.verify(h, pid)?;
            if who == Admitted::Client {
                let Ok(permit) = clients.clone().try_acquire_owned() else {
                    return Err(Rejection::Busy {
                        limit: MAX_CONNECTIONS as u32,
                    });
                };
                slot = Some(permit);
            }
            admitted = Some(who);
            Ok(())
        });
        let hello = match evicted {
            Some((id, evicted)) => {
                let outcome = tokio::select! {
                    hello = handshake => Some(hello),
                    _ = evicted => None,
                };
                lock(&pending).done(id);
                match outcome {
                    Some(hello) => hello,
                    None => {
                        let _ = events.try_send(Event::Rejected(
                            "too many connections waiting to say hello; the oldest was closed"
                                .into(),
                        ));
                        return;
                    }
                }
            }
            None => handshake.await,
        };
        let (hello, admitted) = match (hello, admitted) {
            (Ok(hello), Some(admitted)) => (hello, admitted),
            // Connected and left without a word: a liveness probe (`mate up` does one).
            (Err(e), _) if e.is_disconnect() => return,
            (Err(e), _) => {
                let _ = events.try_send(Event::Rejected(format!("handshake failed: {e}")));
                return;
            }
            (Ok(_), None) => return,
        };
        debug!(role = %hello.role, pid = hello.pid, "connected");
        let result = match admitted {
            Admitted::Worker { kind, generation } => {
                serve_worker(kind, generation, stream, events).await
            }
            Admitted::Client => {
                if hello.role == Role::Tui {
                    let _ = events
                        .send(Event::ClientAttached {
                            role: hello.role,
                            pid: hello.pid,
                        })
                        .await;
                }
                serve_client(stream, hello.pid, events).await
            }
        };
        drop(slot);
        if let Err(e) = result {
            if !e.is_disconnect() {
                warn!(role = %hello.role, pid = hello.pid, error = %e, "dropping connection");
            }
        }
    }
}

async fn serve_worker(
    kind: WorkerKind,
    generation: u64,
    stream: Arc<Stream>,
    events: mpsc::Sender<Event>,
) -> Result<(), mate_protocol::Error> {
    let (tx, mut rx) = mpsc::channel::<ToWorker>(256);
    let writer = stream.clone();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if async_io::write_frame(&mut &*writer, &msg, Limit::Data)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let connected = Event::WorkerConnected {
        kind,
        generation,
        tx,
    };
    if events.send(connected).await.is_err() {
        return Ok(());
    }
    let mut reader = BufReader::new(&*stream);
    loop {
        let msg: FromWorker = async_io::read_frame(&mut reader, Limit::Data).await?;
        let event = Event::FromWorker {
            kind,
            generation,
            msg,
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
    }
}

async fn serve_client(
    stream: Arc<Stream>,
    pid: u32,
    events: mpsc::Sender<Event>,
) -> Result<(), mate_protocol::Error> {
    let mut reader = BufReader::new(&*stream);
    loop {
        let request: Request = async_io::read_frame(&mut reader, Limit::Control).await?;
        let (tx, mut rx) = mpsc::channel(CLIENT_QUEUE);
        let event = Event::Request {
            request,
            reply: tx,
            pid,
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
        let mut complete = false;
        while let Some(reply) = rx.recv().await {
            complete = matches!(
                reply,
                Reply::Ok | Reply::Error { .. } | Reply::Status(_) | Reply::ChatDone { .. }
            );
            async_io::write_frame(&mut &*stream, &reply, Limit::Data).await?;
        }
        if !complete {
            // The supervisor let go of a stream midway (the client fell too far behind):
            // closing tells the client, which would otherwise wait forever.
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (Auth, AuthToken) {
        let control = AuthToken::generate().expect("token");
        (Auth::new(control.clone()), control)
    }

    #[test]
    fn clients_need_the_control_token() {
        let (auth, control) = auth();
        assert_eq!(
            auth.verify(&Hello::new(Role::Ctl, control.clone()), None),
            Ok(Admitted::Client)
        );
        assert_eq!(
            auth.verify(&Hello::new(Role::Tui, control), None),
            Ok(Admitted::Client)
        );
        let other = AuthToken::generate().expect("token");
        assert_eq!(
            auth.verify(&Hello::new(Role::Ctl, other), None),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn worker_tokens_are_single_use_per_kind_and_bound_to_the_spawned_pid() {
        let (auth, control) = auth();
        let token = AuthToken::generate().expect("token");
        auth.expect_worker(WorkerKind::Llm, token.clone(), 7);
        auth.spawned(WorkerKind::Llm, 7, Some(1234));
        // Not valid for the other worker kind, nor is the control token valid for a worker.
        let hello = |role, token: &AuthToken| Hello::new(role, token.clone());
        assert_eq!(
            auth.verify(&hello(Role::BridgeWorker, &token), Some(1234)),
            Err(Rejection::BadToken)
        );
        assert_eq!(
            auth.verify(&hello(Role::LlmWorker, &control), Some(1234)),
            Err(Rejection::BadToken)
        );
        assert_eq!(
            auth.verify(&hello(Role::LlmWorker, &token), Some(999)),
            Err(Rejection::BadToken),
            "another process with a stolen token is refused"
        );
        assert_eq!(
            auth.verify(&hello(Role::LlmWorker, &token), Some(1234)),
            Ok(Admitted::Worker {
                kind: WorkerKind::Llm,
                generation: 7
            })
        );
        assert_eq!(
            auth.verify(&hello(Role::LlmWorker, &token), Some(1234)),
            Err(Rejection::BadToken),
            "a replayed worker token is refused"
        );
    }

    #[test]
    fn a_dead_workers_token_admits_nobody() {
        let (auth, _) = auth();
        let token = AuthToken::generate().expect("token");
        auth.expect_worker(WorkerKind::Bridge, token.clone(), 3);
        auth.forget(WorkerKind::Bridge, 3);
        assert_eq!(
            auth.verify(&Hello::new(Role::BridgeWorker, token), None),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn a_newcomer_evicts_the_oldest_silent_connection_and_finished_ones_free_their_place() {
        let mut pending = Pending::default();
        let mut waiting: Vec<_> = (0..MAX_PENDING).map(|_| pending.admit()).collect();
        // One said hello in time: its place is free, so nobody is evicted for the next one.
        let (done, _) = waiting.remove(10);
        pending.done(done);
        let _next = pending.admit();
        assert!(waiting.iter_mut().all(|(_, rx)| rx
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)));
        // Full again: the oldest gives way.
        let _newest = pending.admit();
        let (_, oldest) = &mut waiting[0];
        assert_eq!(oldest.try_recv(), Err(oneshot::error::TryRecvError::Closed));
        let (_, second) = &mut waiting[1];
        assert_eq!(second.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        assert_eq!(pending.waiting.len(), MAX_PENDING);
    }

    #[test]
    fn a_spawned_worker_is_known_by_its_pid_until_it_has_said_hello() {
        let (auth, _) = auth();
        let token = AuthToken::generate().expect("token");
        auth.expect_worker(WorkerKind::Llm, token.clone(), 1);
        assert!(
            !auth.is_spawned(4321),
            "not before the spawn reported its pid"
        );
        auth.spawned(WorkerKind::Llm, 1, Some(4321));
        assert!(auth.is_spawned(4321));
        assert!(!auth.is_spawned(4322));
        let hello = Hello::new(Role::LlmWorker, token);
        assert!(auth.verify(&hello, Some(4321)).is_ok());
        assert!(
            !auth.is_spawned(4321),
            "its place in the queue is used once"
        );
    }

    #[test]
    fn nobody_may_pose_as_a_supervisor() {
        let (auth, control) = auth();
        assert_eq!(
            auth.verify(&Hello::new(Role::Supervisor, control), None),
            Err(Rejection::WrongRole {
                role: Role::Supervisor
            })
        );
    }
}
