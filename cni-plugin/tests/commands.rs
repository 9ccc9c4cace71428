//! The CNI verbs run in-process against a fake agent: an axum server on a Unix
//! socket in a temp dir that plays the agent's HTTP API (and nothing more),
//! answering as the real agent does (`userspace/src/api.rs`): DEL of an
//! unknown attachment is `{}`, CHECK of one is code 103 with HTTP 409. No
//! root, no namespaces; what is checked is the plugin's side of the contract:
//! stdout JSON, exit codes, and what the agent was asked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lanlink_api::client::{AgentClient, ClientError};
use lanlink_api::{
    ApiError, AttachmentId, AttachmentRequest, AttachmentResult, DhcpStats, Dns, EndpointInfo,
    FlowRow, GcRequest, GcResponse, Interface, IpConfig, Ipv6Iid, Ipv6Mode, LeaseInfo, Mac, Mode,
    PodIdentity, Route, StatsRow, StatusResponse, codes, routes,
};
use lanlink_cni::netconf::CniVersion;
use serde_json::{Value, json};

// ---------------------------------------------------------------- fake agent

#[derive(Default)]
struct AgentState {
    attachments: BTreeMap<(String, String), AttachmentRequest>,
    ready: bool,
    fail_add: bool,
    /// When set, DEL answers this error (status, code) instead.
    fail_del: Option<(StatusCode, u32)>,
    adds: Vec<AttachmentRequest>,
    dels: Vec<AttachmentRequest>,
    checks: Vec<AttachmentRequest>,
    gcs: Vec<GcRequest>,
}

impl AgentState {
    /// How many ADD, DEL, CHECK and GC requests reached the agent.
    fn calls(&self) -> usize {
        self.adds.len() + self.dels.len() + self.checks.len() + self.gcs.len()
    }
}

type Shared = Arc<Mutex<AgentState>>;

