//! Unit tests of the agent over fakes ([`super::fakes`]): undo, idempotency,
//! lock ordering, ownership of the pod identity, readiness, host routes,
//! the uplink's all-multicast mode, the host veth's MAC.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use lanlink_api::codes;
use lanlink_common::EndpointByIf;
use rtnetlink::packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
};

use super::{
    fakes::{TestAgent, UPLINK_ADDR, Verb, request},
    host_veth_mac, host_veth_name,
};
use crate::dhcp;

/// The stable MAC of pod `default/<pod>` on `eth0`.
fn stable_mac(pod: &str) -> [u8; 6] {
    dhcp::stable_identity("default", pod, "eth0").0
}

const SHORT: Duration = Duration::from_millis(100);

#[tokio::test]
async fn add_then_del_leaves_nothing() {
    let t = TestAgent::start().await;
    let res = t.agent.add(request("c1", "p")).await.unwrap();
    assert_eq!(res.ips.len(), 1);
    {
        let w = t.world();
        assert_eq!(w.links.len(), 1);
        assert_eq!(w.ep_by_mac.len(), 1);
        assert!(w.uc_filter.contains(&stable_mac("p")));
        assert_eq!(w.leases.len(), 1);
        assert_eq!(w.flood.len(), 1);
    }
    t.agent.check(request("c1", "p")).await.unwrap();
    t.agent.del(request("c1", "p")).await.unwrap();
    t.world().assert_empty();
    assert!(t.agent.endpoints().is_empty());
}

/// Every step of ADD that can fail, in the order ADD takes them.
const ADD_STEPS: [&str; 11] = [
    "create_veth",
    "add_uc_filter",
    "allmulti",
    "set_allmulti",
    "attach",
    "register",
    "set_host_routes",
    "acquire",
    "configure_pod",
    "add_host_route",
    "set_flood",
];

#[tokio::test]
async fn a_failed_add_undoes_everything_at_every_step() {
    for step in ADD_STEPS {
        let t = TestAgent::start().await;
        t.world().fail_at = Some(step);
        let err = t.agent.add(request("c1", "p")).await.unwrap_err();
        t.world().assert_empty();
        assert!(t.agent.endpoints().is_empty(), "{step}: state not empty");
        // The identity was given back and nothing is in the way: the
        // retried ADD succeeds.
        t.world().fail_at = None;
        t.agent
            .add(request("c1", "p"))
            .await
            .unwrap_or_else(|e| panic!("retry after a failed {step} ({err}): {e}"));
        t.agent.del(request("c1", "p")).await.unwrap();
        t.world().assert_empty();
    }
}

#[tokio::test]
async fn undo_runs_in_reverse_and_detaches_before_unregistering() {
    let t = TestAgent::start().await;
    t.world().fail_at = Some("set_flood");
    t.agent.add(request("c1", "p")).await.unwrap_err();
    let w = t.world();
    let undo = w.calls_of(&[
        "release",
        "del_host_route",
        "detach",
        "unregister",
        "del_uc_filter",
        "delete_link",
    ]);
    let ops: Vec<&str> = undo.iter().map(|c| c.split(' ').next().unwrap()).collect();
    // The first delete_link is ADD's removal of a leftover veth.
    assert_eq!(
        ops,
        [
            "delete_link",
            "release",
            "del_host_route",
            "detach",
            "unregister",
            "del_uc_filter",
            "delete_link"
        ]
    );
}

#[tokio::test]
async fn del_detaches_the_programs_before_removing_the_map_entries() {
    let t = TestAgent::start().await;
    t.agent.add(request("c1", "p")).await.unwrap();
    t.world().calls.clear();
    t.agent.del(request("c1", "p")).await.unwrap();
    let w = t.world();
    let ops = w.calls_of(&["detach", "unregister", "purge_flows", "delete_link"]);
    let ops: Vec<&str> = ops.iter().map(|c| c.split(' ').next().unwrap()).collect();
    assert_eq!(ops, ["detach", "unregister", "purge_flows", "delete_link"]);
}

#[tokio::test]
async fn del_is_idempotent() {
    let t = TestAgent::start().await;
    // Never added: only the look-up and the (idempotent) removal of
    // program pins, nothing else touched.
    t.agent.del(request("c0", "p0")).await.unwrap();
    let veth = host_veth_name("c0", "eth0");
    assert_eq!(
        t.world().calls,
        [format!("find_link {veth}"), format!("detach {veth}")]
    );
    t.agent.add(request("c1", "p")).await.unwrap();
    t.agent.del(request("c1", "p")).await.unwrap();
    t.agent.del(request("c1", "p")).await.unwrap();
    t.world().assert_empty();
}

