//! Manual probe of the agent's DHCP client against a real DHCP server.
//!
//! Run it as root inside a node network namespace whose uplink is on a LAN
//! with a DHCP server (the lab's LAN namespace runs dnsmasq):
//!
//! ```text
//! nsenter --net=/run/netns/<node> dhcp_probe --uplink eth0 --state /tmp/x/leases.json acquire --pods 3
//! nsenter --net=/run/netns/<node> dhcp_probe --uplink eth0 --state /tmp/x/leases.json renew [--rebind]
//! nsenter --net=/run/netns/<node> dhcp_probe --uplink eth0 --state /tmp/x/leases.json release
//! ```
//!
//! Each step is its own process and reads the leases the previous one
//! persisted, as the agent does across restarts. Leases, counters and errors
//! are printed as JSON lines on stdout; logs go to stderr (`RUST_LOG`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use lanlink_agent::dhcp::{self, DhcpClient, Lease, LeaseRequest, persist};

#[derive(Parser)]
struct Args {
    /// The node's uplink interface.
    #[arg(long, default_value = "eth0")]
    uplink: String,
    /// Where the leases are persisted between steps.
    #[arg(long)]
    state: PathBuf,
    /// Seconds each acquisition or renewal may take.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Milliseconds to ARP-probe each acquired address (0: no probe).
    #[arg(long, default_value_t = 300)]
    arp_probe_ms: u64,
    #[command(subcommand)]
    step: Step,
}

#[derive(Subcommand)]
enum Step {
    /// Acquire leases for N pods concurrently (stable identities of
    /// probe/pod-<i>/eth0, hostname probe-pod-<i>).
    Acquire {
        /// How many pods.
        #[arg(long, default_value_t = 3)]
        pods: usize,
        /// Clear the BROADCAST flag (servers then answer unicast).
        #[arg(long)]
        unicast: bool,
    },
    /// Renew every persisted lease (unicast to the server), or rebind (broadcast).
    Renew {
        /// Rebind instead of renew.
        #[arg(long)]
        rebind: bool,
    },
    /// Release every persisted lease and remove the state file.
    Release,
}

fn print_lease(step: &str, lease: &Lease) {
    let line = serde_json::json!({
        "step": step,
        "mac": dhcp::Mac(lease.mac).to_string(),
        "address": format!("{}/{}", lease.address, lease.prefix_len),
        "router": lease.router,
        "server": lease.server_id,
        "server_mac": dhcp::Mac(lease.server_mac).to_string(),
        "hostname": lease.hostname,
        "lease_secs": lease.lease_secs,
        "t1": lease.t1_secs,
        "t2": lease.t2_secs,
        "obtained_at_unix": lease.obtained_at_unix,
    });
    println!("{line}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let timeout = Duration::from_secs(args.timeout);
    let mut config = dhcp::DhcpConfig::default();
    if let Step::Acquire { unicast: true, .. } = args.step {
        config.broadcast_flag = false;
    }
    let client =
        DhcpClient::with_config(&args.uplink, config).context("opening the dhcp client")?;
    let mut failed = 0;
    match args.step {
        Step::Acquire { pods, .. } => {
            let reqs: Vec<LeaseRequest> = (0..pods)
                .map(|i| {
                    let pod = format!("pod-{i}");
                    let (mac, client_id) = dhcp::stable_identity("probe", &pod, "eth0");
                    LeaseRequest {
                        mac,
                        client_id,
                        hostname: dhcp::sanitize_hostname(&format!("probe-{pod}")),
                        timeout,
                        send_options: vec![(60, b"lanlink".to_vec())],
                        arp_probe: dhcp::ArpProbe::from_millis(args.arp_probe_ms),
                        on_request: Default::default(),
                    }
                })
                .collect();
            let started = std::time::Instant::now();
            let results = futures::future::join_all(reqs.iter().map(|r| client.acquire(r))).await;
            eprintln!("acquire of {pods} pods took {:?}", started.elapsed());
            let mut leases = Vec::new();
            for r in results {
                match r {
                    Ok(lease) => {
                        print_lease("acquire", &lease);
                        leases.push(lease);
                    }
                    Err(e) => {
                        failed += 1;
                        println!(
                            "{}",
                            serde_json::json!({"step": "acquire", "error": format!("{:#}", anyhow::Error::from(e))})
                        );
                    }
                }
            }
            persist::save_atomic(&args.state, &leases)?;
        }
        Step::Renew { rebind } => {
            let leases: Vec<Lease> = persist::load(&args.state)?.context("no persisted leases")?;
            let results =
                futures::future::join_all(leases.iter().map(|l| client.renew(l, rebind, timeout)))
                    .await;
            let mut renewed = Vec::new();
            for (old, r) in leases.iter().zip(results) {
                match r {
                    Ok(lease) => {
                        print_lease(if rebind { "rebind" } else { "renew" }, &lease);
                        renewed.push(lease);
                    }
                    Err(e) => {
                        failed += 1;
                        println!(
                            "{}",
                            serde_json::json!({"step": "renew", "error": format!("{:#}", anyhow::Error::from(e))})
                        );
                        renewed.push(old.clone());
                    }
                }
            }
            persist::save_atomic(&args.state, &renewed)?;
        }
        Step::Release => {
            let leases: Vec<Lease> = persist::load(&args.state)?.context("no persisted leases")?;
            for lease in &leases {
                client.release(lease).await?;
                print_lease("release", lease);
            }
            std::fs::remove_file(&args.state)?;
        }
    }
    println!("{}", serde_json::json!({"stats": client.stats()}));
    if failed > 0 {
        bail!("{failed} pod(s) failed");
    }
    Ok(())
}
