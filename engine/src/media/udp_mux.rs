//! One UDP port for every WebRTC peer connection (ICE UDP mux, `[rtc] udp_port`).
//!
//! `webrtc` 0.21 has no UDP mux; each connection binds its own sockets. This module owns the
//! shared sockets (one per rtc address, all on the configured port) and a receive task per
//! socket that demultiplexes datagrams: a known remote address goes to its peer connection; an
//! unknown one is accepted only as a STUN Binding request whose USERNAME starts with a
//! registered ICE ufrag (remembered from then on); anything else is dropped and counted.
//!
//! A peer connection is plugged in through its `webrtc` runtime ([`super::runtime`]): its
//! `wrap_udp_socket` asks its [`MuxSeat`] to drop the ephemeral socket the driver bound and hand
//! back a [`VirtualSocket`] that sends through the shared socket (via the
//! [`Outbox`](super::send_batch::Outbox)) and receives from a bounded queue the demux task fills. The driver still keys its socket (and so its host
//! candidate) by the ephemeral address, so [`super::Media::advertise`] rewrites the candidate
//! ports in the SDP the server sends to the shared port. Dropping the virtual socket (the
//! connection closed) unregisters its ufrag and remote addresses.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::mpsc;
use webrtc::runtime::{AsyncUdpSocket, EcnCodepoint, RecvMeta, Transmit, UdpSockRef};

use super::lock;
use super::send_batch::{Outbox, UdpOut};
use crate::error::EngineError;
use crate::metrics::EngineMetrics;

/// Datagrams queued for one peer connection before further ones are dropped.
const QUEUE: usize = 1024;
/// Peer connections one shared socket serves at most.
const MAX_PEERS: usize = 16_384;
/// Remote addresses remembered per peer connection (its candidates, a few NAT rebindings).
const MAX_ADDRS_PER_PEER: usize = 32;
/// Remote addresses remembered per shared socket.
const MAX_ADDRS: usize = 65_536;
/// Messages read per receive call (`recvmmsg`), each into a buffer that holds a whole GRO batch.
const RECV_BATCH: usize = 8;
const RECV_BUF: usize = 64 * 1024;
/// Socket buffer sizes asked for (best effort: the kernel caps them at `net.core.*mem_max`).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// ICE credential lengths (RFC 8839: ufrag >= 4, pwd >= 22 ice-chars).
const UFRAG_LEN: usize = 16;
const PWD_LEN: usize = 32;

/// Why the demux dropped a datagram (the `reason` label of `fanfare_rtc_mux_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dropped {
    /// From an unknown address, and not a Binding request for a registered ufrag.
    Unknown,
    /// The peer connection's queue was full.
    QueueFull,
}

/// The mux's instruments (registered with the engine's).
#[derive(Clone)]
struct MuxMetrics {
    unknown: IntCounter,
    queue_full: IntCounter,
    peers: IntGauge,
}

impl MuxMetrics {
    fn new(metrics: &EngineMetrics) -> Self {
        MuxMetrics {
            unknown: metrics.rtc_mux_dropped.with_label_values(&["unknown"]),
            queue_full: metrics.rtc_mux_dropped.with_label_values(&["queue_full"]),
            peers: metrics.rtc_mux_peers.clone(),
        }
    }

    fn dropped(&self, why: Dropped) {
        match why {
            Dropped::Unknown => self.unknown.inc(),
            Dropped::QueueFull => self.queue_full.inc(),
        }
    }
}

/// Random ICE credentials (ufrag, pwd) for one peer connection.
pub(crate) fn ice_credentials() -> (String, String) {
    let mut rng = rand::rng();
    (
        Alphanumeric.sample_string(&mut rng, UFRAG_LEN),
        Alphanumeric.sample_string(&mut rng, PWD_LEN),
    )
}

/// The shared sockets, one per rtc address; their receive tasks stop when this is dropped.
pub(crate) struct UdpMux {
    sockets: Vec<Arc<SharedSocket>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    next_owner: AtomicU64,
}

