//! The http process: serves the dashboard, the JSON API and /metrics from the table. It only
//! reads the table (seqlock copies); it never writes and never takes the collectors' lock.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::segment::{now_ms, Segment};
use crate::status::Status;
use crate::table::{Record, Table};

/// /healthz reports `degraded` (503) when the collector heartbeat is older than this.
pub const HEARTBEAT_STALE_MS: u64 = 2000;
/// Concurrent HTTP connections; more wait in the backlog.
const MAX_HTTP_CONNECTIONS: usize = 1024;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

pub fn run(config: Config) -> anyhow::Result<()> {
    let listener = crate::supervisor::inherited_listener()?;
    let segment: &'static Segment = Box::leak(Box::new(Segment::open(&config.shm_name)?));
    let table = segment.table();
    tracing::info!(pid = std::process::id(), "http server started");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("http")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let limit = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
        let serve = async {
            loop {
                let permit = limit
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closed");
                let (stream, _) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            Ok::<_, Infallible>(route(
                                table,
                                req.method(),
                                req.uri().path(),
                                now_ms(),
                            ))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    drop(permit);
                });
            }
        };
        tokio::select! {
            () = serve => Ok(()),
            _ = crate::shutdown_signal() => {
                tracing::info!("http server stopping");
                Ok(())
            }
        }
    })
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Resp {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn not_found() -> Resp {
    json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}))
}

/// The router, a pure function of the table and the clock (tested without sockets).
pub fn route(table: &Table, method: &Method, path: &str, now: u64) -> Resp {
    if method != Method::GET && method != Method::HEAD {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method not allowed"}),
        );
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        "/style.css" => respond(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS),
        "/healthz" => healthz(table, now),
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(table, now),
        ),
        "/api/v1/hosts" => json_response(StatusCode::OK, &hosts(table, now)),
        _ => match path.strip_prefix("/api/v1/hosts/") {
            Some(id) if !id.is_empty() && !id.contains('/') => host_detail(table, id, now),
            _ => not_found(),
        },
    }
}

fn collector_alive(table: &Table, now: u64) -> bool {
    now.saturating_sub(
        table
            .header()
            .collector_heartbeat_ms
            .load(Ordering::Acquire),
    ) <= HEARTBEAT_STALE_MS
}

