//! The HTTP API handlers: prediction, model metadata, health, readiness, metrics and the page.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use infer::ClassProb;
use preprocess::Tta;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::batcher::{Job, JobError};
use crate::error::ApiError;
use crate::model::{Backend, BackendError};
use crate::state::{AppState, ServedModel};

/// Top-k when the request does not say.
pub const DEFAULT_TOP_K: usize = 5;

/// The answer of `POST /v1/models/{name}/predict`.
#[derive(Debug, Serialize)]
pub struct PredictResponse {
    /// The model's name.
    pub model: String,
    /// SHA-256 of its checkpoint file.
    pub checkpoint_sha256: String,
    /// Test-time augmentation applied (`none`, `flip`, `five-crop`): `?tta=`, else the model's default.
    pub tta: Tta,
    /// One entry per image, in request order.
    pub predictions: Vec<ImagePrediction>,
    /// Where the time went, in milliseconds.
    pub timing_ms: Timing,
}

/// The top-k classes of one image.
#[derive(Debug, Serialize)]
pub struct ImagePrediction {
    /// The image's file name from the multipart part, or `"body"` for a raw body.
    pub image: String,
    /// Classes by decreasing probability: `index` (class id), `folder`, `name`, `prob`.
    pub top: Vec<ClassProb>,
}

/// Time spent per stage of one request, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Timing {
    /// Decoding and transforming the images (in parallel).
    pub decode: f64,
    /// Waiting in the model's queue for a batch.
    pub queue: f64,
    /// The forward pass of the batch the images ran in.
    pub forward: f64,
    /// From the request's arrival to the answer.
    pub total: f64,
    /// Images in that batch (this request's and others').
    pub batch_images: usize,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `POST /v1/models/{name}/predict[?top_k=K][&tta=none|flip|five-crop]`: the image as the raw body, or as multipart parts.
pub async fn predict(State(app): State<Arc<AppState>>, Path(name): Path<String>, RawQuery(query): RawQuery, req: Request) -> Response {
    let start = Instant::now();
    let Some(model) = app.models.get(&name) else {
        return ApiError::new(StatusCode::NOT_FOUND, "unknown_model", format!("no model is named {name:?}; GET /v1/models lists them"))
            .into_response();
    };
    let _slot = match app.inflight.clone().try_acquire_owned() {
        Ok(s) => s,
        Err(_) => return ApiError::overloaded("too many requests in flight; retry shortly", 1).into_response(),
    };
    let _counted = app.metrics.count_inflight();
    match predict_inner(&app, model, query.as_deref(), req, start).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn predict_inner(app: &AppState, model: &ServedModel, query: Option<&str>, req: Request, start: Instant) -> Result<PredictResponse, ApiError> {
    let classes = model.backend.info().num_classes;
    let k = top_k(query, classes)?;
    let tta = tta(query, model.backend.info().tta)?;
    let views = tta.views();
    let images = read_images(req, app.limits.max_body_bytes, app.limits.max_images).await?;
    // Each view is one image in the queue and the batcher (so every view runs in a padded pass and
    // the answer stays bit-exact whatever else shares the batch).
    let admitted = model.queue.admit(images.len() * views)?;
    let decode_start = Instant::now();
    let names: Vec<String> = images.iter().map(|(n, _)| n.clone()).collect();
    let input = prepare_all(app, &model.backend, images, tta).await?;
    let decode = decode_start.elapsed();
    let (tx, rx) = oneshot::channel();
    let row_k = if views == 1 { k } else { classes };
    model.queue.submit(Job { input, ks: vec![row_k; names.len() * views], admitted, enqueued: Instant::now(), reply: tx })?;
    let out = match rx.await {
        Ok(Ok(out)) => out,
        Ok(Err(JobError::Panicked)) => return Err(ApiError::internal("the forward pass failed (a panic was caught; the service goes on)")),
        Ok(Err(JobError::Failed(e))) => return Err(ApiError::internal(format!("the forward pass failed: {e}"))),
        Err(_) => return Err(ApiError::internal("the model's batcher stopped")),
    };
    let info = model.backend.info();
    Ok(PredictResponse {
        model: info.name.clone(),
        checkpoint_sha256: info.checkpoint_sha256.clone(),
        tta,
        predictions: names.into_iter().zip(average_views(out.top, views, k)).map(|(image, top)| ImagePrediction { image, top }).collect(),
        timing_ms: Timing {
            decode: ms(decode),
            queue: ms(out.queued),
            forward: ms(out.forward),
            total: ms(start.elapsed()),
            batch_images: out.batch_images,
        },
    })
}

/// The `top_k` query parameter (default [`DEFAULT_TOP_K`], at most the number of classes).
fn top_k(query: Option<&str>, classes: usize) -> Result<usize, ApiError> {
    let mut k = DEFAULT_TOP_K;
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("top_k=") {
            k = v
                .parse()
                .ok()
                .filter(|&k| k >= 1)
                .ok_or_else(|| ApiError::bad_request("bad_top_k", format!("top_k must be a whole number ≥ 1, not {v:?}")))?;
        }
    }
    Ok(k.min(classes))
}

/// The `tta` query parameter (`none`, `flip`, `five-crop`), else `default`.
fn tta(query: Option<&str>, default: Tta) -> Result<Tta, ApiError> {
    let mut t = default;
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("tta=") {
            t = v.parse().map_err(|e: String| ApiError::bad_request("bad_tta", e))?;
        }
    }
    Ok(t)
}