#[tokio::test]
async fn del_of_a_half_made_attachment_removes_it() {
    // A crash mid-ADD: veth, programs and entries exist, the state has none.
    let t = TestAgent::start().await;
    t.world().fail_at = Some("set_flood");
    t.agent.add(request("c1", "p")).await.unwrap_err();
    t.world().fail_at = None;
    let veth = host_veth_name("c1", "eth0");
    let mac = stable_mac("p");
    {
        let mut w = t.world();
        let index = 900;
        let pod = ("/run/netns/c1".to_string(), "eth0".to_string());
        let info = crate::netlink::LinkInfo {
            index,
            mac: [0x0a, 0, 0, 0, 0, 9],
            mtu: 1500,
        };
        w.links.insert(veth.clone(), (info, pod));
        w.attached.insert(veth.clone());
        w.uc_filter.insert(mac);
        w.ep_by_if.insert(index, endpoint(mac));
        w.ep_by_mac.insert(
            mac,
            lanlink_common::EndpointByMac {
                ifindex: index,
                ipv4: [0; 4],
                flags: 0,
            },
        );
    }
    t.agent.del(request("c1", "p")).await.unwrap();
    let w = t.world();
    assert!(w.links.is_empty() && w.attached.is_empty() && w.ep_by_if.is_empty());
    assert!(w.ep_by_mac.is_empty() && w.uc_filter.is_empty());
}

fn endpoint(mac: [u8; 6]) -> EndpointByIf {
    EndpointByIf {
        mac,
        host_mac: [0x0a, 0, 0, 0, 0, 9],
        ipv4: [0; 4],
        flags: 0,
    }
}

#[tokio::test]
async fn del_and_check_wait_for_the_add_in_progress() {
    for verb in [Verb::Del, Verb::Check] {
        let t = TestAgent::start().await;
        let (go, add) = t.add_held("c1", "p").await;
        // Without the attachment lock, DEL would remove a half-made pod and
        // CHECK would answer from one.
        let mut waiting = t.spawn(verb, "c1", "p");
        assert!(tokio::time::timeout(SHORT, &mut waiting).await.is_err());
        go.add_permits(1);
        add.await.unwrap().unwrap();
        waiting.await.unwrap().unwrap();
        if matches!(verb, Verb::Del) {
            // It removed all the ADD made.
            t.world().assert_empty();
        }
    }
}

