//! The control channel: the one way a reader process (the http process today; an alerter
//! later) asks the collector, the only writer of host slots, to change the table.
//!
//! Shape (docs/ARCHITECTURE.md, "The control channel"): the supervisor creates one
//! `AF_UNIX`/`SOCK_DGRAM` socketpair before it starts any child and keeps both ends open for
//! its whole life. The collector inherits one end, the http process the other, across every
//! restart of either. A request is one datagram (JSON: an [`Envelope`] around a [`Request`]),
//! answered by exactly one datagram carrying the same id.
//!
//! Why it cannot wedge either side:
//! - No lock is shared: the kernel queues datagrams; a process that dies holding nothing
//!   leaves nothing held.
//! - No send waits more than 100 ms. A full queue (the peer is dead or slow) is an error
//!   ([`ControlError::Full`]) on the http side, and a dropped reply on the collector side.
//! - The requester waits at most [`REQUEST_TIMEOUT`]; a collector that is not running is
//!   reported at once ([`ControlError::CollectorDown`], from the table header's pid).
//! - Every request carries a deadline on CLOCK_MONOTONIC (the same clock in every process of
//!   one boot): a request queued while the collector was down, and that its sender has given
//!   up on, is discarded by the next collector instead of being executed late. Replies whose
//!   id nobody waits for (sent to a previous http process) are dropped.
//!
//! A new request is one new [`Request`] variant, its [`Reply`] variants, and one arm in the
//! collector's handler (`collector::control_handler`).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::table::Table;

/// Environment variable carrying the inherited control socket's fd number to a child.
pub const CONTROL_FD_ENV: &str = "SENTINEL_CONTROL_FD";
/// How long a requester waits for the collector's reply. A removal is one slot write (a few
/// microseconds); this covers a collector busy with a reconnect storm, and is short enough
/// that an operator's click or `remove-host` gets an answer, never a hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Part of [`REQUEST_TIMEOUT`] kept back from the deadline the collector sees: a request the
/// collector executes is executed well before the requester gives up on it.
const DEADLINE_MARGIN: Duration = Duration::from_millis(300);
/// Longest a send waits for room in the peer's queue (a datagram send on a socketpair only
/// waits when the peer's receive queue is full, i.e. the peer is dead or stuck): then the
/// request fails [`ControlError::Full`], or the reply is dropped. An await with a timeout
/// rather than `try_send`, because tokio's `try_send` also fails before the reactor has first
/// seen the socket writable.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// Largest datagram either side sends or accepts. Requests and replies are a few hundred
/// bytes (an agent id, a hostname); anything longer is not ours and is dropped.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Requests one http process may have waiting for a reply; more fail at once with
/// [`ControlError::Full`]. Operator writes are rare; this only bounds memory under abuse.
pub const MAX_IN_FLIGHT: usize = 64;

/// What a reader asks the collector to do. Serialized as JSON with an `op` tag.
/// Later requests (forget a host's key, alert silences, maintenance) are one variant each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Free the slot of the host with this agent id: its record and history are cleared, a
    /// connection it has open is closed, and a new host may take the slot.
    RemoveHost { agent_id: String },
    /// Forget the Ed25519 key pinned to this agent id (a reinstalled host that lost its key):
    /// the next keyed hello pins its key. An open connection keeps streaming.
    ForgetKey { agent_id: String },
}

/// The collector's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// The host was removed; `was_connected` says whether its connection was closed.
    Removed {
        hostname: String,
        was_connected: bool,
    },
    /// The host's pinned key was forgotten; `key_sha256` is the forgotten key's fingerprint
    /// (None if no key was pinned).
    KeyForgotten {
        hostname: String,
        key_sha256: Option<String>,
    },
    /// No host with that agent id is in the table.
    NotFound,
    /// The collector could not parse or perform the request.
    Failed { reason: String },
}

/// One datagram: a request or a reply with its id.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    id: u64,
    /// CLOCK_MONOTONIC ms after which the requester no longer waits (requests only; 0 in
    /// replies).
    deadline_ms: u64,
    body: T,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the collector is not running (it is restarting or the master is stopping); retry in a few seconds")]
    CollectorDown,
    #[error("the collector did not answer within {} ms; the request was not carried out", REQUEST_TIMEOUT.as_millis())]
    Timeout,
    #[error("the control channel is full (too many requests in flight); retry later")]
    Full,
    #[error("this process has no control channel (not started by the supervisor)")]
    Unavailable,
    #[error("control channel error: {0}")]
    Io(#[from] std::io::Error),
}

/// Milliseconds on CLOCK_MONOTONIC: comparable between the processes of one boot, and immune
/// to wall-clock steps.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer and a clock every Linux has.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The supervisor's two ends, kept open for its whole life so that a restarted child gets
/// the same channel and a dead child never makes its peer's sends fail with ECONNREFUSED.
pub struct Pair {
    collector: OwnedFd,
    http: OwnedFd,
}

