//! CBOR decoding of every message type (both enums and each message struct on its own, a
//! sample both in its compact wire form and in the long-named form the master keeps in the
//! table), then `validate()` where the type has one. Whatever decodes must re-encode, and the re-encoding
//! must be a fixed point (decode(encode(m)) encodes to the same bytes): the reference encoder
//! and decoder agree on everything the decoder accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_protocol::frame::encode_body;
use sentinel_protocol::*;
use serde::{de::DeserializeOwned, Serialize};

fn check<T: DeserializeOwned + Serialize>(body: &[u8], validate: impl Fn(&T)) {
    let Ok(msg) = decode_body::<T>(body) else {
        return;
    };
    validate(&msg);
    let mut once = Vec::new();
    encode_body(&msg, &mut once).expect("a decoded message encodes");
    let again: T = decode_body(&once).expect("an encoded message decodes");
    let mut twice = Vec::new();
    encode_body(&again, &mut twice).expect("re-encodes");
    assert_eq!(once, twice, "encoding is not a fixed point");
}

fn agent(m: &AgentMessage) {
    let _ = match m {
        AgentMessage::Hello(h) => h.validate(),
        AgentMessage::Sample(s) => s.validate(),
        AgentMessage::Batch(b) => b.validate(),
        AgentMessage::Goodbye(g) => g.validate(),
    };
}

fuzz_target!(|body: &[u8]| {
    check::<AgentMessage>(body, agent);
    check::<MasterMessage>(body, |_| ());
    check::<Hello>(body, |h| {
        let _ = h.validate();
    });
    check::<Sample>(body, |s| {
        let _ = s.validate();
    });
    // The master's field reader agrees with the full decoder wherever both accept the body.
    let filesystems = decode_filesystems(body);
    if let Ok(s) = decode_sample(body) {
        if let Ok(fs) = &filesystems {
            let fs: Vec<_> = fs.iter().map(FilesystemRef::to_filesystem).collect();
            assert_eq!(
                fs, s.filesystems,
                "decode_filesystems disagrees with decode_sample"
            );
        }
        let _ = s.validate();
        let mut once = Vec::new();
        encode_sample(&s, &mut once).expect("a decoded sample encodes");
        let mut twice = Vec::new();
        encode_sample(&decode_sample(&once).expect("decodes"), &mut twice).expect("encodes");
        assert_eq!(once, twice, "wire sample encoding is not a fixed point");
    }
    check::<Batch>(body, |b| {
        let _ = b.validate();
    });
    check::<Goodbye>(body, |g| {
        let _ = g.validate();
    });
    check::<Challenge>(body, |_| ());
    check::<Welcome>(body, |_| ());
    check::<Refused>(body, |_| ());
    check::<Ack>(body, |_| ());
});
