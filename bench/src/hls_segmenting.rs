//! hls-segmenting: CPU and memory of Fanfare's HLS segmenting (RTP -> `Depacketizer` ->
//! `Segmenter`, MPEG-TS segments and 200 ms parts in memory) against `ffmpeg -re -i in.ts -c copy
//! -f hls`, for N concurrent 1080p 4 Mbps H.264 streams.
//!
//! Both sides are paced in real time: each Fanfare stream is a thread that feeds one access unit
//! every 1/30 s (its RTP packets all at once), like `ffmpeg -re` reading the file. The input is
//! generated once with ffmpeg/libx264 into `target/bench-media/` (20 s, 2 s GOP, no B-frames).
//! Fanfare CPU comes from /proc/self/stat (utime+stime) over the run, RSS from VmRSS above the
//! idle baseline (sampled every 100 ms, peak); ffmpeg CPU and peak RSS per process come from
//! wait4's rusage (/proc/<pid>/stat sampling loses the last tick before exit).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use vod::depack::Depacketizer;
use vod::segment::{SegmentEvent, Segmenter, SegmenterConfig};

#[derive(Parser)]
struct Args {
    /// Comma-separated stream counts.
    #[arg(long, default_value = "1,10")]
    streams: String,
    /// Seconds of input (generated once).
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    /// Skip the ffmpeg comparison.
    #[arg(long)]
    no_ffmpeg: bool,
}

fn ticks() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime+stime of a process in seconds, from /proc/<pid>/stat.
fn proc_cpu(pid: &str) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = s.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11).context("utime")?.parse()?;
    let st: f64 = f.get(12).context("stime")?.parse()?;
    Ok((ut + st) / ticks())
}

/// VmRSS of a process in KiB.
fn proc_rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn media(seconds: u32) -> Result<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-media");
    std::fs::create_dir_all(&dir)?;
    let h264 = dir.join("in1080.h264");
    let ts = dir.join("in1080.ts");
    if !h264.exists() || !ts.exists() {
        eprintln!("generating {} s of 1080p30 4 Mbps H.264 ...", seconds);
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=1920x1080:rate=30")
            .args([
                "-t",
                &seconds.to_string(),
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-b:v",
                "4M",
            ])
            .args([
                "-maxrate",
                "4M",
                "-bufsize",
                "8M",
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-sc_threshold",
                "0",
            ])
            .args(["-bf", "0", "-pix_fmt", "yuv420p"])
            .arg(&h264)
            .status()?
            .success()
            && Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y", "-r", "30", "-i"])
                .arg(&h264)
                .args(["-c", "copy"])
                .arg(&ts)
                .status()?
                .success();
        if !ok {
            bail!("ffmpeg could not generate the input");
        }
    }
    Ok((h264, ts))
}

/// Annex-B file -> access units (Annex-B bytes each), split as tests/src/h264.rs does.
fn access_units(path: &Path) -> Result<Vec<Bytes>> {
    let data = Bytes::from(std::fs::read(path)?);
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut aus = Vec::new();
    let (mut cur, mut has_vcl) = (BytesMut::new(), false);
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map(|&n| n - 3).unwrap_or(data.len());
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end <= s {
            continue;
        }
        let nal = &data[s..end];
        let t = nal[0] & 0x1f;
        let vcl = (1..=5).contains(&t);
        let new = if vcl {
            has_vcl && nal.get(1).is_some_and(|b| b & 0x80 != 0)
        } else {
            has_vcl && matches!(t, 6..=9)
        };
        if new {
            aus.push(std::mem::take(&mut cur).freeze());
            has_vcl = false;
        }
        has_vcl |= vcl;
        cur.extend_from_slice(&[0, 0, 0, 1]);
        cur.extend_from_slice(nal);
    }
    if !cur.is_empty() {
        aus.push(cur.freeze());
    }
    Ok(aus)
}

fn packetize(aus: &[Bytes]) -> Result<Vec<Vec<rtp::Packet>>> {
    let mut pay = H264Payloader::default();
    let mut seq = 0u16;
    let mut out = Vec::new();
    for (i, au) in aus.iter().enumerate() {
        let payloads = pay.payload(1188, au)?;
        let n = payloads.len();
        out.push(
            payloads
                .into_iter()
                .enumerate()
                .map(|(k, payload)| {
                    seq = seq.wrapping_add(1);
                    rtp::Packet {
                        header: rtp::header::Header {
                            version: 2,
                            marker: k + 1 == n,
                            payload_type: 96,
                            sequence_number: seq,
                            timestamp: i as u32 * 3000,
                            ssrc: 1,
                            ..Default::default()
                        },
                        payload,
                    }
                })
                .collect(),
        );
    }
    Ok(out)
}

