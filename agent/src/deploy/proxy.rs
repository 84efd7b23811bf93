//! The node-local TCP proxy that owns a service's port: clients connect to
//! the proxy, and the proxy connects each of them to the service's current
//! backend (a release listening on a port of its own) and copies bytes both
//! ways. It reads nothing of what it carries; any TCP protocol passes.
//!
//! Blue-green on a plain host rests on it: green starts beside blue on
//! another port, and once green is healthy [`ProxyHandle::switch`] sends
//! every *new* connection to green from that instant. Connections already
//! carried stay on blue and finish as they would have (a switch never cuts
//! one); the [`Switched`] it returns tells the caller when blue has drained
//! ([`Switched::drain`], with a deadline), so blue is stopped only once
//! nobody talks to it, and cuts what is left after the deadline
//! ([`Switched::close_old`]).
//!
//! How the bookkeeping stays exact: each backend the proxy has pointed at
//! is a *generation* with its own count of connections. A connection is
//! counted into the current generation under the same lock that a switch
//! takes to replace it, before its task is spawned, so once `switch`
//! returns no connection can still join the old generation, and a count of
//! zero means drained for good. The count is a `watch` channel, so waiting
//! for zero needs no polling.
//!
//! Limits, each named: at most [`MAX_CONNECTIONS`] client connections at
//! once (each holds two sockets; one more is closed as soon as it is
//! accepted, and counted), and [`CONNECT_TIMEOUT`] to reach a backend. A
//! backend that refuses or does not answer in time gets the client's
//! connection closed, never left hanging, and counts as a failed connect.
//! The counters ([`ProxyStats`]) are what `drover services` will show.
//!
//! Half-close is carried through (`copy_bidirectional`): a client that
//! shuts down its writing side still reads the whole answer.
//!
//! # A process of its own
//!
//! A deployed service's proxy does not run in the agent: it runs in
//! `drover-agent --proxy STATE_DIR` ([`MODE_ARG`], `proxy/daemon.rs`), one
//! process per service, started detached exactly as a supervisor is
//! (`setsid`, forked twice, a cleared environment, a lock file, a log of its
//! own; see [`crate::deploy::supervise`]), so that the service's port
//! answers while the agent is down (a crash, an upgrade, a restart). The
//! step watcher never hears of it and the leftovers cleanup cannot take it
//! for a step (no `DROVER_WORKSPACE` in its environment).
//!
//! ```text
//! {services_dir}/{service}/proxy/   0700
//!   desired.json   the agent's wish: listen, backend, generation, cut_before, stop
//!   state.json     the proxy's: pid + start time, listen, backend, the generation
//!                  applied, active connections per backend, the counters, an error
//!   proxy.lock     flock'd by the live proxy: one per state dir
//!   proxy.log      its own log lines
//! ```
//!
//! The control protocol ([`process`]): the agent writes `desired.json`
//! whole (temporary file, rename) with a higher `generation` and sends
//! SIGHUP; the proxy reads it, switches (or cuts the connections of older
//! generations, or stops), and writes `state.json` whole with the
//! generation applied; [`ServiceProxy::switch`] waits for that. The
//! counts in `state.json` are refreshed every [`process::STATE_EVERY`]
//! when they moved, and [`ServiceProxy::drain`] polls them until the old
//! backend carries nothing or its deadline passes. SIGTERM (after a
//! desired `stop`) closes the port and every connection, and the proxy
//! exits; a proxy told to stop is not started again by a restarted agent.
//! A proxy that cannot bind its port writes the error (`port N on ADDR is
//! in use: ...`) to `state.json` and exits, and the agent reports it.
//! A restarted agent adopts a proxy only when the process at the recorded
//! pid has the recorded start time and the command line `drover-agent
//! --proxy STATE_DIR` for this state dir ([`ServiceProxy::adopt`]).
//!
//! Limits: a proxy serves one address for its life; a service whose port
//! changes gets a new proxy, the old one stopped first (a moment with
//! neither). Counts in `state.json` lag by up to [`process::STATE_EVERY`].
//! A proxy that dies (SIGKILL, OOM) is not restarted until the agent runs
//! again and finds it gone. Under systemd it starts in a transient scope
//! unit of its own, as supervisors do (see supervise's gaps).

#[cfg(test)]
mod tests;

mod daemon;
pub mod process;

pub use daemon::main;
pub use process::ServiceProxy;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_telemetry::metrics::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time;

/// The first argument that starts the agent binary as a service's proxy:
/// `drover-agent --proxy STATE_DIR`.
pub const MODE_ARG: &str = "--proxy";

