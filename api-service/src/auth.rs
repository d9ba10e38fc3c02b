//! Who may call what: API keys on the public endpoints, the callback token on
//! the worker endpoints. Both are bearer tokens compared in constant time;
//! neither is ever logged.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use subtle::ConstantTimeEq;

use crate::{error::ApiError, state::AppState};

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Equal-length-independent constant-time comparison.
fn same_secret(given: &str, expected: &str) -> bool {
    // Compare digests of equal length, so the length of the secret is not
    // revealed by timing either.
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// The caller of a public endpoint: the API key used, or `None` when the
/// api is open (`API_KEYS` empty). Idempotency keys are scoped by it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Index of the key in `API_KEYS`, as a stable scope that is not the secret.
    pub scope: String,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unexpected(anyhow::anyhow!(
                "app state missing"
            ))));
        };
        if state.api_keys.is_empty() {
            return ready(Ok(Caller { scope: "-".into() }));
        }
        let Some(token) = bearer(req) else {
            return ready(Err(ApiError::Unauthorized(
                "send Authorization: Bearer <api key>",
            )));
        };
        // Check every key (no early exit) so timing says nothing about which matched.
        let mut matched = None;
        for (i, key) in state.api_keys.iter().enumerate() {
            if same_secret(token, key) {
                matched = Some(i);
            }
        }
        ready(match matched {
            Some(i) => Ok(Caller {
                scope: format!("key{i}"),
            }),
            None => Err(ApiError::Unauthorized("unknown API key")),
        })
    }
}

/// A worker presenting `CALLBACK_TOKEN`.
#[derive(Debug, Clone, Copy)]
pub struct Worker;

impl FromRequest for Worker {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unexpected(anyhow::anyhow!(
                "app state missing"
            ))));
        };
        ready(match bearer(req) {
            Some(token) if same_secret(token, &state.callback_token) => Ok(Worker),
            Some(_) => Err(ApiError::Unauthorized("wrong callback token")),
            None => Err(ApiError::Unauthorized(
                "send Authorization: Bearer <callback token>",
            )),
        })
    }
}
