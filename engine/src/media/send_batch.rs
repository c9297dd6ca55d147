//! Outgoing datagrams of every peer connection, sent in batches.
//!
//! A connection hands its socket one datagram per RTP packet a subscriber leg writes, so a
//! room with N viewers would cost a `sendmsg` per packet per viewer. Here the sockets of every
//! connection ([`OwnSocket`], and the shared port's virtual sockets; under a publisher's
//! `webrtc` driver or a viewer's connection, `viewer_peer.rs`) only queue a copy in the
//! process-wide [`Outbox`] and return. The queue is sent when it holds [`FLUSH_AT`] datagrams
//! (by the producer that filled it, so a burst leaves in steps and not all at its end) and
//! otherwise by a task woken when the first one is queued. The fan-out writes a burst leg by
//! leg, so each viewer's share of it is queued back to back. A send groups the datagrams by
//! socket and destination (order kept within each) and sends a group's run of equal-sized
//! datagrams (a frame's packets to one viewer) as one UDP GSO `sendmsg`, the rest one by one.
//! Only one send runs at a time, so datagrams to one destination leave in the order they were
//! queued. Sends never wait: UDP may drop, so a full queue or socket buffer drops and counts
//! (`fanfare_rtc_send_dropped_total`).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use prometheus::IntCounter;
use tokio::io::Interest;
use tokio::sync::Notify;
use webrtc::runtime::{AsyncUdpSocket, EcnCodepoint, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

use super::lock;
use crate::metrics::EngineMetrics;

/// Bytes queued at most between two sends (a 200-viewer keyframe is about 6 MB).
const MAX_QUEUED_BYTES: usize = 16 << 20;
/// The queue is sent by the producer once it holds this many datagrams...
const FLUSH_AT: usize = 64;
/// ... or this many bytes.
const FLUSH_AT_BYTES: usize = 64 * 1024;
/// The kernel's limit on one GSO send (one UDP datagram's worth of payload).
const MAX_GSO_BYTES: usize = 65_535;
/// Queue capacity kept after a send (bytes); a larger one left by a burst is released.
const KEEP_CAPACITY: usize = 1 << 20;

/// A bound UDP socket the outbox sends on, with its GSO/ECN state.
pub(crate) struct UdpOut {
    pub(crate) io: tokio::net::UdpSocket,
    pub(crate) state: UdpSocketState,
}

impl UdpOut {
    /// Wraps a bound std socket (made non-blocking). Must run inside the media runtime.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<UdpOut> {
        socket.set_nonblocking(true)?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let state = UdpSocketState::new(UdpSockRef::from(&io))?;
        Ok(UdpOut { io, state })
    }

    /// Datagrams the kernel takes in one GSO send on this socket (1: no GSO).
    fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Sends `t` now; `WouldBlock` when the socket's buffer is full. Straight to the socket,
    /// not through tokio's readiness (which a new socket only learns at the reactor's next
    /// turn): nothing waits for this socket to become writable.
    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        self.state.try_send(UdpSockRef::from(&self.io), t)
    }

    /// Receives up to `bufs.len()` messages (quinn-udp: `recvmmsg`, GRO).
    pub(crate) fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.io.poll_recv_ready(cx))?;
            // Through `try_io`, so tokio learns when the socket ran dry.
            let got = self.io.try_io(Interest::READABLE, || {
                match self.state.recv(UdpSockRef::from(&self.io), bufs, meta)? {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                }
            });
            match got {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// The outbox's instruments.
#[derive(Clone)]
struct OutboxMetrics {
    sends: IntCounter,
    datagrams: IntCounter,
    dropped: IntCounter,
}

/// Datagrams waiting to be sent: their bytes back to back, and where each goes.
#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

struct Item {
    out: Arc<UdpOut>,
    dest: SocketAddr,
    src_ip: Option<IpAddr>,
    ecn: Option<EcnCodepoint>,
    start: usize,
    len: usize,
}

impl Item {
    /// Datagrams of one group go to the same place from the same socket.
    fn group(&self) -> (usize, SocketAddr, Option<IpAddr>, Option<u8>) {
        (
            Arc::as_ptr(&self.out) as usize,
            self.dest,
            self.src_ip,
            self.ecn.map(|e| e as u8),
        )
    }
}

/// What a send works with; behind the lock that lets one send run at a time.
#[derive(Default)]
struct Sender {
    batch: Queue,
    order: Vec<usize>,
    scratch: Vec<u8>,
}

/// The process-wide queue of outgoing datagrams and its flush task.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    sender: Mutex<Sender>,
    /// The flush task has been woken and has not yet looked at the queue.
    armed: AtomicBool,
    wake: Notify,
    metrics: OutboxMetrics,
}

