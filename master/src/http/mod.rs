//! The http process: serves the dashboard, the JSON API, the live event stream and /metrics
//! from the table, and runs the optional remote_write forwarder. It only reads the table
//! (seqlock copies); it never writes and never takes the collectors' lock.
//!
//! - `api`: /api/v1/hosts, /api/v1/hosts/{id}, /healthz (JSON)
//! - `sse`: /api/v1/events (live updates, one table watcher shared by every client)
//! - `filter`: the host filters of /api/v1/hosts, /api/v1/labels, /api/v1/groups and the
//!   event stream (one parser, one matcher)
//! - `metrics`: /metrics (Prometheus text format)
//! - `assets`: the dashboard files compiled into the binary
//! - `auth`: optional basic authentication (everything but /healthz)
//!
//! With `http_tls_cert_file`/`http_tls_key_file` every connection is HTTPS (rustls); a
//! plaintext request on that port fails its TLS handshake and is closed.

mod api;
mod assets;
pub mod auth;
pub mod filter;
pub(crate) mod metrics;
mod sse;
mod write;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytes_utils::SegmentedBuf;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::remote_write::{self, Forwarder};
use crate::segment::{now_ms, Segment};
use crate::table::Table;
use filter::{FilterError, For, Query};

/// Concurrent HTTP connections; more wait in the backlog. Well above what dashboards and
/// scrapers use, so that slow clients holding connections (a slowloris: 2,000 of them in
/// tests/tests/http_hostile.rs) do not take every slot before the header timeout frees them.
const MAX_HTTP_CONNECTIONS: usize = 4096;
/// A client must send its request headers within this (what a slow client can hold a
/// connection for).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The CSP of every response: nothing from elsewhere, and no framing (clickjacking).
const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

/// What every request handler can reach: the table, the live-update feed and the forwarder's
/// counters (for /metrics).
pub struct State {
    pub table: &'static Table,
    pub events: sse::Feed,
    pub forwarder: Option<Arc<Forwarder>>,
    /// Flips to true on SIGTERM: event streams end so browsers notice at once.
    pub stopping: watch::Receiver<bool>,
    /// Rendered hosts kept between GET /api/v1/hosts requests.
    pub hosts: api::HostsCache,
    /// The configured credentials: the viewer (every request but /healthz must carry a
    /// credential when it is set), the operator user and the API token (writes).
    pub access: auth::Access,
    /// The control channel to the collector (operator writes).
    pub control: std::sync::Arc<crate::control::Client>,
}

pub fn run(config: Config) -> anyhow::Result<()> {
    let listener = crate::supervisor::inherited_listener()?;
    let segment: &'static Segment = Box::leak(Box::new(Segment::open(&config.shm_name)?));
    let table = segment.table();
    let tls = match &config.http_tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(
            files.server_config(&[b"http/1.1"])?,
        )),
        None => None,
    };
    tracing::info!(
        pid = std::process::id(),
        https = tls.is_some(),
        basic_auth_user = config.basic_auth.as_ref().map(|a| a.user.as_str()),
        operator_user = config.operator.as_ref().map(|a| a.user.as_str()),
        api_token = config.api_token.is_some(),
        "http server started"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("http")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let forwarder = match &config.remote_write {
            Some(rw) => {
                let state = config
                    .state_dir
                    .join(format!("{}.remote-write", config.shm_name));
                Some(remote_write::start(
                    table,
                    rw.clone(),
                    state,
                    stop_rx.clone(),
                )?)
            }
            None => None,
        };
        let state = Arc::new(State {
            table,
            events: sse::Feed::start(table, stop_rx.clone()),
            forwarder: forwarder.as_ref().map(|(f, _)| f.clone()),
            stopping: stop_rx,
            hosts: api::HostsCache::default(),
            access: auth::Access {
                viewer: config.basic_auth.clone(),
                operator: config.operator.clone(),
                token: config.api_token.clone(),
            },
            control: crate::control::Client::start(crate::control::inherited(), table),
        });
        tokio::spawn(warm_hosts(state.clone()));
        let serve = serve(listener, state, tls);
        tokio::select! {
            () = serve => {}
            _ = crate::shutdown_signal() => tracing::info!("http server stopping"),
        }
        let _ = stop_tx.send(true);
        if let Some((_, task)) = forwarder {
            // The forwarder flushes what the (stopping) collector stored before we exit.
            let _ = task.await;
        }
        Ok(())
    })
}

