//! `rtsp-ingest`: server CPU and memory per RTSP camera. One GStreamer RTSP camera
//! (`tests/rtsp/server.py`, shared media) is read K times: first by a fresh `fanfare` with K
//! ingests (RTSP over TCP, depacketize, repacketize, fan-out; no subscriber), then by K
//! `ffmpeg -rtsp_transport tcp -i URL -c copy -f hls` processes. Prints one markdown row per
//! (K, reader) on stdout, details on stderr. Every process it starts is stopped by PID.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Parser, Debug)]
#[command(about = "RTSP ingest: fanfare vs ffmpeg -c copy -f hls, CPU and RSS per camera")]
struct Args {
    /// Camera counts to run, comma-separated.
    #[arg(long, default_value = "1,10", value_delimiter = ',')]
    cameras: Vec<usize>,
    /// Measured seconds per run (after warm-up).
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Seconds between all readers being live and the measurement.
    #[arg(long, default_value_t = 5)]
    warmup_s: u64,
    /// The fanfare binary (default: target/release/fanfare).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Camera picture.
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Camera bitrate (x264enc kbit/s).
    #[arg(long, default_value_t = 2000)]
    kbps: u32,
    /// videotestsrc pattern (`snow` is incompressible: the encoder meets the bitrate).
    #[arg(long, default_value = "snow")]
    pattern: String,
    /// Skip the ffmpeg runs.
    #[arg(long)]
    no_ffmpeg: bool,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// utime + stime of `pid`, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// VmRSS of `pid`, in MB.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Stops a child we started: SIGTERM, then SIGKILL after 5 s.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// CPU (cores) and RSS (summed, MB: mean and peak) of `pids` over `secs`.
async fn measure(pids: &[u32], secs: u64) -> (f64, f64, f64) {
    let start: f64 = pids.iter().map(|p| cpu_s(*p)).sum();
    let t0 = Instant::now();
    let (mut sum, mut n, mut peak) = (0.0, 0u32, 0.0f64);
    while t0.elapsed() < Duration::from_secs(secs) {
        let rss: f64 = pids.iter().map(|p| rss_mb(*p)).sum();
        sum += rss;
        n += 1;
        peak = peak.max(rss);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu: f64 = pids.iter().map(|p| cpu_s(*p)).sum::<f64>() - start;
    (cpu / t0.elapsed().as_secs_f64(), sum / f64::from(n.max(1)), peak)
}

async fn start_camera(args: &Args, port: u16) -> Result<Child> {
    let mut child = Command::new("/usr/bin/python3")
        .arg(workspace().join("tests/rtsp/server.py"))
        .args(["--port", &port.to_string(), "--path", "/cam"])
        .args(["--width", &args.width.to_string(), "--height", &args.height.to_string()])
        .args(["--kbps", &args.kbps.to_string(), "--pattern", &args.pattern])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start tests/rtsp/server.py with /usr/bin/python3")?;
    let stdout = child.stdout.take().context("camera stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("READY") {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(ready, Ok(true)) {
        stop(&mut child).await;
        bail!("the camera did not start");
    }
    Ok(child)
}

struct Row {
    k: usize,
    reader: &'static str,
    cpu: f64,
    rss_mean: f64,
    rss_peak: f64,
    base_rss: f64,
    fps: f64,
    /// Media received per camera (frame payload), kbit/s.
    kbps: f64,
}

async fn run_fanfare(args: &Args, k: usize, url: &str) -> Result<Row> {
    let bin = args
        .server_bin
        .clone()
        .unwrap_or_else(|| workspace().join("target/release/fanfare"));
    let dir = std::env::temp_dir().join(format!("fanfare-bench-ingest-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("fanfare.toml"), "[log]\nlevel = \"warn\"\n")?;
    let mut server = Command::new(&bin)
        .arg("--config")
        .arg(dir.join("fanfare.toml"))
        .env("FANFARE_LISTEN", "127.0.0.1:0")
        .env("FANFARE_DATA_DIR", dir.join("data"))
        .env("FANFARE_ASSETS_DIR", workspace().join("assets"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let pid = server.id().context("server pid")?;
    let result = async {
        let (base, admin) = fanfare_bench::read_banner(server.stdout.take().context("stdout")?).await?;
        let http = reqwest::Client::new();
        let post = |path: &str, body: Value| {
            http.post(format!("{base}{path}"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
        };
        let st = post("/v1/groups", json!({"id": "bench", "name": "bench"}))
            .await?
            .status();
        if st.as_u16() != 201 {
            bail!("creating the group: {st}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let base_rss = rss_mb(pid);
        let mut ids = Vec::new();
        for i in 0..k {
            let v: Value = post(
                "/v1/ingests",
                json!({"url": url, "name": format!("cam{i}"), "groups": ["bench"]}),
            )
            .await?
            .json()
            .await?;
            ids.push(v["id"].as_str().context("ingest id")?.to_string());
        }
        let frames = |ids: Vec<String>| {
            let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
            async move {
                let mut live = 0;
                let mut frames = 0u64;
                let mut bytes = 0u64;
                for id in ids {
                    let v: Value = http
                        .get(format!("{base}/v1/ingests/{id}"))
                        .bearer_auth(&admin)
                        .send()
                        .await?
                        .json()
                        .await?;
                    live += usize::from(v["status"] == "live");
                    frames += v["frames"].as_u64().unwrap_or(0);
                    bytes += v["bytes"].as_u64().unwrap_or(0);
                }
                anyhow::Ok((live, frames, bytes))
            }
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while frames(ids.clone()).await?.0 < k {
            if Instant::now() > deadline {
                bail!("not every ingest went live within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;
        let (_, f0, b0) = frames(ids.clone()).await?;
        let t0 = Instant::now();
        let (cpu, rss_mean, rss_peak) = measure(&[pid], args.duration_s).await;
        let (_, f1, b1) = frames(ids.clone()).await?;
        let secs = t0.elapsed().as_secs_f64();
        let fps = (f1 - f0) as f64 / secs / k as f64;
        let kbps = (b1 - b0) as f64 * 8.0 / 1000.0 / secs / k as f64;
        Ok(Row {
            k,
            reader: "fanfare ingest",
            cpu,
            rss_mean,
            rss_peak,
            base_rss,
            fps,
            kbps,
        })
    }
    .await;
    stop(&mut server).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_ffmpeg(args: &Args, k: usize, url: &str) -> Result<Row> {
    let dir = std::env::temp_dir().join(format!("fanfare-bench-ffmpeg-{}-{k}", std::process::id()));
    let mut children = Vec::new();
    for i in 0..k {
        let out = dir.join(format!("cam{i}"));
        std::fs::create_dir_all(&out)?;
        let child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-loglevel",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                url,
                "-c",
                "copy",
                "-f",
                "hls",
            ])
            .args(["-hls_time", "2", "-hls_list_size", "5", "-hls_flags", "delete_segments"])
            .arg(out.join("index.m3u8"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start ffmpeg")?;
        children.push(child);
    }
    let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
    tokio::time::sleep(Duration::from_secs(args.warmup_s + 2)).await;
    let (cpu, rss_mean, rss_peak) = measure(&pids, args.duration_s).await;
    for c in &mut children {
        stop(c).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Row {
        k,
        reader: "ffmpeg -c copy -f hls",
        cpu,
        rss_mean,
        rss_peak,
        base_rss: 0.0,
        fps: f64::NAN,
        kbps: f64::NAN,
    })
}

fn print(r: &Row) {
    let per = |v: f64| v / r.k as f64;
    println!(
        "| {} | {} | {:.1}% | {:.2}% | {:.0} | {:.1} | {} | {} | {} |",
        r.k,
        r.reader,
        r.cpu * 100.0,
        per(r.cpu * 100.0),
        r.rss_peak,
        per(r.rss_mean - r.base_rss),
        if r.base_rss > 0.0 {
            format!("{:.0}", r.base_rss)
        } else {
            "-".into()
        },
        if r.fps.is_nan() {
            "-".into()
        } else {
            format!("{:.1}", r.fps)
        },
        if r.kbps.is_nan() {
            "-".into()
        } else {
            format!("{:.0}", r.kbps)
        },
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let port = free_port()?;
    let mut camera = start_camera(&args, port).await?;
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    eprintln!("camera {}x{} {} kbit/s at {url}", args.width, args.height, args.kbps);
    println!("| cameras | reader | CPU total | CPU per camera | RSS peak MB | RSS per camera MB | RSS idle MB | fps per camera | kbit/s per camera |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut result = Ok(());
    for &k in &args.cameras {
        match run_fanfare(&args, k, &url).await {
            Ok(r) => print(&r),
            Err(e) => {
                eprintln!("fanfare, {k} cameras: {e:#}");
                result = Err(e);
            }
        }
        if !args.no_ffmpeg {
            match run_ffmpeg(&args, k, &url).await {
                Ok(r) => print(&r),
                Err(e) => {
                    eprintln!("ffmpeg, {k} cameras: {e:#}");
                    result = Err(e);
                }
            }
        }
    }
    stop(&mut camera).await;
    result
}
