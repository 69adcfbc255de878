//! Sentinel's wire format, and the only crate that knows it.
//!
//! A connection is a sequence of frames; each frame is a 4-byte big-endian length followed by
//! exactly one CBOR data item (RFC 8949) encoding an [`AgentMessage`] or a [`MasterMessage`].
//! docs/PROTOCOL.md is the normative description; this crate is its reference implementation.
//! Nothing here does I/O: agent and master bring their own sockets (see the `codec` feature).

pub mod auth;
pub mod frame;
pub mod labels;
pub mod limits;
pub mod message;
pub mod text;
pub mod wire;

pub use auth::{proof, verify_proof, Nonce, Proof};
pub use frame::{decode_body, encode_frame, split_frame, FrameError};
pub use message::*;
pub use text::{escape, is_valid_hostname, Escaped};
pub use wire::{
    decode_filesystems, decode_sample, encode_sample, sample_in_body, sample_message_body,
    FilesystemRef,
};

/// The protocol version this crate speaks. A peer announcing another version is refused with a
/// reason; bump it for any change an old peer would misread.
pub const PROTOCOL_VERSION: u16 = 1;

/// The `reason` of the master's `refused` for a hello announcing `version`: one text for the
/// master and the document's test vector (docs/PROTOCOL.md section 6).
pub fn version_refusal_reason(version: u16) -> String {
    format!("protocol version {version} is not supported; this master supports version {PROTOCOL_VERSION}")
}
