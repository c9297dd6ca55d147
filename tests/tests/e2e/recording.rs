//! Recordings, uploads and live HLS end to end: a Rust WebRTC client publishes the H.264
//! fixture with Opus, the server records it into the object store (a local directory, or a
//! real S3-compatible server: moto), and Debian's `ffprobe` reads the playlists the API hands
//! out. Permissions, signed links, a store outage and a SIGKILL mid-recording.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fanfare_tests::rtc_client::WhipPublisher;
use fanfare_tests::{workspace, Server};
use reqwest::Method;
use serde_json::{json, Value};

/// Polls a recording until its status is `want` (or 30 s pass); returns it.
async fn wait_status(s: &Server, rid: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, rec) = s
            .call(Method::GET, &format!("/v1/recordings/{rid}"), Some(&s.admin), None)
            .await;
        assert_eq!(st, 200, "{rec}");
        if rec["status"] == want || Instant::now() > deadline {
            assert_eq!(rec["status"], want, "recording never became {want}: {rec}\n{}", s.log());
            return rec;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `ffprobe` with `args` (JSON output) and parses it.
fn ffprobe(args: &[&str]) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .output()
        .expect("ffprobe (Debian package ffmpeg) runs");
    assert!(
        out.status.success(),
        "ffprobe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// Duration and stream codecs of an HLS playlist URL, as ffprobe reads it.
fn probe_playlist(url: &str) -> (f64, Vec<String>) {
    let v = ffprobe(&[
        "-show_entries",
        "format=duration:stream=codec_name",
        "-protocol_whitelist",
        "http,tcp,hls,file,crypto",
        url,
    ]);
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok())
        .unwrap_or(0.0);
    let codecs = v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["codec_name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (duration, codecs)
}

/// `(EXTINF duration, absolute URL)` of each segment of a playlist.
fn segments_of(base: &str, playlist_path: &str, text: &str) -> Vec<(f64, String)> {
    let dir = &playlist_path[..playlist_path.rfind('/').map(|i| i + 1).unwrap_or(0)];
    let mut out = Vec::new();
    let mut dur = None;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            dur = d
                .trim_end_matches(',')
                .split(',')
                .next()
                .and_then(|d| d.parse::<f64>().ok());
        } else if !line.starts_with('#') && !line.is_empty() {
            out.push((dur.take().unwrap_or(0.0), format!("{base}{dir}{line}")));
        }
    }
    out
}

async fn get_text(s: &Server, url: &str) -> (u16, String) {
    let r = s.http().get(url).send().await.expect("GET");
    let st = r.status().as_u16();
    (st, r.text().await.unwrap_or_default())
}

async fn publish(s: &Server, groups: &str, token: &str) -> WhipPublisher {
    let p = WhipPublisher::connect(&s.base, &format!("/v1/whip?groups={groups}"), token)
        .await
        .expect("WHIP publish");
    assert!(p.wait_connected(Duration::from_secs(15)).await, "publisher connected");
    p
}

