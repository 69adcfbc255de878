//! The handshake decision as a pure function of the agent's first frame, the fleet token and
//! the nonce this connection was challenged with: no I/O, no table, no clock. The session
//! calls it; the fuzzer (`fuzz/fuzz_targets/handshake.rs`) calls it directly.

use sentinel_protocol::{auth, frame, AgentMessage, Hello, PROTOCOL_VERSION};

/// A reason to end a connection: the `refused` code and a sentence for both logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
}

pub fn refusal(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// Decodes the first frame body and decides on it (see [`check_hello`]).
pub fn check_hello_body(body: &[u8], token: &[u8], nonce: &auth::Nonce) -> Result<Hello, Refusal> {
    let msg =
        frame::decode_body::<AgentMessage>(body).map_err(|e| refusal("invalid", e.to_string()))?;
    check_hello(msg, token, nonce)
}

/// The checks of docs/PROTOCOL.md section 2, in its order: a hello at all (`invalid`), the
/// version (`version`), the limits (`invalid`), the proof (`auth`). `Ok` means the peer may be
/// welcomed (slot allocation and identity conflicts are the store's business).
pub fn check_hello(msg: AgentMessage, token: &[u8], nonce: &auth::Nonce) -> Result<Hello, Refusal> {
    let AgentMessage::Hello(hello) = msg else {
        return Err(refusal("invalid", "the first frame must be a hello"));
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(refusal(
            "version",
            format!(
                "protocol version {} is not supported; this master supports version {PROTOCOL_VERSION}",
                hello.version
            ),
        ));
    }
    hello
        .validate()
        .map_err(|e| refusal("invalid", format!("invalid hello: {e}")))?;
    if !auth::verify_proof(token, nonce, &hello.agent_id, &hello.proof) {
        return Err(refusal(
            "auth",
            "authentication failed: the proof does not match the fleet token",
        ));
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentinel_protocol::{HostInfo, Sample};

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn hello(version: u16, token: &[u8], nonce: &auth::Nonce) -> AgentMessage {
        AgentMessage::Hello(Hello {
            version,
            agent_id: ID.into(),
            run_id: 1,
            hostname: "h".into(),
            interval_ms: 1000,
            clock_ms: 0,
            agent_version: "t".into(),
            host: HostInfo::default(),
            proof: auth::proof(token, nonce, ID).to_vec(),
        })
    }

    #[test]
    fn decisions_follow_the_documented_order() {
        let nonce = [3u8; 32];
        let code = |r: Result<Hello, Refusal>| r.map(|_| "ok").unwrap_or_else(|r| r.code);
        assert_eq!(
            code(check_hello(hello(1, b"t", &nonce), b"t", &nonce)),
            "ok"
        );
        assert_eq!(
            code(check_hello(hello(1, b"x", &nonce), b"t", &nonce)),
            "auth"
        );
        // A proof for another nonce (a replayed hello) is refused.
        assert_eq!(
            code(check_hello(hello(1, b"t", &[4; 32]), b"t", &nonce)),
            "auth"
        );
        assert_eq!(
            code(check_hello(hello(2, b"x", &nonce), b"t", &nonce)),
            "version"
        );
        let sample = AgentMessage::Sample(Sample::default());
        assert_eq!(code(check_hello(sample, b"t", &nonce)), "invalid");
        assert_eq!(code(check_hello_body(b"\xff", b"t", &nonce)), "invalid");
    }
}
