//! One agent connection: challenge, hello, welcome, then samples/batches/goodbye. Anything
//! hostile ends this connection with a `refused` and a WARN line naming the peer; it never
//! panics and never touches another connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sentinel_protocol::{
    auth, escape, frame, limits, Ack, AgentMessage, Challenge, Hello, MasterMessage, Refused,
    Welcome, PROTOCOL_VERSION,
};
use tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};

use super::handshake::{check_hello_body, decode_error, refusal, Refusal};
use super::store::{Incoming, SlotError, Superseded};
use super::transport::Stream;
use super::Shared;
use crate::segment::now_ms;

/// Time allowed to write a frame to a peer that does not read: a stuck peer must not hold a
/// task forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type Conn = Framed<Stream, AgentCodec>;

/// The protocol's codec, except at the end of the stream: `LengthDelimitedCodec` consumes a
/// length prefix as soon as it arrives, so a peer that hangs up after a prefix but before the
/// body would look like a clean close. Here that is a truncated frame, refused and logged.
struct AgentCodec {
    inner: LengthDelimitedCodec,
    /// A prefix was consumed and its body has not been returned yet.
    in_frame: bool,
}

impl AgentCodec {
    fn new() -> AgentCodec {
        AgentCodec {
            inner: frame::codec(),
            in_frame: false,
        }
    }
}

impl Decoder for AgentCodec {
    type Item = bytes::BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> std::io::Result<Option<bytes::BytesMut>> {
        let before = src.len();
        let body = self.inner.decode(src)?;
        if body.is_some() {
            self.in_frame = false;
        } else if src.len() < before {
            self.in_frame = true;
        }
        Ok(body)
    }

    fn decode_eof(
        &mut self,
        src: &mut bytes::BytesMut,
    ) -> std::io::Result<Option<bytes::BytesMut>> {
        match self.decode(src)? {
            Some(body) => Ok(Some(body)),
            None if src.is_empty() && !self.in_frame => Ok(None),
            None => Err(std::io::Error::other("bytes remaining on stream")),
        }
    }
}

impl Encoder<bytes::Bytes> for AgentCodec {
    type Error = std::io::Error;

    fn encode(&mut self, body: bytes::Bytes, dst: &mut bytes::BytesMut) -> std::io::Result<()> {
        self.inner.encode(body, dst)
    }
}

/// At most `BURST` WARN lines per `WINDOW_MS`; the rest are counted and summarised.
#[derive(Default)]
pub struct LogLimit {
    window_start_ms: AtomicU64,
    in_window: AtomicU64,
    suppressed: AtomicU64,
}

const BURST: u64 = 50;
const WINDOW_MS: u64 = 10_000;

impl LogLimit {
    /// True if this line may be logged now.
    pub fn allow(&self) -> bool {
        let now = now_ms();
        let start = self.window_start_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= WINDOW_MS
            && self
                .window_start_ms
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_window.store(0, Ordering::Relaxed);
            let n = self.suppressed.swap(0, Ordering::Relaxed);
            if n > 0 {
                tracing::warn!(
                    suppressed = n,
                    "suppressed log lines about refused or failed connections"
                );
            }
        }
        if self.in_window.fetch_add(1, Ordering::Relaxed) < BURST {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

async fn send(conn: &mut Conn, msg: &MasterMessage) -> bool {
    let mut buf = Vec::new();
    if frame::encode_body(msg, &mut buf).is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, conn.send(bytes::Bytes::from(buf))).await,
        Ok(Ok(()))
    )
}

/// Sends `refused` (best effort), logs it, closes.
async fn refuse(conn: &mut Conn, peer: SocketAddr, shared: &Shared, r: Refusal) {
    shared.count_refusal(&r);
    if shared.log_limit.allow() {
        // The reason may quote the peer (a decode error names its unknown key).
        tracing::warn!(peer = %peer, code = r.code, reason = %escape(&r.reason), "refused connection");
    }
    let msg = MasterMessage::Refused(Refused {
        code: r.code.to_string(),
        reason: r.reason,
    });
    let _ = send(conn, &msg).await;
    let _ =
        tokio::time::timeout(Duration::from_secs(1), SinkExt::<bytes::Bytes>::close(conn)).await;
}