impl Outbox {
    /// An outbox whose flush task runs on `handle`.
    pub(crate) fn start(handle: &tokio::runtime::Handle, metrics: &EngineMetrics) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            queue: Mutex::new(Queue::default()),
            sender: Mutex::new(Sender::default()),
            armed: AtomicBool::new(false),
            wake: Notify::new(),
            metrics: OutboxMetrics {
                sends: metrics.rtc_send_calls.clone(),
                datagrams: metrics.rtc_sent_datagrams.clone(),
                dropped: metrics.rtc_send_dropped.clone(),
            },
        });
        handle.spawn(flush_loop(outbox.clone()));
        outbox
    }

    /// Queues `t` (split into its segments if it has a segment size) to go out on `out`;
    /// returns the bytes taken, as a socket would.
    pub(crate) fn queue(&self, out: &Arc<UdpOut>, t: &Transmit<'_>) -> usize {
        let len = t.contents.len();
        let seg = t.segment_size.unwrap_or(len).max(1);
        let full = {
            let mut q = lock(&self.queue);
            if q.bytes.len() + len > MAX_QUEUED_BYTES {
                drop(q);
                self.metrics.dropped.inc_by(len.div_ceil(seg) as u64);
                return len;
            }
            for datagram in t.contents.chunks(seg) {
                let start = q.bytes.len();
                q.bytes.extend_from_slice(datagram);
                q.items.push(Item {
                    out: out.clone(),
                    dest: t.destination,
                    src_ip: t.src_ip,
                    ecn: t.ecn,
                    start,
                    len: datagram.len(),
                });
            }
            q.items.len() >= FLUSH_AT || q.bytes.len() >= FLUSH_AT_BYTES
        };
        if !self.armed.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
        // Unless a send is running (it will come back for these).
        if full {
            if let Ok(mut sender) = self.sender.try_lock() {
                self.send_queued(&mut sender);
            }
        }
        len
    }

    /// Sends what is queued now; `false` when there was nothing.
    fn send_queued(&self, sender: &mut Sender) -> bool {
        std::mem::swap(&mut *lock(&self.queue), &mut sender.batch);
        if sender.batch.items.is_empty() {
            return false;
        }
        let Sender { batch, order, scratch } = sender;
        send_batch(batch, &self.metrics, order, scratch);
        batch.items.clear();
        batch.bytes.clear();
        if batch.bytes.capacity() > KEEP_CAPACITY {
            batch.bytes.shrink_to(KEEP_CAPACITY);
        }
        if scratch.capacity() > MAX_GSO_BYTES {
            *scratch = Vec::new();
        }
        true
    }
}

