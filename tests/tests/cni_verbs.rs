//! The CNI verbs of the `lanlink` binary against a real agent and a real
//! dnsmasq: ADD, CHECK, DEL, STATUS, GC and VERSION in every supported spec
//! version; DEL when the netns is gone; CHECK after the pod's routes
//! change; every verb with the agent stopped. Every check looks at the real
//! thing: the lease in dnsmasq's lease file, the pod's interface and
//! routes, the host veths, the pinned maps.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use cni_common::*;
use lanlink_lab::ping;
use lanlink_lab::pods::host_veths;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

mod cni_common;

// ---------------------------------------------------------------------------
// Verbs and versions.

/// Checks an ADD result's shape for `version` against the pod and dnsmasq.
fn check_add_result(lab: &Lab, pod: &Pod, version: &str) -> Result<()> {
    let r = &pod.result;
    let keys: Vec<&str> = r
        .as_object()
        .context("result is not an object")?
        .keys()
        .map(String::as_str)
        .collect();
    ensure!(
        keys == ["cniVersion", "dns", "interfaces", "ips", "routes"],
        "{version}: result keys {keys:?}"
    );
    ensure!(r["cniVersion"] == version, "{version}: {r}");
    let ifs = r["interfaces"].as_array().context("interfaces")?;
    ensure!(ifs.len() == 2, "{version}: interfaces {ifs:?}");
    ensure!(
        ifs[0]["name"].as_str().is_some_and(|n| n.starts_with("ll"))
            && ifs[0].get("sandbox").is_none(),
        "{version}: host veth entry {}",
        ifs[0]
    );
    ensure!(
        ifs[1]["name"] == "eth0" && ifs[1]["sandbox"] == pod.ns.path().display().to_string(),
        "{version}: pod interface entry {}",
        ifs[1]
    );
    ensure!(pod.ns.mac("eth0")? == pod.mac, "{version}: MAC differs");
    let ips = r["ips"].as_array().context("ips")?;
    ensure!(ips.len() == 1, "{version}: ips {ips:?}");
    let ip = &ips[0];
    ensure!(
        ip["address"] == format!("{}/24", pod.ip) && ip["gateway"] == ROUTER.to_string(),
        "{version}: ip {ip}"
    );
    ensure!(ip["interface"] == 1, "{version}: ips[0].interface {ip}");
    let wants_version = version.starts_with("0.");
    ensure!(
        (ip.get("version") == Some(&json!("4"))) == wants_version,
        "{version}: ips[0].version must be {} ({ip})",
        if wants_version { "\"4\"" } else { "absent" }
    );
    let routes = r["routes"].as_array().context("routes")?;
    for want in [
        json!({"dst": "0.0.0.0/0", "gw": ROUTER.to_string()}),
        json!({"dst": "169.254.1.1/32"}),
    ] {
        ensure!(
            routes.contains(&want),
            "{version}: routes {routes:?} lack {want}"
        );
    }
    ensure!(r["dns"].is_object(), "{version}: dns {}", r["dns"]);
    // What the result says is what the pod has and what dnsmasq leased.
    let addr = pod.ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(
        addr.contains(&format!("{}/24", pod.ip)),
        "{version}: pod eth0 {addr}"
    );
    let lease = lab.lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
    ensure!(
        lease.ip == pod.ip,
        "{version}: dnsmasq leased {} to {}, the result says {}",
        lease.ip,
        pod.mac,
        pod.ip
    );
    Ok(())
}

#[test]
fn every_verb_in_every_version() -> Result<()> {
    let lab = lab()?;
    // VERSION needs neither stdin nor the agent.
    let v = lanlink(&lab.node, &[("CNI_COMMAND".into(), "VERSION".into())], b"")?.ok()?;
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["supportedVersions"], json!(VERSIONS));

    for version in VERSIONS {
        let conf = netconf(&lab, version);
        let pod = add(&lab, &format!("v{}", version.replace('.', "")), &conf)?;
        check_add_result(&lab, &pod, version)?;
        let ns = Some(pod.ns.path());

        // CHECK (0.4.0+), with the ADD result as prevResult.
        let chk = verb(
            &lab,
            "CHECK",
            &pod.id,
            ns,
            &with(conf.clone(), "prevResult", pod.result.clone()),
        )?;
        if version < "0.4.0" {
            chk.error(1, "does not allow CHECK")?;
        } else {
            chk.ok_silent()
                .with_context(|| format!("{version} CHECK; agent log:\n{}", lab.agent.log()))?;
        }

        // STATUS and GC (1.1.0).
        let status = verb(&lab, "STATUS", &pod.id, None, &conf)?;
        let valid = json!([{"containerID": pod.id, "ifname": "eth0"}]);
        let gc = verb(
            &lab,
            "GC",
            &pod.id,
            None,
            &with(conf.clone(), "cni.dev/valid-attachments", valid),
        )?;
        if version == "1.1.0" {
            status.ok_silent()?;
            gc.ok_silent()?;
            ensure!(
                host_veths(&lab.node)?.contains(&pod.host_veth),
                "GC removed a valid attachment"
            );
        } else {
            status.error(1, "does not allow STATUS")?;
            gc.error(1, "does not allow GC")?;
        }

        // DEL removes everything; a second DEL succeeds too.
        verb(&lab, "DEL", &pod.id, ns, &conf)?.ok_silent()?;
        assert_gone(&lab, &pod)?;
        verb(&lab, "DEL", &pod.id, ns, &conf)?
            .ok_silent()
            .context("a second DEL must succeed")?;
    }
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 0);
    ensure!(host_veths(&lab.node)?.is_empty());
    Ok(())
}

