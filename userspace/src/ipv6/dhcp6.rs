//! A DHCPv6 client for one identity association for non-temporary
//! addresses (IA_NA, RFC 8415), speaking on a pod's behalf: Solicit →
//! Advertise → Request → Reply, Renew at T1, Rebind at T2, Release and
//! Decline, with RFC 8415 section 15 retransmission (bounded), the
//! messages encoded and decoded with `dhcproto`'s v6 module.
//!
//! **Identity.** The DUID is the DUID-UUID (RFC 6355) that the DHCPv4
//! client already sends inside its RFC 4361 client identifier (`0xff`,
//! IAID, DUID; see `crate::dhcp::stable_identity`), and the IAID is the
//! same IAID. RFC 4361 section 6.1 asks for exactly that (one DUID per
//! client for both protocols), it is derived from the pod's stable
//! identity (`namespace/pod/ifname`), so a re-created pod comes back with
//! the same DUID and its reservations keep matching, and — unlike DUID-LL —
//! it does not claim to be a hardware address: the pod's MAC is itself a
//! derived, locally administered one.
//!
//! **Transport.** [`PacketTransport`] sends whole Ethernet frames on the
//! node's uplink from the pod's MAC and its EUI-64 link-local address to
//! ff02::1:2, and receives the replies the servers send to that link-local
//! address. The servers resolve that address with neighbour discovery, and
//! no kernel owns it on the uplink: so the transport answers neighbour
//! solicitations for it (the IPv6 twin of the agent answering ARP for a
//! pod). The exchange logic only needs [`Dhcp6Transport`], so unit tests
//! drive it through an in-memory server.

use std::io;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant, SystemTime};

use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, IANA, Message, MessageType, ORO, OptionCode, Status,
    UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::{link_local_from_mac, multicast_mac, solicited_node};
use crate::dhcp::socket::{PacketSocket, RECV_BUF_LEN, jump, stmt};

/// The EtherType of the frames sent.
const ETH_P_IPV6: u16 = 0x86dd;

/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 7.1).
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// The client's UDP port.
pub const CLIENT_PORT: u16 = 546;
/// The servers' UDP port.
pub const SERVER_PORT: u16 = 547;

/// DHCPv6 option 39, Client FQDN (RFC 4704).
const OPT_CLIENT_FQDN: u16 = 39;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Dhcp6Error {
    /// The transport failed.
    #[error("dhcpv6 transport: {0}")]
    Io(#[from] io::Error),
    /// No usable reply within the exchange's retransmission bounds.
    #[error("no dhcpv6 {exchange} reply after {attempts} transmissions over {elapsed:?}")]
    Timeout {
        /// The exchange (`solicit`, `request`, …).
        exchange: &'static str,
        /// Messages sent.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
    },
    /// The server answered with a status other than Success.
    #[error("dhcpv6 {exchange}: server {status:?}: {message}")]
    Status {
        /// The exchange.
        exchange: &'static str,
        /// The status code (top level or in the IA_NA).
        status: Status,
        /// The server's text.
        message: String,
    },
    /// A reply without what the exchange needs (IA_NA, address, server id).
    #[error("dhcpv6 {exchange}: unusable reply: {why}")]
    Unusable {
        /// The exchange.
        exchange: &'static str,
        /// What is missing.
        why: &'static str,
    },
    /// The client identifier is not an RFC 4361 one.
    #[error("the dhcpv4 client identifier is not an rfc 4361 one (0xff, iaid, duid)")]
    BadClientId,
}

/// Who the client is: DUID, IAID, MAC and link-local address, and the
/// name for option 39.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcp6Identity {
    /// The DUID (option 1).
    pub duid: Vec<u8>,
    /// The IA_NA's IAID.
    pub iaid: u32,
    /// The pod's MAC: the frames' source.
    pub mac: [u8; 6],
    /// The pod's link-local address: the packets' source.
    pub link_local: Ipv6Addr,
    /// The name sent in option 39 (a single label: the server qualifies
    /// it), if any.
    pub fqdn: Option<String>,
}

impl Dhcp6Identity {
    /// From the pod's MAC and the RFC 4361 client identifier its DHCPv4
    /// client sends (`0xff`, 4-byte IAID, DUID): the same DUID and IAID.
    pub fn from_v4_client_id(
        mac: [u8; 6],
        client_id: &[u8],
        fqdn: Option<String>,
    ) -> Result<Self, Dhcp6Error> {
        if client_id.len() < 5 + 2 || client_id[0] != 0xff {
            return Err(Dhcp6Error::BadClientId);
        }
        Ok(Self {
            duid: client_id[5..].to_vec(),
            iaid: u32::from_be_bytes([client_id[1], client_id[2], client_id[3], client_id[4]]),
            mac,
            link_local: link_local_from_mac(mac),
            fqdn,
        })
    }

    /// The stable identity of `namespace/pod/ifname`
    /// (`crate::dhcp::stable_identity`), named after the pod.
    pub fn stable(namespace: &str, pod: &str, ifname: &str) -> Self {
        let (mac, client_id) = crate::dhcp::stable_identity(namespace, pod, ifname);
        // stable_identity always returns an RFC 4361 client id.
        Self::from_v4_client_id(mac, &client_id, crate::dhcp::sanitize_hostname(pod)).unwrap_or(
            Self {
                duid: client_id,
                iaid: 0,
                mac,
                link_local: link_local_from_mac(mac),
                fqdn: None,
            },
        )
    }

