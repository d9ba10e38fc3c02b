//! Outbound webhooks: when a task with a `webhook_url` ends, POST its GET
//! representation there, signed with `WEBHOOK_SECRET`, retried with backoff.
//!
//! Delivery runs in the api process that recorded the terminal state. Its
//! outcome is written to the task (`webhook` in GET).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use task_model::TaskId;

use crate::{error::ApiError, state::AppState, store::WebhookState};

/// Attempts before a delivery is marked failed.
pub const MAX_ATTEMPTS: u32 = 6;

/// Checks a `webhook_url` against the allow-list.
///
/// # Errors
/// 400 when webhooks are off, the URL is not http(s), or its host is not allowed.
pub fn check_url(raw: &str, allowed: &[String]) -> Result<(), ApiError> {
    if allowed.is_empty() {
        return Err(ApiError::bad_request(
            "webhooks_disabled",
            "webhooks are off (WEBHOOK_ALLOWED_HOSTS is empty)",
        ));
    }
    let url = reqwest::Url::parse(raw)
        .map_err(|e| ApiError::invalid("webhook_url", format!("webhook_url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid(
            "webhook_url",
            "webhook_url must be http or https",
        ));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if !allowed.contains(&host) {
        return Err(ApiError::bad_request(
            "webhook_host_not_allowed",
            format!("webhooks may not go to {host}"),
        ));
    }
    Ok(())
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers the finished task's webhook, if it has one.
pub async fn deliver(state: std::sync::Arc<AppState>, id: TaskId) {
    let url = match state.store.load(&id).await {
        Ok(task) => match task.and_then(|t| t.webhook_url) {
            Some(url) => url,
            None => return,
        },
        Err(e) => {
            tracing::error!(task_id = %id, error = %e, "cannot read the task for its webhook");
            return;
        }
    };
    let secret = state.webhook_secret.clone().unwrap_or_default();
    let mut delay = state.webhook_retry_base;
    for attempt in 1..=MAX_ATTEMPTS {
        let outcome = attempt_once(&state, id, &url, secret.as_bytes()).await;
        let (label, recorded, error) = match &outcome {
            Ok(()) => ("delivered", WebhookState::Delivered, None),
            Err(e) if attempt == MAX_ATTEMPTS => ("failed", WebhookState::Failed, Some(e.as_str())),
            Err(e) => ("retry", WebhookState::Pending, Some(e.as_str())),
        };
        state
            .metrics
            .webhook_deliveries
            .with_label_values(&[label])
            .inc();
        match state
            .store
            .record_webhook(&id, recorded, attempt, error)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // Expired (RESULT_TTL_SECS) while being retried: nothing left to report on.
                tracing::info!(task_id = %id, attempt, "the task expired; its webhook is abandoned");
                return;
            }
            Err(e) => {
                tracing::error!(task_id = %id, error = %e, "cannot record the webhook outcome")
            }
        }
        match outcome {
            Ok(()) => {
                tracing::info!(task_id = %id, attempt, "webhook delivered");
                return;
            }
            Err(e) => tracing::warn!(task_id = %id, attempt, error = %e, "webhook delivery failed"),
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

async fn attempt_once(
    state: &AppState,
    id: TaskId,
    url: &str,
    secret: &[u8],
) -> Result<(), String> {
    let task = match state.store.load(&id).await {
        Ok(Some(task)) => task.view,
        Ok(None) => return Err("the task expired".into()),
        Err(e) => return Err(e.to_string()),
    };
    let body = serde_json::to_vec(&task).map_err(|e| e.to_string())?;
    let res = state
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("x-taskforge-signature", signature(secret, &body))
        .header("x-taskforge-task-id", id.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", res.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_http_hosts_pass() {
        let allowed = vec!["127.0.0.1".to_owned(), "hooks.example".to_owned()];
        assert!(check_url("http://127.0.0.1:9000/hook", &allowed).is_ok());
        assert!(check_url("https://HOOKS.example/x", &allowed).is_ok());
        assert!(check_url("http://evil.example/", &allowed).is_err());
        assert!(check_url("ftp://127.0.0.1/", &allowed).is_err());
        assert!(check_url("not a url", &allowed).is_err());
        assert!(check_url("http://127.0.0.1/", &[]).is_err());
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
