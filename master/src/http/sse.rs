//! GET /api/v1/events: live updates as Server-Sent Events.
//!
//! One watcher task per http process polls the table every [`WATCH_EVERY`]: it compares each
//! slot's seqlock counter (no copy) and each host's derived status with what it saw last, and
//! broadcasts the changed hosts as one `hosts` event. Every client gets a `snapshot` event
//! (every host's fleet row: the HOST fields the fleet view shows, plus its extras) when it
//! connects, then the shared `hosts` events, `removed` events (`{"now_ms", "ids"}`: hosts
//! whose slot was freed) and a `tick` with the master's clock every second. A client that falls behind the broadcast is
//! disconnected; its EventSource reconnects and starts again from a fresh snapshot.
//!
//! Filtered streams (docs/CONTRACT.md "Filters"): the watcher renders each changed row once
//! and broadcasts it with its [`HostFacts`] beside the rendered event; a stream with no filter
//! sends the rendered event as is (the path it always had), a filtered one ([`Selection`])
//! picks its rows from the shared set and joins only those. `groups` summaries are computed
//! by the watcher once a second per distinct (group_by, filter) that some stream asked for,
//! from the facts it already holds, and travel with the `tick`.

use std::collections::{HashMap, HashSet, VecDeque};
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

use super::api::{collector_alive, facts_of, fleet_row, SlotState};
use super::filter::{groups_json, Filter, HostFacts, Query};
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

/// One host changed (or held by a snapshot): its fleet row rendered once, with what filters
/// look at. Shared by every stream.
pub struct Row {
    slot: usize,
    facts: Arc<HostFacts>,
    /// The row's JSON object.
    json: Bytes,
}

/// What the watcher broadcasts: the rendered event every unfiltered stream sends as is, and
/// what a filtered stream selects from.
#[derive(Clone)]
enum Update {
    Hosts {
        bytes: Bytes,
        now: u64,
        rows: Arc<[Row]>,
    },
    Removed {
        bytes: Bytes,
        now: u64,
        ids: Arc<[String]>,
    },
    Tick {
        bytes: Bytes,
        /// The `groups` event of each registered [`GroupKey`].
        groups: Arc<HashMap<GroupKey, Bytes>>,
    },
}

impl Update {
    fn bytes(&self) -> &Bytes {
        match self {
            Update::Hosts { bytes, .. }
            | Update::Removed { bytes, .. }
            | Update::Tick { bytes, .. } => bytes,
        }
    }
}

/// A distinct `group_by` + filter some stream asked for.
type GroupKey = (String, Filter);
/// Distinct summaries the watcher computes each second: each costs a pass over every host's
/// facts (10,000 hosts: ~0.5 ms), so a few hundred dashboards with their own filters are
/// served, and thousands of hostile distinct ones cannot take the watcher's second. A stream
/// asking for another one beyond this is refused (503).
pub const MAX_GROUP_KEYS: usize = 256;
/// The [`GroupKey`]s of the open streams, each with how many streams want it.
type GroupKeys = Arc<std::sync::Mutex<HashMap<GroupKey, usize>>>;

/// The shared feed of rendered events.
pub struct Feed {
    tx: broadcast::Sender<Update>,
    group_keys: GroupKeys,
    /// Hosts a new client's snapshot held, by slot: the watcher takes them as its baseline
    /// for slots it has not looked at yet, so a host removed before the watcher's next look
    /// is still announced to that client (`removed`).
    announced: Announced,
    snapshots: Arc<Snapshots>,
    /// [`OPENINGS_AT_ONCE`] turns to send an opening.
    turns: Arc<tokio::sync::Semaphore>,
}

type Announced = std::sync::Arc<std::sync::Mutex<Vec<(usize, Seen, Arc<HostFacts>)>>>;

impl Feed {
    /// False if `q` asks for a `groups` summary no stream has and [`MAX_GROUP_KEYS`] are
    /// already computed.
    pub fn has_room_for(&self, q: &Query) -> bool {
        let Some(by) = &q.by else {
            return true;
        };
        let keys = self.group_keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.len() < MAX_GROUP_KEYS || keys.contains_key(&(by.clone(), q.filter.clone()))
    }