impl UdpMux {
    /// Binds `port` on every address of `ips` and starts the receive tasks on `handle`.
    pub(crate) fn bind(
        ips: &[IpAddr],
        port: u16,
        handle: &tokio::runtime::Handle,
        outbox: &Arc<Outbox>,
        metrics: &EngineMetrics,
    ) -> Result<UdpMux, EngineError> {
        let metrics = MuxMetrics::new(metrics);
        let mut sockets = Vec::with_capacity(ips.len());
        for ip in ips {
            let addr = SocketAddr::new(*ip, port);
            let socket = SharedSocket::bind(addr, handle, outbox.clone(), metrics.clone())
                .map_err(|e| EngineError::Media(format!("cannot bind rtc.udp_port on {addr}: {e}")))?;
            sockets.push(Arc::new(socket));
        }
        let tasks = sockets.iter().map(|s| handle.spawn(demux(s.clone()))).collect();
        Ok(UdpMux {
            sockets,
            tasks,
            next_owner: AtomicU64::new(1),
        })
    }

    /// The place of one peer connection whose local ICE ufrag is `ufrag`.
    pub(crate) fn seat(&self, ufrag: String) -> MuxSeat {
        MuxSeat {
            sockets: self.sockets.clone(),
            ufrag,
            owner: self.next_owner.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Drop for UdpMux {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for UdpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = self.sockets.iter().map(|s| s.local).collect();
        f.debug_struct("UdpMux").field("addrs", &addrs).finish()
    }
}

/// One received datagram on its way to a peer connection.
struct Datagram {
    from: SocketAddr,
    data: Bytes,
    ecn: Option<EcnCodepoint>,
    dst_ip: Option<IpAddr>,
}

/// Where datagrams for one virtual socket go.
#[derive(Clone)]
struct Route {
    /// The virtual socket's id.
    id: u64,
    tx: mpsc::Sender<Datagram>,
}

/// A registered ufrag.
struct Registration {
    route: Route,
    /// The [`MuxSeat`] that registered it (it may replace its own registration).
    owner: u64,
    /// Remote addresses learned for it.
    addrs: Vec<SocketAddr>,
}

/// The demux table of one shared socket.
#[derive(Default)]
struct Table {
    by_ufrag: HashMap<String, Registration>,
    by_addr: HashMap<SocketAddr, Route>,
}

impl Table {
    /// The route for a datagram from `from`, learning `from` when the datagram is a Binding
    /// request for a registered ufrag.
    fn route(&mut self, from: SocketAddr, data: &[u8]) -> Option<&Route> {
        if self.by_addr.contains_key(&from) {
            return self.by_addr.get(&from);
        }
        let ufrag = stun::binding_request_ufrag(data)?;
        let reg = self.by_ufrag.get_mut(ufrag)?;
        if reg.addrs.len() < MAX_ADDRS_PER_PEER && self.by_addr.len() < MAX_ADDRS {
            reg.addrs.push(from);
            self.by_addr.insert(from, reg.route.clone());
        }
        Some(&reg.route)
    }

    /// Registers `ufrag`; fails when another runtime holds it or the table is full.
    fn register(&mut self, ufrag: &str, owner: u64, route: Route) -> io::Result<()> {
        match self.by_ufrag.get(ufrag) {
            Some(reg) if reg.owner != owner => {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "ICE ufrag already registered"))
            }
            Some(_) => {
                self.unregister(ufrag, None);
            }
            None if self.by_ufrag.len() >= MAX_PEERS => {
                return Err(io::Error::other("too many peer connections on the shared UDP port"))
            }
            None => {}
        }
        let reg = Registration {
            route,
            owner,
            addrs: Vec::new(),
        };
        self.by_ufrag.insert(ufrag.to_owned(), reg);
        Ok(())
    }

    /// Removes `ufrag` and its addresses (only if it still routes to socket `id`, when given).
    /// Returns whether anything was removed.
    fn unregister(&mut self, ufrag: &str, id: Option<u64>) -> bool {
        let Some(reg) = self.by_ufrag.get(ufrag) else {
            return false;
        };
        if id.is_some_and(|id| id != reg.route.id) {
            return false;
        }
        let Some(reg) = self.by_ufrag.remove(ufrag) else {
            return false;
        };
        for addr in reg.addrs {
            if self.by_addr.get(&addr).is_some_and(|r| r.id == reg.route.id) {
                self.by_addr.remove(&addr);
            }
        }
        true
    }
}

