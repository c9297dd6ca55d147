//! `sfu-fanout`: one H.264 publisher (720p30 ~2 Mbps, pre-encoded with ffmpeg, looped) and N
//! subscribers in this one process, against Fanfare (WHIP/WHEP) and Janus VideoRoom (HTTP API),
//! one markdown table row per (server, N) on stdout, details on stderr.
//!
//! The server is pinned to one core (`taskset`), this client to another. Subscribers never
//! decode: they count RTP packets, duplicates and sequence gaps, reassemble frames only until
//! the first complete keyframe, and match each packet to the publisher's send time by a hash of
//! its payload (both SFUs rewrite SSRC, payload type and sequence numbers, Janus also the
//! timestamps, neither the payload). Per N (subscribers are added cumulatively,
//! `--join-concurrency` at a time) a steady window of `--seconds` gives: server CPU from
//! `/proc/<pid>/stat`; CPU per forwarded packet (server CPU time / video packets the
//! subscribers received); loss (1 - unique packets sent in the window and received, over
//! sent x N); latency publisher-write -> subscriber-read, raw and minus the same measured over
//! a direct in-process peer connection (no SFU; quantiles subtracted, so approximate); time
//! from starting a subscribe to its first complete keyframe; RSS from `/proc/<pid>/status`,
//! per subscriber against the RSS with the publisher and no subscriber.
//!
//! The publisher writes each frame's packets back to back, or with `--pacing-kbps` spaced as
//! a pacer at that rate would send them (libwebrtc paces at 2.5 times its target bitrate).
//!
//! Janus never gathers ICE candidates on a loopback interface, so runs that include it need
//! `--rtc-ip` set to a non-loopback local address, e.g. a veth pair inside `unshare --net`
//! (bench/README.md). Exit status: 2 on a setup failure (server, publisher, fixture), 1 when a
//! subscriber failed to join or got no keyframe.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use futures_util::stream::{self, StreamExt};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, MissedTickBehavior};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use fanfare_tests::h264::{self, AccessUnit, FrameCounter, Packetizer};
use fanfare_tests::rtc_client::{
    h264_codec, local_track, negotiated_payload_type, random_u32, FRAME_INTERVAL, FRAME_TICKS,
};

const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Latency histogram: 10 µs buckets up to 500 ms, then one overflow bucket.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 50_000;
/// Send records kept for matching (about 2 minutes of video).
const SEND_LOG: usize = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    Fanfare,
    Janus,
    Both,
}

#[derive(Parser, Debug)]
#[command(about = "SFU fan-out benchmark: Fanfare vs Janus VideoRoom over loopback")]
struct Args {
    /// Which server(s) to measure.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    server: Which,
    /// Subscriber counts, ascending; subscribers are added cumulatively.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100,200")]
    subscribers: Vec<usize>,
    /// Length of each steady measurement window.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Settling time after the joins of a step, before its window.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Subscribers joining at the same time.
    #[arg(long, default_value_t = 8)]
    join_concurrency: usize,
    /// Core the server is pinned to.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core this client pins itself to (-1: no pinning).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    client_core: i64,
    /// Annex-B H.264 file to loop (default: encode 10 s of 720p30 ~2 Mbps with ffmpeg).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// ffmpeg used to encode the fixture.
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg: String,
    /// Fanfare binary (default: <workspace>/target/release/fanfare).
    #[arg(long)]
    fanfare_bin: Option<PathBuf>,
    /// Janus binary.
    #[arg(long, default_value = "janus")]
    janus_bin: PathBuf,
    /// Folder with janus.jcfg, janus.transport.http.jcfg, janus.plugin.videoroom.jcfg
    /// (default: <workspace>/bench/janus).
    #[arg(long)]
    janus_conf: Option<PathBuf>,
    /// Address every peer connection (clients, Fanfare's `FANFARE_RTC_IPS`, Janus's ICE
    /// enforce list) uses. Janus never gathers on a loopback interface, so a Janus run needs a
    /// non-loopback local address, e.g. a dummy interface in a private network namespace.
    #[arg(long, default_value = "127.0.0.1")]
    rtc_ip: IpAddr,
    /// Skip the direct (no SFU) latency baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Run Fanfare with `[rtc] udp_port` set to this port (every peer connection on one UDP
    /// port, the ICE UDP mux) instead of a socket per connection.
    #[arg(long)]
    udp_port: Option<u16>,
    /// A Fanfare configuration file to start it with (`--config`), e.g. `[rtc] threads = 1`.
    #[arg(long)]
    fanfare_config: Option<PathBuf>,
    /// Space the publisher's packets as a pacer at this rate would (0: each frame's packets
    /// back to back). libwebrtc paces at 2.5 times its target: 5000 for this ~2 Mbit/s fixture.
    #[arg(long, default_value_t = 0)]
    pacing_kbps: u32,
}

// ───────────────────────────── clock, send log, statistics ─────────────────────────────

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// A hash of the RTP payload: what identifies a packet across an SFU that rewrites SSRC,
/// payload type, sequence numbers and (Janus) timestamps. The fixture repeats every loop, and
/// SPS/PPS at every keyframe, so a key maps to its latest send, which is the one a subscriber
/// receives unless a packet is late by a whole loop.
fn fingerprint(payload: &[u8]) -> u64 {
    let mut h = payload.len() as u64;
    for chunk in payload.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h
}

#[derive(Default)]
struct SendLog {
    at: HashMap<u64, u64>,
    order: VecDeque<u64>,
}

