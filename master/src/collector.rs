//! The collector process: accepts agents, runs the handshake, validates and stores samples
//! in the table, acks. It is the only writer of host slots.

mod admission;
pub mod handshake;
pub mod host_labels;
mod session;
pub mod store;
mod transport;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::control::{Reply, Request};
use crate::segment::{boot_ms, now_ms, Segment};
use crate::table::layout::{CollectorCounters, LifecycleCounters};
use handshake::{Refusal, RefusalCode};
use store::Store;

/// How often the collector proves it is alive in the header (/healthz degrades after 2 s).
const HEARTBEAT: Duration = Duration::from_millis(250);

/// At most one WARN line about a full table per this long (each refusal is still counted).
const TABLE_FULL_LOG_EVERY_MS: u64 = 10_000;
/// Longest gap between two expiry checks; with a short `host_expiry` they come at half of
/// it (at least every second), so a host expires within 1.5 x `host_expiry` of going quiet.
const MAX_EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// Shared by every connection task.
pub struct Shared {
    pub store: std::sync::Mutex<Store>,
    /// The fleet token; empty if none is configured.
    pub token: Vec<u8>,
    /// `require_agent_keys`: a hello without a key is refused `identity`.
    pub require_agent_keys: bool,
    /// Caps concurrent agent connections (`max_connections`).
    pub slots: Arc<Semaphore>,
    /// Global limit on WARN lines about misbehaving peers, so a flood cannot flood the log.
    pub log_limit: session::LogLimit,
    pub next_conn: std::sync::atomic::AtomicU64,
    /// Connection counters in the table header, read by /metrics.
    pub counters: &'static CollectorCounters,
    /// Removal, expiry and table-full counters in the table header, read by /metrics.
    pub lifecycle: &'static LifecycleCounters,
    /// New identities per peer address and minute (`new_hosts_per_minute`).
    pub admission: std::sync::Mutex<admission::NewHostRate>,
    /// The configured bound, for the refusal's reason.
    pub new_hosts_per_minute: u32,
    /// When the last table-full WARN line was written (unix ms), to rate-limit them.
    pub table_full_logged_ms: std::sync::atomic::AtomicU64,
    /// master.toml `[[host_labels]]`, merged into every accepted hello's labels.
    pub host_labels: host_labels::HostLabels,
}

impl Shared {
    /// Counts a refused connection under its code, and a frame that could not be read or
    /// decoded as a decode error too.
    pub fn count_refusal(&self, r: &Refusal) {
        if let Some(code) = RefusalCode::of(r.code) {
            self.counters.refused[code.index()].fetch_add(1, Ordering::Relaxed);
        }
        if r.decode_error {
            self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a new identity from `ip`; false if that address is over `new_hosts_per_minute`.
    pub fn admit_new_host(&self, ip: std::net::IpAddr) -> bool {
        self.admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(ip, now_ms())
    }

    /// Counts a new host refused because every slot is taken, and logs it (rate limited).
    pub fn table_full(&self, peer: std::net::SocketAddr, agent_id: &str) {
        let total = self.lifecycle.table_full.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.table_full_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= TABLE_FULL_LOG_EVERY_MS
            && self
                .table_full_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(peer = %peer, agent_id = %agent_id, refused_total = total, "the host table is full: new hosts are refused busy (known hosts still connect); remove hosts, lower host_expiry or raise capacity");
        }
    }

    /// Counts a failed TLS handshake as a refusal with code `tls`.
    pub fn count_tls_failure(&self) {
        self.counters.refused[RefusalCode::Tls.index()].fetch_add(1, Ordering::Relaxed);
    }
}

pub fn run(config: Config) -> anyhow::Result<()> {
    let listener = crate::supervisor::inherited_listener()?;
    let token = config.token()?;
    let tls = match &config.agent_tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(files.server_config(&[])?)),
        None => None,
    };
    let segment: &'static Segment = Box::leak(Box::new(Segment::open(&config.shm_name)?));
    let table = segment.table();
    let header = table.header();
    header
        .collector_started_ms
        .store(now_ms(), Ordering::Release);
    header
        .collector_heartbeat_boot_ms
        .store(boot_ms(), Ordering::Release);
    let store = Store::open(table).context("cannot attach to the table")?;
    tracing::info!(
        hosts = store.host_count(),
        pid = std::process::id(),
        tls = tls.is_some(),
        "collector started"
    );
    let shared = Arc::new(Shared {
        store: std::sync::Mutex::new(store),
        token,
        require_agent_keys: config.require_agent_keys,
        slots: Arc::new(Semaphore::new(config.max_connections)),
        log_limit: session::LogLimit::default(),
        next_conn: std::sync::atomic::AtomicU64::new(1),
        counters: &header.counters,
        lifecycle: &header.lifecycle,
        admission: std::sync::Mutex::new(admission::NewHostRate::new(config.new_hosts_per_minute)),
        new_hosts_per_minute: config.new_hosts_per_minute,
        table_full_logged_ms: std::sync::atomic::AtomicU64::new(0),
        host_labels: config.host_labels.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("collector")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                header
                    .collector_heartbeat_boot_ms
                    .store(boot_ms(), Ordering::Release);
            }
        });
        match crate::control::inherited() {
            Some(sock) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    crate::control::serve(sock, |r| control_handler(&shared, r)).await
                });
            }
            None => tracing::warn!("no control channel inherited: host removal is unavailable"),
        }
        tokio::spawn(expire_hosts(shared.clone(), config.host_expiry));
        let accept = accept_loop(listener, shared.clone(), tls);
        tokio::select! {
            r = accept => r,
            _ = crate::shutdown_signal() => {
                // Wait for any write in progress, then exit holding the store: no slot is
                // left odd by a planned stop.
                let _held = shared.store.lock();
                tracing::info!("collector stopping");
                std::process::exit(0);
            }
        }
    })
}

