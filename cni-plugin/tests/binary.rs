//! The compiled `lanlink` binary, run as a runtime runs it: environment, stdin,
//! stdout and exit code. (The verbs themselves are tested in-process in
//! `commands.rs`; this checks the process wiring.)

use std::io::Write;
use std::process::{Command, Output, Stdio};

use lanlink_api::codes;
use serde_json::{Value, json};

fn run(vars: &[(&str, &str)], stdin: &str) -> (Output, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lanlink"))
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lanlink");
    // VERSION and a missing verb do not read stdin: the plugin may be gone
    // before the write (a runtime ignores that EPIPE too, as Go's os/exec does).
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
        _ => {}
    }
    let output = child.wait_with_output().unwrap();
    let value = if output.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&output.stdout).expect("stdout is JSON")
    };
    (output, value)
}

#[test]
fn version() {
    let (output, value) = run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert!(output.status.success());
    assert_eq!(value["cniVersion"], json!("1.1.0"));
    assert_eq!(value["supportedVersions"].as_array().unwrap().len(), 5);
}

#[test]
fn status_without_agent_exits_1_with_code_50() {
    let socket = std::env::temp_dir().join(format!("lanlink-cni-bin-{}.sock", std::process::id()));
    let conf =
        json!({"cniVersion": "1.1.0", "name": "lan", "type": "lanlink", "socketPath": socket});
    let (output, value) = run(&[("CNI_COMMAND", "STATUS")], &conf.to_string());
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(value["code"], json!(codes::PLUGIN_NOT_AVAILABLE));
    assert_eq!(value["cniVersion"], json!("1.1.0"));
}

#[test]
fn without_a_verb_says_what_it_is() {
    let (output, value) = run(&[], "");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(value["code"], json!(codes::INVALID_ENV));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CNI protocol versions supported"));
}