impl SendLog {
    fn insert(&mut self, key: u64, ns: u64) {
        if self.at.insert(key, ns).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > SEND_LOG {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
    }
}

/// Everything the publisher and the subscribers record, reset for each step.
struct Stats {
    log: Mutex<SendLog>,
    /// The measurement window, ns on the shared clock (`start == end`: no window).
    win_start: AtomicU64,
    win_end: AtomicU64,
    sent_in_window: AtomicU64,
    /// Unique video packets received whose send time is in the window.
    delivered_in_window: AtomicU64,
    /// Every video packet the subscribers received (for CPU per forwarded packet).
    received: AtomicU64,
    duplicates: AtomicU64,
    seq_gaps: AtomicU64,
    unmatched: AtomicU64,
    sent_total: AtomicU64,
    keyframe_requests: AtomicU64,
    hist: Vec<AtomicU64>,
    /// The latency of each frame's last packet (marker): when the frame became decodable.
    frame_hist: Vec<AtomicU64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            log: Mutex::new(SendLog::default()),
            win_start: AtomicU64::new(0),
            win_end: AtomicU64::new(0),
            sent_in_window: AtomicU64::new(0),
            delivered_in_window: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            seq_gaps: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            sent_total: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            hist: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            frame_hist: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn in_window(&self, ns: u64) -> bool {
        ns >= self.win_start.load(Relaxed) && ns < self.win_end.load(Relaxed)
    }

    /// Clears the window figures (call while no window is open).
    fn reset_window(&self) {
        self.win_start.store(0, Relaxed);
        self.win_end.store(0, Relaxed);
        for c in [&self.sent_in_window, &self.delivered_in_window] {
            c.store(0, Relaxed);
        }
        for b in self.hist.iter().chain(&self.frame_hist) {
            b.store(0, Relaxed);
        }
    }

    /// Records a packet's latency (and, for a frame's last packet, the frame's).
    fn record_latency(&self, ns: u64, marker: bool) {
        let b = ((ns / 1000) / BUCKET_US).min(BUCKETS as u64) as usize;
        self.hist[b].fetch_add(1, Relaxed);
        if marker {
            self.frame_hist[b].fetch_add(1, Relaxed);
        }
    }

    /// The `q` quantile of the packet latency histogram in ms (upper bucket edge).
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.hist, q)
    }

    /// The `q` quantile of the frame latency histogram in ms (upper bucket edge).
    fn frame_quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.frame_hist, q)
    }
}

/// The `q` quantile of a latency histogram in ms (upper bucket edge).
fn quantile_ms(hist: &[AtomicU64], q: f64) -> Option<f64> {
    let counts: Vec<u64> = hist.iter().map(|b| b.load(Relaxed)).collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, c) in counts.iter().enumerate() {
        acc += c;
        if acc >= rank {
            return Some(((i as u64 + 1) * BUCKET_US) as f64 / 1000.0);
        }
    }
    None
}

// ───────────────────────────── /proc ─────────────────────────────

struct Proc {
    rss_kb: u64,
    cpu_s: f64,
    threads: u64,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| -> Option<u64> {
        let rest = status.lines().find_map(|l| l.strip_prefix(key))?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised name: field 3 (state) is index 0, utime (14) index 11, stime 12.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Proc {
        rss_kb: field("VmRSS:")?,
        cpu_s: ticks as f64 / hz,
        threads: field("Threads:")?,
    })
}

/// (busy, total) jiffies of one core (`None`: the whole machine) from `/proc/stat`.
fn core_jiffies(core: Option<usize>) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let prefix = core.map_or_else(|| "cpu ".to_owned(), |c| format!("cpu{c} "));
    let line = stat.lines().find(|l| l.starts_with(&prefix))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

fn busy_pct(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (a?, b?);
    (t1 > t0).then(|| 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64)
}

/// UDP `RcvbufErrors` (datagrams the kernel dropped on full socket buffers, machine-wide).
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

fn pin_self(core: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in bounds for core < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| ".".into(), Path::to_path_buf)
}

fn temp_dir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sfu-fanout-{tag}-{}-{}", std::process::id(), now_ns()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

// ───────────────────────────── servers ─────────────────────────────

/// A server this program started, pinned with `taskset`; stopped by its PID.
struct ServerProc {
    child: tokio::process::Child,
    pid: u32,
    dir: PathBuf,
}

impl ServerProc {
    async fn stop(mut self) {
        // SAFETY: signals our own child (taskset exec'd the server, same PID), not yet reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        if timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

fn pinned(core: usize, bin: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("taskset");
    cmd.arg("-c").arg(core.to_string()).arg(bin);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Starts Fanfare; returns it, its base URL and the admin token it printed.
async fn start_fanfare(
    bin: &Path,
    core: usize,
    rtc_ip: IpAddr,
    udp_port: Option<u16>,
    config: Option<&Path>,
) -> Result<(ServerProc, String, String)> {
    let dir = temp_dir("fanfare")?;
    let mut cmd = pinned(core, bin);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FANFARE_")) {
        cmd.env_remove(k);
    }
    cmd.env("FANFARE_LISTEN", "127.0.0.1:0")
        .env("FANFARE_DATA_DIR", dir.join("data"))
        .env("FANFARE_ASSETS_DIR", workspace().join("assets"))
        .env("FANFARE_RTC_IPS", rtc_ip.to_string())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("server.log"))?);
    if let Some(port) = udp_port {
        cmd.env("FANFARE_RTC_UDP_PORT", port.to_string());
    }
    let mut child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
    let pid = child.id().context("the server exited at once")?;
    let stdout = child.stdout.take().context("no server stdout")?;
    let server = ServerProc { child, pid, dir };
    match fanfare_bench::read_banner(stdout).await {
        Ok((base, admin)) => Ok((server, base, admin)),
        Err(e) => {
            server.stop().await;
            Err(e.context("fanfare did not start"))
        }
    }
}

