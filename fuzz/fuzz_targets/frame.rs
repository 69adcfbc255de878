//! Frame reading, as the master does it: a stream of bytes cut into frames, each body decoded
//! as an agent message (and as a master message, which the agent reads) and validated.
//! The reference reader (`split_frame`) and the tokio codec the master and agent actually run
//! (`frame::codec()`) must agree frame by frame on the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sentinel_protocol::{decode_body, frame, split_frame, AgentMessage, MasterMessage};
use tokio_util::codec::Decoder;

/// One frame as a reader sees it: a body, or the reason to close the connection.
#[derive(Debug, PartialEq)]
enum Read {
    Body(Vec<u8>),
    Close,
}

fn reference(mut rest: &[u8]) -> Vec<Read> {
    let mut out = Vec::new();
    loop {
        match split_frame(rest) {
            Ok(Some((body, n))) => {
                assert_eq!(n, body.len() + frame::PREFIX_BYTES);
                assert!(
                    n <= rest.len() && body.len() <= sentinel_protocol::limits::MAX_FRAME_BYTES
                );
                out.push(Read::Body(body.to_vec()));
                rest = &rest[n..];
            }
            Ok(None) => return out,
            Err(_) => {
                out.push(Read::Close);
                return out;
            }
        }
    }
}

fn codec(data: &[u8]) -> Vec<Read> {
    let mut codec = frame::codec();
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            // The codec hands out a zero-length body; the master then fails to decode it and
            // closes, which is what split_frame's `Empty` means.
            Ok(Some(body)) if body.is_empty() => {
                out.push(Read::Close);
                return out;
            }
            Ok(Some(body)) => out.push(Read::Body(body.to_vec())),
            Ok(None) => return out,
            Err(_) => {
                out.push(Read::Close);
                return out;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let frames = reference(data);
    assert_eq!(
        frames,
        codec(data),
        "split_frame and the tokio codec disagree"
    );
    for f in &frames {
        let Read::Body(body) = f else { continue };
        if let Ok(msg) = decode_body::<AgentMessage>(body) {
            let _ = match &msg {
                AgentMessage::Hello(h) => h.validate(),
                AgentMessage::Sample(s) => s.validate(),
                AgentMessage::Batch(b) => b.validate(),
                AgentMessage::Goodbye(_) => Ok(()),
            };
        }
        let _ = decode_body::<MasterMessage>(body);
    }
});
