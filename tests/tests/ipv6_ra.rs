//! Router advertisement learning (issue 16, part 1) against real routers:
//! `lanlink_agent::ipv6::ra::RaReceiver` runs in a node namespace on the
//! node's `eth0` and must learn the LAN's prefix with its flags and
//! lifetimes, the router's link-local address, M/O and RDNSS from (a)
//! dnsmasq `--enable-ra` with DHCPv6, (b) radvd SLAAC only, (c) radvd with
//! the M flag in front of Kea DHCPv6 — and forget the router when radvd
//! withdraws it. A LAN without any IPv6 router gives an empty view.
//!
//! With `LANLINK_RA_CAPTURE_DIR` set, the first RA of each case is written
//! there as raw ICMPv6 bytes: that is how the test vectors in
//! `userspace/src/ipv6/testdata/` were captured.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_agent::ipv6::ra::{RaReceiver, RaView};
use lanlink_lab::lan6::{
    DNS6, Dnsmasq6, Dnsmasq6Mode, Kea6, Kea6Options, PREFIX6, ROUTER6_LL, Radvd, RadvdOptions,
};
use lanlink_lab::nssock::in_ns;
use lanlink_lab::{Lan, LanOptions, Node};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// Runs the receiver (`RaReceiver::run`) on the node's `eth0` for at most
/// `timeout`, until `done` holds for the view; returns the last view and the
/// raw bytes of the first valid RA a second receiver saw.
fn learn(
    node: &Node,
    timeout: Duration,
    done: impl Fn(&RaView) -> bool + Send + 'static,
) -> Result<(RaView, Option<Vec<u8>>)> {
    in_ns(node.ns(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let receiver = RaReceiver::open("eth0").context("opening the RA receiver")?;
            let capture = RaReceiver::open("eth0").context("opening the capture receiver")?;
            let (tx, mut rx) = watch::channel(RaView::new());
            let cancel = CancellationToken::new();
            let task = tokio::spawn(receiver.run(tx, cancel.clone()));
            let raw = tokio::spawn(async move {
                loop {
                    let got = capture.recv().await?;
                    if got.ra.is_ok() {
                        return anyhow::Ok(got.raw);
                    }
                }
            });
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                if done(&rx.borrow_and_update()) {
                    break;
                }
                // Timed out, or the receiver stopped (its error comes below).
                if !matches!(
                    tokio::time::timeout_at(deadline, rx.changed()).await,
                    Ok(Ok(()))
                ) {
                    break;
                }
            }
            cancel.cancel();
            task.await?.context("the RA receiver failed")?;
            let raw = match tokio::time::timeout(Duration::from_millis(100), raw).await {
                Ok(r) => Some(r??),
                Err(_) => None,
            };
            let view = rx.borrow().clone();
            Ok((view, raw))
        })
    })
}

fn capture(name: &str, raw: &Option<Vec<u8>>) -> Result<()> {
    if let (Some(dir), Some(raw)) = (std::env::var_os("LANLINK_RA_CAPTURE_DIR"), raw) {
        let path = std::path::Path::new(&dir).join(format!("{name}.bin"));
        std::fs::write(&path, raw).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("captured {} ({} bytes)", path.display(), raw.len());
    }
    Ok(())
}

/// The view has the lab prefix with these flags, router fe80::1 and RDNSS.
fn check_view(view: &RaView, managed: bool, other: bool, autonomous: bool) -> Result<()> {
    eprintln!("learned: {view:?}");
    let routers: Vec<Ipv6Addr> = view.routers().map(|r| r.address).collect();
    ensure!(
        routers == vec![ROUTER6_LL],
        "routers {routers:?}, want [{ROUTER6_LL}]"
    );
    ensure!(
        view.managed() == managed,
        "M is {}, want {managed}",
        view.managed()
    );
    ensure!(view.other() == other, "O is {}, want {other}", view.other());
    let p = view
        .prefixes()
        .find(|p| p.prefix == PREFIX6 && p.len == 64)
        .with_context(|| format!("no {PREFIX6}/64 learned"))?;
    ensure!(p.on_link, "the prefix is not on-link: {p:?}");
    ensure!(
        p.autonomous == autonomous,
        "A is {}, want {autonomous}",
        p.autonomous
    );
    ensure!(p.router == ROUTER6_LL, "prefix from {}", p.router);
    ensure!(
        p.valid_until.is_some(),
        "finite valid lifetime expected: {p:?}"
    );
    let dns: Vec<Ipv6Addr> = view.dns_servers().collect();
    ensure!(dns.contains(&DNS6), "RDNSS {dns:?} lacks {DNS6}");
    Ok(())
}

fn has_router(v: &RaView) -> bool {
    v.routers().next().is_some()
        && v.prefixes().next().is_some()
        && v.dns_servers().next().is_some()
}

fn lan_and_node() -> Result<(Lan, Node)> {
    lanlink_lab::require_root();
    lanlink_lab::install_signal_handler();
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node1", NODE_IP)?;
    Ok((lan, node))
}

