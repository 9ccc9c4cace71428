//! Tests of the state file: its versions and its writer.

use super::*;
use lanlink_api::{DhcpConfig, DhcpOption, Identity, Mode};
use std::net::Ipv4Addr;

/// A state dir removed on drop.
struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir() -> Dir {
    Dir(std::env::temp_dir().join(format!(
        "lanlink-state-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    )))
}

fn endpoint(container_id: &str, lease: Option<Lease>) -> Endpoint {
    Endpoint {
        container_id: container_id.into(),
        ifname: "eth0".into(),
        netns: "/run/netns/p".into(),
        pod: PodIdentity::default(),
        config: AttachmentConfig::default(),
        host_veth: "ll0123456789ab".into(),
        host_ifindex: 7,
        host_mac: [2, 0, 0, 0, 0, 7],
        mac: [2, 0, 0, 0, 0, 1],
        lease,
        expired: false,
        ipv6: None,
    }
}

fn lease() -> Lease {
    Lease {
        mac: [2, 0, 0, 0, 0, 1],
        client_id: vec![0xff, 1, 2],
        hostname: Some("web-0".into()),
        address: Ipv4Addr::new(198, 18, 0, 150),
        prefix_len: 24,
        server_id: Ipv4Addr::new(198, 18, 0, 1),
        server_mac: [2, 0, 0, 0, 0, 2],
        router: Some(Ipv4Addr::new(198, 18, 0, 1)),
        classless_routes: vec![(
            Ipv4Addr::new(198, 19, 0, 0),
            16,
            Ipv4Addr::new(198, 18, 0, 254),
        )],
        dns: vec![Ipv4Addr::new(198, 18, 0, 53)],
        domain: Some("lan".into()),
        search: vec!["lan".into()],
        mtu: Some(1400),
        lease_secs: 120,
        t1_secs: 60,
        t2_secs: 105,
        obtained_at_unix: 1_000,
    }
}

/// Every field set away from its default, so a lost field shows.
fn full_state() -> State {
    let mut ep = endpoint("c1", Some(lease()));
    ep.pod = PodIdentity {
        namespace: Some("ns".into()),
        name: Some("web-0".into()),
        uid: Some("u-1".into()),
    };
    ep.config = AttachmentConfig {
        network: "lan".into(),
        uplink: Some("eth9".into()),
        mode: Mode::Secondary,
        host_routes: vec!["198.19.0.0/16".parse().unwrap()],
        dhcp: Some(DhcpConfig {
            timeout_ms: 7_000,
            identity: Identity::Random,
            send_options: vec![DhcpOption::parse(77, "0x0102").unwrap()],
            arp_probe_ms: 0,
        }),
        mtu: Some(1400),
        // The released file predates the switches: the defaults.
        port_security: Default::default(),
        ipv6: Default::default(),
        ipv6_iid: Default::default(),
    };
    ep.expired = true;
    let mut st = State::default();
    st.endpoints.insert(ep.key(), ep);
    let bare = endpoint("c2", None);
    st.endpoints.insert(bare.key(), bare);
    st
}

fn state_of(n: usize) -> State {
    let mut st = State::default();
    for i in 0..n {
        let ep = endpoint(&format!("c{i}"), None);
        st.endpoints.insert(ep.key(), ep);
    }
    st
}

/// A file the released agent (state without `state::v1`) wrote: version 1,
/// the netconf part as the API's `AttachmentConfig` serialised it.
const RELEASED_FILE: &str = r#"{
  "version": 1,
  "endpoints": {
    "c1/eth0": {
      "containerId": "c1",
      "ifname": "eth0",
      "netns": "/run/netns/p",
      "pod": { "namespace": "ns", "name": "web-0", "uid": "u-1" },
      "config": {
        "network": "lan",
        "uplink": "eth9",
        "mode": "secondary",
        "hostRoutes": ["198.19.0.0/16"],
        "dhcp": {
          "timeoutMs": 7000,
          "identity": "random",
          "sendOptions": [{ "code": 77, "value": "0x0102" }],
          "arpProbeMs": 0
        },
        "mtu": 1400
      },
      "hostVeth": "ll0123456789ab",
      "hostIfindex": 7,
      "hostMac": [2, 0, 0, 0, 0, 7],
      "mac": [2, 0, 0, 0, 0, 1],
      "lease": {
        "mac": [2, 0, 0, 0, 0, 1],
        "client_id": [255, 1, 2],
        "hostname": "web-0",
        "address": "198.18.0.150",
        "prefix_len": 24,
        "server_id": "198.18.0.1",
        "server_mac": [2, 0, 0, 0, 0, 2],
        "router": "198.18.0.1",
        "classless_routes": [["198.19.0.0", 16, "198.18.0.254"]],
        "dns": ["198.18.0.53"],
        "domain": "lan",
        "search": ["lan"],
        "mtu": 1400,
        "lease_secs": 120,
        "t1_secs": 60,
        "t2_secs": 105,
        "obtained_at_unix": 1000
      },
      "expired": true
    },
    "c2/eth0": {
      "containerId": "c2",
      "ifname": "eth0",
      "netns": "/run/netns/p",
      "pod": {},
      "config": { "network": "", "mode": "primary", "hostRoutes": [] },
      "hostVeth": "ll0123456789ab",
      "hostIfindex": 7,
      "hostMac": [2, 0, 0, 0, 0, 7],
      "mac": [2, 0, 0, 0, 0, 1],
      "lease": null,
      "expired": false
    }
  }
}"#;

fn write_file(d: &Dir, content: &str) {
    std::fs::create_dir_all(&d.0).unwrap();
    std::fs::write(d.0.join(crate::paths::STATE_FILE), content).unwrap();
}

fn file_json(d: &Dir) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(d.0.join(crate::paths::STATE_FILE)).unwrap()).unwrap()
}

