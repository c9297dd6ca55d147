//! `rtsp-ingest`: server CPU and memory per RTSP camera, with live HLS on. One GStreamer RTSP
//! camera (`tests/rtsp/file_server.py`: a pre-encoded 1080p30 4 Mbit/s H.264 file, looped
//! without re-encoding, shared media) is read K times: first by a fresh `fanfare` with K ingests,
//! each into its own group whose live HLS program runs (RTSP over TCP, depacketize, repacketize,
//! fan-out, segment into LL-HLS in memory), then by K `ffmpeg -rtsp_transport tcp -i URL -c copy
//! -f hls` processes. Prints one markdown row per (K, reader) on stdout, details on stderr.
//! Every process it starts is stopped by PID.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Parser, Debug)]
#[command(about = "RTSP ingest with live HLS: fanfare vs ffmpeg -c copy -f hls, CPU and RSS per camera")]
struct Args {
    /// Camera counts to run, comma-separated.
    #[arg(long, default_value = "1,10,50", value_delimiter = ',')]
    cameras: Vec<usize>,
    /// Measured seconds per run (after warm-up).
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Seconds between all readers being live (and, for fanfare, every live playlist being
    /// served) and the measurement.
    #[arg(long, default_value_t = 5)]
    warmup_s: u64,
    /// The fanfare binary (default: target/release/fanfare).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The camera's file: raw H.264 (Annex B), no B-frames. Default:
    /// target/bench-media/1080p-4M.h264, encoded once with ffmpeg/libx264 when missing.
    #[arg(long)]
    media: Option<PathBuf>,
    /// Seconds between requests of each group's live playlist (the program stops 30 s after
    /// the last request).
    #[arg(long, default_value_t = 10)]
    playlist_every_s: u64,
    /// Extra seconds after every live program has started, before the warm-up, so the live
    /// windows (6 segments; with this camera's 2 s GOP, 12 s of media) are full when measuring.
    #[arg(long, default_value_t = 15)]
    hls_fill_s: u64,
    /// Leave live HLS off (ingest only: the breakdown of fanfare's cost).
    #[arg(long)]
    no_live_hls: bool,
    /// Skip the ffmpeg runs.
    #[arg(long)]
    no_ffmpeg: bool,
    /// Skip the fanfare runs.
    #[arg(long)]
    no_fanfare: bool,
    /// The server's media threads (`rtc.threads`; default: the server's default).
    #[arg(long)]
    rtc_threads: Option<usize>,
    /// Also measure K `retina-read` processes: retina alone reading each camera (the floor
    /// under any ingest built on it).
    #[arg(long)]
    retina_floor: bool,
    /// Also measure K `retina-read --packets` processes: retina's session alone, its RTP
    /// packets not depacketized.
    #[arg(long)]
    retina_packets_floor: bool,
    /// The retina-read binary (default: target/release/retina-read).
    #[arg(long)]
    retina_bin: Option<PathBuf>,
    /// Also measure K `rtsp-bare-read` processes: the fewest steps any RTSP reader takes
    /// (blocking reads, interleaved frames split, nothing depacketized): the floor under any
    /// ingest, whatever its crate.
    #[arg(long)]
    bare_floor: bool,
    /// The rtsp-bare-read binary (default: target/release/rtsp-bare-read).
    #[arg(long)]
    bare_bin: Option<PathBuf>,
    /// Runs per camera count, fanfare and ffmpeg alternating; with more than one, a summary
    /// table of medians follows (single runs at K = 1 move by ±20 %).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU time of `pid`, in seconds: the sum of its threads' run times from
/// `/proc/<pid>/task/*/schedstat` (nanoseconds; threads that ended are not counted, and every
/// process measured here keeps its threads), else utime + stime (10 ms ticks: ±1 tick is
/// ±0.05 % over 20 s, about a tenth of one camera's cost).
fn cpu_s(pid: u32) -> f64 {
    schedstat_s(pid).unwrap_or_else(|| stat_s(pid))
}

fn schedstat_s(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// utime + stime of `pid`, in seconds.
fn stat_s(pid: u32) -> f64 {
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
    status_mb(pid, "VmRSS:")
}

/// RssAnon of `pid` (heap, arenas, stacks: the data it holds, without the pages of its code
/// and libraries), in MB.
fn anon_mb(pid: u32) -> f64 {
    status_mb(pid, "RssAnon:")
}

/// A kB field of `/proc/{pid}/status`, in MB.
fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
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

/// What [`measure`] saw.
struct Usage {
    /// Cores.
    cpu: f64,
    /// Summed RSS, MB: mean and peak.
    rss_mean: f64,
    rss_peak: f64,
    /// Summed RssAnon, MB, mean.
    anon_mean: f64,
    /// The camera server's cores.
    cam_cpu: f64,
}

/// CPU and memory of `pids` over `secs`, and the camera server's CPU over the same time.
async fn measure(pids: &[u32], camera: u32, secs: u64) -> Usage {
    let start: f64 = pids.iter().map(|p| cpu_s(*p)).sum();
    let cam0 = cpu_s(camera);
    let t0 = Instant::now();
    let (mut sum, mut anon, mut n, mut peak) = (0.0, 0.0, 0u32, 0.0f64);
    while t0.elapsed() < Duration::from_secs(secs) {
        let rss: f64 = pids.iter().map(|p| rss_mb(*p)).sum();
        anon += pids.iter().map(|p| anon_mb(*p)).sum::<f64>();
        sum += rss;
        n += 1;
        peak = peak.max(rss);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu: f64 = pids.iter().map(|p| cpu_s(*p)).sum::<f64>() - start;
    let wall = t0.elapsed().as_secs_f64();
    Usage {
        cpu: cpu / wall,
        rss_mean: sum / f64::from(n.max(1)),
        rss_peak: peak,
        anon_mean: anon / f64::from(n.max(1)),
        cam_cpu: (cpu_s(camera) - cam0) / wall,
    }
}

/// The camera's file: 20 s of 1080p30 at 4 Mbit/s (noise on the test pattern, so the encoder
/// really spends the bitrate), 2 s GOP, no B-frames. Encoded once, cached under target/.
fn media(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.media {
        return Ok(p.clone());
    }
    let dir = workspace().join("target/bench-media");
    let path = dir.join("1080p-4M.h264");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("encoding {} (20 s of 1080p30, 4 Mbit/s) ...", path.display());
    let tmp = dir.join(format!("1080p-4M.{}.tmp.h264", std::process::id()));
    let ok = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=1920x1080:rate=30")
        .args(["-t", "20", "-vf", "noise=alls=20:allf=t"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M"])
        .args(["-maxrate", "4M", "-bufsize", "8M", "-g", "60"])
        .args(["-keyint_min", "60", "-sc_threshold", "0", "-bf", "0"])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&tmp)
        .status()
        .context("run ffmpeg")?
        .success();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        bail!("ffmpeg could not encode the camera's file");
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

async fn start_camera(file: &Path, port: u16) -> Result<Child> {
    let mut child = Command::new("/usr/bin/python3")
        .arg(workspace().join("tests/rtsp/file_server.py"))
        .args(["--port", &port.to_string(), "--path", "/cam"])
        .arg("--file")
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start tests/rtsp/file_server.py with /usr/bin/python3")?;
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

/// What the camera delivers, by `ffprobe` (one more RTSP reader for a few seconds).
async fn probe_camera(url: &str) -> Result<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-i", url])
        .args(["-read_intervals", "%+6", "-show_entries"])
        .args(["stream=width,height,r_frame_rate:packet=size", "-of", "csv=p=0"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .context("ffprobe timed out")??;
    let text = String::from_utf8_lossy(&out.stdout);
    // Packet lines are `size`, the stream line is `width,height,rate`.
    let (mut frames, mut bytes, mut stream) = (0u64, 0u64, String::new());
    for l in text.lines().map(|l| l.trim_end_matches(',')) {
        if let Ok(b) = l.parse::<u64>() {
            frames += 1;
            bytes += b;
        } else if l.contains('/') {
            stream = l.replace(',', " ");
        }
    }
    Ok(format!(
        "{stream}; {frames} frames, {:.0} kbit/s over the first 6 s",
        bytes as f64 * 8.0 / 6.0 / 1000.0
    ))
}

struct Row {
    k: usize,
    reader: &'static str,
    usage: Usage,
    base_rss: f64,
    base_anon: f64,
    fps: f64,
    /// Media received per camera (frame payload), kbit/s.
    kbps: f64,
}

/// One live playlist request; the text on 200.
async fn get_playlist(http: &reqwest::Client, url: &str) -> Result<String> {
    let r = http.get(url).send().await?;
    let st = r.status();
    let text = r.text().await?;
    if !st.is_success() {
        bail!("{st}: {}", text.chars().take(200).collect::<String>());
    }
    Ok(text)
}

/// Checks that a live playlist lists parts and that one part downloads as MPEG-TS.
async fn check_parts(http: &reqwest::Client, playlist_url: &str, text: &str) -> Result<String> {
    let parts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .collect();
    let Some(uri) = parts.last() else {
        bail!("the live playlist lists no parts:\n{text}");
    };
    let dir = playlist_url
        .split('?')
        .next()
        .and_then(|u| u.rsplit_once('/'))
        .map(|(d, _)| d)
        .context("playlist url")?;
    let url = if uri.starts_with("http") {
        uri.to_string()
    } else {
        format!("{dir}/{uri}")
    };
    let r = http.get(&url).send().await?;
    let st = r.status();
    let body = r.bytes().await?;
    if !st.is_success() || body.first() != Some(&0x47) || body.len() % 188 != 0 {
        bail!("part {uri}: {st}, {} bytes, first byte {:?}", body.len(), body.first());
    }
    Ok(format!(
        "{} parts listed; part {uri}: {} bytes of MPEG-TS",
        parts.len(),
        body.len()
    ))
}

async fn run_fanfare(args: &Args, k: usize, url: &str, camera: u32) -> Result<Row> {
    let bin = args
        .server_bin
        .clone()
        .unwrap_or_else(|| workspace().join("target/release/fanfare"));
    let dir = std::env::temp_dir().join(format!("fanfare-bench-ingest-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut config = String::from("[log]\nlevel = \"warn\"\n");
    if let Some(n) = args.rtc_threads {
        config.push_str(&format!("[rtc]\nthreads = {n}\n"));
    }
    std::fs::write(dir.join("fanfare.toml"), config)?;
    let log = dir.join("server.log");
    let mut server = Command::new(&bin)
        .arg("--config")
        .arg(dir.join("fanfare.toml"))
        .env("FANFARE_LISTEN", "127.0.0.1:0")
        .env("FANFARE_DATA_DIR", dir.join("data"))
        .env("FANFARE_ASSETS_DIR", workspace().join("assets"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let pid = server.id().context("server pid")?;
    let stop_keepers = Arc::new(tokio::sync::Notify::new());
    let result = async {
        let (base, admin) = fanfare_bench::read_banner(server.stdout.take().context("stdout")?).await?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let post = |path: &str, body: Value| {
            http.post(format!("{base}{path}"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
        };
        // One group per camera.
        for i in 0..k {
            let st = post(
                "/v1/groups",
                json!({"id": format!("cam{i}"), "name": format!("cam{i}")}),
            )
            .await?
            .status();
            if st.as_u16() != 201 {
                bail!("creating group cam{i}: {st}");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let base_rss = rss_mb(pid);
        let base_anon = anon_mb(pid);
        let mut ids = Vec::new();
        for i in 0..k {
            let v: Value = post(
                "/v1/ingests",
                json!({"url": url, "name": format!("cam{i}"), "groups": [format!("cam{i}")]}),
            )
            .await?
            .json()
            .await?;
            ids.push(
                v["id"]
                    .as_str()
                    .with_context(|| format!("ingest id in {v}"))?
                    .to_string(),
            );
        }
        let frames = |ids: Vec<String>| {
            let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
            async move {
                let mut live = 0;
                let mut frames = 0u64;
                let mut bytes = 0u64;
                let mut reconnects = 0u64;
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
                    reconnects += v["reconnects"].as_u64().unwrap_or(0);
                }
                anyhow::Ok((live, frames, bytes, reconnects))
            }
        };
        let t_live = Instant::now();
        let deadline = t_live + Duration::from_secs(60);
        while frames(ids.clone()).await?.0 < k {
            if Instant::now() > deadline {
                bail!("not every ingest went live within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "{k} cameras: all ingests live after {:.1} s",
            t_live.elapsed().as_secs_f64()
        );
        // Live HLS on in every group: the first request starts the program (and waits for
        // media); then each group's playlist is requested again every `playlist_every_s`.
        let playlists: Vec<String> = (0..k)
            .map(|i| format!("{base}/v1/groups/cam{i}/live/index.m3u8?token={admin}"))
            .collect();
        let playlists = if args.no_live_hls { Vec::new() } else { playlists };
        // All at once, so the programs start together (each first request waits for media).
        let t_hls = Instant::now();
        let first: Vec<Result<String>> = stream::iter(playlists.iter())
            .map(|u| get_playlist(&http, u))
            .buffered(k.max(1))
            .collect()
            .await;
        for (i, r) in first.iter().enumerate() {
            if let Err(e) = r {
                bail!("live playlist of cam{i}: {e:#}");
            }
        }
        if !playlists.is_empty() {
            eprintln!(
                "{k} cameras: every live playlist served after {:.1} s",
                t_hls.elapsed().as_secs_f64()
            );
        }
        let failures = Arc::new(AtomicU64::new(0));
        let mut keepers = Vec::new();
        for u in &playlists {
            let (http, u, stop, failures) = (http.clone(), u.clone(), stop_keepers.clone(), failures.clone());
            let every = Duration::from_secs(args.playlist_every_s.max(1));
            keepers.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.notified() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                    match get_playlist(&http, &u).await {
                        Ok(t) if t.contains("#EXT-X-PART:") => {}
                        Ok(_) | Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        if let Some(p0) = playlists.first() {
            tokio::time::sleep(Duration::from_secs(args.hls_fill_s)).await;
            let text = get_playlist(&http, p0).await?;
            eprintln!("{k} cameras: cam0 live HLS: {}", check_parts(&http, p0, &text).await?);
        }
        tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;
        let (_, f0, b0, r0) = frames(ids.clone()).await?;
        let load0 = loadavg();
        let t0 = Instant::now();
        let usage = measure(&[pid], camera, args.duration_s).await;
        let (live, f1, b1, r1) = frames(ids.clone()).await?;
        let secs = t0.elapsed().as_secs_f64();
        // Every group's playlist at the end: does each program still list parts?
        let ends: Vec<Result<String>> = stream::iter(playlists.iter())
            .map(|u| get_playlist(&http, u))
            .buffered(8)
            .collect()
            .await;
        let with_parts = ends
            .iter()
            .filter(|r| matches!(r, Ok(t) if t.contains("#EXT-X-PART:")))
            .count();
        stop_keepers.notify_waiters();
        for kp in keepers {
            let _ = kp.await;
        }
        eprintln!(
            "{k} cameras, fanfare: load average {load0} -> {}; camera server CPU {:.1}%; {live}/{k} \
             ingests live at the end, {} reconnects while measuring{}",
            loadavg(),
            usage.cam_cpu * 100.0,
            r1 - r0,
            if playlists.is_empty() {
                "; live HLS off".to_string()
            } else {
                format!(
                    "; {with_parts}/{k} live playlists list parts at the end; {} failed playlist \
                     requests while running",
                    failures.load(Ordering::Relaxed)
                )
            },
        );
        let fps = (f1 - f0) as f64 / secs / k as f64;
        let kbps = (b1 - b0) as f64 * 8.0 / 1000.0 / secs / k as f64;
        Ok(Row {
            k,
            reader: if args.no_live_hls {
                "fanfare ingest (no live HLS)"
            } else {
                "fanfare ingest + live HLS"
            },
            usage,
            base_rss,
            base_anon,
            fps,
            kbps,
        })
    }
    .await;
    stop_keepers.notify_waiters();
    stop(&mut server).await;
    // The server log: warnings (e.g. "segmenter behind; frames dropped") are reported, and the
    // log is kept when there are any.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    let behind = warns.iter().filter(|l| l.contains("segmenter behind")).count();
    if warns.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "{k} cameras, fanfare: {} warning/error lines ({behind} \"segmenter behind\"), log kept in {}",
            warns.len(),
            log.display()
        );
        for l in warns.iter().take(5) {
            eprintln!("  {l}");
        }
        let _ = std::fs::remove_dir_all(dir.join("data"));
    }
    result
}

/// The last `frame=` in an ffmpeg `-progress` file.
fn progress_frames(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find_map(|l| l.strip_prefix("frame=").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// A reader measured beside fanfare, K processes of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Baseline {
    /// `ffmpeg -c copy -f hls`: the yardstick.
    Ffmpeg,
    /// `retina-read`: retina alone, reading and depacketizing (the floor under the ingest).
    RetinaRead,
    /// `retina-read --packets`: retina's session alone, nothing depacketized.
    RetinaPackets,
    /// `rtsp-bare-read`: reading the interleaved stream and nothing else (the floor under any
    /// RTSP ingest).
    BareRead,
}

impl Baseline {
    fn name(self) -> &'static str {
        match self {
            Baseline::Ffmpeg => "ffmpeg -c copy -f hls",
            Baseline::RetinaRead => "retina-read (retina alone)",
            Baseline::RetinaPackets => "retina-read --packets (retina's session alone)",
            Baseline::BareRead => "rtsp-bare-read (reading alone)",
        }
    }
}

async fn run_baseline(args: &Args, k: usize, url: &str, camera: u32, kind: Baseline) -> Result<Row> {
    let dir = std::env::temp_dir().join(format!("fanfare-bench-ffmpeg-{}-{k}", std::process::id()));
    let mut children = Vec::new();
    let mut progress = Vec::new();
    let retina_bin = args
        .retina_bin
        .clone()
        .unwrap_or_else(|| workspace().join("target/release/retina-read"));
    let bare_bin = args
        .bare_bin
        .clone()
        .unwrap_or_else(|| workspace().join("target/release/rtsp-bare-read"));
    for i in 0..k {
        let mut cmd = match kind {
            Baseline::Ffmpeg => {
                let out = dir.join(format!("cam{i}"));
                std::fs::create_dir_all(&out)?;
                progress.push(out.join("progress.txt"));
                let mut cmd = Command::new("ffmpeg");
                cmd.args([
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
                .arg("-progress")
                .arg(out.join("progress.txt"))
                .arg(out.join("index.m3u8"));
                cmd
            }
            Baseline::RetinaRead | Baseline::RetinaPackets | Baseline::BareRead => {
                let bin = if kind == Baseline::BareRead {
                    &bare_bin
                } else {
                    &retina_bin
                };
                let mut cmd = Command::new(bin);
                cmd.arg(url).stdout(Stdio::null());
                if kind == Baseline::RetinaPackets {
                    cmd.arg("--packets");
                }
                cmd
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", kind.name()))?;
        children.push(child);
    }
    let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
    tokio::time::sleep(Duration::from_secs(args.warmup_s + 2)).await;
    let f0: u64 = progress.iter().map(|p| progress_frames(p)).sum();
    let load0 = loadavg();
    let t0 = Instant::now();
    let usage = measure(&pids, camera, args.duration_s).await;
    let f1: u64 = progress.iter().map(|p| progress_frames(p)).sum();
    let secs = t0.elapsed().as_secs_f64();
    let mut exited = 0;
    for c in &mut children {
        if matches!(c.try_wait(), Ok(Some(_))) {
            exited += 1;
        }
        stop(c).await;
    }
    eprintln!(
        "{k} cameras, {}: load average {load0} -> {}; camera server CPU {:.1}%; {exited} of {k} \
         processes had exited early",
        kind.name(),
        loadavg(),
        usage.cam_cpu * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Row {
        k,
        reader: kind.name(),
        usage,
        base_rss: 0.0,
        base_anon: 0.0,
        // ffmpeg's `-progress` counts frames in steps of its 0.5 s reports; the floor readers
        // report none while running.
        fps: match kind {
            Baseline::Ffmpeg => (f1 - f0) as f64 / secs / k as f64,
            Baseline::RetinaRead | Baseline::RetinaPackets | Baseline::BareRead => f64::NAN,
        },
        kbps: f64::NAN,
    })
}

fn print(r: &Row) {
    let per = |v: f64| v / r.k as f64;
    println!(
        "| {} | {} | {:.1}% | {:.2}% | {:.0} | {:.1} | {:.1} | {} | {} | {} |",
        r.k,
        r.reader,
        r.usage.cpu * 100.0,
        per(r.usage.cpu * 100.0),
        r.usage.rss_peak,
        per(r.usage.rss_mean - r.base_rss),
        per(r.usage.anon_mean - r.base_anon),
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
    let file = media(&args)?;
    let port = free_port()?;
    let mut camera = start_camera(&file, port).await?;
    let cam_pid = camera.id().unwrap_or(0);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    eprintln!("camera {} at {url}", file.display());
    match probe_camera(&url).await {
        Ok(s) => eprintln!("ffprobe: {s}"),
        Err(e) => eprintln!("ffprobe of the camera failed: {e:#}"),
    }
    println!("| cameras | reader | CPU total | CPU per camera | RSS peak MB | RSS per camera MB | anon RSS per camera MB | RSS idle MB | fps per camera | kbit/s per camera |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut result = Ok(());
    let mut rows = Vec::new();
    for &k in &args.cameras {
        for _ in 0..args.repeat.max(1) {
            let readers = [
                ("fanfare", args.no_fanfare, None),
                ("ffmpeg", args.no_ffmpeg, Some(Baseline::Ffmpeg)),
                ("retina-read", !args.retina_floor, Some(Baseline::RetinaRead)),
                (
                    "retina-read --packets",
                    !args.retina_packets_floor,
                    Some(Baseline::RetinaPackets),
                ),
                ("rtsp-bare-read", !args.bare_floor, Some(Baseline::BareRead)),
            ];
            for (reader, skip, baseline) in readers {
                if skip {
                    continue;
                }
                let run = match baseline {
                    None => run_fanfare(&args, k, &url, cam_pid).await,
                    Some(kind) => run_baseline(&args, k, &url, cam_pid, kind).await,
                };
                match run {
                    Ok(r) => {
                        print(&r);
                        rows.push(r);
                    }
                    Err(e) => {
                        eprintln!("{reader}, {k} cameras: {e:#}");
                        result = Err(e);
                    }
                }
            }
        }
    }
    if args.repeat > 1 {
        print_medians(&args.cameras, &rows);
    }
    stop(&mut camera).await;
    result
}

/// The median of `v` (NaN when empty) and its range.
fn median_range(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(lo), Some(hi)) => {
            let mid = v.len() / 2;
            let median = if v.len() % 2 == 1 {
                v[mid]
            } else {
                (v[mid - 1] + v[mid]) / 2.0
            };
            (median, *lo, *hi)
        }
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

/// The floor readers' names in the medians table, each with the prefix of its rows' `reader`.
const FLOORS: [(&str, &str); 3] = [
    ("retina-read", "retina-read ("),
    ("retina-read --packets", "retina-read --packets"),
    ("rtsp-bare-read", "rtsp-bare-read"),
];

/// Per camera count: medians (and ranges) over the repeated runs, and fanfare's CPU per
/// camera as a fraction of ffmpeg's (the ratio of the medians); with the floor flags, also
/// each floor reader's and its fraction of ffmpeg's.
fn print_medians(cameras: &[usize], rows: &[Row]) {
    println!();
    let mut head = "| cameras | runs | fanfare CPU per camera, median (range) | ffmpeg CPU per camera, median (range) | ratio of medians | fanfare RSS per camera MB, median (range) |".to_string();
    for (name, _) in FLOORS {
        head += &format!(" {name} CPU per camera, median (range) | {name} / ffmpeg |");
    }
    println!("{head}");
    println!("|---|---|---|---|---|---|{}", "---|---|".repeat(FLOORS.len()));
    for &k in cameras {
        let of = |reader: &'static str| rows.iter().filter(move |r| r.k == k && r.reader.starts_with(reader));
        let cpu = |reader| median_range(of(reader).map(|r| r.usage.cpu * 100.0 / k as f64).collect());
        let (fc, fc_lo, fc_hi) = cpu("fanfare");
        let (mc, mc_lo, mc_hi) = cpu("ffmpeg");
        let (rss, rss_lo, rss_hi) = median_range(
            of("fanfare")
                .map(|r| (r.usage.rss_mean - r.base_rss) / k as f64)
                .collect(),
        );
        let floors: String = FLOORS
            .iter()
            .map(|&(_, prefix)| {
                let (c, lo, hi) = cpu(prefix);
                if c.is_nan() {
                    " - | - |".to_string()
                } else {
                    format!(" {c:.2}% ({lo:.2}–{hi:.2}) | {:.2}× |", c / mc)
                }
            })
            .collect();
        println!(
            "| {k} | {} | {fc:.2}% ({fc_lo:.2}–{fc_hi:.2}) | {mc:.2}% ({mc_lo:.2}–{mc_hi:.2}) | {:.2}× | {rss:.1} ({rss_lo:.1}–{rss_hi:.1}) |{floors}",
            of("fanfare").count(),
            fc / mc,
        );
    }
}
