//! The handshake decision as a pure function of the agent's first frame, the fleet token and
//! the nonce this connection was challenged with: no I/O, no table, no clock. The session
//! calls it; the fuzzer (`fuzz/fuzz_targets/handshake.rs`) calls it directly.

use sentinel_protocol::{auth, frame, AgentMessage, Hello, PROTOCOL_VERSION};

/// A reason to end a connection: the `refused` code and a sentence for both logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The wire text of a [`RefusalCode`].
    pub code: &'static str,
    pub reason: String,
    /// A frame that could not be read or decoded (counted apart in /metrics).
    pub decode_error: bool,
}

pub fn refusal(code: &'static str, reason: impl Into<String>) -> Refusal {
    debug_assert!(
        RefusalCode::of(code).is_some(),
        "unknown refusal code {code}"
    );
    Refusal {
        code,
        reason: reason.into(),
        decode_error: false,
    }
}

/// A frame that could not be read or whose body is not a valid agent message: `invalid`.
pub fn decode_error(reason: impl Into<String>) -> Refusal {
    Refusal {
        decode_error: true,
        ..refusal("invalid", reason)
    }
}

/// Every `refused` code the master sends (docs/PROTOCOL.md), numbered for the collector's
/// counters in the table header (`layout::CollectorCounters::refused`). A new code is a new
/// variant here, at the end (the number is its counter's place in the table and in
/// snapshots), plus its text in [`RefusalCode::as_str`]; /metrics lists [`RefusalCode::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// Malformed, oversized or out-of-limit input, or no hello in time.
    Invalid = 0,
    /// The proof does not match the fleet token.
    Auth = 1,
    /// A protocol version this master does not speak.
    Version = 2,
    /// `max_connections` reached, or the host table is full.
    Busy = 3,
    /// Another connection holds this agent id (or a newer one took over).
    Conflict = 4,
    /// A TLS handshake failed (wrong certificate, not TLS, too slow). Never sent: the peer
    /// gets a TLS alert instead of a `refused`; counted so /metrics shows it.
    Tls = 5,
    /// The hello's key does not match the one pinned to its agent id, it carries no key for
    /// a pinned id (or under `require_agent_keys`), or its key proof does not verify.
    Identity = 6,
    /// Too many new host identities from this peer address in the last minute
    /// (`new_hosts_per_minute`); known hosts are never refused this way.
    Throttled = 7,
}

impl RefusalCode {
    pub const ALL: [RefusalCode; 8] = [
        RefusalCode::Invalid,
        RefusalCode::Auth,
        RefusalCode::Version,
        RefusalCode::Busy,
        RefusalCode::Conflict,
        RefusalCode::Tls,
        RefusalCode::Identity,
        RefusalCode::Throttled,
    ];

    /// The code's text on the wire and in the `code` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalCode::Invalid => "invalid",
            RefusalCode::Auth => "auth",
            RefusalCode::Version => "version",
            RefusalCode::Busy => "busy",
            RefusalCode::Conflict => "conflict",
            RefusalCode::Tls => "tls",
            RefusalCode::Identity => "identity",
            RefusalCode::Throttled => "throttled",
        }
    }

    /// The code whose wire text is `code`.
    pub fn of(code: &str) -> Option<RefusalCode> {
        RefusalCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// Its counter's index in `layout::CollectorCounters::refused`.
    pub const fn index(self) -> usize {
        self as usize
    }
}

const _: () = assert!(RefusalCode::ALL.len() <= crate::table::layout::REFUSAL_CODES);

/// Decodes the first frame body and decides on it (see [`check_hello`]).
pub fn check_hello_body(body: &[u8], token: &[u8], nonce: &auth::Nonce) -> Result<Hello, Refusal> {
    let msg = frame::decode_body::<AgentMessage>(body).map_err(|e| decode_error(e.to_string()))?;
    check_hello(msg, token, nonce)
}

