//! The two ways of attaching the TC programs, and their pins.
//!
//! - **TCX** (Linux ≥ 6.6): a BPF link per program and interface, pinned at
//!   `links/<program>-<ifname>`. A new agent swaps its program into the
//!   pinned link (`BPF_LINK_UPDATE`), atomically.
//! - **Legacy TC** (clsact + cls_bpf, any kernel lanlink supports): a
//!   direct-action filter at a fixed priority and handle per hook, so a new
//!   agent replaces the filter's program in place (`RTM_NEWTFILTER` without
//!   `NLM_F_EXCL`) and forwarding never stops. The program is pinned at the
//!   same path as a TCX link would be, so `bpftool` finds it and
//!   `Dataplane::is_attached` reads the same for both.
//!
//! An agent started with the other backend than the one pinned attaches its
//! own first, then takes the old one down: no gap, and nothing left.

use std::{io, path::Path};

use aya::programs::{
    ProgramError, SchedClassifier,
    links::{FdLink, Link as _, LinkError, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
};

use super::{DataplaneError, Hook, prog_err};

/// How the programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX links (Linux ≥ 6.6).
    Tcx,
    /// clsact qdisc and cls_bpf filters.
    Tc,
}

impl AttachMode {
    /// The oldest kernel with TCX.
    pub const TCX_SINCE: (u8, u8) = (6, 6);

    /// TCX where the running kernel has it, else legacy TC.
    pub fn probe() -> Self {
        let (major, minor) = Self::TCX_SINCE;
        match aya::util::KernelVersion::current() {
            Ok(v) if v >= aya::util::KernelVersion::new(major, minor, 0) => AttachMode::Tcx,
            _ => AttachMode::Tc,
        }
    }

    /// `tcx` or `tc`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Tc => "tc",
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the dataplane needs of the kernel, with the release that brought
/// it: `bpf_redirect_peer` and `bpf_redirect_neigh` (5.10) for every mode.
const NEEDS: (&str, (u8, u8)) = ("bpf_redirect_peer and bpf_redirect_neigh", (5, 10));

/// The running kernel lacks something the dataplane needs.
#[derive(Debug, thiserror::Error)]
#[error("this kernel ({running}) has no {what}, which lanlink needs: it came in Linux {}.{}{hint}", since.0, since.1)]
pub struct KernelTooOld {
    /// What is missing.
    pub what: &'static str,
    /// The first release with it.
    pub since: (u8, u8),
    /// `uname -r`-like.
    pub running: String,
    hint: &'static str,
}

/// Checks the running kernel's release for what the dataplane needs with
/// `mode`: one error naming the first missing feature and the lowest
/// kernel that has it. (Features a distribution may build out, such as BTF
/// or bpffs, fail the load with their own errors.)
pub fn check_kernel(mode: AttachMode) -> Result<(), KernelTooOld> {
    let Ok(v) = aya::util::KernelVersion::current() else {
        return Ok(()); // unknown: let the load say what fails
    };
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| format!("{v:?}"));
    check_release(v, running, mode)
}

/// [`check_kernel`] for kernel `v`, called `running`.
fn check_release(
    v: aya::util::KernelVersion,
    running: String,
    mode: AttachMode,
) -> Result<(), KernelTooOld> {
    let has = |(major, minor): (u8, u8)| v >= aya::util::KernelVersion::new(major, minor, 0);
    let (what, since) = NEEDS;
    if !has(since) {
        return Err(KernelTooOld {
            what,
            since,
            running,
            hint: "",
        });
    }
    if mode == AttachMode::Tcx && !has(AttachMode::TCX_SINCE) {
        return Err(KernelTooOld {
            what: "TCX",
            since: AttachMode::TCX_SINCE,
            running,
            hint: "; use --attach tc (or auto) on this kernel",
        });
    }
    Ok(())
}

/// The cls_bpf filter priority of lanlink's programs: high enough to run
/// before filters other tools add with the default priority (49152 and up).
const TC_PRIORITY: u16 = 0x4c4c;
/// The filter handle within [`TC_PRIORITY`].
const TC_HANDLE: TcHandle = TcHandle::new(0, 1);

