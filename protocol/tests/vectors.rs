//! docs/PROTOCOL.md's test vectors are real frames: this test reads them from the document,
//! decodes each, compares it with the documented values, and re-encodes it byte for byte.
//! Run with `SENTINEL_PRINT_VECTORS=1 cargo test -p sentinel-protocol --test vectors -- --nocapture`
//! to print the frames when the document needs regenerating.

use sentinel_protocol::*;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");
const TOKEN: &[u8] = b"example-fleet-token";
const AGENT_ID: &str = "0123456789abcdef0123456789abcdef";

fn nonce() -> Nonce {
    std::array::from_fn(|i| i as u8)
}

fn sample(seq: u64) -> Sample {
    Sample {
        seq,
        ts_ms: 1_764_000_000_000 + (seq - 1) * 1000,
        dropped: 0,
        cpu_percent: 12.5,
        cpu_user_percent: 8.0,
        cpu_system_percent: 3.5,
        cpu_iowait_percent: 0.5,
        cpu_steal_percent: 0.5,
        cpu_cores_percent: vec![10.0, 15.0],
        load1: 0.25,
        load5: 0.5,
        load15: 0.75,
        mem_total_bytes: 8_589_934_592,
        mem_available_bytes: 6_442_450_944,
        mem_used_bytes: 2_147_483_648,
        swap_total_bytes: 0,
        swap_used_bytes: 0,
        filesystems: vec![Filesystem {
            mount: "/".into(),
            fs_type: "ext4".into(),
            total_bytes: 64_424_509_440,
            available_bytes: 32_212_254_720,
            free_bytes: None,
        }],
        interfaces: vec![Interface {
            name: "eth0".into(),
            rx_bytes: 1_000_000,
            tx_bytes: 250_000,
            is_virtual: None,
        }],
        disk_read_bytes: 4096,
        disk_write_bytes: 8192,
        uptime_s: 86_400,
        boot_time_s: 1_763_913_600,
        processes: 120,
    }
}

/// The example agent key: Ed25519 from the seed of 32 bytes 0x42 (RFC 8032 keys are their seed).
fn example_key() -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[0x42; 32]).unwrap()
}

/// `hello` with the optional identity keys of section 3.
fn keyed(hello: Hello) -> Hello {
    use ring::signature::KeyPair;
    let key = example_key();
    let msg = auth::key_message(&nonce(), hello.run_id, &hello.agent_id);
    Hello {
        key: Some(key.public_key().as_ref().to_vec()),
        key_proof: Some(key.sign(&msg).as_ref().to_vec()),
        ..hello
    }
}

/// `hello` with the optional `labels` of section 4 ("Labels").
fn labelled(hello: Hello) -> Hello {
    Hello {
        labels: [("dc", "eu1"), ("role", "db")]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        ..hello
    }
}

fn agent_vectors() -> Vec<(&'static str, AgentMessage)> {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        agent_id: AGENT_ID.into(),
        run_id: 42,
        hostname: "web-01".into(),
        interval_ms: 1000,
        clock_ms: 1_764_000_000_000,
        agent_version: "0.1.0".into(),
        host: HostInfo {
            os: "Debian GNU/Linux 12".into(),
            kernel: "6.1.0-18-amd64".into(),
            arch: "x86_64".into(),
            cpu_model: "AMD EPYC 7B13".into(),
            cpu_count: 2,
        },
        proof: proof(TOKEN, &nonce(), AGENT_ID).to_vec(),
        key: None,
        key_proof: None,
        labels: Default::default(),
    };
    let small = |seq| Sample {
        cpu_cores_percent: vec![],
        filesystems: vec![],
        interfaces: vec![],
        ..sample(seq)
    };
    vec![
        ("hello", AgentMessage::Hello(hello.clone())),
        ("hello_keyed", AgentMessage::Hello(keyed(hello.clone()))),
        ("hello_labelled", AgentMessage::Hello(labelled(hello))),
        ("sample", AgentMessage::Sample(sample(1))),
        (
            "batch",
            AgentMessage::Batch(Batch {
                samples: vec![small(2), small(3)],
            }),
        ),
        (
            "goodbye",
            AgentMessage::Goodbye(Goodbye {
                last_seq: 3,
                reason: "sigterm".into(),
            }),
        ),
    ]
}

fn master_vectors() -> Vec<(&'static str, MasterMessage)> {
    vec![
        (
            "challenge",
            MasterMessage::Challenge(Challenge {
                version: PROTOCOL_VERSION,
                nonce: nonce().to_vec(),
            }),
        ),
        (
            "welcome",
            MasterMessage::Welcome(Welcome {
                last_seq: 0,
                clock_ms: 1_764_000_000_250,
            }),
        ),
        ("ack", MasterMessage::Ack(Ack { seq: 3 })),
        (
            "refused",
            MasterMessage::Refused(Refused {
                code: "version".into(),
                reason: sentinel_protocol::version_refusal_reason(2),
            }),
        ),
    ]
}

