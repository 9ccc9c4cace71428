//! The DHCPv6 (IA_NA) client (issue 16, part 3) against real servers:
//! `lanlink_agent::ipv6::dhcp6` runs in a node namespace and speaks on a
//! pod's behalf from the pod's MAC and EUI-64 link-local address on the
//! node's `eth0` (`PacketTransport`: hand-built frames, and neighbour
//! advertisements for that link-local address so the server can answer).
//! No pod exists: the node is a plain LAN host, nothing of lanlink runs.
//!
//! With dnsmasq (`--enable-ra`, DHCPv6 range) and with Kea DHCPv6 behind
//! radvd (M flag): a lease appears in the server's lease file with the
//! pod's stable DUID, IAID and name (option 39); it renews; a release
//! removes it; a second client with the same identity gets the same
//! address, one with another identity another address (dnsmasq derives
//! the address from the DUID; Kea through a reservation on the stable
//! DUID). With Kea's short timers, the client renews by itself at T1, and
//! a decline reaches Kea.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_agent::ipv6::dhcp6::{Dhcp6Client, Dhcp6Identity, Lease6, PacketTransport};
use lanlink_lab::lan6::{
    DNS6, Dnsmasq6, Dnsmasq6Mode, Kea6, Kea6Options, POOL6, check_lab_addr6, wait_link_local,
};
use lanlink_lab::nssock::in_ns;
use lanlink_lab::{Lan, LanOptions, Node, wait_until};
use tokio_util::sync::CancellationToken;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// The address Kea reserves for the `default/db-0` pod's DUID.
const RESERVED: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x1a0);

/// One thing the client does, in a fresh runtime in the node's namespace.
enum Op {
    Obtain,
    Renew(Lease6),
    Rebind(Lease6),
    Release(Lease6),
    Decline(Lease6),
    /// `maintain` for this long; returns the leases it got.
    Maintain(Lease6, Duration),
}

fn run(node: &Node, id: &Dhcp6Identity, op: Op) -> Result<Vec<Lease6>> {
    let id = id.clone();
    in_ns(node.ns(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let t = PacketTransport::open("eth0", id.mac, id.link_local)
                .context("opening the DHCPv6 packet socket")?;
            let mut c = Dhcp6Client::new(id, t);
            Ok(match op {
                Op::Obtain => vec![c.obtain(Duration::from_secs(10)).await?],
                Op::Renew(l) => vec![c.renew(&l).await?],
                Op::Rebind(l) => vec![c.rebind(&l).await?],
                Op::Release(l) => {
                    c.release(&l).await?;
                    Vec::new()
                }
                Op::Decline(l) => {
                    c.decline(&l).await?;
                    Vec::new()
                }
                Op::Maintain(l, d) => {
                    let cancel = CancellationToken::new();
                    let stop = cancel.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        stop.cancel();
                    });
                    let mut got = Vec::new();
                    c.maintain(l, cancel, |l| got.push(l.clone())).await?;
                    got
                }
            })
        })
    })
}

fn one(v: Vec<Lease6>) -> Result<Lease6> {
    v.into_iter().next().context("no lease")
}

fn in_pool(ip: Ipv6Addr) -> Result<()> {
    check_lab_addr6(ip)?;
    ensure!(
        (POOL6.0..=POOL6.1).contains(&ip),
        "{ip} is outside the pool {POOL6:?}"
    );
    Ok(())
}

fn lan_and_node() -> Result<(Lan, Node)> {
    lanlink_lab::require_root();
    lanlink_lab::install_signal_handler();
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node1", NODE_IP)?;
    // The servers answer on their own link-local addresses: the node's
    // kernel is not involved, but its eth0 must be up and settled.
    wait_link_local(node.ns(), "eth0")?;
    Ok((lan, node))
}