#[tokio::test]
async fn operations_on_different_attachments_do_not_wait_for_each_other() {
    let t = TestAgent::start().await;
    let (go, add1) = t.add_held("c1", "p1").await;
    for verb in [Verb::Add, Verb::Del] {
        tokio::time::timeout(Duration::from_secs(5), t.spawn(verb, "c2", "p2"))
            .await
            .expect("a verb on c2 waited for c1's ADD")
            .unwrap()
            .unwrap();
    }
    go.add_permits(1);
    add1.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_second_attachment_with_the_same_identity_is_refused_until_the_first_is_deleted() {
    let t = TestAgent::start().await;
    t.agent.add(request("old-sandbox", "p")).await.unwrap();
    let calls = t.world().calls.len();
    let err = t.agent.add(request("new-sandbox", "p")).await.unwrap_err();
    assert_eq!(err.code(), codes::TRY_AGAIN_LATER);
    assert!(err.to_string().contains("old-sandbox"), "{err}");
    // Refused before anything was made.
    assert_eq!(t.world().calls.len(), calls);
    t.agent.del(request("old-sandbox", "p")).await.unwrap();
    t.agent.add(request("new-sandbox", "p")).await.unwrap();
    // A late DEL of the old sandbox leaves the new one alone.
    t.agent.del(request("old-sandbox", "p")).await.unwrap();
    t.agent.check(request("new-sandbox", "p")).await.unwrap();
}

#[tokio::test]
async fn the_del_of_an_old_sandbox_never_touches_what_the_new_one_owns() {
    let t = TestAgent::start().await;
    // The old sandbox's ADD crashed halfway: its veth and its EP_BY_IF
    // entry exist, the state has nothing (so nothing refuses the new ADD).
    let mac = stable_mac("p");
    let old_veth = host_veth_name("old-sandbox", "eth0");
    {
        let mut w = t.world();
        let info = crate::netlink::LinkInfo {
            index: 900,
            mac: [0x0a, 0, 0, 0, 0, 9],
            mtu: 1500,
        };
        let pod = ("/run/netns/old-sandbox".to_string(), "eth0".to_string());
        w.links.insert(old_veth.clone(), (info, pod));
        w.ep_by_if.insert(900, endpoint(mac));
    }
    t.agent.add(request("new-sandbox", "p")).await.unwrap();
    let new_index = t.world().ep_by_mac[&mac].ifindex;
    t.agent.del(request("old-sandbox", "p")).await.unwrap();
    let w = t.world();
    assert!(!w.links.contains_key(&old_veth), "the old veth stays");
    assert!(
        w.uc_filter.contains(&mac),
        "the new pod's filter entry was removed"
    );
    assert_eq!(w.ep_by_mac.get(&mac).map(|e| e.ifindex), Some(new_index));
    assert!(
        w.leases.contains_key(&mac),
        "the new pod's lease was released"
    );
    assert!(w.calls_of(&["del_uc_filter", "release"]).is_empty());
}

#[tokio::test]
async fn not_ready_until_readopted_and_while_the_uplink_is_down() {
    let t = TestAgent::new_with(|_| {});
    let status = t.agent.status();
    assert!(!status.ready);
    assert!(status.reason.unwrap().contains("re-adopting"));
    t.agent.readopt().await;
    assert!(t.agent.status().ready);
    t.agent.uplink_view().oper_up = false;
    let status = t.agent.status();
    assert!(!status.ready);
    assert!(status.reason.unwrap().contains("uplink0"));
}

#[tokio::test]
async fn host_routes_hold_the_uplink_addresses_and_the_netconf_prefixes() {
    let t =
        TestAgent::start_with(|c| c.host_routes = vec!["198.51.100.0/24".parse().unwrap()]).await;
    let uplink = (UPLINK_ADDR.0, 32);
    let service = (Ipv4Addr::new(10, 96, 0, 0), 12);
    let flag = (Ipv4Addr::new(198, 51, 100, 0), 24);
    t.agent.sync_host_routes().await.unwrap();
    assert_eq!(t.world().host_routes, [uplink, flag]);
    t.agent.add(request("c1", "p")).await.unwrap();
    assert_eq!(t.world().host_routes, [service, uplink, flag]);
    t.agent.del(request("c1", "p")).await.unwrap();
    assert_eq!(t.world().host_routes, [uplink, flag]);
}

#[tokio::test]
async fn uplink_address_changes_rewrite_the_host_routes() {
    let t = TestAgent::start().await;
    let added = Ipv4Addr::new(198, 18, 3, 3);
    let msg = |ip: Ipv4Addr| {
        let mut m = AddressMessage::default();
        m.header.index = super::fakes::UPLINK_INDEX;
        m.header.prefix_len = 22;
        m.attributes.push(AddressAttribute::Address(ip.into()));
        m
    };
    let events = futures::stream::iter([
        RouteNetlinkMessage::NewAddress(msg(added)),
        RouteNetlinkMessage::DelAddress(msg(UPLINK_ADDR.0)),
    ]);
    Arc::clone(&t.agent).watch_uplink(events).await;
    assert_eq!(t.world().host_routes, [(added, 32)]);
    assert_eq!(t.agent.uplink_view().addresses, [(added, 22)]);
}

#[tokio::test]
async fn a_restart_readopts_live_attachments_and_cleans_up_vanished_ones() {
    let t = TestAgent::start().await;
    t.agent.add(request("stays", "p1")).await.unwrap();
    t.agent.add(request("vanishes", "p2")).await.unwrap();
    // While the agent is down, the runtime deletes one pod's namespace (its
    // veth goes with it) and the pinned program links are all that is left.
    {
        let mut w = t.world();
        let veth = host_veth_name("vanishes", "eth0");
        let (_, pod) = w.links.remove(&veth).unwrap();
        w.pods.remove(&pod);
        w.calls.clear();
    }
    let t2 = t.restart().await;
    assert!(t2.agent.status().ready);
    {
        let w = t2.world();
        let stays = host_veth_name("stays", "eth0");
        assert!(
            w.calls.contains(&format!("attach {stays}")),
            "{:?}",
            w.calls
        );
        assert_eq!(w.attached.iter().collect::<Vec<_>>(), [&stays]);
        // The vanished one's lease, filter entry and map entries are gone …
        assert!(!w.leases.contains_key(&stable_mac("p2")));
        assert!(!w.uc_filter.contains(&stable_mac("p2")));
        assert!(!w.ep_by_mac.contains_key(&stable_mac("p2")));
        assert_eq!(w.ep_by_if.len(), 1);
        assert_eq!(w.flood.len(), 1);
    }
    assert_eq!(t2.agent.endpoints().len(), 1);
    // … and its identity is free again.
    t2.agent.add(request("vanishes-again", "p2")).await.unwrap();
    t2.agent.check(request("stays", "p1")).await.unwrap();
}
#[tokio::test]
async fn a_failed_save_leaves_memory_as_the_disk_says() {
    let t = TestAgent::start().await;
    // A directory where the state writer's temporary file goes: every
    // write fails, even as root.
    let blocker = t.agent.store.temp_path();
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("x"), b"").unwrap();
    let err = t.agent.add(request("c1", "p")).await.unwrap_err();
    assert!(err.to_string().contains("state"), "{err}");
    assert!(
        t.agent.endpoints().is_empty(),
        "memory says more than the disk"
    );
    t.world().assert_empty();
    std::fs::remove_dir_all(&blocker).unwrap();
    t.agent.add(request("c1", "p")).await.unwrap();
    assert_eq!(t.agent.endpoints().len(), 1);
    let t2 = t.restart().await;
    assert_eq!(t2.agent.endpoints().len(), 1, "the retried ADD is on disk");
}