/// Keeps GET /api/v1/hosts' cache warm while it is being polled ([`api::HostsCache::warm`]).
async fn warm_hosts(state: Arc<State>) {
    let mut tick = tokio::time::interval(api::WARM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !state.hosts.polled(now_ms()) {
            // Nobody polls: no wake-ups until the next request.
            state.hosts.requested.notified().await;
            tick.reset();
        }
        tick.tick().await;
        let state = state.clone();
        // Rendering a few hundred hosts is CPU work: off the runtime's workers.
        let warmed = tokio::task::spawn_blocking(move || state.hosts.warm(state.table, now_ms()));
        if warmed.await.is_err() {
            return;
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let limit = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, state, peer).await,
                // The handshake shares the header timeout: a client that stalls it is a
                // slow client like any other.
                Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, state, peer).await,
                    // Browsers abort handshakes routinely (a certificate prompt, a closed
                    // tab): not worth more than a debug line.
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "https handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %peer, "https handshake timed out"),
                },
            }
            drop(permit);
        });
    }
}

async fn serve_connection<I>(io: I, state: Arc<State>, peer: std::net::SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            if write::is_write_route(&state, req.method(), req.uri().path()) {
                let r = write::handle(&state, req.uri().path(), req.headers(), peer).await;
                return Ok::<_, Infallible>(boxed(r));
            }
            Ok::<_, Infallible>(handle(&state, &req))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Response data: one buffer, or several sent one after another with writev (GET
/// /api/v1/hosts sends its cached host objects so instead of joining them into one).
type Data = SegmentedBuf<Bytes>;
type Body = UnsyncBoxBody<Data, Infallible>;

/// A [`Resp`] as a [`Body`] response (its length stays known: Content-Length, not chunked).
fn boxed(r: Resp) -> Response<Body> {
    r.map(|b| b.boxed_unsync())
}

/// What a request asks for. [`resolve`] is the only place that matches methods and paths:
/// production ([`handle`]), the tests and the fuzzer ([`route_with`]) all route through it,
/// so HEAD (answered like GET, without the body) works on every GET route by construction.
enum Endpoint<'a> {
    Asset(assets::Asset),
    Healthz,
    Metrics,
    Hosts,
    HostDetail(&'a str),
    Labels,
    Groups,
    Events,
    NotFound,
    MethodNotAllowed,
}

fn resolve<'a>(method: &Method, path: &'a str) -> Endpoint<'a> {
    if method != Method::GET && method != Method::HEAD {
        return Endpoint::MethodNotAllowed;
    }
    if let Some(asset) = assets::get(path) {
        return Endpoint::Asset(asset);
    }
    match path {
        "/healthz" => Endpoint::Healthz,
        "/metrics" => Endpoint::Metrics,
        "/api/v1/hosts" => Endpoint::Hosts,
        "/api/v1/labels" => Endpoint::Labels,
        "/api/v1/groups" => Endpoint::Groups,
        "/api/v1/events" => Endpoint::Events,
        _ => match path.strip_prefix("/api/v1/hosts/") {
            Some(id) if !id.is_empty() && !id.contains('/') => Endpoint::HostDetail(id),
            _ => Endpoint::NotFound,
        },
    }
}

const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// The event stream's response head with no body: what HEAD gets, and what [`route_with`]
/// (which has no running feed) answers for it.
fn events_head<B>(body: B) -> Response<B> {
    let mut r = Response::new(body);
    set_common_headers(&mut r, EVENT_STREAM);
    r
}

