//! The HTTP/JSON API on the agent's Unix socket (routes, types and codes in
//! `lanlink_api`).
//!
//! Nothing a client sends may fail a handler other than with an
//! [`ApiError`]: bodies that do not decode answer code 6 (not JSON) or 7
//! (JSON, but not a valid request: a reserved DHCP option code, a value that
//! is not hex, a CIDR with host bits…), never a panic or a bare 4xx text.

mod peer;

use std::{
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, FromRequest, Request, State,
        rejection::{BytesRejection, FailedToBufferBody, JsonRejection},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use lanlink_api::{ApiError, AttachmentRequest, GcRequest, codes, routes};
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
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

/// The largest request body the API reads (a CNI request is a few KiB);
/// [`router`] refuses a larger one before buffering it whole.
const MAX_BODY: usize = 64 * 1024;

/// A JSON request body whose rejection is an [`ApiError`]: code 7 when the
/// JSON is well-formed but not a valid request (the validated types of
/// `lanlink_api` refuse it), code 6 otherwise; a body over [`MAX_BODY`] is
/// code 6 with status 413.
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                let code = match &rejection {
                    JsonRejection::JsonDataError(_) => codes::INVALID_CONFIG,
                    _ => codes::DECODE,
                };
                let too_large = matches!(
                    &rejection,
                    JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(
                        FailedToBufferBody::LengthLimitError(_)
                    ))
                );
                let details = std::error::Error::source(&rejection)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                tracing::warn!(error = %rejection, details, code, "request refused");
                let msg = if too_large {
                    format!("the request body is larger than {MAX_BODY} bytes")
                } else {
                    rejection.body_text()
                };
                let mut response = Failure(ApiError { code, msg, details }).into_response();
                if too_large {
                    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                }
                Err(response)
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

/// `GET /v1/monitor`: the frames the dataplane drops, one JSON line each,
/// until the client goes away or the agent stops ([`crate::monitor`]).
async fn monitor(State(a): AppState<Node>) -> Result<Response, Failure> {
    let pin_dir = a.with_dataplane(|dp| dp.config().pin_dir.clone());
    // Weak: the reader outlives this request, and must not keep the agent.
    let agent = Arc::downgrade(&a);
    let endpoints = move || agent.upgrade().map(|a| a.endpoints()).unwrap_or_default();
    let subscription = crate::monitor::agent_monitor()
        .subscribe_pinned(&pin_dir, endpoints)
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot start a monitor stream");
            let code = match e {
                crate::monitor::MonitorError::Stopping => codes::TRY_AGAIN_LATER,
                _ => codes::DATAPLANE,
            };
            Failure(ApiError {
                code,
                msg: e.to_string(),
                details: std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            })
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, routes::NDJSON)],
        subscription.into_body(),
    )
        .into_response())
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
        .route(routes::MONITOR, get(monitor))
        .route(routes::METRICS, get(crate::metrics::handler))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(agent)
}

/// The routes of [`router`] that take a body, with its body limit and the
/// same decoding ([`Body`]), but handlers that only answer `{}`: for fuzzing
/// the request decoding without an agent (`fuzz/`), not an API.
#[doc(hidden)]
pub fn decode_only_router() -> Router {
    async fn attachment(Body(_): Body<AttachmentRequest>) -> Response {
        Json(serde_json::json!({})).into_response()
    }
    async fn gc(Body(_): Body<GcRequest>) -> Response {
        Json(serde_json::json!({})).into_response()
    }
    Router::new()
        .route(routes::CNI_ADD, post(attachment))
        .route(routes::CNI_DEL, post(attachment))
        .route(routes::CNI_CHECK, post(attachment))
        .route(routes::CNI_GC, post(gc))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Binds the socket root-only (mode 0600, replacing a stale one) and serves
/// until `shutdown` fires, to peers that are root or the agent's own user
/// ([`peer`]); the socket file is removed on the way out.
pub async fn serve(
    agent: Arc<Agent>,
    socket: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The directory may be shared (the plugin's `socketPath`): created if
    // missing, its mode left alone; the socket's own mode is what guards it.
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let (listener, _cleanup) = bind(socket)?;
    tracing::info!(socket = %socket.display(), "serving the API");
    axum::serve(peer::PeerChecked::new(listener), router(agent))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serve the API")
}

/// Binds `socket`, removing a stale one first; the file is mode 0600 from
/// its first instant ([`bind_0600`]) and removed when the guard drops.
fn bind(socket: &Path) -> anyhow::Result<(UnixListener, RemoveOnDrop)> {
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("remove stale socket {}", socket.display()));
        }
    }
    let listener = bind_0600(socket).with_context(|| format!("bind {}", socket.display()))?;
    let cleanup =
        RemoveOnDrop::new(socket).with_context(|| format!("open {}", socket.display()))?;
    // Exactly 0600 whatever the umask took away from it at bind.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", socket.display()))?;
    Ok((listener, cleanup))
}

