//! A client of the agent's HTTP/JSON API over its Unix socket (routes in
//! [`crate::routes`]), used by the CNI plugin, the agent's CLI and tests.
//! Behind the `client` feature.
//!
//! The methods block: each call builds a current-thread tokio runtime, opens
//! one HTTP/1.1 connection (hyper), sends one request and closes. Called from
//! inside a tokio runtime (the agent's CLI), the request runs on a helper
//! thread instead, so blocking never panics; async code can also await the
//! `*_async` methods directly.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
/// The HTTP method and status in [`ClientError`], re-exported so callers
/// need no `hyper` dependency to match on them.
pub use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::routes;
use crate::types::MonitorLine;
use crate::types::{
    ApiError, AttachmentRequest, AttachmentResult, DhcpStats, EndpointInfo, FlowRow, GcRequest,
    GcResponse, LeaseInfo, StatsRow, StatusResponse,
};

/// How much of an undecodable error body is kept for the message.
const MAX_BODY_IN_ERROR: usize = 512;

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket (missing, refused, no permission).
    #[error("agent not reachable at {}: {source}", .path.display())]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why `connect` failed.
        #[source]
        source: io::Error,
    },
    /// The agent did not answer within the deadline.
    #[error("agent at {} did not answer {method} {route} within {}s", .path.display(), .after.as_secs_f32())]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The request method.
        method: Method,
        /// The request path.
        route: String,
        /// The deadline.
        after: Duration,
    },
    /// The HTTP exchange broke (the agent closed the connection, bad framing).
    #[error("HTTP exchange with the agent at {} failed: {source}", .path.display())]
    Http {
        /// The socket.
        path: PathBuf,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The agent answered an error ([`ApiError`] body).
    #[error("{}", .error.msg)]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The body, with the CNI code to report.
        error: ApiError,
    },
    /// The agent answered an error without an [`ApiError`] body (wrong route,
    /// an agent of another version).
    #[error("agent answered {method} {route} with {status}: {body}")]
    Status {
        /// The request method.
        method: Method,
        /// The request path.
        route: String,
        /// HTTP status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// A 2xx answer whose body is not the expected JSON.
    #[error("agent's answer to {method} {route} does not decode: {source}")]
    Decode {
        /// The request method.
        method: Method,
        /// The request path.
        route: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A 2xx answer that is not UTF-8 text (`/metrics`).
    #[error("agent's answer to GET {route} is not UTF-8")]
    NotText {
        /// The request path.
        route: String,
    },
    /// The request body could not be encoded.
    #[error("cannot encode the request for {route}: {source}")]
    Encode {
        /// The request path.
        route: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The route is not a valid request target.
    #[error("cannot build a request for {route:?}: {source}")]
    BadRoute {
        /// The request path.
        route: String,
        /// The HTTP error.
        #[source]
        source: hyper::http::Error,
    },
    /// The tokio runtime (or its helper thread) could not be set up.
    #[error("cannot start the client runtime: {source}")]
    Runtime {
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ClientError {
    /// Whether the agent could not be talked to at all (down, restarting,
    /// hung), as opposed to answering an error.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Http { .. }
        )
    }
}

/// A client of one agent socket. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentClient {
    socket_path: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    /// Deadline of every request but ADD.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Added to the DHCP timeout for ADD: veth, routes and maps take time too.
    pub const ADD_MARGIN: Duration = Duration::from_secs(10);

    /// A client of the agent listening on `socket_path`.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        AgentClient {
            socket_path: socket_path.into(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another deadline for requests.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The agent's socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The deadline for requests.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `POST /v1/cni/add`. The deadline is the DHCP timeout plus
    /// [`Self::ADD_MARGIN`], and at least the client's own.
    pub fn add(&self, req: &AttachmentRequest) -> Result<AttachmentResult, ClientError> {
        let dhcp = req
            .config
            .dhcp
            .as_ref()
            .map_or(Duration::ZERO, |d| Duration::from_millis(d.timeout_ms));
        let client = self
            .clone()
            .with_timeout(self.timeout.max(dhcp + Self::ADD_MARGIN));
        client.post_json(routes::CNI_ADD, req)
    }

    /// `POST /v1/cni/del`. The agent answers success for an attachment it
    /// does not know (DEL is idempotent), so every error is a real one.
    pub fn del(&self, req: &AttachmentRequest) -> Result<(), ClientError> {
        self.post_json::<_, serde::de::IgnoredAny>(routes::CNI_DEL, req)
            .map(|_| ())
    }

    /// `POST /v1/cni/check`. An attachment the agent does not know is a
    /// [`ClientError::Api`] with [`codes::CHECK_FAILED`](crate::codes::CHECK_FAILED).
    pub fn check(&self, req: &AttachmentRequest) -> Result<AttachmentResult, ClientError> {
        self.post_json(routes::CNI_CHECK, req)
    }

    /// `POST /v1/cni/gc`.
    pub fn gc(&self, req: &GcRequest) -> Result<GcResponse, ClientError> {
        self.post_json(routes::CNI_GC, req)
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get_json(routes::STATUS)
    }

    /// `GET /v1/endpoints`.
    pub fn endpoints(&self) -> Result<Vec<EndpointInfo>, ClientError> {
        self.get_json(routes::ENDPOINTS)
    }

    /// `GET /v1/leases`.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>, ClientError> {
        self.get_json(routes::LEASES)
    }

    /// `GET /v1/stats`.
    pub fn stats(&self) -> Result<Vec<StatsRow>, ClientError> {
        self.get_json(routes::STATS)
    }

    /// `GET /v1/flows`.
    pub fn flows(&self) -> Result<Vec<FlowRow>, ClientError> {
        self.get_json(routes::FLOWS)
    }

    /// `GET /v1/dhcp`.
    pub fn dhcp(&self) -> Result<DhcpStats, ClientError> {
        self.get_json(routes::DHCP)
    }

    /// `GET /metrics`: Prometheus text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        self.get_text(routes::METRICS)
    }

    /// `GET route`, decoding a JSON answer.
    pub fn get_json<T: DeserializeOwned + Send>(&self, route: &str) -> Result<T, ClientError> {
        self.block_on(self.get_json_async(route))
    }

    /// `POST route` with a JSON body, decoding a JSON answer (an empty body
    /// decodes as `null`).
    pub fn post_json<B: Serialize + Sync, T: DeserializeOwned + Send>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.block_on(self.post_json_async(route, body))
    }

    /// `GET route`, returning the answer as text.
    pub fn get_text(&self, route: &str) -> Result<String, ClientError> {
        self.block_on(self.get_text_async(route))
    }

    /// Async [`Self::get_json`].
    pub async fn get_json_async<T: DeserializeOwned>(&self, route: &str) -> Result<T, ClientError> {
        let body = self.request(Method::GET, route, None).await?;
        decode(Method::GET, route, &body)
    }

    /// Async [`Self::post_json`].
    pub async fn post_json_async<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let json = serde_json::to_vec(body).map_err(|source| ClientError::Encode {
            route: route.to_owned(),
            source,
        })?;
        let answer = self.request(Method::POST, route, Some(json)).await?;
        decode(Method::POST, route, &answer)
    }

    /// Async [`Self::get_text`].
    pub async fn get_text_async(&self, route: &str) -> Result<String, ClientError> {
        let body = self.request(Method::GET, route, None).await?;
        String::from_utf8(body.to_vec()).map_err(|_| ClientError::NotText {
            route: route.to_owned(),
        })
    }

    /// One request with the deadline; the 2xx body, or the error.
    async fn request(
        &self,
        method: Method,
        route: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let exchange = self.exchange(method.clone(), route, body);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout {
                path: self.socket_path.clone(),
                method,
                route: route.to_owned(),
                after: self.timeout,
            }),
        }
    }

    /// Connects to the socket and does the HTTP/1 handshake: the sender,
    /// and the task driving the connection (aborting it closes the socket).
    async fn connect(
        &self,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<Full<Bytes>>,
            tokio::task::JoinHandle<()>,
        ),
        ClientError,
    > {
        let stream = UnixStream::connect(&self.socket_path)
            .await
            .map_err(|source| ClientError::Unreachable {
                path: self.socket_path.clone(),
                source,
            })?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|source| ClientError::Http {
                    path: self.socket_path.clone(),
                    source,
                })?;
        // The connection future drives the socket; its errors also surface
        // through `send_request`, so its own result can be dropped.
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((sender, driver))
    }

    async fn exchange(
        &self,
        method: Method,
        route: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let http_error = |source| ClientError::Http {
            path: self.socket_path.clone(),
            source,
        };
        let (mut sender, driver) = self.connect().await?;

        let mut request = Request::builder()
            .method(method.clone())
            .uri(route)
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json, text/plain");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|source| ClientError::BadRoute {
                route: route.to_owned(),
                source,
            })?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        driver.abort();

        if status.is_success() {
            return Ok(answer);
        }
        match serde_json::from_slice::<ApiError>(&answer) {
            Ok(error) => Err(ClientError::Api { status, error }),
            Err(_) => Err(ClientError::Status {
                method,
                route: route.to_owned(),
                status,
                body: String::from_utf8_lossy(&answer[..answer.len().min(MAX_BODY_IN_ERROR)])
                    .into_owned(),
            }),
        }
    }

    /// Runs `future` to completion on a fresh current-thread runtime; on a
    /// helper thread when the caller is itself inside a tokio runtime (where
    /// `block_on` would panic).
    fn block_on<T: Send>(
        &self,
        future: impl Future<Output = Result<T, ClientError>> + Send,
    ) -> Result<T, ClientError> {
        let run = move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|source| ClientError::Runtime { source })?
                .block_on(future)
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return run();
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("lanlink-client".into())
                .spawn_scoped(scope, run)
                .map_err(|source| ClientError::Runtime { source })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