/// Checks a finished recording with ffprobe: duration near `want_s`, H.264 + AAC, every
/// segment starting with a keyframe, EXTINF matching each segment's real duration.
pub(crate) async fn check_recording(s: &Server, rid: &str, want_s: f64, tolerance: f64) {
    let path = format!("/v1/recordings/{rid}/index.m3u8");
    let (st, text) = get_text(s, &format!("{}{path}?token={}", s.base, s.admin)).await;
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{text}");
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    let url = format!("{}{path}?token={}", s.base, s.admin);
    let (duration, codecs) = tokio::task::spawn_blocking(move || probe_playlist(&url)).await.unwrap();
    assert!(
        (duration - want_s).abs() <= tolerance,
        "duration {duration} s, wanted {want_s} +- {tolerance}"
    );
    assert!(codecs.iter().any(|c| c == "h264"), "video stream: {codecs:?}");
    assert!(codecs.iter().any(|c| c == "aac"), "audio stream: {codecs:?}");
    let segments = segments_of(&s.base, &path, &text);
    assert!(!segments.is_empty());
    for (extinf, url) in segments {
        let u = url.clone();
        let v = tokio::task::spawn_blocking(move || {
            ffprobe(&["-select_streams", "v", "-show_entries", "frame=key_frame,pts_time", &u])
        })
        .await
        .unwrap();
        assert_eq!(
            v["frames"][0]["key_frame"], 1,
            "segment {url} does not start with a keyframe: {v}"
        );
        let pts: Vec<f64> = v["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["pts_time"].as_str().and_then(|t| t.parse().ok()))
            .collect();
        let (lo, hi) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
        // The video's span plus one frame (30 fps).
        let real = hi - lo + 1.0 / 30.0;
        assert!((real - extinf).abs() < 0.35, "segment {url}: EXTINF {extinf} vs {real}");
    }
}

#[tokio::test]
async fn a_recorded_call_plays_as_vod_with_keyframe_aligned_segments() {
    let s = Server::start().await;
    s.group("rec", &[]).await;
    let p = publish(&s, "rec", &s.admin).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, rec) = s
        .call(Method::POST, "/v1/groups/rec/recordings", Some(&s.admin), None)
        .await;
    assert_eq!(st, 201, "{rec}");
    assert_eq!(rec["status"], "recording");
    let rid = rec["id"].as_str().unwrap().to_owned();
    // A second recording of the same call is a conflict.
    let (st, body) = s
        .call(Method::POST, "/v1/groups/rec/recordings", Some(&s.admin), None)
        .await;
    assert_eq!(st, 409, "{body}");

    // Playable while in progress: an EVENT playlist.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (st, text) = get_text(
        &s,
        &format!("{}/v1/recordings/{rid}/index.m3u8?token={}", s.base, s.admin),
    )
    .await;
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{text}");
    assert!(text.contains(".ts?exp="), "{text}");

    tokio::time::sleep(Duration::from_secs(6)).await;
    let (st, body) = s
        .call(
            Method::POST,
            &format!("/v1/recordings/{rid}/stop"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let rec = wait_status(&s, &rid, "ready").await;
    p.close().await;
    assert_eq!(rec["kind"], "call");
    // Complete within one segment of its end.
    check_recording(&s, &rid, 10.0, 1.0).await;

    let (st, list) = s
        .call(Method::GET, "/v1/groups/rec/recordings", Some(&s.admin), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let item = &list["recordings"][0];
    for f in ["id", "group", "kind", "status", "started_at", "duration_s"] {
        assert!(!item[f].is_null(), "{f} missing: {item}");
    }
    assert!(item["duration_s"].as_f64().unwrap() > 8.0, "{item}");
    // A poster was made from a keyframe.
    let poster = item["poster_url"].as_str().expect("poster_url");
    let r = s.http().get(format!("{}{poster}", s.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..2], &[0xff, 0xd8]);

    // Stopping twice is a conflict; deleting removes it.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/recordings/{rid}/stop"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 409);
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/recordings/{rid}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 204);
    let (st, _) = s
        .call(Method::GET, &format!("/v1/recordings/{rid}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn playback_needs_can_playback_and_a_valid_signed_link() {
    let s = Server::start().await;
    s.group(
        "pb",
        &[("viewer", json!({})), ("blind", json!({"can_playback": false}))],
    )
    .await;
    let p = publish(&s, "pb", &s.admin).await;
    let (st, rec) = s
        .call(Method::POST, "/v1/groups/pb/recordings", Some(&s.admin), None)
        .await;
    assert_eq!(st, 201, "{rec}");
    let rid = rec["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/recordings/{rid}/stop"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200);
    wait_status(&s, &rid, "ready").await;
    p.close().await;

    let (viewer, blind, stranger) = (
        s.token("viewer").await,
        s.token("blind").await,
        s.token("stranger").await,
    );
    // Starting a recording needs can_moderate.
    let (st, _) = s
        .call(Method::POST, "/v1/groups/pb/recordings", Some(&viewer), None)
        .await;
    assert_eq!(st, 403);
    for (tok, want) in [(&viewer, 200), (&blind, 403), (&stranger, 403)] {
        let (st, body) = s.call(Method::GET, "/v1/groups/pb/recordings", Some(tok), None).await;
        assert_eq!(st, want, "{body}");
        let (st, body) = s
            .call(
                Method::GET,
                &format!("/v1/recordings/{rid}/index.m3u8"),
                Some(tok),
                None,
            )
            .await;
        assert_eq!(st, want, "{body}");
    }
    let (st, _) = s
        .call(Method::GET, &format!("/v1/recordings/{rid}/index.m3u8"), None, None)
        .await;
    assert_eq!(st, 401);

    let path = format!("/v1/recordings/{rid}/index.m3u8");
    let (_, text) = get_text(&s, &format!("{}{path}?token={viewer}", s.base)).await;
    let (_, first) = segments_of(&s.base, &path, &text)
        .into_iter()
        .next()
        .expect("a segment");
    let r = s.http().get(&first).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap()[0], 0x47, "MPEG-TS sync byte");

    let tampered = first.replace("sig=", "sig=x");
    let unsigned = first.split('?').next().unwrap().to_owned();
    let sig = first.split("sig=").nth(1).unwrap().to_owned();
    let expired = format!("{unsigned}?exp=1000&sig={sig}");
    let other_rec = first.replace(&rid, "rec_0000000000000000");
    for (url, want) in [(&tampered, 403), (&unsigned, 403), (&expired, 403), (&other_rec, 403)] {
        let r = s.http().get(url.as_str()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{url}");
        let body: Value = r.json().await.expect("JSON error body");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    for evil in ["..%2F..%2Fcredentials.json", "..%2Fx.ts", "1.ts.exe", "-1.ts"] {
        let url = format!("{}/v1/recordings/{rid}/segments/{evil}?exp=9999999999&sig=AAAA", s.base);
        let r = s.http().get(&url).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 400 | 404), "{evil}: {}", r.status());
    }
}

/// Makes a small MP4 with FFmpeg's test sources.
fn make_mp4(dir: &Path, name: &str, secs: u32) -> PathBuf {
    let out = dir.join(name);
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=30",
            "-f",
            "lavfi",
        ])
        .args(["-i", "sine=frequency=440:sample_rate=48000", "-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success());
    out
}

#[tokio::test]
async fn uploads_become_hls_and_bad_files_fail_with_a_reason() {
    let s = Server::start().await;
    s.group(
        "up",
        &[
            ("pub", json!({"can_publish": true})),
            ("nopub", json!({"can_publish": false})),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mp4 = make_mp4(dir.path(), "clip.mp4", 4);
    let bytes = std::fs::read(&mp4).unwrap();
    let token = s.token("pub").await;
    let post = |tok: String, ct: &'static str, body: Vec<u8>| {
        let req = s
            .http()
            .post(format!("{}/v1/groups/up/media", s.base))
            .bearer_auth(tok)
            .header("content-type", ct)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, body) = post(s.token("nopub").await, "video/mp4", bytes.clone()).await;
    assert_eq!(st, 403, "{body}");
    let (st, body) = post(token.clone(), "text/plain", bytes.clone()).await;
    assert_eq!(st, 415, "{body}");
    let (st, rec) = post(token.clone(), "video/mp4", bytes.clone()).await;
    assert_eq!(st, 201, "{rec}");
    assert_eq!(rec["status"], "processing");
    let rid = rec["id"].as_str().unwrap().to_owned();

    let (st, bad) = post(token.clone(), "video/mp4", b"this is not a video at all\n".repeat(100)).await;
    assert_eq!(st, 201, "{bad}");
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    let failed = wait_status(&s, &bad_id, "failed").await;
    assert!(failed["error"].as_str().is_some_and(|e| e.len() > 10), "{failed}");

    let ready = wait_status(&s, &rid, "ready").await;
    assert_eq!(ready["kind"], "upload");
    check_recording(&s, &rid, 4.0, 0.5).await;

    // Multipart works too.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes)
            .file_name("clip.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let r = s
        .http()
        .post(format!("{}/v1/groups/up/media", s.base))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let rec: Value = r.json().await.unwrap();
    wait_status(&s, rec["id"].as_str().unwrap(), "ready").await;
}

#[tokio::test]
async fn live_hls_serves_parts_and_blocks_until_the_next_one() {
    let s = Server::start().await;
    s.group(
        "lv",
        &[("watcher", json!({})), ("nosub", json!({"can_subscribe": false}))],
    )
    .await;
    let p = publish(&s, "lv", &s.admin).await;
    let watcher = s.token("watcher").await;
    let (st, _) = s
        .call(
            Method::GET,
            "/v1/groups/lv/live/index.m3u8",
            Some(&s.token("nosub").await),
            None,
        )
        .await;
    assert_eq!(st, 403);

    let path = "/v1/groups/lv/live/index.m3u8";
    let (st, text) = get_text(&s, &format!("{}{path}?token={watcher}", s.base)).await;
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET="), "{text}");
    assert!(text.contains("CAN-BLOCK-RELOAD=YES"), "{text}");
    assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"), "{text}");
    // Wait for a couple of whole segments.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, text) = get_text(&s, &format!("{}{path}?token={watcher}", s.base)).await;
    let part_uri = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PART:").and_then(|r| r.split("URI=\"").nth(1)))
        .and_then(|r| r.split('"').next())
        .expect("a part")
        .to_owned();
    let r = s
        .http()
        .get(format!("{}/v1/groups/lv/live/{part_uri}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap()[0], 0x47);
    let media_seq: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let segs = segments_of(&s.base, path, &text);
    assert!(!segs.is_empty(), "{text}");
    // Blocking reload: ask for the segment after the last complete one.
    let next = media_seq + segs.len() as u64 + 1;
    let t = Instant::now();
    let (st, text) = get_text(&s, &format!("{}{path}?token={watcher}&_HLS_msn={next}", s.base)).await;
    assert_eq!(st, 200, "{text}");
    assert!(t.elapsed() > Duration::from_millis(300), "the reload did not block");
    assert!(text.contains(&format!("\n{next}.ts?")), "segment {next} listed: {text}");
    // ffprobe plays the live playlist.
    let url = format!("{}{path}?token={watcher}", s.base);
    let v = tokio::task::spawn_blocking(move || {
        ffprobe(&[
            "-show_entries",
            "stream=codec_name",
            "-protocol_whitelist",
            "http,tcp,hls",
            &url,
        ])
    })
    .await
    .unwrap();
    let codecs = v["streams"].to_string();
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs}");
    // Too far ahead is a bad request.
    let (st, _) = get_text(&s, &format!("{}{path}?token={watcher}&_HLS_msn={}", s.base, next + 100)).await;
    assert_eq!(st, 400);
    p.close().await;
}

#[tokio::test]
async fn a_sigkill_mid_recording_keeps_what_was_recorded() {
    let s = Server::start().await;
    s.group("crash", &[]).await;
    let p = publish(&s, "crash", &s.admin).await;
    let (st, rec) = s
        .call(Method::POST, "/v1/groups/crash/recordings", Some(&s.admin), None)
        .await;
    assert_eq!(st, 201, "{rec}");
    let rid = rec["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(6)).await;
    p.close().await;
    let s = s.restart_after_kill().await;
    let rec = wait_status(&s, &rid, "ready").await;
    let d = rec["duration_s"].as_f64().unwrap();
    assert!((4.0..=7.0).contains(&d), "recorded up to the kill: {rec}");
    check_recording(&s, &rid, d, 0.5).await;
}

/// moto's S3 server (from the venv scripts/setup.sh builds) on a free loopback port.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let bin = workspace().join("target/s3-venv/bin/moto_server");
        assert!(bin.exists(), "{} missing: run scripts/setup.sh test", bin.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        Moto { child, port }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of moto that can refuse and cut every connection (the store "down").
struct Proxy {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(to: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let d = down.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::Relaxed) {
                    continue; // dropped: connection reset
                }
                let mut cut_rx = cut_rx.clone();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { port, down, cut, task }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::Relaxed);
        if down {
            self.cut.send_modify(|v| *v += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn recording_to_s3_survives_the_store_going_away() {
    let moto = Moto::start();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http.put(format!("{endpoint}/fanfare")).send().await {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("moto did not come up: {other:?}"),
        }
    }
    // The server reaches moto through a proxy the test can cut.
    let proxy = Proxy::start(moto.port).await;
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let config = format!(
        "{}\n[storage]\nkind = \"s3\"\nbucket = \"fanfare\"\nendpoint = \"{via}\"\n\
         access_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n",
        fanfare_tests::TEST_CONFIG
    );
    let s = Server::start_with_config(&config).await;
    s.group("s3", &[]).await;
    let p = publish(&s, "s3", &s.admin).await;
    let (st, rec) = s
        .call(Method::POST, "/v1/groups/s3/recordings", Some(&s.admin), None)
        .await;
    assert_eq!(st, 201, "{rec}");
    let rid = rec["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The store becomes unreachable for 5 s in the middle of the recording.
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (st, body) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(st, 503, "readyz reports the store: {body}");
    proxy.set_down(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, body) = s
        .call(
            Method::POST,
            &format!("/v1/recordings/{rid}/stop"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let rec = wait_status(&s, &rid, "ready").await;
    p.close().await;
    assert!(
        s.log().contains("keeping segments in the spool"),
        "the outage was noticed"
    );
    let d = rec["duration_s"].as_f64().unwrap();
    assert!((9.0..=11.0).contains(&d), "nothing lost: {rec}");
    check_recording(&s, &rid, 10.0, 1.0).await;
    // The objects are in the bucket.
    let listing = http
        .get(format!("{endpoint}/fanfare?list-type=2&prefix=recordings/{rid}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains(".ts</Key>"), "{listing}");
}

#[tokio::test]
async fn settings_record_records_the_call_automatically() {
    let s = Server::start().await;
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&s.admin),
            Some(json!({"id": "auto", "name": "auto", "settings": {"record": true}})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let p = publish(&s, "auto", &s.admin).await;
    // The recording starts once the publisher's track is up (later under load): publish for
    // 4 s from then.
    let deadline = Instant::now() + Duration::from_secs(15);
    let list = loop {
        let (st, list) = s
            .call(Method::GET, "/v1/groups/auto/recordings", Some(&s.admin), None)
            .await;
        assert_eq!(st, 200, "{list}");
        if list["recordings"][0]["status"] == "recording" {
            break list;
        }
        assert!(Instant::now() < deadline, "no auto-recording: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rec = &list["recordings"][0];
    assert_eq!(rec["status"], "recording", "{list}");
    assert_eq!(rec["created_by"], "auto-record");
    let rid = rec["id"].as_str().unwrap().to_owned();
    // The call ends: after the grace period the recording is closed.
    p.close().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, rec) = s
            .call(Method::GET, &format!("/v1/recordings/{rid}"), Some(&s.admin), None)
            .await;
        if rec["status"] == "ready" {
            assert!(rec["duration_s"].as_f64().unwrap() >= 3.0, "{rec}");
            break;
        }
        assert!(Instant::now() < deadline, "never closed: {rec}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Width of the video in a live playlist, as ffprobe reads it.
fn live_width(url: String) -> u64 {
    let v = ffprobe(&[
        "-show_entries",
        "stream=width",
        "-protocol_whitelist",
        "http,tcp,hls",
        &url,
    ]);
    v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["width"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The live program: the first publisher, then the lead speaker once they hold the floor; a
/// moderator's pick goes first, and `null` returns to the speaker.
#[tokio::test]
async fn a_moderator_picks_who_the_live_program_shows() {
    let s = Server::start().await;
    s.group(
        "prog",
        &[("a", json!({})), ("b", json!({})), ("m", json!({"can_moderate": true}))],
    )
    .await;
    let (a, b, m) = (s.token("a").await, s.token("b").await, s.token("m").await);
    // a publishes 360p first, then b publishes 720p (silent for now).
    let pa = publish(&s, "prog", &a).await;
    let b_level = fanfare_tests::rtc_client::AudioLevel::default();
    let opts = fanfare_tests::rtc_client::ClientOptions {
        fixture: workspace().join("assets/media/720p30-h264.h264"),
        audio_level: Some(b_level.clone()),
        ..Default::default()
    };
    let pb = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=prog", &b, opts)
        .await
        .expect("publish b");
    assert!(pb.wait_connected(Duration::from_secs(15)).await);

    let path = "/v1/groups/prog/live/program";
    let (st, _) = s
        .call(Method::PUT, path, Some(&a), Some(json!({"participant": "b"})))
        .await;
    assert_eq!(st, 403, "only moderators choose the program");
    let (st, _) = s
        .call(
            Method::PUT,
            path,
            Some(&m),
            Some(json!({"participant": "no such user!"})),
        )
        .await;
    assert_eq!(st, 400);

    let live = format!("{}/v1/groups/prog/live/index.m3u8?token={m}", s.base);
    let wait_two = format!("{live}&_HLS_msn=1");
    let r = s.http().get(&live).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s.http().get(&wait_two).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let url = live.clone();
    let w = tokio::task::spawn_blocking(move || live_width(url)).await.unwrap();
    assert_eq!(w, 640, "the first publisher is the program");

    // b speaks: the program follows the lead speaker (once b has held the floor a moment).
    b_level.set(20);
    program_shows(&live, 1280, "the program never followed b, the speaker").await;
    // A moderator's pick goes first, even while b speaks.
    let (st, body) = s
        .call(Method::PUT, path, Some(&m), Some(json!({"participant": "a"})))
        .await;
    assert_eq!(st, 200, "{body}");
    program_shows(&live, 640, "the program never switched to a, the moderator's pick").await;
    // Automatic again: b, the lead speaker.
    let (st, body) = s
        .call(Method::PUT, path, Some(&m), Some(json!({"participant": null})))
        .await;
    assert_eq!(st, 200, "{body}");
    program_shows(&live, 1280, "the program never went back to b").await;
    pa.close().await;
    pb.close().await;
}

/// Waits (up to 20 s) until the live playlist at `live` shows a picture `width` wide: a
/// switch lands at the new source's next keyframe.
async fn program_shows(live: &str, width: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let url = live.to_owned();
        let w = tokio::task::spawn_blocking(move || live_width(url)).await.unwrap();
        if w == width {
            return;
        }
        assert!(Instant::now() < deadline, "{why} (width {w})");
    }
}

#[tokio::test]
async fn an_empty_recording_stops_plays_as_empty_and_deletes() {
    let s = Server::start().await;
    s.group("quiet", &[]).await;
    let (st, rec) = s
        .call(Method::POST, "/v1/groups/quiet/recordings", Some(&s.admin), None)
        .await;
    assert_eq!(st, 201, "{rec}");
    let rid = rec["id"].as_str().unwrap().to_owned();
    let (st, rec) = s
        .call(
            Method::POST,
            &format!("/v1/recordings/{rid}/stop"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{rec}");
    assert_eq!(rec["status"], "ready");
    assert_eq!(rec["duration_s"], 0.0);
    let (st, text) = get_text(
        &s,
        &format!("{}/v1/recordings/{rid}/index.m3u8?token={}", s.base, s.admin),
    )
    .await;
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("#EXT-X-ENDLIST") && !text.contains(".ts"), "{text}");
    let (st, body) = s
        .call(Method::DELETE, &format!("/v1/recordings/{rid}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 204, "{body}");
}