    /// The DUID as servers print it (`00:04:…`).
    pub fn duid_hex(&self) -> String {
        self.duid
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// A DHCPv6 lease of one address. Two leases are equal when all but their
/// monotonic `obtained` are: that one is derived from the wall-clock time
/// each time a lease is read from the state file, so the same lease read
/// twice differs in it by the clocks' jitter.
#[derive(Clone, Debug)]
pub struct Lease6 {
    /// The address.
    pub address: Ipv6Addr,
    /// Preferred lifetime, seconds.
    pub preferred: u32,
    /// Valid lifetime, seconds.
    pub valid: u32,
    /// T1 (renew), seconds from `obtained`; the RFC 8415 21.4 default (0.5
    /// × preferred) when the server sent 0.
    pub t1: u32,
    /// T2 (rebind), seconds from `obtained`; 0.8 × preferred when the
    /// server sent 0.
    pub t2: u32,
    /// The server's DUID (option 2).
    pub server_id: Vec<u8>,
    /// DNS servers (option 23), if sent.
    pub dns: Vec<Ipv6Addr>,
    /// When the reply came (monotonic: timers).
    pub obtained: Instant,
    /// When the reply came (wall clock: for persisting).
    pub obtained_wall: SystemTime,
}

impl PartialEq for Lease6 {
    fn eq(&self, o: &Self) -> bool {
        let Self {
            address,
            preferred,
            valid,
            t1,
            t2,
            server_id,
            dns,
            obtained: _,
            obtained_wall,
        } = self;
        (
            address,
            preferred,
            valid,
            t1,
            t2,
            server_id,
            dns,
            obtained_wall,
        ) == (
            &o.address,
            &o.preferred,
            &o.valid,
            &o.t1,
            &o.t2,
            &o.server_id,
            &o.dns,
            &o.obtained_wall,
        )
    }
}

impl Eq for Lease6 {}

impl Lease6 {
    /// When to renew.
    pub fn renew_at(&self) -> Instant {
        self.obtained + Duration::from_secs(u64::from(self.t1))
    }

    /// When to rebind.
    pub fn rebind_at(&self) -> Instant {
        self.obtained + Duration::from_secs(u64::from(self.t2))
    }

    /// When the address stops being valid.
    pub fn expires_at(&self) -> Instant {
        self.obtained + Duration::from_secs(u64::from(self.valid))
    }
}

/// RFC 8415 section 15 parameters of one exchange (section 7.6 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransParams {
    /// IRT: initial retransmission time.
    pub irt: Duration,
    /// MRT: maximum retransmission time (0: none).
    pub mrt: Duration,
    /// MRC: maximum transmissions (0: none).
    pub mrc: u32,
    /// MRD: maximum duration (0: none).
    pub mrd: Duration,
}

impl RetransParams {
    /// Solicit: SOL_TIMEOUT 1 s, SOL_MAX_RT 3600 s; bounded here by `mrd`
    /// (the RFC retries forever; a CNI ADD cannot).
    pub fn solicit(mrd: Duration) -> Self {
        Self {
            irt: Duration::from_secs(1),
            mrt: Duration::from_secs(3600),
            mrc: 0,
            mrd,
        }
    }
    /// Request: REQ_TIMEOUT 1 s, REQ_MAX_RT 30 s, REQ_MAX_RC 10.
    pub const REQUEST: Self = Self {
        irt: Duration::from_secs(1),
        mrt: Duration::from_secs(30),
        mrc: 10,
        mrd: Duration::ZERO,
    };
    /// Renew: REN_TIMEOUT 10 s, REN_MAX_RT 600 s, until T2 (`mrd`).
    pub fn renew(mrd: Duration) -> Self {
        Self {
            irt: Duration::from_secs(10),
            mrt: Duration::from_secs(600),
            mrc: 0,
            mrd,
        }
    }
    /// Rebind: REB_TIMEOUT 10 s, REB_MAX_RT 600 s, until the valid
    /// lifetime ends (`mrd`).
    pub fn rebind(mrd: Duration) -> Self {
        Self {
            irt: Duration::from_secs(10),
            mrt: Duration::from_secs(600),
            mrc: 0,
            mrd,
        }
    }
    /// Release: REL_TIMEOUT 1 s, REL_MAX_RC 4.
    pub const RELEASE: Self = Self {
        irt: Duration::from_secs(1),
        mrt: Duration::ZERO,
        mrc: 4,
        mrd: Duration::ZERO,
    };
    /// Decline: DEC_TIMEOUT 1 s, DEC_MAX_RC 4.
    pub const DECLINE: Self = Self {
        irt: Duration::from_secs(1),
        mrt: Duration::ZERO,
        mrc: 4,
        mrd: Duration::ZERO,
    };
}

/// The retransmission schedule of RFC 8415 15: RT = IRT + RAND·IRT, then
/// RT = 2·RTprev + RAND·RTprev, capped at MRT (+ RAND·MRT), with RAND in
/// [-0.1, 0.1] (the first Solicit's RAND is strictly positive), ending after
/// MRC transmissions or MRD.
#[derive(Clone, Debug)]
pub struct Retrans {
    params: RetransParams,
    rt: Duration,
    sent: u32,
    first_solicit: bool,
    rng: u64,
}

impl Retrans {
    /// A schedule; `first_solicit` makes the first RAND positive (RFC 8415
    /// 18.2.1), `seed` drives RAND.
    pub fn new(params: RetransParams, first_solicit: bool, seed: u64) -> Self {
        Self {
            params,
            rt: Duration::ZERO,
            sent: 0,
            first_solicit,
            rng: seed | 1,
        }
    }

    /// RAND in [-0.1, 0.1] (or (0, 0.1] when `positive`), xorshift-driven.
    fn rand(&mut self, positive: bool) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        if positive {
            0.1 * (1.0 - unit).max(f64::MIN_POSITIVE)
        } else {
            0.2 * unit - 0.1
        }
    }