fn decode<T: DeserializeOwned>(method: Method, route: &str, body: &[u8]) -> Result<T, ClientError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        method,
        route: route.to_owned(),
        source,
    })
}

/// Longest line a [`MonitorStream`] takes (a drop event is a few hundred
/// bytes); a longer one is an error rather than unbounded buffering.
const MAX_MONITOR_LINE: usize = 64 * 1024;

impl AgentClient {
    /// `GET /v1/monitor`: the frames the dataplane drops, as it drops them
    /// (the agent has its programs report drops while a client listens).
    /// The client's deadline covers the answer's head only; the stream then
    /// lasts until it is dropped (which unsubscribes) or the agent ends it.
    pub async fn monitor_async(&self) -> Result<MonitorStream, ClientError> {
        let route = routes::MONITOR;
        match tokio::time::timeout(self.timeout, self.open_stream(route)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout {
                path: self.socket_path.clone(),
                method: Method::GET,
                route: route.to_owned(),
                after: self.timeout,
            }),
        }
    }

    /// `GET route`, returning once the answer's head is in: its body as a
    /// [`MonitorStream`] on success, the error otherwise.
    async fn open_stream(&self, route: &str) -> Result<MonitorStream, ClientError> {
        let http_error = |source| ClientError::Http {
            path: self.socket_path.clone(),
            source,
        };
        let (mut sender, driver) = self.connect().await?;
        // Aborted when the stream drops, which closes the socket: that is
        // how the agent learns the client left.
        let driver = AbortOnDrop(driver);
        let request = Request::builder()
            .method(Method::GET)
            .uri(route)
            .header(HOST, "localhost")
            .header(ACCEPT, routes::NDJSON)
            .body(Full::new(Bytes::new()))
            .map_err(|source| ClientError::BadRoute {
                route: route.to_owned(),
                source,
            })?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        if !status.is_success() {
            let answer = response
                .into_body()
                .collect()
                .await
                .map_err(http_error)?
                .to_bytes();
            return Err(answer_error(Method::GET, route, status, &answer));
        }
        Ok(MonitorStream {
            body: response.into_body(),
            buf: Vec::new(),
            ended: false,
            route: route.to_owned(),
            path: self.socket_path.clone(),
            _driver: driver,
        })
    }
}