/// One shared socket: the port every peer connection on its address uses.
struct SharedSocket {
    out: Arc<UdpOut>,
    outbox: Arc<Outbox>,
    local: SocketAddr,
    table: Mutex<Table>,
    metrics: MuxMetrics,
    next_id: AtomicU64,
}

impl SharedSocket {
    fn bind(
        addr: SocketAddr,
        handle: &tokio::runtime::Handle,
        outbox: Arc<Outbox>,
        metrics: MuxMetrics,
    ) -> io::Result<SharedSocket> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        let local = std_socket.local_addr()?;
        let out = {
            let _entered = handle.enter();
            UdpOut::new(std_socket)?
        };
        // Every connection's traffic goes through this one socket.
        let _ = out.state.set_recv_buffer_size(UdpSockRef::from(&out.io), SOCKET_BUFFER);
        let _ = out.state.set_send_buffer_size(UdpSockRef::from(&out.io), SOCKET_BUFFER);
        Ok(SharedSocket {
            out: Arc::new(out),
            outbox,
            local,
            table: Mutex::new(Table::default()),
            metrics,
            next_id: AtomicU64::new(1),
        })
    }

    /// A virtual socket for `ufrag`, registered in the table.
    fn attach(self: &Arc<Self>, ufrag: &str, owner: u64) -> io::Result<VirtualSocket> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut table = lock(&self.table);
            let replaced = table.by_ufrag.contains_key(ufrag);
            table.register(ufrag, owner, Route { id, tx })?;
            if !replaced {
                self.metrics.peers.inc();
            }
        }
        Ok(VirtualSocket {
            shared: self.clone(),
            id,
            ufrag: ufrag.to_owned(),
            rx: Mutex::new(rx),
        })
    }

    fn detach(&self, ufrag: &str, id: u64) {
        if lock(&self.table).unregister(ufrag, Some(id)) {
            self.metrics.peers.dec();
        }
    }

    /// Receives up to `bufs.len()` messages; `Ok(0)` never.
    async fn recv(&self, bufs: &mut [Vec<u8>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        std::future::poll_fn(|cx| self.out.poll_recv(cx, &mut slices, meta)).await
    }

    /// Hands one received message (possibly several GRO-coalesced datagrams) to its peers.
    fn dispatch(&self, buf: &[u8], meta: &RecvMeta) {
        let data = buf.get(..meta.len).unwrap_or(buf);
        for datagram in data.chunks(meta.stride.max(1)) {
            if let Err(why) = self.deliver(datagram, meta) {
                self.metrics.dropped(why);
            }
        }
    }

    fn deliver(&self, data: &[u8], meta: &RecvMeta) -> Result<(), Dropped> {
        let mut table = lock(&self.table);
        let route = table.route(meta.addr, data).ok_or(Dropped::Unknown)?;
        let datagram = Datagram {
            from: meta.addr,
            data: Bytes::copy_from_slice(data),
            ecn: meta.ecn,
            dst_ip: meta.dst_ip,
        };
        route.tx.try_send(datagram).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Dropped::QueueFull,
            // The virtual socket is being dropped; its entry goes with it.
            mpsc::error::TrySendError::Closed(_) => Dropped::Unknown,
        })
    }
}

