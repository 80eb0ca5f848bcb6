//! The router and its middleware: access tokens and per-client limits on the API, safe response
//! headers, `Connection: close` on refusals, request timeout, body limit, caught panics, request
//! metrics and the embedded page.
//!
//! Routes are a fixed list; any other path is 404. Nothing reads from disk: the page's three files
//! are compiled into the binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api;
use crate::error::ApiError;
use crate::limits::ClientId;
use crate::state::AppState;

/// The page's Content-Security-Policy: no inline script or style, no other origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The peer address of a connection, put into every request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// Builds the service's router.
pub fn router(state: Arc<AppState>, request_timeout: Duration, cors_origins: &[String]) -> Result<Router, crate::Error> {
    let protected = Router::new()
        .route("/v1/models", get(api::models))
        .route("/v1/models/{name}", get(api::model))
        .route("/v1/models/{name}/predict", post(api::predict))
        .route("/metrics", get(api::metrics))
        .route_layer(from_fn_with_state(state.clone(), guard));
    let metrics = state.metrics.clone();
    let mut app = Router::new()
        .route("/", get(|| asset(INDEX_HTML, "text/html; charset=utf-8")))
        .route("/app.js", get(|| asset(APP_JS, "text/javascript; charset=utf-8")))
        .route("/style.css", get(|| asset(STYLE_CSS, "text/css; charset=utf-8")))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .merge(protected)
        .fallback(api::not_found)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(CatchPanicLayer::custom(move |_: Box<dyn std::any::Any + Send>| {
            metrics.panic();
            ApiError::internal("the request failed (a panic was caught; the service goes on)").into_response()
        }))
        .layer(from_fn_with_state(request_timeout, time_limit))
        .layer(from_fn_with_state(state, record))
        .layer(from_fn(security_headers))
        .layer(from_fn(close_after_refusal));
    if !cors_origins.is_empty() {
        let origins = cors_origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| crate::Error::Config(format!("--cors-origin {o:?} is not a valid origin")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600));
        app = app.layer(cors);
    }
    Ok(app)
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Counts every answer by route (the route pattern, never the raw path) and status.
async fn record(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    app.metrics.request(&route, resp.status().as_u16(), start.elapsed());
    resp
}

/// Safe headers on every answer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    ];
    for (name, value) in set {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Answers 408 (`timeout`) when a request takes longer than `--request-timeout-s` from its headers
/// to its answer (a slow body, most often); the handler is dropped.
async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {} s (--request-timeout-s); send the body faster", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Whether an answer refuses the request (401, 408, 413, 429, 503): it may come before the body was read.
pub fn is_refusal(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 408 | 413 | 429 | 503)
}

/// Refusals carry `Connection: close`: the server then drains what the client still sends and closes
/// gracefully ([`crate::linger`]), so an uploading client reads the status and Retry-After.
async fn close_after_refusal(req: Request, next: Next) -> Response {
    let version = req.version();
    let mut resp = next.run(req).await;
    if is_refusal(resp.status()) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        // To an HTTP/1.0 keep-alive request hyper appends `keep-alive` to a 1.1 answer's Connection
        // header (ab then reuses the closing connection); a 1.0 answer keeps `close` alone.
        if version == axum::http::Version::HTTP_10 {
            *resp.version_mut() = version;
        }
    }
    resp
}

/// Access tokens and per-client limits for the API and `/metrics`.
///
/// The client is the presented valid token, or else the peer's IP address. Limits are checked
/// first, so guessing tokens is rate-limited per address too.
async fn guard(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let auth = req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    let token = auth.and_then(|v| app.tokens.verify_header(v));
    let id = match (token, req.extensions().get::<Peer>()) {
        (Some(i), _) => ClientId::Token(i),
        (None, Some(p)) => ClientId::Ip(p.0.ip()),
        (None, None) => ClientId::Ip(std::net::Ipv4Addr::UNSPECIFIED.into()),
    };
    let _slot = match app.limiter.admit(id) {
        Ok(g) => g,
        Err(r) => {
            let e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("too many requests from {id} ({r:?}); retry later"));
            return ApiError { retry_after: Some(r.retry_after()), ..e }.into_response();
        }
    };
    if !app.tokens.is_empty() && token.is_none() {
        let (code, msg) = match auth {
            None => ("missing_token", "this endpoint needs `Authorization: Bearer <token>`"),
            Some(_) => ("invalid_token", "the access token is not valid"),
        };
        let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, code, msg).into_response();
        let challenge = if auth.is_some() { "Bearer error=\"invalid_token\"" } else { "Bearer" };
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        return resp;
    }
    next.run(req).await
}