#[tokio::test]
async fn a_state_survives_a_save_and_load() {
    let d = dir();
    let store = Store::new(&d.0).unwrap();
    assert_eq!(store.load().unwrap(), State::default(), "no file: empty");
    let st = full_state();
    store.submit(st.clone()).wait().await.unwrap();
    let back = Store::new(&d.0).unwrap().load().unwrap();
    assert_eq!(back, st);
    assert_eq!(file_json(&d)["version"], 1);
    // Only the state file: the temporary file was renamed over it.
    let names: Vec<_> = std::fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from(crate::paths::STATE_FILE)]
    );
}

#[test]
fn the_released_agents_file_loads_and_is_written_back_the_same() {
    let d = dir();
    write_file(&d, RELEASED_FILE);
    let store = Store::new(&d.0).unwrap();
    let st = store.load().unwrap();
    assert_eq!(st, full_state());
    // Writing it again gives the released layout field for field, so an
    // older agent started after this one still reads the file.
    store.submit(st).wait_blocking().unwrap();
    let released: serde_json::Value = serde_json::from_str(RELEASED_FILE).unwrap();
    assert_eq!(file_json(&d), released);
}

#[test]
fn records_without_lease_expiry_or_pod_load_with_defaults() {
    let d = dir();
    write_file(
        &d,
        r#"{"version":1,"endpoints":{"c1/eth0":{"containerId":"c1","ifname":"eth0",
        "netns":"/run/netns/p","config":{"network":""},"hostVeth":"ll0123456789ab",
        "hostIfindex":7,"hostMac":[2,0,0,0,0,7],"mac":[2,0,0,0,0,1]}}}"#,
    );
    let back = Store::new(&d.0).unwrap().load().unwrap();
    assert_eq!(back.endpoints["c1/eth0"], endpoint("c1", None));
}

