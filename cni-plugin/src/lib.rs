//! The lanlink CNI plugin: netconf parsing and the CNI verbs as plain
//! functions. The agent's API types, codes and client are `lanlink-api`'s.
//!
//! The plugin is thin: each verb parses the netconf (stdin) and the `CNI_*`
//! environment, asks the agent over its Unix socket, and [`reply`] prints the
//! result or the error. Nothing but [`reply`] writes stdout, and
//! [`CniError::code`] is the only mapping of errors to spec codes, so tests run
//! the verbs in-process ([`run`] with a fake environment and buffers).

pub mod error;
pub mod netconf;
pub mod result;

use std::io::{self, Read, Write};

use serde_json::{Value, json};

pub use crate::error::CniError;
use crate::netconf::{CniEnv, CniVersion, Command, NetConf, NetConfError};
use lanlink_api::client::{AgentClient, ClientError};
use lanlink_api::del_queue::DelQueue;
use lanlink_api::{AttachmentRequest, GcRequest};

/// One invocation's input: the checked environment and the raw netconf.
#[derive(Clone, Debug, Default)]
pub struct CmdArgs {
    /// `CNI_*` variables.
    pub env: CniEnv,
    /// The netconf as read from stdin.
    pub stdin: Vec<u8>,
}

impl CmdArgs {
    fn netconf(&self) -> Result<NetConf, CniError> {
        Ok(NetConf::parse(&self.stdin)?)
    }
}

/// What a successful verb prints: ADD and VERSION print JSON, the others nothing.
pub type Output = Option<Value>;

/// The `--version` / `--help` text (stderr).
pub fn about() -> String {
    format!(
        "lanlink CNI plugin {}\nCNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        CniVersion::supported_list()
    )
}

/// Refuses a verb the netconf's version predates.
fn require_version(conf: &NetConf, command: Command, minimum: CniVersion) -> Result<(), CniError> {
    if conf.cni_version < minimum {
        return Err(CniError::VersionNotAllowed {
            command,
            version: conf.cni_version,
            minimum,
        });
    }
    Ok(())
}

/// Asks the agent at `conf`'s socket with `call`, serving `command`.
fn ask<T>(
    conf: &NetConf,
    command: Command,
    call: impl FnOnce(&AgentClient) -> Result<T, lanlink_api::client::ClientError>,
) -> Result<T, CniError> {
    call(&AgentClient::new(&conf.socket_path)).map_err(|source| CniError::Agent { command, source })
}

/// ADD: the agent creates the veth, leases an address and writes routes; the
/// answer is printed as a CNI result of the netconf's version, appended to
/// `prevResult` when chained (see [`result`]). Undoing partial work on failure
/// is the agent's job; the plugin checks everything it can (netconf,
/// `prevResult`) before asking, so nothing can fail after the agent's work.
pub fn cmd_add(args: &CmdArgs) -> Result<Value, CniError> {
    let conf = args.netconf()?;
    let request = conf.attachment_request(&args.env);
    let answer = ask(&conf, Command::Add, |agent| agent.add(&request))?;
    Ok(result::to_cni_result(
        &answer,
        conf.cni_version,
        conf.prev_result.as_ref(),
    ))
}

/// DEL: the agent releases the lease and removes the veth and map entries.
///
/// Idempotent: the agent answers success for an attachment it does not know,
/// so DEL twice, or DEL after GC, succeeds. Every error it answers is a real
/// failure, and so is a hung agent (code 11, the runtime retries).
///
/// When nothing listens on the agent's socket (missing, or connection
/// refused: the agent is stopped), DEL never waits for it: the request is
/// recorded in the agent's deletion queue (`delQueueDir`, see
/// [`lanlink_api::del_queue`]), which the agent runs at its next start before
/// serving anything (releasing the lease, clearing the maps, the uplink
/// filter and the state), and DEL succeeds. The pod side needs nothing from
/// the plugin: the runtime deletes the pod's namespace, and with it the veth
/// pair; the host veth and the map entries left meanwhile are the agent's,
/// removed when it runs the queue. If the queue cannot be written (its
/// parent, the agent's state directory, is missing: no agent was ever set up
/// to run it), DEL fails with code 11 as before.
pub fn cmd_del(args: &CmdArgs) -> Result<(), CniError> {
    let conf = args.netconf()?;
    let request = conf.attachment_request(&args.env);
    match AgentClient::new(&conf.socket_path).del(&request) {
        Ok(()) => Ok(()),
        Err(agent) if agent_is_stopped(&agent) => queue_del(&conf, &request, agent),
        Err(source) => Err(CniError::Agent {
            command: Command::Del,
            source,
        }),
    }
}

/// Whether nothing listens on the socket: missing, or refused (a socket
/// file a stopped agent left). Not a hung agent, not an answered error, not
/// a permission problem: those are for the runtime to retry or report.
fn agent_is_stopped(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable { source, .. }
            if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
    )
}

/// Records `request` in the deletion queue for the stopped agent.
fn queue_del(
    conf: &NetConf,
    request: &AttachmentRequest,
    agent: ClientError,
) -> Result<(), CniError> {
    let queue = DelQueue::new(&conf.del_queue_dir);
    match queue.push(request) {
        Ok(entry) => {
            log(format_args!(
                "{agent}; DEL of {}/{} queued in {} for the agent's next start \
                 (the pod's namespace takes its interface along)",
                request.container_id,
                request.ifname,
                entry.display()
            ));
            Ok(())
        }
        Err(source) => Err(CniError::DelQueue {
            agent: Box::new(agent),
            source,
        }),
    }
}

