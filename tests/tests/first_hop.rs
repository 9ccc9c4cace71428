//! First-hop security (issue 12): a compromised pod must not harm the LAN.
//!
//! Each attack is made from inside a pod with frames `lab-craft` forges,
//! and watched where it would do harm: on the node's port of the LAN bridge
//! (tcpdump, or an exact nftables counter for the storm), in dnsmasq's log
//! and lease file, in the LAN host's neighbour cache and addresses, and in
//! another pod. None may get through, and each must be counted under its
//! drop reason, in the agent's totals and in the attacker's own endpoint
//! row (`GET /v1/endpoints`, `drops`), not in another pod's. With the
//! matching `portSecurity` switch the legitimate version gets through (a
//! DHCP server pod's OFFER, a router pod's RA), and so does a pod's honest
//! traffic (its own DISCOVER, IPv6 from its link-local and from an address
//! it claimed). A broadcast storm is cut to the pod's rate while another
//! pod's ping to the router loses nothing.
//!
//! Every capture ends on a sentinel: an honest frame sent after the attack,
//! on the same path. Once a capture shows the sentinel, an attack frame
//! that got through would already be in it, so no test waits for a capture
//! to time out. Each test builds its own lab, so they run in parallel.
//!
//! Every check of a test is made and reported even when an earlier one
//! failed, so one run shows everything that got through.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_lab::capture::{Capture, Packet};
use lanlink_lab::cleanup::LabDir;
use lanlink_lab::firsthop::{self, FrameCounter};
use lanlink_lab::ping::BgPing;
use lanlink_lab::pods::{self, Pod, add_pod, add_pod_with};
use lanlink_lab::{Agent, NetNs, OneNode, ROUTER, lab_netconf, ping, traffic, wait_until};
use serde_json::{Value, json};

/// The frame-crafting tool (a binary of `lanlink-lab`).
static LAB_CRAFT: LazyLock<PathBuf> =
    LazyLock::new(|| lanlink_lab::tool("lab-craft").expect("the lab-craft tool"));

/// How long a capture may run at most (each test ends its own sooner).
const CAPTURE_LIMIT: Duration = Duration::from_secs(25);

/// The broadcast storm: frames, seconds, and the pod's default limit
/// (`portSecurity.broadcastPps` and `broadcastBurst`), with a small margin
/// for the token bucket's timing.
const STORM_FRAMES: u64 = 60_000;
const STORM_SECONDS: u64 = 3;
const BROADCAST_PPS: u64 = 1000;
const BROADCAST_BURST: u64 = 2000;
const STORM_MARGIN: u64 = 250;

/// A LAN, one node running the agent, and the node's port on the LAN's
/// bridge, where everything the node's pods send enters the LAN.
struct Lab {
    one: OneNode,
    port: String,
}

impl Lab {
    fn start() -> Result<Self> {
        lanlink_lab::require_root();
        let one = OneNode::start()?;
        let port = firsthop::node_port(&one.lan, &one.node)?;
        Ok(Self { one, port })
    }

    fn agent(&self) -> &Agent {
        &self.one.agent
    }

    fn lan_ns(&self) -> &NetNs {
        self.one.lan.ns()
    }

    /// A pod with the lab netconf (the agent leases its address).
    fn pod(&self, name: &str) -> Result<Pod> {
        add_pod(&self.one.node, &self.one.agent, name)
    }

    /// A pod whose netconf sets `key` to `value` at the top level.
    fn pod_with(&self, name: &str, key: &str, value: Value) -> Result<Pod> {
        let mut conf = lab_netconf(&self.one.agent);
        conf[key] = value;
        add_pod_with(&self.one.node, &self.one.agent, name, conf)
    }

    /// tcpdump of frames matching `filter` entering the LAN from the node.
    fn lan_capture(&self, filter: &str) -> Result<Capture> {
        Capture::start(self.lan_ns(), &self.port, "in", filter, 1000, CAPTURE_LIMIT)
    }
}

