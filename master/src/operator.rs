//! `sentinel-master remove-host ID` and `forget-key ID`: operator commands against the running
//! master. They go
//! through the master's own HTTP API on this machine (the same route, checks and audit log
//! line as the dashboard's button), authenticated with the operator API token from
//! `api_token_file` in the same master.toml. Plain HTTP only: with `http_tls_*` use curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::Config;

/// Connect, send and read budget: the master answers within its control timeout (2 s).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Longest answer read (a JSON object of a few hundred bytes).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// The `http` listener as an address on this machine (a wildcard becomes loopback).
fn local_http(config: &Config) -> anyhow::Result<SocketAddr> {
    let mut addr = config
        .http
        .to_socket_addrs()
        .with_context(|| format!("key `http`: cannot resolve {:?}", config.http))?
        .next()
        .with_context(|| format!("key `http`: {:?} resolves to nothing", config.http))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// Removes host `id`; Ok with the master's answer if it was removed.
pub fn remove_host(config: &Config, id: &str) -> anyhow::Result<String> {
    delete(config, "remove-host", id, "")
}

/// Forgets the key pinned to host `id`, so its next key is pinned (a reinstalled host).
pub fn forget_key(config: &Config, id: &str) -> anyhow::Result<String> {
    delete(config, "forget-key", id, "/key")
}

/// `DELETE /api/v1/hosts/{id}{suffix}` with the operator token; Ok with the answer on 200.
fn delete(config: &Config, command: &str, id: &str, suffix: &str) -> anyhow::Result<String> {
    if config.http_tls.is_some() {
        bail!("{command} speaks plain HTTP and this master serves HTTPS (http_tls_*): use curl -X DELETE -H 'Authorization: Bearer ...' https://.../api/v1/hosts/{id}{suffix}");
    }
    let Some(path) = &config.api_token_file else {
        bail!("{command} needs the operator API token: set `api_token_file` in master.toml (and restart the master)");
    };
    let token =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || id.is_empty() {
        bail!("{id:?} is not an agent id (the `id` of /api/v1/hosts)");
    }
    let addr = local_http(config)?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot connect to the master's HTTP listener at {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "DELETE /api/v1/hosts/{id}{suffix} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        token.trim_end()
    )?;
    let mut response = String::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_string(&mut response)
        .with_context(|| format!("no answer from the master at {addr}"))?;
    let status: u16 = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer from {addr}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    match status {
        200 => Ok(body),
        405 => bail!("the master has no write routes: configure `api_token_file` (and restart it)"),
        _ => bail!("the master answered {status}: {body}"),
    }
}
