//! The JSON API: /healthz, /api/v1/hosts (the fleet, with what the fleet view needs per host)
//! and /api/v1/hosts/{id} (one host with its latest sample and history).

use std::sync::atomic::Ordering;

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::{json_response, not_found, Resp};
use crate::status::Status;
use crate::table::{Recent, Record, Table};

/// /healthz reports `degraded` (503) when the collector heartbeat is older than this.
pub const HEARTBEAT_STALE_MS: u64 = 2000;
/// Points of each host's CPU and memory sparkline in the fleet view (1 min at 1 s): enough to
/// see a trend, small enough that 5,000 hosts stay a few MB of JSON.
pub const SPARK_POINTS: usize = 60;

pub fn collector_alive(table: &Table, now: u64) -> bool {
    now.saturating_sub(
        table
            .header()
            .collector_heartbeat_ms
            .load(Ordering::Acquire),
    ) <= HEARTBEAT_STALE_MS
}

pub fn healthz(table: &Table, now: u64) -> Resp {
    let h = table.header();
    let beat = h.collector_heartbeat_ms.load(Ordering::Acquire);
    let age = now.saturating_sub(beat);
    let ok = age <= HEARTBEAT_STALE_MS;
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "supervisor_pid": h.supervisor_pid.load(Ordering::Acquire),
        "collector_pid": h.collector_pid.load(Ordering::Acquire),
        "http_pid": std::process::id(),
        "collector_heartbeat_age_ms": age,
        "hosts": table.host_count(),
        "capacity": table.capacity(),
    });
    json_response(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

/// An f32 as JSON with its shortest decimal form (12.3, not 12.300000190734863).
pub fn num(v: f32) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    format!("{v}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// A ratio or percentage rounded to 0.1 for sparklines (keeps 5,000 hosts' JSON small).
fn tenth(v: f64) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    serde_json::Number::from_f64((v * 10.0).round() / 10.0).map_or(Value::Null, Value::Number)
}

pub fn status_of(rec: &Record, now: u64) -> Status {
    Status::derive(rec.goodbye == 1, rec.last_seen_ms, rec.interval_ms, now)
}

/// The HOST object of docs/CONTRACT.md.
pub fn host_json(rec: &Record, now: u64, collector_alive: bool) -> Map<String, Value> {
    let s = &rec.summary;
    let v = json!({
        "id": rec.agent_id(),
        "hostname": rec.hostname.get(),
        "address": rec.address.get(),
        "status": status_of(rec, now).as_str(),
        "connected": rec.connected == 1 && collector_alive,
        "first_seen_ms": rec.first_seen_ms,
        "last_seen_ms": rec.last_seen_ms,
        "interval_ms": rec.interval_ms,
        "clock_offset_ms": rec.clock_offset_ms,
        "agent_version": rec.agent_version.get(),
        "os": rec.os.get(),
        "kernel": rec.kernel.get(),
        "arch": rec.arch.get(),
        "cpu_model": rec.cpu_model.get(),
        "cpu_count": rec.cpu_count,
        "run_id": rec.run_id,
        "last_seq": rec.last_seq,
        "samples_received": rec.samples_received,
        "samples_replayed": rec.samples_replayed,
        "samples_dropped": rec.samples_dropped,
        "samples_missing": rec.samples_missing,
        "duplicates": rec.duplicates,
        "reconnects": rec.reconnects,
        "samples_before_start": rec.samples_before_start,
        "cpu_percent": num(s.cpu_percent),
        "cpu_user_percent": num(s.cpu_user_percent),
        "cpu_system_percent": num(s.cpu_system_percent),
        "cpu_iowait_percent": num(s.cpu_iowait_percent),
        "cpu_steal_percent": num(s.cpu_steal_percent),
        "load1": num(s.load1),
        "load5": num(s.load5),
        "load15": num(s.load15),
        "mem_total_bytes": s.mem_total_bytes,
        "mem_available_bytes": s.mem_available_bytes,
        "mem_used_bytes": s.mem_used_bytes,
        "swap_total_bytes": s.swap_total_bytes,
        "swap_used_bytes": s.swap_used_bytes,
        "uptime_s": s.uptime_s,
        "processes": s.processes,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The fleet-view fields added to HOST in /api/v1/hosts and the event stream: the latest
/// network rates (from the newest history point), the fullest filesystem (from the latest
/// sample) and the CPU and memory sparklines (percent, oldest first).
pub fn fleet_extras(recent: &Recent, host: &mut Map<String, Value>) {
    let rec = &recent.record;
    let last = recent.points.last();
    host.insert(
        "net_rx_bytes_per_s".into(),
        last.map_or(Value::Null, |p| num(p.net_rx_bytes_per_s)),
    );
    host.insert(
        "net_tx_bytes_per_s".into(),
        last.map_or(Value::Null, |p| num(p.net_tx_bytes_per_s)),
    );
    let fullest = recent
        .sample
        .as_deref()
        .and_then(|b| sentinel_protocol::decode_body::<sentinel_protocol::Sample>(b).ok())
        .and_then(|s| {
            s.filesystems
                .into_iter()
                .filter(|f| f.total_bytes > 0)
                .map(|f| {
                    let used = f.total_bytes.saturating_sub(f.available_bytes);
                    (used as f64 / f.total_bytes as f64, f)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0))
        })
        .map_or(Value::Null, |(ratio, f)| {
            json!({
                "mount": f.mount,
                "used_ratio": tenth(ratio * 1000.0).as_f64().map(|v| v / 1000.0),
                "total_bytes": f.total_bytes,
                "available_bytes": f.available_bytes,
            })
        });
    host.insert("fs_fullest".into(), fullest);
    let total = rec.summary.mem_total_bytes.max(1) as f64;
    let cpu: Vec<Value> = recent
        .points
        .iter()
        .map(|p| tenth(f64::from(p.cpu_percent)))
        .collect();
    let mem: Vec<Value> = recent
        .points
        .iter()
        .map(|p| tenth(p.mem_used_bytes as f64 * 100.0 / total))
        .collect();
    host.insert(
        "spark".into(),
        json!({"n": recent.first + recent.points.len() as u64, "cpu": cpu, "mem": mem}),
    );
}

/// HOST plus the fleet-view fields for slot `i`, or `None` for an unused or unreadable slot.
pub fn fleet_host(table: &Table, i: usize, now: u64, alive: bool) -> Option<(Record, Value)> {
    let recent = table.read_history(i, 0, SPARK_POINTS, true)?;
    if recent.record.in_use != 1 {
        return None;
    }
    let mut host = host_json(&recent.record, now, alive);
    fleet_extras(&recent, &mut host);
    Some((recent.record, Value::Object(host)))
}

/// The fleet view's row for slot `i`: only the HOST fields the fleet view shows, plus the
/// fleet-view fields. The event stream sends these (a third of a full HOST: 5,000 hosts a
/// second is a lot of JSON for a browser to parse); /api/v1/hosts sends full HOST objects.
pub fn fleet_row(table: &Table, i: usize, now: u64, alive: bool) -> Option<(Record, Value)> {
    let recent = table.read_history(i, 0, SPARK_POINTS, true)?;
    let rec = &recent.record;
    if rec.in_use != 1 {
        return None;
    }
    let s = &rec.summary;
    let mut row = match json!({
        "id": rec.agent_id(),
        "hostname": rec.hostname.get(),
        "status": status_of(rec, now).as_str(),
        "connected": rec.connected == 1 && alive,
        "last_seen_ms": rec.last_seen_ms,
        "agent_version": rec.agent_version.get(),
        "cpu_percent": num(s.cpu_percent),
        "load1": num(s.load1),
        "load5": num(s.load5),
        "load15": num(s.load15),
        "mem_total_bytes": s.mem_total_bytes,
        "mem_used_bytes": s.mem_used_bytes,
        "uptime_s": s.uptime_s,
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    fleet_extras(&recent, &mut row);
    Some((recent.record, Value::Object(row)))
}

/// The fleet as the event stream's snapshot: `{"now_ms", "hosts": [fleet rows]}`.
pub fn fleet_rows(table: &Table, now: u64) -> Value {
    let alive = collector_alive(table, now);
    let hosts: Vec<Value> = (0..table.host_count())
        .filter_map(|i| fleet_row(table, i, now, alive))
        .map(|(_, v)| v)
        .collect();
    json!({"now_ms": now, "hosts": hosts})
}

/// Consistent copies of every host record in use.
pub fn records(table: &Table) -> Vec<Record> {
    (0..table.host_count())
        .filter_map(|i| table.read_record(i))
        .filter(|r| r.in_use == 1)
        .collect()
}

pub fn hosts(table: &Table, now: u64) -> Value {
    let alive = collector_alive(table, now);
    let mut hosts: Vec<(Record, Value)> = (0..table.host_count())
        .filter_map(|i| fleet_host(table, i, now, alive))
        .collect();
    hosts.sort_by_cached_key(|(r, _)| (r.hostname.get(), r.agent_id()));
    let hosts: Vec<Value> = hosts.into_iter().map(|(_, v)| v).collect();
    json!({"now_ms": now, "hosts": hosts})
}

pub fn host_detail(table: &Table, id: &str, now: u64) -> Resp {
    if !sentinel_protocol::is_valid_agent_id(id) {
        return not_found();
    }
    let found = (0..table.host_count()).find(|&i| {
        table
            .read_record(i)
            .is_some_and(|r| r.in_use == 1 && r.agent_id() == id)
    });
    let Some(detail) = found.and_then(|i| table.read_detail(i)) else {
        return not_found();
    };
    let mut host = host_json(&detail.record, now, collector_alive(table, now));
    let sample = detail
        .sample
        .and_then(|b| sentinel_protocol::decode_body::<sentinel_protocol::Sample>(&b).ok())
        .and_then(|s| serde_json::to_string(&s).ok())
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .unwrap_or(Value::Null);
    host.insert("sample".into(), sample);
    let points: Vec<Value> = detail
        .history
        .iter()
        .map(|p| {
            json!({
                "ts_ms": p.ts_ms,
                "cpu_percent": num(p.cpu_percent),
                "mem_used_bytes": p.mem_used_bytes,
                "load1": num(p.load1),
                "net_rx_bytes_per_s": num(p.net_rx_bytes_per_s),
                "net_tx_bytes_per_s": num(p.net_tx_bytes_per_s),
                "disk_read_bytes_per_s": num(p.disk_read_bytes_per_s),
                "disk_write_bytes_per_s": num(p.disk_write_bytes_per_s),
            })
        })
        .collect();
    host.insert("history".into(), json!({ "points": points }));
    json_response(StatusCode::OK, &Value::Object(host))
}