#[test]
fn del_succeeds_and_cleans_up_when_the_netns_vanished() -> Result<()> {
    let lab = lab()?;
    let conf = netconf(&lab, "1.1.0");
    for (name, pass_netns) in [("gone1", true), ("gone2", false)] {
        let pod = add(&lab, name, &conf)?;
        let netns_path: PathBuf = pod.ns.path().to_owned();
        ensure!(host_veths(&lab.node)?.contains(&pod.host_veth));
        // The runtime deleted the pod's namespace first (and with it the
        // veth pair), then runs DEL: with the dead path, or with none.
        let Pod {
            ns,
            id,
            mac,
            host_veth,
            ..
        } = pod;
        drop(ns);
        ensure!(!netns_path.exists());
        let env = runtime_env("DEL", &id, pass_netns.then_some(netns_path.as_path()));
        lanlink(&lab.node, &env, conf.to_string().as_bytes())?
            .ok_silent()
            .with_context(|| {
                format!(
                    "DEL after the netns vanished; agent log:\n{}",
                    lab.agent.log()
                )
            })?;
        assert_released(&lab, &host_veth, &mac)?;
        lanlink(&lab.node, &env, conf.to_string().as_bytes())?.ok_silent()?;
    }
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 0);
    ensure!(map_entries(&lab.agent, "EP_BY_MAC")? == 0);
    let endpoints: Value = serde_json::from_str(&cli(&lab, &["endpoints", "--json"])?)?;
    ensure!(endpoints == json!([]), "agent still lists {endpoints}");
    Ok(())
}

#[test]
fn check_fails_after_the_pods_routes_change() -> Result<()> {
    let lab = lab()?;
    let conf = netconf(&lab, "1.0.0");
    let pod = add(&lab, "checked", &conf)?;
    let ns = Some(pod.ns.path());
    let check_conf = with(conf.clone(), "prevResult", pod.result.clone());
    let check = || verb(&lab, "CHECK", &pod.id, ns, &check_conf);
    check()?.ok_silent()?;

    // Someone removes a route the agent wrote in the pod (the default
    // route, then the gateway route to 169.254.1.1): CHECK fails, naming
    // it; put back as the agent wrote it, CHECK passes again.
    let (router, src) = (ROUTER.to_string(), pod.ip.to_string());
    let routes: [(&[&str], &[&str], &str); 2] = [
        (
            &["default"],
            &["default", "via", &router, "dev", "eth0", "src", &src],
            "route 0.0.0.0/0",
        ),
        (
            &["169.254.1.1/32", "dev", "eth0"],
            &[
                "169.254.1.1/32",
                "dev",
                "eth0",
                "scope",
                "link",
                "src",
                &src,
            ],
            "169.254.1.1",
        ),
    ];
    for (del, add, named) in routes {
        pod.ns.ip(&[&["route", "del"], del].concat())?;
        check()?.error(103, named)?;
        pod.ns.ip(&[&["route", "add"], add].concat())?;
        check()?.ok_silent()?;
    }

    // A prevResult that does not match what the agent made fails too.
    let mut wrong = pod.result.clone();
    wrong["ips"][0]["address"] = json!("198.18.0.250/24");
    verb(
        &lab,
        "CHECK",
        &pod.id,
        ns,
        &with(conf.clone(), "prevResult", wrong),
    )?
    .error(103, "198.18.0.")?;
    // CHECK needs a prevResult.
    verb(&lab, "CHECK", &pod.id, ns, &conf)?.error(7, "prevResult")?;
    // An unknown attachment fails CHECK.
    verb(&lab, "CHECK", "no-such-container", ns, &check_conf)?.error(103, "no attachment")?;

    // The address removed: CHECK fails.
    pod.ns
        .ip(&["addr", "del", &format!("{}/24", pod.ip), "dev", "eth0"])?;
    check()?.error(103, "lacks")?;

    verb(&lab, "DEL", &pod.id, ns, &conf)?.ok_silent()?;
    assert_gone(&lab, &pod)?;
    Ok(())
}