/// The filter an endpoint takes, parsed from the query string (`None`: the endpoint takes
/// none and ignores the query string, as before filters existed).
fn query_of(endpoint: &Endpoint, query: Option<&str>) -> Option<Result<Query, FilterError>> {
    let what = match endpoint {
        Endpoint::Hosts => For::Hosts,
        Endpoint::Labels => For::Labels,
        Endpoint::Groups => For::Groups,
        Endpoint::Events => For::Events,
        _ => return None,
    };
    Some(filter::parse(query, what))
}

/// 400 `{"error": "..."}` for a refused query (the message names the parameter).
fn bad_query(e: &FilterError) -> Resp {
    json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()}))
}

/// The `X-Total-Count` header of /api/v1/hosts: matching hosts before paging.
fn set_total<B>(r: &mut Response<B>, total: usize) {
    r.headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
}

/// The endpoints that need nothing but the table and the clock.
fn render(
    table: &Table,
    endpoint: Endpoint,
    query: Option<&str>,
    now: u64,
    metrics_extra: &str,
) -> Resp {
    let q = match query_of(&endpoint, query) {
        Some(Err(e)) => return bad_query(&e),
        Some(Ok(q)) => q,
        None => Query::default(),
    };
    match endpoint {
        Endpoint::MethodNotAllowed => {
            let mut r = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed"}),
            );
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            r
        }
        Endpoint::Asset(asset) => respond(StatusCode::OK, asset.content_type, asset.body),
        Endpoint::Healthz => api::healthz(table),
        Endpoint::Metrics => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(table, now) + metrics_extra,
        ),
        Endpoint::Hosts => {
            let (body, total) = api::hosts_query(table, now, &q);
            let mut r = json_response(StatusCode::OK, &body);
            set_total(&mut r, total);
            r
        }
        Endpoint::HostDetail(id) => api::host_detail(table, id, now),
        Endpoint::Labels => api::labels(table, now, &q),
        Endpoint::Groups => api::groups(table, now, &q),
        Endpoint::Events => events_head(Full::new(Data::new())),
        Endpoint::NotFound => not_found(),
    }
}

/// Production routing: [`resolve`], then the running feed for the event stream and the
/// cached renderer for /api/v1/hosts; everything else is [`render`]. A HEAD response is the
/// GET response (hyper sends its head, Content-Length included, never the body); the event
/// stream's HEAD gets the stream's headers and no subscription. hyper leaves out
/// `Transfer-Encoding: chunked` from that head (RFC 9110 9.3.2 lets a HEAD response omit
/// the framing header fields).
fn handle(state: &State, req: &Request<Incoming>) -> Response<Body> {
    if state.access.viewer.is_some() && auth::protects(req.uri().path()) {
        let who = state.access.identify(req.headers().get(AUTHORIZATION));
        if !state.access.may_read(&who) {
            return boxed(unauthorized());
        }
    }
    let head = req.method() == Method::HEAD;
    let now = now_ms();
    let endpoint = resolve(req.method(), req.uri().path());
    let query = req.uri().query();
    let q = match query_of(&endpoint, query) {
        Some(Err(e)) => {
            tracing::debug!(error = %e, "A request's filter was refused.");
            return boxed(bad_query(&e));
        }
        Some(Ok(q)) => q,
        None => Query::default(),
    };
    match endpoint {
        // Nothing to subscribe to for a head: an empty body (hyper sends the head only).
        Endpoint::Events if head => events_head(
            http_body_util::StreamBody::new(futures_util::stream::empty()).boxed_unsync(),
        ),
        Endpoint::Events if !state.events.has_room_for(&q) => {
            let mut r = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "parameter \"group_by\": too many distinct group summaries streamed; retry later"}),
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("10"));
            boxed(r)
        }
        Endpoint::Events => events_head(sse::stream(state, q)),
        Endpoint::Hosts => {
            let (body, total) = state.hosts.render_query(state.table, now, &q);
            let mut r = Response::new(Full::new(body));
            set_common_headers(&mut r, "application/json");
            set_total(&mut r, total);
            boxed(r)
        }
        endpoint => {
            let extra = match (&endpoint, &state.forwarder) {
                (Endpoint::Metrics, Some(f)) => f.metrics_text(),
                _ => String::new(),
            };
            boxed(render(state.table, endpoint, query, now, &extra))
        }
    }
}