fn healthz(table: &Table, now: u64) -> Resp {
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
fn num(v: f32) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    format!("{v}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn status_of(rec: &Record, now: u64) -> Status {
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

/// Consistent copies of every host record in use.
fn records(table: &Table) -> Vec<Record> {
    (0..table.host_count())
        .filter_map(|i| table.read_record(i))
        .filter(|r| r.in_use == 1)
        .collect()
}

fn hosts(table: &Table, now: u64) -> Value {
    let alive = collector_alive(table, now);
    let mut recs = records(table);
    recs.sort_by_cached_key(|r| (r.hostname.get(), r.agent_id()));
    let hosts: Vec<Value> = recs
        .iter()
        .map(|r| Value::Object(host_json(r, now, alive)))
        .collect();
    json!({"now_ms": now, "hosts": hosts})
}

fn host_detail(table: &Table, id: &str, now: u64) -> Resp {
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

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metrics(table: &Table, now: u64) -> String {
    let recs = records(table);
    let mut out = String::with_capacity(256 + recs.len() * 600);
    type Getter = fn(&Record, u64) -> f64;
    let families: &[(&str, &str, &str, Getter)] = &[
        (
            "sentinel_host_up",
            "gauge",
            "1 if the host's status is up, else 0.",
            |r, now| f64::from(u8::from(status_of(r, now) == Status::Up)),
        ),
        (
            "sentinel_host_cpu_ratio",
            "gauge",
            "CPU busy share of the latest sample (0-1).",
            |r, _| f64::from(r.summary.cpu_percent) / 100.0,
        ),
        (
            "sentinel_host_memory_total_bytes",
            "gauge",
            "Total memory of the latest sample.",
            |r, _| r.summary.mem_total_bytes as f64,
        ),
        (
            "sentinel_host_memory_available_bytes",
            "gauge",
            "Available memory of the latest sample.",
            |r, _| r.summary.mem_available_bytes as f64,
        ),
        (
            "sentinel_host_load1",
            "gauge",
            "One-minute load average of the latest sample.",
            |r, _| f64::from(r.summary.load1),
        ),
        (
            "sentinel_host_samples_received_total",
            "counter",
            "Distinct samples stored for the host (all runs).",
            |r, _| r.samples_received as f64,
        ),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &recs {
            let _ = writeln!(
                out,
                "{name}{{host=\"{}\",id=\"{}\"}} {}",
                label(&r.hostname.get()),
                label(&r.agent_id()),
                get(r, now)
            );
        }
    }
    let h = table.header();
    let age = now.saturating_sub(h.collector_heartbeat_ms.load(Ordering::Acquire)) as f64 / 1000.0;
    let _ = writeln!(out, "# HELP sentinel_master_hosts Hosts in the table.\n# TYPE sentinel_master_hosts gauge\nsentinel_master_hosts {}", recs.len());
    let _ = writeln!(out, "# HELP sentinel_master_table_capacity Host slots in the table.\n# TYPE sentinel_master_table_capacity gauge\nsentinel_master_table_capacity {}", table.capacity());
    let _ = writeln!(out, "# HELP sentinel_master_collector_heartbeat_age_seconds Age of the collector's last heartbeat.\n# TYPE sentinel_master_collector_heartbeat_age_seconds gauge\nsentinel_master_collector_heartbeat_age_seconds {age}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{account, TestTable};
    use http_body_util::BodyExt;
    use sentinel_protocol::{Hello, HostInfo, Sample};

    const NOW: u64 = 1_700_000_000_000;

    fn add_host(t: &Table, slot: usize, id: &str, hostname: &str, last_seen: u64) {
        let w = t.writer().unwrap();
        let hello = Hello {
            version: 1,
            agent_id: id.into(),
            run_id: 1,
            hostname: hostname.into(),
            interval_ms: 1000,
            clock_ms: last_seen,
            agent_version: "1.0".into(),
            host: HostInfo {
                os: "Linux".into(),
                cpu_count: 2,
                ..HostInfo::default()
            },
            proof: vec![0; 32],
        };
        let mut rec = Record::zeroed();
        account::handshake(&mut rec, &hello, "10.0.0.1:5000", last_seen);
        let sample = Sample {
            seq: 1,
            ts_ms: last_seen,
            cpu_percent: 12.3,
            mem_total_bytes: 1000,
            ..Sample::default()
        };
        let (_, point) = account::apply_sample(&mut rec, &sample, false, last_seen);
        let mut cbor = Vec::new();
        sentinel_protocol::frame::encode_body(&sample, &mut cbor).unwrap();
        w.commit(slot, rec, Some(&cbor), point);
        w.publish_host_count(slot + 1);
    }

    fn get(t: &Table, path: &str) -> (StatusCode, hyper::HeaderMap, String) {
        let r = route(t, &Method::GET, path, NOW);
        let (parts, body) = r.into_parts();
        let bytes = futures_util::FutureExt::now_or_never(body.collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    fn json(body: &str) -> Value {
        serde_json::from_str(body).unwrap()
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn fleet() -> TestTable {
        let t = TestTable::new(8, 4);
        add_host(&t.table, 0, A, "zeta", NOW - 5000);
        add_host(&t.table, 1, B, "alpha <script>\"x\"\n", NOW);
        t.table
            .header()
            .collector_heartbeat_ms
            .store(NOW - 100, Ordering::Relaxed);
        t
    }

    #[test]
    fn hosts_are_sorted_by_hostname_with_every_contract_field() {
        let t = fleet();
        let (code, _, body) = get(&t.table, "/api/v1/hosts");
        assert_eq!(code, StatusCode::OK);
        let v = json(&body);
        assert_eq!(v["now_ms"], NOW);
        let hosts = v["hosts"].as_array().unwrap();
        assert_eq!(hosts[0]["id"], B);
        assert_eq!(
            (hosts[0]["status"].as_str(), hosts[1]["status"].as_str()),
            (Some("up"), Some("stale"))
        );
        assert_eq!(hosts[0]["cpu_percent"].as_f64(), Some(12.3));
        let fields = "id hostname address status connected first_seen_ms last_seen_ms interval_ms clock_offset_ms \
            agent_version os kernel arch cpu_model cpu_count run_id last_seq samples_received samples_replayed \
            samples_dropped samples_missing duplicates reconnects samples_before_start cpu_percent cpu_user_percent cpu_system_percent \
            cpu_iowait_percent cpu_steal_percent load1 load5 load15 mem_total_bytes mem_available_bytes \
            mem_used_bytes swap_total_bytes swap_used_bytes uptime_s processes";
        for f in fields.split_whitespace() {
            assert!(hosts[0].get(f).is_some(), "missing {f}");
        }
        assert_eq!(
            hosts[0].as_object().unwrap().len(),
            fields.split_whitespace().count()
        );
    }

    #[test]
    fn host_detail_has_sample_and_history_and_unknown_ids_are_404() {
        let t = fleet();
        let (code, _, body) = get(&t.table, &format!("/api/v1/hosts/{A}"));
        assert_eq!(code, StatusCode::OK);
        let v = json(&body);
        assert_eq!(v["sample"]["seq"], 1);
        assert_eq!(v["sample"]["cpu_percent"].as_f64(), Some(12.3));
        assert_eq!(v["history"]["points"].as_array().unwrap().len(), 1);
        for path in [
            "/api/v1/hosts/cccccccccccccccccccccccccccccccc",
            "/api/v1/hosts/../etc",
            "/api/v1/hosts/",
            "/nope",
        ] {
            let (code, _, body) = get(&t.table, path);
            assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(json(&body)["error"], "not found");
        }
    }

    #[test]
    fn healthz_degrades_when_the_collector_heartbeat_is_old() {
        let t = fleet();
        let (code, _, body) = get(&t.table, "/healthz");
        let v = json(&body);
        assert_eq!(
            (
                code,
                v["status"].as_str(),
                v["hosts"].as_u64(),
                v["capacity"].as_u64()
            ),
            (StatusCode::OK, Some("ok"), Some(2), Some(8))
        );
        for key in [
            "supervisor_pid",
            "collector_pid",
            "http_pid",
            "collector_heartbeat_age_ms",
        ] {
            assert!(v[key].is_u64(), "{key}");
        }
        t.table
            .header()
            .collector_heartbeat_ms
            .store(NOW - 2001, Ordering::Relaxed);
        let (code, _, body) = get(&t.table, "/healthz");
        assert_eq!(
            (code, json(&body)["status"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("degraded"))
        );
        // Without a live collector no host is shown as connected.
        let (_, _, body) = get(&t.table, "/api/v1/hosts");
        assert_eq!(json(&body)["hosts"][0]["connected"], false);
    }

    #[test]
    fn dashboard_is_self_contained_and_never_uses_inner_html() {
        let t = fleet();
        for (path, ctype) in [
            ("/", "text/html"),
            ("/app.js", "text/javascript"),
            ("/style.css", "text/css"),
        ] {
            let (code, headers, _) = get(&t.table, path);
            assert_eq!(code, StatusCode::OK);
            assert!(headers[CONTENT_TYPE].to_str().unwrap().starts_with(ctype));
            assert_eq!(headers["content-security-policy"], "default-src 'self'");
        }
        assert!(
            !APP_JS.contains("innerHTML")
                && !APP_JS.contains("http://")
                && !APP_JS.contains("https://")
        );
        assert!(
            !INDEX_HTML.contains("<script>")
                && !INDEX_HTML.contains("style=")
                && !INDEX_HTML.contains("http")
        );
    }

    #[test]
    fn metrics_have_help_and_type_and_escape_hostile_labels() {
        let t = fleet();
        let (code, _, body) = get(&t.table, "/metrics");
        assert_eq!(code, StatusCode::OK);
        for name in [
            "sentinel_host_up",
            "sentinel_host_cpu_ratio",
            "sentinel_host_memory_total_bytes",
            "sentinel_host_memory_available_bytes",
            "sentinel_host_load1",
            "sentinel_host_samples_received_total",
            "sentinel_master_hosts",
            "sentinel_master_table_capacity",
        ] {
            assert!(
                body.contains(&format!("# HELP {name} "))
                    && body.contains(&format!("# TYPE {name} ")),
                "{name}"
            );
        }
        assert!(
            body.contains(&format!(
                "sentinel_host_up{{host=\"alpha <script>\\\"x\\\"\\n\",id=\"{B}\"}} 1"
            )),
            "{body}"
        );
        assert!(body.contains(&format!("sentinel_host_up{{host=\"zeta\",id=\"{A}\"}} 0")));
        assert!(
            body.contains("sentinel_master_hosts 2\n")
                && body.contains("sentinel_master_table_capacity 8\n")
        );
        assert!(body.lines().all(|l| !l.is_empty()));
    }

    #[test]
    fn only_get_and_head_are_allowed() {
        let t = fleet();
        let r = route(&t.table, &Method::POST, "/api/v1/hosts", NOW);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            route(&t.table, &Method::HEAD, "/healthz", NOW).status(),
            StatusCode::OK
        );
    }
}