/// The error for a non-2xx answer: the agent's [`ApiError`] if the body is
/// one, else the status and the start of the body.
fn answer_error(method: Method, route: &str, status: StatusCode, answer: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiError>(answer) {
        Ok(error) => ClientError::Api { status, error },
        Err(_) => ClientError::Status {
            method,
            route: route.to_owned(),
            status,
            body: String::from_utf8_lossy(&answer[..answer.len().min(MAX_BODY_IN_ERROR)])
                .into_owned(),
        },
    }
}

/// A task aborted when this drops.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The answer of [`AgentClient::monitor_async`], read one line at a time.
/// Dropping it closes the connection.
#[derive(Debug)]
pub struct MonitorStream {
    body: hyper::body::Incoming,
    /// What arrived past the last line handed out.
    buf: Vec<u8>,
    /// The agent ended the body.
    ended: bool,
    route: String,
    path: PathBuf,
    _driver: AbortOnDrop,
}

impl MonitorStream {
    /// The next line as the agent sent it, without its newline (blank lines
    /// are skipped); `None` once the agent ended the stream (it stopped).
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            let mut line = match self.buf.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    let mut line: Vec<u8> = self.buf.drain(..=newline).collect();
                    line.pop();
                    line
                }
                // A last line without its newline still counts.
                None if self.ended && !self.buf.is_empty() => std::mem::take(&mut self.buf),
                None if self.ended => return Ok(None),
                None => {
                    self.read_more().await?;
                    continue;
                }
            };
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return String::from_utf8(line)
                .map(Some)
                .map_err(|_| ClientError::NotText {
                    route: self.route.clone(),
                });
        }
    }

    /// Appends the body's next frame to the buffer, or marks its end.
    async fn read_more(&mut self) -> Result<(), ClientError> {
        if self.buf.len() > MAX_MONITOR_LINE {
            return Err(ClientError::Decode {
                method: Method::GET,
                route: self.route.clone(),
                source: serde::de::Error::custom(format!(
                    "a line longer than {MAX_MONITOR_LINE} bytes"
                )),
            });
        }
        match self.body.frame().await {
            None => self.ended = true,
            Some(Err(source)) => {
                return Err(ClientError::Http {
                    path: self.path.clone(),
                    source,
                });
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.buf.extend_from_slice(&data);
                }
            }
        }
        Ok(())
    }

    /// The next line, decoded; `None` once the agent ended the stream.
    pub async fn next(&mut self) -> Result<Option<MonitorLine>, ClientError> {
        let Some(line) = self.next_line().await? else {
            return Ok(None);
        };
        decode(Method::GET, &self.route, line.as_bytes()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::types::LostEvents;

    /// A socket path of its own for this test.
    fn socket(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("lanlink-api-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// Serves one connection of `listener` on a thread: reads the request
    /// head, then writes `answer` piece by piece (a pause after each, so the
    /// client reads them separately); the thread returns the request head.
    fn serve_once(listener: UnixListener, answer: Vec<String>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0);
                head.extend_from_slice(&buf[..n]);
            }
            for piece in answer {
                conn.write_all(piece.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            String::from_utf8(head).unwrap()
        })
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn monitor_lines_split_across_chunks_are_joined_and_blank_ones_skipped() {
        run(async {
            let path = socket("monitor");
            // HTTP/1.1 chunks cut across lines, and a blank line.
            let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
            let mut answer = vec![
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                 transfer-encoding: chunked\r\n\r\n"
                    .to_owned(),
            ];
            answer.extend(["{\"lost\":", "3}\n\n{\"lo", "st\":4}\r\n", "{\"lost\":5}"].map(chunk));
            answer.push("0\r\n\r\n".to_owned());
            let server = serve_once(UnixListener::bind(&path).unwrap(), answer);
            let client = AgentClient::new(&path);
            let mut stream = client.monitor_async().await.unwrap();
            for lost in [3, 4] {
                assert_eq!(
                    stream.next().await.unwrap(),
                    Some(MonitorLine::Lost(LostEvents { lost }))
                );
            }
            // The last line lacks its newline; it counts all the same.
            assert_eq!(
                stream.next_line().await.unwrap().as_deref(),
                Some("{\"lost\":5}")
            );
            assert_eq!(stream.next().await.unwrap(), None);
            let head = server.join().unwrap();
            assert!(head.starts_with("GET /v1/monitor HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("application/x-ndjson"), "{head}");
            let _ = std::fs::remove_file(&path);
        });
    }

    #[test]
    fn a_refused_monitor_is_the_agents_api_error() {
        run(async {
            let path = socket("refused");
            let body = r#"{"code":11,"msg":"cannot open the pinned map","details":""}"#;
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            let server = serve_once(UnixListener::bind(&path).unwrap(), vec![answer]);
            let e = AgentClient::new(&path).monitor_async().await.unwrap_err();
            match e {
                ClientError::Api { status, error } => {
                    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                    assert_eq!(error.msg, "cannot open the pinned map");
                }
                e => panic!("{e:?}"),
            }
            server.join().unwrap();
            let _ = std::fs::remove_file(&path);
        });
    }
}
