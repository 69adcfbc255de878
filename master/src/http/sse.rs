//! GET /api/v1/events: live updates as Server-Sent Events.
//!
//! One watcher task per http process polls the table every [`WATCH_EVERY`]: it compares each
//! slot's seqlock counter (no copy) and each host's derived status with what it saw last, and
//! broadcasts the changed hosts as one `hosts` event. Every client gets a `snapshot` event
//! (every host's fleet row: the HOST fields the fleet view shows, plus its extras) when it
//! connects, then the shared `hosts` events, `removed` events (`{"now_ms", "ids"}`: hosts
//! whose slot was freed) and a `tick` with the master's clock every second. A client that falls behind the broadcast is
//! disconnected; its EventSource reconnects and starts again from a fresh snapshot.

use std::convert::Infallible;
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
}

type Announced = std::sync::Arc<std::sync::Mutex<Vec<(usize, Seen)>>>;

impl Feed {
    pub fn start(table: &'static Table, stopping: watch::Receiver<bool>) -> Feed {
        let (tx, _) = broadcast::channel(BACKLOG);
        let announced = Announced::default();
        tokio::spawn(watch_table(table, tx.clone(), announced.clone(), stopping));
        Feed { tx, announced }
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
            let _ = tx.send(event("removed", &json!({"now_ms": now, "ids": removed})));
        }
        if !changed.is_empty() {
            let _ = tx.send(event("hosts", &json!({"now_ms": now, "hosts": changed})));
        }
        if last_tick.elapsed() >= TICK_EVERY {
            last_tick = std::time::Instant::now();
            let _ = tx.send(event("tick", &json!({"now_ms": now})));
        }
    }
}

/// The response body of one event stream: retry hint and snapshot, then the shared feed until
/// the client lags, goes away or the process stops.
pub fn stream(state: &State) -> Body {
    let rx = state.events.tx.subscribe(); // before the snapshot: no change falls in between
    let table = state.table;
    let stopping = state.stopping.clone();
    let announced = state.events.announced.clone();
    let first = async move {
        let now = now_ms();
        let mut head = format!("retry: {RETRY_MS}\n\n").into_bytes();
        head.extend_from_slice(&event("snapshot", &snapshot(table, now, &announced)));
        Bytes::from(head)
    };
    let head = futures_util::stream::once(first);
    let rest = futures_util::stream::unfold((rx, stopping), |(mut rx, mut stopping)| async move {
        if *stopping.borrow() {
            return None;
        }
        tokio::select! {
            r = rx.recv() => match r {
                Ok(bytes) => Some((bytes, (rx, stopping))),
                // Lagged or closed: end the stream; the browser reconnects to a snapshot.
                Err(_) => None,
            },
            _ = stopping.changed() => None,
        }
    });
    let frames = head
        .chain(rest)
        .map(|b| Ok::<_, Infallible>(Frame::data(Data::from_iter([b]))));
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