struct Row {
    cpu_core_pct: f64,
    rss_mib: f64,
}

fn run_fanfare(n: usize, pkts: &Arc<Vec<Vec<rtp::Packet>>>) -> Result<(Row, u64)> {
    let me = "self";
    let base_rss = proc_rss_kib(me);
    let cpu0 = proc_cpu(me)?;
    let t0 = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let segments = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..n {
        let pkts = pkts.clone();
        let segments = segments.clone();
        handles.push(std::thread::spawn(move || -> Result<()> {
            let mut d = Depacketizer::new("video/H264", 90000, 0, "")?;
            let mut s = Segmenter::new(SegmenterConfig::default());
            let start = Instant::now();
            let count = |ev: Vec<SegmentEvent>| {
                for e in ev {
                    if matches!(e, SegmentEvent::Segment(_)) {
                        segments.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            for (i, au) in pkts.iter().enumerate() {
                let due = start + Duration::from_micros(i as u64 * 1_000_000 / 30);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
                for p in au {
                    for f in d.push(p) {
                        count(s.push(f)?);
                    }
                }
            }
            count(s.finish()?);
            Ok(())
        }));
    }
    let mut peak = base_rss;
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(proc_rss_kib("self"));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("stream thread panicked"))??;
    }
    done.store(true, Ordering::Relaxed);
    peak = peak.max(sampler.join().unwrap_or(0));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu(me)? - cpu0;
    Ok((
        Row {
            cpu_core_pct: cpu / wall * 100.0 / n as f64,
            rss_mib: peak.saturating_sub(base_rss) as f64 / 1024.0 / n as f64,
        },
        segments.load(Ordering::Relaxed),
    ))
}

fn run_ffmpeg(n: usize, ts: &Path) -> Result<Row> {
    let out = tempfile_dir()?;
    let t0 = Instant::now();
    let mut pids = Vec::new();
    for k in 0..n {
        let dir = out.join(format!("s{k}"));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i"])
            .arg(ts)
            .args(["-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0"])
            .arg(dir.join("index.m3u8"))
            .spawn()?;
        pids.push(child.id() as i32);
        std::mem::forget(child); // reaped by wait4 below
    }
    let (mut cpu, mut maxrss_kib) = (0.0, 0u64);
    let mut walls = 0.0;
    for pid in pids {
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r != pid {
            bail!("wait4 failed");
        }
        walls = t0.elapsed().as_secs_f64();
        cpu += ru.ru_utime.tv_sec as f64
            + ru.ru_utime.tv_usec as f64 / 1e6
            + ru.ru_stime.tv_sec as f64
            + ru.ru_stime.tv_usec as f64 / 1e6;
        maxrss_kib += ru.ru_maxrss as u64;
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(Row {
        cpu_core_pct: cpu / walls * 100.0 / n as f64,
        rss_mib: maxrss_kib as f64 / 1024.0 / n as f64,
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("hls-segmenting-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (h264, ts) = media(args.seconds)?;
    let aus = access_units(&h264)?;
    let pkts = Arc::new(packetize(&aus)?);
    let bytes: usize = aus.iter().map(Bytes::len).sum();
    let secs = aus.len() as f64 / 30.0;
    println!(
        "input: {} AUs, {:.1} s, {:.2} Mbit/s, {} RTP packets per stream",
        aus.len(),
        secs,
        bytes as f64 * 8.0 / secs / 1e6,
        pkts.iter().map(Vec::len).sum::<usize>()
    );
    println!("| streams | fanfare CPU %/stream | fanfare RSS MiB/stream | ffmpeg CPU %/stream | ffmpeg RSS MiB/stream | CPU ratio |");
    println!("|---|---|---|---|---|---|");
    for n in args.streams.split(',').filter_map(|s| s.trim().parse::<usize>().ok()) {
        let (f, segs) = run_fanfare(n, &pkts)?;
        eprintln!("{n} streams: {segs} segments");
        if args.no_ffmpeg {
            println!("| {n} | {:.2} | {:.2} | - | - | - |", f.cpu_core_pct, f.rss_mib);
            continue;
        }
        let g = run_ffmpeg(n, &ts)?;
        println!(
            "| {n} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2}x |",
            f.cpu_core_pct,
            f.rss_mib,
            g.cpu_core_pct,
            g.rss_mib,
            f.cpu_core_pct / g.cpu_core_pct
        );
    }
    Ok(())
}
