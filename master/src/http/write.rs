//! The operator-only routes: `DELETE /api/v1/hosts/{id}` (remove a host), plus
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
            let id = path.strip_prefix("/api/v1/hosts/").unwrap_or_default();
            remove_host(state, id, &who, headers, peer).await
        }
    }
}

async fn remove_host(
    state: &State,
    id: &str,
    who: &Who,
    headers: &hyper::HeaderMap,
    peer: SocketAddr,
) -> Resp {
    let refuse = |status: StatusCode, why: &str| {
        tracing::warn!(user = who.name(), peer = %peer, action = "remove_host", host_id = ?id, status = status.as_u16(), why, "refused an operator write");
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
    let request = Request::RemoveHost {
        agent_id: id.to_string(),
    };
    let reply = state.control.call(request).await;
    let (status, body) = match &reply {
        Ok(Reply::Removed {
            hostname,
            was_connected,
        }) => (
            StatusCode::OK,
            json!({"removed": id, "hostname": hostname, "was_connected": was_connected}),
        ),
        Ok(Reply::NotFound) => (
            StatusCode::NOT_FOUND,
            json!({"error": format!("no host with id {id}")}),
        ),
        Ok(Reply::Failed { reason }) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("the collector could not remove the host: {reason}")}),
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
        Ok(Reply::Removed { hostname, .. }) => hostname.as_str(),
        _ => "",
    };
    tracing::info!(user = who.name(), peer = %peer, action = "remove_host", host_id = %id, host = ?hostname, status = status.as_u16(), result = %body, "operator write");
    let mut r = json_response(status, &body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    r
}