    pub fn start(table: &'static Table, stopping: watch::Receiver<bool>) -> Feed {
        let (tx, _) = broadcast::channel(BACKLOG);
        let announced = Announced::default();
        let group_keys = GroupKeys::default();
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
            group_keys.clone(),
            stopping,
        ));
        Feed {
            tx,
            group_keys,
            announced,
            snapshots,
            turns: Arc::new(tokio::sync::Semaphore::new(OPENINGS_AT_ONCE)),
        }
    }
}

/// Every host's fleet row (the `snapshot` event's), recording in `announced` what it held
/// (bounded: one entry per slot per snapshot, drained every watcher tick).
fn snapshot(table: &Table, now: u64, announced: &Announced) -> Vec<Row> {
    let alive = collector_alive(table);
    let mut held = Vec::new();
    let rows: Vec<Row> = (0..table.host_count())
        .filter_map(|i| {
            let version = table.slot_version(i);
            let (rec, row) = fleet_row(table, i, now, alive)?;
            let facts = Arc::new(facts_of(&rec, now));
            held.push((
                i,
                Seen {
                    id: rec.agent_id,
                    state: SlotState::of(&rec, version, now),
                    spark_n: rec.history_count,
                },
                facts.clone(),
            ));
            Some(Row {
                slot: i,
                facts,
                json: Bytes::from(serde_json::to_vec(&row).ok()?),
            })
        })
        .collect();
    if let Ok(mut a) = announced.lock() {
        if a.len() < MAX_ANNOUNCED {
            a.extend(held);
        }
    }
    rows
}

/// `event: NAME` with `{"hosts":[ROWS...],"now_ms":N}` (the rows joined, never re-rendered).
fn rows_event<'a>(name: &str, rows: impl Iterator<Item = &'a Bytes>, now: u64) -> Bytes {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(format!("event: {name}\ndata: {{\"hosts\":[").as_bytes());
    for (n, row) in rows.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(row);
    }
    out.extend_from_slice(format!("],\"now_ms\":{now}}}\n\n").as_bytes());
    Bytes::from(out)
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
    recent: std::sync::Mutex<VecDeque<(u64, Update)>>,
    /// The latest opening rendered. The lock is held while rendering: streams arriving
    /// meanwhile wait and then take the same one.
    cached: tokio::sync::Mutex<Option<Arc<Opening>>>,
}

/// A rendered opening, shared by the streams that open while it is recent.
struct Opening {
    /// The epoch read before rendering.
    epoch: u64,
    now: u64,
    /// Retry hint + `snapshot` event of every host: what an unfiltered stream sends.
    bytes: Bytes,
    /// The same rows, for filtered streams to select from.
    rows: Vec<Row>,
}

/// A cached snapshot serves new streams while at most this many events (1.6 s at the
/// watcher's pace) followed it; older, it is rendered again (a render costs more than that).
const CATCH_UP: usize = 8;

