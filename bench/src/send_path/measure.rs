//! The harness: the stream sent (720p30 H.264 at about 2 Mbps, as `sfu-fanout`'s publisher),
//! the simulated clock it is sent on, and the figures: thread CPU time per packet per peer, and
//! resident memory per pair (a server peer and its client) once the retransmission histories
//! are full. Memory freed by one run is reused by the next in the same process, so memory
//! figures want one stack and one peer count per run.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Per-packet send cost of the rtc and str0m WebRTC stacks, in memory")]
struct Args {
    /// Stacks to run, comma-separated: rtc, str0m.
    #[arg(long, default_value = "rtc,str0m", value_delimiter = ',')]
    stacks: Vec<String>,
    /// Peer counts to run, comma-separated.
    #[arg(long, default_value = "1,50,200", value_delimiter = ',')]
    peers: Vec<usize>,
    /// Seconds of media sent before measuring (fills the retransmission histories).
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Seconds of media measured. The str0m servers are ICE-lite and, as no client answers
    /// while the stream is sent, drop their connection 15 s after setup: keep warm-up plus
    /// seconds under 15.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Packets str0m keeps per video stream to answer NACKs from (default: str0m's own, 1000;
    /// the engine's `rtc` history, as in the rtc stack, is 256).
    #[arg(long)]
    str0m_send_buffer: Option<usize>,
    /// Also send every datagram the server peers produce through the kernel (see [`wire`]), so
    /// the figure is the stack plus its UDP sends.
    #[arg(long)]
    udp: bool,
}

/// Frames per second of the stream.
pub const FPS: u32 = 30;
/// RTP payload bytes per packet (as a browser or GStreamer packetises H.264).
pub const PAYLOAD: usize = 1_200;
/// Payload type, SSRC and RTP clock of the stream both stacks send.
pub const PT: u8 = 102;
pub const SSRC: u32 = 0x5EED_0001;
pub const CLOCK_HZ: u32 = 90_000;

/// One RTP packet of the stream, as the SFU's fan-out hands it to a viewer's stack.
pub struct Packet<'a> {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
    /// Where the simulated clock stands when it is sent.
    pub now: Instant,
}

/// What a stack produced while sending.
#[derive(Default, Clone, Copy)]
pub struct Sent {
    pub datagrams: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, o: Sent) {
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
    }
}

