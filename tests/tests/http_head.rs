//! HEAD on every GET route: the same status and headers as GET, and no body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sentinel_tests::*;

/// Sends one request with `Connection: close` and returns (status line, headers lowercased
/// and sorted without `date`, bytes after the head). With `head_only`, stops reading at the
/// end of the head (a GET of the event stream never ends).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    head_only: bool,
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if head_only {
                break i + 4;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                break buf
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .expect("a response head")
                    + 4
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("{method} {path}: {e} after {} bytes", buf.len()),
        }
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let status = lines.next().unwrap().to_string();
    let mut headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .filter(|(k, _)| k != "date")
        .collect();
    headers.sort();
    (status, headers, buf[end..].to_vec())
}

#[test]
fn every_get_route_answers_head_with_the_same_status_and_headers_and_no_body() {
    let master = Master::start();
    let _agent = Agent::start(&master, "head-host", "200ms");
    let host = wait_for(Duration::from_secs(10), "the agent's host", || {
        master.host("head-host")
    });
    let id = host["id"].as_str().unwrap().to_string();
    let routes = [
        "/".to_string(),
        "/index.html".into(),
        "/app.js".into(),
        "/style.css".into(),
        format!("/hosts/{id}"),
        "/healthz".into(),
        "/metrics".into(),
        "/api/v1/hosts".into(),
        format!("/api/v1/hosts/{id}"),
        "/api/v1/events".into(),
        // The filtered routes (docs/CONTRACT.md "Filters"), and a refused filter (400).
        "/api/v1/labels".into(),
        "/api/v1/groups?by=role".into(),
        "/api/v1/hosts?q=head&limit=5".into(),
        "/api/v1/events?q=head&group_by=role".into(),
        "/api/v1/hosts?status=bogus".into(),
        "/api/v1/events?ids=nothex".into(),
        "/no/such/route".into(),
        "/api/v1/hosts/0000".into(),
    ];
    // Bodies rendered from live data change length between two requests.
    let dynamic = ["/metrics", "/api/v1/hosts", "/healthz"];
    for path in &routes {
        let events = path.starts_with("/api/v1/events");
        let (gs, gh, gbody) = request(master.http, "GET", path, events);
        let (hs, hh, hbody) = request(master.http, "HEAD", path, false);
        assert_eq!(hs, gs, "HEAD {path}: status");
        assert!(hbody.is_empty(), "HEAD {path}: {} body bytes", hbody.len());
        let is_dynamic = dynamic.contains(&path.as_str())
            || path.starts_with("/api/v1/hosts/")
            || path.starts_with("/api/v1/hosts?")
            || path.starts_with("/api/v1/groups");
        let strip = |h: &[(String, String)]| -> Vec<(String, String)> {
            h.iter()
                .map(|(k, v)| {
                    if k == "content-length" && is_dynamic {
                        (k.clone(), "N".into())
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect()
        };
        // The open-ended stream's GET is chunked; hyper leaves that framing header out of a
        // HEAD response (RFC 9110 9.3.2 allows it) and nothing else.
        let gh_cmp: Vec<_> = gh
            .iter()
            .filter(|(k, _)| !(events && k == "transfer-encoding"))
            .cloned()
            .collect();
        assert_eq!(strip(&hh), strip(&gh_cmp), "HEAD {path}: headers");
        if !events && !is_dynamic {
            let len: usize = gh
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or_else(|| panic!("GET {path}: no content-length: {gh:?}"));
            assert_eq!(len, gbody.len(), "GET {path}: content-length");
        }
        eprintln!("HEAD {path}: {hs} {hh:?}");
    }
}