#[test]
fn dnsmasq_lease_renew_release_and_same_address_again() -> Result<()> {
    let (lan, node) = lan_and_node()?;
    let d = Dnsmasq6::start(&lan, Dnsmasq6Mode::Stateful, 600)?;
    let id = Dhcp6Identity::stable("default", "web-0", "eth0");
    let duid = id.duid_hex();

    let lease = one(run(&node, &id, Op::Obtain).with_context(|| d.log())?)?;
    eprintln!("lease: {lease:?}");
    in_pool(lease.address)?;
    ensure!(lease.dns.contains(&DNS6), "no DNS server in {lease:?}");
    let in_file = wait_until(
        Duration::from_secs(5),
        "the lease in dnsmasq's file",
        || Ok(d.leases().into_iter().find(|l| l.ip == lease.address)),
    )
    .with_context(|| format!("{:?}\n{}", d.leases(), d.log()))?;
    eprintln!("dnsmasq lease: {in_file:?}");
    ensure!(
        in_file.duid == duid,
        "DUID {} in the file, ours {duid}",
        in_file.duid
    );
    ensure!(
        in_file.iaid == id.iaid,
        "IAID {} in the file, ours {}",
        in_file.iaid,
        id.iaid
    );
    ensure!(
        in_file.hostname.as_deref() == Some("web-0"),
        "option 39 did not name the lease: {in_file:?}"
    );

    // The server saw the pod, not the node: the pod's MAC (dnsmasq logs
    // the link-layer source), and its link-local address resolved to that
    // MAC through the transport's neighbour advertisements.
    let mac = id
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ensure!(
        d.log().contains(&format!("client MAC address: {mac}")),
        "dnsmasq did not see the pod's MAC {mac}:\n{}",
        d.log()
    );
    ensure!(mac != node.mac(), "the pod's MAC is the node's");
    let neigh = lan.ns().ip(&["-6", "neigh", "show", "dev", "br0"])?;
    ensure!(
        neigh
            .lines()
            .any(|l| l.starts_with(&format!("{} ", id.link_local)) && l.contains(&mac)),
        "the LAN has no neighbour entry {} → {mac}:\n{neigh}",
        id.link_local
    );

    // Renew (one-second expiry resolution: wait past it).
    std::thread::sleep(Duration::from_millis(1100));
    let renewed = one(run(&node, &id, Op::Renew(lease.clone()))?)?;
    ensure!(
        renewed.address == lease.address,
        "renewal changed the address"
    );
    let after = d
        .leases()
        .into_iter()
        .find(|l| l.ip == lease.address)
        .context("lease gone after renewal")?;
    ensure!(
        after.expiry > in_file.expiry,
        "expiry did not move: {in_file:?} → {after:?}"
    );
    ensure!(
        d.log().contains("DHCPRENEW") || d.log().contains("RENEW("),
        "{}",
        d.log()
    );

    // Release: gone from the file (it was there above: the positive control).
    run(&node, &id, Op::Release(renewed.clone()))?;
    wait_until(
        Duration::from_secs(5),
        "the lease to leave dnsmasq's file",
        || Ok((!d.leases().iter().any(|l| l.ip == lease.address)).then_some(())),
    )
    .with_context(|| format!("{:?}", d.leases()))?;

    // The same identity again (a re-created pod): the same address.
    let again = one(run(&node, &id, Op::Obtain)?)?;
    ensure!(
        again.address == lease.address,
        "re-created with the same identity: {} then {}",
        lease.address,
        again.address
    );
    // Another identity: another address.
    let other_id = Dhcp6Identity::stable("default", "web-1", "eth0");
    let other = one(run(&node, &other_id, Op::Obtain)?)?;
    ensure!(
        other.address != lease.address,
        "two identities, one address"
    );
    run(&node, &other_id, Op::Release(other))?;
    run(&node, &id, Op::Release(again))?;
    Ok(())
}