type Resp = Response<Full<Data>>;

fn set_common_headers<B>(r: &mut Response<B>, content_type: &'static str) {
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    // For browsers that predate CSP frame-ancestors.
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(Data::from_iter([body.into()])));
    *r.status_mut() = status;
    set_common_headers(&mut r, content_type);
    r
}

fn json_response(status: StatusCode, v: &Value) -> Resp {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// 401 with the basic-auth challenge (browsers then ask for the user and password).
fn unauthorized() -> Resp {
    let mut r = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "authentication required"}),
    );
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(auth::CHALLENGE));
    r
}

fn not_found() -> Resp {
    json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}))
}

/// The router, a pure function of the table and the clock (tested without sockets).
#[cfg(test)]
pub fn route(table: &Table, method: &Method, path: &str, now: u64) -> Resp {
    route_with(table, method, path, now, "")
}

/// `metrics_extra`: families of this process's own (the remote_write forwarder's counters).
/// Public for `fuzz/` (the router as a pure function): the same [`resolve`] as production;
/// /api/v1/hosts rendered without the cache, the event stream as its head only (its filter
/// is checked: a refused one is the same 400). `target` is the path with an optional
/// `?query`.
pub fn route_with(
    table: &Table,
    method: &Method,
    target: &str,
    now: u64,
    metrics_extra: &str,
) -> Resp {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    render(table, resolve(method, path), query, now, metrics_extra)
}

