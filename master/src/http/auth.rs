//! Optional HTTP basic authentication (RFC 7617) for everything but `/healthz`, and the
//! operator credentials that make the write routes exist: an operator user (basic auth) and
//! an API token (`Authorization: Bearer`). [`Access::identify`] says who a request is.
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

/// The operator API token (`api_token_file`), kept only as its SHA-256.
#[derive(Clone, PartialEq)]
pub struct ApiToken {
    sha256: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

/// Shortest API token accepted: 16 bytes of `openssl rand -hex 16` is 128 bits.
pub const MIN_TOKEN_BYTES: usize = 16;

impl ApiToken {
    pub fn new(token: &str) -> Result<ApiToken, String> {
        if token.len() < MIN_TOKEN_BYTES
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("expected a token of at least {MIN_TOKEN_BYTES} characters without spaces (e.g. openssl rand -hex 32)"));
        }
        Ok(ApiToken {
            sha256: Sha256::digest(token.as_bytes()).into(),
        })
    }

    fn matches(&self, presented: &str) -> bool {
        ct_eq(&Sha256::digest(presented.as_bytes()).into(), &self.sha256)
    }
}

/// Who sent a request, as far as the configured credentials tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// No Authorization header.
    Anonymous,
    /// Credentials that match nothing configured.
    Invalid,
    /// The `http_basic_auth_user`: reads only.
    Viewer,
    /// The `http_operator_user` (its name): reads and writes.
    Operator(String),
    /// The API token: reads and writes.
    Token,
}

impl Who {
    pub fn may_write(&self) -> bool {
        matches!(self, Who::Operator(_) | Who::Token)
    }

    /// For the audit log line: the user name, "token", or what the request was.
    pub fn name(&self) -> &str {
        match self {
            Who::Anonymous => "anonymous",
            Who::Invalid => "invalid credentials",
            Who::Viewer => "viewer",
            Who::Operator(user) => user,
            Who::Token => "token",
        }
    }
}

/// Every credential the http process checks.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Required for every read but `/healthz` when set (the viewer).
    pub viewer: Option<BasicAuth>,
    pub operator: Option<BasicAuth>,
    pub token: Option<ApiToken>,
}

impl Access {
    /// Write routes exist only when an operator credential is configured.
    pub fn writes_enabled(&self) -> bool {
        self.operator.is_some() || self.token.is_some()
    }

    /// Who the `Authorization` header says the request is from. Every configured credential
    /// is compared (constant time each), whatever matched first.
    pub fn identify(&self, header: Option<&HeaderValue>) -> Who {
        let Some(value) = header else {
            return Who::Anonymous;
        };
        let bearer = value.to_str().ok().and_then(|t| {
            let (scheme, rest) = t.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        });
        let token_ok = match (&self.token, &bearer) {
            (Some(t), Some(b)) => t.matches(b),
            _ => false,
        };
        let operator_ok = self.operator.as_ref().is_some_and(|o| o.allows(header));
        let viewer_ok = self.viewer.as_ref().is_some_and(|v| v.allows(header));
        if token_ok {
            Who::Token
        } else if operator_ok {
            Who::Operator(
                self.operator
                    .as_ref()
                    .map(|o| o.user.clone())
                    .unwrap_or_default(),
            )
        } else if viewer_ok {
            Who::Viewer
        } else {
            Who::Invalid
        }
    }

    /// May `who` read (every GET but `/healthz`)? Without a viewer configured reads are open
    /// to anyone, as before; a request carrying wrong credentials is still read-only then.
    pub fn may_read(&self, who: &Who) -> bool {
        match who {
            Who::Viewer | Who::Operator(_) | Who::Token => true,
            Who::Anonymous | Who::Invalid => self.viewer.is_none(),
        }
    }
}

/// Is a state-changing request from a browser page of another site? `Sec-Fetch-Site` (sent
/// by every current browser) must be `same-origin` or `none` (typed by the user); an
/// `Origin` header must name the same host and port as `Host`. A request with neither (curl,
/// `sentinel-master remove-host`) is not a browser's cross-site request.
pub fn cross_origin(headers: &hyper::HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin") | Ok("none")) {
            return true;
        }
    }
    let Some(origin) = headers.get(hyper::header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
        _ => true, // "null" or unparsable: not provably ours
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
    fn roles_come_from_the_credentials_and_only_operators_write() {
        let access = Access {
            viewer: Some(BasicAuth::new("view", &sha256_hex("v")).unwrap()),
            operator: Some(BasicAuth::new("ops", &sha256_hex("o")).unwrap()),
            token: Some(ApiToken::new("0123456789abcdef0123").unwrap()),
        };
        let bearer = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
        let cases = [
            (None, Who::Anonymous),
            (Some(header("view", "v")), Who::Viewer),
            (Some(header("ops", "o")), Who::Operator("ops".into())),
            (Some(header("ops", "v")), Who::Invalid),
            (Some(bearer("0123456789abcdef0123")), Who::Token),
            (Some(bearer("0123456789abcdef0124")), Who::Invalid),
        ];
        for (h, want) in cases {
            let who = access.identify(h.as_ref());
            assert_eq!(who, want, "{h:?}");
            assert_eq!(
                who.may_write(),
                matches!(want, Who::Operator(_) | Who::Token)
            );
        }
        assert!(!access.may_read(&Who::Anonymous) && access.may_read(&Who::Viewer));
        let open = Access::default();
        assert!(!open.writes_enabled() && open.may_read(&Who::Anonymous));
        assert!(ApiToken::new("short").is_err());
    }

    #[test]
    fn cross_origin_requests_are_recognised() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = hyper::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(!cross_origin(&h(&[("host", "m:7411")])), "curl");
        assert!(!cross_origin(&h(&[
            ("host", "m:7411"),
            ("origin", "http://m:7411")
        ])));
        assert!(!cross_origin(&h(&[
            ("host", "m:7411"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(cross_origin(&h(&[
            ("host", "m:7411"),
            ("origin", "http://evil.example")
        ])));
        assert!(cross_origin(&h(&[("host", "m:7411"), ("origin", "null")])));
        assert!(cross_origin(&h(&[
            ("host", "m:7411"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(cross_origin(&h(&[
            ("host", "m:7411"),
            ("sec-fetch-site", "same-site")
        ])));
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