#[test]
fn kea_lease_renew_at_t1_release_decline() -> Result<()> {
    let (lan, node) = lan_and_node()?;
    let id = Dhcp6Identity::stable("default", "db-0", "eth0");
    let duid = id.duid_hex();
    // Kea's allocator hands a released address's owner the next free one:
    // a re-created pod keeps its address through a reservation on its
    // stable DUID, which is what the stable DUID is for.
    let kea = Kea6::start(
        &lan,
        Kea6Options {
            valid_lifetime: 40,
            preferred_lifetime: 30,
            renew_timer: 3,
            rebind_timer: 20,
            reservations: vec![(duid.clone(), RESERVED)],
        },
    )?;

    let lease = one(run(&node, &id, Op::Obtain).with_context(|| kea.log())?)?;
    eprintln!("lease: {lease:?}");
    ensure!(
        lease.address == RESERVED,
        "not the reserved address: {lease:?}"
    );
    ensure!(
        (lease.t1, lease.t2, lease.valid) == (3, 20, 40),
        "{lease:?}"
    );
    let row = wait_until(Duration::from_secs(5), "the lease in Kea's file", || {
        Ok(kea.leases().into_iter().find(|l| l.ip == lease.address))
    })
    .with_context(|| format!("{:?}\n{}", kea.leases(), kea.log()))?;
    eprintln!("kea lease: {row:?}");
    ensure!(
        row.duid == duid,
        "DUID {} in the file, ours {duid}",
        row.duid
    );
    ensure!(
        row.iaid == id.iaid,
        "IAID {} in the file, ours {}",
        row.iaid,
        id.iaid
    );
    ensure!(row.hostname.starts_with("db-0"), "option 39: {row:?}");

    // The client renews by itself at T1 (3 s), and again at the next T1.
    let renewals = run(
        &node,
        &id,
        Op::Maintain(lease.clone(), Duration::from_millis(7500)),
    )?;
    eprintln!("renewals: {renewals:?}");
    ensure!(
        renewals.len() == 2,
        "{} renewals in 7.5 s with T1 = 3 s",
        renewals.len()
    );
    for r in &renewals {
        ensure!(r.address == lease.address, "renewal changed the address");
    }
    let t1_after = renewals[0].obtained.duration_since(lease.obtained);
    ensure!(
        (Duration::from_secs(3)..Duration::from_millis(4500)).contains(&t1_after),
        "first renewal {t1_after:?} after the lease, T1 is 3 s"
    );
    let rows: Vec<_> = kea
        .leases()
        .into_iter()
        .filter(|l| l.ip == lease.address)
        .collect();
    ensure!(
        rows.len() >= 3,
        "Kea recorded {} rows (lease + 2 renewals)",
        rows.len()
    );
    ensure!(
        rows.last().is_some_and(|l| l.expire > row.expire),
        "{rows:?}"
    );

    // Rebind (what the client does at T2 when its server is silent): Kea
    // extends the same lease, answering a message without server id.
    let count = |ip| kea.leases().iter().filter(|l| l.ip == ip).count();
    let rows_before = count(lease.address);
    let rebound = one(run(&node, &id, Op::Rebind(lease.clone()))?)?;
    ensure!(rebound.address == lease.address, "{rebound:?}");
    wait_until(Duration::from_secs(5), "Kea to record the rebind", || {
        Ok((count(lease.address) > rows_before).then_some(()))
    })?;

    // A second client with the same identity while the lease is live (an
    // agent restarted without its state): the same address.
    let again = one(run(&node, &id, Op::Obtain)?)?;
    ensure!(
        again.address == lease.address,
        "{} then {}",
        lease.address,
        again.address
    );

    // Release: the last row for the address has valid lifetime 0.
    run(&node, &id, Op::Release(again.clone()))?;
    wait_until(Duration::from_secs(5), "Kea to record the release", || {
        let rows: Vec<_> = kea
            .leases()
            .into_iter()
            .filter(|l| l.ip == lease.address)
            .collect();
        Ok(rows
            .last()
            .is_some_and(|l| l.valid_lifetime == 0)
            .then_some(()))
    })
    .with_context(|| format!("{:?}\n{}", kea.leases(), kea.log()))?;
    ensure!(kea.log().contains("DHCP6_RELEASE_NA"), "{}", kea.log());

    // Re-created after the release: the reserved address again.
    let recreated = one(run(&node, &id, Op::Obtain)?)?;
    ensure!(recreated.address == RESERVED, "{recreated:?}");
    run(&node, &id, Op::Release(recreated))?;

    // Decline another lease: Kea marks the address declined (state 1).
    let other_id = Dhcp6Identity::stable("default", "db-1", "eth0");
    let other = one(run(&node, &other_id, Op::Obtain)?)?;
    run(&node, &other_id, Op::Decline(other.clone()))?;
    wait_until(Duration::from_secs(5), "Kea to record the decline", || {
        let rows: Vec<_> = kea
            .leases()
            .into_iter()
            .filter(|l| l.ip == other.address)
            .collect();
        Ok(rows.last().is_some_and(|l| l.state == 1).then_some(()))
    })
    .with_context(|| format!("{:?}\n{}", kea.leases(), kea.log()))?;
    Ok(())
}