/// Over `max_connections`: refuse with `busy` and close.
pub async fn refuse_busy(stream: Stream, peer: SocketAddr, shared: &Shared) {
    let mut conn = Framed::new(stream, AgentCodec::new());
    let r = refusal(
        "busy",
        "the master is at its max_connections limit; retry later",
    );
    refuse(&mut conn, peer, shared, r).await;
}

/// Reads one frame body within `limit`.
async fn read_body(
    conn: &mut Conn,
    limit: Duration,
    what: &str,
) -> Result<Option<bytes::BytesMut>, Refusal> {
    match tokio::time::timeout(limit, conn.next()).await {
        Err(_) => Err(refusal(
            "invalid",
            format!("no {what} within {} s", limit.as_secs()),
        )),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(decode_error(frame_error(&e))),
        Ok(Some(Ok(body))) => Ok(Some(body)),
    }
}

fn frame_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("frame size too big") {
        format!(
            "frame length exceeds the limit of {} bytes",
            limits::MAX_FRAME_BYTES
        )
    } else if text.contains("bytes remaining") {
        "truncated frame: the connection closed inside a frame".to_string()
    } else {
        format!("cannot read frame: {text}")
    }
}

/// A master with TLS and a peer that did not start a TLS handshake: refused in plaintext,
/// which a plaintext agent reads and logs.
pub async fn refuse_plaintext(stream: Stream, peer: SocketAddr, shared: &Shared, what: &str) {
    let mut conn = Framed::new(stream, AgentCodec::new());
    let reason = format!(
        "this master requires TLS and the peer {what}; set tls_ca_file or tls_pin_sha256 in the agent's config"
    );
    refuse(&mut conn, peer, shared, refusal("invalid", reason)).await;
}

pub async fn run(stream: Stream, peer: SocketAddr, shared: &Shared) {
    let mut conn = Framed::new(stream, AgentCodec::new());
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let slot = match handshake(&mut conn, peer, shared, conn_id).await {
        Ok(Some(slot)) => slot,
        Ok(None) => return,
        Err(r) => return refuse(&mut conn, peer, shared, r).await,
    };
    let result = stream_samples(&mut conn, slot.clone(), conn_id, shared).await;
    lock(shared).disconnect(slot.0, conn_id);
    match result {
        Ok(end) => tracing::info!(peer = %peer, host = %escape(&slot.1), end, "agent disconnected"),
        Err(r) => refuse(&mut conn, peer, shared, r).await,
    }
}

pub(super) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, super::store::Store> {
    // A panic while holding the store would be a bug; keep serving rather than poisoning all.
    shared.store.lock().unwrap_or_else(|p| p.into_inner())
}

/// (slot, hostname, interval_ms)
type SlotInfo = (usize, String, u32);

