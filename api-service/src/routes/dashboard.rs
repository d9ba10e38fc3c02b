//! The web dashboard: one HTML page, a stylesheet and a script, compiled
//! into the binary (`assets/dashboard/`), so there is no build step and the
//! page fetches nothing from the network but this api.
//!
//! The shell is served without authentication: a browser cannot attach a
//! bearer header to a navigation, and the shell holds no data. Every data
//! call the page makes goes to the `/tasks` and `/blobs` endpoints, which need an API key
//! when `API_KEYS` is set; on a 401 the page asks for one and sends it as
//! `Authorization: Bearer`.
//!
//! Responses carry a strong `ETag` (a digest of the content) and
//! `Cache-Control: no-cache`, so a browser revalidates on each load and gets
//! a 304 until the binary changes. A Content-Security-Policy limits the page
//! to its own origin.

use std::sync::LazyLock;

use actix_web::{
    http::header::{self, HeaderValue},
    HttpRequest, HttpResponse,
};
use sha2::{Digest, Sha256};

/// The page, its policy: scripts, styles and connections to this origin only;
/// images also from `blob:` URLs, which is how a result image fetched with
/// the API key (`GET /blobs/{id}`) is shown.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Self {
        let digest = Sha256::digest(body);
        Self {
            body,
            content_type,
            etag: format!("\"{}\"", hex::encode(&digest[..16])),
        }
    }

    fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let fresh = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == self.etag || t == "*")
            });
        let mut res = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        res.insert_header((header::ETAG, self.etag.as_str()))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"));
        if fresh {
            return res.finish();
        }
        res.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        ));
        if self.content_type.starts_with("text/html") {
            res.insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
                .insert_header((header::X_FRAME_OPTIONS, "DENY"));
        }
        res.body(self.body)
    }
}

static INDEX_HTML: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../assets/dashboard/index.html"),
        "text/html; charset=utf-8",
    )
});
static APP_CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../assets/dashboard/app.css"),
        "text/css; charset=utf-8",
    )
});
static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../assets/dashboard/app.js"),
        "text/javascript; charset=utf-8",
    )
});

/// `GET /`: the dashboard page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    INDEX_HTML.respond(&req)
}

/// `GET /assets/app.css`.
pub async fn stylesheet(req: HttpRequest) -> HttpResponse {
    APP_CSS.respond(&req)
}

/// `GET /assets/app.js`.
pub async fn script(req: HttpRequest) -> HttpResponse {
    APP_JS.respond(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_digests_that_differ_per_file() {
        assert!(INDEX_HTML.etag.starts_with('"') && INDEX_HTML.etag.ends_with('"'));
        assert_eq!(INDEX_HTML.etag.len(), 34);
        assert_ne!(INDEX_HTML.etag, APP_JS.etag);
        assert_ne!(APP_CSS.etag, APP_JS.etag);
    }
}
