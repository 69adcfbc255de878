//! GET /api/v1/events: live updates as Server-Sent Events.
//!
//! One watcher task per http process polls the table every [`WATCH_EVERY`]: it compares each
//! slot's seqlock counter (no copy) and each host's derived status with what it saw last, and
//! broadcasts the changed hosts as one `hosts` event. Every client gets a `snapshot` event
//! (every host's fleet row: the HOST fields the fleet view shows, plus its extras) when it
//! connects, then the shared `hosts` events, `removed` events (`{"now_ms", "ids"}`: hosts
//! whose slot was freed) and a `tick` with the master's clock every second. A client that falls behind the broadcast is
//! disconnected; its EventSource reconnects and starts again from a fresh snapshot.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use super::api::{collector_alive, fleet_row, SlotState};
use super::{Body, Data, State};
use crate::segment::now_ms;
use crate::table::Table;

/// How often the watcher looks at the table: a sample reaches the browser within this plus
/// the network, well inside the 1 s the dashboard promises.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// A `tick` (the master's clock) goes out this often, so "last seen" advances and a client can
/// tell a silent connection from a dead one.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// Events a slow client may be behind before it is dropped (it reconnects with a snapshot).
const BACKLOG: usize = 64;
/// The browser's reconnect delay after the stream breaks.
const RETRY_MS: u64 = 1000;

/// The shared feed of rendered events.
pub struct Feed {
    tx: broadcast::Sender<Bytes>,
    /// Hosts a new client's snapshot held, by slot: the watcher takes them as its baseline
    /// for slots it has not looked at yet, so a host removed before the watcher's next look
    /// is still announced to that client (`removed`).
    announced: Announced,
    snapshots: Arc<Snapshots>,
    /// [`OPENINGS_AT_ONCE`] turns to send an opening.
    turns: Arc<tokio::sync::Semaphore>,
}

type Announced = std::sync::Arc<std::sync::Mutex<Vec<(usize, Seen)>>>;