/// The hex of the fenced block following `<!-- vector: NAME -->`.
fn documented_hex(name: &str) -> Vec<u8> {
    let marker = format!("<!-- vector: {name} -->");
    let start = DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no vector {name}"));
    let rest = &DOC[start + marker.len()..];
    let open = rest
        .find("```hex\n")
        .expect("a ```hex block follows the marker")
        + 7;
    let close = open + rest[open..].find("```").expect("closing fence");
    let digits: String = rest[open..close]
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect();
    hex::decode(digits).unwrap_or_else(|e| panic!("vector {name}: bad hex: {e}"))
}

fn to_hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    name: &str,
    expected: &T,
) {
    let mut encoded = Vec::new();
    encode_frame(expected, &mut encoded).unwrap();
    if std::env::var_os("SENTINEL_PRINT_VECTORS").is_some() {
        println!(
            "<!-- vector: {name} -->\n```hex\n{}\n```\n",
            to_hex_lines(&encoded)
        );
        return;
    }
    let frame = documented_hex(name);
    let (body, len) = split_frame(&frame)
        .unwrap()
        .expect("vector is one whole frame");
    assert_eq!(len, frame.len(), "vector {name}: bytes after the frame");
    let decoded: T = decode_body(body).unwrap_or_else(|e| panic!("vector {name}: {e}"));
    assert_eq!(
        &decoded, expected,
        "vector {name} decodes to the documented values"
    );
    assert_eq!(
        encoded, frame,
        "vector {name}: our encoder produces the documented bytes"
    );
}

#[test]
fn protocol_md_vectors_decode_to_the_documented_values() {
    for (name, msg) in agent_vectors() {
        check(name, &msg);
    }
    for (name, msg) in master_vectors() {
        check(name, &msg);
    }
}

#[test]
fn documented_hello_proof_verifies_with_the_example_token() {
    let AgentMessage::Hello(hello) = &agent_vectors()[0].1 else {
        unreachable!()
    };
    assert!(verify_proof(TOKEN, &nonce(), AGENT_ID, &hello.proof));
    if std::env::var_os("SENTINEL_PRINT_VECTORS").is_none() {
        let documented = documented_hex("proof");
        assert_eq!(documented, hello.proof, "PROTOCOL.md's proof vector");
    } else {
        println!(
            "<!-- vector: proof -->\n```hex\n{}\n```\n",
            to_hex_lines(&hello.proof)
        );
    }
}

#[test]
fn documented_key_proof_verifies_and_a_0_1_0_decoder_ignores_the_keys() {
    let AgentMessage::Hello(hello) = &agent_vectors()[1].1 else {
        unreachable!()
    };
    let msg = auth::key_message(&nonce(), 42, AGENT_ID);
    assert_eq!(msg.len(), 15 + 32 + 8 + 32);
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        hello.key.as_deref().unwrap(),
    );
    key.verify(&msg, hello.key_proof.as_deref().unwrap())
        .expect("the documented key proof verifies");
    // A 0.1.0 peer decodes the keyed hello as the plain one: unknown keys are ignored.
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct OldHello {
        version: u16,
        agent_id: String,
        run_id: u64,
        hostname: String,
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    }
    #[derive(serde::Deserialize, PartialEq, Debug)]
    #[serde(rename_all = "snake_case")]
    enum OldMessage {
        Hello(OldHello),
    }
    let mut frame = Vec::new();
    encode_frame(&agent_vectors()[1].1, &mut frame).unwrap();
    let OldMessage::Hello(old) = decode_body::<OldMessage>(&frame[4..]).unwrap();
    assert_eq!(
        (old.run_id, old.proof.as_slice()),
        (42, hello.proof.as_slice())
    );
    if std::env::var_os("SENTINEL_PRINT_VECTORS").is_none() {
        assert_eq!(
            documented_hex("key_proof"),
            hello.key_proof.as_deref().unwrap(),
            "PROTOCOL.md's key proof vector"
        );
    } else {
        println!(
            "<!-- vector: key_proof -->\n```hex\n{}\n```\n",
            to_hex_lines(hello.key_proof.as_deref().unwrap())
        );
    }
}

#[test]
fn the_documented_labelled_hello_is_valid_and_a_0_1_0_decoder_ignores_the_labels() {
    let (name, AgentMessage::Hello(hello)) = &agent_vectors()[2] else {
        unreachable!()
    };
    assert_eq!(*name, "hello_labelled");
    assert_eq!(hello.validate(), Ok(()));
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct OldHello {
        agent_id: String,
        hostname: String,
    }
    #[derive(serde::Deserialize, PartialEq, Debug)]
    #[serde(rename_all = "snake_case")]
    enum OldMessage {
        Hello(OldHello),
    }
    let mut frame = Vec::new();
    encode_frame(&agent_vectors()[2].1, &mut frame).unwrap();
    let OldMessage::Hello(old) = decode_body::<OldMessage>(&frame[4..]).unwrap();
    assert_eq!(
        (old.agent_id.as_str(), old.hostname.as_str()),
        (AGENT_ID, "web-01")
    );
    // The plain hello has no `labels` key at all (an empty set is not sent).
    let mut plain = Vec::new();
    encode_frame(&agent_vectors()[0].1, &mut plain).unwrap();
    assert!(!plain.windows(6).any(|w| w == b"labels"));
}