/// `lab-craft <sub> --iface eth0 <args>` in `pod`; its report line.
fn craft(pod: &Pod, sub: &str, args: &[&str]) -> Result<String> {
    let mut argv = vec![sub, "--iface", "eth0"];
    argv.extend_from_slice(args);
    let out = traffic::run(&pod.ns, &LAB_CRAFT, &argv, Duration::from_secs(20))
        .with_context(|| format!("lab-craft {}", argv.join(" ")))?;
    eprintln!("{}: {}", pod.ns.name(), out.trim());
    Ok(out)
}

/// The number after `sent` in a `lab-craft` report.
fn sent(report: &str) -> Result<u64> {
    report
        .split_whitespace()
        .skip_while(|w| *w != "sent")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no count in {report:?}"))
}

/// The sentinel of most tests: one broadcast UDP frame to port 9 from the
/// attacker's own addresses, which every dataplane must pass.
fn broadcast_sentinel(pod: &Pod) -> Result<()> {
    craft(pod, "storm", &["--count", "1", "--seconds", "1"]).map(drop)
}

fn is_broadcast_sentinel(p: &Packet) -> bool {
    p.dst_mac == "ff:ff:ff:ff:ff:ff" && p.dst_port == Some(firsthop::STORM_PORT)
}

/// The tcpdump filter for frames from `mac` that match `attack`, or are the
/// broadcast sentinel.
fn attack_or_sentinel(mac: &str, attack: &str) -> String {
    format!(
        "ether src {mac} and ( ( {attack} ) or ( ether broadcast and udp dst port {} ) )",
        firsthop::STORM_PORT
    )
}

/// What each watched place captured besides the sentinel.
type Seen = Vec<(String, Vec<Packet>)>;

/// Captures of one attack: on the node's port of the LAN bridge, and on
/// `eth0` of bystander pods.
struct Watch(Vec<(String, Capture)>);

impl Watch {
    fn start(lab: &Lab, bystanders: &[&Pod], filter: &str) -> Result<Self> {
        let mut caps = vec![("the LAN".to_owned(), lab.lan_capture(filter)?)];
        for p in bystanders {
            let cap = Capture::start(&p.ns, "eth0", "in", filter, 1000, CAPTURE_LIMIT)?;
            caps.push((format!("pod {}", p.ns.name()), cap));
        }
        Ok(Self(caps))
    }

    /// Sends the sentinel; once every capture shows it (and 200 ms more,
    /// for frames of other pods still in flight), stops them and returns
    /// what else each saw.
    fn until_sentinel(
        self,
        send: impl FnOnce() -> Result<()>,
        is_sentinel: impl Fn(&Packet) -> bool,
    ) -> Result<Seen> {
        send()?;
        for (place, cap) in &self.0 {
            ensure!(
                cap.wait_for(1, Duration::from_secs(5), &is_sentinel),
                "the sentinel never reached {place}: {:?}; tcpdump: {}",
                cap.packets(),
                cap.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        self.0
            .into_iter()
            .map(|(place, cap)| {
                let rest = cap.stop()?.into_iter().filter(|p| !is_sentinel(p));
                Ok((place, rest.collect()))
            })
            .collect()
    }
}

/// Fails naming every place where a frame `pred` accepts was seen.
fn none_seen(seen: &Seen, pred: impl Fn(&Packet) -> bool) -> Result<()> {
    let leaks: Vec<String> = seen
        .iter()
        .filter_map(|(place, packets)| {
            let hits: Vec<&Packet> = packets.iter().filter(|p| pred(p)).collect();
            let first = hits.first()?;
            Some(format!(
                "{} reached {place}, first: {}",
                hits.len(),
                first.line
            ))
        })
        .collect();
    ensure!(leaks.is_empty(), "{}", leaks.join("; "));
    Ok(())
}

/// Waits (≤ 5 s) until `cap` captured at least `n` frames.
fn seen_at_least(cap: &Capture, n: usize) -> Result<()> {
    ensure!(
        cap.wait_for(n, Duration::from_secs(5), |_| true),
        "expected {n} frame(s), captured {:?}",
        cap.packets().iter().map(|p| &p.line).collect::<Vec<_>>()
    );
    Ok(())
}

/// The number of frames `cap` captured once it stops growing (no new frame
/// for 500 ms, within 5 s).
fn settled_count(cap: &Capture) -> usize {
    let mut last = cap.packets().len();
    let _ = wait_until(Duration::from_secs(5), "the capture to settle", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = cap.packets().len();
        let done = now == last;
        last = now;
        Ok(done.then_some(()))
    });
    last
}

/// `label` grew by at least `n` in the agent's totals since `before`, the
/// attacker's endpoint counted at least `n` of them, and none of `others`
/// any.
fn counted(
    agent: &Agent,
    before: &BTreeMap<String, u64>,
    (attacker, others): (&Pod, &[&Pod]),
    label: &str,
    n: u64,
) -> Result<()> {
    pods::wait_grew(agent, before, label, n)?;
    firsthop::wait_endpoint_drops(agent, &attacker.container_id, label, n)?;
    not_counted(agent, others, label)
}

/// None of `pods` has a `label` drop.
fn not_counted(agent: &Agent, pods: &[&Pod], label: &str) -> Result<()> {
    for p in pods {
        let d = firsthop::endpoint_drops(agent, &p.container_id)?;
        let n = d.get(label).copied().unwrap_or(0);
        ensure!(n == 0, "{label} = {n} for {}: {d:?}", p.ns.name());
    }
    Ok(())
}

/// Every check of a test, reported together when it ends.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, what: &str, r: Result<()>) {
        match r {
            Ok(()) => eprintln!("ok: {what}"),
            Err(e) => {
                eprintln!("FAILED: {what}: {e:#}");
                self.0.push(format!("{what}: {e:#}"));
            }
        }
    }

    fn done(self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        bail!(
            "{} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        )
    }
}

