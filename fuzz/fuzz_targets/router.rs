//! The HTTP router (`sentinel_master::http::route_with`, a pure function of the table, the
//! method, the path and the clock) over an in-memory table holding one host with a hostile
//! hostname. Input: the first byte picks the method, the rest is the path. Properties: never
//! a 5xx, every response carries the security headers, every JSON body parses, and nothing
//! but the compiled-in assets is ever served as a file.
#![no_main]

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use bytes::Buf;
use hyper::body::Body as _;
use hyper::Method;
use libfuzzer_sys::fuzz_target;
use sentinel_master::http::route_with;
use sentinel_master::table::{account, layout, Record, Table};
use sentinel_protocol::{Hello, HostInfo, Sample};

const NOW: u64 = 1_764_000_000_000;
const ID: &str = "0123456789abcdef0123456789abcdef";

/// One host, stored the way the collector stores it, in a heap buffer standing in for the
/// shared-memory segment (leaked: it lives as long as the fuzzer).
fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let (capacity, points) = (8, 4);
        let mem: &'static mut [u64] =
            vec![0u64; layout::segment_size(capacity, points).div_ceil(8)].leak();
        // SAFETY: an 8-aligned, zeroed buffer of the segment's size that is never freed.
        let t = unsafe {
            Table::init(
                mem.as_mut_ptr() as *mut u8,
                mem.len() * 8,
                capacity,
                points,
                1,
                1,
            )
        }
        .expect("table");
        let hello = Hello {
            version: 1,
            agent_id: ID.into(),
            run_id: 1,
            hostname: "<script>alert(1)</script>\"\n\\".into(),
            interval_ms: 1000,
            clock_ms: NOW,
            agent_version: "1.0".into(),
            host: HostInfo::default(),
            proof: vec![0; 32],
            key: None,
            key_proof: None,
            labels: Default::default(),
        };
        let mut rec = Record::zeroed();
        account::handshake(&mut rec, &hello, "10.0.0.1:5000", NOW);
        let sample = Sample {
            seq: 1,
            ts_ms: NOW,
            cpu_percent: 12.5,
            cpu_cores_percent: vec![1.0, 2.0],
            ..Sample::default()
        };
        let (_, point) = account::apply_sample(&mut rec, &sample, false, NOW);
        let mut cbor = Vec::new();
        sentinel_protocol::frame::encode_body(&sample, &mut cbor).unwrap();
        {
            let w = t.writer().expect("writer");
            w.commit(0, rec, Some(&cbor), point);
            w.publish_host_count(1);
        }
        // A live collector: the heartbeat is on the boot clock (segment::boot_ms).
        t.header()
            .collector_heartbeat_boot_ms
            .store(sentinel_master::segment::boot_ms(), Ordering::Relaxed);
        t
    })
}

fn method(b: u8) -> Method {
    match b % 8 {
        0 | 1 | 2 => Method::GET,
        3 => Method::HEAD,
        4 => Method::POST,
        5 => Method::DELETE,
        6 => Method::OPTIONS,
        _ => Method::from_bytes(b"BREW").unwrap(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, path)) = data.split_first() else {
        return;
    };
    let path = String::from_utf8_lossy(path);
    let method = method(m);
    // The collector stays alive: /healthz judges its heartbeat on the real boot clock, and
    // a 503 from a stale one would be reported as a crash.
    table()
        .header()
        .collector_heartbeat_boot_ms
        .store(sentinel_master::segment::boot_ms(), Ordering::Relaxed);
    let response = route_with(table(), &method, &path, NOW, "");
    let status = response.status();
    assert!(!status.is_server_error(), "{method} {path:?}: {status}");
    let h = response.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    let json = h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json");
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(frame))) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
        if let Ok(mut data) = frame.into_data() {
            while data.has_remaining() {
                bytes.extend_from_slice(data.chunk());
                data.advance(data.chunk().len());
            }
        }
    }
    if json {
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("a JSON body parses");
    }
    // Only the known routes answer 200: the compiled-in assets by exact name (and the
    // dashboard's /hosts/{id} view), the API with the one host this table holds.
    if status.is_success() {
        let known = matches!(
            &*path,
            "/" | "/index.html"
                | "/app.js"
                | "/style.css"
                | "/healthz"
                | "/metrics"
                | "/api/v1/hosts"
                | "/api/v1/events"
        ) || path == format!("/api/v1/hosts/{ID}")
            || path
                .strip_prefix("/hosts/")
                .is_some_and(|id| !id.is_empty() && !id.contains('/'));
        assert!(known, "{method} {path:?} answered {status}");
    }
});