/// Attaches `hook`'s program `prog` to `ifname` with `mode` and pins it at
/// `pin`, replacing (atomically) what a previous agent attached there.
pub(super) fn attach(
    mode: AttachMode,
    prog: &mut SchedClassifier,
    ifname: &str,
    hook: Hook,
    pin: &Path,
) -> Result<(), DataplaneError> {
    // What a previous agent pinned here: a TCX link, or a TC filter's
    // program.
    let old_tc = is_program_pin(pin);
    let old_link = (!old_tc && pin.exists())
        .then(|| PinnedLink::from_pin(pin).ok())
        .flatten();
    match mode {
        AttachMode::Tcx => {
            if let Some(old) = old_link
                && let Ok(link) = SchedClassifierLink::try_from(FdLink::from(old))
                && prog
                    .attach_to_link(link)
                    .and_then(|id| prog.take_link(id))
                    .is_ok()
            {
                // The pin still refers to the same kernel link, which now
                // runs the new program; dropping our fd changes nothing.
                return Ok(());
            }
            let id = prog
                .attach(ifname, hook.attach_type())
                .map_err(prog_err(format!("attach {} to {ifname}", hook.program())))?;
            let link = prog.take_link(id).map_err(prog_err("take the link"))?;
            let fd: FdLink = link
                .try_into()
                .map_err(|e: LinkError| DataplaneError::Pin {
                    what: format!("pin link: {e}"),
                    source: io::Error::other(e.to_string()),
                })?;
            // The old pin: a link whose interface is gone (it cannot be
            // updated), or a TC filter's program, whose filter goes now that
            // the TCX link runs.
            remove_pin(pin)?;
            if old_tc {
                detach_tc(ifname, hook)?;
            }
            fd.pin(pin).map(drop).map_err(|e| DataplaneError::Pin {
                what: format!("pin link {}", pin.display()),
                source: io::Error::other(e.to_string()),
            })
        }
        AttachMode::Tc => {
            attach_tc(prog, ifname, hook)?;
            // A TCX link left by an agent of the other backend goes with its
            // pin (nothing else holds it); the filter runs already.
            remove_pin(pin)?;
            prog.pin(pin).map_err(|e| DataplaneError::Pin {
                what: format!("pin program {}", pin.display()),
                source: io::Error::other(e.to_string()),
            })
        }
    }
}

/// The clsact qdisc (if missing) and lanlink's filter for `hook`, created or
/// with its program replaced in place.
fn attach_tc(prog: &mut SchedClassifier, ifname: &str, hook: Hook) -> Result<(), DataplaneError> {
    match tc::qdisc_add_clsact(ifname) {
        Err(TcError::NetlinkError(e)) if e.raw_os_error() != Some(libc::EEXIST) => {
            return Err(prog_err(format!("add the clsact qdisc to {ifname}"))(
                TcError::NetlinkError(e).into(),
            ));
        }
        Err(e @ (TcError::IoError(_) | TcError::NulError(_))) => {
            return Err(prog_err(format!("add the clsact qdisc to {ifname}"))(
                e.into(),
            ));
        }
        _ => {}
    }
    let options = TcAttachOptions::Netlink(NlOptions {
        priority: TC_PRIORITY,
        handle: TC_HANDLE,
        ..NlOptions::default()
    });
    let what = || format!("attach {} to {ifname} (tc)", hook.program());
    let id = match prog.attach_with_options(ifname, hook.attach_type(), options) {
        Ok(id) => id,
        // A previous agent's filter: swap the program in it.
        Err(e) if os_error(&e) == Some(libc::EEXIST) => {
            let link = SchedClassifierLink::attached(
                ifname,
                hook.attach_type(),
                TC_PRIORITY,
                TC_HANDLE,
                None,
            )
            .map_err(|e| prog_err(what())(TcError::IoError(e).into()))?;
            prog.attach_to_link(link).map_err(prog_err(what()))?
        }
        Err(e) => return Err(prog_err(what())(e)),
    };
    let link = prog.take_link(id).map_err(prog_err("take the link"))?;
    // Dropping a netlink link removes its filter: the filter must outlive
    // the agent.
    std::mem::forget(link);
    Ok(())
}