    /// Records one transmission at `elapsed` into the exchange; returns how
    /// long to wait for a reply before the next one, or `None` when this
    /// transmission is not allowed (MRC or MRD reached). The last wait is
    /// cut to what is left of MRD.
    pub fn next(&mut self, elapsed: Duration) -> Option<Duration> {
        let p = self.params;
        if (p.mrc != 0 && self.sent >= p.mrc) || (!p.mrd.is_zero() && elapsed >= p.mrd) {
            return None;
        }
        self.rt = if self.sent == 0 {
            let r = self.rand(self.first_solicit);
            p.irt.mul_f64(1.0 + r)
        } else {
            let r = self.rand(false);
            self.rt.mul_f64(2.0 + r)
        };
        if !p.mrt.is_zero() && self.rt > p.mrt {
            let r = self.rand(false);
            self.rt = p.mrt.mul_f64(1.0 + r);
        }
        self.sent += 1;
        let mut wait = self.rt;
        if !p.mrd.is_zero() {
            wait = wait.min(p.mrd - elapsed);
        }
        Some(wait)
    }

    /// Transmissions so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }
}

/// Sends DHCPv6 client messages and receives what comes back to the client.
pub trait Dhcp6Transport {
    /// Sends one encoded message to All_DHCP_Relay_Agents_and_Servers.
    fn send(&self, msg: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives the next DHCPv6 message addressed to the client.
    fn recv(&self) -> impl Future<Output = io::Result<Vec<u8>>> + Send;
}

/// Client FQDN option (RFC 4704 4.1): flags S (the server updates AAAA),
/// then `name` as one DNS label without the root (a partial name the
/// server qualifies).
pub fn fqdn_option(name: &str) -> DhcpOption {
    let label = &name.as_bytes()[..name.len().min(63)];
    let mut data = vec![0x01, label.len() as u8];
    data.extend_from_slice(label);
    DhcpOption::Unknown(UnknownOption::new(OptionCode::from(OPT_CLIENT_FQDN), data))
}

/// The DHCPv6 client of one identity over one transport.
#[derive(Debug)]
pub struct Dhcp6Client<T> {
    id: Dhcp6Identity,
    transport: T,
    seed: u64,
}

/// An Advertise worth requesting.
#[derive(Clone, Debug)]
struct Advert {
    server_id: Vec<u8>,
    preference: u8,
    addr: IAAddr,
}

impl<T: Dhcp6Transport> Dhcp6Client<T> {
    /// A client for `id` over `transport`.
    pub fn new(id: Dhcp6Identity, transport: T) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            ^ u64::from(id.iaid);
        Self {
            id,
            transport,
            seed,
        }
    }

    /// Its identity.
    pub fn identity(&self) -> &Dhcp6Identity {
        &self.id
    }