/// Starts Janus with a copy of `conf` whose HTTP transport listens on a free port.
async fn start_janus(
    bin: &Path,
    conf: &Path,
    core: usize,
    rtc_ip: IpAddr,
    http: &reqwest::Client,
) -> Result<(ServerProc, String)> {
    let dir = temp_dir("janus")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    for name in ["janus.jcfg", "janus.transport.http.jcfg", "janus.plugin.videoroom.jcfg"] {
        let text =
            std::fs::read_to_string(conf.join(name)).with_context(|| format!("read {}", conf.join(name).display()))?;
        let text = text
            .replace("port = 8088", &format!("port = {port}"))
            .replace("@RTC_IP@", &rtc_ip.to_string());
        std::fs::write(dir.join(name), text)?;
    }
    let mut cmd = pinned(core, bin);
    cmd.arg("-C")
        .arg(dir.join("janus.jcfg"))
        .arg("-F")
        .arg(&dir)
        .arg("-L")
        .arg(dir.join("janus.log"))
        .args(["-N", "-o"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log"))?);
    let child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
    let pid = child.id().context("janus exited at once")?;
    let server = ServerProc { child, pid, dir };
    let base_url = format!("http://127.0.0.1:{port}/janus");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = http.get(format!("{base_url}/info")).send().await;
        if matches!(&up, Ok(r) if r.status().is_success()) {
            return Ok((server, base_url));
        }
        if Instant::now() > deadline {
            let log = server.dir.join("janus.log");
            server.stop().await;
            bail!(
                "janus did not answer on {base_url}/info within 20 s (log: {})",
                log.display()
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

// ───────────────────────────── signalling ─────────────────────────────

fn http_client(t: Duration) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(t).no_proxy().build()?)
}

/// POSTs an SDP offer (WHIP/WHEP) and returns the answer; only 201 succeeds.
async fn post_sdp(http: &reqwest::Client, url: &str, token: &str, offer: String) -> Result<String> {
    let res = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await?;
    let status = res.status().as_u16();
    let body = res.text().await?;
    if status != 201 {
        bail!("{url}: HTTP {status}: {body}");
    }
    Ok(body)
}

/// A Janus HTTP API session: requests by POST, events by one long-poll task that routes them
/// to waiters by transaction.
struct Janus {
    http: reqwest::Client,
    url: String,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    events: Arc<Mutex<HashMap<String, u64>>>,
    poller: JoinHandle<()>,
}

impl Janus {
    async fn connect(base_url: &str) -> Result<Janus> {
        let http = http_client(Duration::from_secs(60))?;
        let tx = format!("t{}", random_u32());
        let res: Value = http
            .post(base_url)
            .json(&json!({"janus": "create", "transaction": tx}))
            .send()
            .await?
            .json()
            .await?;
        let id = res["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("janus create: {res}"))?;
        let url = format!("{base_url}/{id}");
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>> = Arc::default();
        let events: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let poller = tokio::spawn(Self::poll(http.clone(), url.clone(), pending.clone(), events.clone()));
        Ok(Janus {
            http,
            url,
            pending,
            events,
            poller,
        })
    }

    async fn poll(
        http: reqwest::Client,
        url: String,
        pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
        events: Arc<Mutex<HashMap<String, u64>>>,
    ) {
        loop {
            let got = async { http.get(format!("{url}?maxev=50")).send().await?.json::<Value>().await }.await;
            let list = match got {
                Ok(Value::Array(v)) => v,
                Ok(v) => vec![v],
                Err(e) => {
                    eprintln!("janus long poll: {e}");
                    sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            for ev in list {
                let kind = ev["janus"].as_str().unwrap_or("?").to_owned();
                if let Ok(mut e) = events.lock() {
                    *e.entry(kind).or_default() += 1;
                }
                let Some(tx) = ev["transaction"].as_str() else { continue };
                let waiter = pending.lock().ok().and_then(|mut p| p.remove(tx));
                if let Some(w) = waiter {
                    let _ = w.send(ev);
                }
            }
        }
    }

    async fn post(&self, path: &str, mut body: Value) -> Result<(Value, Option<oneshot::Receiver<Value>>)> {
        let tx = format!("t{}-{}", random_u32(), now_ns());
        body["transaction"] = json!(tx);
        let (send, recv) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(tx.clone(), send);
        }
        let res: Value = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        match res["janus"].as_str() {
            Some("ack") => Ok((res, Some(recv))),
            Some("success") => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&tx);
                }
                Ok((res, None))
            }
            _ => bail!("janus: {res}"),
        }
    }

    async fn attach(&self) -> Result<u64> {
        let (res, _) = self
            .post("", json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}))
            .await?;
        res["data"]["id"].as_u64().ok_or_else(|| anyhow!("janus attach: {res}"))
    }

    /// A VideoRoom request; returns the synchronous reply or the event that answers it.
    async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Value> {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let (res, wait) = self.post(&format!("/{handle}"), msg).await?;
        let ev = match wait {
            None => res,
            Some(w) => timeout(STEP_TIMEOUT, w)
                .await
                .map_err(|_| anyhow!("janus: no event within {STEP_TIMEOUT:?}"))?
                .map_err(|_| anyhow!("janus: event poller ended"))?,
        };
        let data = &ev["plugindata"]["data"];
        if data.get("error").is_some() {
            bail!("janus videoroom error: {data}");
        }
        Ok(ev)
    }

    fn event_counts(&self) -> String {
        self.events.lock().map(|e| format!("{:?}", *e)).unwrap_or_default()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

// ───────────────────────────── peer connections ─────────────────────────────

// The same loopback-style peer as the end-to-end tests, bound to the benchmark's address.
use fanfare_tests::rtc_client::LoopbackPeer as Peer;

// ───────────────────────────── publisher ─────────────────────────────

struct Publisher {
    peer: Peer,
    tasks: Vec<JoinHandle<()>>,
}

impl Publisher {
    /// Builds a sendonly H.264 peer, lets `exchange` turn its offer into an answer, then loops
    /// `aus` at 30 fps once connected, logging every packet's send time.
    async fn start<F, Fut>(
        ip: IpAddr,
        aus: Arc<Vec<AccessUnit>>,
        pacing_kbps: u32,
        stats: Arc<Stats>,
        exchange: F,
    ) -> Result<Publisher>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<String>>,
    {
        let peer = Peer::bound(ip, true).await?;
        let ssrc = random_u32() | 1;
        let track = local_track("bench", "video", RtpCodecKind::Video, ssrc, h264_codec());
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            ..Default::default()
        };
        let transceiver = peer
            .pc()
            .add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init))
            .await?;
        let sender = transceiver.sender().await?.context("transceiver without a sender")?;
        let offer = peer.create_offer(STEP_TIMEOUT).await?;
        let answer = exchange(offer).await?;
        peer.accept_answer(answer).await?;
        let pt = negotiated_payload_type(&sender, &h264_codec())
            .await
            .context("the answer did not accept H.264")?;
        if !peer.wait_connected(STEP_TIMEOUT).await {
            peer.close().await;
            bail!("the publisher did not connect within {STEP_TIMEOUT:?}");
        }
        let want_key = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            tokio::spawn(feedback(track.clone(), want_key.clone(), stats.clone())),
            tokio::spawn(send_video(
                track,
                Packetizer::new(pt, ssrc, random_u32() as u16),
                aus,
                pacing_kbps,
                want_key,
                stats,
                peer.state_watch(),
            )),
        ];
        Ok(Publisher { peer, tasks })
    }

    async fn close(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.peer.close().await;
    }
}