/// Sends what the producers left queued, each time one queues into an empty outbox; runs as
/// long as the process.
async fn flush_loop(outbox: Arc<Outbox>) {
    loop {
        outbox.wake.notified().await;
        outbox.armed.store(false, Ordering::Release);
        let mut rounds = 0;
        while outbox.send_queued(&mut lock(&outbox.sender)) {
            rounds += 1;
            if rounds % 16 == 0 {
                // Producers keep it busy: let the other tasks of this worker run.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Sends one batch: per group in queue order, equal-sized runs as GSO sends.
fn send_batch(batch: &Queue, metrics: &OutboxMetrics, order: &mut Vec<usize>, scratch: &mut Vec<u8>) {
    let items = &batch.items;
    order.clear();
    order.extend(0..items.len());
    // A stable sort: queue order within each group.
    order.sort_by_key(|&i| items[i].group());
    let data = |item: &Item| batch.bytes.get(item.start..item.start + item.len).unwrap_or_default();
    let mut i = 0;
    while i < order.len() {
        let first = &items[order[i]];
        let run = gso_run(items, &order[i..], first.out.max_segments());
        let contents: &[u8] = if run == 1 {
            data(first)
        } else {
            scratch.clear();
            for &k in &order[i..i + run] {
                scratch.extend_from_slice(data(&items[k]));
            }
            scratch
        };
        let t = Transmit {
            destination: first.dest,
            ecn: first.ecn,
            contents,
            segment_size: (run > 1).then_some(first.len),
            src_ip: first.src_ip,
        };
        metrics.sends.inc();
        match first.out.try_send(&t) {
            Ok(()) => metrics.datagrams.inc_by(run as u64),
            Err(e) => {
                // A full socket buffer, or an ICMP error for a peer that left.
                tracing::trace!(dest = %first.dest, "send failed: {e}");
                metrics.dropped.inc_by(run as u64);
            }
        }
        i += run;
    }
}

/// The length of the GSO run starting at `order[0]` (segment size: that item's length):
/// following items of the same group with the same size, the last one possibly shorter, within
/// the kernel's limits.
fn gso_run(items: &[Item], order: &[usize], max_segments: usize) -> usize {
    let first = &items[order[0]];
    let seg = first.len;
    let mut run = 1;
    let mut total = seg;
    if seg == 0 {
        return 1;
    }
    for &k in &order[1..] {
        let next = &items[k];
        if run == max_segments || next.group() != first.group() || next.len > seg || total + next.len > MAX_GSO_BYTES {
            break;
        }
        run += 1;
        total += next.len;
        if next.len < seg {
            break;
        }
    }
    run
}

/// A peer connection's own UDP socket whose sends go through the [`Outbox`].
pub(crate) struct OwnSocket {
    out: Arc<UdpOut>,
    outbox: Arc<Outbox>,
}

impl OwnSocket {
    /// Wraps the socket a connection driver bound.
    pub(crate) fn new(socket: std::net::UdpSocket, outbox: Arc<Outbox>) -> io::Result<OwnSocket> {
        Ok(OwnSocket {
            out: Arc::new(UdpOut::new(socket)?),
            outbox,
        })
    }
}

impl std::fmt::Debug for OwnSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnSocket").field("io", &self.out.io).finish()
    }
}

impl AsyncUdpSocket for OwnSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.out.io.local_addr()
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.outbox.queue(&self.out, transmit)))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.out.poll_recv(cx, bufs, meta)
    }

    fn max_gso_segments(&self) -> usize {
        // The outbox batches; the driver sends datagram by datagram.
        1
    }

    fn max_gro_segments(&self) -> usize {
        self.out.state.gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bind() -> std::net::UdpSocket {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    async fn recv_all(rx: &tokio::net::UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2048];
        while got.len() < n {
            let len = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf))
                .await
                .expect("datagram in time")
                .unwrap();
            got.push(buf[..len].to_vec());
        }
        got
    }

    /// Datagram `i` of a stream: its size and a recognisable payload.
    fn datagram(stream: u8, i: u16, len: usize) -> Vec<u8> {
        let mut d = vec![stream; len];
        d[..2].copy_from_slice(&i.to_be_bytes());
        d
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interleaved_streams_arrive_whole_and_in_order_in_fewer_sends() {
        let metrics = EngineMetrics::unregistered();
        let outbox = Outbox::start(&tokio::runtime::Handle::current(), &metrics);
        let a = Arc::new(UdpOut::new(bind()).unwrap());
        let b = Arc::new(UdpOut::new(bind()).unwrap());
        let rx1 = tokio::net::UdpSocket::from_std({
            let s = bind();
            s.set_nonblocking(true).unwrap();
            s
        })
        .unwrap();
        let rx2 = tokio::net::UdpSocket::from_std({
            let s = bind();
            s.set_nonblocking(true).unwrap();
            s
        })
        .unwrap();
        let (d1, d2) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
        // Frames of 7 full packets and a short one, interleaved across two receivers and two
        // sockets, as a fan-out writes them; plus a datagram larger than the runs' size.
        let mut want1 = Vec::new();
        let mut want2 = Vec::new();
        for i in 0..64u16 {
            let len = if i % 8 == 7 { 300 } else { 1200 };
            let (p1, p2) = (datagram(1, i, len), datagram(2, i, if i == 20 { 1400 } else { len }));
            for (out, dest, p) in [(&a, d1, &p1), (&b, d2, &p2)] {
                let t = Transmit {
                    destination: dest,
                    ecn: None,
                    contents: p,
                    segment_size: None,
                    src_ip: None,
                };
                assert_eq!(outbox.queue(out, &t), p.len());
            }
            want1.push(p1);
            want2.push(p2);
        }
        assert_eq!(recv_all(&rx1, 64).await, want1);
        assert_eq!(recv_all(&rx2, 64).await, want2);
        assert_eq!(metrics.rtc_sent_datagrams.get(), 128);
        assert_eq!(metrics.rtc_send_dropped.get(), 0);
        if a.max_segments() > 1 {
            assert!(
                metrics.rtc_send_calls.get() < 64,
                "{} sends",
                metrics.rtc_send_calls.get()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transmit_with_segments_is_split_and_a_dead_destination_is_only_counted() {
        let metrics = EngineMetrics::unregistered();
        let outbox = Outbox::start(&tokio::runtime::Handle::current(), &metrics);
        let out = Arc::new(UdpOut::new(bind()).unwrap());
        let rx = tokio::net::UdpSocket::from_std({
            let s = bind();
            s.set_nonblocking(true).unwrap();
            s
        })
        .unwrap();
        let contents: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let t = Transmit {
            destination: rx.local_addr().unwrap(),
            ecn: None,
            contents: &contents,
            segment_size: Some(100),
            src_ip: None,
        };
        assert_eq!(outbox.queue(&out, &t), 250);
        let got = recv_all(&rx, 3).await;
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(got.concat(), contents);
        // A port nobody listens on: the ICMP error is the next send's, never a panic.
        let dead = bind().local_addr().unwrap();
        for _ in 0..3 {
            let t = Transmit {
                destination: dead,
                ecn: None,
                contents: b"x",
                segment_size: None,
                src_ip: None,
            };
            outbox.queue(&out, &t);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = Transmit {
            destination: rx.local_addr().unwrap(),
            ecn: None,
            contents: b"still here",
            segment_size: None,
            src_ip: None,
        };
        outbox.queue(&out, &t);
        let got = recv_all(&rx, 1).await;
        assert_eq!(got[0], b"still here");
    }
}
