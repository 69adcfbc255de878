//! The remote_write forwarder (optional, `[remote_write]` in master.toml). It runs in the http
//! process and only reads the table: every host's history ring holds one point per stored
//! sample with the agent's own timestamp, replayed samples included, so the forwarder keeps a
//! cursor per slot and sends every point past it (as `sentinel_host_cpu_ratio`,
//! `sentinel_host_memory_used_bytes` and `sentinel_host_load1`, labelled `host`, `id`, the
//! `[remote_write] labels` and the host's own labels; a host label named like one of the
//! configured labels is left out: the operator's value wins, see [`host_key`]).
//!
//! Delivery:
//! - A bounded queue between the table scan and the sender. When it is full the scan stops
//!   advancing and the rings buffer; points a ring overwrites before they were read are
//!   counted as dropped.
//! - One request in flight, in order, so every series stays in timestamp order. 5xx, 429 and
//!   network errors are retried with exponential backoff; other 4xx are dropped and counted.
//! - On SIGTERM the forwarder waits until the collector has exited (the supervisor stops both
//!   children together; the collector acks a sample only after it is in the table), reads the
//!   table one last time and sends everything before exiting, within [`FLUSH_WITHIN`]. So every
//!   sample an agent had acked by this master is sent, and what the agent replays to the next
//!   master is what this one never acked. A sample stored here but not yet acked is sent by
//!   both: identical timestamp and value, which Prometheus accepts as the same sample.
//! - Prometheus rejects a whole request if one sample in it is older than its series' newest
//!   (remote-write 1.0 receivers roll the request back), so nothing at or before a host's
//!   newest accepted timestamp is ever sent again: that high-water mark per agent id is kept
//!   in memory and in `<state_dir>/<shm_name>.remote-write` (written after each second of
//!   accepted requests and after the final flush). A restarted master, whose table was
//!   restored from a snapshot or refilled by the agents' replay, resumes exactly after it.
//! - Net and disk rates are not forwarded: the first rate after a master restart is computed
//!   without a base (0) and would conflict with the old master's value for the same sample.

mod wire;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::RemoteWrite;
use crate::segment::now_ms;
use crate::table::{HistoryPoint, Table};

/// How often the table is scanned for new points (a sample leaves within about this).
const SCAN_EVERY: Duration = Duration::from_millis(200);
/// After SIGTERM, everything must be sent within this: the supervisor kills a child that
/// has not exited 5 s after SIGTERM.
const FLUSH_WITHIN: Duration = Duration::from_millis(4500);
/// Of that, how long to wait for the collector to exit before the final scan.
const COLLECTOR_EXIT_WAIT: Duration = Duration::from_millis(2500);
/// Series per history point.
const SERIES: usize = 3;
/// A point whose timestamp (the agent's clock) is further than this ahead of the master's
/// clock when it is scanned is never sent and never raises a high-water mark: one sample
/// stamped in 2100 (or u64::MAX, which is -1 as the protobuf's i64) would otherwise make every
/// later point of that host look old, for good. 10 min is beyond any sane NTP-kept clock, and
/// what the fault suite's skewed agents (10 min ahead) stay within.
pub const MAX_AHEAD: Duration = Duration::from_secs(600);

/// The forwarder's counters, shown in /metrics.
#[derive(Default)]
pub struct Forwarder {
    /// Samples the receiver accepted.
    sent: AtomicU64,
    /// Samples given up: rejected (4xx), overwritten in a ring before they were read, or
    /// still queued when the flush deadline passed.
    dropped: AtomicU64,
    /// Samples not sent because their timestamp was more than [`MAX_AHEAD`] ahead of the
    /// master's clock (also counted in `dropped`).
    future: AtomicU64,
    /// Requests that failed (each is retried or its samples dropped).
    failed_requests: AtomicU64,
    /// Samples waiting in the queue.
    queued: AtomicU64,
    /// Unix ms of the last accepted request.
    last_success_ms: AtomicU64,
}