/// A pod's DHCPOFFERs (a rogue server's) reach neither the LAN nor another
/// pod and count as `drop_dhcp_server`; a pod with `portSecurity.dhcpServer`
/// gets its OFFER onto the LAN.
#[test]
fn a_rogue_dhcp_server_is_stopped_and_an_allowed_one_is_not() -> Result<()> {
    let lab = Lab::start()?;
    let agent = lab.agent();
    let attacker = lab.pod("rogue-dhcp")?;
    let victim = lab.pod("victim")?;
    let server = lab.pod_with("dhcp-server", "portSecurity", json!({"dhcpServer": true}))?;
    let before = pods::stats(agent)?;
    let mut checks = Checks::default();

    let offers = "udp src port 67 and udp dst port 68";
    let watch = Watch::start(&lab, &[&victim], &attack_or_sentinel(&attacker.mac, offers))?;
    craft(&attacker, "dhcp-offer", &["--count", "3"])?;
    let seen = watch.until_sentinel(|| broadcast_sentinel(&attacker), is_broadcast_sentinel)?;
    checks.check(
        "no rogue OFFER reached the LAN or another pod",
        none_seen(&seen, |_| true),
    );
    checks.check(
        "the rogue OFFERs count as drop_dhcp_server, for the attacker",
        counted(
            agent,
            &before,
            (&attacker, &[&victim, &server]),
            "drop_dhcp_server",
            3,
        ),
    );

    let cap = lab.lan_capture(&format!("ether src {} and {offers}", server.mac))?;
    craft(&server, "dhcp-offer", &[])?;
    checks.check(
        "the OFFER of the pod with portSecurity.dhcpServer reached the LAN",
        seen_at_least(&cap, 1),
    );
    checks.check(
        "nothing of the allowed server was dropped as drop_dhcp_server",
        not_counted(agent, &[&server], "drop_dhcp_server"),
    );
    checks.done()
}

