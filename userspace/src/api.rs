//! The HTTP/JSON API on the agent's Unix socket (routes in `lanlink_cni::api`).

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use lanlink_cni::api::{ApiError, AttachmentRequest, GcRequest, codes};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentError};

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

type AppState = State<Arc<Agent>>;

async fn add(State(a): AppState, Json(req): Json<AttachmentRequest>) -> Result<Response, Failure> {
    Ok(Json(a.add(req).await?).into_response())
}

async fn del(State(a): AppState, Json(req): Json<AttachmentRequest>) -> Result<Response, Failure> {
    a.del(req).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

async fn check(
    State(a): AppState,
    Json(req): Json<AttachmentRequest>,
) -> Result<Response, Failure> {
    Ok(Json(a.check(req).await?).into_response())
}

async fn gc(State(a): AppState, Json(req): Json<GcRequest>) -> Result<Response, Failure> {
    Ok(Json(a.gc(req).await?).into_response())
}

async fn status(State(a): AppState) -> Response {
    Json(a.status()).into_response()
}

async fn endpoints(State(a): AppState) -> Response {
    Json(a.endpoints()).into_response()
}

async fn leases(State(a): AppState) -> Response {
    Json(a.leases()).into_response()
}

/// The DHCP client's counters: messages sent and received, and lease
/// events (acquired, renewed, rebound, released, expired, nak, declined,
/// failures).
async fn dhcp_stats(State(a): AppState) -> Response {
    Json(a.dhcp().stats()).into_response()
}

async fn stats(State(a): AppState) -> Result<Response, Failure> {
    let stats = a
        .with_dataplane(|dp| dp.stats())
        .map_err(AgentError::from)?;
    Ok(Json(crate::cli::stats_rows(&stats)).into_response())
}

async fn flows(State(a): AppState) -> Result<Response, Failure> {
    let pin_dir = a.with_dataplane(|dp| dp.config().pin_dir.clone());
    let flows = crate::cli::pinned_flows(&pin_dir).map_err(|e| {
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

/// The API's routes.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/cni/add", post(add))
        .route("/v1/cni/del", post(del))
        .route("/v1/cni/check", post(check))
        .route("/v1/cni/gc", post(gc))
        .route("/v1/status", get(status))
        .route("/v1/endpoints", get(endpoints))
        .route("/v1/leases", get(leases))
        .route("/v1/dhcp", get(dhcp_stats))
        .route("/v1/stats", get(stats))
        .route("/v1/flows", get(flows))
        .route("/metrics", get(crate::metrics::handler))
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