/// The receive loop of one shared socket; runs until the mux is dropped.
async fn demux(socket: Arc<SharedSocket>) {
    let mut bufs = vec![vec![0u8; RECV_BUF]; RECV_BATCH];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    loop {
        match socket.recv(&mut bufs, &mut meta).await {
            Ok(n) => {
                for (buf, m) in bufs.iter().zip(&meta).take(n) {
                    socket.dispatch(buf, m);
                }
            }
            // An ICMP error for one remote: nothing to do with the socket.
            Err(e) if transient(&e) => {}
            Err(e) => {
                tracing::warn!(addr = %socket.local, "shared UDP port receive error: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock | TimedOut
    )
}

/// One peer connection's view of a shared socket.
pub(crate) struct VirtualSocket {
    shared: Arc<SharedSocket>,
    id: u64,
    ufrag: String,
    rx: Mutex<mpsc::Receiver<Datagram>>,
}

impl std::fmt::Debug for VirtualSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualSocket")
            .field("local", &self.shared.local)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for VirtualSocket {
    fn drop(&mut self) {
        self.shared.detach(&self.ufrag, self.id);
    }
}

/// Copies `d` into `buf` (truncating, as the kernel would) and describes it in `meta`.
fn fill(buf: &mut [u8], meta: &mut RecvMeta, d: &Datagram) {
    let n = d.data.len().min(buf.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), d.data.get(..n)) {
        dst.copy_from_slice(src);
    }
    *meta = RecvMeta::default();
    meta.addr = d.from;
    meta.len = n;
    meta.stride = n.max(1);
    meta.ecn = d.ecn;
    meta.dst_ip = d.dst_ip;
}

impl AsyncUdpSocket for VirtualSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.shared.local)
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.shared.outbox.queue(&self.shared.out, transmit)))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let max = bufs.len().min(meta.len());
        if max == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut rx = lock(&self.rx);
        let first = match rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the shared UDP port is closed",
                )))
            }
            Poll::Ready(Some(d)) => d,
        };
        let mut next = Some(first);
        let mut n = 0;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()).take(max) {
            let Some(d) = next.take().or_else(|| rx.try_recv().ok()) else {
                break;
            };
            fill(buf, m, &d);
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn max_gso_segments(&self) -> usize {
        // The outbox batches; the driver sends datagram by datagram.
        1
    }

    fn max_gro_segments(&self) -> usize {
        // The demux splits GRO batches; each queued datagram is one.
        1
    }
}

/// One peer connection's place on the shared sockets: its ICE ufrag and registration owner.
pub(crate) struct MuxSeat {
    sockets: Vec<Arc<SharedSocket>>,
    ufrag: String,
    owner: u64,
}

impl std::fmt::Debug for MuxSeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxSeat").field("owner", &self.owner).finish()
    }
}

impl MuxSeat {
    /// A virtual socket on the shared socket of `socket`'s address, dropping the ephemeral
    /// socket the driver bound; `Err(socket)` back when no shared socket has that address
    /// (e.g. mDNS).
    pub(crate) fn attach(&self, socket: std::net::UdpSocket) -> Result<io::Result<VirtualSocket>, std::net::UdpSocket> {
        let ip = match socket.local_addr() {
            Ok(addr) => addr.ip(),
            Err(e) => return Ok(Err(e)),
        };
        match self.sockets.iter().find(|s| s.local.ip() == ip) {
            Some(shared) => {
                drop(socket);
                Ok(shared.attach(&self.ufrag, self.owner))
            }
            None => Err(socket),
        }
    }
}

/// Just enough STUN (RFC 8489) to route a Binding request by its USERNAME.
pub(super) mod stun {
    const HEADER: usize = 20;
    const BINDING_REQUEST: u16 = 0x0001;
    const MAGIC_COOKIE: u32 = 0x2112_A442;
    const USERNAME: u16 = 0x0006;
    /// RFC 8489 14.3: USERNAME is less than 513 bytes.
    const MAX_USERNAME: usize = 513;

    fn be16(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
    }

