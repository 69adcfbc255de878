//! The master's parts as a library. `main.rs` is the command line over them; `fuzz/` drives
//! the pure ones directly (the handshake decision, the HTTP router over an in-memory table).
//! Not a published API: being a library only makes these modules reachable from `fuzz/`.

pub mod collector;
pub mod config;
pub mod control;
pub mod http;
pub mod operator;
pub mod remote_write;
pub mod segment;
pub mod snapshot;
pub mod status;
pub mod supervisor;
pub mod table;
pub mod tls;

/// Resolves on SIGTERM or SIGINT (children; the supervisor handles signals itself).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