#[tokio::test]
async fn port_security_reaches_the_endpoint_flags_and_guard_and_drops_are_reported() {
    use lanlink_common::{DropReason, EndpointGuard, endpoint_flags};

    let t = TestAgent::start().await;
    // Defaults: no server, no RAs, 1,000 frames/s with bursts of 2,000.
    t.agent.add(request("c1", "p")).await.unwrap();
    let mut req = request("c2", "q");
    req.config.port_security = lanlink_api::PortSecurity::new(true, true, 50, 7).unwrap();
    t.agent.add(req).await.unwrap();
    let (p, q) = {
        let eps = t.agent.endpoints();
        let find = |c: &str| {
            eps.iter()
                .find(|e| e.container_id == c)
                .unwrap()
                .host_ifindex
        };
        (find("c1"), find("c2"))
    };
    {
        let w = t.world();
        let server_ra = endpoint_flags::DHCP_SERVER | endpoint_flags::ROUTER_ADVERT;
        assert_eq!(w.ep_by_if[&p].flags & server_ra, 0);
        assert_eq!(w.ep_by_if[&q].flags & server_ra, server_ra);
        assert_eq!(w.guards[&p], EndpointGuard::new(1_000, 2_000));
        assert_eq!(w.guards[&q], EndpointGuard::new(50, 7));
    }
    // A renewal or restart re-registers with the same switches.
    let t2 = t.restart().await;
    assert_eq!(t2.world().guards[&q], EndpointGuard::new(50, 7));
    t2.world()
        .drops
        .insert(q, vec![(DropReason::Storm.slot(), 12)]);
    let eps = t2.agent.endpoints();
    let q_info = eps.iter().find(|e| e.container_id == "c2").unwrap();
    assert_eq!(q_info.drops.get("drop_storm"), Some(&12));
    assert!(q_info.port_security.dhcp_server);
    assert!(
        eps.iter()
            .find(|e| e.container_id == "c1")
            .unwrap()
            .drops
            .is_empty()
    );
    t2.agent.del(request("c2", "q")).await.unwrap();
    assert!(!t2.world().guards.contains_key(&q));
}

#[tokio::test]
async fn allmulti_is_on_while_attachments_exist() {
    let t = TestAgent::start().await;
    t.agent.add(request("c1", "p1")).await.unwrap();
    assert!(t.world().allmulti);
    t.agent.add(request("c2", "p2")).await.unwrap();
    // Turned on once, for the first attachment only.
    assert_eq!(t.world().calls_of(&["set_allmulti"]), ["set_allmulti on"]);
    t.agent.del(request("c1", "p1")).await.unwrap();
    assert!(t.world().allmulti, "one attachment is left");
    t.agent.del(request("c2", "p2")).await.unwrap();
    assert_eq!(
        t.world().calls_of(&["set_allmulti"]),
        ["set_allmulti on", "set_allmulti off"]
    );
    t.world().assert_empty();
    assert!(!t.agent.allmulti_marker().exists());
}

#[tokio::test]
async fn a_failed_add_beside_a_live_one_keeps_allmulti_and_alone_clears_it() {
    let t = TestAgent::start().await;
    t.agent.add(request("c1", "p1")).await.unwrap();
    t.world().fail_at = Some("configure_pod");
    t.agent.add(request("c2", "p2")).await.unwrap_err();
    assert!(t.world().allmulti, "c1 still needs it");
    t.world().fail_at = None;
    t.agent.del(request("c1", "p1")).await.unwrap();
    assert!(!t.world().allmulti);
    // Alone, the failed ADD's undo turns it off again.
    t.world().fail_at = Some("configure_pod");
    t.agent.add(request("c3", "p3")).await.unwrap_err();
    t.world().assert_empty();
}

