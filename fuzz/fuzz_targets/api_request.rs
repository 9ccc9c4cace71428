//! The agent's API request decoding: an HTTP request (input: one byte
//! choosing the method, route and content type, then the body) through the
//! agent's routes with its body limit and body extractor
//! (`lanlink_agent::api::decode_only_router`), and the body through the
//! request types of `lanlink_api`.
//!
//! Checks: nothing panics; a body route answers 200 exactly when the body
//! decodes as its type, and otherwise a 4xx whose body is an `ApiError`
//! with code 6 (not JSON) or 7 (not a valid request); a decoded request
//! serializes and decodes back to itself.
#![no_main]

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use lanlink_api::{ApiError, AttachmentRequest, GcRequest, codes, routes};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
});
static ROUTER: LazyLock<Router> = LazyLock::new(lanlink_agent::api::decode_only_router);

/// Routes tried: the four with bodies, one without, and near misses.
const PATHS: [&str; 8] = [
    routes::CNI_ADD,
    routes::CNI_DEL,
    routes::CNI_CHECK,
    routes::CNI_GC,
    routes::STATUS,
    "/v1/cni/add/",
    "/v1/cni/add?x=1",
    "/v1/cni//gc",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(selector & 7)];
    let method = if selector & 8 == 0 { "POST" } else { "GET" };
    let mut request = Request::builder().method(method).uri(path);
    match (selector >> 4) & 3 {
        0 | 1 => request = request.header(header::CONTENT_TYPE, "application/json"),
        2 => request = request.header(header::CONTENT_TYPE, "text/plain"),
        _ => {}
    }
    let request = request
        .body(Body::from(body.to_vec()))
        .expect("a request from fixed parts");
    let (status, answer) = RUNTIME.block_on(async {
        let response = ROUTER.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a buffered answer")
            .to_bytes();
        (status, bytes)
    });
    let json = (selector >> 4) & 3 <= 1;
    // The query is not part of the route.
    let route = path.split('?').next().unwrap_or(path);
    match (method, route) {
        ("POST", routes::CNI_ADD | routes::CNI_DEL | routes::CNI_CHECK) => {
            check_body::<AttachmentRequest>(status, &answer, body, json)
        }
        ("POST", routes::CNI_GC) => check_body::<GcRequest>(status, &answer, body, json),
        _ => assert!(
            status.is_client_error(),
            "{method} {path} answered {status}"
        ),
    }
});

/// The answer to a body route, against decoding the body directly.
fn check_body<T>(status: StatusCode, answer: &[u8], body: &[u8], json: bool)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let direct = serde_json::from_slice::<T>(body);
    if status == StatusCode::OK {
        let Ok(request) = direct else {
            panic!("accepted a body that does not decode");
        };
        assert!(json, "accepted a body without a JSON content type");
        let again = serde_json::to_vec(&request).expect("a request serializes");
        let back: T = serde_json::from_slice(&again).expect("a serialized request decodes");
        assert_eq!(back, request, "a request changed through JSON");
        return;
    }
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
        "answered {status}"
    );
    let error: ApiError = serde_json::from_slice(answer).unwrap_or_else(|e| {
        panic!(
            "a refusal that is not an ApiError ({e}): {}",
            String::from_utf8_lossy(answer)
        )
    });
    assert!(
        error.code == codes::DECODE || error.code == codes::INVALID_CONFIG,
        "refused with code {}",
        error.code
    );
    if json && body.len() <= 64 * 1024 {
        assert!(direct.is_err(), "refused a body that decodes: {error:?}");
    }
}
