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
}