/// Removes lanlink's TC filter for `hook` from `ifname`; an interface or a
/// filter already gone is fine.
pub(super) fn detach_tc(ifname: &str, hook: Hook) -> Result<(), DataplaneError> {
    let Ok(link) =
        SchedClassifierLink::attached(ifname, hook.attach_type(), TC_PRIORITY, TC_HANDLE, None)
    else {
        return Ok(()); // no such interface
    };
    match link.detach() {
        Err(e)
            if !matches!(
                os_error(&e),
                Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)
            ) =>
        {
            Err(prog_err(format!(
                "detach {} from {ifname} (tc)",
                hook.program()
            ))(e))
        }
        _ => Ok(()),
    }
}

/// Detaches `hook` from `ifname`: removes the pin (which releases a TCX
/// link), and lanlink's TC filter if the pin was a TC program's.
pub(super) fn detach(ifname: &str, hook: Hook, pin: &Path) -> Result<(), DataplaneError> {
    if is_program_pin(pin) {
        detach_tc(ifname, hook)?;
    }
    remove_pin(pin)
}

/// Whether `pin` holds a program (a TC filter's) rather than a link. The
/// kernel says which in the fd's `/proc/self/fdinfo` (`prog_type:` or
/// `link_type:`); opening a pin, and asking for its info, work on both.
fn is_program_pin(pin: &Path) -> bool {
    use std::os::fd::AsRawFd as _;
    let Ok(fd) = obj_get(pin) else {
        return false;
    };
    let fdinfo = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    std::fs::read_to_string(fdinfo)
        .is_ok_and(|info| info.lines().any(|l| l.starts_with("prog_type:")))
}

/// `BPF_OBJ_GET`: an fd of whatever is pinned at `pin`.
fn obj_get(pin: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    /// The `BPF_OBJ_*` member of `union bpf_attr`.
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_OBJ_GET of the
    // size passed; `path` outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjAttr,
            size_of::<ObjAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Removes `pin`; absent is fine.
fn remove_pin(pin: &Path) -> Result<(), DataplaneError> {
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataplaneError::Pin {
            what: format!("remove {}", pin.display()),
            source,
        }),
    }
}

/// The OS error under a TC attach or detach error, if any.
fn os_error(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::TcError(TcError::NetlinkError(e)) | ProgramError::NetlinkError(e) => {
            e.raw_os_error()
        }
        ProgramError::TcError(TcError::IoError(e)) => e.raw_os_error(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use aya::util::KernelVersion;

    use super::*;

    fn check(major: u8, minor: u8, mode: AttachMode) -> Result<(), String> {
        let v = KernelVersion::new(major, minor, 0);
        check_release(v, format!("{major}.{minor}.0-test"), mode).map_err(|e| e.to_string())
    }

    #[test]
    fn a_kernel_without_a_needed_feature_is_named_in_one_line() {
        let err = check(5, 4, AttachMode::Tc).unwrap_err();
        assert_eq!(
            err,
            "this kernel (5.4.0-test) has no bpf_redirect_peer and bpf_redirect_neigh, which \
             lanlink needs: it came in Linux 5.10"
        );
        let err = check(6, 1, AttachMode::Tcx).unwrap_err();
        assert_eq!(
            err,
            "this kernel (6.1.0-test) has no TCX, which lanlink needs: it came in Linux 6.6; \
             use --attach tc (or auto) on this kernel"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn supported_kernels_pass() {
        check(5, 10, AttachMode::Tc).unwrap();
        check(6, 1, AttachMode::Tc).unwrap();
        check(6, 6, AttachMode::Tcx).unwrap();
        check(6, 18, AttachMode::Tcx).unwrap();
    }
}
