//! Join time with and without ICE-lite: for each mode a fresh release `fanfare` (config
//! `[rtc] ice_lite`), then `--rounds` WHIP publishes (POST -> peer connection `Connected`) and,
//! against one long-lived publisher, `--rounds` WHEP plays (POST -> first whole frame decoded
//! by the test client). Sequential, so each figure is one client's experience.
//!
//!   cargo build --release -p fanfare-api -p fanfare-bench
//!   unshare --net sh -c 'ip link set lo up; target/release/join-time --rounds 20'

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fanfare_tests::rtc_client::{WhepSubscriber, WhipPublisher};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    #[arg(long, default_value = "target/release/fanfare")]
    bin: PathBuf,
}

fn ms(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] * 1000.0
}

async fn run(args: &Args, lite: bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let dir = std::env::temp_dir().join(format!("fanfare-join-{}-{lite}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("fanfare.toml"), format!("[rtc]\nice_lite = {lite}\n"))?;
    let mut child = tokio::process::Command::new(&args.bin)
        .arg("--config")
        .arg(dir.join("fanfare.toml"))
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
    let (base, admin) = fanfare_bench::read_banner(child.stdout.take().context("stdout")?).await?;
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/groups"))
        .bearer_auth(&admin)
        .json(&json!({"id": "join", "name": "join"}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("create group: {}", r.status());
    }
    let wait = Duration::from_secs(10);
    let mut publish = Vec::new();
    for _ in 0..args.rounds {
        let t = Instant::now();
        let p = WhipPublisher::connect(&base, "/v1/whip?groups=join", &admin)
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        if !p.wait_connected(wait).await {
            bail!("publisher did not connect");
        }
        publish.push(t.elapsed().as_secs_f64());
        p.close().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let p = WhipPublisher::connect(&base, "/v1/whip?groups=join", &admin)
        .await
        .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    if !p.wait_connected(wait).await {
        bail!("publisher did not connect");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut play = Vec::new();
    for _ in 0..args.rounds {
        let t = Instant::now();
        let s = WhepSubscriber::connect(&base, "/v1/groups/join/whep", &admin)
            .await
            .map_err(|e| anyhow::anyhow!("play: {e}"))?;
        if !s.wait_frames(1, wait).await {
            bail!("no frame");
        }
        play.push(t.elapsed().as_secs_f64());
        s.close().await;
    }
    p.close().await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    publish.sort_by(f64::total_cmp);
    play.sort_by(f64::total_cmp);
    Ok((publish, play))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    println!("| ICE | publish: POST -> connected p50 / p90 | play: POST -> first frame p50 / p90 |");
    println!("|---|---|---|");
    for lite in [false, true] {
        let (publish, play) = run(&args, lite).await?;
        println!(
            "| {} | {:.0} / {:.0} ms | {:.0} / {:.0} ms |",
            if lite { "lite" } else { "full" },
            ms(&publish, 0.5),
            ms(&publish, 0.9),
            ms(&play, 0.5),
            ms(&play, 0.9)
        );
    }
    Ok(())
}
