//! level-meter: what measuring the loudness of audio that carries no level costs the server
//! (`vod::level_meter`, one FFmpeg decode per packet), per packet and per track at 50 packets a
//! second, for the codecs a WHIP encoder or a camera sends: Opus (a tone from libopus, 20 ms
//! packets) and G.711 (160-byte, 20 ms). Single thread, thread CPU time.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use vod::level_meter::LevelMeter;

#[derive(Parser)]
struct Args {
    /// Packets measured per codec.
    #[arg(long, default_value_t = 50_000)]
    packets: usize,
}

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn run(name: &str, mime: &str, channels: u16, packets: &[Bytes], n: usize) -> Result<()> {
    let mut meter = LevelMeter::for_rtp(mime, channels).with_context(|| format!("no meter for {mime}"))?;
    let (start, mut measured) = (thread_cpu(), 0usize);
    for i in 0..n {
        measured += usize::from(meter.measure(&packets[i % packets.len()]).is_some());
    }
    let per_packet = (thread_cpu() - start).as_secs_f64() / n as f64;
    println!(
        "| {name} | {n} | {measured} | {:.1} | {:.3} % |",
        per_packet * 1e6,
        per_packet * 50.0 * 100.0
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let opus = fanfare_tests::opus::tone_packets();
    // mu-law of a 400 Hz square wave, 160 samples (20 ms at 8 kHz).
    let g711: Vec<Bytes> = vec![Bytes::from(
        (0..160)
            .map(|i| if (i / 10) % 2 == 0 { 0x90 } else { 0x10 })
            .collect::<Vec<u8>>(),
    )];
    println!("| codec | packets | measured | µs CPU / packet | core per track (50 packets/s) |");
    println!("|---|---:|---:|---:|---:|");
    run(
        "Opus 48 kHz stereo, 32 kbit/s tone",
        "audio/opus",
        2,
        &opus,
        args.packets,
    )?;
    run("PCMU 8 kHz", "audio/PCMU", 1, &g711, args.packets)?;
    Ok(())
}
