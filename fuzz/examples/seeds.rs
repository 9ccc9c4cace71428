//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`
//! (`seed-*` files; libFuzzer adds its finds beside them):
//!
//! - `netconf`: the plugin netconfs of `deploy/examples/*.conflist` (flattened
//!   as a runtime does) and of the lab and tests, each with the `CNI_*`
//!   environment of every verb;
//! - `dhcp_reply`: OFFER, ACK and NAK frames and bare messages as dnsmasq
//!   sends them (dhcproto + etherparse), with option 121, an infinite lease,
//!   split options (RFC 3396) and option overload (RFC 2131);
//! - `api_request`: the bodies the plugin sends (ADD/DEL/CHECK from the
//!   netconf seeds, GC);
//! - `state_file`: `endpoints.json` as the agent writes it, with leases from
//!   the ACK seeds.
//!
//! Run from `fuzz/`: `cargo run --example seeds`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder};
use lanlink_agent::state::{Endpoint, State, v1};
use lanlink_api::{AttachmentId, GcRequest, PodIdentity};
use lanlink_cni::netconf::{CniEnv, Command, NetConf};
use serde_json::{Value, json};

const POD_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const SERVER_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    let netconfs = netconfs(&root.join(".."));
    let envs = envs();

    let dir = target_dir(&corpus, "netconf");
    for (i, conf) in netconfs.iter().enumerate() {
        for (verb, env) in &envs {
            let mut seed = env.clone().into_bytes();
            seed.push(0);
            seed.extend_from_slice(conf.to_string().as_bytes());
            write(&dir, &format!("seed-conf{i:02}-{verb}"), &seed);
        }
    }
    // Broken ones too: the error paths are inputs like any other.
    write(
        &dir,
        "seed-not-json",
        b"CNI_COMMAND=ADD\n\0{\"cniVersion\": \"1.0.0\", \"name\": ",
    );
    write(&dir, "seed-no-env", netconfs[0].to_string().as_bytes());

    let dir = target_dir(&corpus, "dhcp_reply");
    let replies = replies();
    for (name, msg) in &replies {
        let payload = encode(msg);
        write(&dir, &format!("seed-{name}-frame"), &frame(&payload));
        write(&dir, &format!("seed-{name}-bare"), &payload);
    }
    let ack = encode(&replies[1].1);
    write(&dir, "seed-ack-split-options", &split_options(&ack));
    write(&dir, "seed-ack-overload-file", &frame(&overloaded(&ack)));
    // The seeds reach what they are for: every ACK grants a lease (the
    // split DNS option joined, the overloaded timers found), the OFFER is
    // taken, the NAK is seen.
    let outcome = |bytes: &[u8]| lanlink_agent::dhcp::fuzz_reply(bytes, 1_780_000_000);
    for (name, msg) in &replies {
        let got = outcome(&frame(&encode(msg))).expect("a seed parses");
        match *name {
            "offer" => assert!(got.offer.is_some(), "{name}"),
            "nak" => assert!(got.nak, "{name}"),
            _ => assert!(got.lease.is_some(), "{name}"),
        }
    }
    let split = outcome(&split_options(&ack))
        .and_then(|r| r.lease)
        .expect("split");
    assert_eq!(split.dns.len(), 2, "the split DNS option is joined");
    let over = outcome(&frame(&overloaded(&ack)))
        .and_then(|r| r.lease)
        .expect("overload");
    assert_eq!(
        (over.lease_secs, over.t1_secs),
        (3600, 1800),
        "overloaded timers"
    );

    let dir = target_dir(&corpus, "api_request");
    for (i, conf) in netconfs.iter().enumerate() {
        let Ok(parsed) = NetConf::parse(conf.to_string().as_bytes()) else {
            panic!("seed netconf {i} does not parse: {conf}");
        };
        let env = CniEnv::from_lookup(Command::Add, |k| lookup(&envs[0].1, k)).unwrap();
        let body = serde_json::to_vec(&parsed.attachment_request(&env)).unwrap();
        // Selector: route 0..3 (ADD, DEL, CHECK), POST, JSON content type.
        for route in 0..3u8 {
            let mut seed = vec![route];
            seed.extend_from_slice(&body);
            write(&dir, &format!("seed-conf{i:02}-route{route}"), &seed);
        }
    }
    let gc = GcRequest {
        network: "lanlink".into(),
        valid_attachments: vec![AttachmentId {
            container_id: "c0ffee".into(),
            ifname: "eth0".into(),
        }],
    };
    let mut seed = vec![3u8];
    seed.extend_from_slice(&serde_json::to_vec(&gc).unwrap());
    write(&dir, "seed-gc", &seed);

    let dir = target_dir(&corpus, "state_file");
    let mut state = State::default();
    for (i, conf) in netconfs.iter().enumerate() {
        let parsed = NetConf::parse(conf.to_string().as_bytes()).unwrap();
        let lease = lanlink_agent::dhcp::fuzz_reply(&frame(&ack), 1_780_000_000)
            .and_then(|r| r.lease)
            .expect("the ACK seed grants a lease");
        let config = parsed.attachment_config();
        let container_id = format!("c{i:02}");
        let ep = Endpoint {
            container_id: container_id.clone(),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/cni-{i}"),
            pod: PodIdentity {
                namespace: Some("default".into()),
                name: Some(format!("web-{i}")),
                uid: Some(format!("uid-{i}")),
            },
            lease: config.dhcp.is_some().then_some(lease),
            config,
            host_veth: format!("ll{i:012x}"),
            host_ifindex: 10 + i as u32,
            host_mac: [0x02, 0, 0, 0, 0, i as u8],
            mac: POD_MAC,
            expired: i % 3 == 2,
        };
        state.endpoints.insert(ep.key(), ep);
        let file = serde_json::to_vec_pretty(&v1::File::from(&state)).unwrap();
        write(
            &dir,
            &format!("seed-state-{}", state.endpoints.len()),
            &file,
        );
    }
    write(&dir, "seed-empty", br#"{"version":1,"endpoints":{}}"#);
}