impl Forwarder {
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let families: [(&str, &str, &str, f64); 6] = [
            ("sentinel_remote_write_samples_sent_total", "counter", "Samples the remote-write receiver accepted.", self.sent.load(Ordering::Relaxed) as f64),
            ("sentinel_remote_write_samples_dropped_total", "counter", "Samples the forwarder gave up on (rejected by the receiver, overwritten in a history ring before they were read, unsent at shutdown, or timestamped too far ahead).", self.dropped.load(Ordering::Relaxed) as f64),
            ("sentinel_remote_write_samples_future_total", "counter", "Samples never sent because their timestamp was more than 10 minutes ahead of the master's clock (also in samples_dropped_total).", self.future.load(Ordering::Relaxed) as f64),
            ("sentinel_remote_write_requests_failed_total", "counter", "Remote-write requests that failed (retried, or dropped if rejected).", self.failed_requests.load(Ordering::Relaxed) as f64),
            ("sentinel_remote_write_queue_samples", "gauge", "Samples waiting to be sent.", self.queued.load(Ordering::Relaxed) as f64),
            ("sentinel_remote_write_last_success_timestamp_seconds", "gauge", "When the receiver last accepted a request (unix seconds; 0 = never).", self.last_success_ms.load(Ordering::Relaxed) as f64 / 1000.0),
        ];
        for (name, kind, help, v) in families {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        out
    }
}

/// A host as the forwarder labels it.
struct HostKey {
    id: String,
    labels: Vec<wire::Label>,
}

/// One history point waiting to be sent, with its host.
struct Pending {
    host: Arc<HostKey>,
    point: HistoryPoint,
}

/// Per agent id, the newest timestamp the receiver accepted (persisted across restarts).
#[derive(Default)]
struct HighWater {
    accepted: std::collections::HashMap<String, u64>,
    dirty: bool,
}

impl HighWater {
    /// Reads the marks saved by [`HighWater::save`]. A mark more than [`MAX_AHEAD`] past
    /// `now_ms` (saved by a master before that bound existed, after one far-future sample)
    /// is lowered to `now_ms`, so that host's forwarding resumes.
    fn load(path: &std::path::Path, now_ms: u64) -> HighWater {
        let mut hw = HighWater::default();
        let Ok(text) = std::fs::read_to_string(path) else {
            return hw;
        };
        let limit = now_ms.saturating_add(MAX_AHEAD.as_millis() as u64);
        for line in text.lines() {
            let mut it = line.split_whitespace();
            if let (Some(id), Some(ts)) = (it.next(), it.next().and_then(|t| t.parse::<u64>().ok()))
            {
                if sentinel_protocol::is_valid_agent_id(id) {
                    let ts = if ts > limit {
                        tracing::warn!(id, mark_ms = ts, now_ms, "remote_write: a saved high-water mark is in the future; lowered to now");
                        hw.dirty = true;
                        now_ms
                    } else {
                        ts
                    };
                    hw.accepted.insert(id.to_string(), ts);
                }
            }
        }
        hw
    }

    fn save(&mut self, path: &std::path::Path) {
        if !self.dirty {
            return;
        }
        let mut text = String::with_capacity(self.accepted.len() * 48);
        for (id, ts) in &self.accepted {
            let _ = writeln!(text, "{id} {ts}");
        }
        let tmp = path.with_extension("remote-write.tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        match result {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "remote_write: cannot save the sent high-water marks")
            }
        }
    }
}

/// How often the high-water marks are saved while running.
const SAVE_EVERY: Duration = Duration::from_secs(1);

struct Queue {
    points: Mutex<VecDeque<Pending>>,
    high_water: Mutex<HighWater>,
    /// Wakes the sender when points arrive.
    ready: Notify,
    /// Set after the final scan: once the queue is empty the sender is done.
    final_scan_done: AtomicBool,
}

/// Starts the forwarder; the task ends after the flush that follows `stopping`.
pub fn start(
    table: &'static Table,
    cfg: RemoteWrite,
    state_file: std::path::PathBuf,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<Forwarder>, JoinHandle<()>)> {
    let fwd = Arc::new(Forwarder::default());
    let high_water = HighWater::load(&state_file, now_ms());
    tracing::info!(
        hosts = high_water.accepted.len(),
        path = %state_file.display(),
        "remote_write: resuming after the high-water marks"
    );
    let queue = Arc::new(Queue {
        points: Mutex::new(VecDeque::new()),
        high_water: Mutex::new(high_water),
        ready: Notify::new(),
        final_scan_done: AtomicBool::new(false),
    });
    tracing::info!(
        receiver = %cfg.authority,
        path = %cfg.path,
        "remote_write forwarder started"
    );
    let cfg = Arc::new(cfg);
    let scan = scan_loop(
        table,
        cfg.clone(),
        queue.clone(),
        fwd.clone(),
        stopping.clone(),
    );
    let send = send_loop(cfg, queue, fwd.clone(), stopping, state_file);
    let task = tokio::spawn(async move {
        tokio::join!(scan, send);
    });
    Ok((fwd, task))
}

