//! The HTTP routes: OpenAI's chat and text completions (whole or streamed as server-sent
//! events), the model list, `/health` and `/metrics`, behind the API key and CORS.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use mate_protocol::{ApiCall, ApiEvent, ApiOptions, GenerationStats};
use serde_json::{json, Value};
use subtle::ConstantTimeEq as _;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::{
    calls::{Call, Calls},
    request::{ChatRequest, CompletionRequest, Generation},
    response::{self, Delta, Meta, SSE_DONE},
    ApiError,
};

/// The worker's figures for its heartbeats.
#[derive(Debug, Default)]
pub struct Stats {
    pub address: Mutex<String>,
    pub connections: AtomicU32,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub calls: Arc<Calls>,
    pub options: Arc<ApiOptions>,
    /// When the worker started (Unix seconds): the model's `created`.
    pub created: u64,
    pub stats: Arc<Stats>,
}

/// How long `/health` and `/metrics` wait for the supervisor.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// `Retry-After` when the supervisor does not answer at all.
const RETRY_S: u32 = 2;

pub fn router(shared: Shared) -> Router {
    let cors = cors(&shared.options.cors_origins);
    let mut app = Router::new();
    // The `/v1` prefix is optional, as with llama-server: front ends differ in what they
    // append to the base URL they are given.
    for prefix in ["/v1", ""] {
        app = app
            .route(&format!("{prefix}/chat/completions"), post(chat))
            .route(&format!("{prefix}/completions"), post(completions))
            .route(&format!("{prefix}/models"), get(models));
    }
    let app = app
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), guard));
    let app = match cors {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(shared)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(Any)
            .max_age(Duration::from_secs(600)),
    )
}

/// The API key (every route but `/health`, which monitors and front ends poll before they
/// are configured, as llama-server's), and the request counters.
async fn guard(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let stats = &shared.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let response = match &shared.options.api_key {
        Some(key) if request.uri().path() != "/health" && !authorized(request.headers(), key) => {
            error(&ApiError::unauthorized(), None)
        }
        _ => next.run(request).await,
    };
    if response.status().is_client_error() || response.status().is_server_error() {
        stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(key.as_bytes()))
}

/// An error in OpenAI's shape, with `Retry-After` when there is a time to suggest.
fn error(e: &ApiError, retry_after_s: Option<u32>) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        e.to_json(),
    )
        .into_response();
    if let Some(s) = retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    error(&ApiError::not_found(request.uri().path()), None)
}

/// The request body, at most `max_body_bytes`, within the request timeout.
async fn read_body(shared: &Shared, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    let limit = shared.options.max_body_bytes as usize;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(error(&ApiError::too_large(limit), None));
    }
    let timeout = Duration::from_millis(u64::from(shared.options.request_timeout_ms));
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes.to_vec()),
        Ok(Err(e)) if e.to_string().contains("length limit") => {
            Err(error(&ApiError::too_large(limit), None))
        }
        Ok(Err(e)) => Err(error(
            &ApiError::malformed(format!("cannot read the request body: {e}")),
            None,
        )),
        Err(_) => Err(error(
            &ApiError {
                status: 408,
                kind: "invalid_request_error",
                message: format!(
                    "the request body did not arrive within {} ms",
                    shared.options.request_timeout_ms
                ),
                param: None,
                code: Some("request_timeout"),
            },
            None,
        )),
    }
}

/// Which endpoint a generation answers, for the shape of its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Text,
}

async fn chat(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let parse = |body: &[u8], defaults: &_| ChatRequest::parse(body)?.generation(defaults);
    serve_generation(shared, headers, body, parse, Endpoint::Chat).await
}

async fn completions(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let parse = |body: &[u8], defaults: &_| CompletionRequest::parse(body)?.generation(defaults);
    serve_generation(shared, headers, body, parse, Endpoint::Text).await
}

/// Reads and checks the body (`parse` it over the `[chat]` defaults), then generates.
async fn serve_generation(
    shared: Shared,
    headers: HeaderMap,
    body: Body,
    parse: impl FnOnce(&[u8], &mate_protocol::Sampling) -> Result<Generation, ApiError>,
    endpoint: Endpoint,
) -> Response {
    let body = match read_body(&shared, &headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match parse(&body, &shared.options.sampling) {
        Ok(generation) => generate(shared, generation, endpoint).await,
        Err(e) => error(&e, None),
    }
}

fn gone() -> Response {
    error(
        &ApiError::unavailable("mate's supervisor is not answering; retry shortly"),
        Some(RETRY_S),
    )
}

fn failed(status: u16, message: String, retry_after_s: u32) -> Response {
    let e = match status {
        // The one request the LLM refuses as such: more than its context holds.
        400 => ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::malformed(message)
        },
        429 => ApiError::queue_full(message),
        503 => ApiError::unavailable(message),
        _ => ApiError {
            status,
            kind: "server_error",
            message,
            param: None,
            code: None,
        },
    };
    error(&e, (retry_after_s > 0).then_some(retry_after_s))
}