/// `fuzz/corpus/<target>/`, created.
fn target_dir(corpus: &Path, target: &str) -> PathBuf {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn lookup(env: &str, key: &str) -> Option<String> {
    env.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// The plugin netconfs: the deploy examples flattened as a runtime does,
/// and the shapes the lab and the tests use.
fn netconfs(workspace: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut lists: Vec<_> = std::fs::read_dir(workspace.join("deploy/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
        .collect();
    lists.sort();
    for path in lists {
        let list: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for plugin in list["plugins"].as_array().unwrap() {
            if plugin["type"] != "lanlink" {
                continue;
            }
            let mut conf = plugin.clone();
            conf["cniVersion"] = list["cniVersion"].clone();
            conf["name"] = list["name"].clone();
            out.push(conf);
        }
    }
    out.push(json!({
        "cniVersion": "1.0.0", "name": "lanlink-lab", "type": "lanlink", "uplink": "eth0",
        "mode": "primary", "socketPath": "/run/lanlink-lab/agent.sock",
        "delQueueDir": "/var/lib/lanlink/del-queue",
    }));
    out.push(json!({
        "cniVersion": "0.4.0", "name": "lan", "type": "lanlink", "mode": "secondary",
        "hostRoutes": ["198.19.0.0/16"], "mtu": 1400,
        "ipam": {"type": "lanlink-dhcp", "timeoutMs": 7000, "arpProbeMs": 0,
                 "identity": "random", "sendOptions": [{"code": 77, "value": "0x0102"}]},
        "portSecurity": {"dhcpServer": true, "routerAdvertisements": false,
                         "broadcastPps": 1000, "broadcastBurst": 2000},
        "disableCheck": true,
    }));
    out.push(json!({
        "cniVersion": "0.3.1", "name": "vm", "type": "lanlink", "ipam": {"type": "none"},
    }));
    out.push(json!({
        "cniVersion": "1.1.0", "name": "lanlink", "type": "lanlink",
        "prevResult": {
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "02:11:22:33:44:55", "sandbox": "/var/run/netns/p"}],
            "ips": [{"address": "198.18.0.150/24", "gateway": "198.18.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}],
            "dns": {"nameservers": ["198.18.0.53"], "domain": "lan", "search": ["lan"]}
        },
        "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        "args": {"cni": {"ips": ["198.18.0.9"]}},
    }));
    out.push(json!({
        "cniVersion": "1.1.0", "name": "lanlink", "type": "lanlink",
        "cni.dev/valid-attachments": [{"containerID": "c0ffee", "ifname": "eth0"}],
    }));
    out
}

/// The `CNI_*` environment of each verb (as containerd passes it).
fn envs() -> Vec<(&'static str, String)> {
    let common = "CNI_CONTAINERID=c0ffee\nCNI_NETNS=/var/run/netns/cni-1\nCNI_IFNAME=eth0\n\
                  CNI_PATH=/opt/cni/bin:/usr/lib/cni\n\
                  CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
                  K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=1b2c\n";
    ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]
        .into_iter()
        .map(|verb| (verb, format!("CNI_COMMAND={verb}\n{common}")))
        .collect()
}

/// A reply of `msg_type` with the options dnsmasq sends.
fn reply(msg_type: MessageType, yiaddr: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        SERVER_IP,
        Ipv4Addr::UNSPECIFIED,
        &POD_MAC,
    );
    m.set_opcode(Opcode::BootReply);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(msg_type));
    o.insert(DhcpOption::ServerIdentifier(SERVER_IP));
    if msg_type != MessageType::Nak {
        o.insert(DhcpOption::AddressLeaseTime(3600));
        o.insert(DhcpOption::Renewal(1800));
        o.insert(DhcpOption::Rebinding(3150));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER_IP]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            198, 18, 0, 53,
        )]));
        o.insert(DhcpOption::DomainName("lan".into()));
        o.insert(DhcpOption::InterfaceMtu(1500));
    }
    m
}

