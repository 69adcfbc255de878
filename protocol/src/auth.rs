//! Handshake authentication: the agent proves it knows the fleet token by returning
//! HMAC-SHA256(token, DOMAIN || nonce || agent_id) over a fresh nonce chosen by the master.
//! The token never crosses the wire, and a captured proof is useless against another nonce.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of the master's nonce.
pub const NONCE_BYTES: usize = 32;
/// Length of an HMAC-SHA256 proof.
pub const PROOF_BYTES: usize = 32;
/// Domain separation, so a proof can never be mistaken for another use of the same token.
pub const DOMAIN: &[u8] = b"sentinel-auth-v1";

/// Domain separation of the key proof (an Ed25519 signature): it can never be taken for a
/// signature of anything else the agent's key might sign.
pub const KEY_DOMAIN: &[u8] = b"sentinel-key-v1";

pub type Nonce = [u8; NONCE_BYTES];
pub type Proof = [u8; PROOF_BYTES];

fn mac(token: &[u8], nonce: &Nonce, agent_id: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length (including empty), so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(token).expect("HMAC takes any key length");
    mac.update(DOMAIN);
    mac.update(nonce);
    mac.update(agent_id.as_bytes());
    mac
}

/// The proof an agent sends in its `hello`.
pub fn proof(token: &[u8], nonce: &Nonce, agent_id: &str) -> Proof {
    mac(token, nonce, agent_id).finalize().into_bytes().into()
}

/// Constant-time check of an agent's proof.
pub fn verify_proof(token: &[u8], nonce: &Nonce, agent_id: &str, proof: &[u8]) -> bool {
    mac(token, nonce, agent_id).verify_slice(proof).is_ok()
}

/// The message an agent signs with its Ed25519 key in a hello (`key_proof`):
/// `"sentinel-key-v1" || nonce (32) || run_id (8, big-endian) || agent_id (32 ASCII)`.
/// Every part has a fixed length, so no two inputs give the same message. The master's fresh
/// nonce makes a captured proof useless on another connection; the agent id and run id bind
/// it to this identity and this run.
pub fn key_message(nonce: &Nonce, run_id: u64, agent_id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(KEY_DOMAIN.len() + NONCE_BYTES + 8 + agent_id.len());
    m.extend_from_slice(KEY_DOMAIN);
    m.extend_from_slice(nonce);
    m.extend_from_slice(&run_id.to_be_bytes());
    m.extend_from_slice(agent_id.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_verifies_only_with_the_same_token_nonce_and_id() {
        let nonce = [7u8; NONCE_BYTES];
        let p = proof(b"token", &nonce, "abc");
        assert!(verify_proof(b"token", &nonce, "abc", &p));
        assert!(!verify_proof(b"other", &nonce, "abc", &p));
        assert!(!verify_proof(b"token", &[8u8; NONCE_BYTES], "abc", &p));
        assert!(!verify_proof(b"token", &nonce, "abd", &p));
        assert!(!verify_proof(b"token", &nonce, "abc", &p[..31]));
    }

    #[test]
    fn key_message_has_the_documented_layout() {
        let nonce = [7u8; NONCE_BYTES];
        let m = key_message(
            &nonce,
            0x0102_0304_0506_0708,
            "0123456789abcdef0123456789abcdef",
        );
        assert_eq!(&m[..15], b"sentinel-key-v1");
        assert_eq!(&m[15..47], &nonce);
        assert_eq!(&m[47..55], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&m[55..], b"0123456789abcdef0123456789abcdef");
    }
}