impl Feed {
    pub fn start(table: &'static Table, stopping: watch::Receiver<bool>) -> Feed {
        let (tx, _) = broadcast::channel(BACKLOG);
        let announced = Announced::default();
        let snapshots = Arc::new(Snapshots {
            epoch: AtomicU64::new(0),
            recent: std::sync::Mutex::new(VecDeque::with_capacity(CATCH_UP)),
            cached: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(watch_table(
            table,
            tx.clone(),
            announced.clone(),
            snapshots.clone(),
            stopping,
        ));
        Feed {
            tx,
            announced,
            snapshots,
            turns: Arc::new(tokio::sync::Semaphore::new(OPENINGS_AT_ONCE)),
        }
    }
}

/// The `snapshot` event's data (every host's fleet row), recording in `announced` what it
/// held (bounded: one entry per slot per snapshot, drained every watcher tick).
fn snapshot(table: &Table, now: u64, announced: &Announced) -> Value {
    let alive = collector_alive(table);
    let mut held = Vec::new();
    let hosts: Vec<Value> = (0..table.host_count())
        .filter_map(|i| {
            let version = table.slot_version(i);
            let (rec, row) = fleet_row(table, i, now, alive)?;
            held.push((
                i,
                Seen {
                    id: rec.agent_id,
                    state: SlotState::of(&rec, version, now),
                    spark_n: rec.history_count,
                },
            ));
            Some(row)
        })
        .collect();
    if let Ok(mut a) = announced.lock() {
        if a.len() < MAX_ANNOUNCED {
            a.extend(held);
        }
    }
    json!({"now_ms": now, "hosts": hosts})
}

/// Bound on snapshot entries waiting for the watcher (a burst of new clients between two
/// ticks); beyond it a snapshot is not recorded, and only the race it closes reopens.
const MAX_ANNOUNCED: usize = 1 << 16;

/// The opening of a stream (retry hint + `snapshot` event), rendered once and shared by the
/// streams that open while it is recent. Rendering it per client made a burst of 1,000 new
/// streams render 1,000 fleets (4,096 hosts each) on the http process's two workers,
/// delaying every other request by seconds.
///
/// Why a shared snapshot loses nothing: every `hosts` and `removed` event the watcher sends is numbered
/// (`epoch`) and kept in `recent` *before* it is sent. A snapshot is tagged with the epoch
/// read before its render began, so it holds every change up to that event's scan. A stream
/// subscribes, then reads `epoch` (E) and takes the snapshot (epoch e <= E) plus the kept
/// events e+1..=E; every later event reaches it live (subscribed before it was sent). An
/// event both kept and received live is sent twice, which clients take as is (a host row
/// replaces the row; sparkline points are numbered).
struct Snapshots {
    epoch: AtomicU64,
    /// The last [`CATCH_UP`] `hosts` events with their epochs.
    recent: std::sync::Mutex<VecDeque<(u64, Bytes)>>,
    /// (epoch read before rendering, the rendered opening). The lock is held while
    /// rendering: streams arriving meanwhile wait and then take the same bytes.
    cached: tokio::sync::Mutex<Option<(u64, Bytes)>>,
}

/// A cached snapshot serves new streams while at most this many events (1.6 s at the
/// watcher's pace) followed it; older, it is rendered again (a render costs more than that).
const CATCH_UP: usize = 8;

impl Snapshots {
    /// Numbers and keeps a `hosts` or `removed` event; call before sending it.
    fn publish(&self, bytes: &Bytes) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch.load(Ordering::SeqCst) + 1;
        if recent.len() == CATCH_UP {
            recent.pop_front();
        }
        recent.push_back((epoch, bytes.clone()));
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The kept events after `from` up to the current epoch, if all of them are kept.
    fn since(&self, from: u64) -> Option<Vec<Bytes>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.epoch.load(Ordering::SeqCst);
        let events: Vec<Bytes> = recent
            .iter()
            .filter(|(e, _)| *e > from)
            .map(|(_, b)| b.clone())
            .collect();
        (events.len() as u64 == now - from).then_some(events)
    }

    /// The opening for a stream that has subscribed: the snapshot and the events after it.
    async fn opening(&self, table: &'static Table, announced: &Announced) -> VecDeque<Bytes> {
        let mut cached = self.cached.lock().await;
        if let Some((e, bytes)) = &*cached {
            if let Some(events) = self.since(*e) {
                return std::iter::once(bytes.clone()).chain(events).collect();
            }
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        // Thousands of hosts are CPU work: off the runtime's workers, so other requests
        // (and streams already open) go on meanwhile.
        let announced = announced.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let mut head = format!("retry: {RETRY_MS}\n\n").into_bytes();
            head.extend_from_slice(&event("snapshot", &snapshot(table, now, &announced)));
            Bytes::from(head)
        })
        .await
        .unwrap_or_default();
        *cached = Some((epoch, rendered.clone()));
        let events = self.since(epoch).unwrap_or_default();
        std::iter::once(rendered).chain(events).collect()
    }
}

fn event(name: &str, data: &Value) -> Bytes {
    let mut s = format!("event: {name}\ndata: ");
    s.push_str(&data.to_string());
    s.push_str("\n\n");
    Bytes::from(s)
}

/// What the watcher remembers per slot to notice a change.
#[derive(Clone, Copy, PartialEq)]
struct Seen {
    /// The host's agent id: a slot that is freed or taken by another host sends a `removed`
    /// event with it.
    id: [u8; 32],
    state: SlotState,
    /// History points stored when the host was last sent: the next event carries only the
    /// sparkline points after it (`spark_add`), not the whole minute again.
    spark_n: u64,
}

/// Replaces a row's full `spark` by `spark_add` (`{"n", "cpu", "mem"}`: the points numbered
/// `n - len .. n`) with the points after `sent`, the count the clients already have.
fn spark_delta(row: &mut Value, sent: u64) {
    let Some(obj) = row.as_object_mut() else {
        return;
    };
    let Some(Value::Object(mut spark)) = obj.remove("spark") else {
        return;
    };
    let n = spark.get("n").and_then(Value::as_u64).unwrap_or(0);
    for key in ["cpu", "mem"] {
        if let Some(Value::Array(points)) = spark.get_mut(key) {
            let new = (n.saturating_sub(sent) as usize).min(points.len());
            points.drain(..points.len() - new);
        }
    }
    obj.insert("spark_add".into(), Value::Object(spark));
}

