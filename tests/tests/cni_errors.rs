//! CNI input errors of the `lanlink` binary: every malformed call gets its
//! spec error code and a message naming the problem; unknown netconf keys
//! are accepted, as the spec requires.

use anyhow::{Context as _, Result, ensure};
use cni_common::*;
use lanlink_lab::pods::host_veths;
use serde_json::json;

mod cni_common;

#[test]
fn input_errors_have_spec_codes_and_unknown_keys_are_accepted() -> Result<()> {
    let lab = lab()?;
    let pod_ns = lab.node.pod_netns("inputs")?;
    let ns = Some(pod_ns.path());
    let conf = netconf(&lab, "1.0.0");
    let id = format!("{}-x", pod_ns.name());

    // Malformed JSON: 6, for every verb that reads stdin.
    for command in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
        let env = runtime_env(command, &id, ns);
        lanlink(&lab.node, &env, b"{\"cniVersion\": \"1.0.0\", \"name\": ")?
            .error(6, "invalid netconf JSON")
            .with_context(|| format!("{command} with truncated JSON"))?;
        lanlink(&lab.node, &env, b"[1, 2]")?
            .error(6, "expected an object")
            .with_context(|| format!("{command} with an array"))?;
    }

    // Missing or bad environment: 4, naming the variable.
    for (command, var) in [
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_CONTAINERID"),
        ("ADD", "CNI_IFNAME"),
        ("ADD", "CNI_PATH"),
        ("CHECK", "CNI_NETNS"),
        ("DEL", "CNI_CONTAINERID"),
        ("DEL", "CNI_IFNAME"),
        ("ADD", "CNI_COMMAND"),
    ] {
        let mut env = runtime_env(command, &id, ns);
        env.retain(|(k, _)| k != var);
        lanlink(&lab.node, &env, conf.to_string().as_bytes())?
            .error(4, var)
            .with_context(|| format!("{command} without {var}"))?;
    }
    let mut env = runtime_env("ADD", &id, ns);
    env[0].1 = "ATTACH".into();
    lanlink(&lab.node, &env, conf.to_string().as_bytes())?.error(4, "ATTACH")?;
    let mut env = runtime_env("ADD", "bad/id", ns);
    env.retain(|(k, _)| k != "CNI_ARGS");
    lanlink(&lab.node, &env, conf.to_string().as_bytes())?.error(4, "CNI_CONTAINERID")?;

    // Unsupported or missing cniVersion: 1 (7 when absent: a missing field).
    for bad in ["0.2.0", "0.1.0", "1.2.0", "2.0.0"] {
        verb(
            &lab,
            "ADD",
            &id,
            ns,
            &with(conf.clone(), "cniVersion", json!(bad)),
        )?
        .error(1, bad)
        .with_context(|| format!("cniVersion {bad}"))?;
    }
    let mut no_version = conf.clone();
    no_version.as_object_mut().unwrap().remove("cniVersion");
    verb(&lab, "ADD", &id, ns, &no_version)?.error(7, "cniVersion")?;

    // Invalid known keys: 7, naming the field.
    for (key, value, field) in [
        ("type", json!("bridge"), "type"),
        ("mode", json!("l2"), "mode"),
        (
            "hostRoutes",
            json!(["10.96.0.0/12", "10.0.0.1/33"]),
            "hostRoutes[1]",
        ),
        ("mtu", json!(20), "mtu"),
        ("ipam", json!({"type": "host-local"}), "ipam.type"),
        ("socketPath", json!("relative.sock"), "socketPath"),
    ] {
        let err = verb(&lab, "ADD", &id, ns, &with(conf.clone(), key, value))?
            .error(7, field)
            .with_context(|| format!("bad {key}"))?;
        // Errors are written in the netconf's version.
        ensure!(err["cniVersion"] == "1.0.0", "{err}");
    }
    // None of that reached the agent or the LAN.
    ensure!(
        host_veths(&lab.node)?.is_empty(),
        "a failed ADD left a veth"
    );
    ensure!(
        lab.lan.leases().is_empty(),
        "a failed ADD leased: {:?}",
        lab.lan.leases()
    );

    // Unknown keys (top level, in ipam, runtimeConfig, args, capabilities)
    // and unknown CNI_ARGS are accepted.
    let mut generous = conf.clone();
    generous["someVendorKey"] = json!({"nested": [1, 2, 3]});
    generous["capabilities"] = json!({"portMappings": true});
    generous["runtimeConfig"] = json!({"portMappings": [], "mac": "aa:bb:cc:dd:ee:ff"});
    generous["args"] = json!({"cni": {"labels": [{"key": "app", "value": "web"}]}});
    generous["ipam"] = json!({"type": "lanlink-dhcp", "timeoutMs": 5000, "futureKnob": true});
    let mut env = runtime_env("ADD", &id, ns);
    env.iter_mut()
        .find(|(k, _)| k == "CNI_ARGS")
        .unwrap()
        .1
        .push_str(";K8S_POD_INFRA_CONTAINER_ID=abc;SOMETHING_ELSE=1");
    let result = lanlink(&lab.node, &env, generous.to_string().as_bytes())?
        .ok()
        .with_context(|| format!("ADD with unknown keys; agent log:\n{}", lab.agent.log()))?;
    ensure!(result["ips"][0]["address"].is_string(), "{result}");
    verb(&lab, "DEL", &id, ns, &generous)?.ok_silent()?;
    ensure!(host_veths(&lab.node)?.is_empty());
    Ok(())
}
