//! The collector process: accepts agents, runs the handshake, validates and stores samples
//! in the table, acks. It is the only writer of host slots.

pub mod handshake;
mod session;
mod store;
mod transport;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::segment::{boot_ms, now_ms, Segment};
use crate::table::layout::CollectorCounters;
use handshake::{Refusal, RefusalCode};
use store::Store;

/// How often the collector proves it is alive in the header (/healthz degrades after 2 s).
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Shared by every connection task.
pub struct Shared {
    pub store: std::sync::Mutex<Store>,
    /// The fleet token; empty if none is configured.
    pub token: Vec<u8>,
    /// Caps concurrent agent connections (`max_connections`).
    pub slots: Arc<Semaphore>,
    /// Global limit on WARN lines about misbehaving peers, so a flood cannot flood the log.
    pub log_limit: session::LogLimit,
    pub next_conn: std::sync::atomic::AtomicU64,
    /// Connection counters in the table header, read by /metrics.
    pub counters: &'static CollectorCounters,
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
        slots: Arc::new(Semaphore::new(config.max_connections)),
        log_limit: session::LogLimit::default(),
        next_conn: std::sync::atomic::AtomicU64::new(1),
        counters: &header.counters,
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