    /// Its transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    fn next_seed(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.seed
    }

    /// A message of `ty` with a fresh transaction id, our client id,
    /// elapsed time 0, and an IA_NA holding `addr` (if any).
    fn message(&mut self, ty: MessageType, addr: Option<&IAAddr>) -> Message {
        let xid = (self.next_seed() >> 40) as u32 & 0x00ff_ffff;
        let mut m = Message::new(ty);
        m.set_xid_num(xid);
        let o = m.opts_mut();
        o.insert(DhcpOption::ClientId(self.id.duid.clone()));
        o.insert(DhcpOption::ElapsedTime(0));
        let mut ia_opts = DhcpOptions::new();
        if let Some(a) = addr {
            ia_opts.insert(DhcpOption::IAAddr(IAAddr {
                addr: a.addr,
                preferred_life: 0,
                valid_life: 0,
                opts: DhcpOptions::new(),
            }));
        }
        o.insert(DhcpOption::IANA(IANA {
            id: self.id.iaid,
            t1: 0,
            t2: 0,
            opts: ia_opts,
        }));
        if !matches!(ty, MessageType::Release | MessageType::Decline) {
            o.insert(DhcpOption::ORO(ORO {
                opts: vec![OptionCode::DomainNameServers],
            }));
            if let Some(name) = &self.id.fqdn {
                o.insert(fqdn_option(name));
            }
        }
        m
    }

    /// Sends `msg` on the schedule of `params` until `accept` takes a reply
    /// (with the right transaction id and our client id), updating option 8
    /// (elapsed time) on each retransmission. `collect` > 0 keeps listening
    /// that long after the first accepted reply (Solicit: Advertises from
    /// more servers), `done` ends collection early.
    async fn exchange<R>(
        &mut self,
        exchange: &'static str,
        mut msg: Message,
        params: RetransParams,
        mut accept: impl FnMut(&Message) -> Result<Option<R>, Dhcp6Error>,
        better: impl Fn(&R, &R) -> bool,
        done: impl Fn(&R) -> bool,
    ) -> Result<R, Dhcp6Error> {
        let start = Instant::now();
        // RFC 8415 18.2.1: the first Solicit's RAND is strictly positive.
        let first_solicit = exchange == "solicit";
        let mut sched = Retrans::new(params, first_solicit, self.next_seed());
        let mut best: Option<R> = None;
        let xid = msg.xid();
        loop {
            let elapsed = start.elapsed();
            let Some(wait) = sched.next(elapsed) else {
                return best.ok_or(Dhcp6Error::Timeout {
                    exchange,
                    attempts: sched.sent(),
                    elapsed,
                });
            };
            // Option 8 in hundredths of a second, saturating (RFC 8415 21.9).
            let centis = u16::try_from(elapsed.as_millis() / 10).unwrap_or(u16::MAX);
            if let Some(DhcpOption::ElapsedTime(e)) =
                msg.opts_mut().get_mut(OptionCode::ElapsedTime)
            {
                *e = centis;
            }
            let mut buf = Vec::with_capacity(256);
            msg.encode(&mut Encoder::new(&mut buf))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.transport.send(&buf).await?;
            tracing::debug!(
                exchange,
                attempt = sched.sent(),
                iaid = self.id.iaid,
                "dhcpv6 sent"
            );
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let got = match tokio::time::timeout_at(deadline, self.transport.recv()).await {
                    Err(_) => break,
                    Ok(r) => r?,
                };
                let Ok(reply) = Message::decode(&mut Decoder::new(&got)) else {
                    continue;
                };
                if reply.xid() != xid || client_id(&reply) != Some(&self.id.duid[..]) {
                    continue;
                }
                if let Some(r) = accept(&reply)? {
                    if done(&r) {
                        return Ok(r);
                    }
                    if best.as_ref().is_none_or(|b| better(&r, b)) {
                        best = Some(r);
                    }
                }
            }
            // RFC 8415 18.2.1: after the first RT of a Solicit, take the best
            // Advertise collected.
            if let Some(b) = best.take() {
                return Ok(b);
            }
        }
    }

    /// Solicit → Advertise → Request → Reply: a new lease. The Solicit is
    /// retransmitted for at most `solicit_for`.
    pub async fn obtain(&mut self, solicit_for: Duration) -> Result<Lease6, Dhcp6Error> {
        let adv = self.solicit(solicit_for).await?;
        self.request(&adv).await
    }

    async fn solicit(&mut self, solicit_for: Duration) -> Result<Advert, Dhcp6Error> {
        let msg = self.message(MessageType::Solicit, None);
        let iaid = self.id.iaid;
        self.exchange(
            "solicit",
            msg,
            RetransParams::solicit(solicit_for),
            |m| {
                if m.msg_type() != MessageType::Advertise {
                    return Ok(None);
                }
                // An Advertise without addresses (NoAddrsAvail) is ignored
                // (RFC 8415 18.2.9): another server may have some.
                let Ok(addr) = ia_addr(m, iaid, "solicit") else {
                    return Ok(None);
                };
                let Some(server_id) = server_id(m) else {
                    return Ok(None);
                };
                let preference = match m.opts().get(OptionCode::Preference) {
                    Some(DhcpOption::Preference(p)) => *p,
                    _ => 0,
                };
                Ok(Some(Advert {
                    server_id: server_id.to_vec(),
                    preference,
                    addr,
                }))
            },
            |a, b| a.preference > b.preference,
            |a| a.preference == 255,
        )
        .await
    }

    async fn request(&mut self, adv: &Advert) -> Result<Lease6, Dhcp6Error> {
        let mut msg = self.message(MessageType::Request, Some(&adv.addr));
        msg.opts_mut()
            .insert(DhcpOption::ServerId(adv.server_id.clone()));
        self.reply_exchange("request", msg, RetransParams::REQUEST)
            .await
    }

    /// Renews `lease` with its server (from T1, until T2).
    pub async fn renew(&mut self, lease: &Lease6) -> Result<Lease6, Dhcp6Error> {
        let mut msg = self.message(MessageType::Renew, Some(&iaaddr_of(lease)));
        msg.opts_mut()
            .insert(DhcpOption::ServerId(lease.server_id.clone()));
        let mrd = lease.rebind_at().saturating_duration_since(Instant::now());
        self.reply_exchange(
            "renew",
            msg,
            RetransParams::renew(mrd.max(Duration::from_secs(1))),
        )
        .await
    }

    /// Rebinds `lease` with any server (from T2, until it expires).
    pub async fn rebind(&mut self, lease: &Lease6) -> Result<Lease6, Dhcp6Error> {
        let msg = self.message(MessageType::Rebind, Some(&iaaddr_of(lease)));
        let mrd = lease.expires_at().saturating_duration_since(Instant::now());
        self.reply_exchange(
            "rebind",
            msg,
            RetransParams::rebind(mrd.max(Duration::from_secs(1))),
        )
        .await
    }

    /// Releases `lease` (RFC 8415 18.2.7). Success once the server replied,
    /// whatever its status (18.2.10.2: the client considers it released).
    pub async fn release(&mut self, lease: &Lease6) -> Result<(), Dhcp6Error> {
        self.end(
            "release",
            MessageType::Release,
            lease,
            RetransParams::RELEASE,
        )
        .await
    }

    /// Declines `lease`'s address, found in use by duplicate address
    /// detection (RFC 8415 18.2.8).
    pub async fn decline(&mut self, lease: &Lease6) -> Result<(), Dhcp6Error> {
        self.end(
            "decline",
            MessageType::Decline,
            lease,
            RetransParams::DECLINE,
        )
        .await
    }

    async fn end(
        &mut self,
        exchange: &'static str,
        ty: MessageType,
        lease: &Lease6,
        params: RetransParams,
    ) -> Result<(), Dhcp6Error> {
        let mut msg = self.message(ty, Some(&iaaddr_of(lease)));
        msg.opts_mut()
            .insert(DhcpOption::ServerId(lease.server_id.clone()));
        self.exchange(
            exchange,
            msg,
            params,
            |m| Ok((m.msg_type() == MessageType::Reply).then_some(())),
            |_, _| false,
            |()| true,
        )
        .await
    }

    async fn reply_exchange(
        &mut self,
        exchange: &'static str,
        msg: Message,
        params: RetransParams,
    ) -> Result<Lease6, Dhcp6Error> {
        let iaid = self.id.iaid;
        self.exchange(
            exchange,
            msg,
            params,
            |m| {
                if m.msg_type() != MessageType::Reply {
                    return Ok(None);
                }
                lease_from_reply(m, iaid, exchange).map(Some)
            },
            |_, _| false,
            |_| true,
        )
        .await
    }

    /// Keeps `lease` alive until `cancel` fires: Renew at T1 (until T2),
    /// Rebind at T2 (until expiry); each new lease is passed to `on_lease`.
    /// Returns the last lease when cancelled, an error when it expired or
    /// a server refused it.
    pub async fn maintain(
        &mut self,
        mut lease: Lease6,
        cancel: tokio_util::sync::CancellationToken,
        mut on_lease: impl FnMut(&Lease6),
    ) -> Result<Lease6, Dhcp6Error> {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(lease),
                () = tokio::time::sleep_until(lease.renew_at().into()) => {}
            }
            let renewed = tokio::select! {
                () = cancel.cancelled() => return Ok(lease),
                r = self.renew(&lease) => r,
            };
            let next = match renewed {
                Ok(l) => l,
                Err(Dhcp6Error::Timeout { .. }) => {
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(lease),
                        () = tokio::time::sleep_until(lease.rebind_at().into()) => {}
                    }
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(lease),
                        r = self.rebind(&lease) => r?,
                    }
                }
                Err(e) => return Err(e),
            };
            lease = next;
            on_lease(&lease);
        }
    }
}

