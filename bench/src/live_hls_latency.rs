//! Live HLS latency: one WebRTC publisher (the test client looping the 360p30 H.264 fixture
//! with Opus) into a group, one LL-HLS client doing blocking part reloads like a player. Reports
//! the server's own figure, `fanfare_hls_part_delay_seconds` (a part's last frame reaching the
//! segmenter -> the part servable), and what the client sees: the gap between consecutive parts
//! becoming available (should be the part duration) and how long each blocking request waited.
//!
//! Run inside a loopback-only namespace (WebRTC), after a release build:
//!   cargo build --release -p fanfare-api -p fanfare-bench
//!   unshare --net sh -c 'ip link set lo up; target/release/live-hls-latency --seconds 30'

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fanfare_tests::rtc_client::WhipPublisher;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// How long to measure.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The server binary.
    #[arg(long, default_value = "target/release/fanfare")]
    bin: PathBuf,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `(count, sum, [(le, cumulative)])` of a Prometheus histogram in text format.
fn histogram(text: &str, name: &str) -> (f64, f64, Vec<(f64, f64)>) {
    let (mut count, mut sum, mut buckets) = (0.0, 0.0, Vec::new());
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if key == format!("{name}_count") {
            count = value;
        } else if key == format!("{name}_sum") {
            sum = value;
        } else if let Some(le) = key
            .strip_prefix(&format!("{name}_bucket{{le=\""))
            .and_then(|r| r.strip_suffix("\"}"))
        {
            buckets.push((le.parse().unwrap_or(f64::INFINITY), value));
        }
    }
    (count, sum, buckets)
}

/// The smallest bucket bound holding fraction `p` of the observations.
fn bucket_percentile(count: f64, buckets: &[(f64, f64)], p: f64) -> f64 {
    buckets
        .iter()
        .find(|(_, c)| *c >= count * p)
        .map(|(le, _)| *le)
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("fanfare-live-hls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut child = tokio::process::Command::new(&args.bin)
        .env("FANFARE_LISTEN", "127.0.0.1:0")
        .env("FANFARE_DATA_DIR", dir.join("data"))
        .env("FANFARE_RTC_IPS", "127.0.0.1")
        .env("FANFARE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", args.bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (base, admin) = fanfare_bench::read_banner(stdout).await?;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/groups"))
        .bearer_auth(&admin)
        .json(&json!({"id": "live", "name": "live"}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("create group: {}", r.status());
    }
    let publisher = WhipPublisher::connect(&base, "/v1/whip?groups=live", &admin)
        .await
        .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    if !publisher.wait_connected(Duration::from_secs(15)).await {
        bail!("publisher did not connect");
    }
    let playlist = format!("{base}/v1/groups/live/live/index.m3u8?token={admin}");
    let text = http.get(&playlist).send().await?.text().await?;
    // Follow the preload hint: ask for each next part with a blocking reload.
    let next_of = |text: &str| -> Option<(u64, u32)> {
        let hint = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))?;
        let name = hint.split(".ts").next()?;
        let (seg, part) = name.split_once('.')?;
        Some((seg.parse().ok()?, part.parse().ok()?))
    };
    let (mut msn, mut part) = next_of(&text).context("no preload hint")?;
    let (mut waits, mut gaps) = (Vec::new(), Vec::new());
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut last_arrival: Option<Instant> = None;
    while Instant::now() < end {
        let t = Instant::now();
        let text = http
            .get(format!("{playlist}&_HLS_msn={msn}&_HLS_part={part}"))
            .send()
            .await?
            .text()
            .await?;
        let now = Instant::now();
        waits.push(now.duration_since(t).as_secs_f64());
        if let Some(prev) = last_arrival {
            gaps.push(now.duration_since(prev).as_secs_f64());
        }
        last_arrival = Some(now);
        (msn, part) = next_of(&text).context("no preload hint")?;
    }
    let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
    let (count, sum, buckets) = histogram(&metrics, "fanfare_hls_part_delay_seconds");
    publisher.close().await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    waits.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    println!("parts observed by the server: {count}");
    println!(
        "server part delay: mean {:.1} ms, p50 <= {:.0} ms, p99 <= {:.0} ms",
        sum / count.max(1.0) * 1000.0,
        bucket_percentile(count, &buckets, 0.5) * 1000.0,
        bucket_percentile(count, &buckets, 0.99) * 1000.0
    );
    println!(
        "client: {} blocking part reloads; gap between parts p50 {:.0} ms p99 {:.0} ms; wait p50 {:.0} ms p99 {:.0} ms",
        waits.len(),
        percentile(&gaps, 0.5) * 1000.0,
        percentile(&gaps, 0.99) * 1000.0,
        percentile(&waits, 0.5) * 1000.0,
        percentile(&waits, 0.99) * 1000.0
    );
    Ok(())
}
