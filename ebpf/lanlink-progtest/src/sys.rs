//! The raw `bpf(BPF_PROG_TEST_RUN)` syscall (aya 0.14 has no API for it).

use std::os::fd::RawFd;

/// `BPF_PROG_TEST_RUN` (`enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (uapi `linux/bpf.h`).
#[repr(C, align(8))]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so it is zero: the kernel refuses (EINVAL) an attr with
    /// non-zero bytes past the command's last field.
    _pad: u32,
}
const _: () = assert!(size_of::<TestRunAttr>() == 80);

/// `struct __sk_buff` (uapi `linux/bpf.h`), the context of a TC program.
/// `bpf_prog_test_run_skb` accepts only `mark`, `priority`,
/// `ingress_ifindex`, `ifindex`, `cb`, `tstamp`, `wire_len`, `gso_segs`,
/// `gso_size` and `hwtstamp` set; every other byte must be zero (EINVAL).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct SkBuff {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    /// The device the frame was received on (`skb->skb_iif`).
    ingress_ifindex: u32,
    /// The device the hook runs on: looked up in the calling thread's
    /// network namespace (ENODEV if absent); 0 or 1 means loopback.
    ifindex: u32,
    tc_index: u32,
    cb: [u32; 5],
    hash: u32,
    tc_classid: u32,
    data: u32,
    data_end: u32,
    napi_id: u32,
    family: u32,
    remote_ip4: u32,
    local_ip4: u32,
    remote_ip6: [u32; 4],
    local_ip6: [u32; 4],
    remote_port: u32,
    local_port: u32,
    data_meta: u32,
    flow_keys: u64,
    tstamp: u64,
    wire_len: u32,
    gso_segs: u32,
    sk: u64,
    gso_size: u32,
    tstamp_type: u8,
    _pad: [u8; 3],
    hwtstamp: u64,
}
const _: () = assert!(size_of::<SkBuff>() == 192);
const _: () = assert!(core::mem::offset_of!(SkBuff, ifindex) == 40);
const _: () = assert!(core::mem::offset_of!(SkBuff, tstamp) == 152);
const _: () = assert!(core::mem::offset_of!(SkBuff, hwtstamp) == 184);

impl SkBuff {
    /// A context with only the devices set.
    pub(crate) fn on_device(ifindex: u32, ingress_ifindex: u32) -> Self {
        Self {
            ifindex,
            ingress_ifindex,
            ..Default::default()
        }
    }
}

/// What one test run returned.
pub(crate) struct TestRunOut {
    /// The program's return value.
    pub(crate) retval: u32,
    /// The frame after the program (as far as `data_out` could hold it).
    pub(crate) data: Vec<u8>,
}

/// Runs program `prog_fd` once on `data` with context `ctx`.
pub(crate) fn test_run(
    prog_fd: RawFd,
    data: &[u8],
    ctx: &SkBuff,
) -> Result<TestRunOut, std::io::Error> {
    // Room for a program that grows the frame (none of lanlink's do today).
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: size_of::<SkBuff>() as u32,
        ctx_in: ctx as *const SkBuff as u64,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr.test` of the size passed; the
    // kernel reads `data` and `ctx` and writes at most `data_size_out` bytes
    // to `out`, all alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRunOut {
        retval: attr.retval,
        data: out,
    })
}