fn iaaddr_of(lease: &Lease6) -> IAAddr {
    IAAddr {
        addr: lease.address,
        preferred_life: 0,
        valid_life: 0,
        opts: DhcpOptions::new(),
    }
}

fn client_id(m: &Message) -> Option<&[u8]> {
    match m.opts().get(OptionCode::ClientId) {
        Some(DhcpOption::ClientId(d)) => Some(d),
        _ => None,
    }
}

fn server_id(m: &Message) -> Option<&[u8]> {
    match m.opts().get(OptionCode::ServerId) {
        Some(DhcpOption::ServerId(d)) => Some(d),
        _ => None,
    }
}

fn status_of(opts: &DhcpOptions) -> Option<(Status, String)> {
    match opts.get(OptionCode::StatusCode) {
        Some(DhcpOption::StatusCode(s)) if s.status != Status::Success => {
            Some((s.status, s.msg.clone()))
        }
        _ => None,
    }
}

/// The address of our IA_NA in `m`, checking top-level and IA statuses.
fn ia_addr(m: &Message, iaid: u32, exchange: &'static str) -> Result<IAAddr, Dhcp6Error> {
    if let Some((status, message)) = status_of(m.opts()) {
        return Err(Dhcp6Error::Status {
            exchange,
            status,
            message,
        });
    }
    let ia = m
        .opts()
        .get_all(OptionCode::IANA)
        .unwrap_or_default()
        .iter()
        .find_map(|o| match o {
            DhcpOption::IANA(ia) if ia.id == iaid => Some(ia),
            _ => None,
        })
        .ok_or(Dhcp6Error::Unusable {
            exchange,
            why: "no IA_NA with our IAID",
        })?;
    if let Some((status, message)) = status_of(&ia.opts) {
        return Err(Dhcp6Error::Status {
            exchange,
            status,
            message,
        });
    }
    // RFC 8415 21.6: an address with preferred > valid is discarded; one
    // with valid 0 is being withdrawn.
    ia.opts
        .iter()
        .find_map(|o| match o {
            DhcpOption::IAAddr(a) if a.valid_life > 0 && a.preferred_life <= a.valid_life => {
                Some(a.clone())
            }
            _ => None,
        })
        .ok_or(Dhcp6Error::Unusable {
            exchange,
            why: "no valid address in the IA_NA",
        })
}

/// The lease a Reply grants.
fn lease_from_reply(m: &Message, iaid: u32, exchange: &'static str) -> Result<Lease6, Dhcp6Error> {
    let addr = ia_addr(m, iaid, exchange)?;
    let ia = match m
        .opts()
        .get_all(OptionCode::IANA)
        .unwrap_or_default()
        .iter()
        .find_map(|o| match o {
            DhcpOption::IANA(ia) if ia.id == iaid => Some(ia),
            _ => None,
        }) {
        Some(ia) => ia,
        None => {
            return Err(Dhcp6Error::Unusable {
                exchange,
                why: "no IA_NA with our IAID",
            });
        }
    };
    let server_id = server_id(m).ok_or(Dhcp6Error::Unusable {
        exchange,
        why: "no server identifier",
    })?;
    // RFC 8415 21.4: T1/T2 of 0 leave the choice to the client; T1 > T2
    // (both non-zero) is invalid and ignored the same way.
    let (mut t1, mut t2) = (ia.t1, ia.t2);
    if t1 == 0 || t2 == 0 || t1 > t2 {
        t1 = addr.preferred_life / 2;
        t2 = (u64::from(addr.preferred_life) * 4 / 5) as u32;
    }
    let dns = match m.opts().get(OptionCode::DomainNameServers) {
        Some(DhcpOption::DomainNameServers(d)) => d.clone(),
        _ => Vec::new(),
    };
    Ok(Lease6 {
        address: addr.addr,
        preferred: addr.preferred_life,
        valid: addr.valid_life,
        t1: t1.min(addr.valid_life),
        t2: t2.min(addr.valid_life),
        server_id: server_id.to_vec(),
        dns,
        obtained: Instant::now(),
        obtained_wall: SystemTime::now(),
    })
}

