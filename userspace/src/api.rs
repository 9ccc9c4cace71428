//! The HTTP/JSON API on the agent's Unix socket (routes, types and codes in
//! `lanlink_api`).
//!
//! Nothing a client sends may fail a handler other than with an
//! [`ApiError`]: bodies that do not decode answer code 6 (not JSON) or 7
//! (JSON, but not a valid request: a reserved DHCP option code, a value that
//! is not hex, a CIDR with host bits…), never a panic or a bare 4xx text.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{FromRequest, Request, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use lanlink_api::{ApiError, AttachmentRequest, GcRequest, codes, routes};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentError, Kernel, Node};

struct Failure(ApiError);

impl From<AgentError> for Failure {
    fn from(e: AgentError) -> Self {
        tracing::warn!(error = %e, code = e.code(), "request failed");
        Failure(e.to_api())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = match self.0.code {
            codes::INVALID_CONFIG | codes::DECODE | codes::INVALID_ENV => StatusCode::BAD_REQUEST,
            codes::TRY_AGAIN_LATER => StatusCode::SERVICE_UNAVAILABLE,
            codes::CHECK_FAILED => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(self.0)).into_response()
    }
}

/// A JSON request body whose rejection is an [`ApiError`]: code 7 when the
/// JSON is well-formed but not a valid request (the validated types of
/// `lanlink_api` refuse it), code 6 otherwise.
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                let code = match &rejection {
                    JsonRejection::JsonDataError(_) => codes::INVALID_CONFIG,
                    _ => codes::DECODE,
                };
                let details = std::error::Error::source(&rejection)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                tracing::warn!(error = %rejection, details, code, "request refused");
                Err(Failure(ApiError {
                    code,
                    msg: rejection.body_text(),
                    details,
                }))
            }
        }
    }
}

type AppState<K> = State<Arc<Agent<K>>>;

async fn add<K: Kernel>(
    State(a): AppState<K>,
    Body(req): Body<AttachmentRequest>,
) -> Result<Response, Failure> {
    Ok(Json(a.add(req).await?).into_response())
}

async fn del<K: Kernel>(
    State(a): AppState<K>,
    Body(req): Body<AttachmentRequest>,
) -> Result<Response, Failure> {
    a.del(req).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

async fn check<K: Kernel>(
    State(a): AppState<K>,
    Body(req): Body<AttachmentRequest>,
) -> Result<Response, Failure> {
    Ok(Json(a.check(req).await?).into_response())
}

async fn gc<K: Kernel>(
    State(a): AppState<K>,
    Body(req): Body<GcRequest>,
) -> Result<Response, Failure> {
    Ok(Json(a.gc(req).await?).into_response())
}

async fn status<K: Kernel>(State(a): AppState<K>) -> Response {
    Json(a.status()).into_response()
}

async fn endpoints<K: Kernel>(State(a): AppState<K>) -> Response {
    Json(a.endpoints()).into_response()
}

async fn leases<K: Kernel>(State(a): AppState<K>) -> Response {
    Json(a.leases()).into_response()
}

/// The DHCP client's counters: messages sent and received, and lease
/// events (acquired, renewed, rebound, released, expired, nak, declined,
/// failures).
async fn dhcp_stats(State(a): AppState<Node>) -> Response {
    Json(a.dhcp().stats()).into_response()
}

async fn stats(State(a): AppState<Node>) -> Result<Response, Failure> {
    let stats = a
        .with_dataplane(|dp| dp.stats())
        .map_err(AgentError::from)?;
    Ok(Json(crate::cli::stats_rows(&stats)).into_response())
}

async fn flows(State(a): AppState<Node>) -> Result<Response, Failure> {
    let pin_dir = a.with_dataplane(|dp| dp.config().pin_dir.clone());
    // A walk of up to 65,536 entries: off the async workers.
    let flows = tokio::task::spawn_blocking(move || crate::cli::pinned_flows(&pin_dir))
        .await
        .map_err(|e| {
            Failure(ApiError {
                code: codes::INTERNAL,
                msg: "reading the flow map panicked".into(),
                details: e.to_string(),
            })
        })?
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot read the flow map");
            Failure(ApiError {
                code: codes::DATAPLANE,
                msg: e.to_string(),
                details: std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            })
        })?;
    Ok(Json(flows).into_response())
}