/// Carries out one control request (control.rs). Runs on the runtime thread: each arm is one
/// short critical section of the store. New requests are one arm each (alert silences and
/// maintenance next).
fn control_handler(shared: &Shared, request: Request) -> Reply {
    match request {
        Request::RemoveHost { agent_id } => {
            let removed = session::lock(shared).remove(&agent_id);
            match removed {
                Some(r) => {
                    shared
                        .lifecycle
                        .hosts_removed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(agent_id = %r.agent_id, host = ?r.hostname, was_connected = r.was_connected, "removed a host on an operator's request; its slot is free");
                    Reply::Removed {
                        hostname: r.hostname,
                        was_connected: r.was_connected,
                    }
                }
                None => Reply::NotFound,
            }
        }
        Request::ForgetKey { agent_id } => {
            let mut store = session::lock(shared);
            match store.forget_key(&agent_id) {
                Ok(key_sha256) => Reply::KeyForgotten {
                    hostname: store.hostname_of(&agent_id).unwrap_or_default(),
                    key_sha256,
                },
                Err(_) => Reply::NotFound,
            }
        }
    }
}

/// Removes hosts down or stopped longer than `host_expiry` (0 = never).
async fn expire_hosts(shared: Arc<Shared>, expiry: Duration) {
    if expiry.is_zero() {
        return;
    }
    let every = (expiry / 2).clamp(Duration::from_secs(1), MAX_EXPIRY_CHECK);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let expired = session::lock(&shared).expire(now_ms(), expiry.as_millis() as u64);
        for r in expired {
            shared
                .lifecycle
                .hosts_expired
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(agent_id = %r.agent_id, host = ?r.hostname, silent_s = now_ms().saturating_sub(r.last_seen_ms) / 1000, host_expiry = %humantime::format_duration(expiry), "expired a host that was down or stopped longer than host_expiry; its slot is free");
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        shared
            .counters
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        // Taken before the TLS handshake, so handshakes in progress count against the limit.
        let permit = shared.slots.clone().try_acquire_owned();
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(stream) = transport::accept(stream, peer, &shared, tls.as_ref()).await else {
                return;
            };
            match permit {
                Ok(permit) => {
                    session::run(stream, peer, &shared).await;
                    drop(permit);
                }
                Err(_) => session::refuse_busy(stream, peer, &shared).await,
            }
        });
    }
}
