//! Shipping: the agent's event loop. Samples are taken on a fixed cadence whatever the
//! connection does; each goes into the spool, and from there to the master: unsent backlog in
//! `batch` frames, a fresh sample in a `sample` frame. Cumulative acks trim the spool. The
//! connection is re-established with capped exponential backoff and jitter, and a planned stop
//! sends `goodbye`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sentinel_protocol::frame::{codec, FrameError, PREFIX_BYTES};
use sentinel_protocol::limits::{idle_timeout, HANDSHAKE_TIMEOUT, MAX_BATCH_SAMPLES};
use sentinel_protocol::{
    decode_body, encode_frame, escape, AgentMessage, Batch, Goodbye, Hello, HostInfo,
    MasterMessage, Nonce, Sample, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::backoff::{Backoff, FailureLog};
use crate::collect::{CollectError, Collector};
use crate::spool::{Seq, Spool};

/// The connection's byte stream: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Conn = Framed<Box<dyn Io>, LengthDelimitedCodec>;

/// Frames queued for the writer task: enough to keep the socket busy during a replay, small
/// enough (at most this many 256 KiB frames) to keep memory bounded when the master is slow.
const WRITE_QUEUE_FRAMES: usize = 8;

/// How long a planned stop waits for the goodbye to reach the socket.
const GOODBYE_FLUSH: Duration = Duration::from_secs(2);

/// A clock difference worth a warning: liveness uses the master's clock, but charts show
/// the agent's timestamps.
const CLOCK_WARN_MS: u64 = 5_000;

/// Who this agent is, as told in every `hello`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent_id: String,
    pub hostname: String,
    pub host: HostInfo,
    /// The fleet token (never sent; only the proof over the master's nonce is).
    pub token: Vec<u8>,
    /// Random per process start: the master tells runs apart by it.
    pub run_id: u64,
    pub interval: Duration,
    /// The key pair whose public key the master pins to `agent_id`; `None` when it could not
    /// be persisted (the hello then carries no key, like a 0.1.0 agent's).
    pub key: Option<std::sync::Arc<ring::signature::Ed25519KeyPair>>,
    /// The host's labels (agent.toml `labels` and `--label`), already validated.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What the event loop needs besides the identity.
#[derive(Debug, Clone)]
pub struct Options {
    pub master: String,
    pub spool_samples: usize,
    pub reconnect_max: Duration,
    /// None = plaintext.
    pub tls: Option<crate::tls::Client>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the master closed the connection")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the master refused us: code={code} reason={reason}")]
    Refused { code: String, reason: String },
    #[error("expected {expected} from the master, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("the master's nonce has {0} bytes, expected 32")]
    BadNonce(usize),
    #[error("the handshake took longer than {0:?}")]
    Timeout(Duration),
    #[error("the master has not acknowledged anything for {0:?}")]
    AckTimeout(Duration),
}