/// A line on stderr for the runtime's log; a closed stderr is ignored (the
/// outcome is on stdout and in the exit code).
fn log(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "lanlink: {line}");
}

/// CHECK (0.4.0 and later): the agent verifies the veth, address, routes, map
/// entries and lease (an attachment it does not know fails with code 103,
/// passed on as is); the plugin then checks that the agent's interface and
/// address are those of the `prevResult` (required). With `disableCheck`, it
/// succeeds without asking.
pub fn cmd_check(args: &CmdArgs) -> Result<(), CniError> {
    let conf = args.netconf()?;
    require_version(&conf, Command::Check, CniVersion::V0_4_0)?;
    if conf.disable_check {
        return Ok(());
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| NetConfError::invalid("prevResult", "required for CHECK"))?;
    let request = conf.attachment_request(&args.env);
    let answer = ask(&conf, Command::Check, |agent| agent.check(&request))?;
    for interface in answer.interfaces.iter().filter(|i| i.sandbox.is_some()) {
        if !prev.has_interface(interface) {
            return Err(CniError::CheckMismatch {
                what: format!(
                    "interface {} ({}) is not in prevResult",
                    interface.name, interface.mac
                ),
            });
        }
    }
    for ip in &answer.ips {
        if !prev.has_address(&ip.address) {
            return Err(CniError::CheckMismatch {
                what: format!("address {} is not in prevResult", ip.address),
            });
        }
    }
    Ok(())
}

/// STATUS (1.1.0): code 50 when the agent cannot be asked, 51 when it says it
/// is not ready.
pub fn cmd_status(args: &CmdArgs) -> Result<(), CniError> {
    let conf = args.netconf()?;
    require_version(&conf, Command::Status, CniVersion::V1_1_0)?;
    let status = ask(&conf, Command::Status, AgentClient::status)?;
    if !status.ready {
        return Err(CniError::NotReady {
            reason: status.reason.unwrap_or_else(|| "no reason given".into()),
        });
    }
    Ok(())
}

/// GC (1.1.0): the agent removes every attachment of this network that is not
/// in `cni.dev/valid-attachments` (required: without it GC would remove all).
pub fn cmd_gc(args: &CmdArgs) -> Result<(), CniError> {
    let conf = args.netconf()?;
    require_version(&conf, Command::Gc, CniVersion::V1_1_0)?;
    let valid_attachments = conf
        .valid_attachments
        .clone()
        .ok_or_else(|| NetConfError::invalid("cni.dev/valid-attachments", "required for GC"))?;
    let request = GcRequest {
        network: conf.name.clone(),
        valid_attachments,
    };
    ask(&conf, Command::Gc, |agent| agent.gc(&request))?;
    Ok(())
}

/// VERSION: the versions lanlink speaks. Needs neither stdin nor the agent.
pub fn cmd_version() -> Value {
    json!({
        "cniVersion": CniVersion::LATEST.as_str(),
        "supportedVersions": CniVersion::ALL.map(CniVersion::as_str),
    })
}

/// Runs `command` with `args`.
pub fn dispatch(command: Command, args: &CmdArgs) -> Result<Output, CniError> {
    match command {
        Command::Add => cmd_add(args).map(Some),
        Command::Del => cmd_del(args).map(|()| None),
        Command::Check => cmd_check(args).map(|()| None),
        Command::Status => cmd_status(args).map(|()| None),
        Command::Gc => cmd_gc(args).map(|()| None),
        Command::Version => Ok(Some(cmd_version())),
    }
}

/// Writes the outcome of a verb to `stdout`: its output on success, the CNI
/// error JSON (in `version`) on failure. Returns the exit code (0 or 1).
/// The only function that writes stdout.
pub fn reply(stdout: &mut dyn Write, version: CniVersion, outcome: Result<Output, CniError>) -> u8 {
    let (value, code) = match outcome {
        Ok(None) => return 0,
        Ok(Some(value)) => (value, 0),
        Err(e) => (e.to_json(version), 1),
    };
    let written = serde_json::to_writer_pretty(&mut *stdout, &value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(stdout))
        .and_then(|()| stdout.flush());
    // Nothing is left to tell the runtime through; the exit code still says it.
    if written.is_err() { 1 } else { code }
}

/// One invocation: reads the verb and environment through `lookup`, the
/// netconf from `stdin` (not for VERSION), runs the verb and replies on
/// `stdout`. Returns the process exit code.
///
/// The environment is checked before stdin is read (as the reference plugins
/// do), so such errors are written in the latest version; later errors in the
/// netconf's version when it has a supported one.
pub fn run(
    lookup: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> u8 {
    let command = match netconf::command_from_env(&lookup) {
        Ok(command) => command,
        Err(e) => return reply(stdout, CniVersion::LATEST, Err(e.into())),
    };
    if command == Command::Version {
        return reply(stdout, CniVersion::LATEST, Ok(Some(cmd_version())));
    }
    let env = match CniEnv::from_lookup(command, &lookup) {
        Ok(env) => env,
        Err(e) => return reply(stdout, CniVersion::LATEST, Err(e.into())),
    };
    let mut input = Vec::new();
    if let Err(source) = stdin.read_to_end(&mut input) {
        return reply(stdout, CniVersion::LATEST, Err(CniError::Stdin { source }));
    }
    let version = NetConf::sniff_version(&input).unwrap_or(CniVersion::LATEST);
    let args = CmdArgs { env, stdin: input };
    reply(stdout, version, dispatch(command, &args))
}