#[test]
fn verbs_with_the_agent_stopped() -> Result<()> {
    let mut lab = lab()?;
    let conf = netconf(&lab, "1.1.0");
    verb(&lab, "STATUS", "x", None, &conf)?.ok_silent()?;
    let pod = add(&lab, "survivor", &conf)?;
    let ns = Some(pod.ns.path());

    lab.agent.kill(Signal::SIGTERM)?;
    // STATUS: 50, with a hint.
    let err = verb(&lab, "STATUS", "x", None, &conf)?.error(50, "agent not reachable")?;
    ensure!(
        err["details"]
            .as_str()
            .is_some_and(|d| d.contains("lanlinkd")),
        "{err}"
    );
    // ADD, CHECK and GC: 11, so the runtime retries.
    let other = lab.node.pod_netns("later")?;
    verb(&lab, "ADD", "later", Some(other.path()), &conf)?.error(11, "agent not reachable")?;
    verb(
        &lab,
        "CHECK",
        &pod.id,
        ns,
        &with(conf.clone(), "prevResult", pod.result.clone()),
    )?
    .error(11, "agent not reachable")?;
    gc(&lab, &conf, json!([]))?.error(11, "agent not reachable")?;
    // Forwarding goes on without the agent.
    let p = ping(&pod.ns, ROUTER, 3, Duration::from_secs(5))?;
    ensure!(
        p.all_received(),
        "pod → router with the agent down: {}",
        p.summary
    );
    // DEL succeeds (the pod does not stay Terminating): queued for the
    // agent, which runs it at its next start, before it serves.
    verb(&lab, "DEL", &pod.id, ns, &conf)?.ok_silent()?;
    let queue = lab.agent.state_dir().join("del-queue");
    let queued = std::fs::read_dir(&queue)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    ensure!(queued == 1, "{queued} entries in {}", queue.display());

    lab.agent.restart()?;
    verb(&lab, "STATUS", "x", None, &conf)?.ok_silent()?;
    assert_gone(&lab, &pod)?;
    // Still idempotent.
    verb(&lab, "DEL", &pod.id, ns, &conf)?.ok_silent()?;
    Ok(())
}

#[test]
fn gc_removes_every_attachment_not_listed() -> Result<()> {
    let lab = lab()?;
    let conf = netconf(&lab, "1.1.0");
    let other_conf = with(conf.clone(), "name", json!("other-net"));
    let keep = add(&lab, "keep", &conf)?;
    let stale1 = add(&lab, "stale1", &conf)?;
    let stale2 = add(&lab, "stale2", &conf)?;
    let elsewhere = add(&lab, "elsewhere", &other_conf)?;
    for pod in [&keep, &stale1, &stale2, &elsewhere] {
        lab.lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
    }
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 4);

    // GC needs the list.
    verb(&lab, "GC", "x", None, &conf)?.error(7, "cni.dev/valid-attachments")?;

    let valid = json!([
        {"containerID": keep.id, "ifname": "eth0"},
        // Listed but on another interface: not valid.
        {"containerID": stale2.id, "ifname": "net1"},
    ]);
    gc(&lab, &conf, valid)?
        .ok_silent()
        .with_context(|| format!("GC; agent log:\n{}", lab.agent.log()))?;
    assert_gone(&lab, &stale1)?;
    assert_gone(&lab, &stale2)?;
    // The valid one and the other network's are untouched, and still work.
    let veths = host_veths(&lab.node)?;
    ensure!(
        veths.contains(&keep.host_veth) && veths.contains(&elsewhere.host_veth) && veths.len() == 2,
        "veths after GC: {veths:?}"
    );
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 2);
    ensure!(map_entries(&lab.agent, "EP_BY_MAC")? == 2);
    let leased: Vec<String> = lab.lan.leases().into_iter().map(|l| l.mac).collect();
    ensure!(
        leased.contains(&keep.mac) && leased.contains(&elsewhere.mac),
        "leases after GC: {leased:?}"
    );
    let p = ping(&keep.ns, ROUTER, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "kept pod → router: {}", p.summary);

    // DEL after GC succeeds (nothing left to do).
    verb(&lab, "DEL", &stale1.id, Some(stale1.ns.path()), &conf)?.ok_silent()?;
    // An empty list removes the rest of this network, not the other one's.
    gc(&lab, &conf, json!([]))?.ok_silent()?;
    assert_gone(&lab, &keep)?;
    ensure!(host_veths(&lab.node)? == std::slice::from_ref(&elsewhere.host_veth));
    verb(
        &lab,
        "DEL",
        &elsewhere.id,
        Some(elsewhere.ns.path()),
        &other_conf,
    )?
    .ok_silent()?;
    assert_gone(&lab, &elsewhere)?;
    Ok(())
}