/// A listening socket at `path` whose file is created with mode 0600 (less
/// what the umask takes), so it is never more open, not even between
/// `bind()` and a `chmod`: Linux gives a Unix socket's file the mode of the
/// socket's own inode masked by the umask (`unix_bind_bsd`,
/// net/unix/af_unix.c), and that inode is set by `fchmod` before `bind()`.
/// Setting a umask instead would race the agent's other threads, as it is
/// one per process.
fn bind_0600(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::{
        socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr},
        stat::{self, Mode},
    };
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    stat::fchmod(fd.as_raw_fd(), Mode::S_IRUSR | Mode::S_IWUSR)?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    // tokio's own `UnixListener::bind` backlog.
    socket::listen(&fd, Backlog::new(1024)?)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

/// Removes the socket file on drop if it is still the one this agent bound:
/// an agent started meanwhile (a rolling update) keeps its own. It holds the
/// file open (`O_PATH`, as a socket cannot be opened for I/O), so its inode
/// number cannot be reused by a newer socket and comparing device and inode
/// is exact.
struct RemoveOnDrop {
    path: PathBuf,
    file: std::fs::File,
}

impl RemoveOnDrop {
    fn new(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let id = |m: std::fs::Metadata| (m.dev(), m.ino());
        let ours = match (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(held), Ok(now)) => id(held) == id(now),
            _ => false,
        };
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt as _;

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
        send(
            agent_routes().with_state(Arc::clone(&t.agent)),
            method,
            route,
            body,
        )
        .await
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

    /// Sends `body` to `route` of `app` with POST; the status and the JSON
    /// answer.
    async fn post(app: Router, route: &str, body: String) -> (StatusCode, serde_json::Value) {
        send(app, "POST", route, body).await
    }

    /// Sends `body` to `route` of `app` with `method`; the status and the
    /// JSON answer.
    async fn send(
        app: Router,
        method: &str,
        route: &str,
        body: String,
    ) -> (StatusCode, serde_json::Value) {
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

    /// `body` padded with trailing white space to `len` bytes: still the
    /// same valid request, only longer.
    fn padded(mut body: String, len: usize) -> String {
        body.push_str(&" ".repeat(len - body.len()));
        body
    }

    #[tokio::test]
    async fn a_body_over_64_kib_answers_413_with_an_api_error_and_a_normal_add_goes_on() {
        let t = TestAgent::start().await;
        // The limit as `router` sets it.
        let app = || {
            agent_routes()
                .layer(DefaultBodyLimit::max(MAX_BODY))
                .with_state(Arc::clone(&t.agent))
        };
        let ok = serde_json::json!([{"code": 60, "value": "0x0a0B"}]);
        let (status, body) = post(
            app(),
            routes::CNI_ADD,
            padded(add_body(ok.clone()), 100 * 1024),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["code"], codes::DECODE, "{body}");
        assert!(body["msg"].as_str().unwrap().contains("65536"), "{body}");
        assert!(t.world().calls.is_empty(), "{:?}", t.world().calls);
        let (status, body) = post(app(), routes::CNI_ADD, padded(add_body(ok), 60 * 1024)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_socket_is_0600_from_bind_on_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanlink.sock");
        // Straight from bind(), before any chmod: 0777 less the umask
        // without the fchmod.
        let stale = bind_0600(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        drop(stale);
        let (listener, _cleanup) = bind(&path).unwrap();
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        assert_eq!(mode(&path), 0o600);
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(
            server.peer_cred().unwrap().uid(),
            nix::unistd::geteuid().as_raw()
        );
    }

    #[tokio::test]
    async fn the_socket_is_removed_on_drop_unless_a_newer_agent_replaced_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanlink.sock");
        let (_listener, cleanup) = bind(&path).unwrap();
        drop(cleanup);
        assert!(std::fs::symlink_metadata(&path).is_err(), "removed");
        let (_old, old_cleanup) = bind(&path).unwrap();
        let (_new, new_cleanup) = bind(&path).unwrap();
        drop(old_cleanup);
        assert!(
            std::fs::symlink_metadata(&path).is_ok(),
            "the newer socket stays"
        );
        drop(new_cleanup);
        assert!(std::fs::symlink_metadata(&path).is_err(), "removed");
    }
}