/// Per slot: how far it has been read.
#[derive(Default, Clone)]
struct Cursor {
    /// Number of the next history point to read.
    next: u64,
    /// The slot's seqlock counter when it was last read completely.
    version: u64,
    /// Points at or before this timestamp were already queued or accepted: never resend.
    floor_ts: u64,
    /// The host as last labelled (rebuilt when its hostname or labels change).
    host: Option<CachedHost>,
}

/// What a [`HostKey`] was built from, to notice a new hello's hostname or labels.
#[derive(Clone)]
struct CachedHost {
    hostname: String,
    labels: Vec<(String, String)>,
    key: Arc<HostKey>,
}

async fn scan_loop(
    table: &'static Table,
    cfg: Arc<RemoteWrite>,
    queue: Arc<Queue>,
    fwd: Arc<Forwarder>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut cursors: Vec<Cursor> = Vec::new();
    let mut every = tokio::time::interval(SCAN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.changed() => break,
        }
        scan(table, &cfg, &mut cursors, &queue, &fwd, now_ms());
    }
    wait_for_collector_exit(table, Instant::now() + COLLECTOR_EXIT_WAIT).await;
    scan(table, &cfg, &mut cursors, &queue, &fwd, now_ms());
    queue.final_scan_done.store(true, Ordering::Release);
    queue.ready.notify_one();
}