/// Flags keyframe requests (PLI/FIR) from the server.
async fn feedback(track: Arc<TrackLocalStaticRTP>, want_key: Arc<AtomicBool>, stats: Arc<Stats>) {
    while let Some(ev) = track.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(pkts) = ev {
            let asks = pkts.iter().any(|p| {
                let a = p.as_any();
                a.is::<PictureLossIndication>() || a.is::<FullIntraRequest>()
            });
            if asks {
                stats.keyframe_requests.fetch_add(1, Relaxed);
                want_key.store(true, Relaxed);
            }
        }
    }
}

/// Loops the fixture at 30 fps with continuous timestamps; a keyframe request jumps to the
/// next keyframe. With `pacing_kbps`, a packet leaves no sooner than the packets before it
/// take at that rate (a frame larger than the rate allows runs into the next one's time).
async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    mut packetizer: Packetizer,
    aus: Arc<Vec<AccessUnit>>,
    pacing_kbps: u32,
    want_key: Arc<AtomicBool>,
    stats: Arc<Stats>,
    state: tokio::sync::watch::Receiver<RTCPeerConnectionState>,
) {
    let mut tick = tokio::time::interval(FRAME_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let (mut idx, mut ts) = (0, random_u32());
    let mut next_send = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if matches!(
            *state.borrow(),
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            return;
        }
        if want_key.swap(false, Relaxed) && !aus[idx].keyframe {
            idx = h264::next_keyframe(&aus, idx).unwrap_or(idx);
        }
        let Ok(pkts) = packetizer.packetize(&aus[idx], ts) else {
            return;
        };
        for p in pkts {
            if pacing_kbps > 0 {
                next_send = next_send.max(tokio::time::Instant::now());
                tokio::time::sleep_until(next_send).await;
                let bits = (p.payload.len() as u64 + 12) * 8;
                next_send += Duration::from_micros(bits * 1000 / u64::from(pacing_kbps));
            }
            let key = fingerprint(&p.payload);
            let t = now_ns();
            if let Ok(mut log) = stats.log.lock() {
                log.insert(key, t);
            }
            stats.sent_total.fetch_add(1, Relaxed);
            if stats.in_window(t) {
                stats.sent_in_window.fetch_add(1, Relaxed);
            }
            if track.write_rtp(p).await.is_err() {
                return;
            }
        }
        ts = ts.wrapping_add(FRAME_TICKS);
        idx = (idx + 1) % aus.len();
    }
}

// ───────────────────────────── subscribers ─────────────────────────────

struct Subscriber {
    peer: Peer,
    dispatch: JoinHandle<()>,
    /// ns from the start of the subscribe to the first complete keyframe; `u64::MAX` until then.
    first_key: Arc<AtomicU64>,
}

impl Subscriber {
    fn first_key_ms(&self) -> Option<f64> {
        let v = self.first_key.load(Relaxed);
        (v != u64::MAX).then(|| v as f64 / 1e6)
    }

    async fn close(self) {
        self.dispatch.abort();
        self.peer.close().await;
    }
}

/// A receiving peer whose video tracks are counted into `stats`.
async fn subscriber_peer(ip: IpAddr, stats: &Arc<Stats>, started: Instant) -> Result<Subscriber> {
    let mut peer = Peer::bound(ip, false).await?;
    let tracks = peer.take_tracks().context("tracks already taken")?;
    let first_key = Arc::new(AtomicU64::new(u64::MAX));
    let dispatch = tokio::spawn(dispatch(tracks, stats.clone(), started, first_key.clone()));
    Ok(Subscriber {
        peer,
        dispatch,
        first_key,
    })
}

async fn dispatch(
    mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    stats: Arc<Stats>,
    started: Instant,
    first_key: Arc<AtomicU64>,
) {
    while let Some(track) = tracks.recv().await {
        let video = track.kind().await == RtpCodecKind::Video;
        tokio::spawn(read_track(track, video, stats.clone(), started, first_key.clone()));
    }
}

