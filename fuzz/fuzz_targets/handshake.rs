//! The collector's handshake decision (`sentinel_master::collector::handshake`, a pure
//! function) on a hostile first frame body, with
//! the token and nonce of docs/PROTOCOL.md's test vectors. Properties:
//! - a welcome implies a hello of our version, within limits, with a proof over this nonce;
//! - the same hello re-signed with the right proof is welcomed exactly when its version and
//!   limits are right, and never under another nonce (a replay) or another token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_master::collector::handshake;
use sentinel_protocol::{auth, decode_body, AgentMessage, PROTOCOL_VERSION};

const TOKEN: &[u8] = b"example-fleet-token";

fn nonce() -> auth::Nonce {
    std::array::from_fn(|i| i as u8)
}

fuzz_target!(|body: &[u8]| {
    let nonce = nonce();
    let decision = handshake::check_hello_body(body, TOKEN, &nonce);
    if let Ok(h) = &decision {
        assert_eq!(h.version, PROTOCOL_VERSION);
        assert!(h.validate().is_ok());
        assert!(auth::verify_proof(TOKEN, &nonce, &h.agent_id, &h.proof));
    }
    let Ok(AgentMessage::Hello(mut hello)) = decode_body::<AgentMessage>(body) else {
        assert!(decision.is_err(), "welcomed something that is not a hello");
        return;
    };
    hello.proof = auth::proof(TOKEN, &nonce, &hello.agent_id).to_vec();
    let acceptable = hello.version == PROTOCOL_VERSION && hello.validate().is_ok();
    let signed = handshake::check_hello(AgentMessage::Hello(hello.clone()), TOKEN, &nonce);
    assert_eq!(signed.is_ok(), acceptable, "{signed:?}");
    if let Err(r) = &signed {
        assert!(matches!(r.code, "version" | "invalid"), "{r:?}");
    }
    let mut other = nonce;
    other[0] ^= 1;
    let replay = handshake::check_hello(AgentMessage::Hello(hello.clone()), TOKEN, &other);
    assert!(replay.is_err(), "a proof for another nonce was accepted");
    let wrong = handshake::check_hello(AgentMessage::Hello(hello), b"another-token", &nonce);
    assert!(wrong.is_err(), "a proof under another token was accepted");
});