/// The fake agent: a runtime serving the API on `socket`; dropped, it stops
/// and removes its directory.
struct FakeAgent {
    dir: PathBuf,
    socket: PathBuf,
    state: Shared,
    runtime: Option<tokio::runtime::Runtime>,
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lanlink-cni-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const HOST_MAC: Mac = Mac::new([0xee, 0xee, 0xee, 0, 0, 1]);
const POD_MAC: Mac = Mac::new([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

/// The agent's answer. IPv6 as on a LAN without router advertisements but
/// with every address to give: `slaac` and `dhcpv6` get one (listed before
/// the IPv4 lease: the plugin must not rely on the agent's order), `auto`
/// follows the RAs there are not and gets none.
fn attachment_result(req: &AttachmentRequest) -> AttachmentResult {
    let with_dhcp = req.config.dhcp.is_some();
    let mut result = ipv4_result(req, with_dhcp);
    let ipv6 = match req.config.ipv6 {
        Ipv6Mode::Slaac => "2001:2:0:1:11:22ff:fe33:4455/64",
        Ipv6Mode::Dhcpv6 => "2001:2:0:1::1a0/128",
        Ipv6Mode::Off | Ipv6Mode::Auto => return result,
    };
    result.ips.insert(
        0,
        IpConfig {
            address: ipv6.into(),
            gateway: Some("fe80::1".into()),
            interface: Some(1),
        },
    );
    result.routes.push(Route {
        dst: "::/0".into(),
        gw: Some("fe80::1".into()),
    });
    result.dns.nameservers.push("2001:2:0:1::1".into());
    result
}

fn ipv4_result(req: &AttachmentRequest, with_dhcp: bool) -> AttachmentResult {
    AttachmentResult {
        interfaces: vec![
            Interface {
                name: "llk0001".into(),
                mac: HOST_MAC,
                sandbox: None,
            },
            Interface {
                name: req.ifname.clone(),
                mac: POD_MAC,
                sandbox: req.netns.clone(),
            },
        ],
        ips: if with_dhcp {
            vec![IpConfig {
                address: "198.18.0.50/24".into(),
                gateway: Some("198.18.0.1".into()),
                interface: Some(1),
            }]
        } else {
            vec![]
        },
        routes: if with_dhcp {
            vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("198.18.0.1".into()),
            }]
        } else {
            vec![]
        },
        dns: Dns {
            nameservers: vec!["198.18.0.1".into()],
            domain: None,
            search: vec![],
        },
        lease: with_dhcp.then(|| lease(req)),
    }
}

fn lease(req: &AttachmentRequest) -> LeaseInfo {
    LeaseInfo {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
        mac: POD_MAC,
        address: "198.18.0.50/24".into(),
        server: "198.18.0.1".into(),
        lease_secs: 3600,
        obtained_at: 1,
        renew_at: 1801,
        expires_at: 3601,
        state: "bound".into(),
    }
}

fn api_error(status: StatusCode, code: u32, msg: &str, details: &str) -> Response {
    (
        status,
        Json(ApiError {
            code,
            msg: msg.into(),
            details: details.into(),
        }),
    )
        .into_response()
}

fn key(req: &AttachmentRequest) -> (String, String) {
    (req.container_id.clone(), req.ifname.clone())
}

/// The real agent's HTTP status for an error code (`userspace/src/api.rs`).
fn status_of(code: u32) -> StatusCode {
    match code {
        codes::INVALID_CONFIG | codes::DECODE | codes::INVALID_ENV => StatusCode::BAD_REQUEST,
        codes::TRY_AGAIN_LATER => StatusCode::SERVICE_UNAVAILABLE,
        codes::CHECK_FAILED => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn add(State(state): State<Shared>, Json(req): Json<AttachmentRequest>) -> Response {
    let mut state = state.lock().unwrap();
    state.adds.push(req.clone());
    if state.fail_add {
        return api_error(
            status_of(codes::DHCP_FAILED),
            codes::DHCP_FAILED,
            "no dhcp lease for eth0",
            "no DHCPOFFER within 5000 ms on eth0",
        );
    }
    state.attachments.insert(key(&req), req.clone());
    Json(attachment_result(&req)).into_response()
}

async fn del(State(state): State<Shared>, Json(req): Json<AttachmentRequest>) -> Response {
    let mut state = state.lock().unwrap();
    state.dels.push(req.clone());
    if let Some((status, code)) = state.fail_del {
        return api_error(status, code, "cannot remove the attachment", "");
    }
    // Idempotent, as the agent: an unknown attachment is already gone.
    state.attachments.remove(&key(&req));
    Json(json!({})).into_response()
}

async fn check(State(state): State<Shared>, Json(req): Json<AttachmentRequest>) -> Response {
    let mut state = state.lock().unwrap();
    state.checks.push(req.clone());
    match state.attachments.get(&key(&req)) {
        Some(req) => Json(attachment_result(req)).into_response(),
        // The agent's `AgentError::NotFound`: code 103, message "no attachment <id>/<ifname>".
        None => api_error(
            status_of(codes::CHECK_FAILED),
            codes::CHECK_FAILED,
            &format!("no attachment {}/{}", req.container_id, req.ifname),
            "",
        ),
    }
}

async fn gc(State(state): State<Shared>, Json(req): Json<GcRequest>) -> Json<GcResponse> {
    let mut state = state.lock().unwrap();
    state.gcs.push(req.clone());
    let valid: Vec<(String, String)> = req
        .valid_attachments
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let mut removed = Vec::new();
    state.attachments.retain(|k, _| {
        let keep = valid.contains(k);
        if !keep {
            removed.push(AttachmentId {
                container_id: k.0.clone(),
                ifname: k.1.clone(),
            });
        }
        keep
    });
    Json(GcResponse { removed })
}

async fn status(State(state): State<Shared>) -> Json<StatusResponse> {
    let state = state.lock().unwrap();
    Json(StatusResponse {
        ready: state.ready,
        reason: (!state.ready).then(|| "uplink eth0 is down".into()),
        version: "0.1.0".into(),
        uplink: "eth0".into(),
        uplink_ifindex: 2,
        pin_dir: "/sys/fs/bpf/lanlink/test".into(),
        endpoints: state.attachments.len(),
        adopted: false,
        attach: "tcx".into(),
    })
}

async fn endpoints(State(state): State<Shared>) -> Json<Vec<EndpointInfo>> {
    let state = state.lock().unwrap();
    Json(
        state
            .attachments
            .values()
            .map(|req| EndpointInfo {
                container_id: req.container_id.clone(),
                network: req.config.network.clone(),
                ifname: req.ifname.clone(),
                netns: req.netns.clone().unwrap_or_default(),
                pod: req.pod.clone(),
                host_veth: "llk0001".into(),
                host_ifindex: 7,
                mac: POD_MAC,
                address: Some("198.18.0.50/24".into()),
                ipv6: None,
                ipv6_source: None,
                mode: req.config.mode,
                port_security: req.config.port_security,
                drops: Default::default(),
            })
            .collect(),
    )
}

async fn leases(State(state): State<Shared>) -> Json<Vec<LeaseInfo>> {
    let state = state.lock().unwrap();
    Json(state.attachments.values().map(lease).collect())
}

async fn stats() -> Json<Vec<StatsRow>> {
    Json(vec![StatsRow {
        verdict: "redirect_peer".into(),
        drop: false,
        packets: 3,
        bytes: 180,
    }])
}

async fn flows() -> Json<Vec<FlowRow>> {
    Json(vec![FlowRow {
        proto: "tcp".into(),
        pod: "198.18.0.50".parse().unwrap(),
        pod_port: 80,
        peer: "198.18.0.10".parse().unwrap(),
        peer_port: 40000,
        host_ifindex: 7,
        host_veth: None,
        idle_ms: 1500,
    }])
}

async fn dhcp() -> Json<DhcpStats> {
    Json(DhcpStats {
        sent_discover: 2,
        ..DhcpStats::default()
    })
}

async fn metrics() -> &'static str {
    "# TYPE lanlink_packets_total counter\nlanlink_packets_total{verdict=\"redirect\"} 3\n"
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "{}"
}

impl FakeAgent {
    fn start() -> Self {
        let dir = temp_dir();
        let socket = dir.join("agent.sock");
        let state: Shared = Arc::new(Mutex::new(AgentState {
            ready: true,
            ..AgentState::default()
        }));
        let app = Router::new()
            .route(routes::CNI_ADD, post(add))
            .route(routes::CNI_DEL, post(del))
            .route(routes::CNI_CHECK, post(check))
            .route(routes::CNI_GC, post(gc))
            .route(routes::STATUS, get(status))
            .route(routes::ENDPOINTS, get(endpoints))
            .route(routes::LEASES, get(leases))
            .route(routes::STATS, get(stats))
            .route(routes::FLOWS, get(flows))
            .route(routes::DHCP, get(dhcp))
            .route(routes::METRICS, get(metrics))
            .route("/slow", get(slow))
            .with_state(state.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&socket).unwrap()
        };
        runtime.spawn(async move { axum::serve(listener, app).await });
        FakeAgent {
            dir,
            socket,
            state,
            runtime: Some(runtime),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.state.lock().unwrap()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- helpers

/// One plugin invocation, as a runtime does it, in-process.
struct Invocation {
    vars: BTreeMap<String, String>,
    stdin: String,
}

impl Invocation {
    fn new(command: &str, netconf: &Value) -> Self {
        let vars = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "ctr1"),
            ("CNI_NETNS", "/run/netns/pod1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=uid-1",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Invocation {
            vars,
            stdin: netconf.to_string(),
        }
    }

    fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    fn unset(mut self, name: &str) -> Self {
        self.vars.remove(name);
        self
    }

    fn stdin(mut self, stdin: &str) -> Self {
        self.stdin = stdin.into();
        self
    }

    /// Runs it; the exit code and stdout (`Value::Null` when empty).
    fn run(&self) -> (u8, Value) {
        let mut stdout = Vec::new();
        let code = lanlink_cni::run(
            |k| self.vars.get(k).cloned(),
            &mut self.stdin.as_bytes(),
            &mut stdout,
        );
        let out = if stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&stdout).unwrap_or_else(|e| {
                panic!(
                    "stdout is not JSON ({e}): {}",
                    String::from_utf8_lossy(&stdout)
                )
            })
        };
        (code, out)
    }
}

fn netconf(version: CniVersion, socket: &Path) -> Value {
    json!({
        "cniVersion": version.as_str(),
        "name": "lan",
        "type": "lanlink",
        "socketPath": socket,
        "uplink": "eth0",
        "hostRoutes": ["10.96.0.0/12"],
        "ipam": {"type": "lanlink-dhcp", "timeoutMs": 3000},
    })
}

fn expected_add(version: CniVersion) -> Value {
    let mut ip = json!({"address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1});
    if version.has_ip_version() {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": version.as_str(),
        "interfaces": [
            {"name": "llk0001", "mac": "ee:ee:ee:00:00:01"},
            {"name": "eth0", "mac": "02:11:22:33:44:55", "sandbox": "/run/netns/pod1"}
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}],
        "dns": {"nameservers": ["198.18.0.1"]}
    })
}

fn assert_error(out: &(u8, Value), code: u32, msg_contains: &str) {
    assert_eq!(out.0, 1, "exit code, stdout {}", out.1);
    assert_eq!(out.1["code"], json!(code), "stdout {}", out.1);
    let msg = out.1["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(msg_contains),
        "msg {msg:?} lacks {msg_contains:?}"
    );
    assert!(out.1["cniVersion"].is_string());
    assert!(out.1["details"].is_string());
}

fn missing_socket() -> (PathBuf, PathBuf) {
    let dir = temp_dir();
    let socket = dir.join("nobody.sock");
    (dir, socket)
}

// ---------------------------------------------------------------- tests

#[test]
fn add_then_del_twice_for_every_version() {
    let agent = FakeAgent::start();
    for version in CniVersion::ALL {
        let conf = netconf(version, &agent.socket);
        let (code, out) = Invocation::new("ADD", &conf).run();
        assert_eq!(code, 0, "{version}: {out}");
        assert_eq!(out, expected_add(version), "{version}");
        assert_eq!(agent.state().attachments.len(), 1);

        for _ in 0..2 {
            let (code, out) = Invocation::new("DEL", &conf).run();
            assert_eq!((code, &out), (0, &Value::Null), "{version}");
        }
        assert!(agent.state().attachments.is_empty());
    }

    let state = agent.state();
    let add = &state.adds[0];
    assert_eq!(add.container_id, "ctr1");
    assert_eq!(add.netns.as_deref(), Some("/run/netns/pod1"));
    assert_eq!(add.ifname, "eth0");
    assert_eq!(
        add.pod,
        PodIdentity {
            namespace: Some("default".into()),
            name: Some("web-0".into()),
            uid: Some("uid-1".into()),
        }
    );
    assert_eq!(add.config.network, "lan");
    assert_eq!(add.config.uplink.as_deref(), Some("eth0"));
    assert_eq!(add.config.mode, Mode::Primary);
    assert_eq!(
        add.config.host_routes,
        vec!["10.96.0.0/12".parse().unwrap()]
    );
    assert_eq!(add.config.dhcp.as_ref().map(|d| d.timeout_ms), Some(3000));
    assert_eq!(state.dels.len(), 2 * CniVersion::ALL.len());
}

#[test]
fn del_without_netns_succeeds() {
    let agent = FakeAgent::start();
    let conf = netconf(CniVersion::V1_1_0, &agent.socket);
    assert_eq!(Invocation::new("ADD", &conf).run().0, 0);
    let (code, out) = Invocation::new("DEL", &conf).unset("CNI_NETNS").run();
    assert_eq!((code, out), (0, Value::Null));
    assert_eq!(agent.state().dels[0].netns, None);
    assert!(agent.state().attachments.is_empty());
}

#[test]
fn del_of_an_unknown_attachment_succeeds() {
    let agent = FakeAgent::start();
    let conf = netconf(CniVersion::V1_1_0, &agent.socket);
    let (code, out) = Invocation::new("DEL", &conf)
        .var("CNI_CONTAINERID", "never-added")
        .run();
    assert_eq!((code, out), (0, Value::Null));
    assert_eq!(agent.state().dels.len(), 1);
}

/// DEL is idempotent because the agent answers `{}` for what it does not
/// know; the plugin does not guess "not found" from an error (it used to
/// swallow HTTP 404 and code 3, which the agent never sends for that).
#[test]
fn del_passes_on_every_agent_error() {
    let agent = FakeAgent::start();
    let conf = netconf(CniVersion::V1_1_0, &agent.socket);
    for (status, code) in [
        (StatusCode::NOT_FOUND, codes::UNKNOWN_CONTAINER),
        (status_of(codes::NETLINK), codes::NETLINK),
        (status_of(codes::DATAPLANE), codes::DATAPLANE),
    ] {
        agent.state().fail_del = Some((status, code));
        assert_error(
            &Invocation::new("DEL", &conf).run(),
            code,
            "cannot remove the attachment",
        );
    }
}

/// The agent's DHCP client writes options 12, 50, 52, 54, 55, 57 and 61
/// itself and refused them (code 100) after the veth was made; the plugin
/// now refuses them with code 7, naming the field, before asking the agent.
#[test]
fn reserved_send_options_are_refused_before_the_agent_is_asked() {
    let agent = FakeAgent::start();
    for reserved in [12, 50, 52, 54, 55, 57, 61] {
        let mut conf = netconf(CniVersion::V1_1_0, &agent.socket);
        conf["ipam"]["sendOptions"] = json!([{"code": reserved, "value": "x"}]);
        let out = Invocation::new("ADD", &conf).run();
        assert_error(
            &out,
            codes::INVALID_CONFIG,
            &format!("field ipam.sendOptions[0].code: option code {reserved} ("),
        );
        let msg = out.1["msg"].as_str().unwrap_or_default();
        assert!(
            msg.ends_with(") is written by the agent's DHCP client itself"),
            "{msg}"
        );
    }
    let mut conf = netconf(CniVersion::V1_1_0, &agent.socket);
    conf["ipam"]["sendOptions"] =
        json!([{"code": 60, "value": "x"}, {"code": 60, "value": "0xé1"}]);
    assert_error(
        &Invocation::new("ADD", &conf).run(),
        codes::INVALID_CONFIG,
        r#"field ipam.sendOptions[1].value: "0xé1" has characters other than hex digits after 0x"#,
    );
    assert_eq!(agent.state().calls(), 0);
}

#[test]
fn ipam_none_and_secondary_mode() {
    let agent = FakeAgent::start();
    let mut conf = netconf(CniVersion::V1_0_0, &agent.socket);
    conf["ipam"] = json!({"type": "none"});
    conf["mode"] = json!("secondary");
    let (code, out) = Invocation::new("ADD", &conf)
        .var("CNI_IFNAME", "net1")
        .run();
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["ips"], json!([]));
    assert_eq!(out["interfaces"][1]["name"], json!("net1"));
    let state = agent.state();
    assert_eq!(state.adds[0].config.dhcp, None);
    assert_eq!(state.adds[0].config.mode, Mode::Secondary);
}

#[test]
fn add_chained_after_a_previous_plugin() {
    let agent = FakeAgent::start();
    let mut conf = netconf(CniVersion::V1_0_0, &agent.socket);
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": "/run/netns/pod1"}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
    });
    let (code, out) = Invocation::new("ADD", &conf).run();
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(
        out["ips"],
        json!([
            {"address": "127.0.0.1/8", "interface": 0},
            {"address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 2}
        ])
    );
}