async fn watch_table(
    table: &'static Table,
    tx: broadcast::Sender<Bytes>,
    announced: Announced,
    snapshots: Arc<Snapshots>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut seen: Vec<Option<Seen>> = Vec::new();
    let mut last_alive = true;
    let mut last_tick = std::time::Instant::now();
    let mut every = tokio::time::interval(WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.changed() => return,
        }
        if tx.receiver_count() == 0 {
            // Nobody listens: no work. `seen` is kept, so that a host removed while nobody
            // listened is still announced (`removed`) to the next listener, whose snapshot
            // may predate the watcher's next look.
            continue;
        }
        let now = now_ms();
        let alive = collector_alive(table);
        let all = alive != last_alive;
        last_alive = alive;
        let count = table.host_count();
        seen.resize(count, None);
        let held = announced
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        for (i, s) in held {
            if let Some(slot @ None) = seen.get_mut(i) {
                *slot = Some(s);
            }
        }
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for (i, slot) in seen.iter_mut().enumerate() {
            let version = table.slot_version(i);
            let known = *slot;
            if !all && known.is_some_and(|s| s.state.unchanged(version, now)) {
                continue;
            }
            let row = fleet_row(table, i, now, alive);
            let id_now = match &row {
                Some((rec, _)) => Some(rec.agent_id),
                // Free, or (rarely) not readable now: only a free slot or another host in it
                // is a removal.
                None => match table.read_record(i) {
                    Some(r) if r.in_use == 1 => Some(r.agent_id),
                    Some(_) => None,
                    None => known.map(|s| s.id),
                },
            };
            if let Some(s) = known.filter(|s| Some(s.id) != id_now) {
                // Removed, expired, or the slot went to another host.
                removed.push(String::from_utf8_lossy(&s.id).into_owned());
                *slot = None;
            }
            let Some((rec, mut host)) = row else {
                continue;
            };
            if let Some(s) = slot.as_ref() {
                spark_delta(&mut host, s.spark_n);
            }
            *slot = Some(Seen {
                id: rec.agent_id,
                state: SlotState::of(&rec, version, now),
                spark_n: rec.history_count,
            });
            changed.push(host);
        }
        if !removed.is_empty() {
            let bytes = event("removed", &json!({"now_ms": now, "ids": removed}));
            snapshots.publish(&bytes); // before the send (see `Snapshots`)
            let _ = tx.send(bytes);
        }
        if !changed.is_empty() {
            let bytes = event("hosts", &json!({"now_ms": now, "hosts": changed}));
            snapshots.publish(&bytes);
            let _ = tx.send(bytes);
        }
        if last_tick.elapsed() >= TICK_EVERY {
            last_tick = std::time::Instant::now();
            let _ = tx.send(event("tick", &json!({"now_ms": now})));
        }
    }
}

/// Streams sending their opening (the fleet snapshot, ~1 KiB per host) at the same time; the
/// others wait for a turn. 1,000 streams opening at once at 4,096 hosts are ~4.5 GB to
/// write: all at once, every other response (GET /api/v1/hosts, itself MBs) got a
/// thousandth of the bandwidth and took seconds. A few at a time keep it a small share.
const OPENINGS_AT_ONCE: usize = 4;
/// The opening is handed to hyper in pieces of this size, so that a stream's turn ends when
/// little more than its socket buffer is left to write.
const OPENING_CHUNK: usize = 64 * 1024;
/// A turn is given back after this even if the client has not taken its whole opening yet
/// (a client that stops reading must not hold one); such a client gets the rest without one.
const TURN_AT_MOST: Duration = Duration::from_secs(2);

/// Where one event stream is.
enum Phase {
    /// Waiting for a turn (not subscribed yet: a long wait cannot make it lag).
    Waiting,
    /// Sending what is left of `parts`; `turn` ends (dropped) with the opening.
    Opening {
        rx: broadcast::Receiver<Bytes>,
        parts: VecDeque<Bytes>,
        turn: tokio::sync::oneshot::Sender<()>,
    },
    Live(broadcast::Receiver<Bytes>),
}

/// What one stream needs from the feed.
struct Ctx {
    tx: broadcast::Sender<Bytes>,
    snapshots: Arc<Snapshots>,
    announced: Announced,
    turns: Arc<tokio::sync::Semaphore>,
    table: &'static Table,
    stopping: watch::Receiver<bool>,
}