fn replies() -> Vec<(&'static str, Message)> {
    let addr = Ipv4Addr::new(198, 18, 0, 150);
    let offer = reply(MessageType::Offer, addr);
    let mut ack = reply(MessageType::Ack, addr);
    ack.opts_mut()
        .insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::ClasslessStaticRoute,
            lanlink_agent::dhcp::encode_classless_routes(&[
                (
                    Ipv4Addr::new(198, 19, 0, 0),
                    16,
                    Ipv4Addr::new(198, 18, 0, 254),
                ),
                (Ipv4Addr::UNSPECIFIED, 0, SERVER_IP),
            ]),
        )));
    let mut minimal = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        addr,
        SERVER_IP,
        Ipv4Addr::UNSPECIFIED,
        &POD_MAC,
    );
    minimal.set_opcode(Opcode::BootReply);
    minimal
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Ack));
    minimal.opts_mut().insert(DhcpOption::AddressLeaseTime(120));
    let mut infinite = reply(MessageType::Ack, addr);
    infinite
        .opts_mut()
        .insert(DhcpOption::AddressLeaseTime(u32::MAX));
    let mut nak = reply(MessageType::Nak, Ipv4Addr::UNSPECIFIED);
    nak.opts_mut().insert(DhcpOption::Message(
        "requested address not available".into(),
    ));
    let mut search = reply(MessageType::Ack, addr);
    search
        .opts_mut()
        .insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::DomainSearch,
            b"\x03lan\x00\x07example\x03com\x00".to_vec(),
        )));
    vec![
        ("offer", offer),
        ("ack", ack),
        ("ack-minimal", minimal),
        ("ack-infinite", infinite),
        ("nak", nak),
        ("ack-search", search),
    ]
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

/// The server's frame to the pod: broadcast from port 67 to port 68.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(SERVER_MAC, [0xff; 6])
        .ipv4(SERVER_IP.octets(), [255; 4], 64)
        .udp(67, 68)
        .write(&mut f, payload)
        .unwrap();
    f
}

/// The message's options walked as (code, value), in order.
fn options(payload: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let area = &payload[240..];
    let mut i = 0;
    while i < area.len() {
        match area[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = area[i + 1] as usize;
                out.push((code, area[i + 2..i + 2 + len].to_vec()));
                i += 2 + len;
            }
        }
    }
    out
}

/// The same message with the DNS option split in two (RFC 3396).
fn split_options(payload: &[u8]) -> Vec<u8> {
    let mut out = payload[..240].to_vec();
    for (code, value) in options(payload) {
        if code == 6 {
            out.extend_from_slice(&[6, 4]);
            out.extend_from_slice(&value[..4]);
            out.extend_from_slice(&[6, 4]);
            out.extend_from_slice(&[198, 18, 0, 54]);
        } else {
            out.push(code);
            out.push(value.len() as u8);
            out.extend_from_slice(&value);
        }
    }
    out.push(255);
    out
}

/// The same message with the lease options moved into the `file` field
/// behind option 52 (overload = 1).
fn overloaded(payload: &[u8]) -> Vec<u8> {
    let mut out = payload[..240].to_vec();
    let mut file = Vec::new();
    let mut main = vec![52, 1, 1];
    let moved: BTreeMap<u8, ()> = [(51, ()), (58, ()), (59, ())].into();
    for (code, value) in options(payload) {
        let dst = if moved.contains_key(&code) {
            &mut file
        } else {
            &mut main
        };
        dst.push(code);
        dst.push(value.len() as u8);
        dst.extend_from_slice(&value);
    }
    file.push(255);
    out[108..108 + file.len()].copy_from_slice(&file);
    main.push(255);
    out.extend_from_slice(&main);
    out
}