/// N server-side peer connections of one stack, established, each sending one video track.
pub trait Stack {
    /// Hands `pkt` to every server peer, lets each stack run its timers up to `pkt.now`, and
    /// drains (counts, then drops) every datagram the server peers produce.
    fn send_all(&mut self, pkt: &Packet<'_>) -> Result<Sent>;
    /// Sends one more packet and delivers the server's datagrams to the clients this time:
    /// returns how many clients decrypted an RTP packet with that payload.
    fn verify(&mut self, pkt: &Packet<'_>) -> Result<usize>;
}

/// The stream, shaped like `sfu-fanout`'s fixture: frame `f` is a keyframe every 2 s (28 kB),
/// otherwise 8 kB (about 2 Mbit/s, 218 packets a second).
fn frame_packets(f: u64) -> usize {
    let bytes: usize = if f.is_multiple_of(2 * u64::from(FPS)) {
        28_000
    } else {
        8_000
    };
    bytes.div_ceil(PAYLOAD)
}

/// Sends `seconds` of the stream from packet `*seq` on, with the simulated clock advancing from
/// `*now` at the stream's pace.
fn send_stream(
    stack: &mut dyn Stack,
    seconds: u64,
    seq: &mut u16,
    now: &mut Instant,
    payload: &[u8],
) -> Result<(u64, Sent)> {
    let mut packets = 0;
    let mut sent = Sent::default();
    let frame_time = Duration::from_secs(1) / FPS;
    for f in 0..seconds * u64::from(FPS) {
        let timestamp = (f as u32).wrapping_mul(CLOCK_HZ / FPS);
        let n = frame_packets(f);
        for i in 0..n {
            let pkt = Packet {
                seq: *seq,
                timestamp,
                marker: i + 1 == n,
                payload,
                now: *now,
            };
            sent += stack.send_all(&pkt)?;
            *seq = seq.wrapping_add(1);
            packets += 1;
        }
        *now += frame_time;
    }
    Ok((packets, sent))
}

/// Datagrams sent per `sendmmsg` with `--udp` (the engine's outbox flushes at 64 too).
const WIRE_BATCH: usize = 64;

/// The kernel side of `--udp`: datagrams are copied into a queue (as the engine's outbox
/// copies them) and sent `WIRE_BATCH` at a time with `sendmmsg` from one non-blocking socket
/// to a loopback socket that nobody reads (once its buffer is full the kernel drops there,
/// after the whole send path has run).
struct Wire {
    socket: std::net::UdpSocket,
    _sink: std::net::UdpSocket,
    dest: libc::sockaddr_in,
    queue: Vec<Vec<u8>>,
    sent: u64,
    failed: u64,
}

impl Wire {
    fn new() -> Result<Wire> {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        let port = sink.local_addr()?.port();
        // SAFETY: an all-zero sockaddr_in is valid; the fields are set below.
        let mut dest: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        dest.sin_family = libc::AF_INET as libc::sa_family_t;
        dest.sin_port = port.to_be();
        dest.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        Ok(Wire {
            socket,
            _sink: sink,
            dest,
            queue: Vec::with_capacity(WIRE_BATCH),
            sent: 0,
            failed: 0,
        })
    }

    fn push(&mut self, datagram: &[u8]) {
        self.queue.push(datagram.to_vec());
        if self.queue.len() == WIRE_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        use std::os::fd::AsRawFd;
        let mut iovs: Vec<libc::iovec> = self
            .queue
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is valid; name and iov are set below.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = &mut self.dest as *mut libc::sockaddr_in as *mut libc::c_void;
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut done = 0;
        while done < msgs.len() {
            // SAFETY: `msgs[done..]` point at live iovecs and buffers and at `self.dest`.
            let n = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (msgs.len() - done) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                // A full socket buffer: what is left is dropped, as the engine's outbox does.
                self.failed += (msgs.len() - done) as u64;
                break;
            }
            done += n as usize;
            self.sent += n as u64;
        }
        self.queue.clear();
    }
}

thread_local! {
    static WIRE: std::cell::RefCell<Option<Wire>> = const { std::cell::RefCell::new(None) };
}

/// A stack hands every datagram its server peers produce here: with `--udp` it goes through
/// the kernel ([`Wire`]), otherwise nowhere.
pub fn wire(datagram: &[u8]) {
    WIRE.with(|w| {
        if let Some(w) = w.borrow_mut().as_mut() {
            w.push(datagram);
        }
    });
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Resident set of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn run(name: &str, peers: usize, args: &Args) -> Result<()> {
    let rss0 = rss_bytes();
    let t_setup = Instant::now();
    let (mut stack, mut now): (Box<dyn Stack>, Instant) = match name {
        "rtc" => crate::rtc_stack::setup(peers)?,
        "str0m" => crate::str0m_stack::setup(peers, args.str0m_send_buffer)?,
        other => bail!("unknown stack {other} (rtc, str0m)"),
    };
    let setup_s = t_setup.elapsed().as_secs_f64();
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 + 3) as u8).collect();
    let mut seq = 1000u16;
    send_stream(stack.as_mut(), args.warmup_s, &mut seq, &mut now, &payload)?;
    let rss = rss_bytes().saturating_sub(rss0);
    if args.udp {
        let w = Wire::new()?;
        WIRE.with(|slot| *slot.borrow_mut() = Some(w));
    }
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    let (packets, sent) = send_stream(stack.as_mut(), args.seconds, &mut seq, &mut now, &payload)?;
    let cpu = thread_cpu() - cpu0;
    if let Some(w) = WIRE.with(|slot| slot.borrow_mut().take()) {
        eprintln!(
            "{name}, {peers} peers: {} datagrams through the kernel, {} dropped at a full socket buffer",
            w.sent, w.failed
        );
    }
    let wall = wall0.elapsed();
    let verify = Packet {
        seq,
        timestamp: 0,
        marker: true,
        payload: &payload,
        now,
    };
    let verified = stack.verify(&verify)?;
    let sends = packets as f64 * peers as f64;
    let us_per_send = cpu.as_secs_f64() * 1e6 / sends;
    // The share of a core this cost takes at the stream's real rate.
    let pps = packets as f64 / args.seconds as f64;
    println!(
        "| {name}{} | {peers} | {:.2} | {:.3} | {:.2} | {:.0} | {:.1} | {verified}/{peers} |",
        if args.udp { " + UDP" } else { "" },
        us_per_send,
        us_per_send * pps * peers as f64 / 1e6,
        sent.datagrams as f64 / sends,
        rss as f64 / peers as f64 / 1024.0,
        setup_s,
    );
    eprintln!(
        "{name}, {peers} peers: {packets} packets × {peers} in {:.2} s CPU ({:.2} s wall), {} datagrams, {} bytes on the wire",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        sent.datagrams,
        sent.bytes
    );
    if verified != peers {
        bail!("{name}: only {verified} of {peers} clients decrypted the last packet");
    }
    Ok(())
}

/// Runs every stack at every peer count, printing one markdown table row each.
pub fn main() -> Result<()> {
    let args = Args::parse();
    println!("| stack | peers | CPU µs per packet per peer | core at 2 Mbps 720p30 | datagrams per send | RSS KB per pair | setup s | clients decrypting |");
    println!("|---|---|---|---|---|---|---|---|");
    for peers in &args.peers {
        for stack in &args.stacks {
            run(stack, *peers, &args)?;
        }
    }
    Ok(())
}
