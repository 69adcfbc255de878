//! [`decode_master_body`]: a master message decoded token by token with minicbor, for the
//! agent. The same rules as [`crate::decode_body`] (one-entry map `{kind: {fields}}`, unknown
//! keys skipped, a missing or repeated field an error, nesting bounded by
//! [`MAX_CBOR_DEPTH`], no bytes after the item), without serde's generic deserializer:
//! ciborium's deserializer instantiated for the five master message types cost the agent
//! about 28 KB of its 2 MB budget (docs/BENCHMARKS.md), this about 4 KB.
//! `decodes_every_master_message_as_decode_body_does` holds the two to the same answers.

use minicbor::data::Type;
use minicbor::decode::{Decoder, Error};

use crate::frame::FrameError;
use crate::limits::MAX_CBOR_DEPTH;
use crate::message::{Ack, Challenge, MasterMessage, Refused, Welcome};

/// Decodes one frame body holding a [`MasterMessage`].
pub fn decode_master_body(body: &[u8]) -> Result<MasterMessage, FrameError> {
    let mut d = Decoder::new(body);
    let msg = message(&mut d).map_err(|e| FrameError::Decode(e.to_string()))?;
    match body.len() - d.position() {
        0 => Ok(msg),
        n => Err(FrameError::TrailingBytes(n)),
    }
}

fn definite(n: Option<u64>) -> Result<u64, Error> {
    n.ok_or_else(|| Error::message("indefinite-length map"))
}

fn message(d: &mut Decoder<'_>) -> Result<MasterMessage, Error> {
    if definite(d.map()?)? != 1 {
        return Err(Error::message("a message is a map with exactly one entry"));
    }
    let kind = d.str()?;
    // Each field is (seen, value); `fields` walks the inner map once.
    let msg = match kind {
        "challenge" => {
            let (mut version, mut nonce) = (None, None);
            fields(d, |d, key| {
                Ok(match key {
                    "version" => set(&mut version, d.u16()?, key)?,
                    "nonce" => set(&mut nonce, d.bytes()?.to_vec(), key)?,
                    _ => false,
                })
            })?;
            MasterMessage::Challenge(Challenge {
                version: need(version, "version")?,
                nonce: need(nonce, "nonce")?,
            })
        }
        "welcome" => {
            let (mut last_seq, mut clock_ms) = (None, None);
            fields(d, |d, key| {
                Ok(match key {
                    "last_seq" => set(&mut last_seq, d.u64()?, key)?,
                    "clock_ms" => set(&mut clock_ms, d.u64()?, key)?,
                    _ => false,
                })
            })?;
            MasterMessage::Welcome(Welcome {
                last_seq: need(last_seq, "last_seq")?,
                clock_ms: need(clock_ms, "clock_ms")?,
            })
        }
        "refused" => {
            let (mut code, mut reason) = (None, None);
            fields(d, |d, key| {
                Ok(match key {
                    "code" => set(&mut code, d.str()?.to_owned(), key)?,
                    "reason" => set(&mut reason, d.str()?.to_owned(), key)?,
                    _ => false,
                })
            })?;
            MasterMessage::Refused(Refused {
                code: need(code, "code")?,
                reason: need(reason, "reason")?,
            })
        }
        "ack" => {
            let mut seq = None;
            fields(d, |d, key| {
                Ok(match key {
                    "seq" => set(&mut seq, d.u64()?, key)?,
                    _ => false,
                })
            })?;
            MasterMessage::Ack(Ack {
                seq: need(seq, "seq")?,
            })
        }
        other => {
            return Err(Error::message(format!(
                "unknown variant `{}`",
                crate::text::escape(other)
            )))
        }
    };
    Ok(msg)
}

/// Walks a message's field map: `known` reads the value of a key it knows and returns true,
/// or returns false and the value is skipped (bounded depth).
fn fields<'b>(
    d: &mut Decoder<'b>,
    mut known: impl FnMut(&mut Decoder<'b>, &str) -> Result<bool, Error>,
) -> Result<(), Error> {
    for _ in 0..definite(d.map()?)? {
        let key = d.str()?;
        if !known(d, key)? {
            // The message map and the field map are two levels.
            skip(d, 2)?;
        }
    }
    Ok(())
}

fn set<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<bool, Error> {
    if slot.replace(value).is_some() {
        return Err(Error::message(format!("duplicate field `{key}`")));
    }
    Ok(true)
}

fn need<T>(slot: Option<T>, key: &str) -> Result<T, Error> {
    slot.ok_or_else(|| Error::message(format!("missing field `{key}`")))
}

/// Skips one value nested `depth` levels deep, refusing to go beyond [`MAX_CBOR_DEPTH`].
fn skip(d: &mut Decoder<'_>, depth: usize) -> Result<(), Error> {
    if depth >= MAX_CBOR_DEPTH {
        return Err(Error::message("nesting too deep"));
    }
    match d.datatype()? {
        Type::Array | Type::ArrayIndef => match d.array()? {
            Some(n) => (0..n).try_for_each(|_| skip(d, depth + 1)),
            None => items_until_break(d, depth + 1),
        },
        Type::Map | Type::MapIndef => match d.map()? {
            Some(n) => (0..n.saturating_mul(2)).try_for_each(|_| skip(d, depth + 1)),
            None => items_until_break(d, depth + 1),
        },
        Type::Tag => {
            d.tag()?;
            skip(d, depth)
        }
        // Scalars, (indefinite) byte and text strings: no nesting.
        _ => d.skip(),
    }
}