async fn read_track(
    track: Arc<dyn TrackRemote>,
    video: bool,
    stats: Arc<Stats>,
    started: Instant,
    first_key: Arc<AtomicU64>,
) {
    let mut frames = Some(FrameCounter::new());
    let mut seen = vec![0u32; 1024];
    let mut last_seq: Option<u16> = None;
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
            continue;
        };
        if !video {
            continue;
        }
        let now = now_ns();
        stats.received.fetch_add(1, Relaxed);
        let seq = pkt.header.sequence_number;
        let slot = &mut seen[seq as usize & 1023];
        if *slot == seq as u32 + 1 {
            stats.duplicates.fetch_add(1, Relaxed);
            continue;
        }
        *slot = seq as u32 + 1;
        match last_seq {
            Some(l) => {
                let d = seq.wrapping_sub(l);
                if (1..0x8000).contains(&d) {
                    stats.seq_gaps.fetch_add(u64::from(d - 1), Relaxed);
                    last_seq = Some(seq);
                }
            }
            None => last_seq = Some(seq),
        }
        if let Some(fc) = frames.as_mut() {
            if fc.push(&pkt).is_some_and(|f| f.keyframe) {
                first_key.store(started.elapsed().as_nanos() as u64, Relaxed);
                frames = None;
            }
        }
        let key = fingerprint(&pkt.payload);
        let sent = stats.log.lock().ok().and_then(|l| l.at.get(&key).copied());
        match sent {
            Some(s) if stats.in_window(s) => {
                stats.delivered_in_window.fetch_add(1, Relaxed);
                stats.record_latency(now.saturating_sub(s), pkt.header.marker);
            }
            Some(_) => {}
            None => {
                stats.unmatched.fetch_add(1, Relaxed);
            }
        }
    }
}

/// How a subscriber joins one server.
#[derive(Clone)]
enum Join {
    Fanfare {
        http: reqwest::Client,
        url: String,
        token: String,
        metrics: String,
    },
    Janus {
        janus: Arc<Janus>,
        room: u64,
        feed: u64,
    },
}

async fn join(how: Join, ip: IpAddr, stats: Arc<Stats>) -> Result<Subscriber> {
    let started = Instant::now();
    let sub = subscriber_peer(ip, &stats, started).await?;
    let done = async {
        match how {
            Join::Fanfare { http, url, token, .. } => {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                };
                sub.peer
                    .pc()
                    .add_transceiver_from_kind(RtpCodecKind::Video, Some(init))
                    .await?;
                let offer = sub.peer.create_offer(STEP_TIMEOUT).await?;
                let answer = post_sdp(&http, &url, &token, offer).await?;
                sub.peer.accept_answer(answer).await?;
            }
            Join::Janus { janus, room, feed } => {
                let handle = janus.attach().await?;
                let body = json!({"request": "join", "room": room, "ptype": "subscriber", "streams": [{"feed": feed}]});
                let ev = janus.message(handle, body, None).await?;
                let offer = ev["jsep"]["sdp"]
                    .as_str()
                    .ok_or_else(|| anyhow!("janus subscriber join without an offer: {ev}"))?
                    .to_owned();
                let answer = sub.peer.answer(offer, STEP_TIMEOUT).await?;
                janus
                    .message(
                        handle,
                        json!({"request": "start"}),
                        Some(json!({"type": "answer", "sdp": answer})),
                    )
                    .await?;
            }
        }
        if !sub.peer.wait_connected(STEP_TIMEOUT).await {
            bail!("subscriber did not connect within {STEP_TIMEOUT:?}");
        }
        anyhow::Ok(())
    }
    .await;
    match done {
        Ok(()) => Ok(sub),
        Err(e) => {
            sub.close().await;
            Err(e)
        }
    }
}

// ───────────────────────────── the runs ─────────────────────────────

