//! Crash consistency (issue 15 item 2): the agent is killed at named points
//! of ADD and DEL (its debug-build fault injection, `LANLINK_TEST_CRASH_AT`
//! naming a file that holds the point: the agent removes the file and
//! SIGKILLs itself there), then restarted. After the restart exactly the
//! attachments that exist are adopted (the pod pings the LAN), half-made
//! ones are removed or repaired, orphans are gone (no host veth, no map
//! entry, no pin, no uplink filter entry, no lease on the DHCP server), and
//! the agent's log names each action. Every absence is checked against the
//! same check seeing the thing before the restart.
//!
//! Also: a leftover temporary state file is removed at start, and a state
//! file that does not decode stops the agent from starting (naming the
//! file) while the pods keep forwarding.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_api::client::AgentClient;
use lanlink_lab::agent::AgentOptions;
use lanlink_lab::cleanup::LabDir;
use lanlink_lab::lan::LanOptions;
use lanlink_lab::netns::NetNs;
use lanlink_lab::ping::ping;
use lanlink_lab::pods::{self, Pod, add_pod, del, del_pod, host_veths, try_add, uc_filter};
use lanlink_lab::{OneNode, lab_netconf};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The debug-build fault injection's variable (`lanlinkd`'s
/// `agent::CRASH_AT_ENV`).
const CRASH_AT_ENV: &str = "LANLINK_TEST_CRASH_AT";

/// A lab whose agent honours a crash file.
struct Lab {
    lab: OneNode,
    trigger: PathBuf,
    _dir: LabDir,
}

impl Lab {
    fn start() -> Result<Self> {
        lanlink_lab::require_root();
        let dir = LabDir::new("crash")?;
        let trigger = dir.path().join("crash-at");
        let opts = AgentOptions {
            env: vec![(CRASH_AT_ENV.into(), trigger.display().to_string())],
            ..AgentOptions::default()
        };
        let lab = OneNode::start_with(LanOptions::default(), opts)?;
        Ok(Self {
            lab,
            trigger,
            _dir: dir,
        })
    }

    /// The agent dies at `point` the next time it gets there.
    fn arm(&self, point: &str) -> Result<()> {
        std::fs::write(&self.trigger, point).context("write the crash file")
    }