impl Pair {
    pub fn new() -> std::io::Result<Pair> {
        let (a, b) = UnixDatagram::pair()?;
        // Non-blocking on the open file description, so both children's ends are too.
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        Ok(Pair {
            collector: a.into(),
            http: b.into(),
        })
    }

    /// The end the collector gets.
    pub fn collector_fd(&self) -> RawFd {
        self.collector.as_raw_fd()
    }

    /// The end the http process gets.
    pub fn http_fd(&self) -> RawFd {
        self.http.as_raw_fd()
    }
}

/// In a child: the control socket the supervisor passed, if any.
pub fn inherited() -> Option<tokio::net::UnixDatagram> {
    let fd: RawFd = std::env::var(CONTROL_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: the supervisor passed this fd number for one end of its socketpair, once; the
    // env var is read once per process (the caller owns the result).
    let sock = unsafe { UnixDatagram::from_raw_fd(fd) };
    // SAFETY: keep it out of anything we might exec.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if sock.set_nonblocking(true).is_err() {
        return None;
    }
    tokio::net::UnixDatagram::from_std(sock).ok()
}

/// The requester's side (http process).
pub struct Client {
    sock: Option<tokio::net::UnixDatagram>,
    table: &'static Table,
    /// Request id -> the task waiting for its reply. Bounded by [`MAX_IN_FLIGHT`].
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Ids start at a random value: a reply meant for a previous http process never matches.
    next_id: AtomicU64,
}

impl Client {
    /// Starts the reply reader on the current runtime. `sock` None = no channel (every call
    /// fails with [`ControlError::Unavailable`]).
    pub fn start(sock: Option<tokio::net::UnixDatagram>, table: &'static Table) -> Arc<Client> {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let client = Arc::new(Client {
            sock,
            table,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(u64::from_le_bytes(seed) >> 1),
        });
        if client.sock.is_some() {
            tokio::spawn(read_replies(client.clone()));
        }
        client
    }

    /// Sends `request` and waits for its reply, at most [`REQUEST_TIMEOUT`].
    pub async fn call(&self, request: Request) -> Result<Reply, ControlError> {
        let sock = self.sock.as_ref().ok_or(ControlError::Unavailable)?;
        if self.table.header().collector_pid.load(Ordering::Acquire) == 0 {
            return Err(ControlError::CollectorDown);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_IN_FLIGHT {
                return Err(ControlError::Full);
            }
            pending.insert(id, tx);
        }
        let _forget = Forget(self, id);
        let deadline = monotonic_ms() + (REQUEST_TIMEOUT - DEADLINE_MARGIN).as_millis() as u64;
        let bytes = encode(&Envelope {
            id,
            deadline_ms: deadline,
            body: request,
        });
        match tokio::time::timeout(SEND_TIMEOUT, sock.send(&bytes)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ControlError::Io(e)),
            Err(_) => return Err(ControlError::Full),
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) | Err(_) => {
                if self.table.header().collector_pid.load(Ordering::Acquire) == 0 {
                    Err(ControlError::CollectorDown)
                } else {
                    Err(ControlError::Timeout)
                }
            }
        }
    }
}

/// Removes a request's entry however its call ends (reply, timeout, cancelled future).
struct Forget<'a>(&'a Client, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.0.pending.lock() {
            p.remove(&self.1);
        }
    }
}

/// One datagram into `buf`; a read error is logged and retried after 100 ms, never the end of
/// the channel (both ends live as long as the supervisor).
async fn recv(sock: &tokio::net::UnixDatagram, buf: &mut [u8]) -> usize {
    loop {
        match sock.recv(buf).await {
            Ok(n) => return n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the control channel; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_replies(client: Arc<Client>) {
    let Some(sock) = client.sock.as_ref() else {
        return;
    };
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    loop {
        let n = recv(sock, &mut buf).await;
        let Ok(reply) = serde_json::from_slice::<Envelope<Reply>>(&buf[..n]) else {
            tracing::warn!(bytes = n, "dropped an unreadable control reply");
            continue;
        };
        let waiter = client
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&reply.id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(reply.body);
            }
            // A reply to a request this process gave up on, or to a previous http process.
            None => tracing::debug!(id = reply.id, "dropped a control reply nobody waits for"),
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// What the collector does with one datagram: decode, check the deadline, run `handle`,
/// encode the reply. `None` = send nothing (unreadable or expired). Pure, unit-tested.
pub fn answer(
    datagram: &[u8],
    now_monotonic_ms: u64,
    handle: impl FnOnce(Request) -> Reply,
) -> Option<Vec<u8>> {
    let env: Envelope<Request> = match serde_json::from_slice(datagram) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, bytes = datagram.len(), "dropped an unreadable control request");
            // Without an id nobody can be answered.
            let id = serde_json::from_slice::<serde_json::Value>(datagram)
                .ok()
                .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))?;
            return Some(encode(&Envelope {
                id,
                deadline_ms: 0,
                body: Reply::Failed {
                    reason: format!("unreadable request: {e}"),
                },
            }));
        }
    };
    if now_monotonic_ms > env.deadline_ms {
        tracing::warn!(id = env.id, request = ?env.body, late_ms = now_monotonic_ms - env.deadline_ms, "discarded a control request its sender already gave up on");
        return None;
    }
    let body = handle(env.body);
    Some(encode(&Envelope {
        id: env.id,
        deadline_ms: 0,
        body,
    }))
}