#[test]
fn bad_prev_result_is_refused_before_the_agent_is_asked() {
    let agent = FakeAgent::start();
    let mut conf = netconf(CniVersion::V1_0_0, &agent.socket);
    conf["prevResult"] = json!({"ips": "198.18.0.9/24"});
    let out = Invocation::new("ADD", &conf).run();
    assert_error(&out, codes::INVALID_CONFIG, "field prevResult.ips");
    assert!(agent.state().adds.is_empty());
}

#[test]
fn agent_errors_pass_through() {
    let agent = FakeAgent::start();
    agent.state().fail_add = true;
    let conf = netconf(CniVersion::V0_4_0, &agent.socket);
    let out = Invocation::new("ADD", &conf).run();
    assert_error(&out, codes::DHCP_FAILED, "no dhcp lease for eth0");
    assert_eq!(
        out.1["details"],
        json!("no DHCPOFFER within 5000 ms on eth0")
    );
    assert_eq!(out.1["cniVersion"], json!("0.4.0"));
}

#[test]
fn agent_down() {
    let (dir, socket) = missing_socket();
    let mut conf = netconf(CniVersion::V1_1_0, &socket);
    conf["delQueueDir"] = json!(dir.join("del-queue"));
    let reachable = format!("agent not reachable at {}", socket.display());
    let again = codes::TRY_AGAIN_LATER;
    assert_error(&Invocation::new("ADD", &conf).run(), again, &reachable);
    // DEL never waits on a stopped agent: it is queued (tests/del_queue.rs).
    assert_eq!(Invocation::new("DEL", &conf).run(), (0, Value::Null));
    assert_error(
        &Invocation::new("STATUS", &conf).run(),
        codes::PLUGIN_NOT_AVAILABLE,
        &reachable,
    );
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([]);
    assert_error(&Invocation::new("GC", &gc_conf).run(), again, &reachable);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn status_codes() {
    let agent = FakeAgent::start();
    let conf = netconf(CniVersion::V1_1_0, &agent.socket);
    // STATUS needs none of the container variables.
    let invocation = Invocation::new("STATUS", &conf)
        .unset("CNI_CONTAINERID")
        .unset("CNI_NETNS")
        .unset("CNI_IFNAME")
        .unset("CNI_PATH");
    assert_eq!(invocation.run(), (0, Value::Null));
    agent.state().ready = false;
    assert_error(
        &invocation.run(),
        codes::LIMITED_CONNECTIVITY,
        "agent not ready: uplink eth0 is down",
    );

    let old = netconf(CniVersion::V1_0_0, &agent.socket);
    assert_error(
        &Invocation::new("STATUS", &old).run(),
        codes::INCOMPATIBLE_VERSION,
        "does not allow STATUS",
    );
}

#[test]
fn check_against_prev_result() {
    let agent = FakeAgent::start();
    let conf = netconf(CniVersion::V1_0_0, &agent.socket);
    let (code, added) = Invocation::new("ADD", &conf).run();
    assert_eq!(code, 0);

    let mut check = conf.clone();
    check["prevResult"] = added.clone();
    assert_eq!(Invocation::new("CHECK", &check).run(), (0, Value::Null));

    // One field of the CHECK netconf changed: what CHECK answers.
    let changes = [
        (
            "/prevResult/ips/0/address",
            json!("198.18.0.99/24"),
            codes::CHECK_FAILED,
            "address 198.18.0.50/24 is not in prevResult",
        ),
        (
            "/prevResult/interfaces/1/mac",
            json!("02:00:00:00:00:99"),
            codes::CHECK_FAILED,
            "interface eth0 (02:11:22:33:44:55) is not in prevResult",
        ),
        (
            "/cniVersion",
            json!("0.3.1"),
            codes::INCOMPATIBLE_VERSION,
            "does not allow CHECK",
        ),
    ];
    for (pointer, value, code, message) in changes {
        let mut changed = check.clone();
        *changed.pointer_mut(pointer).expect(pointer) = value;
        assert_error(&Invocation::new("CHECK", &changed).run(), code, message);
    }

    assert_error(
        &Invocation::new("CHECK", &conf).run(),
        codes::INVALID_CONFIG,
        "field prevResult: required for CHECK",
    );

    let mut disabled = conf.clone();
    disabled["disableCheck"] = json!(true);
    let (code, _) = Invocation::new("CHECK", &disabled)
        .var("CNI_CONTAINERID", "unknown")
        .run();
    assert_eq!(code, 0);

    // The agent no longer knows the attachment: its code 103 is passed on.
    assert_eq!(Invocation::new("DEL", &conf).run().0, 0);
    assert_error(
        &Invocation::new("CHECK", &check).run(),
        codes::CHECK_FAILED,
        "no attachment ctr1/eth0",
    );
}

/// ADD, CHECK and DEL of a pod with IPv6 on, in every version: both
/// addresses in the result (IPv4 first, `version` by family in 0.x), the
/// `ipv6` switches passed to the agent, CHECK finding both in `prevResult`.
#[test]
fn dual_stack_add_check_del_for_every_version() {
    let agent = FakeAgent::start();
    for (ipv6, iid, address) in [
        ("slaac", "stable-privacy", "2001:2:0:1:11:22ff:fe33:4455/64"),
        ("dhcpv6", "eui64", "2001:2:0:1::1a0/128"),
    ] {
        for version in CniVersion::ALL {
            let mut conf = netconf(version, &agent.socket);
            conf["ipv6"] = json!(ipv6);
            conf["ipv6Iid"] = json!(iid);
            let (code, added) = Invocation::new("ADD", &conf).run();
            assert_eq!(code, 0, "{ipv6} {version}: {added}");
            let mut expected = expected_add(version);
            let mut ip6 = json!({"address": address, "gateway": "fe80::1", "interface": 1});
            if version.has_ip_version() {
                ip6["version"] = json!("6");
            }
            expected["ips"].as_array_mut().unwrap().push(ip6);
            expected["routes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"dst": "::/0", "gw": "fe80::1"}));
            expected["dns"]["nameservers"] = json!(["198.18.0.1", "2001:2:0:1::1"]);
            assert_eq!(added, expected, "{ipv6} {version}");
            let add = agent.state().adds.last().unwrap().config.clone();
            assert_eq!(serde_json::to_value(add.ipv6).unwrap(), json!(ipv6));
            assert_eq!(serde_json::to_value(add.ipv6_iid).unwrap(), json!(iid));

            if version >= CniVersion::V0_4_0 {
                let mut check = conf.clone();
                check["prevResult"] = added.clone();
                let (code, out) = Invocation::new("CHECK", &check).run();
                assert_eq!((code, &out), (0, &Value::Null), "{ipv6} {version}");
                // A runtime that re-wrote the address in full is no mismatch.
                let ip: std::net::Ipv6Addr = address.split('/').next().unwrap().parse().unwrap();
                let spelled = format!(
                    "{}/{}",
                    ip.segments().map(|s| format!("{s:04X}")).join(":"),
                    address.split('/').nth(1).unwrap()
                );
                let mut respelled = check.clone();
                respelled["prevResult"]["ips"][1]["address"] = json!(spelled);
                let (code, out) = Invocation::new("CHECK", &respelled).run();
                assert_eq!(
                    (code, &out),
                    (0, &Value::Null),
                    "{ipv6} {version}: {spelled}"
                );
                // Without the IPv6 address, CHECK fails naming it.
                let mut missing = check.clone();
                missing["prevResult"]["ips"].as_array_mut().unwrap().pop();
                assert_error(
                    &Invocation::new("CHECK", &missing).run(),
                    codes::CHECK_FAILED,
                    &format!("address {address} is not in prevResult"),
                );
            }
            let (code, out) = Invocation::new("DEL", &conf).run();
            assert_eq!((code, &out), (0, &Value::Null), "{ipv6} {version}");
            assert!(agent.state().attachments.is_empty());
        }
    }

    // `auto` on this LAN without RAs: an IPv4-only result, `auto` asked for.
    let conf = netconf(CniVersion::V0_4_0, &agent.socket);
    let (code, out) = Invocation::new("ADD", &conf).run();
    assert_eq!((code, &out), (0, &expected_add(CniVersion::V0_4_0)));
    let state = agent.state();
    let add = &state.adds.last().unwrap().config;
    assert_eq!((add.ipv6, add.ipv6_iid), (Ipv6Mode::Auto, Ipv6Iid::Eui64));
}

/// With `ipam.type` none the pod's own clients do IPv6: `auto` reaches the
/// agent as `off`, and `slaac`/`dhcpv6` are refused before it is asked.
#[test]
fn ipv6_with_ipam_none() {
    let agent = FakeAgent::start();
    let mut conf = netconf(CniVersion::V1_1_0, &agent.socket);
    conf["ipam"] = json!({"type": "none"});
    for ipv6 in ["slaac", "dhcpv6"] {
        let mut refused = conf.clone();
        refused["ipv6"] = json!(ipv6);
        assert_error(
            &Invocation::new("ADD", &refused).run(),
            codes::INVALID_CONFIG,
            &format!("field ipv6: {ipv6:?} has the agent address the pod"),
        );
    }
    assert_eq!(agent.state().calls(), 0);
    let (code, out) = Invocation::new("ADD", &conf).run();
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["ips"], json!([]));
    assert_eq!(agent.state().adds[0].config.ipv6, Ipv6Mode::Off);
}

#[test]
fn gc_sends_valid_attachments() {
    let agent = FakeAgent::start();
    let conf = netconf(CniVersion::V1_1_0, &agent.socket);
    for id in ["keep", "drop"] {
        let (code, out) = Invocation::new("ADD", &conf)
            .var("CNI_CONTAINERID", id)
            .run();
        assert_eq!(code, 0, "{out}");
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let (code, out) = Invocation::new("GC", &gc)
        .unset("CNI_CONTAINERID")
        .unset("CNI_NETNS")
        .unset("CNI_IFNAME")
        .run();
    assert_eq!((code, &out), (0, &Value::Null));
    let state = agent.state();
    assert_eq!(state.gcs.len(), 1);
    assert_eq!(state.gcs[0].network, "lan");
    assert_eq!(
        state.attachments.keys().cloned().collect::<Vec<_>>(),
        vec![("keep".to_string(), "eth0".to_string())]
    );
    drop(state);

    assert_error(
        &Invocation::new("GC", &conf).run(),
        codes::INVALID_CONFIG,
        "field cni.dev/valid-attachments: required for GC",
    );
}

#[test]
fn input_errors() {
    let (dir, socket) = missing_socket();
    let conf = netconf(CniVersion::V1_0_0, &socket);

    let out = Invocation::new("ADD", &conf)
        .stdin("{\"cniVersion\": ")
        .run();
    assert_error(&out, codes::DECODE, "invalid netconf JSON");

    let out = Invocation::new("ADD", &conf).unset("CNI_NETNS").run();
    assert_error(&out, codes::INVALID_ENV, "CNI_NETNS");
    let out = Invocation::new("DEL", &conf).unset("CNI_IFNAME").run();
    assert_error(&out, codes::INVALID_ENV, "CNI_IFNAME");
    let out = Invocation::new("CHECK", &conf)
        .unset("CNI_CONTAINERID")
        .run();
    assert_error(&out, codes::INVALID_ENV, "CNI_CONTAINERID");
    let out = Invocation::new("ADD", &conf).unset("CNI_COMMAND").run();
    assert_error(&out, codes::INVALID_ENV, "CNI_COMMAND");
    let out = Invocation::new("FROB", &conf).run();
    assert_error(&out, codes::INVALID_ENV, "unknown command");

    let mut bad = conf.clone();
    bad["cniVersion"] = json!("9.9.9");
    let out = Invocation::new("ADD", &bad).run();
    assert_error(
        &out,
        codes::INCOMPATIBLE_VERSION,
        "supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
    );

    let mut bad = conf.clone();
    bad["type"] = json!("bridge");
    let out = Invocation::new("ADD", &bad).run();
    assert_error(
        &out,
        codes::INVALID_CONFIG,
        r#"field type: expected "lanlink", got "bridge""#,
    );
    assert_eq!(out.1["cniVersion"], json!("1.0.0"));

    let mut bad = conf.clone();
    bad["hostRoutes"] = json!(["10.96.0.0/12", "198.19.0.0/33"]);
    let out = Invocation::new("ADD", &bad).run();
    assert_error(
        &out,
        codes::INVALID_CONFIG,
        r#"invalid netconf: field hostRoutes[1]: "198.19.0.0/33" is not an IPv4 CIDR: prefix length 33 is greater than 32"#,
    );

    // Unknown keys are fine: the error is about the agent, not the config.
    let mut unknown = conf.clone();
    unknown["someOtherPluginsKey"] = json!({"x": 1});
    assert_error(
        &Invocation::new("ADD", &unknown).run(),
        codes::TRY_AGAIN_LATER,
        "agent not reachable",
    );

    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn version_needs_nothing() {
    let out = Invocation::new("VERSION", &json!(null))
        .unset("CNI_CONTAINERID")
        .unset("CNI_NETNS")
        .unset("CNI_IFNAME")
        .unset("CNI_PATH")
        .stdin("")
        .run();
    assert_eq!(
        out,
        (
            0,
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        )
    );
}

#[test]
fn client_reads_endpoints_leases_metrics() {
    let agent = FakeAgent::start();
    let conf = netconf(CniVersion::V1_1_0, &agent.socket);
    assert_eq!(Invocation::new("ADD", &conf).run().0, 0);

    let client = AgentClient::new(&agent.socket);
    let endpoints = client.endpoints().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].container_id, "ctr1");
    assert_eq!(client.leases().unwrap()[0].address, "198.18.0.50/24");
    assert!(client.metrics().unwrap().contains("lanlink_packets_total"));
    assert_eq!(client.stats().unwrap()[0].verdict, "redirect_peer");
    assert_eq!(client.flows().unwrap()[0].pod_port, 80);
    assert_eq!(client.dhcp().unwrap().sent_discover, 2);
    assert!(client.status().unwrap().ready);

    // A route the agent does not have: no ApiError body.
    let err = client.get_json::<Value>("/v1/nothing").unwrap_err();
    assert!(
        matches!(err, ClientError::Status { status, .. } if status == StatusCode::NOT_FOUND),
        "{err:?}"
    );

    let err = client
        .clone()
        .with_timeout(Duration::from_millis(200))
        .get_text("/slow")
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(err.is_unavailable());
}

#[test]
fn client_blocks_inside_a_tokio_runtime() {
    let agent = FakeAgent::start();
    let socket = agent.socket.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async move { AgentClient::new(&socket).status() });
    assert!(status.unwrap().ready);

    let socket = agent.socket.clone();
    let status = runtime.block_on(async move {
        AgentClient::new(&socket)
            .get_json_async::<StatusResponse>(routes::STATUS)
            .await
    });
    assert!(status.unwrap().ready);
}