    /// Waits for the agent to have killed itself at `point`.
    fn wait_crashed(&mut self, point: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.lab.agent.is_running() {
            if Instant::now() > deadline {
                bail!(
                    "the agent did not crash at {point}; log:\n{}",
                    self.lab.agent.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = self.lab.agent.kill(Signal::SIGKILL)?;
        ensure!(
            status.signal() == Some(Signal::SIGKILL as i32),
            "the agent ended with {status}, not SIGKILL; log:\n{}",
            self.lab.agent.log()
        );
        ensure!(
            self.lab.agent.log().contains("crash injected") && !self.trigger.exists(),
            "no injected crash at {point} in the log:\n{}",
            self.lab.agent.log()
        );
        Ok(())
    }

    /// An ADD of pod `name` killed after its endpoint was registered, whose
    /// in-flight record is then lost (removed here): what it made is known
    /// only by its marks. Returns its namespace, container id, host veth
    /// and netconf.
    fn crash_losing_record(&mut self, name: &str) -> Result<(NetNs, String, String, Value)> {
        let ns = self.lab.node.pod_netns(name)?;
        let container_id = format!("{}-{name}", ns.name());
        let netconf = lab_netconf(&self.lab.agent);
        self.arm("add-registered")?;
        let out = try_add(&self.lab.node, &ns, &container_id, name, &netconf)?;
        ensure!(!out.success());
        self.wait_crashed("add-registered")?;
        let veth = host_veth_name(&container_id);
        let adding = self.lab.agent.state_dir().join("adding");
        std::fs::remove_file(adding.join(format!("{veth}.json"))).context("remove the record")?;
        Ok((ns, container_id, veth, netconf))
    }

    /// Restarts the agent; returns what it logged in this run.
    fn restart(&mut self) -> Result<String> {
        let before = self.lab.agent.log().len();
        self.lab.agent.restart()?;
        // Start-up is done once the socket serves: the log of it is there.
        Ok(self.lab.agent.log()[before..].to_string())
    }
}

/// What lanlink has on the node, as the kernel and the DHCP server say.
#[derive(Debug, PartialEq)]
struct Seen {
    veths: Vec<String>,
    uc_filter: Vec<String>,
    ep_by_if: usize,
    ep_by_mac: usize,
    ep_guard: usize,
    pins: Vec<String>,
    lease_macs: Vec<String>,
}

fn seen(lab: &OneNode) -> Result<Seen> {
    let pin = lab.agent.pin_dir();
    let mut veths = host_veths(&lab.node)?;
    veths.sort();
    let mut uc = uc_filter(&lab.node)?;
    uc.sort();
    let mut lease_macs: Vec<String> = lab.lan.leases().into_iter().map(|l| l.mac).collect();
    lease_macs.sort();
    Ok(Seen {
        veths,
        uc_filter: uc,
        ep_by_if: pods::map_len(pin, "EP_BY_IF")?,
        ep_by_mac: pods::map_len(pin, "EP_BY_MAC")?,
        ep_guard: pods::map_len(pin, "EP_GUARD")?,
        pins: pods::pinned_links(pin)?,
        lease_macs,
    })
}

/// The container ids the agent serves (`GET /v1/endpoints`).
fn endpoints(lab: &OneNode) -> Result<Vec<String>> {
    let mut ids: Vec<String> = AgentClient::new(lab.agent.socket())
        .endpoints()?
        .into_iter()
        .map(|e| e.container_id)
        .collect();
    ids.sort();
    Ok(ids)
}

/// The MAC of `eth0` in `ns` (lower case).
fn pod_mac(ns: &NetNs) -> Result<String> {
    let out = ns.ip(&["-o", "link", "show", "eth0"])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_ascii_lowercase)
        .with_context(|| format!("no MAC for eth0 in {out}"))
}

/// The host veth the agent names for `container_id`/eth0 (the same FNV-1a
/// as `lanlinkd`'s `host_veth_name`).
fn host_veth_name(container_id: &str) -> String {
    let h = format!("{container_id}/eth0")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("ll{:012x}", h & 0xffff_ffff_ffff)
}

/// The pod reaches the LAN host (its attachment forwards).
fn ensure_forwards(lab: &OneNode, ns: &NetNs, what: &str) -> Result<()> {
    let stats = ping(ns, lab.host.ip(), 3, Duration::from_secs(5))?;
    ensure!(
        stats.all_received(),
        "{what}: ping {}: {}",
        lab.host.ip(),
        stats.summary
    );
    Ok(())
}

/// The line of `log` that has `message` and names `attachment`.
fn log_line<'a>(log: &'a str, message: &str, attachment: &str) -> Result<&'a str> {
    log.lines()
        .find(|l| l.contains(message) && l.contains(attachment))
        .with_context(|| format!("no \"{message}\" for {attachment} in the log:\n{log}"))
}

