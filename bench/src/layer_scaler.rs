//! layer-scaler: what a scaled layer (`engine::track::scaled`, `vod::scale::Downscaler`) costs
//! the server: the 720p30 H.264 fixture's RTP decoded, scaled down and encoded again (libx264
//! constrained baseline, veryfast, zerolatency) for each cap size, on one thread. Reports
//! thread CPU time per frame and the share of a core at 30 fps.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use engine::track::scaled::{default_kbps, ScaleSpec};
use fanfare_tests::h264::{read_access_units, simulcast_fixtures, Packetizer};
use vod::scale::Downscaler;

#[derive(Parser)]
struct Args {
    /// Frames scaled per size (the fixture is looped).
    #[arg(long, default_value_t = 900)]
    frames: usize,
}

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (_, path) = simulcast_fixtures().pop().context("no 720p fixture")?;
    let aus = read_access_units(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut packetizer = Packetizer::new(96, 1, 0);
    let mut frames = Vec::with_capacity(args.frames);
    for i in 0..args.frames {
        let pkts = packetizer
            .packetize(&aus[i % aus.len()], (i as u32).wrapping_mul(3000))
            .map_err(anyhow::Error::msg)?;
        frames.push(pkts);
    }
    println!("| source | scaled to | kbps | frames in | frames out | µs CPU / frame | core at 30 fps |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (w, h) in [(640, 360), (320, 180)] {
        let kbps = default_kbps(w, h);
        let spec = ScaleSpec {
            mime: "video/H264".into(),
            out_mime: "video/H264".into(),
            width: w,
            height: h,
            kbps,
        };
        let mut scaler = Downscaler::new(&spec)?;
        let (start, mut out) = (thread_cpu(), 0usize);
        for frame in &frames {
            for pkt in frame {
                let made = scaler.push_packet(pkt, false)?;
                out += made.iter().filter(|p| p.header.marker).count();
            }
        }
        let per_frame = (thread_cpu() - start).as_secs_f64() / frames.len() as f64;
        println!(
            "| 1280x720 H.264 | {w}x{h} | {kbps} | {} | {out} | {:.0} | {:.1} % |",
            frames.len(),
            per_frame * 1e6,
            per_frame * 30.0 * 100.0
        );
    }
    Ok(())
}
