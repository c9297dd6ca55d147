//! Test harness: starts the real `fanfare` binary on a free loopback port with its own data
//! directory, and talks to it over HTTP and WebSocket as clients do.

pub mod browser;
pub mod camera;
pub mod h264;
pub mod h265;
pub mod opus;
pub mod rtc_client;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// Path of the `fanfare` binary, built once per test process so tests never run a stale one.
pub fn fanfare_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("FANFARE_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "fanfare-api", "--bin", "fanfare"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build for the fanfare binary");
        assert!(status.success(), "building the fanfare binary failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace().join("target"));
        target.join("debug").join("fanfare")
    })
}

/// A running server process, killed on drop.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// An admin token printed by the server at start.
    pub admin: String,
    /// The data directory (kept across restarts by [`Server::restart`]).
    pub data_dir: PathBuf,
    tmp_shared: std::sync::Arc<tempfile::TempDir>,
    http: reqwest::Client,
}

/// What a test wants written into the server's config file (TOML), besides the defaults.
pub const TEST_CONFIG: &str = "[testing]\nfault_injection = true\n";

impl Server {
    /// Starts a server with a fresh data directory.
    pub async fn start() -> Server {
        let tmp = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn(tmp, TEST_CONFIG).await
    }

    /// Starts a server with a fresh data directory and `config` as its TOML file.
    pub async fn start_with_config(config: &str) -> Server {
        let tmp = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn(tmp, config).await
    }