/// DHCP starvation: DISCOVERs and REQUESTs with made-up client hardware
/// addresses (from the pod's own source MAC, IPv4 source 0.0.0.0) get no
/// further than the node, from a pod with its own DHCP client (`ipam:
/// none`: `drop_dhcp_chaddr`) as from one whose lease the agent holds
/// (`drop_dhcp_agent_held`): dnsmasq never hears of them and leases them
/// nothing. The own DISCOVERs of the pod with its own client pass, at most
/// 20 at once and 10 a second (`drop_dhcp_rate` beyond).
#[test]
fn dhcp_starvation_with_made_up_clients_is_stopped() -> Result<()> {
    let lab = Lab::start()?;
    let (lan, agent) = (&lab.one.lan, lab.agent());
    let vm = lab.pod_with("vm", "ipam", json!({"type": "none"}))?;
    let held = lab.pod("held")?;
    let victim = lab.pod("victim")?;
    let before = pods::stats(agent)?;
    let mut checks = Checks::default();

    let made_up = |i: u8| format!("02:00:00:fa:ce:{i:02x}");
    let is_made_up = |p: &Packet| p.line.contains("Request from 02:00:00:fa:ce:");
    let filter = format!(
        "udp dst port 67 or ( ether broadcast and udp dst port {} )",
        firsthop::STORM_PORT
    );
    let watch = Watch::start(&lab, &[&victim], &filter)?;
    // A REQUEST naming a free pool address (INIT-REBOOT) is enough for the
    // authoritative dnsmasq to lease it: no OFFER needs to come back.
    for (pod, ids) in [(&vm, 1..=4u8), (&held, 0x11..=0x12)] {
        for i in ids {
            let (mac, ip) = (made_up(i), format!("198.18.0.{}", 160 + u16::from(i)));
            craft(pod, "dhcp-discover", &["--chaddr", &mac])?;
            craft(pod, "dhcp-request", &["--chaddr", &mac, "--requested", &ip])?;
        }
    }
    // The sentinels: the vm's own DISCOVER, legitimate for a pod that runs
    // its own DHCP client (and dnsmasq's sentinel), then a broadcast of
    // the held pod (DHCP need not be flooded to other pods).
    let seen = watch.until_sentinel(
        || {
            craft(&vm, "dhcp-discover", &[])?;
            broadcast_sentinel(&held)
        },
        is_broadcast_sentinel,
    )?;
    checks.check(
        "no message of a made-up client reached the LAN or another pod",
        none_seen(&seen, is_made_up),
    );
    // dnsmasq handles its socket in order: once it logged the sentinel,
    // it had seen whatever came before.
    let logged = format!("DHCPDISCOVER(br0) {}", vm.mac);
    checks.check(
        "the vm's own DISCOVER reached dnsmasq",
        wait_until(Duration::from_secs(5), "dnsmasq to log it", || {
            Ok(lan.dhcp_log().contains(&logged).then_some(()))
        })
        .with_context(|| format!("dnsmasq's log:\n{}", lan.dhcp_log())),
    );
    let log = lan.dhcp_log();
    checks.check(
        "dnsmasq heard of no made-up client",
        match log.lines().find(|l| l.contains("02:00:00:fa:ce:")) {
            Some(l) => Err(anyhow::anyhow!("dnsmasq logged {l:?}")),
            None => Ok(()),
        },
    );
    let leases: Vec<_> = lan
        .leases()
        .into_iter()
        .filter(|l| l.mac.starts_with("02:00:00:fa:ce:"))
        .collect();
    checks.check(
        "dnsmasq leased nothing to a made-up client",
        if leases.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!("leases: {leases:?}"))
        },
    );
    checks.check(
        "the made-up clients of the pod with its own DHCP client count as drop_dhcp_chaddr",
        counted(
            agent,
            &before,
            (&vm, &[&held, &victim]),
            "drop_dhcp_chaddr",
            8,
        ),
    );
    checks.check(
        "the made-up clients of the pod whose lease the agent holds count as drop_dhcp_agent_held",
        counted(
            agent,
            &before,
            (&held, &[&vm, &victim]),
            "drop_dhcp_agent_held",
            4,
        ),
    );

    // Its own DISCOVERs, 60 in 0.3 s: the burst of 20 (and 10 a second)
    // passes, the rest is dropped.
    let cap = lab.lan_capture(&format!("ether src {} and udp dst port 67", vm.mac))?;
    let before = pods::stats(agent)?;
    let started = std::time::Instant::now();
    craft(
        &vm,
        "dhcp-discover",
        &["--count", "60", "--interval-ms", "5"],
    )?;
    // The burst, what refills while they are sent (the run's wall time
    // bounds it), and a little for the bucket's timing.
    let most = 20 + (10.0 * started.elapsed().as_secs_f64()).ceil() as usize + 2;
    let passed = settled_count(&cap);
    eprintln!("{passed} of the vm's 60 DISCOVERs reached the LAN (at most {most} may)");
    checks.check(
        &format!("10 to {most} of 60 fast DISCOVERs of the pod's own reached the LAN"),
        if (10..=most).contains(&passed) {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{passed} did"))
        },
    );
    checks.check(
        "the rest count as drop_dhcp_rate",
        counted(
            agent,
            &before,
            (&vm, &[&held, &victim]),
            "drop_dhcp_rate",
            60u64.saturating_sub(most as u64),
        ),
    );
    checks.done()
}