/// `ld vlan_avail; jne #0 drop; ldh [12]; jne #0x86dd drop; ldb [20];
/// jeq #17 udp; jeq #58 icmp; drop. udp: ldh [56]; jeq #546 accept; drop.
/// icmp: ldb [54]; jeq #135 accept; drop.` Only IPv6 without extension
/// headers: DHCPv6 replies and neighbour solicitations have none.
const FILTER: [libc::sock_filter; 13] = [
    stmt(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG_PRESENT) as u32,
    ),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 0, 10), // 1 → 2 | 12
    stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 12),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0x86dd, 0, 8), // 3 → 4 | 12
    stmt(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 20),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 17, 0, 2), // 5 → 6 | 8
    stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 56),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 546, 3, 4), // 7 → 11 | 12
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 58, 0, 3),  // 8 → 9 | 12
    stmt(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 54),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 135, 0, 1), // 10 → 11 | 12
    stmt(libc::BPF_RET | libc::BPF_K, u32::MAX),
    stmt(libc::BPF_RET | libc::BPF_K, 0),
];

/// DHCPv6 over an `AF_PACKET` socket on the uplink, as a pod: frames from
/// the pod's MAC and link-local address, replies to them, and neighbour
/// advertisements for the link-local address (see the module header).
///
/// Receives with `ETH_P_ALL` (a tap sees frames before TC ingress, as the
/// DHCPv4 socket does) and `PACKET_IGNORE_OUTGOING`; adds the pod's MAC and
/// its solicited-node multicast MAC to the uplink's filters
/// (`PACKET_ADD_MEMBERSHIP`) so a real NIC delivers them.
#[derive(Debug)]
pub struct PacketTransport {
    sock: PacketSocket,
    mac: [u8; 6],
    link_local: Ipv6Addr,
}

impl PacketTransport {
    /// Opens the socket on `uplink` (in the calling thread's namespace) for
    /// the client `mac` / `link_local`: the DHCPv4 client's packet socket
    /// ([`PacketSocket`]) with this module's filter. Must run inside a
    /// tokio runtime.
    pub fn open(uplink: &str, mac: [u8; 6], link_local: Ipv6Addr) -> io::Result<Self> {
        let ctx =
            |op: &str, e: io::Error| io::Error::new(e.kind(), format!("{op} on {uplink}: {e}"));
        let ifindex = crate::sys::ifindex(uplink).map_err(|e| ctx("if_nametoindex", e))?;
        let sock = PacketSocket::open_filtered(uplink, ifindex, &FILTER, ETH_P_IPV6)
            .map_err(io::Error::other)?;
        sock.add_membership(libc::PACKET_MR_UNICAST, mac)
            .map_err(|e| ctx("PACKET_ADD_MEMBERSHIP", e))?;
        sock.add_membership(
            libc::PACKET_MR_MULTICAST,
            multicast_mac(solicited_node(link_local)),
        )
        .map_err(|e| ctx("PACKET_ADD_MEMBERSHIP", e))?;
        Ok(Self {
            sock,
            mac,
            link_local,
        })
    }

    /// The neighbour advertisement answering `ns_src` (at `ns_src_mac`) for
    /// our link-local address: solicited, override, with our MAC.
    fn neighbour_advert(&self, ns_src: Ipv6Addr, ns_src_mac: [u8; 6]) -> io::Result<Vec<u8>> {
        let mut payload = Vec::with_capacity(24);
        payload.extend_from_slice(&self.link_local.octets());
        payload.extend_from_slice(&[2, 1]);
        payload.extend_from_slice(&self.mac);
        let b = etherparse::PacketBuilder::ethernet2(self.mac, ns_src_mac)
            .ipv6(self.link_local.octets(), ns_src.octets(), 255)
            .icmpv6_raw(136, 0, [0x60, 0, 0, 0]);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, &payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(out)
    }