/// After SIGTERM: everything the collector acked is in the table once it has exited.
async fn wait_for_collector_exit(table: &Table, deadline: Instant) {
    let header = table.header();
    let pid = header.collector_pid.load(Ordering::Acquire);
    loop {
        // SAFETY: signal 0 only checks that the process exists (it is reaped by the
        // supervisor right after it exits, so a zombie does not linger).
        let gone = pid == 0
            || header.collector_pid.load(Ordering::Acquire) != pid
            || unsafe { libc::kill(pid as libc::pid_t, 0) } != 0;
        if gone {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                pid,
                "remote_write: the collector is still running; flushing anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The labels of a host's series: `host`, `id`, the configured `[remote_write] labels`, then
/// the host's own labels (PROTOCOL.md 1.2). A receiver rejects a series that names a label
/// twice (and with it the whole request), so a host label whose name is already taken is left
/// out: `host` and `id` cannot be host labels (the hello refuses them), and a configured label
/// is the operator's, who outranks the agent as `[[host_labels]]` does. Names a damaged table
/// image could hold that are no usable label name are left out too.
fn host_key(
    cfg: &RemoteWrite,
    host: &str,
    id: &str,
    host_labels: &[(String, String)],
) -> Arc<HostKey> {
    let mut labels: Vec<wire::Label> = [("host", host), ("id", id)]
        .into_iter()
        .chain(cfg.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map(|(name, value)| wire::Label {
            name: name.into(),
            value: value.into(),
        })
        .collect();
    for (name, value) in host_labels {
        if crate::http::metrics::usable_host_label(name) && !labels.iter().any(|l| l.name == *name)
        {
            labels.push(wire::Label {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    Arc::new(HostKey {
        id: id.to_string(),
        labels,
    })
}

/// Moves every new history point of every host into the queue, as far as it has room.
/// Points more than [`MAX_AHEAD`] past `now_ms` (the master's wall clock) are counted and
/// skipped: never queued, so they never raise a high-water mark.
fn scan(
    table: &Table,
    cfg: &RemoteWrite,
    cursors: &mut Vec<Cursor>,
    queue: &Queue,
    fwd: &Forwarder,
    now_ms: u64,
) {
    let count = table.host_count();
    cursors.resize(count, Cursor::default());
    let mut added = false;
    for (i, cursor) in cursors.iter_mut().enumerate() {
        let version = table.slot_version(i);
        if version == cursor.version && version % 2 == 0 && cursor.host.is_some() {
            continue;
        }
        let room = cfg
            .queue_samples
            .saturating_sub(queue.points.lock().map_or(0, |q| q.len()) * SERIES)
            / SERIES;
        if room == 0 {
            break; // the rings hold the rest until the sender catches up
        }
        let Some(recent) = table.read_history(i, cursor.next, usize::MAX, false) else {
            continue;
        };
        let rec = &recent.record;
        if rec.in_use != 1 {
            // A free slot (removed or expired host): the next host in it starts from point 0.
            *cursor = Cursor::default();
            continue;
        }
        if cursor
            .host
            .as_ref()
            .is_some_and(|c| c.key.id != rec.agent_id())
        {
            // The slot went to another host between two scans: start over at its point 0.
            *cursor = Cursor::default();
            continue;
        }
        if recent.first > cursor.next {
            let lost = recent.first - cursor.next;
            fwd.dropped
                .fetch_add(lost * SERIES as u64, Ordering::Relaxed);
            tracing::warn!(
                slot = i,
                lost,
                "remote_write: history points overwritten before they were sent"
            );
        }
        let (hostname, id, labels) = (rec.hostname.get(), rec.agent_id(), rec.labels());
        let host = match &cursor.host {
            Some(c) if c.hostname == hostname && c.key.id == id && c.labels == labels => {
                c.key.clone()
            }
            _ => {
                if cursor.host.as_ref().is_none_or(|c| c.key.id != id) {
                    cursor.floor_ts = queue
                        .high_water
                        .lock()
                        .ok()
                        .and_then(|hw| hw.accepted.get(&id).copied())
                        .unwrap_or(0);
                }
                let key = host_key(cfg, &hostname, &id, &labels);
                cursor.host = Some(CachedHost {
                    hostname,
                    labels,
                    key: key.clone(),
                });
                key
            }
        };
        let take = recent.points.len().min(room);
        if take == recent.points.len() {
            cursor.version = version;
        }
        cursor.next = recent.first + take as u64;
        let floor = cursor.floor_ts;
        let ahead = now_ms.saturating_add(MAX_AHEAD.as_millis() as u64);
        let future = recent.points[..take]
            .iter()
            .filter(|p| p.ts_ms > ahead)
            .count() as u64;
        if future > 0 {
            fwd.future
                .fetch_add(future * SERIES as u64, Ordering::Relaxed);
            fwd.dropped
                .fetch_add(future * SERIES as u64, Ordering::Relaxed);
            tracing::warn!(
                slot = i,
                id = %host.id,
                points = future,
                now_ms,
                "remote_write: points timestamped more than 10 min ahead of the master's clock are not sent"
            );
        }
        let fresh: Vec<&HistoryPoint> = recent.points[..take]
            .iter()
            .filter(|p| p.ts_ms > floor && p.ts_ms <= ahead)
            .collect();
        if let Some(p) = fresh.last() {
            cursor.floor_ts = p.ts_ms;
        }
        if !fresh.is_empty() {
            if let Ok(mut q) = queue.points.lock() {
                q.extend(fresh.into_iter().map(|p| Pending {
                    host: host.clone(),
                    point: *p,
                }));
                fwd.queued
                    .store((q.len() * SERIES) as u64, Ordering::Relaxed);
            }
            added = true;
        }
    }
    if added {
        queue.ready.notify_one();
    }
}

/// The request for the queue's first `n` points: one series per host and metric, samples in
/// timestamp order.
fn build_request(points: &VecDeque<Pending>, n: usize) -> wire::WriteRequest {
    let mut series: Vec<wire::TimeSeries> = Vec::new();
    let mut index: std::collections::HashMap<(*const HostKey, usize), usize> =
        std::collections::HashMap::new();
    type Metric = (&'static str, fn(&HistoryPoint) -> f64);
    const METRICS: [Metric; SERIES] = [
        ("sentinel_host_cpu_ratio", |p| {
            f64::from(p.cpu_percent) / 100.0
        }),
        ("sentinel_host_memory_used_bytes", |p| {
            p.mem_used_bytes as f64
        }),
        ("sentinel_host_load1", |p| f64::from(p.load1)),
    ];
    for pending in points.iter().take(n) {
        for (m, (name, value)) in METRICS.iter().enumerate() {
            let key = (Arc::as_ptr(&pending.host), m);
            let at = *index.entry(key).or_insert_with(|| {
                let mut labels = vec![wire::Label {
                    name: "__name__".into(),
                    value: (*name).into(),
                }];
                labels.extend(pending.host.labels.iter().cloned());
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                series.push(wire::TimeSeries {
                    labels,
                    samples: Vec::new(),
                });
                series.len() - 1
            });
            series[at].samples.push(wire::Sample {
                value: value(&pending.point),
                timestamp: pending.point.ts_ms as i64,
            });
        }
    }
    wire::WriteRequest { timeseries: series }
}

enum Outcome {
    Accepted,
    Rejected(StatusCode),
    Retry(String),
}

async fn send_loop(
    cfg: Arc<RemoteWrite>,
    queue: Arc<Queue>,
    fwd: Arc<Forwarder>,
    stopping: watch::Receiver<bool>,
    state_file: std::path::PathBuf,
) {
    let mut backoff = cfg.min_backoff;
    let mut saved = Instant::now();
    let save = |queue: &Queue| {
        if let Ok(mut hw) = queue.high_water.lock() {
            hw.save(&state_file);
        }
    };
    let mut deadline: Option<Instant> = None;
    let per_request = (cfg.batch_samples / SERIES).max(1);
    loop {
        if deadline.is_none() && *stopping.borrow() {
            deadline = Some(Instant::now() + FLUSH_WITHIN);
        }
        let batch = queue.points.lock().ok().and_then(|q| {
            let n = q.len().min(per_request);
            (n > 0).then(|| (n, build_request(&q, n)))
        });
        let Some((n, request)) = batch else {
            if queue.final_scan_done.load(Ordering::Acquire) {
                save(&queue);
                return;
            }
            if saved.elapsed() >= SAVE_EVERY {
                save(&queue);
                saved = Instant::now();
            }
            let _ = tokio::time::timeout(SCAN_EVERY, queue.ready.notified()).await;
            continue;
        };
        let timeout = match deadline {
            Some(d) => cfg.timeout.min(d.saturating_duration_since(Instant::now())),
            None => cfg.timeout,
        };
        let body = wire::encode(&request);
        let outcome = match tokio::time::timeout(timeout, post(&cfg, body)).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry("timed out".into()),
        };
        let samples = (n * SERIES) as u64;
        match outcome {
            Outcome::Accepted => {
                fwd.sent.fetch_add(samples, Ordering::Relaxed);
                fwd.last_success_ms.store(now_ms(), Ordering::Relaxed);
                accept(&queue, n);
                remove_front(&queue, &fwd, n);
                if saved.elapsed() >= SAVE_EVERY {
                    save(&queue);
                    saved = Instant::now();
                }
                backoff = cfg.min_backoff;
            }
            Outcome::Rejected(status) => {
                fwd.failed_requests.fetch_add(1, Ordering::Relaxed);
                fwd.dropped.fetch_add(samples, Ordering::Relaxed);
                tracing::warn!(%status, samples, "remote_write: the receiver rejected a request; its samples are dropped");
                remove_front(&queue, &fwd, n);
            }
            Outcome::Retry(error) => {
                fwd.failed_requests.fetch_add(1, Ordering::Relaxed);
                if deadline.is_some_and(|d| Instant::now() + backoff >= d) {
                    let left = queue.points.lock().map_or(0, |q| q.len());
                    fwd.dropped
                        .fetch_add((left * SERIES) as u64, Ordering::Relaxed);
                    tracing::warn!(%error, samples = left * SERIES, "remote_write: shutting down with unsent samples");
                    save(&queue);
                    return;
                }
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "remote_write: request failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
    }
}

/// Raises the high-water marks to the newest timestamps of the first `n` queued points.
fn accept(queue: &Queue, n: usize) {
    let (Ok(q), Ok(mut hw)) = (queue.points.lock(), queue.high_water.lock()) else {
        return;
    };
    for p in q.iter().take(n) {
        let e = hw.accepted.entry(p.host.id.clone()).or_insert(0);
        *e = (*e).max(p.point.ts_ms);
    }
    hw.dirty = true;
}

fn remove_front(queue: &Queue, fwd: &Forwarder, n: usize) {
    if let Ok(mut q) = queue.points.lock() {
        let n = n.min(q.len());
        q.drain(..n);
        fwd.queued
            .store((q.len() * SERIES) as u64, Ordering::Relaxed);
    }
}

async fn post(cfg: &RemoteWrite, body: Vec<u8>) -> Outcome {
    let stream = match tokio::net::TcpStream::connect(&cfg.authority).await {
        Ok(s) => s,
        Err(e) => return Outcome::Retry(format!("connect {}: {e}", cfg.authority)),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    tokio::spawn(conn);
    let request = Request::post(cfg.path.as_str())
        .header(HOST, cfg.authority.as_str())
        .header(CONTENT_TYPE, "application/x-protobuf")
        .header(CONTENT_ENCODING, "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .header(
            USER_AGENT,
            concat!("sentinel-master/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)));
    let Ok(request) = request else {
        return Outcome::Rejected(StatusCode::BAD_REQUEST);
    };
    match sender.send_request(request).await {
        Ok(resp) => {
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Outcome::Accepted
            } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                Outcome::Retry(format!("HTTP {status}"))
            } else {
                Outcome::Rejected(status)
            }
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{account, Record, TestTable};
    use sentinel_protocol::{Hello, HostInfo, Sample};

    fn cfg(queue_samples: usize) -> RemoteWrite {
        RemoteWrite {
            authority: "127.0.0.1:1".into(),
            path: "/w".into(),
            queue_samples,
            batch_samples: 30,
            timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            labels: vec![("master".into(), "dc1".into())],
        }
    }

    /// The master's clock in these tests: far past every test point's timestamp (1000 * seq).
    const NOW: u64 = 100_000_000;

    fn store(t: &Table, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            store_at(t, seq, 1000 * seq);
        }
    }

    /// Stores sample `seq` stamped `ts_ms` (the agent's clock).
    fn store_at(t: &Table, seq: u64, ts_ms: u64) {
        let w = t.writer().unwrap();
        let hello = Hello {
            version: 1,
            agent_id: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
            run_id: 1,
            hostname: "web-1".into(),
            interval_ms: 1000,
            clock_ms: 0,
            agent_version: "1".into(),
            host: HostInfo::default(),
            proof: vec![0; 32],
            key: None,
            key_proof: None,
            labels: Default::default(),
        };
        let mut rec = if t.host_count() == 0 {
            let mut r = Record::zeroed();
            account::handshake(&mut r, &hello, "x", 1);
            r
        } else {
            w.record(0)
        };
        let s = Sample {
            seq,
            ts_ms,
            cpu_percent: seq as f32,
            ..Sample::default()
        };
        let (_, point) = account::apply_sample(&mut rec, &s, false, 1);
        w.commit(0, rec, None, point);
        w.publish_host_count(1);
    }

    fn queued_ts(q: &Queue) -> Vec<u64> {
        q.points
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.point.ts_ms)
            .collect()
    }

    fn queue_with(hw: HighWater) -> Queue {
        Queue {
            points: Mutex::new(VecDeque::new()),
            high_water: Mutex::new(hw),
            ready: Notify::new(),
            final_scan_done: AtomicBool::new(false),
        }
    }

    #[test]
    fn a_far_future_timestamp_is_dropped_and_counted_and_never_stops_forwarding() {
        // Year 2100, u64::MAX (sent as -1 in the protobuf's i64), and just past the bound.
        let year_2100 = 4_102_444_800_000;
        let just_past = NOW + MAX_AHEAD.as_millis() as u64 + 1;
        let just_within = NOW + MAX_AHEAD.as_millis() as u64;
        let t = TestTable::new(2, 32);
        let (q, fwd) = (queue_with(HighWater::default()), Forwarder::default());
        let mut cursors = Vec::new();
        store(&t.table, 1..=3);
        store_at(&t.table, 4, year_2100);
        store_at(&t.table, 5, u64::MAX);
        store_at(&t.table, 6, just_past);
        store(&t.table, 7..=8);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        assert_eq!(queued_ts(&q), vec![1000, 2000, 3000, 7000, 8000]);
        assert_eq!(fwd.future.load(Ordering::Relaxed), 3 * SERIES as u64);
        assert_eq!(fwd.dropped.load(Ordering::Relaxed), 3 * SERIES as u64);
        assert!(fwd
            .metrics_text()
            .contains("\nsentinel_remote_write_samples_future_total 9\n"));
        // Accepted: the mark is the newest sent point, not the far-future one...
        accept(&q, 5);
        remove_front(&q, &fwd, 5);
        assert_eq!(
            q.high_water
                .lock()
                .unwrap()
                .accepted
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![8000]
        );
        // ...so forwarding goes on with the next points (a point at the bound is sent).
        store(&t.table, 9..=10);
        store_at(&t.table, 11, just_within);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        assert_eq!(queued_ts(&q), vec![9000, 10_000, just_within]);
        assert_eq!(fwd.future.load(Ordering::Relaxed), 3 * SERIES as u64);
    }

    #[test]
    fn a_host_series_carries_its_labels_and_the_configured_ones_win_a_shared_name() {
        let host_labels: Vec<(String, String)> = [
            ("dc", "eu1"),
            ("master", "agent-says"),
            ("note", "a\"b\\c ü"),
            ("role", "db"),
            ("host", "damaged"),
            ("__name__", "damaged"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let key = host_key(&cfg(1000), "web-1", "aa", &host_labels);
        let got: Vec<(&str, &str)> = key
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        // Values go unescaped into the protobuf; names sorted; each name once.
        assert_eq!(
            got,
            vec![
                ("dc", "eu1"),
                ("host", "web-1"),
                ("id", "aa"),
                ("master", "dc1"),
                ("note", "a\"b\\c ü"),
                ("role", "db"),
            ]
        );
        assert_eq!(host_key(&cfg(1000), "h", "i", &[]).labels.len(), 3);
    }

    #[test]
    fn points_read_after_a_new_hello_carry_the_new_labels_and_earlier_ones_keep_theirs() {
        let t = TestTable::new(2, 16);
        let relabel = |labels: &[(&str, &str)]| {
            let w = t.table.writer().unwrap();
            let mut rec = w.record(0);
            rec.set_labels(
                &labels
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            );
            w.commit(0, rec, None, None);
        };
        let (q, fwd) = (queue_with(HighWater::default()), Forwarder::default());
        let mut cursors = Vec::new();
        store(&t.table, 1..=2);
        relabel(&[("role", "db")]);
        store(&t.table, 3..=4);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        relabel(&[("dc", "eu1"), ("role", "web")]);
        store(&t.table, 5..=5);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        let role = |p: &Pending| {
            p.host
                .labels
                .iter()
                .filter(|l| l.name == "role" || l.name == "dc")
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>()
                .join(",")
        };
        let got: Vec<(u64, String)> = q
            .points
            .lock()
            .unwrap()
            .iter()
            .map(|p| (p.point.ts_ms, role(p)))
            .collect();
        // Labels are read with the points: the first scan saw role=db for all four.
        let db = "role=db".to_string();
        assert_eq!(
            got,
            vec![
                (1000, db.clone()),
                (2000, db.clone()),
                (3000, db.clone()),
                (4000, db),
                (5000, "dc=eu1,role=web".to_string()),
            ]
        );
        // One request: a label change is a new series, never a series with two label sets.
        let req = build_request(&q.points.lock().unwrap(), 5);
        assert_eq!(req.timeseries.len(), 2 * SERIES);
        assert_eq!(req.timeseries[0].samples.len(), 4);
        assert_eq!(req.timeseries[SERIES].samples.len(), 1);
    }

    #[test]
    fn a_saved_high_water_mark_in_the_future_is_lowered_to_now_on_load() {
        let dir = std::env::temp_dir().join(format!("sentinel-rw-future-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.remote-write");
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        // What a master before the bound saved after one sample stamped u64::MAX.
        std::fs::write(&path, format!("{a} {}\n{b} 5000\n", u64::MAX)).unwrap();
        let mut hw = HighWater::load(&path, NOW);
        assert_eq!(hw.accepted[&a], NOW);
        assert_eq!(hw.accepted[&b], 5000);
        hw.save(&path);
        assert_eq!(HighWater::load(&path, NOW).accepted[&a], NOW);
        // The host resumes: points after now are sent again.
        let t = TestTable::new(2, 8);
        store_at(&t.table, 1, NOW + 1000);
        let q = queue_with(HighWater::load(&path, NOW));
        scan(
            &t.table,
            &cfg(1000),
            &mut Vec::new(),
            &q,
            &Forwarder::default(),
            NOW,
        );
        assert_eq!(queued_ts(&q), vec![NOW + 1000]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scan_queues_each_point_once_and_counts_points_the_ring_overwrote() {
        let t = TestTable::new(2, 8);
        let (q, fwd) = (
            Queue {
                points: Mutex::new(VecDeque::new()),
                high_water: Mutex::new(HighWater::default()),
                ready: Notify::new(),
                final_scan_done: AtomicBool::new(false),
            },
            Forwarder::default(),
        );
        let mut cursors = Vec::new();
        store(&t.table, 1..=5);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW); // nothing new
        let ts: Vec<u64> = q
            .points
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.point.ts_ms)
            .collect();
        assert_eq!(ts, vec![1000, 2000, 3000, 4000, 5000]);
        // A full queue stops the scan; the ring (8 points) keeps what was not read.
        q.points.lock().unwrap().clear();
        store(&t.table, 6..=9);
        scan(&t.table, &cfg(2 * SERIES), &mut cursors, &q, &fwd, NOW);
        assert_eq!(q.points.lock().unwrap().len(), 2);
        q.points.lock().unwrap().clear();
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        let ts: Vec<u64> = q
            .points
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.point.ts_ms)
            .collect();
        assert_eq!(ts, vec![8000, 9000]);
        assert_eq!(fwd.dropped.load(Ordering::Relaxed), 0);
        // Twelve more points into an 8-point ring: 4 are gone before they were read.
        q.points.lock().unwrap().clear();
        store(&t.table, 10..=21);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        assert_eq!(q.points.lock().unwrap().len(), 8);
        assert_eq!(fwd.dropped.load(Ordering::Relaxed), 4 * SERIES as u64);
        // The request: one series per metric, labels sorted, original timestamps.
        let req = build_request(&q.points.lock().unwrap(), 8);
        assert_eq!(req.timeseries.len(), SERIES);
        let names: Vec<&str> = req.timeseries[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, vec!["__name__", "host", "id", "master"]);
        assert_eq!(req.timeseries[0].samples[0].timestamp, 14_000);
        assert_eq!(req.timeseries[0].samples[0].value, 0.14);
    }

    #[test]
    fn a_slot_freed_and_taken_by_another_host_is_read_from_its_first_point() {
        let t = TestTable::new(2, 8);
        let q = Queue {
            points: Mutex::new(VecDeque::new()),
            high_water: Mutex::new(HighWater::default()),
            ready: Notify::new(),
            final_scan_done: AtomicBool::new(false),
        };
        let fwd = Forwarder::default();
        let mut cursors = Vec::new();
        store(&t.table, 1..=5);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        q.points.lock().unwrap().clear();
        let w = t.table.writer().unwrap();
        w.clear(0); // removed
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW); // sees the free slot
        let mut rec = Record::zeroed();
        let hello = Hello {
            version: 1,
            agent_id: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
            run_id: 1,
            hostname: "web-2".into(),
            interval_ms: 1000,
            clock_ms: 0,
            agent_version: "1".into(),
            host: HostInfo::default(),
            proof: vec![0; 32],
            key: None,
            key_proof: None,
            labels: Default::default(),
        };
        account::handshake(&mut rec, &hello, "x", 1);
        for seq in 1..=3 {
            let s = Sample {
                seq,
                ts_ms: 10_000 + 1000 * seq,
                ..Sample::default()
            };
            let (_, point) = account::apply_sample(&mut rec, &s, false, 1);
            w.commit_in_place(0, &mut rec, None, point);
        }
        // Two scans: the first notices the new host and starts over, the second reads it.
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        scan(&t.table, &cfg(1000), &mut cursors, &q, &fwd, NOW);
        let got: Vec<(String, u64)> = q
            .points
            .lock()
            .unwrap()
            .iter()
            .map(|p| (p.host.id.clone(), p.point.ts_ms))
            .collect();
        let b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".to_string();
        assert_eq!(
            got,
            vec![(b.clone(), 11_000), (b.clone(), 12_000), (b, 13_000)]
        );
    }

    #[test]
    fn a_restarted_forwarder_resumes_after_the_saved_high_water_mark() {
        let t = TestTable::new(2, 16);
        store(&t.table, 1..=6);
        let dir = std::env::temp_dir().join(format!("sentinel-rw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.remote-write");
        let new_queue = |hw| Queue {
            points: Mutex::new(VecDeque::new()),
            high_water: Mutex::new(hw),
            ready: Notify::new(),
            final_scan_done: AtomicBool::new(false),
        };
        // First process: points 1..=4 accepted, 5 and 6 not yet.
        let q = new_queue(HighWater::default());
        let fwd = Forwarder::default();
        scan(&t.table, &cfg(1000), &mut Vec::new(), &q, &fwd, NOW);
        accept(&q, 4);
        q.high_water.lock().unwrap().save(&path);
        // Next process (same table restored, or the agents' replay): only 5 and 6 are sent.
        let q = new_queue(HighWater::load(&path, NOW));
        scan(&t.table, &cfg(1000), &mut Vec::new(), &q, &fwd, NOW);
        let ts: Vec<u64> = q
            .points
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.point.ts_ms)
            .collect();
        assert_eq!(ts, vec![5000, 6000]);
        assert_eq!(fwd.dropped.load(Ordering::Relaxed), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
