//! What a session reads and writes: a plain TCP stream, or TLS over it when the master has
//! `tls_cert_file`/`tls_key_file`. With TLS, a peer must open with a TLS ClientHello;
//! anything else is refused before a byte of the protocol is spoken (docs/PROTOCOL.md,
//! section 1).

use std::net::SocketAddr;
use std::time::Duration;

use sentinel_protocol::limits::HANDSHAKE_TIMEOUT;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{session, Shared};

/// A connection's byte stream, whatever carries it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Boxed so that sessions are one type for both transports.
pub type Stream = Box<dyn Io>;

/// A TLS record of type handshake starts with this byte: a ClientHello's first byte.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How long a TLS master waits for a peer's first byte. A TLS client sends its ClientHello
/// right after connecting; a plaintext Sentinel agent sends nothing and waits for the
/// challenge. Well under the agent's own 5 s handshake timeout, so the agent still reads the
/// plaintext refusal that tells it why.
const FIRST_BYTE_WAIT: Duration = Duration::from_secs(2);

/// Returns the stream a session runs on, or None if the peer was refused or failed the TLS
/// handshake (logged with the peer and the reason, rate-limited).
pub async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    tls: Option<&TlsAcceptor>,
) -> Option<Stream> {
    let Some(tls) = tls else {
        return Some(Box::new(tcp));
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_WAIT, tcp.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return None, // gone before saying anything
        Ok(Ok(_)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(_)) => {
            session::refuse_plaintext(Box::new(tcp), peer, shared, "sent plaintext").await;
            return None;
        }
        Err(_) => {
            session::refuse_plaintext(Box::new(tcp), peer, shared, "sent no TLS ClientHello").await;
            return None;
        }
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(error)) => {
            shared.count_tls_failure();
            if shared.log_limit.allow() {
                tracing::warn!(peer = %peer, reason = %sentinel_protocol::escape(&error), "TLS handshake failed");
            }
            None
        }
        Err(_) => {
            shared.count_tls_failure();
            if shared.log_limit.allow() {
                tracing::warn!(
                    peer = %peer,
                    reason = %format!("not finished within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                    "TLS handshake failed"
                );
            }
            None
        }
    }
}