    async fn spawn(tmp: std::sync::Arc<tempfile::TempDir>, config: &str) -> Server {
        let data_dir = tmp.path().join("data");
        let config_path = tmp.path().join("fanfare.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(tmp.path().join("server.log"))
            .expect("open server log");
        let mut cmd = Command::new(fanfare_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("FANFARE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--config")
            .arg(&config_path)
            .env("FANFARE_LISTEN", "127.0.0.1:0")
            .env("FANFARE_DATA_DIR", &data_dir)
            .env("FANFARE_ASSETS_DIR", workspace().join("assets"))
            .env(
                "FANFARE_LOG",
                std::env::var("FANFARE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .current_dir(tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("start fanfare");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut base = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Fanfare listening on ") {
                    base = Some(rest.trim_end_matches('/').to_string());
                }
                if let Some(tok) = line.strip_prefix("Admin token (24 h): ") {
                    let _ = tx.send((base.clone().unwrap_or_default(), tok.to_string()));
                }
            }
        });
        let (base, admin) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(tmp.path().join("server.log")).unwrap_or_default();
                panic!("fanfare did not start within 30 s; its log:\n{log}");
            }
        };
        Server {
            child: Some(child),
            base,
            admin,
            data_dir,
            tmp_shared: tmp,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                // The server closes idle keep-alive connections after 5 s (actix's default):
                // never reuse one that old, or a request can meet a connection being closed.
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The server's resident memory (VmRSS), in kB; 0 when it cannot be read.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Sends `signal` and waits for the process to exit; returns its exit status.
    pub fn stop_with(&mut self, signal: i32) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the server and starts a new one on the same data directory and config.
    pub async fn restart_after_kill(mut self) -> Server {
        self.stop_with(libc::SIGKILL);
        let config = std::fs::read_to_string(self.tmp_shared.path().join("fanfare.toml")).unwrap_or_default();
        Self::spawn(self.tmp_shared.clone(), &config).await
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp_shared.path().join("server.log")).unwrap_or_default()
    }

    /// The lines of the server's log so far that contain `needle`, for a failure message.
    pub fn log_lines(&self, needle: &str) -> String {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Creates group `id` (as admin) and adds `members`, each with its permission overrides;
    /// panics if the server refuses.
    pub async fn group(&self, id: &str, members: &[(&str, Value)]) {
        let (st, body) = self
            .call(
                Method::POST,
                "/v1/groups",
                Some(&self.admin),
                Some(serde_json::json!({"id": id, "name": id})),
            )
            .await;
        assert_eq!(st, 201, "create group {id}: {body}");
        for (user, perms) in members {
            let (st, body) = self
                .call(
                    Method::PUT,
                    &format!("/v1/groups/{id}/members/{user}"),
                    Some(&self.admin),
                    Some(serde_json::json!({"permissions": perms})),
                )
                .await;
            assert_eq!(st, 201, "add {user} to {id}: {body}");
        }
    }

    /// Mints a token for `user` through `POST /v1/tokens`.
    pub async fn token(&self, user: &str) -> String {
        let (st, body) = self
            .call(
                Method::POST,
                "/v1/tokens",
                Some(&self.admin),
                Some(json!({"user": user, "name": user})),
            )
            .await;
        assert_eq!(st, 201, "minting a token for {user}: {body}");
        body["token"].as_str().expect("token string").to_string()
    }

    /// Makes a JSON request; returns status and the parsed body (`Null` when empty).
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request reaches the server");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("read body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    /// Sends raw bytes with a content type; returns status and parsed body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request reaches the server");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("read body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Opens the realtime socket with `token` and reads its `hello`.
    pub async fn ws(&self, token: &str) -> Ws {
        let url = format!("{}/v1/rtc?token={}", self.base.replace("http://", "ws://"), token);
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connect in time")
            .expect("websocket connects");
        let mut ws = Ws { stream };
        ws.expect("hello").await;
        ws
    }

    /// Reads one Prometheus sample (first line starting with `name`) from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found"))
    }

    /// The `/metrics` page.
    async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// The sum of every series of `name` (all label sets) on `/metrics`; 0 when there is none.
    pub async fn metric_total(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The series of `name` whose labels include `label` (`key="value"`); 0 when there is none.
    pub async fn metric_with(&self, name: &str, label: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `/metrics` until `name` reads `want` (or 5 s pass) and returns the last value.
    pub async fn metric_settles(&self, name: &str, want: f64) -> f64 {
        self.metric_settles_within(name, want, Duration::from_secs(5)).await
    }

    /// [`Self::metric_settles`], waiting up to `wait`.
    pub async fn metric_settles_within(&self, name: &str, want: f64, wait: Duration) -> f64 {
        let deadline = Instant::now() + wait;
        let mut v = self.metric(name).await;
        while v != want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            v = self.metric(name).await;
        }
        v
    }

    /// Sets `user`'s own `media` caps in group `gid` (a moderator's PATCH, applied live).
    pub async fn set_member_media(&self, gid: &str, user: &str, media: Value) {
        let (st, body) = self
            .call(
                Method::PATCH,
                &format!("/v1/groups/{gid}/members/{user}"),
                Some(&self.admin),
                Some(serde_json::json!({ "media": media })),
            )
            .await;
        assert_eq!(st, 200, "{body}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A realtime WebSocket client.
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Ws {
    /// The next message carrying `req` (a reply), skipping events; panics after `wait`.
    pub async fn reply(&mut self, req: &str, wait: Duration) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.next(left).await.unwrap_or_else(|| panic!("no reply to {req}"));
            if msg["req"] == req {
                return msg;
            }
        }
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(WsMessage::text(v.to_string()))
            .await
            .expect("websocket send");
    }

    /// Sends a raw frame.
    pub async fn send_raw(&mut self, m: WsMessage) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.stream.send(m).await
    }

    /// The next JSON message, or `None` after `wait` or when the socket closes.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.stream.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Reads until a message of type `ty` arrives (within 5 s), skipping others.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(v) if v["type"] == ty => return v,
                Some(_) => continue,
                None => panic!("no {ty:?} message within 5 s"),
            }
        }
    }

    /// Asserts that no message of type `ty` arrives within `wait`; returns what did arrive.
    pub async fn expect_no(&mut self, ty: &str, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return seen;
            }
            match self.next(left).await {
                Some(v) => {
                    assert_ne!(v["type"], ty, "unexpected {ty} message: {v}");
                    seen.push(v);
                }
                None => return seen,
            }
        }
    }

    /// Waits (up to 20 s) for a `connection_quality` message that grades `user` `want`; panics
    /// if none comes.
    pub async fn expect_graded(&mut self, user: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(v) = self.next(deadline.saturating_duration_since(Instant::now())).await {
            let hit = v["type"] == "connection_quality"
                && v["participants"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p["user"] == user && p["quality"] == want));
            if hit {
                return;
            }
        }
        panic!("{user} was never graded {want}");
    }

    /// Joins `group` and returns the `joined` reply (or the `error`).
    pub async fn join(&mut self, group: &str) -> Value {
        self.send(json!({"type": "join", "group": group, "req": "j"})).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
                .expect("reply to join");
            if v["type"] == "joined" || v["type"] == "error" {
                return v;
            }
        }
    }

    /// Whether the server has closed the socket (reads and discards messages for up to `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }
}