#[test]
fn learns_dnsmasq_ra_with_dhcpv6() -> Result<()> {
    let (lan, node) = lan_and_node()?;
    let d = Dnsmasq6::start(&lan, Dnsmasq6Mode::Stateful, 600)?;
    // The node's kernel solicits by itself when its link-local address
    // comes up: silence it (this test runs no lanlink, only the receiver)
    // so that a solicitation dnsmasq logs is the receiver's. Re-upping the
    // link makes the setting apply before the address exists.
    node.ns()
        .sysctl("net.ipv6.conf.eth0.router_solicitations", "0")?;
    node.ns().ip(&["link", "set", "eth0", "down"])?;
    node.ns().ip(&["link", "set", "eth0", "up"])?;
    // A solicitation needs a source address: once the node's link-local
    // one is usable, the receiver's first one must reach dnsmasq.
    lanlink_lab::lan6::wait_link_local(node.ns(), "eth0")?;
    ensure!(
        !d.log().contains("RTR-SOLICIT"),
        "a solicitation before the receiver ran"
    );
    let (view, raw) = learn(&node, Duration::from_secs(15), has_router)?;
    capture("ra-dnsmasq-stateful", &raw)?;
    // dnsmasq sets O along with M.
    check_view(&view, true, true, false).with_context(|| d.log())?;
    lanlink_lab::wait_until(
        Duration::from_secs(5),
        "dnsmasq to log the solicitation",
        || Ok(d.log().contains("RTR-SOLICIT(br0)").then_some(())),
    )
    .with_context(|| d.log())?;
    Ok(())
}

#[test]
fn learns_dnsmasq_ra_only() -> Result<()> {
    let (lan, node) = lan_and_node()?;
    let d = Dnsmasq6::start(&lan, Dnsmasq6Mode::Slaac, 600)?;
    let (view, raw) = learn(&node, Duration::from_secs(15), has_router)?;
    capture("ra-dnsmasq-slaac", &raw)?;
    check_view(&view, false, view.other(), true).with_context(|| d.log())
}

#[test]
fn learns_radvd_slaac_and_forgets_it_when_withdrawn() -> Result<()> {
    let (lan, node) = lan_and_node()?;
    let radvd = Radvd::start(&lan, RadvdOptions::default())?;
    let (view, raw) = learn(&node, Duration::from_secs(15), has_router)?;
    capture("ra-radvd-slaac", &raw)?;
    check_view(&view, false, false, true).with_context(|| radvd.log())?;
    let p = view.prefixes().next().context("no prefix")?;
    let (valid, preferred) = (
        p.valid_until.context("valid")?,
        p.preferred_until.context("preferred")?,
    );
    // 3600 s valid, 1800 s preferred, from an RA seconds ago.
    let left = valid.saturating_duration_since(std::time::Instant::now());
    ensure!(
        (Duration::from_secs(3500)..=Duration::from_secs(3600)).contains(&left),
        "valid lifetime left {left:?}"
    );
    ensure!(valid - preferred == Duration::from_secs(1800), "{p:?}");

    // radvd stopping sends a final RA with router lifetime 0 (RFC 4861
    // 6.2.5): the router must leave the view, the prefix (lifetimes of its
    // own) stays. A receiver learns it, then radvd is stopped.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let seen_tx = std::sync::Mutex::new(Some(seen_tx));
    let seen = std::sync::atomic::AtomicBool::new(false);
    let watcher = std::thread::scope(|s| -> Result<RaView> {
        let h = s.spawn(|| {
            learn(&node, Duration::from_secs(30), move |v| {
                use std::sync::atomic::Ordering::SeqCst;
                if has_router(v)
                    && !seen.swap(true, SeqCst)
                    && let Some(tx) = seen_tx.lock().ok().and_then(|mut t| t.take())
                {
                    let _ = tx.send(());
                }
                seen.load(SeqCst) && v.routers().next().is_none()
            })
        });
        seen_rx
            .recv_timeout(Duration::from_secs(20))
            .context("the second receiver never learned the router")?;
        drop(radvd);
        let (view, _) = h.join().map_err(|_| anyhow::anyhow!("learn panicked"))??;
        Ok(view)
    })?;
    eprintln!("after radvd stopped: {watcher:?}");
    ensure!(
        watcher.routers().next().is_none(),
        "the withdrawn router is still in the view"
    );
    ensure!(
        watcher.prefixes().any(|p| p.prefix == PREFIX6),
        "the prefix left with the router"
    );
    Ok(())
}

#[test]
fn learns_radvd_managed_in_front_of_kea() -> Result<()> {
    let (lan, node) = lan_and_node()?;
    let kea = Kea6::start(&lan, Kea6Options::default())?;
    let (view, raw) = learn(&node, Duration::from_secs(15), has_router)?;
    capture("ra-radvd-managed", &raw)?;
    check_view(&view, true, true, false).with_context(|| kea.radvd().log())
}

#[test]
fn no_router_no_view() -> Result<()> {
    let (lan, node) = lan_and_node()?;
    lanlink_lab::lan6::enable_ipv6(&lan)?;
    // Nothing sends RAs: after three solicitations' worth of waiting the
    // view is still empty. (The other tests are the positive control: the
    // same `learn` sees the router when one is there.)
    let (view, raw) = learn(&node, Duration::from_secs(9), has_router)?;
    ensure!(raw.is_none(), "an RA came from nowhere");
    ensure!(
        view.last_ra().is_none() && view.routers().next().is_none(),
        "{view:?}"
    );
    Ok(())
}
