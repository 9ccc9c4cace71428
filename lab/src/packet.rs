//! `AF_PACKET` sockets for the lab's tools that send or read raw frames
//! (`lab-net raw-send`, `lab-craft`).

use std::os::fd::{AsRawFd, BorrowedFd};

/// The link-layer address of interface `ifindex` for `protocol` (an
/// EtherType in host order; 0 for a socket that only sends).
pub fn sockaddr_ll(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    sll
}

/// Binds the packet socket `fd` to `sll`.
pub fn bind(fd: BorrowedFd<'_>, sll: &libc::sockaddr_ll) -> std::io::Result<()> {
    // SAFETY: sll is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