/// The collector's side: answers every request with `handle` (called on the runtime thread;
/// it must be quick: a slot write). Never blocks: a reply the http side cannot take now is
/// dropped (its requester times out).
pub async fn serve(sock: tokio::net::UnixDatagram, handle: impl Fn(Request) -> Reply) {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    loop {
        let n = recv(&sock, &mut buf).await;
        let Some(reply) = answer(&buf[..n], monotonic_ms(), &handle) else {
            continue;
        };
        match tokio::time::timeout(SEND_TIMEOUT, sock.send(&reply)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "dropped a control reply that could not be sent")
            }
            Err(_) => tracing::warn!("dropped a control reply: the http process's queue is full"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64, deadline_ms: u64, body: Request) -> Vec<u8> {
        encode(&Envelope {
            id,
            deadline_ms,
            body,
        })
    }

    #[test]
    fn requests_are_answered_with_their_id_and_expired_ones_are_discarded() {
        let remove = Request::RemoveHost {
            agent_id: "ab".repeat(16),
        };
        let reply = answer(&request(7, 1000, remove.clone()), 999, |r| {
            assert_eq!(r, remove);
            Reply::NotFound
        })
        .unwrap();
        let env: Envelope<Reply> = serde_json::from_slice(&reply).unwrap();
        assert_eq!((env.id, env.body), (7, Reply::NotFound));
        // Past its deadline: not executed at all.
        assert!(answer(&request(8, 1000, remove), 1001, |_| panic!("executed")).is_none());
    }

    #[test]
    fn garbage_gets_a_failure_when_it_has_an_id_and_nothing_otherwise() {
        assert!(answer(b"\xff\x00", 0, |_| panic!()).is_none());
        let reply = answer(
            br#"{"id":3,"deadline_ms":9,"body":{"op":"nonsense"}}"#,
            0,
            |_| panic!(),
        )
        .unwrap();
        let env: Envelope<Reply> = serde_json::from_slice(&reply).unwrap();
        assert_eq!(env.id, 3);
        assert!(matches!(env.body, Reply::Failed { .. }));
    }

    fn tokio_pair() -> (tokio::net::UnixDatagram, tokio::net::UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (
            tokio::net::UnixDatagram::from_std(a).unwrap(),
            tokio::net::UnixDatagram::from_std(b).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_request_gets_its_reply_and_a_missing_collector_an_error_not_a_hang() {
        let t: &'static crate::table::TestTable =
            Box::leak(Box::new(crate::table::TestTable::new(1, 1)));
        let header = t.table.header();
        let (server, client_end) = tokio_pair();
        tokio::spawn(serve(server, |r| match r {
            Request::RemoveHost { agent_id } => Reply::Removed {
                hostname: agent_id,
                was_connected: false,
            },
            Request::ForgetKey { .. } => Reply::NotFound,
        }));
        let client = Client::start(Some(client_end), &t.table);
        header.collector_pid.store(0, Ordering::Release);
        let r = client
            .call(Request::RemoveHost {
                agent_id: "a".into(),
            })
            .await;
        assert!(matches!(r, Err(ControlError::CollectorDown)), "{r:?}");
        header.collector_pid.store(1, Ordering::Release);
        let r = client
            .call(Request::RemoveHost {
                agent_id: "a".into(),
            })
            .await;
        assert_eq!(
            r.unwrap(),
            Reply::Removed {
                hostname: "a".into(),
                was_connected: false
            }
        );
        assert!(client.pending.lock().unwrap().is_empty());
        // Nobody serves this channel: a timeout, and nothing left pending.
        let (_silent, end) = tokio_pair();
        let client = Client::start(Some(end), &t.table);
        let started = std::time::Instant::now();
        let r = client
            .call(Request::RemoveHost {
                agent_id: "a".into(),
            })
            .await;
        assert!(matches!(r, Err(ControlError::Timeout)), "{r:?}");
        assert!(started.elapsed() < REQUEST_TIMEOUT + Duration::from_millis(500));
        assert!(client.pending.lock().unwrap().is_empty());
        let none = Client::start(None, &t.table);
        assert!(matches!(
            none.call(Request::RemoveHost {
                agent_id: "a".into()
            })
            .await,
            Err(ControlError::Unavailable)
        ));
    }

    #[test]
    fn the_wire_form_is_tagged_json() {
        let bytes = request(
            1,
            2,
            Request::RemoveHost {
                agent_id: "x".into(),
            },
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"id":1,"deadline_ms":2,"body":{"op":"remove_host","agent_id":"x"}}"#
        );
    }
}