async fn handshake(
    conn: &mut Conn,
    peer: SocketAddr,
    shared: &Shared,
    conn_id: u64,
) -> Result<Option<SlotInfo>, Refusal> {
    let mut nonce = [0u8; auth::NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .map_err(|e| refusal("busy", format!("master cannot get random bytes: {e}")))?;
    if !send(
        conn,
        &MasterMessage::Challenge(Challenge {
            version: PROTOCOL_VERSION,
            nonce: nonce.to_vec(),
        }),
    )
    .await
    {
        return Ok(None);
    }
    let mut hello: Hello = match read_body(conn, limits::HANDSHAKE_TIMEOUT, "hello").await? {
        None => return Ok(None),
        Some(body) => check_hello_body(&body, &shared.token, &nonce)?,
    };
    // The agent's labels were checked with the hello; the master's tables go over them and
    // the sum is checked again. From here on the hello carries the host's effective labels.
    let agent_labels = std::mem::take(&mut hello.labels);
    hello.labels = shared
        .host_labels
        .apply(&hello.hostname, agent_labels)
        .map_err(|e| {
            refusal(
                "invalid",
                format!("invalid hello: labels with master.toml [[host_labels]] added: {e}"),
            )
        })?;
    let address = peer.to_string();
    let result = {
        let mut store = lock(shared);
        // Before anything about the host changes (PROTOCOL.md section 3): a wrong or missing
        // key leaves the connected agent undisturbed.
        store.check_identity(&hello, &address, shared.require_agent_keys)?;
        if let Some((hostname, run_id)) = store.is_connected_elsewhere(&hello.agent_id) {
            if hostname != hello.hostname && run_id != hello.run_id {
                return Err(refusal(
                    "conflict",
                    format!(
                        "agent id {} is already connected as host {hostname:?}",
                        hello.agent_id
                    ),
                ));
            }
        }
        if !store.knows(&hello.agent_id) && !shared.admit_new_host(peer.ip()) {
            return Err(refusal(
                "throttled",
                format!(
                    "too many new host identities from {} in the last minute (new_hosts_per_minute = {}); retry later",
                    peer.ip(),
                    shared.new_hosts_per_minute
                ),
            ));
        }
        store.handshake(&hello, &address, conn_id)
    };
    let (slot, last_seq) = match result {
        Ok(x) => x,
        Err(SlotError::Full(cap)) => {
            shared.table_full(peer, &hello.agent_id);
            return Err(refusal(
                "busy",
                format!("the host table is full ({cap} hosts); raise capacity"),
            ));
        }
    };
    let welcome = MasterMessage::Welcome(Welcome {
        last_seq,
        clock_ms: now_ms(),
    });
    if !send(conn, &welcome).await {
        lock(shared).disconnect(slot, conn_id);
        return Ok(None);
    }
    shared.counters.handshakes.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        peer = %peer, host = %escape(&hello.hostname), agent_id = %hello.agent_id,
        run_id = hello.run_id, last_seq, agent_version = %escape(&hello.agent_version),
        os = %escape(&hello.host.os), kernel = %escape(&hello.host.kernel),
        cpu_model = %escape(&hello.host.cpu_model), "agent connected"
    );
    Ok(Some((slot, hello.hostname, hello.interval_ms)))
}

/// Most frames taken from one read before the master stores them and acks once.
const MAX_FRAMES_PER_ACK: usize = 64;

/// One decoded frame of the sample stream. Items live in one reused Vec per connection, so the
/// large `Sample` variant stays inline (boxing it would allocate per sample).
#[allow(clippy::large_enum_variant)]
enum Item {
    /// A `sample`, with its wire bytes when the body had the canonical shape.
    Sample(sentinel_protocol::Sample, Option<bytes::BytesMut>),
    Batch(Vec<sentinel_protocol::Sample>),
    /// A goodbye, with its reason for the log.
    Goodbye(String),
}

fn decode_item(mut body: bytes::BytesMut) -> Result<Item, Refusal> {
    match frame::decode_body::<AgentMessage>(&body).map_err(|e| decode_error(e.to_string()))? {
        AgentMessage::Sample(s) => {
            s.validate()
                .map_err(|e| refusal("invalid", format!("invalid sample: {e}")))?;
            let wire = sentinel_protocol::sample_in_body(&body)
                .map(|w| w.len())
                .map(|len| body.split_off(body.len() - len));
            Ok(Item::Sample(s, wire))
        }
        AgentMessage::Batch(b) => {
            b.validate()
                .map_err(|e| refusal("invalid", format!("invalid batch: {e}")))?;
            Ok(Item::Batch(b.samples))
        }
        AgentMessage::Goodbye(g) => {
            g.validate()
                .map_err(|e| refusal("invalid", format!("invalid goodbye: {e}")))?;
            Ok(Item::Goodbye(g.reason))
        }
        AgentMessage::Hello(_) => Err(refusal("invalid", "unexpected hello after the handshake")),
    }
}

