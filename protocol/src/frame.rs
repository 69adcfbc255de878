//! Frames: a 4-byte big-endian body length, then the body, which is exactly one CBOR item.
//! Reading is two steps (mini-redis style): [`split_frame`] checks that a whole frame within
//! limits is buffered, then [`decode_body`] decodes it.

use serde::{de::DeserializeOwned, Serialize};

use crate::limits::{MAX_CBOR_DEPTH, MAX_FRAME_BYTES};

/// Size of the length prefix.
pub const PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge(usize),
    #[error("frame length is zero")]
    Empty,
    #[error("frame body is not valid CBOR for this message: {0}")]
    Decode(String),
    #[error("frame body has {0} bytes after its CBOR item")]
    TrailingBytes(usize),
    #[error("could not encode message: {0}")]
    Encode(String),
}

/// If `buf` starts with a complete frame, returns `(body, total frame length)`; `Ok(None)` if
/// more bytes are needed. Rejects a length prefix beyond the limit before any body arrives.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(buf
        .get(PREFIX_BYTES..PREFIX_BYTES + len)
        .map(|body| (body, PREFIX_BYTES + len)))
}

/// Decodes one frame body. Bounded nesting, and no bytes may follow the item.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let mut rest = body;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_CBOR_DEPTH)
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Encodes `msg` as a CBOR body (no prefix).
pub fn encode_body<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    ciborium::ser::into_writer(msg, out).map_err(|e| FrameError::Encode(e.to_string()))
}

/// Appends one whole frame (prefix + body) for `msg` to `out`. Fails if the body would exceed
/// [`MAX_FRAME_BYTES`], leaving `out` as it was.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; PREFIX_BYTES]);
    if let Err(e) = encode_body(msg, out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - PREFIX_BYTES;
    if len > MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    out[start..start + PREFIX_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// The tokio codec that frames a stream exactly as [`split_frame`] does.
#[cfg(feature = "codec")]
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(PREFIX_BYTES)
        .big_endian()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ack, MasterMessage};

    #[test]
    fn split_frame_table() {
        let too_big = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        let cases: &[(&[u8], &str)] = &[
            (&[], "need more"),
            (&[0, 0, 0], "need more"),
            (&[0, 0, 0, 2, 0xa0], "need more"),
            (&[0, 0, 0, 1, 0xa0], "frame 5"),
            (&[0, 0, 0, 1, 0xa0, 0xff], "frame 5"),
            (&[0, 0, 0, 0], "empty"),
            (&too_big, "too large"),
            (&[0xff, 0xff, 0xff, 0xff], "too large"),
        ];
        for (input, want) in cases {
            let got = match split_frame(input) {
                Ok(None) => "need more".to_string(),
                Ok(Some((_, n))) => format!("frame {n}"),
                Err(FrameError::Empty) => "empty".into(),
                Err(FrameError::TooLarge(_)) => "too large".into(),
                Err(e) => e.to_string(),
            };
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn round_trip_and_trailing_bytes() {
        let msg = MasterMessage::Ack(Ack { seq: 42 });
        let mut buf = Vec::new();
        encode_frame(&msg, &mut buf).unwrap();
        let (body, n) = split_frame(&buf).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(decode_body::<MasterMessage>(body).unwrap(), msg);
        let mut with_tail = body.to_vec();
        with_tail.push(0);
        assert!(matches!(
            decode_body::<MasterMessage>(&with_tail),
            Err(FrameError::TrailingBytes(1))
        ));
    }

    #[test]
    fn deeply_nested_cbor_is_an_error_not_a_stack_overflow() {
        let body = vec![0x81u8; 100_000]; // [[[[...
        assert!(decode_body::<MasterMessage>(&body).is_err());
    }

    #[test]
    fn random_and_wrong_typed_bodies_are_errors() {
        for body in [
            &b"\xff\xff\xff"[..],
            b"hello",
            &[0xa1, 0x63, b'a', b'c', b'k', 0x01],
        ] {
            assert!(decode_body::<MasterMessage>(body).is_err(), "{body:?}");
        }
    }
}

#[cfg(test)]
mod depth_tests {
    use crate::{AgentMessage, Batch, Filesystem, Interface, Sample};

    /// The smallest recursion limit ciborium decodes `body` with.
    fn depth_needed(body: &[u8]) -> usize {
        (1..=crate::limits::MAX_CBOR_DEPTH)
            .find(|&limit| {
                ciborium::de::from_reader_with_recursion_limit::<AgentMessage, _>(body, limit)
                    .is_ok()
            })
            .expect("decodes within MAX_CBOR_DEPTH")
    }

    /// docs/PROTOCOL.md section 1 states the real nesting of the deepest messages.
    #[test]
    fn the_deepest_real_message_nests_as_documented() {
        let sample = Sample {
            seq: 1,
            filesystems: vec![Filesystem::default()],
            interfaces: vec![Interface::default()],
            cpu_cores_percent: vec![1.0],
            ..Sample::default()
        };
        let mut one = Vec::new();
        super::encode_body(&AgentMessage::Sample(sample.clone()), &mut one).unwrap();
        let mut batch = Vec::new();
        super::encode_body(
            &AgentMessage::Batch(Batch {
                samples: vec![sample],
            }),
            &mut batch,
        )
        .unwrap();
        assert_eq!(
            depth_needed(&one),
            4,
            "sample: message map, sample, fs list, fs entry"
        );
        assert_eq!(
            depth_needed(&batch),
            6,
            "batch: message map, batch, samples, sample, fs list, fs entry"
        );
    }
}
