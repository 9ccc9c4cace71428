//! DHCP snooping on a pod's port (`from_pod`): the LAN's DHCP server is the
//! only one a pod may hear, and a pod may only ask for itself.
//!
//! - A server message (UDP source port 67, or a BOOTREPLY) is dropped unless
//!   the pod is allowed to serve DHCP (`portSecurity.dhcpServer`).
//! - A pod whose lease the agent holds sends no DHCP at all: the agent
//!   speaks for it, and a RELEASE or DISCOVER of its own would undo that.
//! - A pod with its own client may only ask with `chaddr` (and a hardware
//!   client identifier, if it sends one) equal to its MAC, at 10 messages
//!   per second with bursts of 20.
//!
//! Reads go through `bpf_skb_load_bytes`, as in `crate::dhcp`.

use aya_ebpf::programs::TcContext;
use lanlink_common::{DropReason, EndpointByIf, endpoint_flags};

use crate::{
    dhcp::{
        BOOTREPLY, CHADDR, CLIENT_PORT, MAGIC, MAGIC_COOKIE, MAX_OPTIONS, OPT_END, OPT_PAD,
        OPTIONS, SERVER_PORT,
    },
    guard,
    ipv4::{IPPROTO_UDP, Ipv4},
};

const OPT_CLIENT_ID: u8 = 61;

/// Whether `ip` is DHCP/BOOTP, either direction (a non-first fragment has
/// no ports, so it never is).
#[inline(always)]
pub(crate) fn is_dhcp(ip: &Ipv4) -> bool {
    let (sport, dport) = (u16::from_be_bytes(ip.sport), u16::from_be_bytes(ip.dport));
    ip.proto == IPPROTO_UDP
        && (sport == SERVER_PORT || dport == SERVER_PORT || dport == CLIENT_PORT)
}

/// Checks a DHCP/BOOTP datagram from the endpoint `ep` (host veth `ifindex`).
#[inline(always)]
pub(crate) fn check(
    ctx: &TcContext,
    ip: &Ipv4,
    ep: &EndpointByIf,
    ifindex: u32,
) -> Result<(), DropReason> {
    let bootp = ip.l4 + 8;
    let op: u8 = ctx.load(bootp).map_err(|_| DropReason::Malformed)?;
    if u16::from_be_bytes(ip.sport) == SERVER_PORT
        || u16::from_be_bytes(ip.dport) == CLIENT_PORT
        || op == BOOTREPLY
    {
        if ep.flags & endpoint_flags::DHCP_SERVER == 0 {
            return Err(DropReason::DhcpServer);
        }
        return Ok(());
    }
    // A client message, to port 67.
    if ep.flags & endpoint_flags::OWN_DHCP == 0 {
        return Err(DropReason::DhcpAgentHeld);
    }
    let hw: [u8; 3] = ctx.load(bootp).map_err(|_| DropReason::Malformed)?;
    let chaddr: [u8; 6] = ctx
        .load(bootp + CHADDR)
        .map_err(|_| DropReason::Malformed)?;
    // An Ethernet chaddr that is the pod's own.
    if hw[1] != 1 || hw[2] != 6 || chaddr != ep.mac {
        return Err(DropReason::DhcpChaddr);
    }
    if !client_id_matches(ctx, bootp, &ep.mac) {
        return Err(DropReason::DhcpChaddr);
    }
    guard::take_dhcp_message(ifindex)
}

/// Whether the client identifier (option 61), if the message has one of
/// hardware type Ethernet, names `mac`. Other identifier forms (a DUID, a
/// name) say nothing about a MAC and pass; the rate limit bounds them.
#[inline(always)]
fn client_id_matches(ctx: &TcContext, bootp: usize, mac: &[u8; 6]) -> bool {
    let Ok(magic) = ctx.load::<[u8; 4]>(bootp + MAGIC) else {
        // Plain BOOTP: no options.
        return true;
    };
    if magic != MAGIC_COOKIE {
        return true;
    }
    let mut off = bootp + OPTIONS;
    // Bounded loop; offsets only go to bpf_skb_load_bytes (checked at run time).
    let mut i = 0;
    while i < MAX_OPTIONS {
        let Ok(code) = ctx.load::<u8>(off) else {
            return true;
        };
        match code {
            OPT_PAD => off += 1,
            OPT_END => return true,
            _ => {
                let Ok(len) = ctx.load::<u8>(off + 1) else {
                    return true;
                };
                if code == OPT_CLIENT_ID {
                    let Ok(ty) = ctx.load::<u8>(off + 2) else {
                        return false;
                    };
                    if ty != 1 {
                        return true;
                    }
                    let Ok(id) = ctx.load::<[u8; 6]>(off + 3) else {
                        return false;
                    };
                    return len == 7 && id == *mac;
                }
                off += 2 + usize::from(len);
            }
        }
        i += 1;
    }
    true
}
