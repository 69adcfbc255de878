//! The dashboard, compiled into the binary: no CDN, no build step, nothing fetched from
//! anywhere but this server (the CSP is `default-src 'self'`).

pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

pub const INDEX_HTML: &str = include_str!("../dashboard/index.html");
pub const APP_JS: &str = include_str!("../dashboard/app.js");
pub const STYLE_CSS: &str = include_str!("../dashboard/style.css");

/// The asset served at `path`. The host view (`/hosts/{id}`) is the same page: the script
/// reads the id from the location.
pub fn get(path: &str) -> Option<Asset> {
    let html = Asset {
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML,
    };
    match path {
        "/" | "/index.html" => Some(html),
        "/app.js" => Some(Asset {
            content_type: "text/javascript; charset=utf-8",
            body: APP_JS,
        }),
        "/style.css" => Some(Asset {
            content_type: "text/css; charset=utf-8",
            body: STYLE_CSS,
        }),
        _ => match path.strip_prefix("/hosts/") {
            Some(id) if !id.is_empty() && !id.contains('/') => Some(html),
            _ => None,
        },
    }
}