async fn generate(shared: Shared, generation: Generation, endpoint: Endpoint) -> Response {
    let Generation {
        input,
        sampling,
        stream,
        include_usage,
    } = generation;
    let Some(mut call) = shared.calls.start(|id| ApiCall::Generate {
        id,
        input,
        sampling,
    }) else {
        return gone();
    };
    let meta = Meta {
        id: match endpoint {
            Endpoint::Chat => format!("chatcmpl-{:x}-{}", shared.created, call.id()),
            Endpoint::Text => format!("cmpl-{:x}-{}", shared.created, call.id()),
        },
        created: unix_now(),
        model: shared.options.model.clone(),
    };
    // The first answer decides the status: a full queue or a failed model is an HTTP error,
    // anything else starts the reply.
    let first = match call.next().await {
        None => return gone(),
        Some(ApiEvent::Failed {
            status,
            message,
            retry_after_s,
        }) => return failed(status, message, retry_after_s),
        Some(first) => first,
    };
    if stream {
        return sse(Sse {
            call,
            meta,
            endpoint,
            include_usage,
            pending: VecDeque::new(),
            first: Some(first),
            started: false,
            ended: false,
        });
    }
    let mut text = String::new();
    let mut event = Some(first);
    loop {
        match event {
            None => return gone(),
            Some(ApiEvent::Chunk { text: t }) => text.push_str(&t),
            Some(ApiEvent::Done { stats }) => {
                let value = match endpoint {
                    Endpoint::Chat => response::chat_completion(&meta, &text, &stats),
                    Endpoint::Text => {
                        response::text_completion(&meta, &text, Some(&stats.stop), Some(&stats))
                    }
                };
                return json_response(StatusCode::OK, &value);
            }
            Some(ApiEvent::Failed {
                status,
                message,
                retry_after_s,
            }) => return failed(status, message, retry_after_s),
            Some(_) => {}
        }
        event = call.next().await;
    }
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A streamed reply: the call's events become `data:` lines. Dropping it (the client went
/// away) drops the call, which cancels the generation.
struct Sse {
    call: Call,
    meta: Meta,
    endpoint: Endpoint,
    include_usage: bool,
    pending: VecDeque<String>,
    /// The answer that decided the status, not sent yet.
    first: Option<ApiEvent>,
    /// The chat role chunk went out.
    started: bool,
    ended: bool,
}

impl Sse {
    /// The lines one event becomes.
    fn push(&mut self, event: Option<ApiEvent>) {
        if self.endpoint == Endpoint::Chat && !self.started {
            self.started = true;
            let role = response::chat_chunk(&self.meta, Delta::Role);
            self.pending.push_back(response::sse(&role));
        }
        match event {
            Some(ApiEvent::Queued { ahead }) => self
                .pending
                .push_back(format!(": waiting for the model, {ahead} ahead\n\n")),
            Some(ApiEvent::Resumed { streamed_chars }) => self.pending.push_back(format!(
                ": the model restarted; the reply goes on after {streamed_chars} characters\n\n"
            )),
            Some(ApiEvent::Chunk { text }) if !text.is_empty() => {
                let chunk = match self.endpoint {
                    Endpoint::Chat => response::chat_chunk(&self.meta, Delta::Text(&text)),
                    Endpoint::Text => response::text_completion(&self.meta, &text, None, None),
                };
                self.pending.push_back(response::sse(&chunk));
            }
            Some(ApiEvent::Done { stats }) => self.finish(&stats),
            Some(ApiEvent::Failed { message, .. }) => self.fail(message),
            None => self.fail("mate's supervisor went away before the reply was complete".into()),
            Some(_) => {}
        }
    }

    fn finish(&mut self, stats: &GenerationStats) {
        let (last, object) = match self.endpoint {
            Endpoint::Chat => (
                response::chat_chunk(&self.meta, Delta::Finish(&stats.stop)),
                "chat.completion.chunk",
            ),
            Endpoint::Text => (
                response::text_completion(&self.meta, "", Some(&stats.stop), None),
                "text_completion",
            ),
        };
        self.pending.push_back(response::sse(&last));
        if self.include_usage {
            let usage = response::usage_chunk(&self.meta, object, stats);
            self.pending.push_back(response::sse(&usage));
        }
        self.pending.push_back(SSE_DONE.into());
        self.ended = true;
    }

    /// An error after the stream started: OpenAI's error object as an event (the `openai`
    /// package raises it), and no `[DONE]`.
    fn fail(&mut self, message: String) {
        let e = ApiError {
            status: 500,
            kind: "server_error",
            message,
            param: None,
            code: None,
        };
        self.pending.push_back(format!("data: {}\n\n", e.to_json()));
        self.ended = true;
    }
}

fn sse(stream: Sse) -> Response {
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        loop {
            if let Some(line) = s.pending.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(line), s));
            }
            if s.ended {
                return None;
            }
            let event = match s.first.take() {
                Some(first) => Some(first),
                None => s.call.next().await,
            };
            s.push(event);
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn models(State(shared): State<Shared>) -> Response {
    json_response(
        StatusCode::OK,
        &response::models(&shared.options.model, shared.created),
    )
}

/// Asks the supervisor and waits a little for the one answer.
async fn ask(shared: &Shared, make: impl FnOnce(u64) -> ApiCall) -> Option<ApiEvent> {
    let mut call = shared.calls.start(make)?;
    tokio::time::timeout(ASK_TIMEOUT, call.next())
        .await
        .ok()
        .flatten()
}

/// 200 while the LLM serves, 503 with the reason while it loads, restarts or has failed
/// (llama-server's convention, so scripts and front ends can wait on it).
async fn health(State(shared): State<Shared>) -> Response {
    match ask(&shared, |id| ApiCall::Health { id }).await {
        Some(ApiEvent::Health(h)) if h.ok => json_response(
            StatusCode::OK,
            &json!({ "status": "ok", "profile": h.profile, "queued": h.queued }),
        ),
        Some(ApiEvent::Health(h)) => {
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({
                    "status": h.status,
                    "reason": h.reason,
                    "profile": h.profile,
                    "error": { "code": 503, "message": h.reason, "type": "unavailable_error" },
                }),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_S));
            response
        }
        _ => gone(),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    match ask(&shared, |id| ApiCall::Metrics { id }).await {
        Some(ApiEvent::Metrics { text }) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => gone(),
    }
}