/// Per image, the top `k` of the probabilities averaged over its `views` consecutive rows (each
/// row holds every class); one view is passed through.
fn average_views(rows: Vec<Vec<ClassProb>>, views: usize, k: usize) -> Vec<Vec<ClassProb>> {
    if views == 1 {
        return rows;
    }
    rows.chunks(views)
        .map(|image| {
            let mut classes: Vec<ClassProb> = image[0].clone();
            classes.sort_by_key(|c| c.index);
            for c in &mut classes {
                c.prob = 0.0;
            }
            for view in image {
                for c in view {
                    if let Some(slot) = classes.get_mut(c.index) {
                        slot.prob += c.prob;
                    }
                }
            }
            for c in &mut classes {
                c.prob /= views as f32;
            }
            classes.sort_by(|a, b| b.prob.total_cmp(&a.prob).then(a.index.cmp(&b.index)));
            classes.truncate(k);
            classes
        })
        .collect()
}

/// The request's images as (name, bytes): the raw body, or every file part of a multipart body.
async fn read_images(req: Request, max_body: usize, max_images: usize) -> Result<Vec<(String, Bytes)>, ApiError> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(too_large(max_body));
    }
    let multipart = content_type(req.headers()).starts_with("multipart/form-data");
    if !multipart {
        let body = Bytes::from_request(req, &()).await.map_err(|e| body_error(e.status(), e.body_text(), max_body))?;
        if body.is_empty() {
            return Err(ApiError::bad_request("empty_body", "the request has no body: send an image as the body or as multipart file parts"));
        }
        return Ok(vec![("body".to_string(), body)]);
    }
    let mut form = Multipart::from_request(req, &()).await.map_err(|e| body_error(e.status(), e.body_text(), max_body))?;
    let mut out = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(body_error(e.status(), e.body_text(), max_body)),
        };
        let Some(name) = field.file_name().map(clean_name) else { continue };
        if out.len() == max_images {
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_images", format!("at most {max_images} images per request")));
        }
        let bytes = field.bytes().await.map_err(|e| body_error(e.status(), e.body_text(), max_body))?;
        out.push((name, bytes));
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("no_images", "the multipart body has no file part (use e.g. curl -F image=@photo.jpg)"));
    }
    Ok(out)
}

fn content_type(h: &HeaderMap) -> String {
    h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_ascii_lowercase()
}

fn too_large(max_body: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the request body exceeds the limit of {max_body} bytes"))
}

fn body_error(status: StatusCode, text: String, max_body: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(max_body)
    } else {
        ApiError::new(status, "bad_body", text)
    }
}

/// A client-supplied file name made safe to echo: printable characters only, at most 100.
fn clean_name(n: &str) -> String {
    let s: String = n.chars().filter(|c| !c.is_control()).take(100).collect();
    if s.is_empty() {
        "upload".into()
    } else {
        s
    }
}

/// Decodes and transforms every image on the decode pool, in parallel, and lays them end to end.
async fn prepare_all(app: &AppState, backend: &Arc<dyn Backend>, images: Vec<(String, Bytes)>, tta: Tta) -> Result<Vec<u8>, ApiError> {
    let mut pending = Vec::with_capacity(images.len());
    for (name, bytes) in images {
        let (tx, rx) = oneshot::channel();
        let b = backend.clone();
        app.decode_pool.spawn(move || {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| b.prepare(&bytes, &name, tta)));
            let _ = tx.send(r);
        });
        pending.push(rx);
    }
    let mut input = Vec::new();
    let mut first_error = None;
    for rx in pending {
        match rx.await {
            Ok(Ok(Ok(v))) => input.extend_from_slice(&v),
            Ok(Ok(Err(BackendError::BadImage(msg)))) => first_error = first_error.or(Some(ApiError::bad_request("bad_image", msg))),
            Ok(Ok(Err(BackendError::Failed(msg)))) => first_error = first_error.or(Some(ApiError::internal(msg))),
            Ok(Err(_)) | Err(_) => {
                app.metrics.panic();
                first_error = Some(ApiError::internal("decoding an image failed (a panic was caught; the service goes on)"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(input),
    }
}

/// `GET /v1/models`: every served model's metadata.
pub async fn models(State(app): State<Arc<AppState>>) -> Response {
    let list: Vec<_> = app.models.values().map(|m| m.backend.info().clone()).collect();
    Json(serde_json::json!({ "models": list })).into_response()
}

/// `GET /v1/models/{name}`: one model's metadata.
pub async fn model(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match app.models.get(&name) {
        Some(m) => Json(m.backend.info().clone()).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "unknown_model", format!("no model is named {name:?}")).into_response(),
    }
}

/// `GET /healthz`: the process is up; lists security warnings and the limits in effect.
pub async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({ "status": "ok", "warnings": app.warnings, "limits": app.effective })).into_response()
}

/// `GET /readyz`: 200 while accepting work, 503 while shutting down.
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.ready.load(Ordering::Relaxed) {
        Json(serde_json::json!({ "status": "ready", "models": app.models.keys().collect::<Vec<_>>() })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "draining" }))).into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let queues: Vec<(String, usize, usize)> = app.models.iter().map(|(n, m)| (n.clone(), m.queue.depth(), m.queue.admitted())).collect();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render(&queues)).into_response()
}

/// Any other path: 404 (nothing is ever read from disk).
pub async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path").into_response()
}
