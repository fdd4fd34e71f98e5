//! The outermost layer: correlation ids in and out, API tokens on `/api`, problem+json for
//! every error (including poem's own 404/405), and HTTP metrics.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::MAX_BODY_BYTES;
use super::auth::{self, ApiTokens};
use super::problem::Problem;
use super::spec::AllowTable;
use crate::telemetry::{HttpLabels, Metrics, RouteLabels};

/// Header carrying the correlation id.
pub const CORRELATION_HEADER: &str = "X-Correlation-Id";
/// Optional header naming who issued a command (stored as the events' actor).
pub const ACTOR_HEADER: &str = "X-Actor";
const PROBLEM_JSON: &str = "application/problem+json";

/// Per-request facts the handlers need, put in the request extensions here.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The caller's `X-Correlation-Id` when valid, else a new UUID.
    pub correlation_id: String,
    /// The caller's `X-Actor` when valid, else `api`.
    pub actor: String,
}

/// Printable ASCII, 1–128 characters: safe to echo in a header, store and send over AMQP.
fn header_token(req: &Request, name: &str) -> Option<String> {
    let value = req.headers().get(name)?.to_str().ok()?.trim();
    let ok = (1..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| value.to_owned())
}

/// Wraps the API.
pub async fn around<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    metrics: Arc<Metrics>,
    allow: Arc<AllowTable>,
    tokens: Arc<ApiTokens>,
) -> poem::Result<Response> {
    let started = Instant::now();
    let correlation_id =
        header_token(&req, CORRELATION_HEADER).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let actor = header_token(&req, ACTOR_HEADER).unwrap_or_else(|| "api".to_owned());
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    req.extensions_mut().insert(RequestContext {
        correlation_id: correlation_id.clone(),
        actor,
    });
    // Checked before the body is read: an anonymous caller gets nothing but the 401.
    let refusal = auth::is_protected(&path)
        .then(|| {
            tokens
                .check(req.headers().get_all(header::AUTHORIZATION).iter())
                .err()
        })
        .flatten();
    let response = if let Some(refusal) = refusal {
        refusal.response()
    } else {
        match limit_body(&mut req).await {
            Err(refused) => refused,
            Ok(()) if let Some(name) = unreadable_header(&req) => Problem::new(
                400,
                "invalid-request",
                "Invalid request",
                format!("the {name} header must be visible ASCII"),
            )
            .into_json_response(),
            Ok(()) => match ep.call(req).await {
                Ok(r) => r.into_response(),
                Err(e) => e.into_response(),
            },
        }
    };
    let route = response
        .data::<poem_openapi::OperationId>()
        .map(|id| id.0.to_owned())
        .unwrap_or_else(|| "other".to_owned());
    // Documented JSON error bodies (readiness, projection health) stay as they are.
    let json_body = response
        .content_type()
        .is_some_and(|ct| ct.starts_with("application/json"));
    let mut response = if response.status().as_u16() >= 400 && !json_body {
        as_problem(response, &correlation_id).await
    } else {
        response
    };
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    // RFC 9110: a 405 lists the methods the resource answers.
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(methods) = allow.allow(&path)
        && let Ok(value) = HeaderValue::from_str(methods)
    {
        response.headers_mut().insert(header::ALLOW, value);
    }
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .http_duration
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Headers the API reads as text: a value that is not visible ASCII would otherwise be
/// dropped silently (poem-openapi skips values it cannot read), and a command would run
/// without the key or precondition its caller sent.
const TEXT_HEADERS: &[&str] = &["Idempotency-Key", "If-Match"];

fn unreadable_header(req: &Request) -> Option<&'static str> {
    TEXT_HEADERS.iter().copied().find(|name| {
        req.headers()
            .get_all(*name)
            .iter()
            .any(|v| v.to_str().is_err())
    })
}

/// Reads the body with a size cap (commands are small JSON documents): 413 past
/// [`MAX_BODY_BYTES`], whether or not the client declared a `Content-Length`.
async fn limit_body(req: &mut Request) -> Result<(), Response> {
    let too_large = || {
        Response::builder()
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .body(format!("request body exceeds {MAX_BODY_BYTES} bytes"))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    match req.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
        Ok(bytes) => {
            req.set_body(bytes);
            Ok(())
        }
        Err(poem::error::ReadBodyError::PayloadTooLarge) => Err(too_large()),
        Err(e) => Err(Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(format!("cannot read the request body: {e}"))),
    }
}

/// Makes an error response problem+json carrying the correlation id.
async fn as_problem(mut response: Response, correlation_id: &str) -> Response {
    let status = response.status();
    let is_problem = response
        .content_type()
        .is_some_and(|ct| ct.starts_with(PROBLEM_JSON));
    let body = response.take_body().into_bytes().await.unwrap_or_default();
    let mut problem = if is_problem {
        serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default()
    } else {
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        let detail = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        };
        let (slug, title) = generic(status);
        let p = Problem::new(status.as_u16(), slug, title, detail);
        serde_json::json!({
            "type": p.problem_type,
            "title": p.title,
            "status": p.status,
            "detail": p.detail,
        })
    };
    if let Some(obj) = problem.as_object_mut() {
        obj.insert("correlationId".into(), correlation_id.into());
    }
    let mut out = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, PROBLEM_JSON)
        .body(problem.to_string());
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

fn generic(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Payload too large"),
        s if s.is_client_error() => ("invalid-request", "Invalid request"),
        _ => ("internal-error", "Internal error"),
    }
}
