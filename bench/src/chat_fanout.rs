//! `chat-fanout`: measures chat fan-out of a `fanfare` server over loopback. It owns the whole
//! run: it starts the release server (or uses `--base` + `--admin-token`), creates the group,
//! mints tokens and adds the members, opens one realtime WebSocket per member and joins them,
//! sends the messages over REST at a fixed rate (open loop, one sender user), and collects every
//! `message` event. It prints one markdown table row (details on stderr) and exits 1 when any
//! delivery is missing or a POST or connection failed while measuring, 2 on any other failure.
//!
//! Each message text is `fanout <seq> <ns>`, `ns` being nanoseconds since an `Instant` shared
//! by sender and receivers, taken just before the POST is issued: latency is send-to-receive
//! and includes the REST call, storage and the fan-out. Server RSS and CPU come from
//! `/proc/<pid>`, so they need the PID (known when this program starts the server).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message as Ws;

#[derive(Parser, Debug)]
#[command(about = "Chat fan-out benchmark for the fanfare server (loopback only)")]
struct Args {
    /// Realtime connections, one member each.
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Chat messages to send.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Server binary to start (default: <workspace>/target/release/fanfare).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Use a running server at http://127.0.0.1:PORT instead of starting one.
    #[arg(long, requires = "admin_token")]
    base: Option<String>,
    /// Admin token of the `--base` server.
    #[arg(long, requires = "base")]
    admin_token: Option<String>,
    /// PID of the `--base` server, to sample its RSS and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Group to create (or reuse).
    #[arg(long, default_value = "bench")]
    group: String,
    /// Stop waiting for missing deliveries after this many seconds without progress.
    #[arg(long, default_value_t = 10)]
    drain_s: u64,
    /// Overall time limit in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

/// The parts of a server event this program reads; the rest is skipped.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<Chat<'a>>,
}

#[derive(Deserialize)]
struct Chat<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

/// What every connection task shares.
struct Ctx {
    join_msg: String,
    messages: usize,
    t0: Instant,
    gate: Semaphore,
    deliveries: AtomicU64,
    other_events: AtomicU64,
}

/// What one connection saw after joining.
#[derive(Default)]
struct ConnStats {
    latency_us: Vec<u32>,
    seen: Vec<bool>,
    duplicates: u64,
    last_rx_ns: u64,
    problem: Option<String>,
}

/// A server this program started; stopped by its PID with SIGTERM (SIGKILL if it lingers).
struct Server {
    child: tokio::process::Child,
    pid: u32,
    dir: PathBuf,
}

/// A `/proc` sample: resident and peak resident set in kB, user+system CPU seconds.
struct Proc {
    rss_kb: u64,
    hwm_kb: u64,
    cpu_s: f64,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        let rest = status.lines().find_map(|l| l.strip_prefix(key))?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised name come fields 3 (state) onwards: utime is field 14, stime 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Proc {
        rss_kb: kb("VmRSS:")?,
        hwm_kb: kb("VmHWM:")?,
        cpu_s: ticks as f64 / hz,
    })
}

fn raise_nofile() -> Result<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, initialised struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| ".".into(), Path::to_path_buf)
}

