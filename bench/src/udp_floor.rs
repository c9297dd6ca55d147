//! `udp-floor`: the kernel's share of fanning a video stream out to N viewers on one core, with
//! no WebRTC, no SRTP and no RTP work at all. It is the floor under the SFU's added latency in
//! `sfu-fanout`: however cheap a server makes its own work, each datagram to each viewer still
//! crosses the kernel once.
//!
//! One thread sends `sfu-fanout`'s stream shape (30 fps; a 2 s GOP whose keyframe is 24
//! datagrams and whose other frames are 8; 1,228-byte datagrams, an SRTP-protected 1,188-byte
//! payload) from one socket (as the shared media port does) to N receiving sockets, each frame
//! leg by leg: with UDP GSO, one `sendto` per viewer per frame (what Fanfare's outbox does with
//! a whole frame), or without it, one per datagram. Each datagram's "latency" is the time
//! from the frame's start until the `sendto` that carried it returned: on a local address the
//! kernel has then also delivered it to the receiving socket. The receivers are drained between
//! frames (not timed) and every datagram is counted. Run it pinned to one core, as the SFU is:
//!
//! ```sh
//! cargo build --release -p fanfare-bench --bin udp-floor
//! taskset -c 0 target/release/udp-floor --legs 1,10,50,100,200
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "The kernel's share of a one-core fan-out: sendto costs and the latency floor per viewer count")]
struct Args {
    /// Viewer counts, comma-separated.
    #[arg(long, default_value = "1,10,50,100,200", value_delimiter = ',')]
    legs: Vec<usize>,
    /// The local address to send to and from (`sfu-fanout` uses its veth address).
    #[arg(long, default_value = "127.0.0.1")]
    ip: std::net::IpAddr,
    /// Seconds of stream per viewer count (30 frames a second).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Send each datagram with its own `sendto` (no GSO).
    #[arg(long)]
    no_gso: bool,
}

/// Bytes of one datagram: a 12-byte RTP header, 1,188 bytes of payload, SRTP's 16-byte tag and
/// a 12-byte header extension.
const DATAGRAM: usize = 1228;
/// Datagrams in a keyframe and in any other frame (`sfu-fanout`'s fixture: 28 kB and 8.5 kB).
const KEYFRAME: usize = 24;
const DELTA: usize = 8;
/// Frames per GOP and per second.
const GOP: usize = 60;
const FPS: u64 = 30;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Makes every send on `socket` a GSO send of `segment`-byte datagrams.
fn set_gso(socket: &UdpSocket, segment: usize) -> Result<()> {
    let value = segment as libc::c_int;
    // SAFETY: a valid socket and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("UDP_SEGMENT: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The `q` quantile of sorted `v`, in ms.
fn quantile_ms(v: &[Duration], q: f64) -> f64 {
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

struct Row {
    legs: usize,
    cpu_us_per_datagram: f64,
    cores: f64,
    latency: Vec<Duration>,
    keyframe_done: Vec<Duration>,
    lost: u64,
}

fn run(args: &Args, legs: usize) -> Result<Row> {
    let sender = UdpSocket::bind(SocketAddr::new(args.ip, 0)).context("bind the sender")?;
    if !args.no_gso {
        set_gso(&sender, DATAGRAM)?;
    }
    let mut receivers = Vec::with_capacity(legs);
    for _ in 0..legs {
        let r = UdpSocket::bind(SocketAddr::new(args.ip, 0)).context("bind a receiver")?;
        r.set_nonblocking(true)?;
        receivers.push(r);
    }
    let addrs: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr()).collect::<Result<_, _>>()?;
    let frame = vec![0x80u8; DATAGRAM * KEYFRAME];
    let mut sink = vec![0u8; 65536];
    let frames = args.seconds as usize * FPS as usize;
    let mut latency = Vec::with_capacity(frames * DELTA * legs);
    let mut keyframe_done = Vec::new();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut cpu = Duration::ZERO;
    let start = Instant::now();
    for f in 0..frames {
        let due = start + Duration::from_micros(f as u64 * 1_000_000 / FPS);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let n = if f % GOP == 0 { KEYFRAME } else { DELTA };
        let bytes = &frame[..n * DATAGRAM];
        let (c0, t0) = (thread_cpu(), Instant::now());
        for addr in &addrs {
            if args.no_gso {
                for d in bytes.chunks(DATAGRAM) {
                    sender.send_to(d, addr).context("sendto")?;
                    latency.push(t0.elapsed());
                }
            } else {
                sender.send_to(bytes, addr).context("sendto (GSO)")?;
                let done = t0.elapsed();
                latency.extend(std::iter::repeat_n(done, n));
            }
            sent += n as u64;
        }
        if n == KEYFRAME {
            keyframe_done.push(t0.elapsed());
        }
        cpu += thread_cpu() - c0;
        for r in &receivers {
            while let Ok(len) = r.recv(&mut sink) {
                received += (len / DATAGRAM).max(1) as u64;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    latency.sort();
    keyframe_done.sort();
    Ok(Row {
        legs,
        cpu_us_per_datagram: cpu.as_secs_f64() * 1e6 / sent as f64,
        cores: cpu.as_secs_f64() / wall,
        latency,
        keyframe_done,
        lost: sent - received.min(sent),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!(
        "| viewers | sends | CPU µs per datagram | cores (sending only) | datagram done p50 / p99 ms | keyframe to all viewers, max ms | lost |"
    );
    println!("|---:|---|---:|---:|---|---:|---:|");
    for &legs in &args.legs {
        let r = run(&args, legs)?;
        println!(
            "| {} | {} | {:.2} | {:.3} | {:.2} / {:.2} | {:.2} | {} |",
            r.legs,
            if args.no_gso {
                "one per datagram"
            } else {
                "GSO, one per viewer per frame"
            },
            r.cpu_us_per_datagram,
            r.cores,
            quantile_ms(&r.latency, 0.5),
            quantile_ms(&r.latency, 0.99),
            r.keyframe_done.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            r.lost,
        );
    }
    Ok(())
}