    /// The receiver's ufrag (ours) from a Binding request's USERNAME `"<ours>:<theirs>"`, or
    /// `None` for anything else, malformed input included.
    pub(in crate::media) fn binding_request_ufrag(packet: &[u8]) -> Option<&str> {
        let header = packet.get(..HEADER)?;
        if be16(header, 0)? != BINDING_REQUEST {
            return None;
        }
        let cookie = u32::from_be_bytes(header.get(4..8)?.try_into().ok()?);
        let length = usize::from(be16(header, 2)?);
        if cookie != MAGIC_COOKIE || length % 4 != 0 {
            return None;
        }
        let mut attrs = packet.get(HEADER..HEADER + length)?;
        while !attrs.is_empty() {
            let kind = be16(attrs, 0)?;
            let len = usize::from(be16(attrs, 2)?);
            let value = attrs.get(4..4 + len)?;
            if kind == USERNAME {
                if len > MAX_USERNAME {
                    return None;
                }
                let (ours, _theirs) = std::str::from_utf8(value).ok()?.split_once(':')?;
                return (!ours.is_empty()).then_some(ours);
            }
            attrs = attrs.get(4 + len.next_multiple_of(4)..)?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::stun::binding_request_ufrag;
    use super::*;

    /// A Binding request with `attrs` ((type, value) pairs, padded).
    fn request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attrs {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn username_gives_our_ufrag() {
        let m = request(&[(0x8022, b"agent"), (0x0006, b"abcd:wxyz"), (0x0008, &[0; 20])]);
        assert_eq!(binding_request_ufrag(&m), Some("abcd"));
        // Padding after an odd-length USERNAME.
        let m = request(&[(0x0006, b"ours1:t")]);
        assert_eq!(binding_request_ufrag(&m), Some("ours1"));
        // Trailing bytes after the message (the header length bounds the attributes).
        let mut m = request(&[(0x0006, b"abcd:wxyz")]);
        m.extend_from_slice(&[0xff; 9]);
        assert_eq!(binding_request_ufrag(&m), Some("abcd"));
    }

    #[test]
    fn garbage_and_truncated_input_is_refused_without_panicking() {
        let good = request(&[(0x8022, b"agent"), (0x0006, b"abcd:wxyz")]);
        for end in 0..good.len() {
            assert_eq!(binding_request_ufrag(&good[..end]), None, "truncated at {end}");
        }
        let mut response = good.clone();
        response[1] = 0x01;
        response[0] = 0x01; // Binding success response
        assert_eq!(binding_request_ufrag(&response), None);
        let mut bad_cookie = good.clone();
        bad_cookie[4] ^= 1;
        assert_eq!(binding_request_ufrag(&bad_cookie), None);
        let mut odd_length = good.clone();
        odd_length[3] = odd_length[3].wrapping_add(1);
        assert_eq!(binding_request_ufrag(&odd_length), None);
        // An attribute claiming more than the message holds.
        let mut overlong = request(&[(0x0006, b"abcd:wxyz")]);
        overlong[23] = 0xff;
        assert_eq!(binding_request_ufrag(&overlong), None);
        assert_eq!(binding_request_ufrag(&request(&[(0x0006, b"nocolon")])), None);
        assert_eq!(binding_request_ufrag(&request(&[(0x0006, b":theirs")])), None);
        assert_eq!(
            binding_request_ufrag(&request(&[(0x0006, &[0xff, 0xfe, b':', b'a'])])),
            None
        );
        let mut long = vec![b'a'; 600];
        long[4] = b':';
        assert_eq!(binding_request_ufrag(&request(&[(0x0006, &long)])), None);
        assert_eq!(binding_request_ufrag(&request(&[(0x8022, b"agent")])), None);
        // Random bytes, some dressed as a Binding request header.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000 {
            let len = (i % 97) as usize;
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if i % 2 == 0 && b.len() >= 8 {
                b[..2].copy_from_slice(&[0, 1]);
                b[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
            let _ = binding_request_ufrag(&b);
        }
    }

    #[test]
    fn credentials_are_long_enough_ice_chars() {
        let (ufrag, pwd) = ice_credentials();
        assert!(ufrag.len() >= 4 && pwd.len() >= 22);
        assert!(ufrag.chars().chain(pwd.chars()).all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(ice_credentials().0, ufrag);
    }

    fn route(id: u64) -> (Route, mpsc::Receiver<Datagram>) {
        let (tx, rx) = mpsc::channel(4);
        (Route { id, tx }, rx)
    }

    #[test]
    fn table_learns_addresses_from_binding_requests_and_forgets_them() {
        let mut t = Table::default();
        let (r1, _rx1) = route(1);
        t.register("abcd", 10, r1).unwrap();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(t.route(from, b"not stun").is_none(), "unknown sender");
        let req = request(&[(0x0006, b"zzzz:wxyz")]);
        assert!(t.route(from, &req).is_none(), "unknown ufrag");
        let req = request(&[(0x0006, b"abcd:wxyz")]);
        assert_eq!(t.route(from, &req).map(|r| r.id), Some(1));
        assert_eq!(t.route(from, b"dtls now").map(|r| r.id), Some(1), "address learned");
        // Another runtime cannot take the ufrag; the same one may re-register (a rebind).
        let (r2, _rx2) = route(2);
        assert!(t.register("abcd", 11, r2.clone()).is_err());
        t.register("abcd", 10, r2).unwrap();
        assert!(
            t.route(from, b"dtls").is_none(),
            "the old socket's addresses went with it"
        );
        assert!(
            !t.unregister("abcd", Some(1)),
            "a stale socket leaves the new one alone"
        );
        assert!(t.unregister("abcd", Some(2)));
        assert!(t.by_ufrag.is_empty() && t.by_addr.is_empty());
    }

    async fn recv(socket: &Arc<dyn AsyncUdpSocket>) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2000];
        let got = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await;
        let (n, from) = got.expect("a datagram in time").expect("recv");
        (buf[..n].to_vec(), from)
    }

    #[tokio::test]
    async fn virtual_sockets_share_one_port() {
        let metrics = EngineMetrics::unregistered();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let handle = tokio::runtime::Handle::current();
        let outbox = Outbox::start(&handle, &metrics);
        let mux = UdpMux::bind(&[ip], 0, &handle, &outbox, &metrics).unwrap();
        let shared = mux.sockets[0].local;
        let wrap = |ufrag: &str| -> Arc<dyn AsyncUdpSocket> {
            let placeholder = std::net::UdpSocket::bind((ip, 0)).unwrap();
            Arc::new(mux.seat(ufrag.into()).attach(placeholder).unwrap().unwrap())
        };
        let (a, b) = (wrap("ufraga"), wrap("ufragb"));
        assert_eq!(a.local_addr().unwrap(), shared);
        assert_eq!(metrics.rtc_mux_peers.get(), 2);
        let c1 = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        let c2 = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();

        c1.send_to(b"before any binding request", shared).await.unwrap();
        let req = request(&[(0x0006, b"ufraga:c1")]);
        c1.send_to(&req, shared).await.unwrap();
        assert_eq!(recv(&a).await, (req.clone(), c1.local_addr().unwrap()));
        c1.send_to(b"dtls", shared).await.unwrap();
        assert_eq!(recv(&a).await.0, b"dtls");
        c2.send_to(&request(&[(0x0006, b"ufragb:c2")]), shared).await.unwrap();
        assert_eq!(recv(&b).await.1, c2.local_addr().unwrap());
        let unknown = metrics.rtc_mux_dropped.with_label_values(&["unknown"]);
        assert_eq!(unknown.get(), 1);

        // Sends leave from the shared port.
        a.send_to(b"reply", c1.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = c1.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], shared));

        // A batched receive returns what is queued, one datagram per message.
        for d in [&b"1"[..], b"22", b"333"] {
            c1.send_to(d, shared).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (mut x, mut y, mut z) = ([0u8; 8], [0u8; 8], [0u8; 8]);
        let mut meta = [RecvMeta::default(); 3];
        let n = futures_util::future::poll_fn(|cx| {
            let mut bufs = [
                IoSliceMut::new(&mut x),
                IoSliceMut::new(&mut y),
                IoSliceMut::new(&mut z),
            ];
            a.poll_recv(cx, &mut bufs, &mut meta)
        })
        .await
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(meta.map(|m| (m.len, m.stride)), [(1, 1), (2, 2), (3, 3)]);

        // A closed connection takes its ufrag and addresses with it.
        drop(a);
        assert_eq!(metrics.rtc_mux_peers.get(), 1);
        c1.send_to(b"late", shared).await.unwrap();
        c1.send_to(&req, shared).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(unknown.get(), 3);
        drop(b);
        assert_eq!(metrics.rtc_mux_peers.get(), 0);
        let table = lock(&mux.sockets[0].table);
        assert!(table.by_ufrag.is_empty() && table.by_addr.is_empty());
    }

    #[test]
    fn addresses_per_peer_are_bounded() {
        let mut t = Table::default();
        let (r, _rx) = route(1);
        t.register("abcd", 1, r).unwrap();
        let req = request(&[(0x0006, b"abcd:wxyz")]);
        for port in 1..=100u16 {
            let from = SocketAddr::from(([127, 0, 0, 1], port));
            assert!(t.route(from, &req).is_some(), "binding requests still get through");
        }
        assert_eq!(t.by_addr.len(), MAX_ADDRS_PER_PEER);
    }
}