/// A DHCPRELEASE of the lease the agent holds for a pod, sent by the pod
/// (its MAC, its leased address, to dnsmasq at 198.18.0.1), never reaches
/// dnsmasq: the lease stays, and the frame counts as
/// `drop_dhcp_agent_held`.
#[test]
fn a_pod_cannot_release_the_lease_the_agent_holds() -> Result<()> {
    let lab = Lab::start()?;
    let (lan, agent) = (&lab.one.lan, lab.agent());
    let attacker = lab.pod("releaser")?;
    let bystander = lab.pod("bystander")?;
    let ip = attacker.ip()?;
    let lease = lan.wait_for_lease(&attacker.mac, Duration::from_secs(5))?;
    ensure!(lease.ip == ip, "dnsmasq leased {} for {ip}", lease.ip);
    let server_mac = lan.ns().mac("br0")?;
    let before = pods::stats(agent)?;
    let mut checks = Checks::default();

    let dhcp = "udp dst port 67";
    let watch = Watch::start(&lab, &[], &attack_or_sentinel(&attacker.mac, dhcp))?;
    craft(
        &attacker,
        "dhcp-release",
        &[
            "--chaddr",
            &attacker.mac,
            "--ciaddr",
            &ip.to_string(),
            "--server",
            &ROUTER.to_string(),
            "--dst-mac",
            &server_mac,
        ],
    )?;
    let seen = watch.until_sentinel(|| broadcast_sentinel(&attacker), is_broadcast_sentinel)?;
    checks.check(
        "the RELEASE did not reach the LAN",
        none_seen(&seen, |_| true),
    );
    // dnsmasq acts on a RELEASE as it reads it; give it 2 s.
    let released = wait_until(
        Duration::from_secs(2),
        "dnsmasq to act on a RELEASE",
        || {
            let gone = !lan.leases().iter().any(|l| l.mac == attacker.mac);
            Ok((gone || lan.dhcp_log().contains("DHCPRELEASE")).then_some(()))
        },
    );
    checks.check(
        "dnsmasq still holds the lease, and logged no RELEASE",
        match released {
            Err(_) => Ok(()),
            Ok(()) => Err(anyhow::anyhow!(
                "leases: {:?}; dnsmasq: {:?}",
                lan.leases(),
                lan.dhcp_log()
                    .lines()
                    .filter(|l| l.contains("DHCPRELEASE"))
                    .collect::<Vec<_>>()
            )),
        },
    );
    checks.check(
        "the RELEASE counts as drop_dhcp_agent_held, for the attacker",
        counted(
            agent,
            &before,
            (&attacker, &[&bystander]),
            "drop_dhcp_agent_held",
            1,
        ),
    );
    checks.check(
        "the pod's address still works",
        ping(&attacker.ns, ROUTER, 3, Duration::from_secs(5)).and_then(|p| {
            ensure!(p.all_received(), "{}", p.summary);
            Ok(())
        }),
    );
    checks.done()
}

