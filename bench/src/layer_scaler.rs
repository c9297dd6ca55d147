//! layer-scaler: what re-encoding video costs the server, on one thread (thread CPU time per
//! frame, and the share of a core at 30 fps):
//! - a scaled layer (`engine::track::scaled`, `vod::scale::Downscaler`): the 720p30 H.264
//!   fixture's RTP decoded, scaled down and encoded again (libx264 constrained baseline,
//!   veryfast, zerolatency) for two cap sizes;
//! - an H.265 camera's H.264 companion: 1080p30 H.265 (libx265 through the ffmpeg CLI, made
//!   once under `target/bench-media/`) decoded and encoded H.264 at its own size within 720p.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use engine::track::scaled::{default_kbps, ScaleSpec};
use fanfare_tests::h264::{read_access_units, simulcast_fixtures, split_annexb, Packetizer};
use rtc::rtp;
use vod::scale::Downscaler;

#[derive(Parser)]
struct Args {
    /// Frames re-encoded per row (the source is looped).
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

/// The 720p fixture's frames as RTP (rtc's H.264 payloader), `n` of them.
fn h264_720p(n: usize) -> Result<Vec<Vec<rtp::Packet>>> {
    let (_, path) = simulcast_fixtures().pop().context("no 720p fixture")?;
    let aus = read_access_units(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut packetizer = Packetizer::new(96, 1, 0);
    (0..n)
        .map(|i| {
            packetizer
                .packetize(&aus[i % aus.len()], (i as u32).wrapping_mul(3000))
                .map_err(anyhow::Error::msg)
        })
        .collect()
}

/// 1080p30 H.265 (2 s, a keyframe each second, no B-frames) as RTP, one NAL unit per packet
/// (the depacketizer takes any size), `n` frames, looped.
fn h265_1080p(n: usize) -> Result<Vec<Vec<rtp::Packet>>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-media");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("1080p30.hevc");
    if !path.exists() {
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=1920x1080:rate=30:duration=2")
            .args(["-c:v", "libx265", "-preset", "veryfast", "-b:v", "4M", "-x265-params"])
            .arg("keyint=30:min-keyint=30:bframes=0:repeat-headers=1:log-level=error")
            .args(["-f", "hevc"])
            .arg(&path)
            .status()?
            .success();
        if !ok {
            bail!("ffmpeg could not make {}", path.display());
        }
    }
    let data = Bytes::from(std::fs::read(&path)?);
    // One slice per picture: a VCL NAL unit (type < 32) ends its access unit.
    let mut pictures: Vec<Vec<Bytes>> = vec![Vec::new()];
    for nal in split_annexb(&data) {
        let vcl = nal.first().is_some_and(|h| (h >> 1) & 0x3f < 32);
        if let Some(p) = pictures.last_mut() {
            p.push(nal);
        }
        if vcl {
            pictures.push(Vec::new());
        }
    }
    pictures.retain(|p| !p.is_empty());
    let mut seq = 0u16;
    let mut frames = Vec::with_capacity(n);
    for i in 0..n {
        let nals = &pictures[i % pictures.len()];
        let last = nals.len() - 1;
        let frame = nals
            .iter()
            .enumerate()
            .map(|(k, nal)| {
                seq = seq.wrapping_add(1);
                rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: k == last,
                        payload_type: 96,
                        sequence_number: seq,
                        timestamp: (i as u32).wrapping_mul(3000),
                        ssrc: 1,
                        ..Default::default()
                    },
                    payload: nal.clone(),
                }
            })
            .collect();
        frames.push(frame);
    }
    Ok(frames)
}

/// Re-encodes `frames` with `spec`; prints a table row.
fn row(source: &str, frames: &[Vec<rtp::Packet>], spec: ScaleSpec) -> Result<()> {
    let mut scaler = Downscaler::new(&spec)?;
    let (start, mut out) = (thread_cpu(), 0usize);
    for frame in frames {
        for pkt in frame {
            let made = scaler.push_packet(pkt, false)?;
            out += made.iter().filter(|p| p.header.marker).count();
        }
    }
    let per_frame = (thread_cpu() - start).as_secs_f64() / frames.len() as f64;
    let size = if spec.width == 0 {
        "own size, within 720p".to_owned()
    } else {
        format!("{}x{}", spec.width, spec.height)
    };
    let codec = spec.out_mime.trim_start_matches("video/");
    println!(
        "| {source} | {codec} {size} | {} | {} | {out} | {:.0} | {:.1} % |",
        if spec.kbps == 0 {
            "auto".to_owned()
        } else {
            spec.kbps.to_string()
        },
        frames.len(),
        per_frame * 1e6,
        per_frame * 30.0 * 100.0
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("| source | made | kbps | frames in | frames out | µs CPU / frame | core at 30 fps |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let h264 = h264_720p(args.frames)?;
    for (w, h) in [(640, 360), (320, 180)] {
        let spec = ScaleSpec {
            mime: "video/H264".into(),
            out_mime: "video/H264".into(),
            width: w,
            height: h,
            kbps: default_kbps(w, h),
        };
        row("1280x720 H.264", &h264, spec)?;
    }
    let h265 = h265_1080p(args.frames)?;
    let companion = ScaleSpec {
        mime: "video/H265".into(),
        out_mime: "video/H264".into(),
        width: 0,
        height: 0,
        kbps: 0,
    };
    row("1920x1080 H.265", &h265, companion)?;
    Ok(())
}