/// The most client connections one proxy carries at once. Each holds two
/// sockets (client and backend), so this many need twice as many file
/// descriptors; past it, a new connection is closed as soon as it is
/// accepted rather than queued behind the others.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long the proxy waits for a backend to accept a connection before it
/// gives up and closes the client's. A backend on the same host answers in
/// microseconds or refuses at once; a backend that takes this long is not
/// serving, and a client is better told so than kept waiting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the accept loop rests after an error that is not one client's
/// (out of file descriptors, most likely), so it does not spin while the
/// condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A proxy's limits; [`Limits::default`] is [`MAX_CONNECTIONS`] and
/// [`CONNECT_TIMEOUT`]. Tests and callers with other needs set their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most client connections carried at once (at least 1 is used).
    pub max_connections: usize,
    /// How long a backend may take to accept a connection.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: MAX_CONNECTIONS, connect_timeout: CONNECT_TIMEOUT }
    }
}

/// Why one client connection ended badly. Each is logged (at debug level:
/// they are the client's or the backend's business, not the agent's) and
/// the first two are counted as failed connects.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect to the backend {backend}: {source}")]
    Connect { backend: SocketAddr, source: io::Error },
    #[error("the backend {backend} did not accept a connection within {timeout:?}")]
    ConnectTimeout { backend: SocketAddr, timeout: Duration },
    #[error("the connection through to {backend} broke: {source}")]
    Copy { backend: SocketAddr, source: io::Error },
}

/// A proxy bound to its listener, not yet running. [`Proxy::handle`] gives
/// the handle that switches and reads it; [`Proxy::run`] serves.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// What the accept loop, the connection tasks and every handle share.
struct Shared {
    limits: Limits,
    /// The proxy's own address, for logs.
    listen: Option<SocketAddr>,
    /// One permit per carried client connection; a connection that finds
    /// none is closed at once. A permit is held by the connection's
    /// [`Admitted`] and returned before its count drops.
    permits: Arc<Semaphore>,
    /// The current generation and the older ones that may still carry
    /// connections. Locked only to read or replace the current generation
    /// and count a connection into it, never across an await: that one lock
    /// is what makes a switch atomic for new connections.
    backends: Mutex<Backends>,
    counters: Counters,
}

struct Backends {
    current: Arc<Generation>,
    /// Generations switched away from; pruned once they carry nothing
    /// (nothing can join them again).
    old: Vec<Arc<Generation>>,
    /// The number the next generation takes, for logs.
    next: u64,
}

/// One period of the proxy pointing at one backend, from a switch (or the
/// start) to the next switch. Switching back to an earlier address starts
/// a new generation, so each switch drains its own connections.
struct Generation {
    addr: SocketAddr,
    number: u64,
    /// Connections counted into this generation and not finished yet: the
    /// value is the count, and [`Switched::drain`] waits on it for zero.
    /// Changed only with `send_modify`, which updates it whether or not
    /// anybody is watching.
    active: watch::Sender<usize>,
    /// Set once, by [`Switched::close_old`]: every connection of this
    /// generation ends at once. Each connection's task watches it at every
    /// await, so setting it ends them all promptly.
    closing: watch::Sender<bool>,
}

impl Generation {
    fn new(addr: SocketAddr, number: u64) -> Arc<Generation> {
        Arc::new(Generation { addr, number, active: watch::Sender::new(0), closing: watch::Sender::new(false) })
    }

    fn active(&self) -> usize {
        *self.active.borrow()
    }
}

#[derive(Default)]
struct Counters {
    connections: Counter,
    rejected: Counter,
    failed_connects: Counter,
    cut: Counter,
}

/// A client connection counted into a generation, with its permit. Dropping
/// it returns the permit first and then lowers the count, so whoever sees
/// the count fall can open a connection again.
struct Admitted {
    generation: Arc<Generation>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.generation.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Shared {
    /// Counts a connection into the current generation, under the lock a
    /// switch takes.
    fn admit(&self, permit: OwnedSemaphorePermit) -> Admitted {
        let backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let generation = Arc::clone(&backends.current);
        generation.active.send_modify(|n| *n += 1);
        Admitted { generation, permit: Some(permit) }
    }
}

impl Proxy {
    /// A proxy serving `listener` (bound by the caller: a service's port,
    /// or port 0 in tests) in front of `backend`, with the default
    /// [`Limits`].
    pub fn bind(listener: TcpListener, backend: SocketAddr) -> Proxy {
        Proxy::with_limits(listener, backend, Limits::default())
    }