/// The IPv6 addresses (`ip -6 -o addr`) of `dev` in `ns` inside `prefix`.
fn addrs_in(ns: &NetNs, dev: &str, prefix: &str) -> Result<Vec<String>> {
    let out = ns.ip(&["-6", "-o", "addr", "show", "dev", dev])?;
    Ok(out
        .split_whitespace()
        .filter(|w| w.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// A pod's router advertisements (to ff02::1, prefix 2001:2:0:99::/64) and
/// DHCPv6 server messages (from UDP port 547) reach neither the LAN nor
/// another pod, nobody autoconfigures the rogue prefix, and they count as
/// `drop_router_advert` and `drop_dhcp6_server`; a pod with
/// `portSecurity.routerAdvertisements` gets its RA onto the LAN.
#[test]
fn a_rogue_router_advertisement_is_stopped_and_an_allowed_one_is_not() -> Result<()> {
    let lab = Lab::start()?;
    let (lan, host, agent) = (&lab.one.lan, &lab.one.host, lab.agent());
    let attacker = lab.pod("rogue-ra")?;
    let victim = lab.pod("victim")?;
    let router = lab.pod_with(
        "router",
        "portSecurity",
        json!({"routerAdvertisements": true}),
    )?;
    let before = pods::stats(agent)?;
    let mut checks = Checks::default();

    let filter = "( icmp6 and ip6[40] == 134 ) or ( ip6 and udp src port 547 )";
    let watch = Watch::start(&lab, &[&victim], &attack_or_sentinel(&attacker.mac, filter))?;
    craft(
        &attacker,
        "ra",
        &["--prefix", "2001:2:0:99::/64", "--count", "3"],
    )?;
    craft(&attacker, "ip6", &["--udp", "547:546", "--count", "2"])?;
    let seen = watch.until_sentinel(|| broadcast_sentinel(&attacker), is_broadcast_sentinel)?;
    checks.check(
        "no rogue RA or DHCPv6 server message reached the LAN or another pod",
        none_seen(&seen, |_| true),
    );
    let rogue = "2001:2:0:99:";
    for (ns, dev, what) in [
        (host.ns(), "eth0", "the LAN host"),
        (lan.ns(), "br0", "the router"),
        (&victim.ns, "eth0", "the victim pod"),
    ] {
        checks.check(
            &format!("{what} autoconfigured no address from the rogue prefix"),
            addrs_in(ns, dev, rogue).and_then(|a| {
                ensure!(a.is_empty(), "it has {a:?}");
                Ok(())
            }),
        );
    }
    checks.check(
        "the RAs count as drop_router_advert, for the attacker",
        counted(
            agent,
            &before,
            (&attacker, &[&victim, &router]),
            "drop_router_advert",
            3,
        ),
    );
    checks.check(
        "the DHCPv6 server messages count as drop_dhcp6_server, for the attacker",
        counted(
            agent,
            &before,
            (&attacker, &[&victim, &router]),
            "drop_dhcp6_server",
            2,
        ),
    );

    let cap = lab.lan_capture(&format!(
        "ether src {} and icmp6 and ip6[40] == 134",
        router.mac
    ))?;
    craft(&router, "ra", &["--prefix", "2001:2:0:98::/64"])?;
    checks.check(
        "the RA of the pod with portSecurity.routerAdvertisements reached the LAN",
        seen_at_least(&cap, 1),
    );
    checks.check(
        "nothing of the allowed router was dropped as drop_router_advert",
        not_counted(agent, &[&router], "drop_router_advert"),
    );
    checks.done()
}

/// The LAN host's neighbour entry (MAC) for `ip`, if any.
fn neigh6(ns: &NetNs, ip: &str) -> Result<Option<String>> {
    let out = ns.ip(&["-6", "neigh", "show", ip, "dev", "eth0"])?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_ascii_lowercase))
}

/// IPv6 from a forged source (2001:2::bad, to ff02::1 and to a LAN host)
/// and a neighbour advertisement for the router's address reach neither
/// the LAN nor another pod (the LAN host still maps the router to the
/// router), counted as `drop_spoof_ip6` and `drop_nd_spoof`. IPv6 from the
/// pod's link-local address and from an address it claimed with DAD
/// passes. A pod claiming 20 addresses gets at most 16 claims onto the LAN,
/// the rest counted as `drop_ip6_claims`.
#[test]
fn ipv6_from_a_forged_source_and_nd_spoofing_are_stopped() -> Result<()> {
    let lab = Lab::start()?;
    let (lan, host, agent) = (&lab.one.lan, &lab.one.host, lab.agent());
    let (router6, host6) = ("2001:2::1", "2001:2::50");
    lan.ns()
        .ip(&["-6", "addr", "add", "2001:2::1/64", "dev", "br0", "nodad"])?;
    host.ns()
        .ip(&["-6", "addr", "add", "2001:2::50/64", "dev", "eth0", "nodad"])?;
    let attacker = lab.pod("spoof6")?;
    let victim = lab.pod("victim")?;
    let hoarder = lab.pod("hoarder")?;
    // The LAN host learns the router's MAC.
    let out = host.ns().run_timeout(
        &["ping", "-6", "-n", "-q", "-c", "1", "-w", "5", router6],
        Duration::from_secs(10),
    )?;
    ensure!(
        out.status.success(),
        "LAN host → {router6}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let router_mac = lan.ns().mac("br0")?;
    ensure!(neigh6(host.ns(), router6)?.as_deref() == Some(router_mac.as_str()));
    let before = pods::stats(agent)?;
    let mut checks = Checks::default();

    let forged = "ip6 and ( src host 2001:2::bad or ( icmp6 and ip6[40] == 136 ) )";
    let watch = Watch::start(&lab, &[&victim], &attack_or_sentinel(&attacker.mac, forged))?;
    craft(&attacker, "ip6", &["--src", "2001:2::bad", "--count", "2"])?;
    craft(
        &attacker,
        "ip6",
        &[
            "--src",
            "2001:2::bad",
            "--dst",
            host6,
            "--dst-mac",
            host.mac(),
            "--count",
            "2",
        ],
    )?;
    craft(&attacker, "na", &["--target", router6, "--count", "2"])?;
    let seen = watch.until_sentinel(|| broadcast_sentinel(&attacker), is_broadcast_sentinel)?;
    // The pod's own kernel may advertise its link-local address (it owns
    // that one); only the forged ones count.
    checks.check(
        "no frame from 2001:2::bad and no NA for the router reached the LAN or another pod",
        none_seen(&seen, |p| {
            p.line.contains("2001:2::bad") || p.line.contains(&format!("tgt is {router6}"))
        }),
    );
    checks.check(
        "the LAN host still maps the router's address to the router",
        neigh6(host.ns(), router6).and_then(|m| {
            ensure!(
                m.as_deref() == Some(router_mac.as_str()),
                "it maps it to {m:?}"
            );
            Ok(())
        }),
    );
    checks.check(
        "the forged sources count as drop_spoof_ip6, for the attacker",
        counted(
            agent,
            &before,
            (&attacker, &[&victim, &hoarder]),
            "drop_spoof_ip6",
            4,
        ),
    );
    checks.check(
        "the NAs count as drop_nd_spoof, for the attacker",
        counted(
            agent,
            &before,
            (&attacker, &[&victim, &hoarder]),
            "drop_nd_spoof",
            2,
        ),
    );

    // Honest IPv6: from its link-local address, and from one it claimed.
    let cap = lab.lan_capture(&format!(
        "ether src {} and icmp6 and ip6[40] == 128",
        attacker.mac
    ))?;
    craft(&attacker, "dad", &["--target", "2001:2::a1"])?;
    craft(&attacker, "ip6", &[])?;
    craft(
        &attacker,
        "ip6",
        &[
            "--src",
            "2001:2::a1",
            "--dst",
            host6,
            "--dst-mac",
            host.mac(),
        ],
    )?;
    checks.check(
        "echo requests from the link-local and from the claimed address reached the LAN",
        seen_at_least(&cap, 2).and_then(|()| {
            let lines: Vec<String> = cap.packets().into_iter().map(|p| p.line).collect();
            ensure!(
                lines.iter().any(|l| l.contains("fe80::"))
                    && lines.iter().any(|l| l.contains("2001:2::a1 >")),
                "{lines:?}"
            );
            Ok(())
        }),
    );

    // Claims: 20 addresses, 16 at most get through.
    let cap = lab.lan_capture(&format!(
        "ether src {} and icmp6 and ip6[40] == 135 and ip6[48:4] == 0x20010002",
        hoarder.mac
    ))?;
    let before = pods::stats(agent)?;
    craft(
        &hoarder,
        "dad",
        &[
            "--target",
            "2001:2::1:0",
            "--claims",
            "20",
            "--interval-ms",
            "5",
        ],
    )?;
    let claims = settled_count(&cap);
    eprintln!("{claims} of the hoarder's 20 claims reached the LAN");
    checks.check(
        "at most 16 claims reached the LAN",
        if claims <= 16 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{claims} did"))
        },
    );
    checks.check(
        "the claims beyond 16 count as drop_ip6_claims, for the hoarder",
        counted(
            agent,
            &before,
            (&hoarder, &[&attacker, &victim]),
            "drop_ip6_claims",
            4,
        ),
    );
    checks.done()
}

/// An STP BPDU (to 01:80:c2:00:00:00, 802.3 with LLC) and a frame to
/// another reserved group address (01:80:c2:00:00:0e, LLDP's) reach neither
/// the LAN nor another pod, counted as `drop_l2_control`.
#[test]
fn an_stp_bpdu_from_a_pod_is_stopped() -> Result<()> {
    let lab = Lab::start()?;
    let agent = lab.agent();
    let attacker = lab.pod("bpdu")?;
    let victim = lab.pod("victim")?;
    let before = pods::stats(agent)?;
    let mut checks = Checks::default();

    let reserved = "ether[0:4] = 0x0180c200 and ether[4:1] = 0 and ether[5:1] < 16";
    let watch = Watch::start(
        &lab,
        &[&victim],
        &attack_or_sentinel(&attacker.mac, reserved),
    )?;
    craft(&attacker, "bpdu", &["--count", "3"])?;
    craft(&attacker, "bpdu", &["--dst-mac", "01:80:c2:00:00:0e"])?;
    let seen = watch.until_sentinel(|| broadcast_sentinel(&attacker), is_broadcast_sentinel)?;
    checks.check(
        "no BPDU reached the LAN or another pod",
        none_seen(&seen, |_| true),
    );
    checks.check(
        "the BPDUs count as drop_l2_control, for the attacker",
        counted(
            agent,
            &before,
            (&attacker, &[&victim]),
            "drop_l2_control",
            4,
        ),
    );
    checks.done()
}

/// A pod sending 60,000 broadcast frames in 3 s gets at most 1,000 a second
/// plus the burst of 2,000 onto the LAN (counted exactly on the node's
/// bridge port), the rest counted as `drop_storm`; meanwhile another pod's
/// ping to the router (20 a second for 10 s) loses nothing.
#[test]
fn a_broadcast_storm_is_cut_to_the_pods_rate() -> Result<()> {
    let lab = Lab::start()?;
    let agent = lab.agent();
    let attacker = lab.pod("storm")?;
    let victim = lab.pod("victim")?;
    let counter = FrameCounter::start(lab.lan_ns(), &lab.port, &attacker.mac, "ff:ff:ff:ff:ff:ff")?;
    let before = pods::stats(agent)?;
    let mut checks = Checks::default();

    let dir = LabDir::new("storm-ping")?;
    let ping = BgPing::start(&victim.ns, ROUTER, &dir.path().join("ping.log"))?;
    std::thread::sleep(Duration::from_secs(1));
    let report = craft(
        &attacker,
        "storm",
        &[
            "--count",
            &STORM_FRAMES.to_string(),
            "--seconds",
            &STORM_SECONDS.to_string(),
        ],
    )?;
    let sent = sent(&report)?;
    std::thread::sleep(Duration::from_millis(500));
    let onto_lan = counter.packets()?;
    let limit = STORM_SECONDS * BROADCAST_PPS + BROADCAST_BURST + STORM_MARGIN;
    eprintln!("the attacker sent {sent} broadcast frames, {onto_lan} entered the LAN");
    checks.check(
        &format!("between 1 and {limit} of the storm's frames entered the LAN"),
        if onto_lan > 0 && onto_lan <= limit {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{onto_lan} of {sent} did"))
        },
    );
    checks.check(
        "the rest count as drop_storm, for the attacker",
        counted(
            agent,
            &before,
            (&attacker, &[&victim]),
            "drop_storm",
            sent.saturating_sub(limit),
        ),
    );
    checks.check(
        "the victim's ping to the router lost nothing during the storm",
        ping.finish_lossless("victim → router during the storm")
            .map(drop),
    );
    checks.done()
}