#[test]
fn port_security_round_trips_and_out_of_range_limits_are_refused() {
    let d = dir();
    let store = Store::new(&d.0).unwrap();
    let mut st = full_state();
    let switches = lanlink_api::PortSecurity::new(true, true, 0, 1).unwrap();
    st.endpoints
        .get_mut("c1/eth0")
        .unwrap()
        .config
        .port_security = switches;
    store.submit(st.clone()).wait_blocking().unwrap();
    assert_eq!(
        file_json(&d)["endpoints"]["c1/eth0"]["config"]["portSecurity"],
        serde_json::json!({"dhcpServer": true, "routerAdvertisements": true,
                           "broadcastPps": 0, "broadcastBurst": 1})
    );
    // The defaults are not written (an older agent reads the file).
    assert!(file_json(&d)["endpoints"]["c2/eth0"]["config"]["portSecurity"].is_null());
    assert_eq!(store.load().unwrap(), st);
    // A stored limit the API no longer accepts names the attachment.
    let bad = RELEASED_FILE.replacen(
        r#""mtu": 1400"#,
        r#""mtu": 1400, "portSecurity": {"dhcpServer": false, "routerAdvertisements": false, "broadcastPps": 5, "broadcastBurst": 0}"#,
        1,
    );
    assert_ne!(bad, RELEASED_FILE, "the replacement must hit");
    write_file(&d, &bad);
    let err = Store::new(&d.0).unwrap().load().unwrap_err();
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.contains("c1/eth0: portSecurity"), "{chain}");
}

#[test]
fn a_file_without_version_in_the_version_1_layout_loads() {
    let d = dir();
    let mut json: serde_json::Value = serde_json::from_str(RELEASED_FILE).unwrap();
    json.as_object_mut().unwrap().remove("version");
    write_file(&d, &json.to_string());
    assert_eq!(Store::new(&d.0).unwrap().load().unwrap(), full_state());
}

#[test]
fn a_stored_host_route_with_host_bits_loads_as_its_network() {
    let d = dir();
    write_file(&d, &RELEASED_FILE.replace("198.19.0.0/16", "198.19.3.4/16"));
    assert_eq!(Store::new(&d.0).unwrap().load().unwrap(), full_state());
}