impl Snapshots {
    /// Numbers and keeps a `hosts` or `removed` event; call before sending it.
    fn publish(&self, bytes: &Update) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch.load(Ordering::SeqCst) + 1;
        if recent.len() == CATCH_UP {
            recent.pop_front();
        }
        recent.push_back((epoch, bytes.clone()));
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The kept events after `from` up to the current epoch, if all of them are kept.
    fn since(&self, from: u64) -> Option<Vec<Update>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.epoch.load(Ordering::SeqCst);
        let events: Vec<Update> = recent
            .iter()
            .filter(|(e, _)| *e > from)
            .map(|(_, b)| b.clone())
            .collect();
        (events.len() as u64 == now - from).then_some(events)
    }

    /// The opening for a stream that has subscribed: the snapshot and the events after it.
    async fn opening(
        &self,
        table: &'static Table,
        announced: &Announced,
    ) -> (Arc<Opening>, Vec<Update>) {
        let mut cached = self.cached.lock().await;
        if let Some(open) = &*cached {
            if let Some(events) = self.since(open.epoch) {
                return (open.clone(), events);
            }
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        // Thousands of hosts are CPU work: off the runtime's workers, so other requests
        // (and streams already open) go on meanwhile.
        let announced = announced.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let rows = snapshot(table, now, &announced);
            let mut head = format!("retry: {RETRY_MS}\n\n").into_bytes();
            head.extend_from_slice(&rows_event("snapshot", rows.iter().map(|r| &r.json), now));
            Opening {
                epoch,
                now,
                bytes: Bytes::from(head),
                rows,
            }
        })
        .await
        .unwrap_or(Opening {
            epoch,
            now: now_ms(),
            bytes: Bytes::new(),
            rows: Vec::new(),
        });
        let open = Arc::new(rendered);
        *cached = Some(open.clone());
        let events = self.since(epoch).unwrap_or_default();
        (open, events)
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
    tx: broadcast::Sender<Update>,
    announced: Announced,
    snapshots: Arc<Snapshots>,
    group_keys: GroupKeys,
    mut stopping: watch::Receiver<bool>,
) {
    let mut seen: Vec<Option<Seen>> = Vec::new();
    // The facts of the host each slot held when last rendered (what `groups` count).
    let mut index: Vec<Option<Arc<HostFacts>>> = Vec::new();
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
        index.resize(count, None);
        let held = announced
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        for (i, s, facts) in held {
            if let Some(slot @ None) = seen.get_mut(i) {
                *slot = Some(s);
                index[i] = Some(facts);
            }
        }
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for (i, (slot, facts_now)) in seen.iter_mut().zip(index.iter_mut()).enumerate() {
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
                *facts_now = None;
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
            let facts = Arc::new(facts_of(&rec, now));
            *facts_now = Some(facts.clone());
            if let Ok(json) = serde_json::to_vec(&host) {
                changed.push(Row {
                    slot: i,
                    facts,
                    json: Bytes::from(json),
                });
            }
        }
        if !removed.is_empty() {
            let update = Update::Removed {
                bytes: event("removed", &json!({"now_ms": now, "ids": removed})),
                now,
                ids: removed.into(),
            };
            snapshots.publish(&update); // before the send (see `Snapshots`)
            let _ = tx.send(update);
        }
        if !changed.is_empty() {
            let update = Update::Hosts {
                bytes: rows_event("hosts", changed.iter().map(|r| &r.json), now),
                now,
                rows: changed.into(),
            };
            snapshots.publish(&update);
            let _ = tx.send(update);
        }
        if last_tick.elapsed() >= TICK_EVERY {
            last_tick = std::time::Instant::now();
            let keys: Vec<GroupKey> = group_keys
                .lock()
                .map(|k| k.keys().cloned().collect())
                .unwrap_or_default();
            // Once a second per distinct summary asked for, however many streams ask.
            let groups = keys
                .into_iter()
                .map(|key| {
                    let v = groups_json(index.iter().flatten().map(|f| &**f), &key.1, Some(&key.0));
                    (key, event("groups", &v))
                })
                .collect();
            let _ = tx.send(Update::Tick {
                bytes: event("tick", &json!({"now_ms": now})),
                groups: Arc::new(groups),
            });
        }
    }
}

/// Hosts entering a filtered stream in one event that it renders afresh from the table (so
/// they arrive with their whole sparkline); beyond, they come as the shared row (its
/// `spark_add`: the points since the previous event). Entering is rare (a label changed at a
/// hello, a status crossed a `status` filter); the bound holds a burst (the collector came
/// back: every host turns `up`) to a few hundred microseconds per stream.
const ENTER_RENDERS: usize = 64;

/// A stream's hold on a [`GroupKey`]: the watcher computes that summary while it lives.
struct Registration {
    keys: GroupKeys,
    key: GroupKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = keys.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

/// What one stream sends of the shared feed: everything (no filter and no `ids`: the shared
/// bytes as they are), or only the hosts it selects (`sent`: the ids it holds, so that a host
/// that stops matching is sent in `removed` with `"reason":"filter"`), plus `groups` when it
/// asked for `group_by`.
struct Selection {
    filter: Filter,
    ids: Option<HashSet<String>>,
    group: Option<Registration>,
    sent: HashSet<String>,
    /// The `groups` event last sent: another goes out only when it differs.
    last_groups: Option<Bytes>,
    table: &'static Table,
}

fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    Bytes::from(out)
}

