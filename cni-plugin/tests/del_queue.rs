//! DEL while the agent is stopped (issue 15 item 5): the plugin records the
//! DEL in the agent's deletion queue and succeeds, instead of answering code
//! 11 for as long as the agent is away. Only "nothing listens" (socket
//! missing, or refused) queues; an agent that answers an error does not.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lanlink_api::AttachmentRequest;
use lanlink_api::codes;
use lanlink_api::del_queue::{DelQueue, entry_file_name};
use serde_json::{Value, json};

/// A fresh directory; removed by the test that made it.
fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lanlink-cni-delq-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn netconf(socket: &Path, queue: &Path) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "lan",
        "type": "lanlink",
        "socketPath": socket,
        "delQueueDir": queue,
        "hostRoutes": ["10.96.0.0/12"],
    })
}

/// Runs `command` for container `ctr1`/`eth0`: the exit code and stdout.
fn run(command: &str, conf: &Value) -> (u8, String) {
    let vars = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "ctr1"),
        ("CNI_NETNS", "/run/netns/pod1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
    ];
    let stdin = conf.to_string();
    let mut stdout = Vec::new();
    let code = lanlink_cni::run(
        |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        },
        &mut stdin.as_bytes(),
        &mut stdout,
    );
    (code, String::from_utf8(stdout).unwrap())
}

#[test]
fn del_with_the_socket_missing_is_queued_and_succeeds() {
    let dir = temp_dir();
    let queue = dir.join("state").join("del-queue");
    let conf = netconf(&dir.join("nobody.sock"), &queue);
    // The agent's state dir, where the plugin creates the queue.
    std::fs::create_dir(dir.join("state")).unwrap();
    assert_eq!(run("DEL", &conf), (0, String::new()));
    // Twice (the runtime retries): still one entry.
    assert_eq!(run("DEL", &conf), (0, String::new()));
    let mode = std::fs::metadata(&queue).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the queue dir is the agent's");
    let entry = queue.join(entry_file_name("ctr1", "eth0").unwrap());
    let req: AttachmentRequest = serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
    assert_eq!(
        (req.container_id.as_str(), req.ifname.as_str()),
        ("ctr1", "eth0")
    );
    assert_eq!(req.netns.as_deref(), Some("/run/netns/pod1"));
    assert_eq!(req.pod.name.as_deref(), Some("web-0"));
    assert_eq!(req.config.network, "lan");
    // What the agent reads back at start is that request.
    let got = DelQueue::new(&queue).read().unwrap();
    assert_eq!(got.entries.len(), 1);
    assert_eq!(got.entries[0].request, req);
    // ADD is never queued: it still waits for the agent.
    assert_eq!(
        serde_json::from_str::<Value>(&run("ADD", &conf).1).unwrap()["code"],
        json!(codes::TRY_AGAIN_LATER)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn del_with_a_refused_socket_is_queued() {
    let dir = temp_dir();
    let socket = dir.join("stale.sock");
    // A socket file nothing listens on any more (a SIGKILLed agent's).
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let queue = dir.join("q");
    assert_eq!(run("DEL", &netconf(&socket, &queue)), (0, String::new()));
    assert!(queue.join("ctr1@eth0.json").is_file());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn del_fails_with_code_11_when_the_queue_cannot_be_written() {
    let dir = temp_dir();
    // A regular file where the queue's parent should be: not creatable,
    // even as root.
    std::fs::write(dir.join("file"), b"").unwrap();
    let conf = netconf(&dir.join("nobody.sock"), &dir.join("file").join("q"));
    let (code, stdout) = run("DEL", &conf);
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(code, 1);
    assert_eq!(out["code"], json!(codes::TRY_AGAIN_LATER), "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("agent not reachable at") && msg.contains("cannot queue the DEL"),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Where no agent was ever set up (the queue's parent is missing) nobody
/// would run the queue: DEL is not acknowledged.
#[test]
fn del_is_not_queued_where_no_agent_keeps_its_state() {
    let dir = temp_dir();
    let conf = netconf(
        &dir.join("nobody.sock"),
        &dir.join("no-state").join("del-queue"),
    );
    let out: Value = serde_json::from_str(&run("DEL", &conf).1).unwrap();
    assert_eq!(out["code"], json!(codes::TRY_AGAIN_LATER), "{out}");
    assert!(!dir.join("no-state").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_relative_queue_dir_is_refused() {
    let dir = temp_dir();
    let mut conf = netconf(&dir.join("nobody.sock"), Path::new("/x"));
    conf["delQueueDir"] = json!("var/lib/lanlink/del-queue");
    let out: Value = serde_json::from_str(&run("DEL", &conf).1).unwrap();
    assert_eq!(out["code"], json!(codes::INVALID_CONFIG), "{out}");
    assert!(!dir.join("var").exists());
    std::fs::remove_dir_all(dir).unwrap();
}