#[cfg(test)]
mod tests {
    use super::assets::{APP_JS, INDEX_HTML};
    use super::*;
    use crate::segment::boot_ms;
    use crate::table::{account, Record, TestTable};
    use bytes::Buf;
    use http_body_util::BodyExt;
    use sentinel_protocol::{Hello, HostInfo, Sample};
    use std::sync::atomic::Ordering;

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
            key: None,
            key_proof: None,
            labels: Default::default(),
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
        sentinel_protocol::encode_sample(&sample, &mut cbor).unwrap();
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
            .collector_heartbeat_boot_ms
            .store(boot_ms() - 100, Ordering::Relaxed);
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
            samples_dropped samples_missing duplicates reconnects samples_before_start identity key_sha256 cloned_address cloned_ms labels cpu_percent cpu_user_percent cpu_system_percent \
            cpu_iowait_percent cpu_steal_percent load1 load5 load15 mem_total_bytes mem_available_bytes \
            mem_used_bytes swap_total_bytes swap_used_bytes uptime_s processes";
        for f in fields.split_whitespace() {
            assert!(hosts[0].get(f).is_some(), "missing {f}");
        }
        let extras = "net_rx_bytes_per_s net_tx_bytes_per_s fs_fullest spark";
        for f in extras.split_whitespace() {
            assert!(hosts[0].get(f).is_some(), "missing {f}");
        }
        assert_eq!(
            hosts[0].as_object().unwrap().len(),
            fields.split_whitespace().count() + extras.split_whitespace().count()
        );
        assert_eq!(hosts[0]["spark"]["cpu"], json!([12]));
        assert_eq!(hosts[0]["spark"]["n"], 1);
    }

    #[test]
    fn cached_hosts_render_what_an_uncached_render_does_as_the_table_changes() {
        let t = fleet();
        let cache = api::HostsCache::default();
        let same = |now: u64| {
            let mut body = cache.render(&t.table, now);
            let cached: Value =
                serde_json::from_slice(&body.copy_to_bytes(body.remaining())).unwrap();
            assert_eq!(cached, api::hosts(&t.table, now));
            cached
        };
        let statuses = |v: &Value| -> Vec<String> {
            v["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| format!("{} {}", h["hostname"], h["status"]))
                .collect()
        };
        let v = same(NOW);
        assert_eq!(statuses(&v).len(), 2);
        // A new sample for "zeta" (stale -> up), and a new host sorted between the others.
        add_host(&t.table, 0, A, "zeta", NOW + 1000);
        add_host(&t.table, 2, &"c".repeat(32), "mid", NOW + 1000);
        let v = same(NOW + 1000);
        assert_eq!(
            statuses(&v),
            [
                r#""alpha <script>\"x\"\n" "up""#,
                r#""mid" "up""#,
                r#""zeta" "up""#
            ]
        );
        // Time alone moves every status on; a dead collector turns `connected` off.
        let v = same(NOW + 60_000);
        assert!(statuses(&v).iter().all(|s| s.ends_with(r#""down""#)));
        t.table
            .header()
            .collector_heartbeat_boot_ms
            .store(0, Ordering::Relaxed);
        let v = same(NOW + 60_000);
        assert!(v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["connected"] == false));
    }

    #[test]
    fn the_warmer_renders_changed_hosts_only_while_the_hosts_are_polled() {
        let t = fleet();
        let cache = api::HostsCache::default();
        // Never asked for: nothing is rendered in the background.
        assert_eq!(cache.warm(&t.table, NOW), 0);
        let body = |now: u64| {
            let mut b = cache.render(&t.table, now);
            serde_json::from_slice::<Value>(&b.copy_to_bytes(b.remaining())).unwrap()
        };
        body(NOW);
        assert_eq!(cache.warm(&t.table, NOW), 0, "nothing changed");
        // Two new samples: the warmer renders exactly those two hosts, and the next request
        // (which renders what is still stale) matches an uncached render.
        add_host(&t.table, 0, A, "zeta", NOW + 500);
        add_host(&t.table, 1, B, "beta", NOW + 500);
        assert_eq!(cache.warm(&t.table, NOW + 500), 2);
        assert_eq!(cache.warm(&t.table, NOW + 500), 0);
        assert_eq!(body(NOW + 500), api::hosts(&t.table, NOW + 500));
        // A host that appears is rendered too.
        add_host(&t.table, 2, &"c".repeat(32), "mid", NOW + 600);
        assert_eq!(cache.warm(&t.table, NOW + 600), 1);
        assert_eq!(body(NOW + 600), api::hosts(&t.table, NOW + 600));
        // Once nobody has asked for KEEP_WARM_MS, changes wait for the next request.
        let later = NOW + 600 + api::KEEP_WARM_MS + 1;
        add_host(&t.table, 0, A, "zeta", later);
        assert_eq!(cache.warm(&t.table, later), 0);
        assert_eq!(body(later), api::hosts(&t.table, later));
    }

    #[test]
    fn a_sample_in_the_long_key_form_of_a_restored_layout_1_snapshot_still_shows() {
        let t = fleet();
        let w = t.table.writer().unwrap();
        let sample = Sample {
            seq: 1,
            cpu_percent: 7.5,
            ..Sample::default()
        };
        let mut long = Vec::new();
        sentinel_protocol::frame::encode_body(&sample, &mut long).unwrap();
        w.commit(0, w.record(0), Some(&long), None);
        let (code, _, body) = get(&t.table, &format!("/api/v1/hosts/{A}"));
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json(&body)["sample"]["cpu_percent"].as_f64(), Some(7.5));
    }

    #[test]
    fn host_detail_has_sample_and_history_and_unknown_ids_are_404() {
        let t = fleet();
        let (code, _, body) = get(&t.table, &format!("/api/v1/hosts/{A}"));
        assert_eq!(code, StatusCode::OK);
        let v = json(&body);
        assert_eq!(v["sample"]["seq"], 1);
        // f32 values in their shortest form, not widened to f64 digits.
        assert!(body.contains(r#""cpu_percent":12.3,"#), "{body}");
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
            .collector_heartbeat_boot_ms
            .store(boot_ms() - 2001, Ordering::Relaxed);
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
            ("/hosts/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "text/html"),
            ("/app.js", "text/javascript"),
            ("/style.css", "text/css"),
        ] {
            let (code, headers, _) = get(&t.table, path);
            assert_eq!(code, StatusCode::OK);
            assert!(headers[CONTENT_TYPE].to_str().unwrap().starts_with(ctype));
            assert_eq!(headers["content-security-policy"], CSP);
        }
        // The SVG namespace is a name, not a request.
        let js = APP_JS.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !js.contains("innerHTML")
                && !js.contains("outerHTML")
                && !js.contains("insertAdjacentHTML")
                && !js.contains("document.write")
                && !js.contains("eval(")
                && !js.contains("http://")
                && !js.contains("https://")
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
    fn filters_page_the_hosts_with_a_total_and_bad_ones_are_400_naming_the_parameter() {
        let t = fleet();
        add_host(&t.table, 2, &"c".repeat(32), "mid", NOW);
        let names = |body: &str| -> Vec<String> {
            json(body)["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["hostname"].as_str().unwrap().to_owned())
                .collect()
        };
        let (code, headers, body) = get(&t.table, "/api/v1/hosts?status=up&limit=1&offset=1");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers["x-total-count"], "2");
        assert_eq!(names(&body), ["mid"]);
        let (_, headers, body) = get(&t.table, "/api/v1/hosts?q=ZET");
        assert_eq!(
            (&headers["x-total-count"], names(&body)),
            (&HeaderValue::from(1), vec!["zeta".to_owned()])
        );
        let (_, headers, body) = get(&t.table, "/api/v1/hosts?offset=9");
        assert_eq!(
            (&headers["x-total-count"], names(&body).len()),
            (&HeaderValue::from(3), 0)
        );
        // The cached render selects and pages the same hosts.
        let cache = api::HostsCache::default();
        for query in [
            "status=up&limit=1&offset=1",
            "q=a",
            "label=!role",
            "limit=2",
            "",
        ] {
            let q = filter::parse(Some(query), For::Hosts).unwrap();
            let (mut body, total) = cache.render_query(&t.table, NOW, &q);
            let cached: Value =
                serde_json::from_slice(&body.copy_to_bytes(body.remaining())).unwrap();
            assert_eq!(
                (cached, total),
                api::hosts_query(&t.table, NOW, &q),
                "{query}"
            );
        }
        let (code, _, body) = get(&t.table, "/api/v1/groups?status=up");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            json(&body),
            json!({"total": {"hosts": 2, "up": 2, "stale": 0, "down": 0, "stopped": 0}})
        );
        let (code, _, body) = get(&t.table, "/api/v1/labels");
        assert_eq!((code, json(&body)), (StatusCode::OK, json!({"labels": []})));
        for (path, needle) in [
            ("/api/v1/hosts?status=sleeping", "parameter \"status\""),
            ("/api/v1/hosts?ids=x", "parameter \"ids\": unknown here"),
            ("/api/v1/labels?label=a-b", "parameter \"label\""),
            ("/api/v1/groups?by=", "parameter \"by\""),
            ("/api/v1/events?ids=zz", "parameter \"ids\""),
            ("/api/v1/hosts?q=%ff", "percent-encoding"),
        ] {
            let (code, headers, body) = get(&t.table, path);
            assert_eq!(code, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(headers["content-security-policy"], CSP);
            let e = json(&body)["error"].as_str().unwrap().to_owned();
            assert!(e.contains(needle), "{path}: {e}");
        }
        for path in [
            "/api/v1/labels?q=a",
            "/api/v1/groups?by=role",
            "/api/v1/events?label=a",
        ] {
            let r = route(&t.table, &Method::HEAD, path, NOW);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
        }
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
