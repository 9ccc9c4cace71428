//! Host integration (issue 4), Kubernetes services through kube-proxy's
//! NAT (F5, F6): kube-proxy is simulated with the iptables rules it writes
//! (`lanlink_lab::netfilter::KubeProxy`) in each node's namespace, every node
//! has the FORWARD policy DROP and strict reverse-path filtering, and the
//! behaviour is judged on the wire (tcpdump on the client's side) and in
//! the servers' view of their peers.
//!
//! The conntrack-bypass fix is what makes replies of DNATed flows return
//! through the node: the last test turns it off, shows the failure of seeds
//! Part 5 (SYN/ACK from the pod's address, no connection), then turns it on
//! with nothing else changed and shows the same connection succeed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_lab::capture::{Capture, Packet};
use lanlink_lab::netfilter::{self, Endpoint, KubeProxy, Service, TrafficPolicy};
use lanlink_lab::nssock::{TcpServer, tcp_connect};
use lanlink_lab::pods::{self, Pod, SERVICE_CIDR, counter, forward_policy_drops, hostile, stats};
use lanlink_lab::{Agent, Lan, LanHost, LanOptions, NetNs, Node};

const NODE1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const NODE2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);
const LB_LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
const LB_CLUSTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 201);
/// kube-proxy's `--cluster-cidr`: the pods are on the LAN.
const CLUSTER_CIDR: &str = "198.18.0.0/24";
const POD_PORT: u16 = 8080;

fn service(
    name: &str,
    cluster_ip: Ipv4Addr,
    lb: Option<Ipv4Addr>,
    node_port: Option<u16>,
    policy: TrafficPolicy,
    pod: Ipv4Addr,
    local: bool,
) -> Service {
    Service {
        name: format!("default/{name}:http"),
        cluster_ip,
        port: 80,
        load_balancer_ip: lb,
        node_port,
        external_policy: policy,
        endpoints: vec![Endpoint {
            ip: pod,
            port: POD_PORT,
            local,
        }],
    }
}

/// Packets of the connection from local port `port` that the client
/// received, grouped by their source.
fn sources(packets: &[Packet], client: Ipv4Addr, port: u16) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in packets {
        if p.dst_ip.as_deref() == Some(&client.to_string()) && p.dst_port == Some(port) {
            let src = format!(
                "{}:{}",
                p.src_ip.as_deref().unwrap_or("?"),
                p.src_port.unwrap_or(0)
            );
            *m.entry(src).or_insert(0) += 1;
        }
    }
    m
}

/// Connects from `ns` to `to` while capturing what `ns` receives on `ifname`,
/// and checks that the connection completed with the server's banner and
/// that every packet of it the client received came from `to`.
fn connect_and_check(
    ns: &NetNs,
    ifname: &str,
    me: Ipv4Addr,
    to: SocketAddrV4,
    banner: &str,
) -> Result<SocketAddrV4> {
    let cap = Capture::start(ns, ifname, "in", "tcp", 100, Duration::from_secs(30))?;
    let c = tcp_connect(ns, to, Duration::from_secs(5))?.with_context(|| format!("{me} → {to}"))?;
    ensure!(c.received == banner, "{me} → {to} got {:?}", c.received);
    // The server's FIN was read: wait until tcpdump wrote it too.
    let port = c.local.port();
    ensure!(
        cap.wait_for(1, Duration::from_secs(2), |p| {
            p.dst_port == Some(port) && p.line.contains("[F")
        }),
        "{me} → {to}: the capture never saw the server's FIN"
    );
    let got = cap.stop()?;
    let from = sources(&got, me, port);
    let want = format!("{}:{}", to.ip(), to.port());
    ensure!(
        from.keys().all(|k| *k == want) && from.get(&want).is_some_and(|n| *n >= 2),
        "{me} → {to}: the client received from {from:?}, expected only {want}"
    );
    ensure!(
        got.iter()
            .any(|p| p.dst_port == Some(port) && p.is_syn_ack()),
        "no SYN/ACK captured for {me}:{port}"
    );
    Ok(c.local)
}