    /// [`Proxy::bind`] with limits of the caller's choosing.
    pub fn with_limits(listener: TcpListener, backend: SocketAddr, limits: Limits) -> Proxy {
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let shared = Shared {
            limits,
            listen: listener.local_addr().ok(),
            permits: Arc::new(Semaphore::new(max)),
            backends: Mutex::new(Backends { current: Generation::new(backend, 0), old: Vec::new(), next: 1 }),
            counters: Counters::default(),
        };
        Proxy { listener, shared: Arc::new(shared) }
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle to switch the backend and read the counters, valid while
    /// the proxy runs and after (a switch after [`Proxy::run`] returned
    /// changes nothing anybody sees).
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle { shared: Arc::clone(&self.shared) }
    }

    /// Serves until `shutdown` completes: accepts clients, connects each to
    /// the backend current at that instant, and copies bytes both ways
    /// until both sides have closed. When `shutdown` completes, the proxy
    /// stops accepting, closes every connection it still carries, and
    /// returns, freeing the port. To let connections finish first, switch
    /// the service away (or wait for [`ProxyStats::active_total`] to fall)
    /// before shutting down.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Proxy { listener, shared } = self;
        // The connection tasks: reaped as they finish, aborted (closing
        // both their sockets) when the proxy stops.
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!(listen = ?shared.listen, error = %e, "a proxy connection task panicked");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((client, peer)) => {
                        let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() else {
                            shared.counters.rejected.inc();
                            tracing::debug!(
                                listen = ?shared.listen, %peer, max = shared.limits.max_connections,
                                "proxy at its connection limit; closing the new connection",
                            );
                            drop(client);
                            continue;
                        };
                        shared.counters.connections.inc();
                        let admitted = shared.admit(permit);
                        tasks.spawn(serve(client, admitted, Arc::clone(&shared)));
                    }
                    Err(e) if is_one_clients(&e) => {
                        tracing::debug!(listen = ?shared.listen, error = %e, "a client went away before it was accepted");
                    }
                    Err(e) => {
                        tracing::warn!(listen = ?shared.listen, error = %e, "the proxy cannot accept connections; retrying");
                        time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }
        drop(listener);
        tasks.shutdown().await;
    }
}

/// Whether an accept error concerns only the connection being accepted
/// (which is gone), not the listener.
fn is_one_clients(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
}

/// One client connection, from accept to close: connect to its
/// generation's backend and copy until both sides are done, or until the
/// generation is closed.
async fn serve(mut client: TcpStream, admitted: Admitted, shared: Arc<Shared>) {
    let generation = Arc::clone(&admitted.generation);
    let mut closing = generation.closing.subscribe();
    let timeout = shared.limits.connect_timeout;
    tokio::select! {
        carried = carry(&mut client, generation.addr, timeout) => match carried {
            Ok(_) => {}
            Err(e @ (ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. })) => {
                shared.counters.failed_connects.inc();
                tracing::debug!(listen = ?shared.listen, generation = generation.number, error = %e, "closing a client connection");
            }
            Err(e) => tracing::debug!(listen = ?shared.listen, generation = generation.number, error = %e, "proxy connection ended"),
        },
        // An error means the sender is gone, which cannot happen while this
        // task holds the generation; either way the connection ends.
        _ = closing.wait_for(|closed| *closed) => {
            shared.counters.cut.inc();
            tracing::debug!(listen = ?shared.listen, generation = generation.number, "cutting a connection left on an old backend");
        }
    }
    // The client's socket closes before the count drops, so a caller that
    // sees a connection counted out also sees it closed.
    drop(client);
    drop(admitted);
}

/// Connects to `backend` within `timeout` and copies bytes both ways until
/// both directions have ended; returns the bytes carried (client to
/// backend, backend to client).
async fn carry(client: &mut TcpStream, backend: SocketAddr, timeout: Duration) -> Result<(u64, u64), ProxyError> {
    let mut upstream = match time::timeout(timeout, TcpStream::connect(backend)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ProxyError::Connect { backend, source }),
        Err(_) => return Err(ProxyError::ConnectTimeout { backend, timeout }),
    };
    // Small requests and answers must not wait for Nagle's algorithm on
    // either leg; failing to set it costs latency, not correctness.
    for stream in [&*client, &upstream] {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a proxied connection");
        }
    }
    tokio::io::copy_bidirectional(client, &mut upstream).await.map_err(|source| ProxyError::Copy { backend, source })
}