fn items_until_break(d: &mut Decoder<'_>, depth: usize) -> Result<(), Error> {
    while d.datatype()? != Type::Break {
        skip(d, depth)?;
    }
    d.skip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_body, encode_body};

    fn both(body: &[u8]) -> (Result<MasterMessage, String>, Result<MasterMessage, String>) {
        (
            decode_body::<MasterMessage>(body).map_err(|e| e.to_string()),
            decode_master_body(body).map_err(|e| e.to_string()),
        )
    }

    fn cbor(v: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn msg(kind: &str, fields: Vec<(&str, ciborium::Value)>) -> ciborium::Value {
        use ciborium::Value;
        Value::Map(vec![(
            Value::Text(kind.into()),
            Value::Map(
                fields
                    .into_iter()
                    .map(|(k, v)| (Value::Text(k.into()), v))
                    .collect(),
            ),
        )])
    }

    #[test]
    fn decodes_every_master_message_as_decode_body_does() {
        let messages = [
            MasterMessage::Challenge(Challenge {
                version: 1,
                nonce: (0..32).collect(),
            }),
            MasterMessage::Welcome(Welcome {
                last_seq: u64::MAX,
                clock_ms: 1_764_000_000_250,
            }),
            MasterMessage::Refused(Refused {
                code: "invalid".into(),
                reason: "invalid hello: label \"host\": the name is reserved Zürich".into(),
            }),
            MasterMessage::Ack(Ack { seq: 0 }),
        ];
        for m in &messages {
            let mut body = Vec::new();
            encode_body(m, &mut body).unwrap();
            assert_eq!(decode_master_body(&body).unwrap(), *m);
            let (a, b) = both(&body);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn hostile_and_unusual_bodies_get_the_same_verdict_as_decode_body() {
        use ciborium::Value;
        let int = |n: u64| Value::Integer(n.into());
        let deep = (0..40).fold(int(1), |v, _| Value::Array(vec![v]));
        let shallow = (0..10).fold(int(1), |v, _| Value::Map(vec![(int(0), v)]));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "unknown keys of every kind are skipped",
                cbor(&msg(
                    "ack",
                    vec![
                        (
                            "x",
                            Value::Array(vec![
                                int(1),
                                Value::Text("t".into()),
                                Value::Bytes(vec![1]),
                            ]),
                        ),
                        ("seq", int(7)),
                        ("y", shallow.clone()),
                        ("z", Value::Tag(1, Box::new(int(3)))),
                        ("f", Value::Float(1.5)),
                        ("n", Value::Null),
                    ],
                )),
            ),
            (
                "missing field",
                cbor(&msg("welcome", vec![("last_seq", int(1))])),
            ),
            (
                "wrong type",
                cbor(&msg("ack", vec![("seq", Value::Text("1".into()))])),
            ),
            (
                "negative",
                cbor(&msg("ack", vec![("seq", Value::Integer((-1).into()))])),
            ),
            (
                "u16 overflow",
                cbor(&msg(
                    "challenge",
                    vec![("version", int(70000)), ("nonce", Value::Bytes(vec![]))],
                )),
            ),
            ("unknown kind", cbor(&msg("hello", vec![]))),
            ("not a map", cbor(&Value::Text("ack".into()))),
            (
                "two entries",
                cbor(&Value::Map(vec![
                    (
                        Value::Text("ack".into()),
                        Value::Map(vec![(Value::Text("seq".into()), int(1))]),
                    ),
                    (
                        Value::Text("ack".into()),
                        Value::Map(vec![(Value::Text("seq".into()), int(2))]),
                    ),
                ])),
            ),
            (
                "duplicate field",
                cbor(&msg("ack", vec![("seq", int(1)), ("seq", int(2))])),
            ),
            (
                "too deep in an unknown key",
                cbor(&msg("ack", vec![("seq", int(1)), ("x", deep)])),
            ),
            ("empty", vec![]),
            (
                "truncated",
                cbor(&msg("ack", vec![("seq", int(1))]))[..6].to_vec(),
            ),
            ("indefinite unknown array", {
                let mut b = cbor(&msg("ack", vec![("seq", int(1))]));
                b[7] = 0xa2; // two fields
                b.extend_from_slice(&[0x61, b'x', 0x9f, 0x01, 0x02, 0xff]);
                b
            }),
        ];
        for (case, body) in cases {
            let (a, b) = both(&body);
            assert_eq!(
                a.is_ok(),
                b.is_ok(),
                "{case}: decode_body {a:?}, decode_master_body {b:?}"
            );
            if let (Ok(a), Ok(b)) = (&a, &b) {
                assert_eq!(a, b, "{case}");
            }
        }
        // Trailing bytes are refused by both.
        let mut body = cbor(&msg("ack", vec![("seq", int(1))]));
        body.push(0);
        assert!(matches!(
            decode_master_body(&body),
            Err(FrameError::TrailingBytes(1))
        ));
        // Random bytes never panic and agree on acceptance.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut body = cbor(&msg(
                "welcome",
                vec![("last_seq", int(3)), ("clock_ms", int(9))],
            ));
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = (rng as usize) % body.len();
                body[at] = (rng >> 32) as u8;
            }
            let (a, b) = both(&body);
            if let (Ok(a), Ok(b)) = (&a, &b) {
                assert_eq!(a, b, "{body:02x?}");
            }
            assert_eq!(a.is_ok(), b.is_ok(), "{body:02x?}: {a:?} vs {b:?}");
        }
    }
}