/// A pod reaches a ClusterIP (a `hostRoutes` service CIDR, routed via
/// 169.254.1.1 into the node's stack) DNATed to a pod on the same node
/// (its reply steered back through the node by the flow fix) and to a pod
/// on another node (masqueraded to the node's address by the agent, so the
/// remote pod's reply comes back through the node).
#[test]
fn pods_reach_cluster_ips_on_this_and_another_node() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let node1 = Node::new(&lan, "node1", NODE1)?;
    let node2 = Node::new(&lan, "node2", NODE2)?;
    hostile(&node1)?;
    hostile(&node2)?;
    let agent1 = Agent::start_with_args(&node1, &[])?;
    let agent2 = Agent::start_with_args(&node2, &[])?;
    let client = Pod::primary(&node1, &agent1, "client", &[SERVICE_CIDR])?;
    let near = Pod::primary(&node1, &agent1, "web-near", &[SERVICE_CIDR])?;
    let far = Pod::primary(&node2, &agent2, "web-far", &[SERVICE_CIDR])?;
    let near_srv = TcpServer::start(&near.ns, POD_PORT, "near\n", Duration::from_secs(60))?;
    let far_srv = TcpServer::start(&far.ns, POD_PORT, "far\n", Duration::from_secs(60))?;
    let near_cip = Ipv4Addr::new(198, 19, 0, 10);
    let far_cip = Ipv4Addr::new(198, 19, 0, 11);
    for (node, on_node1) in [(&node1, true), (&node2, false)] {
        KubeProxy {
            cluster_cidr: CLUSTER_CIDR.into(),
            services: vec![
                service(
                    "near",
                    near_cip,
                    None,
                    None,
                    TrafficPolicy::Cluster,
                    near.ip()?,
                    on_node1,
                ),
                service(
                    "far",
                    far_cip,
                    None,
                    None,
                    TrafficPolicy::Cluster,
                    far.ip()?,
                    !on_node1,
                ),
            ],
        }
        .apply(node.ns())?;
    }
    let routes = client.ns.ip(&["-4", "route", "show"])?;
    ensure!(
        routes.contains(&format!("{SERVICE_CIDR} via 169.254.1.1 dev eth0")),
        "the client pod does not route the service CIDR through the node:\n{routes}"
    );

    let before = stats(&agent1)?;
    // Same node: no masquerade (the client is inside the cluster CIDR), so
    // the server answers the client's own address; without the flow fix
    // that reply would go straight to the client on L2 with the wrong source.
    let local = connect_and_check(
        &client.ns,
        "eth0",
        client.ip()?,
        SocketAddrV4::new(near_cip, 80),
        "near\n",
    )?;
    ensure!(
        near_srv.peers() == [local],
        "the near pod saw {:?}, the client was {local}",
        near_srv.peers()
    );
    let after = stats(&agent1)?;
    ensure!(
        counter(&after, "flow_to_host") > counter(&before, "flow_to_host"),
        "the near pod's replies were not steered through the node: {before:?} → {after:?}"
    );

    // Another node: the agent's masquerade gives the flow node1's address,
    // so the far pod's reply returns to node1, which reverses the DNAT.
    connect_and_check(
        &client.ns,
        "eth0",
        client.ip()?,
        SocketAddrV4::new(far_cip, 80),
        "far\n",
    )?;
    let peers = far_srv.peers();
    ensure!(
        peers.len() == 1 && *peers[0].ip() == NODE1,
        "the far pod saw {peers:?}, expected node1 ({NODE1})"
    );

    // Host-routed pod traffic crossed FORWARD through the agent's accepts,
    // and the DROP policy never fired.
    let accepted: u64 = netfilter::chain_counters(node1.ns(), "filter", "LANLINK-FORWARD")?
        .iter()
        .filter(|(_, r)| r.contains("ACCEPT"))
        .map(|(n, _)| n)
        .sum();
    ensure!(accepted > 0, "LANLINK-FORWARD accepted nothing");
    for node in [&node1, &node2] {
        ensure!(
            forward_policy_drops(node)? == 0,
            "FORWARD dropped packets on {}",
            node.name()
        );
    }
    Ok(())
}

fn lb_lab() -> Result<(Lan, Node, LanHost)> {
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node1", NODE1)?;
    hostile(&node)?;
    // The node answers ARP for the LoadBalancer addresses (as a MetalLB L2
    // speaker, or kube-vip, makes it do).
    for lb in [LB_LOCAL, LB_CLUSTER] {
        node.ns()
            .ip(&["addr", "add", &format!("{lb}/32"), "dev", "eth0"])?;
    }
    let client = lan.add_host("client", CLIENT)?;
    Ok((lan, node, client))
}

fn lb_rules(pod: Ipv4Addr) -> KubeProxy {
    KubeProxy {
        cluster_cidr: CLUSTER_CIDR.into(),
        services: vec![
            service(
                "web-local",
                Ipv4Addr::new(198, 19, 0, 20),
                Some(LB_LOCAL),
                Some(30080),
                TrafficPolicy::Local,
                pod,
                true,
            ),
            service(
                "web-cluster",
                Ipv4Addr::new(198, 19, 0, 21),
                Some(LB_CLUSTER),
                Some(30081),
                TrafficPolicy::Cluster,
                pod,
                true,
            ),
        ],
    }
}