/// Takes a turn; it is given back when the returned sender is dropped, or after
/// [`TURN_AT_MOST`] whatever the client does.
async fn take_turn(
    turns: &Arc<tokio::sync::Semaphore>,
) -> Option<tokio::sync::oneshot::Sender<()>> {
    let permit = turns.clone().acquire_owned().await.ok()?;
    let (done, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(TURN_AT_MOST, released).await;
    });
    Some(done)
}

/// The next piece of an opening, and the phase after it.
fn piece(
    rx: broadcast::Receiver<Bytes>,
    mut parts: VecDeque<Bytes>,
    turn: tokio::sync::oneshot::Sender<()>,
) -> (Bytes, Phase) {
    let part = match parts.front_mut() {
        Some(front) if front.len() > OPENING_CHUNK => front.split_to(OPENING_CHUNK),
        Some(_) => parts.pop_front().unwrap_or_default(),
        None => Bytes::new(),
    };
    let next = if parts.is_empty() {
        Phase::Live(rx) // the turn ends here
    } else {
        Phase::Opening { rx, parts, turn }
    };
    (part, next)
}

/// The response body of one event stream: a turn, then retry hint and snapshot, then the
/// shared feed until the client lags, goes away or the process stops.
pub fn stream(state: &State) -> Body {
    let ctx = Ctx {
        tx: state.events.tx.clone(),
        snapshots: state.events.snapshots.clone(),
        announced: state.events.announced.clone(),
        turns: state.events.turns.clone(),
        table: state.table,
        stopping: state.stopping.clone(),
    };
    let frames =
        futures_util::stream::unfold((Phase::Waiting, ctx), |(phase, mut ctx)| async move {
            if *ctx.stopping.borrow() {
                return None;
            }
            match phase {
                Phase::Waiting => {
                    let turn = tokio::select! {
                        t = take_turn(&ctx.turns) => t?,
                        _ = ctx.stopping.changed() => return None,
                    };
                    let rx = ctx.tx.subscribe(); // before the snapshot: no change falls in between
                    let parts = ctx.snapshots.opening(ctx.table, &ctx.announced).await;
                    let (part, next) = piece(rx, parts, turn);
                    Some((part, (next, ctx)))
                }
                Phase::Opening { rx, parts, turn } => {
                    let (part, next) = piece(rx, parts, turn);
                    Some((part, (next, ctx)))
                }
                Phase::Live(mut rx) => {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Ok(bytes) => Some((bytes, (Phase::Live(rx), ctx))),
                            // Lagged or closed: end the stream; the browser reconnects to a snapshot.
                            Err(_) => None,
                        },
                        _ = ctx.stopping.changed() => None,
                    }
                }
            }
        });
    let frames = frames.map(|b| Ok::<_, Infallible>(Frame::data(Data::from_iter([b]))));
    StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{account, Record, TestTable};
    use bytes::Buf;
    use http_body_util::BodyExt;
    use sentinel_protocol::{Hello, HostInfo, Sample};
    use std::sync::atomic::Ordering;

    fn write_sample(t: &Table, seq: u64) {
        let w = t.writer().unwrap();
        let mut rec = if seq == 1 {
            let hello = Hello {
                version: 1,
                agent_id: "abababababababababababababababab".into(),
                run_id: 7,
                hostname: "<b>live</b>".into(),
                interval_ms: 1000,
                clock_ms: now_ms(),
                agent_version: "1".into(),
                host: HostInfo::default(),
                proof: vec![0; 32],
                key: None,
                key_proof: None,
                labels: Default::default(),
            };
            let mut r = Record::zeroed();
            account::handshake(&mut r, &hello, "x", now_ms());
            r
        } else {
            w.record(0)
        };
        let s = Sample {
            seq,
            ts_ms: now_ms(),
            cpu_percent: seq as f32,
            ..Sample::default()
        };
        let (_, point) = account::apply_sample(&mut rec, &s, false, now_ms());
        w.commit(0, rec, None, point);
        w.publish_host_count(1);
    }

    #[tokio::test]
    async fn new_streams_share_a_snapshot_plus_the_events_after_it_until_it_is_too_old() {
        let t: &'static TestTable = Box::leak(Box::new(TestTable::new(4, 8)));
        write_sample(&t.table, 1);
        let snaps = Snapshots {
            epoch: AtomicU64::new(0),
            recent: std::sync::Mutex::new(VecDeque::new()),
            cached: tokio::sync::Mutex::new(None),
        };
        let announced = Announced::default();
        let first = snaps.opening(&t.table, &announced).await;
        assert_eq!(first.len(), 1);
        assert!(std::str::from_utf8(&first[0])
            .unwrap()
            .contains("event: snapshot"));
        // Two events later a new stream gets the same bytes (not rendered again) + both.
        snaps.publish(&Bytes::from_static(b"e1"));
        snaps.publish(&Bytes::from_static(b"e2"));
        let second = snaps.opening(&t.table, &announced).await;
        assert_eq!(second.len(), 3);
        assert_eq!(second[0].as_ptr(), first[0].as_ptr(), "rendered again");
        assert_eq!((&second[1][..], &second[2][..]), (&b"e1"[..], &b"e2"[..]));
        // More than CATCH_UP events after it: rendered again, nothing appended.
        for _ in 0..CATCH_UP {
            snaps.publish(&Bytes::from_static(b"e"));
        }
        let third = snaps.opening(&t.table, &announced).await;
        assert_eq!(third.len(), 1);
        assert_ne!(third[0].as_ptr(), first[0].as_ptr());
        // The new render is tagged with the current epoch: the next stream reuses it.
        snaps.publish(&Bytes::from_static(b"e3"));
        let fourth = snaps.opening(&t.table, &announced).await;
        assert_eq!(fourth.len(), 2);
        assert_eq!(fourth[0].as_ptr(), third[0].as_ptr());
    }

    #[tokio::test]
    async fn a_client_gets_a_snapshot_then_each_new_sample_within_a_second() {
        let t: &'static TestTable = Box::leak(Box::new(TestTable::new(4, 8)));
        let table = &t.table;
        table
            .header()
            .collector_heartbeat_boot_ms
            .store(crate::segment::boot_ms() + 60_000, Ordering::Relaxed);
        write_sample(table, 1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = State {
            table,
            events: Feed::start(table, stop_rx.clone()),
            forwarder: None,
            stopping: stop_rx,
            hosts: Default::default(),
            access: Default::default(),
            control: crate::control::Client::start(None, table),
        };
        let mut body = stream(&state);
        async fn next(body: &mut Body) -> String {
            let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
                .await
                .expect("an event within 2 s")
                .unwrap()
                .unwrap();
            let mut data = frame.into_data().unwrap();
            String::from_utf8(data.copy_to_bytes(data.remaining()).to_vec()).unwrap()
        }
        let first = next(&mut body).await;
        assert!(
            first.starts_with("retry: 1000\n\nevent: snapshot\ndata: {"),
            "{first}"
        );
        assert!(
            first.contains(r#""hostname":"<b>live</b>""#),
            "text stays JSON text: {first}"
        );
        let written = std::time::Instant::now();
        write_sample(table, 2);
        loop {
            let ev = next(&mut body).await;
            if ev.starts_with("event: hosts\n") && ev.contains(r#""cpu_percent":2.0"#) {
                assert!(ev.ends_with("\n\n"));
                break;
            }
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "pushed within 1 s"
        );
        // Once the watcher knows the host, only the new sparkline point travels.
        write_sample(table, 3);
        loop {
            let ev = next(&mut body).await;
            if ev.starts_with("event: hosts\n") && ev.contains(r#""cpu_percent":3.0"#) {
                assert!(
                    ev.contains(r#""spark_add":{"cpu":[3],"mem":[0],"n":3}"#),
                    "{ev}"
                );
                break;
            }
        }
        // A freed slot (host removed or expired) is announced with the host's id.
        table.writer().unwrap().clear(0);
        loop {
            let ev = next(&mut body).await;
            if ev.starts_with("event: removed\n") {
                assert!(
                    ev.contains(r#""ids":["abababababababababababababababab"]"#),
                    "{ev}"
                );
                break;
            }
        }
        // On SIGTERM the stream ends, so browsers notice at once.
        stop_tx.send(true).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(f) = body.frame().await {
                let _ = f;
            }
        })
        .await;
        assert!(end.is_ok(), "the stream ends on stop");
    }
}
