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
    /// Mean time per run, in nanoseconds.
    pub(crate) duration_ns: u32,
    /// The frame after the program (as far as `data_out` could hold it).
    pub(crate) data: Vec<u8>,
}

/// The `bpf(2)` syscall `cmd` with `attr`, passed with its size.
///
/// # Safety
/// `attr` must be the `union bpf_attr` layout `cmd` reads (a prefix is
/// enough: the kernel zero-fills the rest), and every pointer in it valid
/// for what the kernel does with it during the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> Result<libc::c_long, std::io::Error> {
    // SAFETY: as the caller promises.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A,
            size_of::<A>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

/// Runs program `prog_fd` once on `data` with context `ctx`.
pub(crate) fn test_run(
    prog_fd: RawFd,
    data: &[u8],
    ctx: &SkBuff,
) -> Result<TestRunOut, std::io::Error> {
    test_run_repeat(prog_fd, data, ctx, 1)
}

/// Runs program `prog_fd` `repeat` times on `data` with context `ctx`
/// (the kernel reports the mean time per run in `duration_ns`).
pub(crate) fn test_run_repeat(
    prog_fd: RawFd,
    data: &[u8],
    ctx: &SkBuff,
    repeat: u32,
) -> Result<TestRunOut, std::io::Error> {
    // Room for a program that grows the frame (none of lanlink's do today).
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<SkBuff>() as u32,
        ctx_in: ctx as *const SkBuff as u64,
        ..Default::default()
    };
    // SAFETY: `attr` is `bpf_attr.test`; the kernel reads `data` and `ctx`
    // and writes at most `data_size_out` bytes to `out`, all alive for the
    // call.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    out.truncate(attr.data_size_out as usize);
    Ok(TestRunOut {
        retval: attr.retval,
        duration_ns: attr.duration,
        data: out,
    })
}

/// `BPF_MAP_CREATE` (`enum bpf_cmd`).
const BPF_MAP_CREATE: libc::c_long = 0;
/// `BPF_MAP_TYPE_HASH` (`enum bpf_map_type`).
const BPF_MAP_TYPE_HASH: u32 = 1;

/// The leading members of `union bpf_attr` for `BPF_MAP_CREATE`, up to and
/// including `map_name` (the kernel zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}
const _: () = assert!(size_of::<MapCreateAttr>() == 44);

/// Creates a preallocated `BPF_MAP_TYPE_HASH` named `name` (at most 15
/// bytes): unlike an LRU map, it refuses an insert when full (`E2BIG`).
pub(crate) fn create_hash_map(
    name: &str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> Result<std::os::fd::OwnedFd, std::io::Error> {
    use std::os::fd::FromRawFd;

    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_HASH,
        key_size,
        value_size,
        max_entries,
        ..Default::default()
    };
    let len = name.len().min(attr.map_name.len() - 1);
    attr.map_name[..len].copy_from_slice(&name.as_bytes()[..len]);
    // SAFETY: `attr` is a prefix of `bpf_attr` for this command, with no
    // pointers.
    let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }?;
    // SAFETY: the syscall returned a new file descriptor that nothing else
    // owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}