impl Selection {
    fn new(q: Query, table: &'static Table, keys: &GroupKeys) -> Selection {
        let group = q.by.map(|by| {
            let key = (by, q.filter.clone());
            *keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.clone())
                .or_default() += 1;
            Registration {
                keys: keys.clone(),
                key,
            }
        });
        Selection {
            filter: q.filter,
            ids: q.ids,
            group,
            sent: HashSet::new(),
            last_groups: None,
            table,
        }
    }

    /// No filter and no `ids`: every host.
    fn plain(&self) -> bool {
        self.filter.is_empty() && self.ids.is_none()
    }

    fn wants(&self, f: &HostFacts) -> bool {
        self.filter.matches(f) && self.ids.as_ref().is_none_or(|ids| ids.contains(&f.id))
    }

    /// The stream's opening: retry hint and `snapshot` of its hosts (the shared bytes when
    /// plain), then its `groups`.
    fn open(&mut self, o: &Opening) -> Bytes {
        let out = if self.plain() {
            o.bytes.clone()
        } else {
            let rows: Vec<&Row> = o.rows.iter().filter(|r| self.wants(&r.facts)).collect();
            self.sent = rows.iter().map(|r| r.facts.id.clone()).collect();
            let mut head = format!("retry: {RETRY_MS}\n\n").into_bytes();
            head.extend_from_slice(&rows_event("snapshot", rows.iter().map(|r| &r.json), o.now));
            Bytes::from(head)
        };
        let Some(g) = &self.group else {
            return out;
        };
        let v = groups_json(o.rows.iter().map(|r| &*r.facts), &g.key.1, Some(&g.key.0));
        let groups = event("groups", &v);
        self.last_groups = Some(groups.clone());
        concat(&out, &groups)
    }

    /// A host that starts matching, rendered now with its whole sparkline (`None`: the slot
    /// holds another host now, or is unreadable).
    fn full_row(&self, r: &Row) -> Option<Bytes> {
        let (rec, row) = fleet_row(self.table, r.slot, now_ms(), collector_alive(self.table))?;
        if rec.agent_id() != r.facts.id {
            return None;
        }
        Some(Bytes::from(serde_json::to_vec(&row).ok()?))
    }

    /// What this stream sends of an update, if anything.
    fn select(&mut self, u: &Update) -> Option<Bytes> {
        match u {
            Update::Tick { bytes, groups } => {
                let fresh = self
                    .group
                    .as_ref()
                    .and_then(|g| groups.get(&g.key))
                    .filter(|ev| self.last_groups.as_ref() != Some(*ev));
                match fresh {
                    Some(ev) => {
                        self.last_groups = Some(ev.clone());
                        Some(concat(bytes, ev))
                    }
                    None => Some(bytes.clone()),
                }
            }
            _ if self.plain() => Some(u.bytes().clone()),
            Update::Removed { now, ids, .. } => {
                let gone: Vec<&String> = ids.iter().filter(|id| self.sent.remove(*id)).collect();
                (!gone.is_empty()).then(|| event("removed", &json!({"now_ms": now, "ids": gone})))
            }
            Update::Hosts { now, rows, .. } => {
                let (mut picked, mut left, mut renders) = (Vec::new(), Vec::new(), 0);
                for r in rows.iter() {
                    if !self.wants(&r.facts) {
                        if self.sent.remove(&r.facts.id) {
                            left.push(r.facts.id.as_str());
                        }
                        continue;
                    }
                    if !self.sent.contains(&r.facts.id) {
                        self.sent.insert(r.facts.id.clone());
                        if renders < ENTER_RENDERS {
                            renders += 1;
                            if let Some(full) = self.full_row(r) {
                                picked.push(full);
                                continue;
                            }
                        }
                    }
                    picked.push(r.json.clone());
                }
                let hosts = (!picked.is_empty()).then(|| rows_event("hosts", picked.iter(), *now));
                let left = (!left.is_empty()).then(|| {
                    event(
                        "removed",
                        &json!({"now_ms": now, "ids": left, "reason": "filter"}),
                    )
                });
                match (hosts, left) {
                    (Some(h), Some(l)) => Some(concat(&h, &l)),
                    (h, l) => h.or(l),
                }
            }
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
        rx: broadcast::Receiver<Update>,
        parts: VecDeque<Bytes>,
        turn: tokio::sync::oneshot::Sender<()>,
    },
    Live(broadcast::Receiver<Update>),
}