/// Starts `bin` on a free loopback port with a fresh data directory; returns it, its base URL
/// and the admin token it printed.
async fn start_server(bin: &Path) -> Result<(Server, String, String)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("fanfare-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut cmd = tokio::process::Command::new(bin);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FANFARE_")) {
        cmd.env_remove(k);
    }
    cmd.env("FANFARE_LISTEN", "127.0.0.1:0")
        .env("FANFARE_DATA_DIR", dir.join("data"))
        .env("FANFARE_ASSETS_DIR", workspace().join("assets"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
    let pid = child.id().context("the server exited at once")?;
    let stdout = child.stdout.take().context("no server stdout")?;
    let server = Server { child, pid, dir };
    match fanfare_bench::read_banner(stdout).await {
        Ok((base, admin)) => Ok((server, base, admin)),
        Err(e) => {
            stop_server(server).await;
            Err(e.context("the server did not start"))
        }
    }
}

async fn stop_server(mut server: Server) {
    // SAFETY: signals our own child, which has not been reaped yet.
    unsafe { libc::kill(server.pid as libc::pid_t, libc::SIGTERM) };
    if timeout(Duration::from_secs(10), server.child.wait()).await.is_err() {
        let _ = server.child.kill().await;
    }
    // Keep the server log; drop the database.
    let _ = std::fs::remove_dir_all(server.dir.join("data"));
}

/// The REST side: one keep-alive client for every call.
struct Rest {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl Rest {
    /// One call with `token` (the admin's when `None`); `ok` lists the statuses that succeed.
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Value, ok: &[u16]) -> Result<Value> {
        let req = self.http.request(method, format!("{}{path}", self.base));
        let res = req.bearer_auth(token.unwrap_or(&self.admin)).json(&body).send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        if !ok.contains(&status) {
            bail!("{path}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates (or reuses) `group`, adds `sender` and `m0..m<n>`; returns their tokens, sender's first.
    async fn setup(&self, group: &str, n: usize) -> Result<Vec<String>> {
        let body = json!({"id": group, "name": "Bench"});
        self.call(Method::POST, "/v1/groups", None, body, &[201, 409]).await?;
        let users = std::iter::once("sender".to_owned()).chain((0..n).map(|i| format!("m{i}")));
        let add = |user: String| async move {
            let path = format!("/v1/groups/{group}/members/{user}");
            self.call(Method::PUT, &path, None, json!({}), &[200, 201]).await?;
            let body = json!({"user": user, "name": user, "ttl_s": 3600});
            let reply = self.call(Method::POST, "/v1/tokens", None, body, &[201]).await?;
            reply["token"]
                .as_str()
                .map(str::to_owned)
                .context("no token in the reply")
        };
        futures_util::stream::iter(users)
            .map(add)
            .buffered(16)
            .try_collect()
            .await
    }
}

/// One member's connection: connect and join (reported on `joined`), then record every
/// `message` event until `stop` changes.
async fn member(
    url: String,
    ctx: Arc<Ctx>,
    joined: tokio::sync::mpsc::Sender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> ConnStats {
    let mut st = ConnStats::default();
    let setup = async {
        let _permit = ctx.gate.acquire().await?;
        let (mut ws, _) = timeout(Duration::from_secs(30), tokio_tungstenite::connect_async(url.as_str())).await??;
        ws.send(Ws::text(ctx.join_msg.as_str())).await?;
        loop {
            let frame = timeout(Duration::from_secs(60), ws.next())
                .await?
                .context("closed before joined")??;
            let v: Value = match frame {
                Ws::Text(t) => serde_json::from_str(t.as_str())?,
                Ws::Close(c) => bail!("closed before joined: {c:?}"),
                _ => continue,
            };
            match v["type"].as_str() {
                Some("joined") => return anyhow::Ok(ws),
                Some("error") => bail!("join refused: {v}"),
                _ => ctx.other_events.fetch_add(1, Relaxed),
            };
        }
    };
    let setup = setup.await;
    let _ = joined
        .send(setup.as_ref().map(|_| ()).map_err(|e| anyhow!("{e:#}")))
        .await;
    let Ok(mut ws) = setup else { return st };
    st.seen = vec![false; ctx.messages];
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            f = ws.next() => f,
        };
        let now = ctx.t0.elapsed().as_nanos() as u64;
        let text = match frame {
            Some(Ok(Ws::Text(t))) => t,
            Some(Ok(Ws::Close(c))) => break st.problem = Some(format!("closed by the server: {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => break st.problem = Some(format!("socket error: {e}")),
            None => break st.problem = Some("socket ended".into()),
        };
        match serde_json::from_str::<Event>(text.as_str()) {
            Ok(Event {
                kind,
                message: Some(chat),
            }) if kind == "message" => {
                let mut parts = chat.text.split(' ').skip(1).map(str::parse::<u64>);
                match (parts.next(), parts.next()) {
                    (Some(Ok(seq)), Some(Ok(sent))) if (seq as usize) < ctx.messages => {
                        st.duplicates += u64::from(std::mem::replace(&mut st.seen[seq as usize], true));
                        st.latency_us
                            .push(u32::try_from(now.saturating_sub(sent) / 1000).unwrap_or(u32::MAX));
                        st.last_rx_ns = now;
                        ctx.deliveries.fetch_add(1, Relaxed);
                    }
                    _ => st.problem = Some(format!("unexpected message text: {}", chat.text)),
                }
            }
            Ok(Event { kind, .. }) if kind == "error" || kind == "left" => {
                st.problem = Some(format!("server said: {}", text.as_str()));
            }
            Ok(_) => drop(ctx.other_events.fetch_add(1, Relaxed)),
            Err(e) => st.problem = Some(format!("unreadable frame ({e}): {}", text.as_str())),
        }
    }
    st
}

/// Waits until `counter` reaches `target` or stops moving for `quiet`.
async fn settle(counter: &AtomicU64, target: u64, quiet: Duration) -> u64 {
    let (mut last, mut since) = (counter.load(Relaxed), Instant::now());
    loop {
        sleep(Duration::from_millis(50)).await;
        let now = counter.load(Relaxed);
        if now >= target || (now == last && since.elapsed() >= quiet) {
            return now;
        }
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u32], p: f64) -> f64 {
    let n = sorted.len();
    sorted
        .get(((n as f64 * p).ceil() as usize).clamp(1, n.max(1)) - 1)
        .map_or(f64::NAN, |&us| us as f64 / 1000.0)
}

/// kB as MB for the table.
fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |kb| format!("{:.1}", kb as f64 / 1024.0))
}

/// CPU seconds this machine spent busy, all cores (user to softirq; idle, iowait and steal excluded).
fn machine_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map_while(|t| t.parse().ok())
        .collect();
    let idle = ticks.get(3)? + ticks.get(4)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((ticks.iter().take(7).sum::<u64>() - idle) as f64 / hz)
}

/// Counts WARN/ERROR lines in the server log (0 without one).
fn log_warnings(log: Option<&Path>) -> usize {
    let text = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count()
}

/// Sends `m` messages from `token` at `rate`/s, open loop: each POST starts on schedule, whether
/// or not earlier ones have been answered. Returns the POST answer times and the failures.
async fn send_all(
    rest: Arc<Rest>,
    group: &str,
    token: &str,
    m: usize,
    rate: f64,
    t0: Instant,
) -> (Vec<u32>, Vec<String>) {
    let (start, interval) = (Instant::now(), Duration::from_secs_f64(1.0 / rate));
    let path: Arc<str> = format!("/v1/groups/{group}/messages").into();
    let mut posts = tokio::task::JoinSet::new();
    for seq in 0..m {
        sleep_until((start + interval.mul_f64(seq as f64)).into()).await;
        let (rest, path, token) = (rest.clone(), path.clone(), token.to_owned());
        posts.spawn(async move {
            let body = json!({"text": format!("fanout {seq} {}", t0.elapsed().as_nanos())});
            let at = Instant::now();
            rest.call(Method::POST, &path, Some(&token), body, &[201])
                .await
                .map(|_| at.elapsed())
        });
    }
    let (mut acks, mut errors) = (Vec::new(), Vec::new());
    while let Some(r) = posts.join_next().await {
        match r.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(d) => acks.push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX)),
            Err(e) => errors.push(format!("POST failed: {e:#}")),
        }
    }
    acks.sort_unstable();
    (acks, errors)
}