fn kind(m: &MasterMessage) -> &'static str {
    match m {
        MasterMessage::Challenge(_) => "challenge",
        MasterMessage::Welcome(_) => "welcome",
        MasterMessage::Refused(_) => "refused",
        MasterMessage::Ack(_) => "ack",
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn read_msg(conn: &mut Conn) -> Result<MasterMessage, ShipError> {
    let body = conn.next().await.ok_or(ShipError::Closed)??;
    Ok(decode_body(&body)?)
}

/// Encodes one message as a frame body for the length-delimited codec, with the protocol's
/// size check.
fn encode(msg: &AgentMessage) -> Result<Bytes, FrameError> {
    let mut buf = Vec::new();
    encode_frame(msg, &mut buf)?;
    Ok(Bytes::from(buf).slice(PREFIX_BYTES..))
}

/// A finished handshake.
struct Session {
    conn: Conn,
    last_seq: u64,
    master_clock_ms: u64,
    master_version: u16,
}

async fn handshake(
    master: String,
    id: Arc<Identity>,
    tls: Option<crate::tls::Client>,
) -> Result<Session, ShipError> {
    let stream = TcpStream::connect(&master)
        .await
        .map_err(ShipError::Connect)?;
    stream.set_nodelay(true)?;
    // Nothing of the protocol goes out before the master's certificate passed.
    let stream: Box<dyn Io> = match tls {
        None => Box::new(stream),
        Some(tls) => Box::new(tls.connect(stream).await.map_err(ShipError::Tls)?),
    };
    let mut conn = Framed::new(stream, codec());
    let challenge = match read_msg(&mut conn).await? {
        MasterMessage::Challenge(c) => c,
        MasterMessage::Refused(r) => {
            return Err(ShipError::Refused {
                code: r.code,
                reason: r.reason,
            })
        }
        other => {
            return Err(ShipError::Unexpected {
                expected: "challenge",
                got: kind(&other),
            })
        }
    };
    let nonce: Nonce = challenge
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| ShipError::BadNonce(challenge.nonce.len()))?;
    let (key, key_proof) = match &id.key {
        Some(pair) => {
            let (key, sig) = crate::identity::key_proof(pair, &nonce, id.run_id, &id.agent_id);
            (Some(key), Some(sig))
        }
        None => (None, None),
    };
    let hello = Hello {
        version: PROTOCOL_VERSION,
        agent_id: id.agent_id.clone(),
        run_id: id.run_id,
        hostname: id.hostname.clone(),
        interval_ms: u32::try_from(id.interval.as_millis()).unwrap_or(u32::MAX),
        clock_ms: unix_ms(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        host: id.host.clone(),
        proof: sentinel_protocol::proof(&id.token, &nonce, &id.agent_id).to_vec(),
        key,
        key_proof,
        labels: id.labels.clone(),
    };
    conn.send(encode(&AgentMessage::Hello(hello))?).await?;
    match read_msg(&mut conn).await? {
        MasterMessage::Welcome(w) => Ok(Session {
            conn,
            last_seq: w.last_seq,
            master_clock_ms: w.clock_ms,
            master_version: challenge.version,
        }),
        MasterMessage::Refused(r) => Err(ShipError::Refused {
            code: r.code,
            reason: r.reason,
        }),
        other => Err(ShipError::Unexpected {
            expected: "welcome",
            got: kind(&other),
        }),
    }
}

/// An established connection: frames go out through a writer task (so a slow master never
/// stalls sampling), acks come in on `reader`.
struct Live {
    reader: SplitStream<Conn>,
    tx: mpsc::Sender<Bytes>,
    writer: JoinHandle<std::io::Result<()>>,
    /// Highest seq handed to the writer on this connection.
    sent_upto: Seq,
    /// Last ack, or when samples became outstanding after none were: a master that stops
    /// acking (a half-open connection, a wedged collector) is given up on after the
    /// protocol's idle timeout instead of TCP's many minutes.
    last_progress: Instant,
}

impl Drop for Live {
    fn drop(&mut self) {
        // A writer stuck on a dead socket must not outlive its connection.
        self.writer.abort();
    }
}

async fn write_loop(
    mut sink: SplitSink<Conn, Bytes>,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    while let Some(frame) = rx.recv().await {
        if frame.is_empty() {
            break; // the close marker: flush and shut down after the goodbye
        }
        sink.feed(frame).await?;
        if rx.is_empty() {
            sink.flush().await?;
        }
    }
    sink.close().await
}

type Handshake = Pin<Box<dyn Future<Output = Result<Session, ShipError>>>>;

enum State {
    /// Waiting out the backoff.
    Idle {
        retry_at: Instant,
    },
    Connecting(Handshake),
    Up(Live),
}

enum Event {
    RetryDue,
    Handshake(Result<Session, ShipError>),
    Frame(Option<Result<bytes::BytesMut, std::io::Error>>),
    WriterDone(String),
}

async fn next_event(state: &mut State) -> Event {
    match state {
        State::Idle { retry_at } => {
            tokio::time::sleep_until(*retry_at).await;
            Event::RetryDue
        }
        State::Connecting(fut) => Event::Handshake(fut.await),
        State::Up(live) => tokio::select! {
            frame = live.reader.next() => Event::Frame(frame),
            done = &mut live.writer => Event::WriterDone(match done {
                Ok(Ok(())) => "the writer stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            }),
        },
    }
}

/// The agent's running state.
pub struct Agent {
    id: Arc<Identity>,
    opts: Options,
    /// Samples on this thread without blocking: statvfs, which a hung NFS mount can block,
    /// runs on the collector's helper thread, so neither the connection nor the goodbye waits.
    collector: Collector,
    spool: Spool,
    /// Highest seq ever handed to a connection: a full spool evicting an older sample
    /// does not count it as dropped (the master may well hold it).
    handed_upto: Seq,
    /// Last produced sequence number (the goodbye reports it).
    seq: Seq,
    /// The `dropped` count stamped into the newest sample: while the spool's count is the
    /// same, that sample's spooled bytes can go out as they are (see `next_frame`).
    newest_dropped: u64,
    /// Reused for encoding samples: a fresh Vec grew seven times per sample, and shrinking it
    /// into the spool made musl's allocator map and unmap a page group each time.
    scratch: Vec<u8>,
    backoff: Backoff,
    /// Rate limit for connection failures: the master being down must not flood the log.
    conn_failures: FailureLog,
    /// Rate limit for broken connections, never reset by a reconnect: a master that accepts
    /// and then drops us at once (backoff resets after each handshake) must not flood the log.
    disconnects: FailureLog,
    /// Rate limit for samples lost to an unusable reading.
    sample_failures: FailureLog,
}

impl Agent {
    pub fn new(id: Identity, opts: Options, collector: Collector) -> Self {
        Agent {
            spool: Spool::new(opts.spool_samples),
            backoff: Backoff::new(opts.reconnect_max),
            id: Arc::new(id),
            opts,
            collector,
            handed_upto: Seq(0),
            seq: Seq(0),
            newest_dropped: 0,
            scratch: Vec::new(),
            conn_failures: FailureLog::default(),
            disconnects: FailureLog::default(),
            sample_failures: FailureLog::default(),
        }
    }

    /// Runs until SIGTERM or SIGINT; then says goodbye (if connected) and returns.
    pub async fn run(mut self) -> std::io::Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        tracing::info!(
            master = %self.opts.master, agent_id = %self.id.agent_id, hostname = %self.id.hostname,
            run_id = self.id.run_id, interval = %humantime::format_duration(self.id.interval),
            tls = self.opts.tls.is_some(),
            version = env!("CARGO_PKG_VERSION"),
            "Agent started."
        );
        // The priming CPU reading was taken at construction; the first sample needs a gap.
        tokio::time::sleep(crate::collect::PRIMING_DELAY).await;
        let mut ticker = crate::tick::Ticker::new(self.id.interval);
        let mut state = self.connect();
        let reason = loop {
            tokio::select! {
                _ = sigterm.recv() => break "sigterm",
                _ = sigint.recv() => break "sigint",
                _ = ticker.tick() => {
                    let ts_ms = unix_ms();
                    let reading = self.collector.sample();
                    self.produce(reading, ts_ms);
                    if let State::Up(live) = &mut state {
                        if let Err(e) = self.pump(live).and_then(|()| self.check_acks(live)) {
                            state = self.disconnected(e);
                        }
                    }
                }
                event = next_event(&mut state) => {
                    state = self.on_event(event, state);
                }
            }
        };
        self.stop(state, reason).await;
        Ok(())
    }

    fn connect(&self) -> State {
        tracing::debug!(master = %self.opts.master, "Connecting to the master.");
        let fut = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake(
                self.opts.master.clone(),
                self.id.clone(),
                self.opts.tls.clone(),
            ),
        );
        State::Connecting(Box::pin(async move {
            fut.await
                .unwrap_or(Err(ShipError::Timeout(HANDSHAKE_TIMEOUT)))
        }))
    }

    fn on_event(&mut self, event: Event, state: State) -> State {
        match (event, state) {
            (Event::RetryDue, _) => self.connect(),
            (Event::Handshake(Ok(session)), _) => self.established(session),
            (Event::Handshake(Err(e)), _) => self.failed(e),
            (Event::Frame(Some(Ok(body))), State::Up(mut live)) => {
                match decode_body::<MasterMessage>(&body) {
                    Ok(MasterMessage::Ack(ack)) => {
                        self.spool.ack(Seq(ack.seq));
                        live.last_progress = Instant::now();
                        match self.pump(&mut live) {
                            Ok(()) => State::Up(live),
                            Err(e) => self.disconnected(e),
                        }
                    }
                    Ok(MasterMessage::Refused(r)) => self.failed(ShipError::Refused {
                        code: r.code,
                        reason: r.reason,
                    }),
                    Ok(other) => self.disconnected(ShipError::Unexpected {
                        expected: "ack",
                        got: kind(&other),
                    }),
                    Err(e) => self.disconnected(e.into()),
                }
            }
            (Event::Frame(Some(Err(e))), _) => self.disconnected(e.into()),
            (Event::Frame(None), _) => self.disconnected(ShipError::Closed),
            (Event::WriterDone(e), _) => self.disconnected(ShipError::Io(std::io::Error::other(e))),
            (Event::Frame(_), state) => state,
        }
    }

    fn established(&mut self, session: Session) -> State {
        let Session {
            conn,
            last_seq,
            master_clock_ms,
            master_version,
        } = session;
        let failures = self.conn_failures.succeeded();
        self.backoff.reset();
        if last_seq > self.seq.0 {
            // Only a confused master claims samples we never produced; believing it would
            // silently skip every sample up to its number.
            tracing::warn!(
                last_seq,
                produced = self.seq.0,
                "The master claims more samples than this run produced; ignoring the excess."
            );
        }
        let last_seq = last_seq.min(self.seq.0);
        self.spool.settle(Seq(last_seq));
        self.spool.ack(Seq(last_seq));
        let backlog = self.spool.after(Seq(last_seq)).count();
        if self.disconnects.quiet() {
            // A flapping connection: the disconnect line was suppressed, so is this one.
            tracing::debug!(master = %self.opts.master, last_seq, backlog, "Reconnected to the master.");
        } else {
            tracing::info!(
                master = %self.opts.master, last_seq, backlog, failures_before = failures,
                "Connected to the master."
            );
        }
        if master_version != PROTOCOL_VERSION {
            tracing::warn!(
                master_version,
                our_version = PROTOCOL_VERSION,
                "The master speaks another protocol version."
            );
        }
        let offset = master_clock_ms.abs_diff(unix_ms());
        if master_clock_ms != 0 && offset > CLOCK_WARN_MS {
            tracing::warn!(
                offset_ms = offset,
                "This host's clock differs from the master's."
            );
        }
        let (sink, reader) = conn.split();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_FRAMES);
        let writer = tokio::spawn(write_loop(sink, rx));
        let mut live = Live {
            reader,
            tx,
            writer,
            sent_upto: Seq(last_seq),
            last_progress: Instant::now(),
        };
        match self.pump(&mut live) {
            Ok(()) => State::Up(live),
            Err(e) => self.disconnected(e),
        }
    }

    /// A handshake that did not succeed: log (rate-limited) and wait out the backoff.
    fn failed(&mut self, error: ShipError) -> State {
        let delay = self.backoff.next_delay();
        if let Some(suppressed) = self.conn_failures.failed() {
            let retry_in =
                humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                    .to_string();
            match &error {
                ShipError::Refused { code, reason } => tracing::error!(
                    master = %self.opts.master, code = %escape(code), reason = %escape(reason), suppressed, retry_in = %retry_in,
                    "The master refused this agent."
                ),
                ShipError::Tls(_) => tracing::error!(
                    master = %self.opts.master, error = %escape(&error), suppressed, retry_in = %retry_in,
                    "TLS with the master failed (a wrong or unexpected certificate?); nothing is sent to it and samples are spooled meanwhile."
                ),
                _ => tracing::warn!(
                    master = %self.opts.master, error = %escape(&error), suppressed, retry_in = %retry_in,
                    "Cannot reach the master; samples are spooled meanwhile."
                ),
            }
        }
        State::Idle {
            retry_at: Instant::now() + delay,
        }
    }

    /// An established connection broke: reconnect after the backoff.
    fn disconnected(&mut self, error: ShipError) -> State {
        if matches!(error, ShipError::Refused { .. }) {
            return self.failed(error);
        }
        let delay = self.backoff.next_delay();
        match self.disconnects.failed() {
            Some(suppressed) => tracing::warn!(
                master = %self.opts.master, error = %escape(&error), unacked = self.spool.len(), suppressed,
                "Lost the connection to the master; will reconnect."
            ),
            None => tracing::debug!(
                master = %self.opts.master, error = %escape(&error), unacked = self.spool.len(),
                "Lost the connection to the master again; will reconnect."
            ),
        }
        State::Idle {
            retry_at: Instant::now() + delay,
        }
    }

    /// Stamps one reading and spools it.
    fn produce(&mut self, result: Result<Sample, CollectError>, ts_ms: u64) {
        let mut sample = match result {
            Ok(s) => s,
            Err(error) => {
                if let Some(suppressed) = self.sample_failures.failed() {
                    tracing::error!(%error, suppressed, "Skipped a sample: the reading is unusable.");
                }
                return;
            }
        };
        self.spool.make_room(self.handed_upto);
        sample.seq = self.seq.0 + 1;
        sample.ts_ms = ts_ms;
        sample.dropped = self.spool.dropped();
        if let Err(error) = sample.validate() {
            tracing::error!(%error, "Skipped a sample that breaks a protocol limit.");
            return;
        }
        self.scratch.clear();
        if let Err(error) = sentinel_protocol::encode_sample(&sample, &mut self.scratch) {
            tracing::error!(%error, "Skipped a sample that cannot be encoded.");
            return;
        }
        self.seq = Seq(sample.seq);
        self.newest_dropped = sample.dropped;
        self.spool
            .push(self.seq, Box::from(self.scratch.as_slice()));
        tracing::debug!(
            seq = sample.seq,
            dropped = sample.dropped,
            spooled = self.spool.len(),
            "Took a sample."
        );
    }

    /// True if samples were handed to this connection and not acked yet.
    fn outstanding(&self, live: &Live) -> bool {
        self.spool.oldest().is_some_and(|seq| seq <= live.sent_upto)
    }

    /// Gives up on a connection whose master has not acked for the protocol's idle timeout.
    fn check_acks(&self, live: &Live) -> Result<(), ShipError> {
        let limit = idle_timeout(u32::try_from(self.id.interval.as_millis()).unwrap_or(u32::MAX));
        if self.outstanding(live) && live.last_progress.elapsed() > limit {
            return Err(ShipError::AckTimeout(limit));
        }
        Ok(())
    }

    /// Hands unsent spooled samples to the writer while its queue has room.
    fn pump(&mut self, live: &mut Live) -> Result<(), ShipError> {
        loop {
            if self.spool.after(live.sent_upto).next().is_none() {
                return Ok(());
            }
            let permit = match live.tx.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Full(())) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(())) => return Err(ShipError::Closed),
            };
            let Some((frame, upto)) = self.next_frame(live.sent_upto) else {
                return Ok(());
            };
            if let Some(frame) = frame {
                if !self.outstanding(live) {
                    live.last_progress = Instant::now();
                }
                permit.send(frame);
            }
            live.sent_upto = upto;
            self.handed_upto = self.handed_upto.max(upto);
        }
    }

    /// The next frame of spooled samples after `after`, and the seq it covers up to (the
    /// frame is None if that sample cannot be encoded and is skipped). None if nothing is
    /// pending.
    fn next_frame(&self, after: Seq) -> Option<(Option<Bytes>, Seq)> {
        let pending: Vec<_> = self.spool.after(after).take(MAX_BATCH_SAMPLES).collect();
        let last = pending.last()?.seq;
        // Every drop so far is of an older sample than any still spooled, so each sample sent
        // carries the run's whole count: the first one after a hole explains all of it, also
        // drops that happened after it was taken (a long outage keeps evicting).
        let dropped = self.spool.dropped();
        if let [newest] = pending.as_slice() {
            if newest.seq == self.seq && dropped == self.newest_dropped {
                // The usual case: one fresh sample whose spooled bytes are already right.
                let mut body = Vec::new();
                sentinel_protocol::sample_message_body(&newest.body, &mut body);
                if body.len() <= sentinel_protocol::limits::MAX_FRAME_BYTES {
                    return Some((Some(Bytes::from(body)), last));
                }
            }
        }
        let samples: Vec<Sample> = pending
            .iter()
            .filter_map(|e| sentinel_protocol::decode_sample(&e.body).ok())
            .map(|mut s| {
                s.dropped = s.dropped.max(dropped);
                s
            })
            .collect();
        let (frame, sent) = encode_samples(samples);
        Some((frame, sent.map_or(last, Seq)))
    }

    /// Planned stop: goodbye if connected, flushed with a deadline.
    async fn stop(self, state: State, reason: &'static str) {
        let last_seq = self.seq.0;
        let State::Up(mut live) = state else {
            tracing::info!(reason = %reason, last_seq, "Stopping; not connected, so no goodbye.");
            return;
        };
        let goodbye = AgentMessage::Goodbye(Goodbye {
            last_seq,
            reason: reason.to_owned(),
        });
        let sent = async {
            // Everything produced goes out first, so the goodbye's last_seq is complete.
            while let Some((frame, upto)) = self.next_frame(live.sent_upto) {
                if let Some(frame) = frame {
                    live.tx.send(frame).await.map_err(|e| e.to_string())?;
                }
                live.sent_upto = upto;
            }
            let frame = encode(&goodbye).map_err(|e| e.to_string())?;
            live.tx.send(frame).await.map_err(|e| e.to_string())?;
            // The close marker: the writer flushes and shuts the socket down.
            live.tx
                .send(Bytes::new())
                .await
                .map_err(|e| e.to_string())?;
            match (&mut live.writer).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        match tokio::time::timeout(GOODBYE_FLUSH, sent).await {
            Ok(Ok(())) => {
                tracing::info!(reason = %reason, last_seq, "Said goodbye to the master; stopping.")
            }
            Ok(Err(error)) => {
                tracing::warn!(reason = %reason, %error, "Could not send the goodbye; stopping anyway.")
            }
            Err(_) => tracing::warn!(
                reason = %reason,
                "The goodbye did not flush in time; stopping anyway."
            ),
        }
    }
}

