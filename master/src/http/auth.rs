//! Optional HTTP basic authentication (RFC 7617) for everything but `/healthz`.
//!
//! The config holds the user name and the SHA-256 of the password, never the password. A
//! request's credentials are hashed and compared with the configured ones in constant time
//! (both comparisons always run, over fixed-size digests), and they are never logged.

use base64::prelude::{Engine, BASE64_STANDARD};
use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};

/// The `WWW-Authenticate` challenge of a 401.
pub const CHALLENGE: &str = "Basic realm=\"sentinel\", charset=\"UTF-8\"";

/// Paths served without credentials: load balancers and systemd-style health checks.
pub const OPEN_PATHS: [&str; 1] = ["/healthz"];

/// The configured credentials.
#[derive(Clone, PartialEq)]
pub struct BasicAuth {
    /// SHA-256 of the user name: compared like the password, so no early exit tells a
    /// prober whether the user name was right.
    user_sha256: [u8; 32],
    /// The user name, for the start-up log line only.
    pub user: String,
    password_sha256: [u8; 32],
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// From `http_basic_auth_user` and `http_basic_auth_sha256` (64 hex digits, as printed by
    /// `printf %s 'password' | sha256sum`).
    pub fn new(user: &str, password_sha256_hex: &str) -> Result<BasicAuth, String> {
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
            return Err("key `http_basic_auth_user`: expected a non-empty name without ':' or control characters".into());
        }
        let mut password_sha256 = [0u8; 32];
        hex::decode_to_slice(password_sha256_hex.trim(), &mut password_sha256).map_err(|_| {
            "key `http_basic_auth_sha256`: expected 64 hex digits, the SHA-256 of the password (printf %s 'PASSWORD' | sha256sum)".to_string()
        })?;
        Ok(BasicAuth {
            user_sha256: Sha256::digest(user.as_bytes()).into(),
            user: user.to_string(),
            password_sha256,
        })
    }

    /// True if the `Authorization` header carries the configured user and password.
    pub fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = header.and_then(credentials) else {
            return false;
        };
        let user_ok = ct_eq(&Sha256::digest(user.as_bytes()).into(), &self.user_sha256);
        let password_ok = ct_eq(
            &Sha256::digest(password.as_bytes()).into(),
            &self.password_sha256,
        );
        user_ok & password_ok
    }
}

/// The user and password of a `Basic` Authorization header.
fn credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64_STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Compares two digests without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether a request for `path` needs credentials.
pub fn protects(path: &str) -> bool {
    !OPEN_PATHS.contains(&path)
}

/// An Authorization header for `user:password`.
#[cfg(test)]
pub fn header(user: &str, password: &str) -> HeaderValue {
    let token = BASE64_STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {token}")).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn only_the_configured_user_and_password_are_allowed() {
        let auth = BasicAuth::new("ops", &sha256_hex("s3cret:with colon")).unwrap();
        assert!(auth.allows(Some(&header("ops", "s3cret:with colon"))));
        let lower = HeaderValue::from_str(
            header("ops", "s3cret:with colon")
                .to_str()
                .unwrap()
                .replace("Basic", "basic")
                .as_str(),
        )
        .unwrap();
        assert!(auth.allows(Some(&lower)), "the scheme is case-insensitive");
        for bad in [
            header("ops", "wrong"),
            header("Ops", "s3cret:with colon"),
            header("", ""),
            HeaderValue::from_static("Basic !!!notbase64"),
            HeaderValue::from_static("Bearer abc"),
            HeaderValue::from_static("Basic"),
            HeaderValue::from_static("Basic b3Bz"), // "ops", no colon
        ] {
            assert!(!auth.allows(Some(&bad)), "{bad:?}");
        }
        assert!(!auth.allows(None));
    }

    #[test]
    fn bad_settings_name_the_key_and_debug_shows_no_hash() {
        assert!(BasicAuth::new("a:b", &sha256_hex("x"))
            .unwrap_err()
            .contains("http_basic_auth_user"));
        assert!(BasicAuth::new("ops", "plaintext-password")
            .unwrap_err()
            .contains("http_basic_auth_sha256"));
        let auth = BasicAuth::new("ops", &sha256_hex("x")).unwrap();
        assert!(!format!("{auth:?}").contains(&sha256_hex("x")[..8]));
        assert!(protects("/metrics") && protects("/") && !protects("/healthz"));
    }
}