/// Runs the benchmark against `rest.base`; returns whether every message reached every member.
async fn bench(args: &Args, rest: Rest, pid: Option<u32>, log: Option<&Path>) -> Result<bool> {
    let (n, m, group, rest) = (args.members, args.messages, args.group.as_str(), Arc::new(rest));
    let setup_t = Instant::now();
    let tokens = rest.setup(group, n).await?;
    eprintln!(
        "setup: group, {n} members and the sender added, tokens minted in {:.1?}",
        setup_t.elapsed()
    );

    let join_msg = json!({"type": "join", "group": group, "req": "1"}).to_string();
    let (t0, gate, zero) = (Instant::now(), Semaphore::new(64), AtomicU64::new);
    let (messages, deliveries, other_events) = (m, zero(0), zero(0));
    let ctx = Arc::new(Ctx {
        join_msg,
        messages,
        t0,
        gate,
        deliveries,
        other_events,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::channel(n);
    let ws_base = rest.base.replacen("http://", "ws://", 1);
    let mut tasks = Vec::with_capacity(n);
    for tok in &tokens[1..] {
        let url = format!("{ws_base}/v1/rtc?token={tok}");
        tasks.push(tokio::spawn(member(
            url,
            ctx.clone(),
            joined_tx.clone(),
            stop_rx.clone(),
        )));
    }
    for _ in 0..n {
        joined_rx.recv().await.context("a connection task vanished")??;
    }
    eprintln!("joined: {n} connections in {:.1?}", t0.elapsed());
    let events = settle(&ctx.other_events, u64::MAX, Duration::from_secs(1)).await;
    let idle = pid.and_then(read_proc);
    eprintln!(
        "settled: {events} hello/participant events seen, server RSS {} MB",
        mb(idle.as_ref().map(|p| p.rss_kb))
    );

    let peak = Arc::new(AtomicU64::new(idle.as_ref().map_or(0, |p| p.rss_kb)));
    let sampler = pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(read_proc(pid).map_or(0, |p| p.rss_kb), Relaxed);
                sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let (server0, self0, busy0) = (pid.and_then(read_proc), read_proc(std::process::id()), machine_busy_s());
    let (start, start_ns) = (Instant::now(), t0.elapsed().as_nanos() as u64);
    let (acks, mut problems) = send_all(rest.clone(), group, &tokens[0], m, args.rate, t0).await;
    let send_wall = start.elapsed();
    let expected = (n * m) as u64;
    settle(&ctx.deliveries, expected, Duration::from_secs(args.drain_s)).await;
    let wall = start.elapsed().as_secs_f64();
    let (server1, self1, busy1) = (pid.and_then(read_proc), read_proc(std::process::id()), machine_busy_s());
    sampler.inspect(|s| s.abort());
    let warnings = log_warnings(log);
    let _ = stop_tx.send(true);

    let (mut lat, mut distinct, mut dups, mut last_rx) = (Vec::with_capacity(n * m), 0, 0, start_ns);
    for task in tasks {
        let st = task.await?;
        lat.extend_from_slice(&st.latency_us);
        distinct += st.seen.iter().filter(|s| **s).count() as u64;
        dups += st.duplicates;
        last_rx = last_rx.max(st.last_rx_ns);
        problems.extend(st.problem);
    }
    lat.sort_unstable();
    let missing = expected.saturating_sub(distinct);
    // CPU while sending, in percent of one core.
    let cpu_s = |a: &Option<Proc>, b: &Option<Proc>| Some(b.as_ref()?.cpu_s - a.as_ref()?.cpu_s);
    let (server_s, self_s) = (cpu_s(&server0, &server1), cpu_s(&self0, &self1));
    let busy_s = busy0.zip(busy1).map(|(a, b)| b - a);
    let other_s = busy_s
        .zip(self_s)
        .map(|(b, c)| (b - c - server_s.unwrap_or(0.0)).max(0.0));
    let cpu = |s: Option<f64>| s.map_or("n/a".into(), |s| format!("{:.0}%", s / wall * 100.0));
    let (ack50, ack99, ack_max) = (pct(&acks, 0.5), pct(&acks, 0.99), pct(&acks, 1.0));
    eprintln!("sent {m} in {send_wall:.1?}; POST answered p50 {ack50:.1} ms, p99 {ack99:.1} ms, max {ack_max:.1} ms");
    eprintln!(
        "{} deliveries of {expected}, {dups} duplicates; {warnings} server log warnings",
        lat.len()
    );
    eprintln!(
        "CPU while sending (100% = one core): machine {}, server {}, this client {}, other processes {}",
        cpu(busy_s),
        cpu(server_s),
        cpu(self_s),
        cpu(other_s)
    );
    eprintln!("{} problems:", problems.len());
    for p in problems.iter().take(5) {
        eprintln!("  {p}");
    }
    let end = pid.and_then(read_proc);
    let peak_kb = peak.load(Relaxed).max(end.as_ref().map_or(0, |p| p.rss_kb));
    let rate = lat.len() as f64 / ((last_rx - start_ns) as f64 / 1e9).max(1e-9);
    let cells = [
        format!("{n} | {m} | {} | {} | {missing} | {rate:.0}", args.rate, lat.len()),
        format!("{:.1} | {:.1} | {:.1}", pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 1.0)),
        format!("{} | {}", mb(idle.map(|p| p.rss_kb)), mb(pid.map(|_| peak_kb))),
        format!(
            "{} | {}",
            mb(end.as_ref().map(|p| p.hwm_kb)),
            mb(end.as_ref().map(|p| p.rss_kb))
        ),
        format!("{} | {} | {}", cpu(server_s), cpu(self_s), cpu(other_s)),
    ];
    println!("| members | msgs | rate/s | deliveries | missing | deliveries/s | p50 ms | p99 ms | max ms | RSS idle MB | RSS peak MB | VmHWM MB | RSS end MB | server CPU | client CPU | other CPU |");
    println!("|{}", "---|".repeat(16));
    println!("| {} |", cells.join(" | "));
    Ok(missing == 0 && problems.is_empty())
}

async fn run(args: Args) -> Result<bool> {
    if args.members == 0 || args.messages == 0 || !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--members, --messages and --rate must be positive");
    }
    let limit = raise_nofile()?;
    if limit < (args.members + 64) as libc::rlim_t {
        bail!(
            "the open-file limit {limit} is too low for {} connections",
            args.members
        );
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let (server, rest) = match (&args.base, &args.admin_token) {
        (Some(base), Some(admin)) => {
            let base = base.trim_end_matches('/').to_owned();
            if !base.starts_with("http://127.0.0.1:") {
                bail!("only loopback servers are benchmarked (http://127.0.0.1:PORT), not {base}");
            }
            (
                None,
                Rest {
                    http,
                    base,
                    admin: admin.clone(),
                },
            )
        }
        _ => {
            let bin = args
                .server_bin
                .clone()
                .unwrap_or_else(|| workspace().join("target/release/fanfare"));
            let (server, base, admin) = start_server(&bin).await?;
            eprintln!("started {} (pid {}) at {base}", bin.display(), server.pid);
            (Some(server), Rest { http, base, admin })
        }
    };
    let log = server.as_ref().map(|s| s.dir.join("server.log"));
    let pid = server.as_ref().map(|s| s.pid).or(args.server_pid);
    let limit = Duration::from_secs(args.timeout_s);
    let result = timeout(limit, bench(&args, rest, pid, log.as_deref())).await;
    if let Some(server) = server {
        stop_server(server).await;
    }
    if let Some(log) = &log {
        eprintln!(
            "server log {}: {} WARN/ERROR lines, teardown included",
            log.display(),
            log_warnings(Some(log))
        );
    }
    result.unwrap_or_else(|_| Err(anyhow!("gave up after {} s (--timeout-s)", args.timeout_s)))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("chat-fanout: deliveries missing, or a POST or connection failed (see above)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chat-fanout: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