/// One frame for consecutive samples: a `sample` frame for one, else a `batch` of as many as
/// fit in a frame. Returns the frame (None if even one sample is too large, which is then
/// skipped) and the seq of the last sample it covers.
fn encode_samples(mut samples: Vec<Sample>) -> (Option<Bytes>, Option<u64>) {
    if samples.len() == 1 {
        let s = samples.pop().expect("one sample");
        let seq = s.seq;
        return match encode(&AgentMessage::Sample(s)) {
            Ok(frame) => (Some(frame), Some(seq)),
            Err(error) => {
                tracing::error!(seq, %error, "Skipped a sample too large for a frame.");
                (None, Some(seq))
            }
        };
    }
    let mut n = samples.len();
    loop {
        let last = samples.get(n.saturating_sub(1)).map(|s| s.seq);
        let batch = AgentMessage::Batch(Batch {
            samples: samples[..n].to_vec(),
        });
        match encode(&batch) {
            Ok(frame) => return (Some(frame), last),
            Err(FrameError::TooLarge(_)) if n > 1 => n /= 2,
            Err(_) if n > 1 => n /= 2,
            Err(_) => {
                samples.truncate(1);
                return encode_samples(samples);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pending_sample_goes_as_a_sample_frame_several_as_a_batch() {
        let s = |seq| Sample {
            seq,
            ..Sample::default()
        };
        let (frame, last) = encode_samples(vec![s(7)]);
        let msg: AgentMessage = decode_body(&frame.unwrap()).unwrap();
        assert!(matches!(msg, AgentMessage::Sample(x) if x.seq == 7));
        assert_eq!(last, Some(7));
        let (frame, last) = encode_samples((1..=5).map(s).collect());
        let AgentMessage::Batch(b) = decode_body(&frame.unwrap()).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(
            b.samples.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(last, Some(5));
    }

    #[test]
    fn an_oversized_batch_is_split_to_fit_a_frame() {
        let big = |seq| Sample {
            seq,
            cpu_cores_percent: vec![50.0; 1024],
            filesystems: (0..64)
                .map(|i| sentinel_protocol::Filesystem {
                    mount: format!("/{i:0>250}"),
                    ..Default::default()
                })
                .collect(),
            ..Sample::default()
        };
        let samples: Vec<Sample> = (1..=64).map(big).collect();
        let (frame, last) = encode_samples(samples);
        let frame = frame.unwrap();
        assert!(frame.len() <= sentinel_protocol::limits::MAX_FRAME_BYTES);
        let AgentMessage::Batch(b) = decode_body(&frame).unwrap() else {
            panic!("not a batch")
        };
        assert!(b.samples.len() < 64);
        assert_eq!(last, Some(b.samples.len() as u64));
    }
}