/// A LAN client reaches a pod through a LoadBalancer IP and a NodePort, with
/// externalTrafficPolicy Local (DNAT only: the pod sees the client) and
/// Cluster (DNAT and SNAT: the pod sees the node); in every case the
/// connection completes and every reply the client receives carries the
/// address it connected to.
#[test]
fn lan_clients_reach_load_balancer_and_node_port_services() -> Result<()> {
    lanlink_lab::require_root();
    let (_lan, node, client) = lb_lab()?;
    let agent = Agent::start_with_args(&node, &[])?;
    let web = Pod::primary(&node, &agent, "web", &[SERVICE_CIDR])?;
    let srv = TcpServer::start(&web.ns, POD_PORT, "web\n", Duration::from_secs(60))?;
    lb_rules(web.ip()?).apply(node.ns())?;

    let cases = [
        (
            "LoadBalancer Local",
            SocketAddrV4::new(LB_LOCAL, 80),
            CLIENT,
        ),
        (
            "LoadBalancer Cluster",
            SocketAddrV4::new(LB_CLUSTER, 80),
            NODE1,
        ),
        ("NodePort Local", SocketAddrV4::new(NODE1, 30080), CLIENT),
        ("NodePort Cluster", SocketAddrV4::new(NODE1, 30081), NODE1),
    ];
    for (what, to, seen_as) in cases {
        let before = stats(&agent)?;
        let local = connect_and_check(client.ns(), "eth0", CLIENT, to, "web\n")
            .with_context(|| what.to_string())?;
        let peer = srv
            .peers()
            .last()
            .copied()
            .context("no connection reached the pod")?;
        ensure!(
            *peer.ip() == seen_as,
            "{what}: the pod saw {peer}, expected {seen_as} (client {local})"
        );
        let after = stats(&agent)?;
        if seen_as == CLIENT {
            // Only a DNAT: the pod answers the client's address, which is
            // on its link; the flow fix sends it through the node anyway.
            ensure!(
                counter(&after, "flow_to_host") > counter(&before, "flow_to_host"),
                "{what}: no reply steered through the node: {before:?} → {after:?}"
            );
        }
        eprintln!("{what}: {local} → {to}, the pod saw {peer}");
    }
    ensure!(forward_policy_drops(&node)? == 0, "FORWARD dropped packets");
    Ok(())
}

/// Seeds Part 5, reproduced and fixed. externalTrafficPolicy Local, a LAN
/// client connecting to the LoadBalancer IP: with the flow fix off the pod's
/// SYN/ACK leaves on L2 with the pod's address, the client rejects it and
/// never connects; restarting the agent with the fix on (same node, pod,
/// rules and client) makes the same connection succeed with every reply
/// from the LoadBalancer IP.
#[test]
fn the_flow_fix_is_what_makes_local_policy_work() -> Result<()> {
    lanlink_lab::require_root();
    let (_lan, node, client) = lb_lab()?;
    let mut agent = Agent::start_with_args(&node, &["--no-flow-fix"])?;
    let web = Pod::primary(&node, &agent, "web", &[SERVICE_CIDR])?;
    let srv = TcpServer::start(&web.ns, POD_PORT, "web\n", Duration::from_secs(60))?;
    lb_rules(web.ip()?).apply(node.ns())?;
    let to = SocketAddrV4::new(LB_LOCAL, 80);

    // Without the fix.
    let cap = Capture::start(
        client.ns(),
        "eth0",
        "in",
        "tcp",
        100,
        Duration::from_secs(30),
    )?;
    let outcome = tcp_connect(client.ns(), to, Duration::from_secs(3))?;
    let got = cap.stop()?;
    if let Ok(c) = outcome {
        bail!("connected without the flow fix ({c:?}): the test cannot show the failure");
    }
    let pod_src = (web.ip()?.to_string(), POD_PORT);
    let stray: Vec<&Packet> = got
        .iter()
        .filter(|p| {
            p.is_syn_ack()
                && p.src_ip.as_deref() == Some(&pod_src.0)
                && p.src_port == Some(pod_src.1)
        })
        .collect();
    ensure!(
        !stray.is_empty(),
        "expected the pod's SYN/ACK from {}:{POD_PORT} on the client's wire, got {got:#?}",
        web.ip()?
    );
    ensure!(
        !got.iter()
            .any(|p| p.src_ip.as_deref() == Some(&LB_LOCAL.to_string())),
        "a reply carried the LoadBalancer address without the fix: {got:#?}"
    );
    // The pod's SYN/ACK shows the DNATed SYN reached it: the forward path
    // worked, the reply path did not; the pod never saw the handshake end.
    ensure!(srv.peers().is_empty(), "the pod accepted {:?}", srv.peers());
    let s = stats(&agent)?;
    ensure!(
        counter(&s, "flow_to_host") == 0 && counter(&s, "flow_learnt") == 0,
        "{s:?}"
    );
    eprintln!(
        "without the fix: {} SYN/ACK from {}:{POD_PORT}, connect: {:?}",
        stray.len(),
        web.ip()?,
        outcome.err()
    );

    // With the fix: only the agent's flag changes.
    agent.set_extra_args(Vec::new());
    agent.restart()?;
    let local = connect_and_check(client.ns(), "eth0", CLIENT, to, "web\n")?;
    ensure!(
        srv.peers().last() == Some(&local),
        "the pod saw {:?}, the client was {local}",
        srv.peers()
    );
    let s = stats(&agent)?;
    ensure!(
        counter(&s, "flow_to_host") > 0 && counter(&s, "flow_learnt") > 0,
        "{s:?}"
    );
    ensure!(!pods::map_dump(agent.pin_dir(), "FLOWS")?.is_empty());
    Ok(())
}