/// What one stream needs from the feed.
struct Ctx {
    tx: broadcast::Sender<Update>,
    sel: Selection,
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
    rx: broadcast::Receiver<Update>,
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
pub fn stream(state: &State, query: Query) -> Body {
    let ctx = Ctx {
        tx: state.events.tx.clone(),
        sel: Selection::new(query, state.table, &state.events.group_keys),
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
                    let (open, events) = ctx.snapshots.opening(ctx.table, &ctx.announced).await;
                    let parts: VecDeque<Bytes> = std::iter::once(ctx.sel.open(&open))
                        .chain(events.iter().filter_map(|u| ctx.sel.select(u)))
                        .collect();
                    let (part, next) = piece(rx, parts, turn);
                    Some((part, (next, ctx)))
                }
                Phase::Opening { rx, parts, turn } => {
                    let (part, next) = piece(rx, parts, turn);
                    Some((part, (next, ctx)))
                }
                Phase::Live(mut rx) => loop {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Ok(update) => match ctx.sel.select(&update) {
                                Some(bytes) => return Some((bytes, (Phase::Live(rx), ctx))),
                                // Nothing of this stream's hosts in it.
                                None => continue,
                            },
                            // Lagged or closed: end the stream; the browser reconnects to a snapshot.
                            Err(_) => return None,
                        },
                        _ = ctx.stopping.changed() => return None,
                    }
                },
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
        let ev = |b: &'static [u8]| Update::Removed {
            bytes: Bytes::from_static(b),
            now: 0,
            ids: Arc::new([]),
        };
        let (first, events) = snaps.opening(&t.table, &announced).await;
        assert!(events.is_empty());
        assert!(std::str::from_utf8(&first.bytes)
            .unwrap()
            .contains("event: snapshot"));
        // Two events later a new stream gets the same opening (not rendered again) + both.
        snaps.publish(&ev(b"e1"));
        snaps.publish(&ev(b"e2"));
        let (second, events) = snaps.opening(&t.table, &announced).await;
        assert!(Arc::ptr_eq(&first, &second), "rendered again");
        let bytes: Vec<&[u8]> = events.iter().map(|u| &u.bytes()[..]).collect();
        assert_eq!(bytes, [&b"e1"[..], &b"e2"[..]]);
        // More than CATCH_UP events after it: rendered again, nothing appended.
        for _ in 0..CATCH_UP {
            snaps.publish(&ev(b"e"));
        }
        let (third, events) = snaps.opening(&t.table, &announced).await;
        assert!(events.is_empty());
        assert!(!Arc::ptr_eq(&third, &first));
        // The new render is tagged with the current epoch: the next stream reuses it.
        snaps.publish(&ev(b"e3"));
        let (fourth, events) = snaps.opening(&t.table, &announced).await;
        assert_eq!(events.len(), 1);
        assert!(Arc::ptr_eq(&fourth, &third));
    }

    fn row(slot: usize, name: &str, status: crate::status::Status) -> Row {
        let facts = HostFacts::new(format!("{slot:032x}"), name.into(), Vec::new(), status, 1.0);
        Row {
            slot,
            json: Bytes::from(format!(r#"{{"id":"{}","hostname":"{name}"}}"#, facts.id)),
            facts: Arc::new(facts),
        }
    }

    fn text(b: Option<Bytes>) -> String {
        b.map(|b| String::from_utf8(b.to_vec()).unwrap())
            .unwrap_or_default()
    }

    #[test]
    fn a_filtered_stream_sends_only_its_hosts_and_says_when_one_stops_matching() {
        use crate::status::Status::{Down, Up};
        let t: &'static TestTable = Box::leak(Box::new(TestTable::new(4, 8)));
        let keys = GroupKeys::default();
        let q = |s: &str| {
            crate::http::filter::parse(Some(s), crate::http::filter::For::Events).unwrap()
        };
        let mut sel = Selection::new(q("q=web&status=up&group_by=role"), &t.table, &keys);
        let mut plain = Selection::new(Query::default(), &t.table, &keys);
        assert_eq!(keys.lock().unwrap().len(), 1, "one summary registered");
        let open = Opening {
            epoch: 0,
            now: 5,
            bytes: Bytes::from_static(b"shared opening"),
            rows: vec![
                row(0, "web-1", Up),
                row(1, "db-1", Up),
                row(2, "web-2", Down),
            ],
        };
        assert_eq!(text(Some(plain.open(&open))), "shared opening");
        let first = text(Some(sel.open(&open)));
        assert!(first.starts_with("retry: 1000\n\nevent: snapshot\ndata: {\"hosts\":[{\"id\":\"00000000000000000000000000000000\",\"hostname\":\"web-1\"}],\"now_ms\":5}\n\n"), "{first}");
        assert!(
            first.contains("event: groups\ndata: {\"by\":\"role\",\"groups\":[{\"busiest\""),
            "{first}"
        );
        // web-1 goes down (leaves the filter), web-2 comes up (enters), db-1 changes (not ours).
        let rows: Arc<[Row]> = vec![
            row(0, "web-1", Down),
            row(1, "db-1", Up),
            row(2, "web-2", Up),
        ]
        .into();
        let update = Update::Hosts {
            bytes: Bytes::from_static(b"all"),
            now: 9,
            rows,
        };
        assert_eq!(text(plain.select(&update)), "all");
        let got = text(sel.select(&update));
        assert_eq!(
            got,
            "event: hosts\ndata: {\"hosts\":[{\"id\":\"00000000000000000000000000000002\",\"hostname\":\"web-2\"}],\"now_ms\":9}\n\n\
             event: removed\ndata: {\"ids\":[\"00000000000000000000000000000000\"],\"now_ms\":9,\"reason\":\"filter\"}\n\n"
        );
        // Nothing of ours: nothing sent. A freed slot of ours: `removed` without a reason.
        let other: Arc<[Row]> = vec![row(1, "db-1", Up)].into();
        assert_eq!(
            sel.select(&Update::Hosts {
                bytes: Bytes::new(),
                now: 10,
                rows: other
            }),
            None
        );
        let ids: Arc<[String]> = vec![format!("{:032x}", 1), format!("{:032x}", 2)].into();
        let gone = text(sel.select(&Update::Removed {
            bytes: Bytes::new(),
            now: 11,
            ids,
        }));
        assert_eq!(gone, "event: removed\ndata: {\"ids\":[\"00000000000000000000000000000002\"],\"now_ms\":11}\n\n");
        // `groups` travels with a tick only when it changed.
        let key = sel.group.as_ref().unwrap().key.clone();
        let tick = |g: &'static [u8]| Update::Tick {
            bytes: Bytes::from_static(b"tick;"),
            groups: Arc::new(HashMap::from([(key.clone(), Bytes::from_static(g))])),
        };
        assert_eq!(text(sel.select(&tick(b"g1"))), "tick;g1");
        assert_eq!(text(sel.select(&tick(b"g1"))), "tick;");
        assert_eq!(text(plain.select(&tick(b"g2"))), "tick;");
        drop(sel);
        assert!(
            keys.lock().unwrap().is_empty(),
            "unregistered with the stream"
        );
    }

    #[tokio::test]
    async fn distinct_group_summaries_are_bounded_and_freed_with_their_streams() {
        let t: &'static TestTable = Box::leak(Box::new(TestTable::new(4, 8)));
        let (_stop, stopping) = watch::channel(false);
        let feed = Feed::start(&t.table, stopping);
        let q = |s: &str| {
            crate::http::filter::parse(Some(s), crate::http::filter::For::Events).unwrap()
        };
        let held: Vec<Selection> = (0..MAX_GROUP_KEYS)
            .map(|i| {
                Selection::new(
                    q(&format!("group_by=role&q=h{i}")),
                    &t.table,
                    &feed.group_keys,
                )
            })
            .collect();
        assert!(!feed.has_room_for(&q("group_by=role&q=new")));
        assert!(
            feed.has_room_for(&q("group_by=role&q=h7")),
            "a summary already computed"
        );
        assert!(feed.has_room_for(&q("q=new")), "no summary asked for");
        drop(held);
        assert!(feed.has_room_for(&q("group_by=role&q=new")));
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
        let mut body = stream(&state, Query::default());
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