/// The routes that only need an [`Agent`], whatever its kernel: the CNI
/// verbs, status, endpoints and leases.
fn agent_routes<K: Kernel>() -> Router<Arc<Agent<K>>> {
    Router::new()
        .route(routes::CNI_ADD, post(add::<K>))
        .route(routes::CNI_DEL, post(del::<K>))
        .route(routes::CNI_CHECK, post(check::<K>))
        .route(routes::CNI_GC, post(gc::<K>))
        .route(routes::STATUS, get(status::<K>))
        .route(routes::ENDPOINTS, get(endpoints::<K>))
        .route(routes::LEASES, get(leases::<K>))
}

/// The API's routes.
pub fn router(agent: Arc<Agent>) -> Router {
    agent_routes::<Node>()
        .route(routes::DHCP, get(dhcp_stats))
        .route(routes::STATS, get(stats))
        .route(routes::FLOWS, get(flows))
        .route(routes::METRICS, get(crate::metrics::handler))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(agent)
}

/// Binds the socket (removing a stale one first, mode 0660) and serves until
/// `shutdown` fires; the socket file is removed on the way out.
pub async fn serve(
    agent: Arc<Agent>,
    socket: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("remove stale socket {}", socket.display()));
        }
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "serving the API");
    let _cleanup = RemoveOnDrop(socket.to_path_buf());
    axum::serve(listener, router(agent))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serve the API")
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body as HttpBody, http::Request as HttpRequest};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::agent::fakes::{TestAgent, request};

    /// Sends `body` to `route` of the API over `t`'s agent; the status and
    /// the JSON answer.
    async fn call(
        t: &TestAgent,
        method: &str,
        route: &str,
        body: String,
    ) -> (StatusCode, serde_json::Value) {
        let app = agent_routes().with_state(Arc::clone(&t.agent));
        let req = HttpRequest::builder()
            .method(method)
            .uri(route)
            .header("content-type", "application/json")
            .body(HttpBody::from(body))
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn add_body(send_options: serde_json::Value) -> String {
        let mut req = serde_json::to_value(request("c1", "p")).unwrap();
        req["config"]["dhcp"]["sendOptions"] = send_options;
        req.to_string()
    }

    #[tokio::test]
    async fn bad_send_options_are_refused_with_code_7_before_anything_is_made() {
        let t = TestAgent::start().await;
        for option in [
            serde_json::json!({"code": 60, "value": "0x1é1"}),
            serde_json::json!({"code": 60, "value": "0xé1"}),
            serde_json::json!({"code": 60, "value": "0xéé"}),
            serde_json::json!({"code": 60, "value": "0x+f"}),
        ]
        .into_iter()
        .chain(
            [12, 50, 52, 53, 54, 55, 57, 61, 0, 255, 256]
                .map(|code| serde_json::json!({"code": code, "value": "x"})),
        ) {
            let (status, body) = call(
                &t,
                "POST",
                routes::CNI_ADD,
                add_body(serde_json::json!([option])),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{option}: {body}");
            assert_eq!(body["code"], codes::INVALID_CONFIG, "{option}: {body}");
        }
        assert!(t.world().calls.is_empty(), "{:?}", t.world().calls);
        // A valid option goes through.
        let ok = serde_json::json!([{"code": 60, "value": "0x0a0B"}]);
        let (status, body) = call(&t, "POST", routes::CNI_ADD, add_body(ok)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_is_a_decode_error() {
        let t = TestAgent::start().await;
        let (status, body) = call(&t, "POST", routes::CNI_DEL, "{\"containerId".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], codes::DECODE);
    }

    #[tokio::test]
    async fn status_reports_not_ready_until_readopted() {
        let t = TestAgent::new_with(|_| {});
        let (status, body) = call(&t, "GET", routes::STATUS, String::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["ready"], false);
        assert!(body["reason"].as_str().unwrap().contains("re-adopting"));
        t.agent.readopt().await;
        let (_, body) = call(&t, "GET", routes::STATUS, String::new()).await;
        assert_eq!(body["ready"], true, "{body}");
    }
}
