//! The CNI plugin's input: the `CNI_*` environment and the netconf on stdin
//! (input: `KEY=VALUE` lines, a NUL, then the netconf; see
//! `lanlink_fuzz::split_env`), through the same functions `lanlink_cni::run`
//! calls before it contacts the agent.
//!
//! Checks: nothing panics; a refused input becomes a CNI error that prints
//! as JSON with a non-zero code; an accepted netconf's `cniVersion` is what
//! the version sniffer reads; the request the plugin would send decodes on
//! the agent's side unchanged (nothing the plugin accepts is refused later).
#![no_main]

use lanlink_api::{AttachmentRequest, GcRequest};
use lanlink_cni::CniError;
use lanlink_cni::netconf::{CniEnv, Command, NetConf, command_from_env};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (vars, stdin) = lanlink_fuzz::split_env(data);
    let lookup = |key: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    // Without a (valid) verb the netconf is still parsed, as for ADD.
    let command = match command_from_env(lookup) {
        Ok(command) => command,
        Err(e) => {
            check_error(CniError::from(e));
            Command::Add
        }
    };
    let env = match CniEnv::from_lookup(command, lookup) {
        Ok(env) => env,
        Err(e) => {
            check_error(CniError::from(e));
            CniEnv::default()
        }
    };
    let sniffed = NetConf::sniff_version(stdin);
    match NetConf::parse(stdin) {
        Ok(conf) => {
            assert_eq!(sniffed, Some(conf.cni_version), "sniffed another version");
            let request = conf.attachment_request(&env);
            let json = serde_json::to_vec(&request).expect("a request always serializes");
            let decoded: AttachmentRequest = serde_json::from_slice(&json).unwrap_or_else(|e| {
                panic!(
                    "the agent refuses a request the plugin accepted: {e}\n{}",
                    String::from_utf8_lossy(&json)
                )
            });
            assert_eq!(decoded, request, "the request changed on the way");
            if let Some(valid_attachments) = conf.valid_attachments {
                let gc = GcRequest {
                    network: conf.name,
                    valid_attachments,
                };
                let json = serde_json::to_vec(&gc).expect("a GC request always serializes");
                let decoded: GcRequest =
                    serde_json::from_slice(&json).expect("the agent refuses a GC request");
                assert_eq!(decoded, gc);
            }
        }
        Err(e) => check_error(CniError::from(e)),
    }
});

/// What the plugin prints for a refused input: JSON with a non-zero code.
fn check_error(e: CniError) {
    let version = lanlink_cni::netconf::CniVersion::LATEST;
    let mut out = Vec::new();
    let code = lanlink_cni::reply(&mut out, version, Err(e));
    assert_ne!(code, 0, "a refused input exits 0");
    let value: serde_json::Value =
        serde_json::from_slice(&out).expect("the error output is not JSON");
    assert!(
        value["code"].as_u64().is_some_and(|c| c != 0),
        "an error without a code: {value}"
    );
}