#[tokio::test]
async fn allmulti_set_before_the_agent_is_never_turned_off() {
    let t = TestAgent::start().await;
    t.world().allmulti = true; // `ip link set dev eth0 allmulticast on`
    t.agent.add(request("c1", "p")).await.unwrap();
    t.agent.del(request("c1", "p")).await.unwrap();
    let w = t.world();
    assert!(w.allmulti);
    assert!(w.calls_of(&["set_allmulti"]).is_empty());
}

#[tokio::test]
async fn promiscuous_mode_leaves_allmulti_alone() {
    let t = TestAgent::start_with(|c| c.promiscuous = true).await;
    t.agent.add(request("c1", "p")).await.unwrap();
    assert!(!t.world().allmulti);
    assert!(t.world().calls_of(&["allmulti", "set_allmulti"]).is_empty());
    t.agent.del(request("c1", "p")).await.unwrap();
    t.world().assert_empty();
}

#[tokio::test]
async fn a_restart_keeps_allmulti_with_attachments_and_the_last_del_clears_it() {
    let t = TestAgent::start().await;
    t.agent.add(request("c1", "p")).await.unwrap();
    let t2 = t.restart().await;
    assert!(t2.world().allmulti);
    t2.agent.del(request("c1", "p")).await.unwrap();
    assert!(!t2.world().allmulti, "the restarted agent owns the mode");
    t2.world().assert_empty();
}

#[tokio::test]
async fn a_restart_without_attachments_turns_off_the_mode_it_left_on() {
    let t = TestAgent::start().await;
    t.agent.add(request("c1", "p")).await.unwrap();
    // The agent is down while the pod goes: its veth with it.
    {
        let mut w = t.world();
        let veth = host_veth_name("c1", "eth0");
        w.links.remove(&veth);
        w.pods.clear();
    }
    let t2 = t.restart().await;
    let w = t2.world();
    assert!(!w.allmulti);
    assert!(!t2.agent.allmulti_marker().exists());
}

#[tokio::test]
async fn a_restart_keeps_an_administrators_allmulti() {
    let t = TestAgent::start().await;
    t.world().allmulti = true;
    t.agent.add(request("c1", "p")).await.unwrap();
    let t2 = t.restart().await;
    t2.agent.del(request("c1", "p")).await.unwrap();
    assert!(t2.world().allmulti);
    assert!(t2.world().calls_of(&["set_allmulti"]).is_empty());
}

#[test]
fn host_veth_mac_is_stable_local_unicast_and_not_the_pods() {
    let veth = host_veth_name("c1", "eth0");
    let pod = stable_mac("p");
    let mac = host_veth_mac(&veth, pod);
    assert_eq!(mac, host_veth_mac(&veth, pod));
    assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
    assert_ne!(mac, pod);
    assert_ne!(mac, host_veth_mac(&host_veth_name("c2", "eth0"), pod));
    // Even a pod MAC equal to it gets a different host MAC.
    assert_ne!(host_veth_mac(&veth, mac), mac);
}

#[tokio::test]
async fn the_host_veth_gets_its_mac_at_creation_and_check_puts_it_back() {
    let t = TestAgent::start().await;
    let res = t.agent.add(request("c1", "p")).await.unwrap();
    let veth = host_veth_name("c1", "eth0");
    let expected = host_veth_mac(&veth, stable_mac("p"));
    assert_eq!(t.world().links[&veth].0.mac, expected);
    assert_eq!(res.interfaces[0].mac, expected.into());
    let index = t.world().links[&veth].0.index;
    // The ARP responder answers with it.
    assert_eq!(t.world().ep_by_if[&index].host_mac, expected);
    // udev's MACAddressPolicy=persistent rewrites it.
    t.world().links.get_mut(&veth).unwrap().0.mac = [0x02, 9, 9, 9, 9, 9];
    t.agent.check(request("c1", "p")).await.unwrap();
    assert_eq!(t.world().links[&veth].0.mac, expected);
    assert_eq!(t.world().calls_of(&["set_link_mac"]).len(), 1);
    // Nothing to put back: no call.
    t.agent.check(request("c1", "p")).await.unwrap();
    assert_eq!(t.world().calls_of(&["set_link_mac"]).len(), 1);
    // A restart puts it back too.
    t.world().links.get_mut(&veth).unwrap().0.mac = [0x02, 9, 9, 9, 9, 9];
    let t2 = t.restart().await;
    assert_eq!(t2.world().links[&veth].0.mac, expected);
    t2.agent.del(request("c1", "p")).await.unwrap();
    t2.world().assert_empty();
}
