//! `lanlinkd`: runs the agent, or, with a subcommand, asks it things.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use lanlink_agent::{
    agent::{Agent, AgentConfig},
    api, cli,
    dataplane::AttachMode,
    paths,
};
use tokio_util::sync::CancellationToken;

/// lanlink's node agent: pods on the LAN through an eBPF dataplane.
///
/// Without a subcommand, runs the agent in the current network namespace.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    /// API socket (also used by the subcommands).
    #[arg(long, global = true, env = "LANLINK_SOCKET", default_value = paths::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where maps and TC links are pinned (bpffs).
    #[arg(long, global = true, env = "LANLINK_PIN_DIR", default_value = paths::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or
    /// `lanlink_agent=debug`. Without it, `RUST_LOG` applies, else `info`.
    #[arg(long, global = true, env = "LANLINK_LOG")]
    log: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--attach`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum AttachChoice {
    Auto,
    Tcx,
    Tc,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The node's LAN interface (its address, routes and DHCP client stay untouched).
    #[arg(long, env = "LANLINK_UPLINK")]
    uplink: Option<String>,
    /// Where endpoints and leases are persisted.
    #[arg(long, env = "LANLINK_STATE_DIR", default_value = paths::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Where the CNI plugin queues DELs while the agent is stopped; run at
    /// start, before serving. Default: `<state-dir>/del-queue`, which for the
    /// default state dir is the netconf's default `delQueueDir`
    /// (`/var/lib/lanlink/del-queue`); set both when either changes.
    #[arg(long, value_name = "DIR", env = "LANLINK_DEL_QUEUE_DIR")]
    del_queue_dir: Option<PathBuf>,
    /// Disable the conntrack-bypass fix (replies of host-routed flows then
    /// leave on L2, as with macvlan; for comparison only).
    #[arg(long)]
    no_flow_fix: bool,
    /// Put the uplink in promiscuous mode instead of adding pod MACs to its
    /// unicast filter (for NICs without one).
    #[arg(long)]
    promiscuous: bool,
    /// Also serve `GET /metrics` (and only that) over TCP on this address in
    /// the node's namespace, e.g. `0.0.0.0:9658`; the socket always serves it.
    #[arg(long, env = "LANLINK_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// A prefix pods reach through the node's stack (repeatable), besides the
    /// uplink's own addresses and every netconf's `hostRoutes`: the eBPF ARP
    /// responder answers for it with the host veth's MAC.
    #[arg(
        long = "host-route",
        value_name = "CIDR",
        env = "LANLINK_HOST_ROUTES",
        value_delimiter = ','
    )]
    host_routes: Vec<lanlink_api::Ipv4Cidr>,
    /// Seconds a conntrack-bypass flow may stay idle before it is forgotten
    /// (the flow map is an LRU bounded in size either way).
    #[arg(
        long,
        value_name = "SECS",
        env = "LANLINK_FLOW_TIMEOUT",
        default_value_t = lanlink_agent::flows::DEFAULT_IDLE_TIMEOUT.as_secs()
    )]
    flow_timeout: u64,
    /// How the programs are attached: `tc` (clsact qdisc and cls_bpf
    /// filters, every supported kernel; the default: an ADD attaches in a
    /// quarter of TCX's time, see the README's Benchmarks), `tcx` (BPF
    /// links, Linux 6.6 and later), or `auto` (TCX where the kernel has it).
    /// Switching on a running node hands over without a gap.
    #[arg(long, env = "LANLINK_ATTACH", value_enum, default_value_t = AttachChoice::Tc)]
    attach: AttachChoice,
    /// The iptables binary for the agent's FORWARD accepts and masquerade
    /// (`iptables-legacy`, `iptables-nft` or a path; `<it>-restore` must exist too).
    #[arg(long, env = "LANLINK_IPTABLES", default_value = "iptables")]
    iptables: String,
    /// Leave netfilter alone: host-routed pod traffic (ClusterIP, NodePort,
    /// LoadBalancer) then needs FORWARD accepts and a masquerade you write.
    #[arg(long)]
    no_firewall: bool,
}

#[derive(Debug, clap::Args)]
struct UninstallArgs {
    /// The iptables binary the agent ran with.
    #[arg(long, env = "LANLINK_IPTABLES", default_value = "iptables")]
    iptables: String,
    /// Only remove the netfilter rules; keep the pinned programs and maps.
    #[arg(long)]
    keep_pins: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The agent's status.
    Status(Output),
    /// Pod interfaces the agent manages.
    Endpoints(Output),
    /// DHCP leases held for pods.
    Leases(Output),
    /// Verdict and drop counters (from the pinned map if the agent is down).
    Stats(Output),
    /// Conntrack-bypass flows (from the pinned map if the agent is down).
    Flows(Output),
    /// Frames the dataplane drops, live: one line each with the reason, the
    /// pod and the addresses (like `cilium monitor --type drop`), until
    /// Ctrl-C, `--count` or `--timeout`. Fails when `--timeout` passes
    /// before `--count` drops.
    Monitor(MonitorArgs),
    /// Removes what the agent installed on the node: its netfilter chains and
    /// their jumps, and its pinned programs and maps (detaching them from the
    /// uplink and the veths). Stop the agent and delete its pods first.
    Uninstall(UninstallArgs),
    /// Checks the node's prerequisites in this network namespace, without
    /// an agent: IPv4 forwarding, rp_filter, bpffs at the pin dir, the
    /// kernel, the uplink and its MTU, the iptables backend against
    /// kube-proxy's. One `ok|fixed|wrong|info  <name>  <detail>` line each,
    /// with the command that fixes what is wrong; exits 1 when something
    /// is. Changes nothing.
    Doctor(DoctorArgs),
}

#[derive(Debug, clap::Args)]
struct DoctorArgs {
    /// The node's LAN interface, as the agent is given it.
    #[arg(long, env = "LANLINK_UPLINK")]
    uplink: String,
    /// The iptables binary the agent runs with.
    #[arg(long, env = "LANLINK_IPTABLES", default_value = "iptables")]
    iptables: String,
    /// Print the checks as a JSON list.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct MonitorArgs {
    /// Print the agent's JSON lines as received (one drop event, or a note
    /// of events lost, per line).
    #[arg(long)]
    json: bool,
    /// Stop after this many drops.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The log filter: `--log` (or `LANLINK_LOG`) when given, else `RUST_LOG`
/// when set and not empty, else `info`.
fn log_filter(flag: Option<&str>, rust_log: Option<&str>) -> String {
    flag.or(rust_log.filter(|f| !f.trim().is_empty()))
        .unwrap_or("info")
        .to_string()
}

fn init_logs(flag: Option<&str>, format: LogFormat) {
    let rust_log = std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV).ok();
    let wanted = log_filter(flag, rust_log.as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&wanted)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log.as_deref(), cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the runtime")?;
    match cli.command {
        None => rt.block_on(run(cli.run, cli.socket, cli.pin_dir)),
        Some(Command::Uninstall(args)) => uninstall(&args, &cli.socket, &cli.pin_dir),
        Some(Command::Doctor(args)) => doctor(args, cli.pin_dir),
        Some(Command::Monitor(args)) => rt.block_on(cli::monitor(
            &cli.socket,
            cli::MonitorOptions {
                json: args.json,
                count: args.count,
                timeout: args.timeout.map(std::time::Duration::from_secs),
            },
        )),
        Some(cmd) => rt.block_on(lanlink_agent::cli::run(
            cmd_name(&cmd),
            json_of(&cmd),
            &cli.socket,
            &cli.pin_dir,
        )),
    }
}

fn cmd_name(cmd: &Command) -> cli::Cmd {
    match cmd {
        Command::Status(_) => cli::Cmd::Status,
        Command::Endpoints(_) => cli::Cmd::Endpoints,
        Command::Leases(_) => cli::Cmd::Leases,
        Command::Stats(_) => cli::Cmd::Stats,
        Command::Flows(_) => cli::Cmd::Flows,
        Command::Uninstall(_) => unreachable!("main runs uninstall itself"),
        Command::Monitor(_) => unreachable!("main runs monitor itself"),
        Command::Doctor(_) => unreachable!("main runs doctor itself"),
    }
}

fn json_of(cmd: &Command) -> bool {
    match cmd {
        Command::Status(o)
        | Command::Endpoints(o)
        | Command::Leases(o)
        | Command::Stats(o)
        | Command::Flows(o) => o.json,
        Command::Uninstall(_) | Command::Monitor(_) | Command::Doctor(_) => false,
    }
}

async fn run(args: RunArgs, socket: PathBuf, pin_dir: PathBuf) -> anyhow::Result<()> {
    let uplink = args
        .uplink
        .context("--uplink is required to run the agent")?;
    let shutdown = CancellationToken::new();
    let metrics_listener = match args.metrics_addr {
        Some(addr) => Some(lanlink_agent::metrics::bind_tcp(addr).await?),
        None => None,
    };
    let mut flags = 0;
    if !args.no_flow_fix {
        flags |= lanlink_common::config::FLOW_FIX;
    }
    let del_queue_dir = args
        .del_queue_dir
        .unwrap_or_else(|| args.state_dir.join(lanlink_api::del_queue::DIR_NAME));
    let cfg = AgentConfig {
        uplink,
        pin_dir,
        state_dir: args.state_dir,
        dataplane_flags: flags,
        promiscuous: args.promiscuous,
        host_routes: args.host_routes,
        iptables: (!args.no_firewall).then_some(args.iptables),
        flow_timeout: std::time::Duration::from_secs(args.flow_timeout.max(1)),
        attach: match args.attach {
            AttachChoice::Auto => AttachMode::probe(),
            AttachChoice::Tcx => AttachMode::Tcx,
            AttachChoice::Tc => AttachMode::Tc,
        },
    };
    lanlink_agent::dataplane::check_kernel(cfg.attach)?;
    let agent: Arc<Agent> = Agent::start(cfg, &del_queue_dir, shutdown.clone()).await?;
    // Monitor streams never end on their own: the API's graceful shutdown
    // would wait for them.
    lanlink_agent::monitor::agent_monitor().stop_at(shutdown.clone());
    tracing::info!(status = ?agent.status(), "agent ready");

    let signals = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        signals.cancel();
    });
    if let Some(listener) = metrics_listener {
        let (agent, shutdown) = (Arc::clone(&agent), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = lanlink_agent::metrics::serve_tcp(agent, listener, shutdown).await {
                tracing::error!(error = format!("{e:#}"), "the metrics listener stopped");
            }
        });
    }
    api::serve(agent, &socket, shutdown).await?;
    // Programs and maps stay pinned and attached: pods keep forwarding while
    // the agent is stopped; the next start re-adopts them.
    tracing::info!("stopped; the dataplane keeps forwarding");
    Ok(())
}

/// `lanlinkd doctor`: prints the checks; exits 1 when one is wrong.
fn doctor(args: DoctorArgs, pin_dir: PathBuf) -> anyhow::Result<()> {
    use lanlink_agent::doctor;
    let opts = doctor::Options {
        uplink: args.uplink,
        pin_dir,
        iptables: args.iptables,
    };
    let checks = doctor::checks(&opts, &doctor::Facts::read(&opts));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).context("encode the checks")?
        );
    } else {
        for c in &checks {
            println!("{}", c.line());
        }
    }
    if doctor::any_wrong(&checks) {
        std::process::exit(1);
    }
    Ok(())
}

fn uninstall(
    args: &UninstallArgs,
    socket: &std::path::Path,
    pin_dir: &std::path::Path,
) -> anyhow::Result<()> {
    // A running agent would keep using what this removes, and would not put
    // its rules back before its next start.
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        anyhow::bail!(
            "an agent answers on {}; stop it before uninstalling",
            socket.display()
        );
    }
    let removed = lanlink_agent::firewall::uninstall(&args.iptables)
        .context("remove the agent's netfilter rules")?;
    for r in &removed {
        println!("removed {r}");
    }
    if !args.keep_pins {
        // Unpinning the links detaches the programs (the pins hold the only
        // references; TC filters are removed first); unpinning the maps
        // frees them.
        let detached =
            lanlink_agent::dataplane::detach_all(pin_dir).context("detach the programs")?;
        for d in &detached {
            println!("detached {d}");
        }
        match std::fs::remove_dir_all(pin_dir) {
            Ok(()) => println!("unpinned {}", pin_dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("remove {}", pin_dir.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filter_prefers_the_flag_then_rust_log_then_info() {
        assert_eq!(log_filter(Some("debug"), Some("trace")), "debug");
        assert_eq!(
            log_filter(None, Some("lanlink_agent=trace")),
            "lanlink_agent=trace"
        );
        assert_eq!(log_filter(None, Some("  ")), "info");
        assert_eq!(log_filter(None, None), "info");
    }

    #[test]
    fn the_log_flag_has_no_default_that_would_hide_rust_log() {
        let cli = Cli::try_parse_from(["lanlinkd", "--uplink", "eth0"]).unwrap();
        if std::env::var_os("LANLINK_LOG").is_none() {
            assert_eq!(cli.log, None);
        }
        let cli = Cli::try_parse_from(["lanlinkd", "--log", "warn"]).unwrap();
        assert_eq!(cli.log.as_deref(), Some("warn"));
    }

    #[test]
    fn the_del_queue_dir_defaults_under_the_state_dir() {
        let cli = Cli::try_parse_from(["lanlinkd", "--uplink", "eth0"]).unwrap();
        if std::env::var_os("LANLINK_DEL_QUEUE_DIR").is_none() {
            assert_eq!(cli.run.del_queue_dir, None);
        }
        let cli =
            Cli::try_parse_from(["lanlinkd", "--uplink", "eth0", "--del-queue-dir", "/q"]).unwrap();
        assert_eq!(cli.run.del_queue_dir, Some(PathBuf::from("/q")));
    }

    #[test]
    fn doctor_takes_the_uplink_iptables_and_json() {
        let cli = Cli::try_parse_from([
            "lanlinkd",
            "doctor",
            "--uplink",
            "eth1",
            "--iptables",
            "iptables-legacy",
            "--json",
        ])
        .unwrap();
        let Some(Command::Doctor(d)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(
            (d.uplink.as_str(), d.iptables.as_str()),
            ("eth1", "iptables-legacy")
        );
        assert!(d.json);
    }

    #[test]
    fn monitor_takes_json_count_and_timeout() {
        let cli = Cli::try_parse_from([
            "lanlinkd",
            "monitor",
            "--json",
            "--count",
            "1",
            "--timeout",
            "10",
        ])
        .unwrap();
        let Some(Command::Monitor(m)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert!(m.json);
        assert_eq!((m.count, m.timeout), (Some(1), Some(10)));
        assert!(Cli::try_parse_from(["lanlinkd", "monitor", "--count", "0"]).is_err());
    }
}
