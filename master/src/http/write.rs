//! The operator-only routes: `DELETE /api/v1/hosts/{id}` (remove a host),
//! `DELETE /api/v1/hosts/{id}/key` (forget the host's pinned agent key), plus
//! `GET /api/v1/session` (what the viewer may do, for the dashboard) and `GET /login`
//! (makes a browser send the operator's basic-auth credentials).
//!
//! They exist only when an operator credential is configured (`http_operator_user` or
//! `api_token_file`); without one a DELETE is 405 like any method but GET/HEAD. With one, a
//! write is refused 403 from another site's page (`auth::cross_origin`), 401 without valid
//! operator credentials, 403 for the viewer. Every write attempt is logged with who, what,
//! which host and the peer address. The write itself travels to the collector over the
//! control channel (control.rs): the http process still never writes the table.

use std::net::SocketAddr;

use hyper::header::{HeaderValue, AUTHORIZATION, LOCATION};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::auth::{self, Who};
use super::{json_response, unauthorized, Resp, State};
use crate::control::{ControlError, Reply, Request};

/// Longest agent id accepted in a path (ids are 32 hex digits; PROTOCOL.md section 2).
const MAX_ID_BYTES: usize = 64;

/// True for the requests this module answers (everything else goes to the read router).
pub fn is_write_route(state: &State, method: &Method, path: &str) -> bool {
    let enabled = state.access.writes_enabled();
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/api/v1/session") => true,
        (&Method::GET | &Method::HEAD, "/login") => enabled,
        (&Method::DELETE, p) => enabled && p.starts_with("/api/v1/hosts/"),
        _ => false,
    }
}

pub async fn handle(
    state: &State,
    path: &str,
    headers: &hyper::HeaderMap,
    peer: SocketAddr,
) -> Resp {
    let who = state.access.identify(headers.get(AUTHORIZATION));
    match path {
        "/api/v1/session" if !state.access.may_read(&who) => unauthorized(),
        "/api/v1/session" => json_response(
            StatusCode::OK,
            &json!({
                "user": who.name(),
                "may_write": who.may_write(),
                "writes_enabled": state.access.writes_enabled(),
            }),
        ),
        "/login" => {
            if who.may_write() {
                let mut r = json_response(StatusCode::SEE_OTHER, &json!({"user": who.name()}));
                r.headers_mut()
                    .insert(LOCATION, HeaderValue::from_static("/"));
                r
            } else {
                unauthorized()
            }
        }
        _ => {
            let rest = path.strip_prefix("/api/v1/hosts/").unwrap_or_default();
            let write = match rest.strip_suffix("/key") {
                Some(id) => Write::ForgetKey(id),
                None => Write::RemoveHost(rest),
            };
            operator_write(state, write, &who, headers, peer).await
        }
    }
}

/// One operator write, named by its route.
#[derive(Clone, Copy)]
enum Write<'a> {
    /// `DELETE /api/v1/hosts/{id}`.
    RemoveHost(&'a str),
    /// `DELETE /api/v1/hosts/{id}/key`.
    ForgetKey(&'a str),
}

impl<'a> Write<'a> {
    fn id(self) -> &'a str {
        match self {
            Write::RemoveHost(id) | Write::ForgetKey(id) => id,
        }
    }

    /// The `action` field of the audit log line.
    fn action(self) -> &'static str {
        match self {
            Write::RemoveHost(_) => "remove_host",
            Write::ForgetKey(_) => "forget_key",
        }
    }

    fn request(self) -> Request {
        let agent_id = self.id().to_string();
        match self {
            Write::RemoveHost(_) => Request::RemoveHost { agent_id },
            Write::ForgetKey(_) => Request::ForgetKey { agent_id },
        }
    }
}

async fn operator_write(
    state: &State,
    write: Write<'_>,
    who: &Who,
    headers: &hyper::HeaderMap,
    peer: SocketAddr,
) -> Resp {
    let (id, action) = (write.id(), write.action());
    let refuse = |status: StatusCode, why: &str| {
        tracing::warn!(user = who.name(), peer = %peer, action, host_id = ?id, status = status.as_u16(), why, "refused an operator write");
        json_response(status, &json!({"error": why}))
    };
    if auth::cross_origin(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross-origin write refused (Origin/Sec-Fetch-Site is not this dashboard)",
        );
    }
    match who {
        Who::Anonymous | Who::Invalid => {
            let mut r = refuse(StatusCode::UNAUTHORIZED, "operator credentials required");
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(auth::CHALLENGE),
            );
            return r;
        }
        Who::Viewer => return refuse(StatusCode::FORBIDDEN, "the viewer may only read"),
        Who::Operator(_) | Who::Token => {}
    }
    if id.is_empty()
        || id.len() > MAX_ID_BYTES
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return refuse(StatusCode::BAD_REQUEST, "not an agent id");
    }
    let reply = state.control.call(write.request()).await;
    let (status, body) = match &reply {
        Ok(Reply::Removed {
            hostname,
            was_connected,
        }) => (
            StatusCode::OK,
            json!({"removed": id, "hostname": hostname, "was_connected": was_connected}),
        ),
        Ok(Reply::KeyForgotten {
            hostname,
            key_sha256,
        }) => (
            StatusCode::OK,
            json!({"key_forgotten": id, "hostname": hostname, "key_sha256": key_sha256}),
        ),
        Ok(Reply::NotFound) => (
            StatusCode::NOT_FOUND,
            json!({"error": format!("no host with id {id}")}),
        ),
        Ok(Reply::Failed { reason }) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("the collector could not do it ({action}): {reason}")}),
        ),
        Err(e @ (ControlError::CollectorDown | ControlError::Timeout | ControlError::Full)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": e.to_string()}),
        ),
    };
    let hostname = match &reply {
        Ok(Reply::Removed { hostname, .. } | Reply::KeyForgotten { hostname, .. }) => {
            hostname.as_str()
        }
        _ => "",
    };
    tracing::info!(user = who.name(), peer = %peer, action, host_id = %id, host = ?hostname, status = status.as_u16(), result = %body, "operator write");
    let mut r = json_response(status, &body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    r
}