/// The in-flight ADD records the agent keeps (none once it served).
fn adding_records(lab: &OneNode) -> Result<Vec<String>> {
    let dir = lab.agent.state_dir().join("adding");
    let mut names = Vec::new();
    if dir.is_dir() {
        for e in std::fs::read_dir(&dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

/// A crash at each point of an ADD before its commit (veth made; lease
/// obtained and pod configured; endpoint registered) leaves a half-made
/// attachment; the restart removes all of it (lease released on the
/// server), keeps the live pod forwarding, and logs what it removed. The
/// runtime's DEL and a new ADD of the same pod then work.
#[test]
fn an_add_interrupted_before_its_commit_is_removed_at_restart() -> Result<()> {
    let mut l = Lab::start()?;
    let keeper = add_pod(&l.lab.node, &l.lab.agent, "keeper")?;
    let clean = seen(&l.lab)?;
    ensure!(clean.veths.len() == 1 && clean.ep_by_if == 1, "{clean:?}");

    for (i, (point, leased, registered)) in [
        ("add-veth", false, false),
        ("add-leased", true, true),
        ("add-registered", true, true),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("half{i}");
        let ns = l.lab.node.pod_netns(&name)?;
        let container_id = format!("{}-{name}", ns.name());
        let netconf = lab_netconf(&l.lab.agent);
        l.arm(point)?;
        let out = try_add(&l.lab.node, &ns, &container_id, &name, &netconf)?;
        ensure!(!out.success(), "{point}: ADD succeeded through a crash");
        l.wait_crashed(point)?;

        // Positive controls: the half-made attachment is there.
        let mac = pod_mac(&ns)?;
        let veth = host_veth_name(&container_id);
        let before = seen(&l.lab)?;
        ensure!(before.veths.contains(&veth), "{point}: {before:?}");
        // The filter entry comes right after the veth.
        ensure!(
            before.uc_filter.contains(&mac) == (point != "add-veth"),
            "{point}: {before:?}"
        );
        ensure!(
            before.lease_macs.contains(&mac) == leased,
            "{point}: lease {mac} in {:?}",
            before.lease_macs
        );
        if registered {
            ensure!(
                before.ep_by_if == 2 && before.pins.len() == 5,
                "{point}: {before:?}"
            );
        }
        ensure!(adding_records(&l.lab)?.len() == 1);

        let log = l.restart()?;
        let line = log_line(&log, "half-made ADD removed", &container_id)?;
        eprintln!("{point}: {line}");
        for done in ["host veth deleted", "uplink filter entry removed"] {
            ensure!(line.contains(done), "{point}: no \"{done}\" in {line}");
        }
        if leased {
            for done in ["lease released", "TC detached", "map entries removed"] {
                ensure!(line.contains(done), "{point}: no \"{done}\" in {line}");
            }
            l.lab.lan.wait_for_no_lease(&mac, Duration::from_secs(5))?;
        }
        let after = seen(&l.lab)?;
        ensure!(
            after == clean,
            "{point}: after the restart {after:?}, want {clean:?}"
        );
        ensure!(endpoints(&l.lab)? == [keeper.container_id.as_str()]);
        ensure!(adding_records(&l.lab)?.is_empty(), "records left");
        ensure_forwards(&l.lab, &keeper.ns, &format!("keeper after {point}"))?;

        // The runtime's DEL of the failed ADD, then its retry.
        del(&l.lab.node, &l.lab.agent, &container_id, &ns, &netconf)?;
        if i == 2 {
            let out = try_add(&l.lab.node, &ns, &container_id, &name, &netconf)?;
            ensure!(out.success(), "ADD retried after {point}: {out:?}");
            ensure_forwards(&l.lab, &ns, "the retried ADD")?;
            del(&l.lab.node, &l.lab.agent, &container_id, &ns, &netconf)?;
        }
    }
    del_pod(&l.lab.node, &l.lab.agent, &keeper)?;
    Ok(())
}

/// A crash right after the state holds the attachment (before the answer):
/// the restart adopts it (it forwards, keeps its lease) and drops the
/// in-flight record.
#[test]
fn an_add_interrupted_after_its_commit_is_adopted_at_restart() -> Result<()> {
    let mut l = Lab::start()?;
    let name = "late";
    let ns = l.lab.node.pod_netns(name)?;
    let container_id = format!("{}-{name}", ns.name());
    let netconf = lab_netconf(&l.lab.agent);
    l.arm("add-committed")?;
    let out = try_add(&l.lab.node, &ns, &container_id, name, &netconf)?;
    ensure!(!out.success(), "ADD succeeded through a crash");
    l.wait_crashed("add-committed")?;
    let mac = pod_mac(&ns)?;
    ensure!(adding_records(&l.lab)?.len() == 1);

    let log = l.restart()?;
    log_line(&log, "in-flight record dropped", &container_id)?;
    log_line(&log, "re-adopted", &container_id)?;
    ensure!(!log.contains("half-made"), "log:\n{log}");
    ensure!(endpoints(&l.lab)? == [container_id.as_str()]);
    ensure!(adding_records(&l.lab)?.is_empty());
    let s = seen(&l.lab)?;
    ensure!(
        s.veths.len() == 1 && s.ep_by_if == 1 && s.pins.len() == 3,
        "{s:?}"
    );
    ensure!(s.lease_macs.contains(&mac), "lease kept: {s:?}");
    ensure_forwards(&l.lab, &ns, "adopted after add-committed")?;
    del(&l.lab.node, &l.lab.agent, &container_id, &ns, &netconf)?;
    l.lab.lan.wait_for_no_lease(&mac, Duration::from_secs(5))?;
    Ok(())
}

/// A crash in each step of a DEL: after the programs were detached the
/// attachment is repaired (programs re-attached) and adopted, forwarding
/// again until the runtime's retried DEL; after the veth was deleted (lease
/// not released yet, or released but the state not written) the restart
/// finishes the DEL: lease released on the server, nothing left.
#[test]
fn a_del_interrupted_is_repaired_or_finished_at_restart() -> Result<()> {
    let mut l = Lab::start()?;
    let keeper = add_pod(&l.lab.node, &l.lab.agent, "keeper")?;
    let clean = seen(&l.lab)?;
    for point in ["del-detached", "del-veth-deleted", "del-released"] {
        let pod: Pod = add_pod(&l.lab.node, &l.lab.agent, "gone")?;
        let veth = host_veth_name(&pod.container_id);
        l.arm(point)?;
        let call_failed = del_pod(&l.lab.node, &l.lab.agent, &pod).is_err();
        ensure!(call_failed, "{point}: DEL succeeded through a crash");
        l.wait_crashed(point)?;
        let before = seen(&l.lab)?;
        // Positive control: the lease is on the server until the restart
        // releases it (at del-released, the RELEASE was sent already).
        if point != "del-released" {
            ensure!(before.lease_macs.contains(&pod.mac), "{point}: {before:?}");
        }
        let log = l.restart()?;
        if point == "del-detached" {
            ensure!(
                before.veths.contains(&veth) && before.pins.len() == 3,
                "{point}: {before:?}"
            );
            let line = log_line(&log, "half-made attachment repaired", &pod.container_id)?;
            eprintln!("{point}: {line}");
            ensure!(line.contains("TC re-attached"), "{line}");
            let s = seen(&l.lab)?;
            ensure!(s.pins.len() == 5 && s.ep_by_if == 2, "repaired: {s:?}");
            ensure_forwards(&l.lab, &pod.ns, "repaired after del-detached")?;
        } else {
            ensure!(!before.veths.contains(&veth), "{point}: {before:?}");
            let line = log_line(&log, "veth vanished", &pod.container_id)?;
            eprintln!("{point}: {line}");
            log_line(&log, "removed", &pod.container_id)?;
            ensure!(!log.contains("cleanup failed"), "{log}");
            // Finished by the restart itself, before any retry.
            ensure!(endpoints(&l.lab)? == [keeper.container_id.as_str()]);
            l.lab
                .lan
                .wait_for_no_lease(&pod.mac, Duration::from_secs(5))?;
            let s = seen(&l.lab)?;
            ensure!(
                s == clean,
                "{point}: after the restart {s:?}, want {clean:?}"
            );
        }
        // The runtime retries the DEL: everything of the pod is gone.
        del_pod(&l.lab.node, &l.lab.agent, &pod)?;
        l.lab
            .lan
            .wait_for_no_lease(&pod.mac, Duration::from_secs(5))?;
        let after = seen(&l.lab)?;
        ensure!(after == clean, "{point}: after {after:?}, want {clean:?}");
        ensure_forwards(&l.lab, &keeper.ns, &format!("keeper after {point}"))?;
    }
    del_pod(&l.lab.node, &l.lab.agent, &keeper)?;
    Ok(())
}

/// What no record names is found by its marks: a crash before the commit
/// whose in-flight record is lost (here: removed by hand) leaves an orphan
/// host veth, pins and map entries; the restart removes them, logged. A
/// veth with a lanlink-like name but a MAC lanlink would not give it is
/// not lanlink's and stays.
#[test]
fn orphans_without_a_record_are_removed_at_restart() -> Result<()> {
    let mut l = Lab::start()?;
    let keeper = add_pod(&l.lab.node, &l.lab.agent, "keeper")?;
    let clean = seen(&l.lab)?;
    let (ns, container_id, veth, netconf) = l.crash_losing_record("orphan")?;
    // Not lanlink's: the name pattern, a MAC of its own.
    let foreign = "ll0123456789ab";
    l.lab.node.ns().ip(&[
        "link",
        "add",
        foreign,
        "address",
        "02:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "llpeer0",
    ])?;
    let before = seen(&l.lab)?;
    ensure!(before.veths.contains(&veth) && before.ep_by_if == 2 && before.pins.len() == 5);

    let log = l.restart()?;
    let line = log_line(&log, "orphan host veth removed", &veth)?;
    eprintln!("{line}");
    for done in ["TC detached", "map entries removed", "host veth deleted"] {
        ensure!(line.contains(done), "no \"{done}\" in {line}");
    }
    let mut after = seen(&l.lab)?;
    ensure!(
        after.veths.contains(&foreign.to_string()),
        "the foreign veth stays: {after:?}"
    );
    after.veths.retain(|v| v != foreign && v != "llpeer0");
    // The lease of an ADD whose record was lost stays until it expires (or
    // the pod's retried ADD takes it again): the one known limit.
    after.lease_macs.retain(|m| clean.lease_macs.contains(m));
    ensure!(after == clean, "after {after:?}, want {clean:?}");
    ensure_forwards(&l.lab, &keeper.ns, "keeper after the sweep")?;
    l.lab.node.ns().ip(&["link", "del", foreign])?;
    del(&l.lab.node, &l.lab.agent, &container_id, &ns, &netconf)?;
    del_pod(&l.lab.node, &l.lab.agent, &keeper)?;
    Ok(())
}

/// Pins and map entries of no attachment and no veth (a crash before the
/// commit, its record lost, then the pod's namespace deleted while the agent
/// was down, taking the veth pair) are removed at restart, logged.
#[test]
fn orphan_pins_and_map_entries_are_removed_at_restart() -> Result<()> {
    let mut l = Lab::start()?;
    let keeper = add_pod(&l.lab.node, &l.lab.agent, "keeper")?;
    let clean = seen(&l.lab)?;
    let (ns, _, veth, _) = l.crash_losing_record("vanished")?;
    drop(ns); // the pod's namespace goes, and the veth pair with it
    // The kernel dismantles a namespace asynchronously.
    lanlink_lab::wait_until(Duration::from_secs(10), "the veth pair to go", || {
        Ok((!host_veths(&l.lab.node)?.contains(&veth)).then_some(()))
    })?;
    let before = seen(&l.lab)?;
    ensure!(
        !before.veths.contains(&veth) && before.ep_by_if == 2 && before.pins.len() == 5,
        "{before:?}"
    );

    let log = l.restart()?;
    let line = log_line(&log, "orphan TC attachment removed", &veth)?;
    eprintln!("{line}");
    let line = log
        .lines()
        .find(|l| l.contains("orphan map entries removed"))
        .with_context(|| {
            format!(
                "no orphan map entries in the log:
{log}"
            )
        })?;
    eprintln!("{line}");
    let mut after = seen(&l.lab)?;
    after.lease_macs.retain(|m| clean.lease_macs.contains(m));
    ensure!(after == clean, "after {after:?}, want {clean:?}");
    ensure_forwards(&l.lab, &keeper.ns, "keeper after the sweep")?;
    del_pod(&l.lab.node, &l.lab.agent, &keeper)?;
    Ok(())
}

/// The state file at restart: a temporary file of an interrupted write is
/// removed (logged) and the state loads; a state file that does not decode
/// stops the agent from starting, naming the file, while the pod keeps
/// forwarding on the pinned programs; restored, the agent adopts the pod.
#[test]
fn a_torn_temp_file_is_removed_and_a_corrupt_state_file_refused() -> Result<()> {
    let mut l = Lab::start()?;
    let pod = add_pod(&l.lab.node, &l.lab.agent, "p1")?;
    let state = l.lab.agent.state_dir().join("endpoints.json");
    let tmp = l.lab.agent.state_dir().join(".endpoints.json.tmp-writer");
    let good = std::fs::read(&state)?;

    l.lab.agent.kill(Signal::SIGKILL)?;
    std::fs::write(&tmp, &good[..good.len() / 2])?;
    let log = l.restart()?;
    ensure!(!tmp.exists(), "the temporary file is removed");
    ensure!(
        log.contains("removed the temporary file of an interrupted state write"),
        "{log}"
    );
    ensure!(endpoints(&l.lab)? == [pod.container_id.as_str()]);

    l.lab.agent.kill(Signal::SIGKILL)?;
    std::fs::write(&state, &good[..good.len() / 2])?;
    let err = l
        .lab
        .agent
        .restart()
        .expect_err("the agent starts over a corrupt state");
    let log = l.lab.agent.log();
    ensure!(
        log.contains("is corrupt") && log.contains(&*state.to_string_lossy()),
        "{err:#}\n{log}"
    );
    ensure!(
        std::fs::read(&state)? == good[..good.len() / 2],
        "the file is left as it was"
    );
    ensure_forwards(&l.lab, &pod.ns, "with the agent refusing to start")?;
    std::fs::write(&state, &good)?;
    l.restart()?;
    ensure!(endpoints(&l.lab)? == [pod.container_id.as_str()]);
    ensure_forwards(&l.lab, &pod.ns, "after the state was restored")?;
    del_pod(&l.lab.node, &l.lab.agent, &pod)?;
    Ok(())
}