#[test]
fn an_invalid_stored_option_is_an_error_naming_the_attachment() {
    let d = dir();
    // Code 53 (message type) is the client's own: never accepted.
    write_file(&d, &RELEASED_FILE.replace(r#""code": 77"#, r#""code": 53"#));
    let err = Store::new(&d.0).unwrap().load().unwrap_err();
    assert!(matches!(err, StateError::Invalid { .. }), "{err:?}");
    let chain = format!("{:?}", std::error::Error::source(&err));
    assert!(chain.contains("c1/eth0"), "{chain}");
}

#[test]
fn an_unknown_version_is_refused_naming_file_and_versions() {
    let d = dir();
    write_file(&d, r#"{"version":7,"endpoints":{},"pods":[]}"#);
    let err = Store::new(&d.0).unwrap().load().unwrap_err();
    assert!(matches!(err, StateError::Version { .. }), "{err:?}");
    let path = d.0.join(crate::paths::STATE_FILE);
    assert_eq!(
        err.to_string(),
        format!(
            "the state file {} has version 7; this lanlinkd reads version 1",
            path.display()
        )
    );
}

#[test]
fn a_file_without_version_in_another_layout_is_refused() {
    let d = dir();
    write_file(&d, r#"{"pods":[{"id":"c1"}]}"#);
    let err = Store::new(&d.0).unwrap().load().unwrap_err();
    assert!(matches!(err, StateError::Unversioned { .. }), "{err:?}");
    assert!(err.to_string().contains("has no version"), "{err}");
    assert!(err.to_string().contains(crate::paths::STATE_FILE), "{err}");
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it() {
    for content in [
        "{ half",
        r#"{"version":1,"endpoints":{"k":{"containerId":3}}}"#,
    ] {
        let d = dir();
        write_file(&d, content);
        let err = Store::new(&d.0).unwrap().load().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(crate::paths::STATE_FILE), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_all_resolve_and_the_newest_is_on_disk() {
    let d = dir();
    let store = Store::new(&d.0).unwrap();
    // Snapshots queued in order (as the agent queues under its state lock),
    // awaited concurrently.
    let order = std::sync::Mutex::new(());
    let mut tasks = Vec::new();
    for n in 1..=64 {
        let pending = {
            let _g = order.lock().unwrap();
            store.submit(state_of(n))
        };
        tasks.push(tokio::spawn(pending.wait()));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.load().unwrap(), state_of(64));
}

#[test]
fn saves_from_many_threads_all_resolve() {
    let d = dir();
    let store = Store::new(&d.0).unwrap();
    let last = std::sync::Mutex::new(0usize);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (store, last) = (&store, &last);
            s.spawn(move || {
                for i in 0..8 {
                    let n = t * 8 + i + 1;
                    let pending = {
                        let mut l = last.lock().unwrap();
                        *l = n;
                        store.submit(state_of(n))
                    };
                    pending.wait_blocking().unwrap();
                }
            });
        }
    });
    let last = *last.lock().unwrap();
    assert_eq!(store.load().unwrap(), state_of(last));
}

#[tokio::test]
async fn a_failed_write_reaches_the_waiter_and_keeps_the_old_file() {
    let d = dir();
    let store = Store::new(&d.0).unwrap();
    store.submit(state_of(1)).wait().await.unwrap();
    // A directory where the temporary file goes: creating it fails, even
    // for root.
    let tmp = store.temp_path();
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(tmp.join("x"), b"").unwrap();
    let err = store.submit(state_of(2)).wait().await.unwrap_err();
    assert!(matches!(err, StateError::Save { .. }), "{err:?}");
    assert!(err.to_string().contains(crate::paths::STATE_FILE), "{err}");
    let chain = format!("{:?}", std::error::Error::source(&err));
    assert!(chain.contains("creating"), "{chain}");
    assert_eq!(store.load().unwrap(), state_of(1), "old file intact");
    // The writer survives a failure.
    std::fs::remove_dir_all(&tmp).unwrap();
    store.submit(state_of(3)).wait().await.unwrap();
    assert_eq!(store.load().unwrap(), state_of(3));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn a_new_state_dir_is_created_0700_and_the_state_file_written_0600() {
    let d = dir();
    let state_dir = d.0.join("var/lib/lanlink");
    let store = Store::new(&state_dir).unwrap();
    assert_eq!(mode(&state_dir), 0o700);
    store.submit(state_of(1)).wait().await.unwrap();
    assert_eq!(mode(store.path()), 0o600);
}

#[test]
fn an_open_state_dir_and_state_file_are_narrowed_and_a_leftover_removed() {
    let d = dir();
    std::fs::create_dir_all(&d.0).unwrap();
    chmod(&d.0, 0o2755);
    let file = d.0.join(crate::paths::STATE_FILE);
    std::fs::write(&file, "{\"version\": 1, \"endpoints\": {}}").unwrap();
    chmod(&file, 0o644);
    let store = Store::new(&d.0).unwrap();
    let leftover = store.temp_path();
    drop(store);
    std::fs::write(&leftover, b"").unwrap();
    chmod(&leftover, 0o666);
    let store = Store::new(&d.0).unwrap();
    assert_eq!(mode(&d.0), 0o700);
    assert_eq!(mode(&file), 0o600);
    assert!(!leftover.exists(), "the leftover temporary file is removed");
    assert_eq!(store.load().unwrap(), State::default());
}

#[test]
fn narrower_modes_are_left_alone() {
    let d = dir();
    std::fs::create_dir_all(&d.0).unwrap();
    chmod(&d.0, 0o700);
    let file = d.0.join(crate::paths::STATE_FILE);
    std::fs::write(&file, "{\"version\": 1, \"endpoints\": {}}").unwrap();
    chmod(&file, 0o400);
    Store::new(&d.0).unwrap();
    assert_eq!(mode(&d.0), 0o700);
    assert_eq!(mode(&file), 0o400);
}

#[test]
fn a_state_dir_that_is_a_file_is_an_error_naming_it() {
    let d = dir();
    std::fs::create_dir_all(&d.0).unwrap();
    let not_dir = d.0.join("state");
    std::fs::write(&not_dir, b"").unwrap();
    let err = Store::new(&not_dir).unwrap_err();
    assert!(matches!(err, StateError::Dir { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&*not_dir.to_string_lossy()),
        "{err}"
    );
}

/// Set in the environment of the child of
/// [`a_kill_at_any_point_of_a_write_leaves_the_old_or_the_new_state`]: its
/// state directory.
const KILL_CHILD_DIR: &str = "LANLINK_STATE_KILL_CHILD_DIR";
/// The first generation the child writes.
const KILL_CHILD_FROM: &str = "LANLINK_STATE_KILL_CHILD_FROM";
/// Endpoints in a generation: a state of a busy node (~250 KiB of JSON), and
/// a size that changes from one generation to the next, so a file mixing two
/// would show in its length too.
fn generation(g: u64) -> State {
    let mut st = State::default();
    for i in 0..(200 + g % 57) {
        let mut l = lease();
        l.obtained_at_unix = g;
        let ep = endpoint(&format!("c{i:04}"), Some(l));
        st.endpoints.insert(ep.key(), ep);
    }
    st
}

/// The generation a loaded state is, if it is one whole.
fn generation_of(st: &State) -> Option<u64> {
    let g = st
        .endpoints
        .values()
        .next()?
        .lease
        .as_ref()?
        .obtained_at_unix;
    (*st == generation(g)).then_some(g)
}

/// The child side of
/// [`a_kill_at_any_point_of_a_write_leaves_the_old_or_the_new_state`]
/// (that test runs this binary again with only this test and
/// [`KILL_CHILD_DIR`] set): writes generation after generation through the
/// agent's writer, printing each one once its write returned, until killed.
/// Without the variable (a normal test run) it does nothing.
#[test]
fn state_writer_kill_child() {
    let Some(dir) = std::env::var_os(KILL_CHILD_DIR) else {
        return;
    };
    use std::io::Write as _;
    let from: u64 = std::env::var(KILL_CHILD_FROM).unwrap().parse().unwrap();
    let store = Store::new(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for g in from.. {
        store.submit(generation(g)).wait_blocking().unwrap();
        writeln!(out, "{g}").unwrap();
        out.flush().unwrap();
    }
}

/// A real process writing the state in a loop, SIGKILLed 200 times at
/// random points of its writes: after each kill the state loads, and it is
/// the last generation the process saw written or the one it was writing —
/// never an error, never a mix. A kill that left the writer's temporary
/// file behind (the positive control that kills land inside writes) has it
/// removed by the next start, and the state is still whole.
#[test]
fn a_kill_at_any_point_of_a_write_leaves_the_old_or_the_new_state() {
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::process::{Command, Stdio};
    // At least KILLS kills; more (up to MAX_KILLS) until both positive
    // controls were seen MIN_SEEN times: on a loaded machine fewer kills
    // land inside a write, and the check must not depend on the load.
    const KILLS: usize = 200;
    const MAX_KILLS: usize = 1_000;
    const MIN_SEEN: usize = 10;
    let d = dir();
    std::fs::create_dir_all(&d.0).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last: Option<u64> = None;
    let (mut leftovers, mut mid_write) = (0, 0);
    let mut kills = 0;
    for kill in 0..MAX_KILLS {
        if kill >= KILLS && leftovers >= MIN_SEEN && mid_write >= MIN_SEEN {
            break;
        }
        kills += 1;
        let from = last.map_or(1, |g| g + 1);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "state::tests::state_writer_kill_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_CHILD_DIR, &d.0)
            .env(KILL_CHILD_FROM, from.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // Past the start (libtest's own lines first): kill inside the loop.
        let mut line = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // (libtest's "test … ... " has no newline before the test runs.)
        while !line.trim_end().ends_with("ready") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended");
            assert!(std::time::Instant::now() < deadline, "child never ready");
        }
        // 0 to 60 ms: from before the first write to a few writes in (a
        // write of this state, serialising and fsyncs, takes 10-30 ms here).
        std::thread::sleep(std::time::Duration::from_micros(
            rand::random::<u64>() % 60_000,
        ));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed");
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let printed = rest
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .max();
        let done = printed.or(last);

        let tmp = writer::temp_path(&d.0.join(crate::paths::STATE_FILE));
        let left = tmp.exists();
        // A start: the leftover goes, the state loads whole.
        let store = Store::new(&d.0).unwrap();
        assert!(
            !tmp.exists(),
            "kill {kill}: the leftover temporary file is removed"
        );
        let st = store
            .load()
            .unwrap_or_else(|e| panic!("kill {kill}: {e:#}"));
        drop(store);
        let g = if st.endpoints.is_empty() && done.is_none() {
            None
        } else {
            Some(generation_of(&st).unwrap_or_else(|| panic!("kill {kill}: a mixed state")))
        };
        // The old (the last one it reported) or the new (the one after).
        let allowed_new = done.map_or(from, |d| d + 1);
        assert!(
            g == done || g == Some(allowed_new),
            "kill {kill}: loaded generation {g:?}, last written {done:?}"
        );
        if left {
            leftovers += 1;
        }
        if g != done {
            mid_write += 1;
        }
        last = g;
    }
    // The positive controls: kills landed inside writes (a temporary file
    // left, or a write done but not yet reported), and writes happened.
    eprintln!(
        "{kills} kills: {leftovers} left a temporary file, {mid_write} between the rename \
         and the report; last generation {last:?}"
    );
    assert!(
        leftovers >= MIN_SEEN,
        "only {leftovers} of {kills} kills inside a write"
    );
    assert!(
        mid_write >= MIN_SEEN,
        "only {mid_write} of {kills} kills after a rename"
    );
    assert!(last.unwrap_or(0) >= 20, "too few writes: {last:?}");
}

/// The in-flight ADD records: written, updated with the lease, read back,
/// removed; a temporary file of an interrupted record write is removed at
/// read, a record that does not decode is set aside as `*.bad`.
#[tokio::test]
async fn in_flight_add_records_round_trip_and_leftovers_are_handled() {
    let d = dir();
    let store = Store::new(&d.0).unwrap();
    assert!(store.adding().unwrap().is_empty(), "no directory: none");
    let mut rec = Adding {
        container_id: "c1".into(),
        ifname: "eth0".into(),
        netns: "/run/netns/p".into(),
        host_veth: "ll0123456789ab".into(),
        mac: [2, 0, 0, 0, 0, 1],
        client_id: vec![0xff, 0, 0, 0, 1, 0, 4],
        lease: None,
        ipv6: None,
    };
    store.record_adding(&rec).await.unwrap();
    assert_eq!(store.adding().unwrap(), [rec.clone()]);
    rec.lease = Some(lease());
    store.record_adding(&rec).await.unwrap();
    assert_eq!(store.adding().unwrap(), [rec.clone()], "updated in place");
    assert_eq!(
        mode(&d.0.join(adding::DIR).join("ll0123456789ab.json")),
        0o600
    );

    let records = d.0.join(adding::DIR);
    let tmp = records.join(".ll0123456789ff.tmp-adding");
    std::fs::write(&tmp, b"{\"contai").unwrap();
    std::fs::write(records.join("llbad.json"), b"{\"containerId\": 5").unwrap();
    assert_eq!(store.adding().unwrap(), [rec.clone()]);
    assert!(!tmp.exists(), "temporary file removed");
    assert!(
        records.join("llbad.json.bad").is_file(),
        "bad record set aside"
    );

    store.clear_adding(&rec.host_veth).await.unwrap();
    store.clear_adding(&rec.host_veth).await.unwrap();
    assert!(store.adding().unwrap().is_empty());
}

/// A corrupt file is refused with an error that names it and says what to
/// do, and is left as it was (never moved aside, never replaced by an empty
/// state that would drop every attachment and its lease).
#[test]
fn a_corrupt_state_file_is_left_alone_and_the_error_says_what_to_do() {
    let d = dir();
    write_file(
        &d,
        "{\"version\": 1, \"endpoints\": {\"c1/eth0\": {\"contai",
    );
    let store = Store::new(&d.0).unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(err.contains(crate::paths::STATE_FILE), "{err}");
    assert!(err.contains("restore the file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.0.join(crate::paths::STATE_FILE)).unwrap(),
        "{\"version\": 1, \"endpoints\": {\"c1/eth0\": {\"contai"
    );
}

/// An endpoint with IPv6 (a DHCPv6 lease) is written and read back: the
/// address, its routes' inputs, the lease with its server id and timers;
/// the lease's monotonic time is set back by its age on the wall clock.
#[tokio::test]
async fn an_ipv6_assignment_with_its_dhcpv6_lease_round_trips() {
    use crate::ipv6::{
        assign::{Assignment, Source},
        dhcp6::Lease6,
    };
    let d = dir();
    let store = Store::new(&d.0).unwrap();
    let mut ep = endpoint("c6", Some(lease()));
    let wall = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
    ep.ipv6 = Some(Assignment {
        address: "2001:2:0:1::1a0".parse().unwrap(),
        prefix_len: 128,
        source: Source::Dhcpv6,
        router: Some("fe80::1".parse().unwrap()),
        on_link: vec![("2001:2:0:1::".parse().unwrap(), 64)],
        dns: vec!["2001:2:0:1::53".parse().unwrap()],
        lease: Some(Lease6 {
            address: "2001:2:0:1::1a0".parse().unwrap(),
            preferred: 1800,
            valid: 3600,
            t1: 900,
            t2: 1440,
            server_id: vec![0, 1, 0, 1, 0xab, 0xcd],
            dns: vec!["2001:2:0:1::53".parse().unwrap()],
            obtained: std::time::Instant::now() - std::time::Duration::from_secs(100),
            obtained_wall: wall,
        }),
    });
    let mut st = State::default();
    st.endpoints.insert(ep.key(), ep.clone());
    store.submit(st.clone()).wait().await.unwrap();
    let text = std::fs::read_to_string(d.0.join(crate::paths::STATE_FILE)).unwrap();
    assert!(text.contains("\"serverId\": \"00010001abcd\""), "{text}");
    let back = store.load().unwrap();
    let got = back.endpoints[&ep.key()].ipv6.clone().unwrap();
    let want = ep.ipv6.clone().unwrap();
    let (gl, wl) = (got.lease.clone().unwrap(), want.lease.clone().unwrap());
    assert_eq!(
        Assignment { lease: None, ..got },
        Assignment {
            lease: None,
            ..want
        }
    );
    assert_eq!(
        (
            gl.address,
            gl.preferred,
            gl.valid,
            gl.t1,
            gl.t2,
            &gl.server_id,
            &gl.dns
        ),
        (
            wl.address,
            wl.preferred,
            wl.valid,
            wl.t1,
            wl.t2,
            &wl.server_id,
            &wl.dns
        )
    );
    // Millisecond precision on the wall clock; the monotonic time follows.
    let drift = |a: std::time::Instant, b: std::time::Instant| a.max(b).duration_since(a.min(b));
    assert!(drift(gl.obtained, wl.obtained) < std::time::Duration::from_secs(2));
    assert!(gl.renew_at() > std::time::Instant::now(), "T1 still ahead");
    // A record without IPv6 (every file written before it) has none.
    assert!(endpoint("c7", None).ipv6.is_none());
}

/// A file with IPv6 attachments (the fuzz corpus's seed) loads, and writing
/// it back and reading it again gives the same state: the DHCPv6 lease's
/// monotonic time, derived anew at each read, is not part of its equality.
#[test]
fn a_file_with_ipv6_round_trips() {
    let text = include_str!("testdata/state-ipv6.json");
    let path = std::path::Path::new("/x/endpoints.json");
    let st = decode(path, text.as_bytes()).unwrap();
    let c6 = st.endpoints["c6/eth0"].ipv6.clone().unwrap();
    assert_eq!(
        c6.lease.as_ref().unwrap().server_id,
        [0, 1, 0, 1, 0xab, 0xcd]
    );
    assert!(
        st.endpoints["c7/eth0"]
            .ipv6
            .as_ref()
            .unwrap()
            .lease
            .is_none()
    );
    let written = serde_json::to_vec(&v1::File::from(&st)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(decode(path, &written).unwrap(), st);
}