/// One measured row.
struct Row {
    server: String,
    n: usize,
    failed: usize,
    cpu_cores: Option<f64>,
    us_per_pkt: Option<f64>,
    fwd_pps: f64,
    loss_pct: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    frame_p50: Option<f64>,
    frame_p99: Option<f64>,
    key_p50: Option<f64>,
    key_max: Option<f64>,
    no_key: usize,
    rss_kb: Option<u64>,
    rss_per_sub_kb: Option<f64>,
    client_cpu: Option<f64>,
    other_cpu: Option<f64>,
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

const HEADER: &str = "| server | N | server CPU (cores) | CPU µs / fwd pkt | fwd pkt/s | loss % | latency p50 / p99 ms (raw) | added p50 / p99 ms | frame done p50 / p99 ms (raw) | sub→keyframe p50 / max ms | RSS MB | RSS / sub KB | client CPU (cores) | other CPU (cores) |\n\
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

fn print_row(r: &Row, baseline: Option<(f64, f64)>) {
    let added = |raw: Option<f64>, base: Option<f64>| match (raw, base) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let n = if r.failed > 0 {
        format!("{} ({} failed)", r.n, r.failed)
    } else {
        r.n.to_string()
    };
    let key = if r.no_key > 0 {
        format!("{} / {} ({} none)", f(r.key_p50, 0), f(r.key_max, 0), r.no_key)
    } else {
        format!("{} / {}", f(r.key_p50, 0), f(r.key_max, 0))
    };
    println!(
        "| {} | {} | {} | {} | {:.0} | {} | {} / {} | {} / {} | {} / {} | {} | {} | {} | {} | {} |",
        r.server,
        n,
        f(r.cpu_cores, 3),
        f(r.us_per_pkt, 1),
        r.fwd_pps,
        f(r.loss_pct, 3),
        f(r.p50, 2),
        f(r.p99, 2),
        f(added(r.p50, baseline.map(|b| b.0)), 2),
        f(added(r.p99, baseline.map(|b| b.1)), 2),
        f(r.frame_p50, 2),
        f(r.frame_p99, 2),
        key,
        r.rss_kb
            .map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        f(r.rss_per_sub_kb, 0),
        f(r.client_cpu, 2),
        f(r.other_cpu, 2),
    );
}

/// Measures one steady window with `n` subscribers in place.
async fn window(
    args: &Args,
    stats: &Stats,
    server: &str,
    pid: Option<u32>,
    n: usize,
    extra: impl std::future::Future<Output = String>,
) -> (Row, String) {
    stats.reset_window();
    let start = now_ns() + 50_000_000;
    let end = start + args.seconds * 1_000_000_000;
    stats.win_start.store(start, Relaxed);
    stats.win_end.store(end, Relaxed);
    sleep(Duration::from_millis(50)).await;
    let client = std::process::id();
    let client_core = usize::try_from(args.client_core).ok();
    let (p0, c0, s0, k0, k1, m0) = (
        pid.and_then(read_proc),
        read_proc(client),
        stats.received.load(Relaxed),
        core_jiffies(Some(args.server_core)),
        client_core.and_then(|c| core_jiffies(Some(c))),
        core_jiffies(None),
    );
    let (g0, d0, u0, rb0) = (
        stats.seq_gaps.load(Relaxed),
        stats.duplicates.load(Relaxed),
        stats.unmatched.load(Relaxed),
        udp_rcvbuf_errors(),
    );
    let t0 = Instant::now();
    sleep(Duration::from_secs(args.seconds)).await;
    let secs = t0.elapsed().as_secs_f64();
    let (p1, c1, s1, k0b, k1b, m1) = (
        pid.and_then(read_proc),
        read_proc(client),
        stats.received.load(Relaxed),
        core_jiffies(Some(args.server_core)),
        client_core.and_then(|c| core_jiffies(Some(c))),
        core_jiffies(None),
    );
    let extra = extra.await;
    // Let the window's last packets arrive.
    sleep(Duration::from_millis(1000)).await;
    let sent = stats.sent_in_window.load(Relaxed);
    let delivered = stats.delivered_in_window.load(Relaxed);
    let fwd = s1 - s0;
    let cpu = match (&p0, &p1) {
        (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
        _ => None,
    };
    let loss = (sent > 0 && n > 0).then(|| 100.0 * (1.0 - delivered as f64 / (sent as f64 * n as f64)));
    let client_cpu = match (&c0, &c1) {
        (Some(a), Some(b)) => Some((b.cpu_s - a.cpu_s) / secs),
        _ => None,
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let machine = match (m0, m1) {
        (Some((b0, _)), Some((b1, _))) => Some((b1 - b0) as f64 / hz / secs),
        _ => None,
    };
    let other = machine.map(|m| (m - cpu.unwrap_or(0.0) / secs - client_cpu.unwrap_or(0.0)).max(0.0));
    let (server_core_busy, client_core_busy) = (busy_pct(k0, k0b), busy_pct(k1, k1b));
    let details = format!(
        "{server} N={n}: window {secs:.1} s; publisher sent {sent} pkts ({:.0}/s); delivered {delivered} of {} \
         expected; received {fwd} video pkts; seq gaps {}, duplicates {}, unmatched {}; UDP RcvbufErrors +{}; \
         server CPU {} s, threads {}; server core busy {}%, client core busy {}%, machine {} cores; {extra}",
        sent as f64 / secs,
        sent * n as u64,
        stats.seq_gaps.load(Relaxed) - g0,
        stats.duplicates.load(Relaxed) - d0,
        stats.unmatched.load(Relaxed) - u0,
        match (rb0, udp_rcvbuf_errors()) {
            (Some(a), Some(b)) => (b - a).to_string(),
            _ => "?".into(),
        },
        f(cpu, 2),
        p1.as_ref().map_or(0, |p| p.threads),
        f(server_core_busy, 0),
        f(client_core_busy, 0),
        f(machine, 2),
    );
    let row = Row {
        server: server.to_owned(),
        n,
        failed: 0,
        cpu_cores: cpu.map(|c| c / secs),
        us_per_pkt: cpu.filter(|_| fwd > 0).map(|c| c * 1e6 / fwd as f64),
        fwd_pps: fwd as f64 / secs,
        loss_pct: loss,
        p50: stats.quantile_ms(0.50),
        p99: stats.quantile_ms(0.99),
        frame_p50: stats.frame_quantile_ms(0.50),
        frame_p99: stats.frame_quantile_ms(0.99),
        key_p50: None,
        key_max: None,
        no_key: 0,
        rss_kb: p1.as_ref().map(|p| p.rss_kb),
        rss_per_sub_kb: None,
        client_cpu,
        other_cpu: other,
    };
    (row, details)
}

/// Publisher -> subscriber directly, no SFU: the client's own share of the latency.
async fn baseline(args: &Args, aus: Arc<Vec<AccessUnit>>) -> Result<(f64, f64)> {
    let stats = Arc::new(Stats::new());
    let sub = subscriber_peer(args.rtc_ip, &stats, Instant::now()).await?;
    let sub_ref = &sub;
    let publisher = Publisher::start(args.rtc_ip, aus, args.pacing_kbps, stats.clone(), |offer| async move {
        Ok(sub_ref.peer.answer(offer, STEP_TIMEOUT).await?)
    })
    .await?;
    sleep(Duration::from_secs(args.settle)).await;
    let (mut row, details) = window(args, &stats, "direct (no SFU)", None, 1, async { String::new() }).await;
    eprintln!("{details}");
    row.key_p50 = sub.first_key_ms();
    row.key_max = row.key_p50;
    print_row(&row, None);
    publisher.close().await;
    sub.close().await;
    match (row.p50, row.p99) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("the direct baseline received nothing"),
    }
}

/// Adds subscribers up to each N and measures; returns whether every join worked.
async fn ramp(
    args: &Args,
    server: &str,
    pid: u32,
    stats: &Arc<Stats>,
    how: Join,
    baseline: Option<(f64, f64)>,
) -> Result<bool> {
    let (metrics_url, janus) = match &how {
        Join::Fanfare { metrics, .. } => (Some(metrics.clone()), None),
        Join::Janus { janus, .. } => (None, Some(janus.clone())),
    };
    // Idle figure: the publisher alone.
    sleep(Duration::from_secs(args.settle)).await;
    let idle = read_proc(pid).context("server vanished")?;
    eprintln!(
        "{server}: with the publisher and no subscriber: RSS {} KB, {} threads; publisher sent {} pkts, \
         {} keyframe requests",
        idle.rss_kb,
        idle.threads,
        stats.sent_total.load(Relaxed),
        stats.keyframe_requests.load(Relaxed)
    );
    let http = http_client(Duration::from_secs(5))?;
    let mut subs: Vec<Subscriber> = Vec::new();
    let mut all_ok = true;
    for &n in &args.subscribers {
        if n < subs.len() {
            continue;
        }
        let add = n - subs.len();
        let kr0 = stats.keyframe_requests.load(Relaxed);
        let t = Instant::now();
        let results: Vec<Result<Subscriber>> =
            stream::iter((0..add).map(|_| join(how.clone(), args.rtc_ip, stats.clone())))
                .buffer_unordered(args.join_concurrency.max(1))
                .collect()
                .await;
        let mut fresh = Vec::new();
        let mut failed = 0;
        for r in results {
            match r {
                Ok(s) => fresh.push(s),
                Err(e) => {
                    failed += 1;
                    eprintln!("{server}: a subscriber failed to join: {e:#}");
                }
            }
        }
        let joined_s = t.elapsed().as_secs_f64();
        // Wait (bounded) for every new subscriber's first keyframe.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fresh.iter().any(|s| s.first_key_ms().is_none()) && Instant::now() < deadline {
            sleep(Duration::from_millis(50)).await;
        }
        let mut keys: Vec<f64> = fresh.iter().filter_map(Subscriber::first_key_ms).collect();
        keys.sort_by(f64::total_cmp);
        let no_key = fresh.len() - keys.len();
        eprintln!(
            "{server}: +{add} subscribers in {joined_s:.1} s ({failed} failed), publisher got {} keyframe requests",
            stats.keyframe_requests.load(Relaxed) - kr0
        );
        subs.extend(fresh);
        if failed > 0 || no_key > 0 {
            all_ok = false;
        }
        sleep(Duration::from_secs(args.settle)).await;
        let live = subs.len();
        let (metrics_url2, http2, janus_ref) = (metrics_url.clone(), http.clone(), janus.clone());
        let extra = async move {
            if let Some(url) = metrics_url2 {
                fanfare_metrics(&http2, &url).await
            } else if let Some(j) = janus_ref {
                format!("janus events so far {}", j.event_counts())
            } else {
                String::new()
            }
        };
        let m0 = match &metrics_url {
            Some(url) => fanfare_metrics(&http, url).await,
            None => String::new(),
        };
        let (mut row, details) = window(args, stats, server, Some(pid), live, extra).await;
        eprintln!("{details}; metrics before the window: {m0}");
        row.failed = failed;
        row.key_p50 = keys.get(keys.len() / 2).copied();
        row.key_max = keys.last().copied();
        row.no_key = no_key;
        row.rss_per_sub_kb = row
            .rss_kb
            .filter(|_| live > 0)
            .map(|r| (r as f64 - idle.rss_kb as f64) / live as f64);
        print_row(&row, baseline);
    }
    stream::iter(subs).for_each_concurrent(32, Subscriber::close).await;
    Ok(all_ok)
}

/// The Fanfare RTP counters from `/metrics`.
async fn fanfare_metrics(http: &reqwest::Client, url: &str) -> String {
    let Ok(res) = http.get(url).send().await else {
        return "metrics unavailable".into();
    };
    let Ok(text) = res.text().await else {
        return "metrics unavailable".into();
    };
    text.lines()
        .filter(|l| {
            [
                "fanfare_rtp_packets_in_total",
                "fanfare_rtp_packets_out_total",
                "fanfare_rtp_dropped_total",
                "fanfare_rtc_mux_dropped_total",
                "fanfare_keyframe_requests_total",
                "fanfare_subscriber_legs",
                "fanfare_rtc_mux_peers",
                "fanfare_rtc_send_calls_total",
                "fanfare_rtc_sent_datagrams_total",
                "fanfare_rtc_send_dropped_total",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run_fanfare(args: &Args, aus: Arc<Vec<AccessUnit>>, baseline: Option<(f64, f64)>) -> Result<bool> {
    let bin = args
        .fanfare_bin
        .clone()
        .unwrap_or_else(|| workspace().join("target/release/fanfare"));
    let (server, base_url, admin) = start_fanfare(
        &bin,
        args.server_core,
        args.rtc_ip,
        args.udp_port,
        args.fanfare_config.as_deref(),
    )
    .await?;
    eprintln!(
        "fanfare: pid {} at {base_url}, log {}",
        server.pid,
        server.dir.display()
    );
    let stats = Arc::new(Stats::new());
    let result = async {
        let http = http_client(STEP_TIMEOUT)?;
        let res = http
            .post(format!("{base_url}/v1/groups"))
            .bearer_auth(&admin)
            .json(&json!({"id": "bench", "name": "bench"}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!(
                "create group: HTTP {}: {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
        let whip = format!("{base_url}/v1/whip?groups=bench");
        let (h, a) = (http.clone(), admin.clone());
        let publisher = Publisher::start(args.rtc_ip, aus, args.pacing_kbps, stats.clone(), |offer| async move {
            post_sdp(&h, &whip, &a, offer).await
        })
        .await
        .context("fanfare publisher")?;
        let how = Join::Fanfare {
            http: http.clone(),
            url: format!("{base_url}/v1/groups/bench/whep"),
            token: admin.clone(),
            metrics: format!("{base_url}/metrics"),
        };
        let ok = ramp(args, "fanfare", server.pid, &stats, how, baseline).await;
        publisher.close().await;
        ok
    }
    .await;
    server.stop().await;
    result
}

async fn run_janus(args: &Args, aus: Arc<Vec<AccessUnit>>, baseline: Option<(f64, f64)>) -> Result<bool> {
    let conf = args
        .janus_conf
        .clone()
        .unwrap_or_else(|| workspace().join("bench/janus"));
    let probe = http_client(Duration::from_secs(2))?;
    let (server, base_url) = start_janus(&args.janus_bin, &conf, args.server_core, args.rtc_ip, &probe).await?;
    eprintln!(
        "janus: pid {} at {base_url}, log {}",
        server.pid,
        server.dir.join("janus.log").display()
    );
    let stats = Arc::new(Stats::new());
    let result = async {
        let janus = Arc::new(Janus::connect(&base_url).await?);
        let admin = janus.attach().await?;
        let room = 4242u64;
        let created = janus
            .message(
                admin,
                json!({
                    "request": "create", "room": room, "publishers": 1, "bitrate": 2_500_000,
                    "videocodec": "h264", "h264_profile": "42e01f", "fir_freq": 0,
                    "notify_joining": false, "permanent": false
                }),
                None,
            )
            .await
            .context("janus create room")?;
        eprintln!("janus: {}", created["plugindata"]["data"]);
        let handle = janus.attach().await?;
        let joined = janus
            .message(
                handle,
                json!({"request": "join", "room": room, "ptype": "publisher", "display": "bench"}),
                None,
            )
            .await
            .context("janus publisher join")?;
        let feed = joined["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("janus join without an id: {joined}"))?;
        let j = janus.clone();
        let publisher = Publisher::start(args.rtc_ip, aus, args.pacing_kbps, stats.clone(), |offer| async move {
            let ev = j
                .message(
                    handle,
                    json!({"request": "publish"}),
                    Some(json!({"type": "offer", "sdp": offer})),
                )
                .await?;
            ev["jsep"]["sdp"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("janus publish without an answer: {ev}"))
        })
        .await
        .context("janus publisher")?;
        let how = Join::Janus {
            janus: janus.clone(),
            room,
            feed,
        };
        let ok = ramp(args, "janus", server.pid, &stats, how, baseline).await;
        publisher.close().await;
        eprintln!("janus: events {}", janus.event_counts());
        ok
    }
    .await;
    server.stop().await;
    result
}

fn encode_fixture(ffmpeg: &str) -> Result<PathBuf> {
    let out = temp_dir("fixture")?.join("720p30.h264");
    let status = std::process::Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=1280x720:rate=30", "-t", "10"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "baseline",
            "-level",
            "3.1",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
        ])
        .args([
            "-b:v",
            "2M",
            "-maxrate",
            "2M",
            "-bufsize",
            "2M",
            "-x264-params",
            "repeat-headers=1",
        ])
        .args(["-f", "h264"])
        .arg(&out)
        .status()
        .with_context(|| format!("run {ffmpeg}"))?;
    if !status.success() {
        bail!("{ffmpeg} failed: {status}");
    }
    Ok(out)
}

async fn run(args: Args) -> Result<bool> {
    if matches!(args.server, Which::Janus | Which::Both) && args.rtc_ip.is_loopback() {
        bail!(
            "Janus skips loopback interfaces when gathering ICE candidates: give --rtc-ip a \
             non-loopback local address (see bench/README.md)"
        );
    }
    let fixture = match &args.fixture {
        Some(p) => p.clone(),
        None => encode_fixture(&args.ffmpeg)?,
    };
    let aus = h264::read_access_units(&fixture).with_context(|| format!("read {}", fixture.display()));
    if args.fixture.is_none() {
        if let Some(dir) = fixture.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let aus = aus?;
    if !aus.iter().any(|a| a.keyframe) {
        bail!("{}: no keyframe", fixture.display());
    }
    let bytes: usize = aus.iter().map(AccessUnit::len).sum();
    eprintln!(
        "fixture {}: {} frames, {} keyframes, {:.2} Mbit/s at 30 fps",
        fixture.display(),
        aus.len(),
        aus.iter().filter(|a| a.keyframe).count(),
        bytes as f64 * 8.0 * 30.0 / aus.len() as f64 / 1e6
    );
    let aus = Arc::new(aus);
    println!("{HEADER}");
    let base_lat = if args.no_baseline {
        None
    } else {
        Some(baseline(&args, aus.clone()).await.context("direct baseline")?)
    };
    let mut ok = true;
    if matches!(args.server, Which::Fanfare | Which::Both) {
        ok &= run_fanfare(&args, aus.clone(), base_lat).await?;
    }
    if matches!(args.server, Which::Janus | Which::Both) {
        ok &= run_janus(&args, aus.clone(), base_lat).await?;
    }
    Ok(ok)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Ok(core) = usize::try_from(args.client_core) {
        if let Err(e) = pin_self(core) {
            eprintln!("sfu-fanout: {e:#}");
            return std::process::ExitCode::from(2);
        }
    }
    raise_nofile();
    base();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sfu-fanout: tokio: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sfu-fanout: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