/// A running proxy's controls, cheap to clone: switch its backend, read its
/// counters.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl ProxyHandle {
    /// The backend new connections go to.
    pub fn backend(&self) -> SocketAddr {
        self.shared.backends.lock().unwrap_or_else(|e| e.into_inner()).current.addr
    }

    /// Sends every connection accepted from now on to `to`; connections
    /// already carried stay where they are and finish undisturbed. The
    /// [`Switched`] follows the connections left on the old backend.
    pub fn switch(&self, to: SocketAddr) -> Switched {
        let mut backends = self.shared.backends.lock().unwrap_or_else(|e| e.into_inner());
        let number = backends.next;
        backends.next += 1;
        let generation = Generation::new(to, number);
        let old = std::mem::replace(&mut backends.current, generation);
        backends.old.retain(|g| g.active() > 0);
        backends.old.push(Arc::clone(&old));
        drop(backends);
        tracing::info!(listen = ?self.shared.listen, from = %old.addr, %to, generation = number, "proxy switched");
        Switched { old, to }
    }

    /// The proxy's counters and the connections each backend carries now.
    pub fn stats(&self) -> ProxyStats {
        let (current, generations) = {
            let backends = self.shared.backends.lock().unwrap_or_else(|e| e.into_inner());
            let mut generations = backends.old.clone();
            generations.push(Arc::clone(&backends.current));
            (backends.current.addr, generations)
        };
        let mut active = vec![BackendActive { backend: current, active: 0 }];
        for generation in generations {
            let n = generation.active();
            match active.iter_mut().find(|a| a.backend == generation.addr) {
                Some(entry) => entry.active += n,
                None if n > 0 => active.push(BackendActive { backend: generation.addr, active: n }),
                None => {}
            }
        }
        let c = &self.shared.counters;
        ProxyStats {
            backend: current,
            connections_total: c.connections.get(),
            rejected_over_limit: c.rejected.get(),
            failed_connects: c.failed_connects.get(),
            cut: c.cut.get(),
            active,
        }
    }
}

/// A snapshot of a proxy's counters. The totals count since the proxy was
/// made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyStats {
    /// The backend new connections go to.
    pub backend: SocketAddr,
    /// Client connections accepted and carried (or tried: a failed connect
    /// counts here too).
    pub connections_total: u64,
    /// Client connections closed at once because the proxy was at
    /// [`Limits::max_connections`].
    pub rejected_over_limit: u64,
    /// Client connections closed because their backend refused or did not
    /// answer within [`Limits::connect_timeout`].
    pub failed_connects: u64,
    /// Connections cut by [`Switched::close_old`].
    pub cut: u64,
    /// The connections open now, per backend address: the current backend
    /// first (even at zero), then every older one still draining.
    pub active: Vec<BackendActive>,
}

impl ProxyStats {
    /// Every connection open now, on any backend.
    pub fn active_total(&self) -> usize {
        self.active.iter().map(|a| a.active).sum()
    }

    /// The connections open now to `backend`.
    pub fn active_on(&self, backend: SocketAddr) -> usize {
        self.active.iter().filter(|a| a.backend == backend).map(|a| a.active).sum()
    }
}

/// The connections one backend carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendActive {
    /// The backend's address.
    pub backend: SocketAddr,
    /// The client connections open to it now.
    pub active: usize,
}

/// What a switch left behind: the connections still on the old backend.
/// Dropping it changes nothing (they go on until they close); blue-green
/// drains it before stopping the old release.
pub struct Switched {
    old: Arc<Generation>,
    to: SocketAddr,
}

impl Switched {
    /// The backend switched away from.
    pub fn old_backend(&self) -> SocketAddr {
        self.old.addr
    }

    /// The backend switched to.
    pub fn new_backend(&self) -> SocketAddr {
        self.to
    }

    /// The connections still open on the old backend.
    pub fn remaining(&self) -> usize {
        self.old.active()
    }

    /// Waits until every connection on the old backend has closed, or
    /// `timeout` has passed, and says how many are left (none counts as
    /// drained: no new connection can join them).
    pub async fn drain(&self, timeout: Duration) -> Drained {
        let mut active = self.old.active.subscribe();
        // Timing out is an answer, not an error: the count says what is left.
        let _ = time::timeout(timeout, active.wait_for(|n| *n == 0)).await;
        Drained { remaining: self.remaining() }
    }

    /// Cuts every connection still on the old backend (both its sockets
    /// close) and returns once they are all gone, with how many there were.
    /// For after a [`Switched::drain`] that timed out.
    pub async fn close_old(&self) -> usize {
        let open = self.remaining();
        self.old.closing.send_replace(true);
        let mut active = self.old.active.subscribe();
        // Each connection's task sees `closing` at whatever it is awaiting
        // and ends, so the count reaches zero without any help; the only
        // error is a dropped sender, and this `Switched` holds it.
        let _ = active.wait_for(|n| *n == 0).await;
        open
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Connections still open on the old backend at the deadline; 0 when it
    /// drained.
    pub remaining: usize,
}

impl Drained {
    /// Whether every old connection closed before the deadline.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }
}