/// The checks of docs/PROTOCOL.md section 2, in its order: a hello at all (`invalid`), the
/// version (`version`), the limits (`invalid`), the proof (`auth`), the key proof when a key
/// is sent (`identity`). `Ok` means the peer may be welcomed (slot allocation, the key pinned
/// to the id and identity conflicts are the store's business).
pub fn check_hello(msg: AgentMessage, token: &[u8], nonce: &auth::Nonce) -> Result<Hello, Refusal> {
    let AgentMessage::Hello(hello) = msg else {
        return Err(refusal("invalid", "the first frame must be a hello"));
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(refusal(
            "version",
            sentinel_protocol::version_refusal_reason(hello.version),
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
    if let (Some(key), Some(sig)) = (&hello.key, &hello.key_proof) {
        let msg = auth::key_message(nonce, hello.run_id, &hello.agent_id);
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
        if key.verify(&msg, sig).is_err() {
            return Err(refusal(
                "identity",
                "the key proof does not verify with the hello's key for this nonce, run and agent id",
            ));
        }
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
            key: None,
            key_proof: None,
            labels: Default::default(),
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
        assert!(
            check_hello_body(b"\xff", b"t", &nonce)
                .unwrap_err()
                .decode_error
        );
    }

    fn keyed(nonce: &auth::Nonce, sign_nonce: &auth::Nonce, run: u64) -> AgentMessage {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let pair = Ed25519KeyPair::from_seed_unchecked(&[5; 32]).unwrap();
        let AgentMessage::Hello(mut h) = hello(1, b"t", nonce) else {
            unreachable!()
        };
        h.key = Some(pair.public_key().as_ref().to_vec());
        h.key_proof = Some(
            pair.sign(&auth::key_message(sign_nonce, run, ID))
                .as_ref()
                .to_vec(),
        );
        AgentMessage::Hello(h)
    }

    #[test]
    fn a_key_proof_must_verify_for_this_nonce_and_run() {
        let nonce = [3u8; 32];
        let code = |r: Result<Hello, Refusal>| r.map(|_| "ok").unwrap_or_else(|r| r.code);
        assert_eq!(
            code(check_hello(keyed(&nonce, &nonce, 1), b"t", &nonce)),
            "ok"
        );
        // Signed for another connection's nonce, or for another run: a replay.
        assert_eq!(
            code(check_hello(keyed(&nonce, &[4; 32], 1), b"t", &nonce)),
            "identity"
        );
        assert_eq!(
            code(check_hello(keyed(&nonce, &nonce, 2), b"t", &nonce)),
            "identity"
        );
        // A key without its proof is malformed.
        let AgentMessage::Hello(mut h) = keyed(&nonce, &nonce, 1) else {
            unreachable!()
        };
        h.key_proof = None;
        assert_eq!(
            code(check_hello(AgentMessage::Hello(h), b"t", &nonce)),
            "invalid"
        );
    }

    #[test]
    fn a_bad_label_is_refused_invalid_naming_it_before_the_proof_is_checked() {
        let nonce = [3u8; 32];
        let with_label = |token: &[u8], name: &str, value: &str| {
            let AgentMessage::Hello(mut h) = hello(1, token, &nonce) else {
                unreachable!()
            };
            h.labels.insert(name.into(), value.into());
            AgentMessage::Hello(h)
        };
        let ok = check_hello(with_label(b"t", "role", "db"), b"t", &nonce).unwrap();
        assert_eq!(ok.labels.get("role").map(String::as_str), Some("db"));
        // Limits come before the proof: even a wrong token gets the label's reason.
        let r = check_hello(with_label(b"x", "job", "x"), b"t", &nonce).unwrap_err();
        assert_eq!((r.code, r.decode_error), ("invalid", false));
        assert_eq!(
            r.reason,
            "invalid hello: label \"job\": the name is reserved for a label Sentinel sets itself"
        );
        let r = check_hello(with_label(b"t", "a\nb", "x"), b"t", &nonce).unwrap_err();
        assert!(
            r.reason.contains("label \"a\\nb\""),
            "escaped: {}",
            r.reason
        );
    }

    #[test]
    fn every_refusal_code_has_its_own_counter_and_round_trips_its_text() {
        let mut seen = std::collections::HashSet::new();
        let mut last = None;
        for c in RefusalCode::ALL {
            assert!(last < Some(c.index()), "ALL is in counter order");
            assert!(c.index() < crate::table::layout::REFUSAL_CODES);
            last = Some(c.index());
            assert_eq!(RefusalCode::of(c.as_str()), Some(c));
            assert!(seen.insert(c.as_str()));
        }
        assert_eq!(RefusalCode::of("nonsense"), None);
    }
}
