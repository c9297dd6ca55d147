//! The harness: the stream sent (720p30 H.264 at about 2 Mbps, as `sfu-fanout`'s publisher),
//! the simulated clock it is sent on, and the figures: thread CPU time per packet per peer, and
//! resident memory per peer once the retransmission histories are full.

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
    /// Seconds of media measured.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
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
    let bytes: usize = if f.is_multiple_of(2 * u64::from(FPS)) { 28_000 } else { 8_000 };
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
        "str0m" => crate::str0m_stack::setup(peers)?,
        other => bail!("unknown stack {other} (rtc, str0m)"),
    };
    let setup_s = t_setup.elapsed().as_secs_f64();
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 + 3) as u8).collect();
    let mut seq = 1000u16;
    send_stream(stack.as_mut(), args.warmup_s, &mut seq, &mut now, &payload)?;
    let rss = rss_bytes().saturating_sub(rss0);
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    let (packets, sent) = send_stream(stack.as_mut(), args.seconds, &mut seq, &mut now, &payload)?;
    let cpu = thread_cpu() - cpu0;
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
    // One core's worth of packets at this cost, against the stream's real rate.
    let pps = packets as f64 / args.seconds as f64;
    println!(
        "| {name} | {peers} | {:.2} | {:.3} | {:.2} | {:.0} | {:.1} | {verified}/{peers} |",
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
    println!("| stack | peers | CPU µs per packet per peer | core at 2 Mbps 720p30 | datagrams per send | RSS KB per peer | setup s | clients decrypting |");
    println!("|---|---|---|---|---|---|---|---|");
    for peers in &args.peers {
        for stack in &args.stacks {
            run(stack, *peers, &args)?;
        }
    }
    Ok(())
}