/// Returns how the connection ended normally ("goodbye", "closed"), or a refusal.
///
/// Every frame already read is taken at once (up to [`MAX_FRAMES_PER_ACK`]): their samples are
/// stored under one lock and answered with one cumulative ack, so an agent replaying or a fast
/// sender costs one write per read instead of one per frame (PROTOCOL.md: acks are cumulative).
/// A bad frame ends the connection after the good frames before it are stored and acked.
async fn stream_samples(
    conn: &mut Conn,
    slot: SlotInfo,
    conn_id: u64,
    shared: &Shared,
) -> Result<&'static str, Refusal> {
    use futures_util::FutureExt;
    let (index, hostname, interval_ms) = slot;
    let idle = limits::idle_timeout(interval_ms);
    let superseded =
        |_: Superseded| refusal("conflict", "a newer connection of this agent took over");
    // Grows to what the agent sends per read (one at 1 Hz, up to 64 when replaying): an
    // idle connection must not hold 64 items (15 KB) of capacity.
    let mut items = Vec::new();
    loop {
        let first = match read_body(conn, idle, "sample").await {
            Ok(Some(body)) => body,
            Ok(None) => return Ok("closed"),
            Err(r) if r.reason.starts_with("no sample within") => {
                tracing::info!(slot = index, "closing idle agent connection");
                return Ok("idle");
            }
            Err(r) => return Err(r),
        };
        // What ends the connection after this round's samples are stored and acked.
        let mut end: Option<Result<&'static str, Refusal>> = None;
        let mut body = Some(first);
        while let Some(b) = body.take() {
            match decode_item(b) {
                Ok(Item::Goodbye(reason)) => {
                    tracing::info!(host = %escape(&hostname), reason = %escape(&reason), "agent said goodbye");
                    end = Some(Ok("goodbye"));
                    break;
                }
                Ok(item) => items.push(item),
                Err(r) => {
                    end = Some(Err(r));
                    break;
                }
            }
            if items.len() >= MAX_FRAMES_PER_ACK {
                break;
            }
            // Only frames already buffered or readable without waiting.
            body = match conn.next().now_or_never() {
                None => None,
                Some(None) => {
                    end = Some(Ok("closed"));
                    None
                }
                Some(Some(Ok(b))) => Some(b),
                Some(Some(Err(e))) => {
                    end = Some(Err(decode_error(frame_error(&e))));
                    None
                }
            };
        }
        if !items.is_empty() {
            let ack = {
                let incoming = items.iter().flat_map(|item| {
                    let (samples, wire, replayed) = match item {
                        Item::Sample(s, wire) => (std::slice::from_ref(s), wire.as_deref(), false),
                        Item::Batch(v) => (v.as_slice(), None, true),
                        Item::Goodbye(_) => (&[][..], None, false),
                    };
                    samples.iter().map(move |sample| Incoming {
                        sample,
                        wire,
                        replayed,
                    })
                });
                match lock(shared).ingest(index, conn_id, incoming) {
                    Ok(ack) => ack,
                    Err(Superseded { removed: true }) => return Ok("removed by an operator"),
                    Err(s) => return Err(superseded(s)),
                }
            };
            if items.len() <= 2 && items.capacity() > 8 {
                items.shrink_to(2); // a replay is over: give its capacity back
            }
            items.clear();
            if !send(conn, &MasterMessage::Ack(Ack { seq: ack })).await {
                return Ok("write failed");
            }
        }
        match end {
            None => {}
            Some(Ok("goodbye")) => match lock(shared).goodbye(index, conn_id) {
                Ok(()) | Err(Superseded { removed: true }) => return Ok("goodbye"),
                Err(s) => return Err(superseded(s)),
            },
            Some(end) => return end,
        }
    }
}