    /// Handles one received frame: the DHCPv6 payload if it is for us, or
    /// `None` (after answering a neighbour solicitation for us).
    async fn handle(&self, frame: &[u8]) -> io::Result<Option<Vec<u8>>> {
        use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            return Ok(None);
        };
        let (Some(LinkSlice::Ethernet2(eth)), Some(NetSlice::Ipv6(ip))) = (&p.link, &p.net) else {
            return Ok(None);
        };
        let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
        match &p.transport {
            Some(TransportSlice::Udp(udp))
                if udp.destination_port() == CLIENT_PORT
                    && dst == self.link_local
                    && eth.destination() == self.mac =>
            {
                Ok(Some(udp.payload().to_vec()))
            }
            Some(TransportSlice::Icmpv6(icmp)) if icmp.type_u8() == 135 => {
                let body = icmp.payload();
                // Target address; from :: it is someone's duplicate address
                // detection, which must not be answered as solicited.
                if ip.header().hop_limit() != 255
                    || body.len() < 16
                    || body[..16] != self.link_local.octets()
                    || src.is_unspecified()
                {
                    return Ok(None);
                }
                let na = self.neighbour_advert(src, eth.source())?;
                self.sock.send(&na, eth.source()).await?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

impl Dhcp6Transport for PacketTransport {
    async fn send(&self, msg: &[u8]) -> io::Result<()> {
        let dst_mac = multicast_mac(ALL_SERVERS);
        // Hop limit 1: the message is for this link (relays relay it on).
        let b = etherparse::PacketBuilder::ethernet2(self.mac, dst_mac)
            .ipv6(self.link_local.octets(), ALL_SERVERS.octets(), 1)
            .udp(CLIENT_PORT, SERVER_PORT);
        let mut frame = Vec::with_capacity(b.size(msg.len()));
        b.write(&mut frame, msg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.sock.send(&frame, dst_mac).await
    }

    async fn recv(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; RECV_BUF_LEN];
        loop {
            // Longer than the buffer: truncated, not one of ours.
            let n = self.sock.recv(&mut buf).await?;
            if n <= buf.len()
                && let Some(msg) = self.handle(&buf[..n]).await?
            {
                return Ok(msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::{Mutex, mpsc};

    #[test]
    fn identity_shares_the_dhcpv4_duid_and_iaid() {
        let id = Dhcp6Identity::stable("default", "web-0", "eth0");
        let (mac, cid) = crate::dhcp::stable_identity("default", "web-0", "eth0");
        assert_eq!(id.mac, mac);
        assert_eq!(id.duid, cid[5..]);
        assert_eq!(&id.duid[..2], &[0, 4], "DUID-UUID");
        assert_eq!(id.duid.len(), 18);
        assert_eq!(id.iaid.to_be_bytes(), cid[1..5]);
        assert_eq!(id.link_local, link_local_from_mac(mac));
        assert_eq!(id.fqdn.as_deref(), Some("web-0"));
        assert_eq!(id, Dhcp6Identity::stable("default", "web-0", "eth0"));
        assert_ne!(
            id.duid,
            Dhcp6Identity::stable("default", "web-1", "eth0").duid
        );
        assert!(id.duid_hex().starts_with("00:04:"));
        assert!(matches!(
            Dhcp6Identity::from_v4_client_id(mac, &[1, 2, 3], None),
            Err(Dhcp6Error::BadClientId)
        ));
    }

    #[test]
    fn fqdn_is_a_partial_name_with_the_s_flag() {
        let DhcpOption::Unknown(u) = fqdn_option("web-0") else {
            panic!("option 39 is an unknown option to dhcproto")
        };
        assert_eq!(u16::from(u.code()), 39);
        assert_eq!(u.data(), &[1, 5, b'w', b'e', b'b', b'-', b'0']);
    }

    fn secs(d: Option<Duration>) -> f64 {
        d.expect("a transmission").as_secs_f64()
    }

    #[test]
    fn retransmission_follows_rfc8415_section_15() {
        // Request: RT 1 s ± 10 %, doubling ± 10 %, capped at 30 s ± 10 %,
        // 10 transmissions.
        for seed in 1..50 {
            let mut r = Retrans::new(RetransParams::REQUEST, false, seed);
            let mut prev = secs(r.next(Duration::ZERO));
            assert!((0.9..=1.1).contains(&prev), "{prev}");
            for _ in 1..10 {
                let rt = secs(r.next(Duration::ZERO));
                let doubled = rt >= prev * 1.9 && rt <= prev * 2.1 && rt <= 30.0;
                let capped = (27.0..=33.0).contains(&rt);
                assert!(doubled || capped, "{prev} → {rt}");
                prev = rt;
            }
            assert_eq!(r.sent(), 10);
            assert!(r.next(Duration::ZERO).is_none(), "REQ_MAX_RC is 10");
        }
        // Solicit: the first RT is strictly above IRT; MRD bounds it all.
        for seed in 1..50 {
            let mut r = Retrans::new(RetransParams::solicit(Duration::from_secs(2)), true, seed);
            let first = secs(r.next(Duration::ZERO));
            assert!(first > 1.0 && first <= 1.1, "{first}");
            let cut = secs(r.next(Duration::from_millis(1500)));
            assert!(cut <= 0.5 + 1e-9, "the last wait is cut to MRD: {cut}");
            assert!(r.next(Duration::from_secs(2)).is_none());
        }
        // Release: 4 transmissions.
        let mut r = Retrans::new(RetransParams::RELEASE, false, 7);
        assert!((0..4).all(|_| r.next(Duration::ZERO).is_some()));
        assert!(r.next(Duration::ZERO).is_none());
    }

    /// What the in-memory server does.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Behaviour {
        Serve,
        /// Advertise with NoAddrsAvail in the IA_NA.
        NoAddrs,
        /// Reply NoBinding to Renew.
        NoBinding,
        /// Answer with a wrong transaction id first, then properly.
        WrongXidFirst,
    }

    /// A DHCPv6 server in memory: answers each message through a channel,
    /// records what it got.
    struct FakeServer {
        behaviour: Behaviour,
        seen: Arc<std::sync::Mutex<Vec<Message>>>,
        tx: mpsc::UnboundedSender<Vec<u8>>,
        rx: Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    }

    const SERVER_DUID: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0, 0x53];
    const ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x100);

    fn encode(m: &Message) -> Vec<u8> {
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        b
    }

    impl FakeServer {
        fn new(behaviour: Behaviour) -> Self {
            let (tx, rx) = mpsc::unbounded_channel();
            Self {
                behaviour,
                seen: Arc::default(),
                tx,
                rx: Mutex::new(rx),
            }
        }

        fn answer(&self, m: &Message) -> Option<Message> {
            let ty = match m.msg_type() {
                MessageType::Solicit => MessageType::Advertise,
                MessageType::Request
                | MessageType::Renew
                | MessageType::Rebind
                | MessageType::Release
                | MessageType::Decline => MessageType::Reply,
                _ => return None,
            };
            let mut r = Message::new_with_id(ty, m.xid());
            let o = r.opts_mut();
            o.insert(m.opts().get(OptionCode::ClientId)?.clone());
            o.insert(DhcpOption::ServerId(SERVER_DUID.to_vec()));
            let Some(DhcpOption::IANA(ia)) = m.opts().get(OptionCode::IANA) else {
                return None;
            };
            let mut ia_opts = DhcpOptions::new();
            let status = |s: Status| {
                DhcpOption::StatusCode(dhcproto::v6::StatusCode {
                    status: s,
                    msg: format!("{s:?}"),
                })
            };
            match (self.behaviour, m.msg_type()) {
                (Behaviour::NoAddrs, _) => ia_opts.insert(status(Status::NoAddrsAvail)),
                (Behaviour::NoBinding, MessageType::Renew) => {
                    ia_opts.insert(status(Status::NoBinding))
                }
                (_, MessageType::Release | MessageType::Decline) => {
                    o.insert(status(Status::Success))
                }
                _ => ia_opts.insert(DhcpOption::IAAddr(IAAddr {
                    addr: ADDR,
                    preferred_life: 30,
                    valid_life: 60,
                    opts: DhcpOptions::new(),
                })),
            }
            o.insert(DhcpOption::IANA(IANA {
                id: ia.id,
                t1: 10,
                t2: 16,
                opts: ia_opts,
            }));
            o.insert(DhcpOption::DomainNameServers(vec![Ipv6Addr::new(
                0x2001, 2, 0, 1, 0, 0, 0, 0x53,
            )]));
            Some(r)
        }
    }

    impl Dhcp6Transport for &FakeServer {
        async fn send(&self, msg: &[u8]) -> io::Result<()> {
            let m = Message::decode(&mut Decoder::new(msg)).expect("the client sends valid DHCPv6");
            if let Some(r) = self.answer(&m) {
                if self.behaviour == Behaviour::WrongXidFirst {
                    let mut wrong = r.clone();
                    wrong.set_xid_num(r.xid_num() ^ 1);
                    let _ = self.tx.send(encode(&wrong));
                }
                let _ = self.tx.send(encode(&r));
            }
            self.seen.lock().unwrap().push(m);
            Ok(())
        }

        async fn recv(&self) -> io::Result<Vec<u8>> {
            self.rx
                .lock()
                .await
                .recv()
                .await
                .ok_or_else(|| io::Error::other("server gone"))
        }
    }

    fn id() -> Dhcp6Identity {
        Dhcp6Identity::stable("default", "web-0", "eth0")
    }

    #[tokio::test]
    async fn full_lifecycle_against_an_in_memory_server() {
        for behaviour in [Behaviour::Serve, Behaviour::WrongXidFirst] {
            let server = FakeServer::new(behaviour);
            let mut c = Dhcp6Client::new(id(), &server);
            let lease = c.obtain(Duration::from_secs(5)).await.unwrap();
            assert_eq!(lease.address, ADDR);
            assert_eq!(
                (lease.t1, lease.t2, lease.preferred, lease.valid),
                (10, 16, 30, 60)
            );
            assert_eq!(lease.server_id, SERVER_DUID);
            assert_eq!(lease.dns.len(), 1);
            let renewed = c.renew(&lease).await.unwrap();
            assert_eq!(renewed.address, ADDR);
            let rebound = c.rebind(&renewed).await.unwrap();
            assert_eq!(rebound.address, ADDR);
            c.release(&rebound).await.unwrap();
            c.decline(&rebound).await.unwrap();

            let seen = server.seen.lock().unwrap();
            let types: Vec<MessageType> = seen.iter().map(Message::msg_type).collect();
            assert_eq!(
                types,
                vec![
                    MessageType::Solicit,
                    MessageType::Request,
                    MessageType::Renew,
                    MessageType::Rebind,
                    MessageType::Release,
                    MessageType::Decline
                ],
                "{behaviour:?}"
            );
            for m in seen.iter() {
                assert_eq!(client_id(m), Some(&id().duid[..]));
                let Some(DhcpOption::IANA(ia)) = m.opts().get(OptionCode::IANA) else {
                    panic!("no IA_NA in {m:?}");
                };
                assert_eq!(ia.id, id().iaid);
                let has_server_id = server_id(m).is_some();
                // RFC 8415 18.2: Solicit and Rebind go to any server.
                let want = !matches!(m.msg_type(), MessageType::Solicit | MessageType::Rebind);
                assert_eq!(has_server_id, want, "{:?}", m.msg_type());
                let has_fqdn = m
                    .opts()
                    .iter()
                    .any(|o| u16::from(OptionCode::from(o)) == 39);
                let want = !matches!(m.msg_type(), MessageType::Release | MessageType::Decline);
                assert_eq!(has_fqdn, want, "{:?}", m.msg_type());
            }
        }
    }

    #[tokio::test]
    async fn an_advertise_without_addresses_is_ignored_until_the_bound() {
        let server = FakeServer::new(Behaviour::NoAddrs);
        let mut c = Dhcp6Client::new(id(), &server);
        let t = Instant::now();
        let err = c.obtain(Duration::from_millis(1500)).await.unwrap_err();
        assert!(
            matches!(
                err,
                Dhcp6Error::Timeout {
                    exchange: "solicit",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "bounded by solicit_for"
        );
        assert!(server.seen.lock().unwrap().len() >= 2, "retransmitted");
    }

    #[tokio::test]
    async fn a_renewal_refused_is_an_error() {
        let server = FakeServer::new(Behaviour::NoBinding);
        let mut c = Dhcp6Client::new(id(), &server);
        let lease = c.obtain(Duration::from_secs(5)).await.unwrap();
        let err = c.renew(&lease).await.unwrap_err();
        assert!(
            matches!(
                err,
                Dhcp6Error::Status {
                    status: Status::NoBinding,
                    exchange: "renew",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn zero_timers_default_to_rfc_fractions() {
        let server = FakeServer::new(Behaviour::Serve);
        let mut req = Message::new(MessageType::Request);
        req.opts_mut().insert(DhcpOption::ClientId(vec![1]));
        req.opts_mut().insert(DhcpOption::IANA(IANA {
            id: 9,
            t1: 0,
            t2: 0,
            opts: DhcpOptions::new(),
        }));
        let mut reply = server.answer(&req).unwrap();
        if let Some(DhcpOption::IANA(ia)) = reply.opts_mut().get_mut(OptionCode::IANA) {
            ia.t1 = 0;
            ia.t2 = 0;
        }
        let l = lease_from_reply(&reply, 9, "request").unwrap();
        assert_eq!((l.t1, l.t2), (15, 24), "0.5 and 0.8 of preferred 30");
        assert!(
            lease_from_reply(&reply, 8, "request").is_err(),
            "another IAID"
        );
    }
}
