//! RTSP camera ingest against a real camera (GStreamer's RTSP server, `tests/rtsp/server.py`):
//! a WHEP subscriber receives the camera's frames; the camera restarting is survived without
//! the subscriber rejoining; bad sources give a clear status; permissions; restart of stored
//! ingests with the server; Opus reaches WebRTC viewers as is and live HLS as AAC; H.265 goes
//! to live HLS and recordings only; `rtsps://` cameras (GStreamer's server with a self-signed
//! certificate) through the TLS bridge, pinned or refused; cameras through the RTSP-over-HTTP
//! tunnel (`"transport": "http"`), and tunnels to what is not one; a camera with a main and a
//! sub stream publishes both; cameras added and removed 200 times leave nothing behind.

use std::process::Command;
use std::time::{Duration, Instant};

use fanfare_tests::camera::{free_port, Camera};
use fanfare_tests::rtc_client::{ClientError, ClientOptions, WhepSubscriber};
use fanfare_tests::Server;
use reqwest::Method;
use serde_json::{json, Value};

/// Fast retries so tests stay short.
const CONFIG: &str = "[testing]\nfault_injection = true\n[ingest]\nbackoff_min_ms = 300\nbackoff_max_ms = 1500\nread_timeout_s = 4\nconnect_timeout_s = 4\non_demand_close_after_s = 1\n";

async fn create(s: &Server, token: &str, body: Value) -> (u16, Value) {
    s.call(Method::POST, "/v1/ingests", Some(token), Some(body)).await
}

/// Polls the ingest until `pred` holds (or `wait` passes); returns the last view.
async fn wait_for(s: &Server, id: &str, wait: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let (st, v) = s
            .call(Method::GET, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
            .await;
        assert_eq!(st, 200, "{v}");
        if pred(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_status(s: &Server, id: &str, status: &str, wait: Duration) -> Value {
    let v = wait_for(s, id, wait, |v| v["status"] == status).await;
    assert_eq!(v["status"], status, "ingest never became {status}: {v}");
    v
}

/// Plays `participant` in `group` over WHEP as the holder of `token`.
async fn play(s: &Server, group: &str, participant: &str, token: &str) -> Result<WhepSubscriber, ClientError> {
    WhepSubscriber::connect(
        &s.base,
        &format!("/v1/groups/{group}/whep?participant={participant}"),
        token,
    )
    .await
}

/// Creates an ingest (`on_demand` or not) of the camera on `port` in group `cams` (as admin);
/// its id.
async fn create_camera(s: &Server, port: u16, on_demand: bool) -> String {
    let (st, created) = create(
        s,
        &s.admin,
        json!({"url": format!("rtsp://127.0.0.1:{port}/cam"), "groups": ["cams"], "on_demand": on_demand}),
    )
    .await;
    assert_eq!((st, &created["on_demand"]), (201, &json!(on_demand)), "{created}");
    created["id"].as_str().expect("id").to_string()
}

async fn call_participants(s: &Server, gid: &str) -> Vec<Value> {
    let (st, call) = s
        .call(Method::GET, &format!("/v1/groups/{gid}/call"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 200, "{call}");
    call["participants"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_reaches_a_whep_subscriber_and_survives_a_camera_restart() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let port = free_port();
    let camera = Camera::start(port, &["--audio"]);
    let mut watcher = s.ws(&viewer).await;
    assert_eq!(watcher.join("cams").await["type"], "joined");

    let (st, created) = create(
        &s,
        &s.admin,
        json!({"url": camera.url(), "name": "Gate", "groups": ["cams"], "record": false}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert!(
        ["connecting", "live"].contains(&created["status"].as_str().unwrap_or("")),
        "{created}"
    );
    wait_status(&s, &id, "live", Duration::from_secs(15)).await;

    // The camera is a participant of the call, with source `ingest`.
    let participant = format!("ingest-{id}");
    let parts = call_participants(&s, "cams").await;
    let cam = parts
        .iter()
        .find(|p| p["user"] == participant.as_str())
        .unwrap_or_else(|| panic!("{parts:?}"));
    let tracks = cam["tracks"].as_array().expect("tracks");
    assert!(tracks.iter().all(|t| t["source"] == "ingest"), "{cam}");
    assert!(tracks.iter().any(|t| t["codec"] == "video/H264"), "{cam}");
    let aac = camera.audio == "aac";
    if aac {
        // Published for HLS and recordings, with an Opus companion for WebRTC viewers.
        assert!(tracks.iter().any(|t| t["codec"] == "audio/mpeg4-generic"), "{cam}");
        assert!(tracks.iter().any(|t| t["codec"] == "audio/opus"), "{cam}");
    }

    // A WHEP subscriber gets whole H.264 frames, starting with a keyframe.
    let sub = play(&s, "cams", &participant, &viewer)
        .await
        .expect("WHEP playback of the camera");
    assert!(sub.wait_connected(Duration::from_secs(10)).await, "subscriber connects");
    assert!(
        sub.wait_keyframes(1, Duration::from_secs(10)).await,
        "a keyframe arrives: {:?}",
        sub.counts()
    );
    assert!(
        sub.wait_frames(30, Duration::from_secs(10)).await,
        "frames flow: {:?}",
        sub.counts()
    );
    assert_eq!(sub.counts().video_mime.as_deref(), Some("video/H264"));
    if aac {
        // The camera's AAC, heard as Opus: 20 ms packets carrying the tone, not silence.
        assert!(
            sub.wait_until(Duration::from_secs(10), |c| c.audio_packets >= 100)
                .await,
            "Opus from the AAC: {:?}",
            sub.counts()
        );
        let c = sub.counts();
        assert_eq!(c.audio_tracks, 1, "{c:?}");
        assert!(c.audio_bytes / c.audio_packets > 20, "a tone, not silence: {c:?}");
    }

    // The camera dies: the ingest retries, and the call grades the camera's link lost; the
    // camera comes back on the same port after ~5 s.
    watcher.expect_graded(&participant, "excellent").await;
    drop(camera);
    let killed = Instant::now();
    let v = wait_status(&s, &id, "retrying", Duration::from_secs(10)).await;
    assert!(v["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    watcher.expect_graded(&participant, "lost").await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(killed.elapsed())).await;
    let before = sub.counts();
    let _camera = Camera::start(port, &["--audio"]);
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    // The same subscriber, without rejoining, gets frames again, from a keyframe.
    assert!(
        sub.wait_until(Duration::from_secs(15), |c| c.frames >= before.frames + 30
            && c.keyframes > before.keyframes)
            .await,
        "frames resume after the camera restart: before {before:?}, now {:?}",
        sub.counts()
    );
    if aac {
        assert!(
            sub.wait_until(Duration::from_secs(10), |c| c.audio_packets
                >= before.audio_packets + 100)
                .await,
            "Opus resumes after the camera restart: before {before:?}, now {:?}",
            sub.counts()
        );
    }
    watcher.expect_graded(&participant, "excellent").await;
    let v = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;
    assert!(v["reconnects"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(
        v["frames"].as_u64().unwrap_or(0) > 60 && v["bytes"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );

    // Delete: stopped, gone from the list and the call.
    let (st, v) = s
        .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("stopped")), "{v}");
    let (st, _) = s
        .call(Method::GET, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 404);
    let deadline = Instant::now() + Duration::from_secs(5);
    while call_participants(&s, "cams")
        .await
        .iter()
        .any(|p| p["user"] == participant.as_str())
    {
        assert!(Instant::now() < deadline, "the camera left the call");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sub.close().await;
}

/// Sends `signal` (`STOP`, `CONT`) to the camera process this test started.
fn signal(camera: &Camera, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), camera.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} the camera");
}

/// A camera that stops sending but keeps its connection open (its process is stopped) is
/// given up after the read timeout, retried, and live again once it sends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_freezes_is_retried_after_the_read_timeout_and_resumes() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[]).await;
    let camera = Camera::start(free_port(), &[]);
    let (st, created) = create(&s, &s.admin, json!({"url": camera.url(), "groups": ["cams"]})).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    wait_status(&s, &id, "live", Duration::from_secs(15)).await;

    signal(&camera, "STOP");
    let frozen = Instant::now();
    let v = wait_status(&s, &id, "retrying", Duration::from_secs(12)).await;
    let waited = frozen.elapsed();
    assert!(
        v["last_error"].as_str().is_some_and(|e| e.contains("read timeout")),
        "{v}"
    );
    // Not before the 4 s read timeout (less the status poll's 200 ms).
    assert!(waited >= Duration::from_millis(3_700), "gave up after {waited:?}");

    signal(&camera, "CONT");
    let v = wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    let frames = v["frames"].as_u64().unwrap_or(0);
    let v = wait_for(&s, &id, Duration::from_secs(10), |v| {
        v["frames"].as_u64().unwrap_or(0) >= frames + 30
    })
    .await;
    assert!(v["frames"].as_u64().unwrap_or(0) >= frames + 30, "frames resume: {v}");
    assert!(v["reconnects"].as_u64().unwrap_or(0) >= 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_give_a_clear_status_and_no_crash() {
    let s = Server::start_with_config(&format!("{CONFIG}allow_remote = false\n")).await;
    s.group("g", &[]).await;

    // A port answering HTTP instead of RTSP.
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http_port = http.local_addr().expect("addr").port();
    let responder = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = http.accept().await {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    let cam_port = free_port();
    let camera = Camera::start(cam_port, &["--user", "u", "--password", "sesame"]);

    let cases = [
        ("closed port", format!("rtsp://127.0.0.1:{}/cam", free_port())),
        ("http server", format!("rtsp://127.0.0.1:{http_port}/cam")),
        ("wrong password", format!("rtsp://u:wrongpass@127.0.0.1:{cam_port}/cam")),
    ];
    let mut ids = Vec::new();
    for (what, url) in &cases {
        let (st, v) = create(&s, &s.admin, json!({"url": url, "groups": ["g"]})).await;
        assert_eq!(st, 201, "{what}: {v}");
        ids.push((what, v["id"].as_str().expect("id").to_string()));
    }
    for (what, id) in &ids {
        let v = wait_for(&s, id, Duration::from_secs(15), |v| {
            v["status"] == "retrying" && v["last_error"].as_str().is_some_and(|e| !e.is_empty())
        })
        .await;
        assert_eq!(v["status"], "retrying", "{what}: {v}");
        let err = v["last_error"].as_str().unwrap_or("");
        assert!(!err.is_empty(), "{what}: {v}");
        assert!(!v.to_string().contains("wrongpass"), "{what}: credentials leaked: {v}");
        eprintln!("{what}: {err}");
    }
    let wrong = &ids[2].1;
    let v = wait_for(&s, wrong, Duration::from_secs(1), |_| true).await;
    assert_eq!(v["url"], format!("rtsp://***@127.0.0.1:{cam_port}/cam"), "{v}");
    assert!(!s.log().contains("wrongpass"), "the password reached the log");

    // The right credentials (digest) work.
    let (st, v) = create(
        &s,
        &s.admin,
        json!({"url": format!("rtsp://u:sesame@127.0.0.1:{cam_port}/cam"), "groups": ["g"], "transport": "tcp"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    wait_status(&s, v["id"].as_str().expect("id"), "live", Duration::from_secs(15)).await;

    // Refused at once.
    for (url, code) in [
        ("file:///etc/passwd".to_string(), "ingest_invalid_url"),
        ("http://127.0.0.1/cam".to_string(), "ingest_invalid_url"),
        ("rtsp:///nohost".to_string(), "ingest_invalid_url"),
        ("rtsp://10.1.2.3/cam".to_string(), "ingest_host_not_allowed"),
    ] {
        let (st, v) = create(&s, &s.admin, json!({"url": url, "groups": ["g"]})).await;
        assert_eq!((st, v["error"]["code"].as_str()), (400, Some(code)), "{url}: {v}");
    }
    let (st, v) = create(&s, &s.admin, json!({"url": "rtsp://127.0.0.1/x", "groups": []})).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = create(
        &s,
        &s.admin,
        json!({"url": "rtsp://127.0.0.1/x", "groups": ["g"], "transport": "sctp"}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = create(&s, &s.admin, json!({"url": "rtsp://127.0.0.1/x", "groups": ["nope"]})).await;
    assert_eq!(st, 404, "{v}");

    let (st, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, 200, "the server is still up");
    let (_, list) = s.call(Method::GET, "/v1/ingests", Some(&s.admin), None).await;
    for v in list["ingests"].as_array().expect("list") {
        let (st, _) = s
            .call(
                Method::DELETE,
                &format!("/v1/ingests/{}", v["id"].as_str().unwrap_or("")),
                Some(&s.admin),
                None,
            )
            .await;
        assert_eq!(st, 200);
    }
    responder.abort();
    drop(camera);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_needs_can_publish_in_every_group() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("g1", &[("pub", json!({})), ("mod", json!({}))]).await;
    s.group("g2", &[("pub", json!({"can_publish": false}))]).await;
    let (publisher, outsider) = (s.token("pub").await, s.token("outsider").await);
    let url = format!("rtsp://127.0.0.1:{}/cam", free_port());

    let (st, v) = create(&s, &publisher, json!({"url": url, "groups": ["g1", "g2"]})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, v) = create(&s, &s.admin, json!({"url": url, "groups": ["g1", "g2"]})).await;
    assert_eq!(st, 201, "{v}");
    let admin_id = v["id"].as_str().expect("id").to_string();
    let (st, v) = create(&s, &publisher, json!({"url": url, "groups": ["g1"]})).await;
    assert_eq!(st, 201, "{v}");
    let own_id = v["id"].as_str().expect("id").to_string();

    // Visibility: the outsider sees nothing; the member of g1 (can_list) sees both.
    let (_, list) = s.call(Method::GET, "/v1/ingests", Some(&outsider), None).await;
    assert_eq!(list["ingests"].as_array().map(|a| a.len()), Some(0), "{list}");
    let (st, _) = s
        .call(Method::GET, &format!("/v1/ingests/{own_id}"), Some(&outsider), None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/ingests/{own_id}"), Some(&outsider), None)
        .await;
    assert_eq!(st, 404);
    let (_, list) = s.call(Method::GET, "/v1/ingests", Some(&publisher), None).await;
    assert_eq!(list["ingests"].as_array().map(|a| a.len()), Some(2), "{list}");

    // Deleting: a plain member may not delete the admin's ingest; the creator may delete theirs.
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/ingests/{admin_id}"),
            Some(&publisher),
            None,
        )
        .await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = s
        .call(Method::DELETE, &format!("/v1/ingests/{own_id}"), Some(&publisher), None)
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("stopped")), "{v}");
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/ingests/{admin_id}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 200);

    let (_, doc) = s.call(Method::GET, "/v1/openapi.json", None, None).await;
    for path in ["/v1/ingests", "/v1/ingests/{id}"] {
        assert!(doc["paths"][path].is_object(), "openapi lists {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_ingest_restarts_with_the_server() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[]).await;
    let camera = Camera::start(free_port(), &[]);
    let (st, v) = create(
        &s,
        &s.admin,
        json!({"url": camera.url(), "groups": ["cams"], "transport": "udp"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    wait_status(&s, &id, "live", Duration::from_secs(15)).await;

    let s = s.restart_after_kill().await;
    let v = wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    assert_eq!(v["transport"], "udp", "{v}");
    let parts = call_participants(&s, "cams").await;
    assert!(
        parts.iter().any(|p| p["user"] == format!("ingest-{id}").as_str()),
        "{parts:?}"
    );
    drop(camera);
}

/// Duration and codecs of an HLS playlist URL, as ffprobe reads it.
fn probe(url: &str) -> (f64, String) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_entries",
            "format=duration:stream=codec_name",
        ])
        .args(["-protocol_whitelist", "http,tcp,hls", url])
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let d = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (d, v["streams"].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_camera_keeps_one_recording_across_a_camera_restart_and_plays_live() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("yard", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let port = free_port();
    let camera = Camera::start(port, &["--audio"]);
    let (st, created) = create(
        &s,
        &s.admin,
        json!({"url": camera.url(), "name": "Yard", "groups": ["yard"], "record": true}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    wait_status(&s, &id, "live", Duration::from_secs(15)).await;

    // The camera is the group's live HLS program.
    let live = format!("{}/v1/groups/yard/live/index.m3u8?token={viewer}", s.base);
    // The first request starts the program; a blocking reload waits for two whole segments.
    let r = s.http().get(&live).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s.http().get(format!("{live}&_HLS_msn=1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, codecs) = tokio::task::spawn_blocking(move || probe(&live)).await.unwrap();
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    // The camera goes away for a while and comes back: the same recording goes on.
    drop(camera);
    wait_status(&s, &id, "retrying", Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let camera = Camera::start(port, &["--audio"]);
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (st, list) = s
        .call(Method::GET, "/v1/groups/yard/recordings", Some(&viewer), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let recs = list["recordings"].as_array().expect("recordings").clone();
    assert_eq!(recs.len(), 1, "one recording across the reconnect: {list}");
    assert_eq!(recs[0]["kind"], "ingest");
    assert_eq!(recs[0]["status"], "recording");
    let rid = recs[0]["id"].as_str().unwrap().to_owned();

    // Deleting the camera ends its recording.
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 200);
    drop(camera);
    let deadline = Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let (_, rec) = s
            .call(Method::GET, &format!("/v1/recordings/{rid}"), Some(&viewer), None)
            .await;
        if rec["status"] == "ready" {
            break rec;
        }
        assert!(Instant::now() < deadline, "recording not closed: {rec}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let d = rec["duration_s"].as_f64().unwrap();
    assert!(d >= 4.0, "both stretches recorded: {rec}");
    let url = format!("{}/v1/recordings/{rid}/index.m3u8?token={viewer}", s.base);
    let text = s.http().get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains("#EXT-X-DISCONTINUITY"),
        "the camera's gap is marked: {text}"
    );
    let (probed, codecs) = tokio::task::spawn_blocking(move || probe(&url)).await.unwrap();
    assert!(codecs.contains("h264"), "{codecs}");
    assert!((probed - d).abs() < 1.5, "ffprobe {probed} s vs listed {d} s");
}

/// The video frames of a finite media URL (a segment, a VOD playlist) as ffprobe decodes them,
/// each with the frame `entries` asked for (e.g. `key_frame`, `pict_type`).
fn probe_frames(url: &str, entries: &str) -> Vec<Value> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            &format!("frame={entries}"),
            "-protocol_whitelist",
            "file,http,tcp,hls",
            url,
        ])
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    v["frames"].as_array().cloned().unwrap_or_default()
}

/// Decoded video frames and the first frame's keyframe flag of a finite media URL.
fn decode_video(url: &str) -> (u64, bool) {
    let frames = probe_frames(url, "key_frame");
    (frames.len() as u64, frames.first().is_some_and(|f| f["key_frame"] == 1))
}

/// Starts `gid`'s live HLS and waits (blocking reload) until two whole segments exist; returns
/// the playlist URL and the playlist.
async fn live_playlist(s: &Server, gid: &str, token: &str) -> (String, String) {
    let live = format!("{}/v1/groups/{gid}/live/index.m3u8?token={token}", s.base);
    let r = s.http().get(&live).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s.http().get(format!("{live}&_HLS_msn=1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    (live, r.text().await.unwrap_or_default())
}

/// The codecs of the camera's published tracks, as the call lists them.
async fn camera_codecs(s: &Server, gid: &str, participant: &str) -> Vec<String> {
    let parts = call_participants(s, gid).await;
    let cam = parts
        .iter()
        .find(|p| p["user"] == participant)
        .unwrap_or_else(|| panic!("{parts:?}"));
    cam["tracks"]
        .as_array()
        .expect("tracks")
        .iter()
        .filter_map(|t| t["codec"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_camera_reaches_webrtc_viewers_as_is_and_live_hls_as_aac() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("porch", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let camera = Camera::start(free_port(), &["--audio", "opus"]);
    assert_eq!(camera.audio, "opus");
    let (st, created) = create(&s, &s.admin, json!({"url": camera.url(), "groups": ["porch"]})).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let v = wait_status(&s, &id, "live", Duration::from_secs(15)).await;
    let participant = format!("ingest-{id}");
    let codecs = camera_codecs(&s, "porch", &participant).await;
    assert!(
        codecs.contains(&"video/H264".to_string()) && codecs.contains(&"audio/opus".to_string()),
        "{codecs:?} / {v}"
    );

    // A WHEP viewer gets the camera's Opus packets (no transcoding) beside the H.264 frames.
    let sub = play(&s, "porch", &participant, &viewer)
        .await
        .expect("WHEP playback of the camera");
    assert!(sub.wait_connected(Duration::from_secs(10)).await, "subscriber connects");
    assert!(
        sub.wait_until(Duration::from_secs(10), |c| c.frames >= 30
            && c.keyframes >= 1
            && c.audio_packets >= 50)
            .await,
        "video frames and Opus packets flow: {:?}",
        sub.counts()
    );
    let c = sub.counts();
    assert_eq!((c.video_tracks, c.audio_tracks), (1, 1), "{c:?}");
    assert_eq!(c.video_mime.as_deref(), Some("video/H264"));
    // Opus packets of a 20 ms sine are small (tens to a few hundred bytes), never empty.
    let per_packet = c.audio_bytes / c.audio_packets.max(1);
    assert!((3..1000).contains(&per_packet), "{c:?}");

    // Live HLS carries the Opus as AAC (the segmenter's transcoding path).
    let (live, _) = live_playlist(&s, "porch", &viewer).await;
    let (_, codecs) = tokio::task::spawn_blocking(move || probe(&live)).await.unwrap();
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs}");
    assert!(!codecs.contains("opus"), "{codecs}");

    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 200);
    sub.close().await;
    drop(camera);
}

/// Bytes each of `tracks` receives over `window`.
async fn bytes_in_over(s: &Server, tracks: &[String], window: Duration) -> Vec<f64> {
    let mut before = Vec::new();
    for t in tracks {
        before.push(s.metric_with("fanfare_track_bytes_in", &format!("track=\"{t}\"")).await);
    }
    tokio::time::sleep(window).await;
    let mut grew = Vec::new();
    for (t, b) in tracks.iter().zip(before) {
        grew.push(s.metric_with("fanfare_track_bytes_in", &format!("track=\"{t}\"")).await - b);
    }
    grew
}

/// A camera whose session carries two H.264 streams (a main and a sub stream) and audio: each
/// stream becomes a track of the camera's participant, in the camera's order. Both video
/// tracks carry their stream; a WHEP viewer of the camera gets the main stream (the first);
/// live HLS plays. After the camera restarts each stream goes back onto its own track.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_with_a_main_and_a_sub_stream_publishes_both_as_tracks() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("gate", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let port = free_port();
    let camera = Camera::start(port, &["--audio", "--second-video"]);
    let (st, created) = create(&s, &s.admin, json!({"url": camera.url(), "groups": ["gate"]})).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let v = wait_status(&s, &id, "live", Duration::from_secs(15)).await;
    let participant = format!("ingest-{id}");
    let parts = call_participants(&s, "gate").await;
    let cam = parts
        .iter()
        .find(|p| p["user"] == participant.as_str())
        .unwrap_or_else(|| panic!("{parts:?}"));
    let tracks = cam["tracks"].as_array().expect("tracks");
    let of_kind = |kind: &str| -> Vec<String> {
        tracks
            .iter()
            .filter(|t| t["kind"] == kind)
            .filter_map(|t| t["id"].as_str().map(String::from))
            .collect()
    };
    let video = of_kind("video");
    assert_eq!(video.len(), 2, "two video tracks: {cam} / {v}");
    // AAC, and the Opus track WebRTC viewers hear it on.
    let audio = 2 * usize::from(camera.audio == "aac");
    assert_eq!(of_kind("audio").len(), audio, "{cam}");
    assert_eq!(v["tracks"].as_array().map(Vec::len), Some(2 + audio), "{v}");

    // Both video tracks carry their stream: the main one (320x240, a ball, ~150 kbit/s) on the
    // first, the sub stream (160x120 noise at 600 kbit/s) on the second.
    let grew = bytes_in_over(&s, &video, Duration::from_secs(3)).await;
    assert!(grew[0] > 1_000.0 && grew[1] > grew[0] * 2.0, "main, sub: {grew:?}");

    // A viewer of the camera (one video section) gets the main stream.
    let sub = play(&s, "gate", &participant, &viewer)
        .await
        .expect("WHEP playback of the camera");
    assert!(
        sub.wait_until(Duration::from_secs(10), |c| c.frames >= 30).await,
        "{:?}",
        sub.counts()
    );
    assert_eq!(sub.counts().resolution, Some((320, 240)), "{:?}", sub.counts());
    let (live, _) = live_playlist(&s, "gate", &viewer).await;
    let (_, codecs) = tokio::task::spawn_blocking(move || probe(&live)).await.unwrap();
    assert!(codecs.contains("h264"), "{codecs}");

    // The camera restarts: each stream is back on its own track.
    drop(camera);
    wait_status(&s, &id, "retrying", Duration::from_secs(10)).await;
    let _camera = Camera::start(port, &["--audio", "--second-video"]);
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    let grew = bytes_in_over(&s, &video, Duration::from_secs(3)).await;
    assert!(
        grew[0] > 1_000.0 && grew[1] > grew[0] * 2.0,
        "after the restart, main, sub: {grew:?}"
    );
    let parts = call_participants(&s, "gate").await;
    let cam = parts
        .iter()
        .find(|p| p["user"] == participant.as_str())
        .expect("still in the call");
    assert_eq!(
        cam["tracks"].as_array().map(Vec::len),
        Some(2 + audio),
        "the same tracks: {cam}"
    );

    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 200);
    sub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h265_camera_goes_to_live_hls_recordings_and_to_webrtc_viewers_as_h265_or_h264() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("dock", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let camera = Camera::start(free_port(), &["--video", "h265", "--audio"]);
    let (st, created) = create(
        &s,
        &s.admin,
        json!({"url": camera.url(), "name": "Dock", "groups": ["dock"], "record": true}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let v = wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    assert!(
        v["tracks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["codec"] == "video/H265")),
        "{v}"
    );
    let participant = format!("ingest-{id}");
    let codecs = camera_codecs(&s, "dock", &participant).await;
    assert!(codecs.contains(&"video/H265".to_string()), "{codecs:?}");

    // A viewer whose offer names H.265 (as Safari's does) gets the camera's H.265 as is: the
    // pictures it receives decode, from the first keyframe, the cached one.
    let whep = format!("/v1/groups/dock/whep?participant={participant}");
    let sub = WhepSubscriber::connect(&s.base, &whep, &viewer)
        .await
        .expect("WHEP playback in H.265");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = sub.counts();
    assert_eq!(
        (c.video_tracks, c.video_mime.as_deref(), c.video_seq_skipped),
        (1, Some("video/H265"), 0),
        "{c:?}"
    );
    let stream = sub.h265_stream();
    sub.stop().await.expect("stop play");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("webrtc.h265");
    std::fs::write(&path, &stream).expect("write the received stream");
    let frames = tokio::task::spawn_blocking(move || probe_frames(path.to_str().unwrap_or(""), "key_frame"))
        .await
        .unwrap();
    assert!(
        frames.len() >= 60,
        "{} pictures decode from {} bytes",
        frames.len(),
        stream.len()
    );
    assert_eq!(
        frames.first().map(|f| f["key_frame"].clone()),
        Some(json!(1)),
        "{frames:?}"
    );

    // One whose offer names no H.265 (most browsers) gets the camera's H.264 companion
    // instead: the H.265 re-encoded by the server while someone watches it, at the camera's
    // size, whole frames from a keyframe; and its AAC as Opus.
    assert_eq!(s.metric("fanfare_reencoded_tracks").await, 0.0, "nobody watches it yet");
    let sub = WhepSubscriber::connect_opts(
        &s.base,
        &whep,
        &viewer,
        ClientOptions {
            offer_h265: false,
            ..Default::default()
        },
    )
    .await
    .expect("WHEP playback in H.264");
    assert!(
        sub.wait_until(Duration::from_secs(15), |c| c.frames >= 60
            && c.resolution == Some((320, 240)))
            .await,
        "{:?}",
        sub.counts()
    );
    let c = sub.counts();
    let audio = u32::from(camera.audio == "aac");
    assert_eq!(
        (c.video_tracks, c.video_mime.as_deref(), c.audio_tracks),
        (1, Some("video/H264"), audio),
        "{c:?}"
    );
    assert!(c.first_keyframe.is_some(), "{c:?}");
    assert_eq!(s.metric("fanfare_reencoded_tracks").await, 1.0);
    sub.stop().await.expect("stop play");
    // The re-encode stops a few seconds after its last viewer left.
    assert_eq!(
        s.metric_settles_within("fanfare_reencoded_tracks", 0.0, Duration::from_secs(10))
            .await,
        0.0,
        "the re-encode stops once unwatched"
    );

    // Live HLS: HEVC (+ AAC) passed through; a whole segment decodes from a keyframe.
    let (live, text) = live_playlist(&s, "dock", &viewer).await;
    let probe_url = live.clone();
    let (_, codecs) = tokio::task::spawn_blocking(move || probe(&probe_url)).await.unwrap();
    assert!(codecs.contains("hevc"), "{codecs}");
    if camera.audio == "aac" {
        assert!(codecs.contains("aac"), "{codecs}");
    }
    let segment = text
        .lines()
        .rfind(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| format!("{}/v1/groups/dock/live/{l}", s.base))
        .unwrap_or_else(|| panic!("a segment in {text}"));
    let (frames, key) = tokio::task::spawn_blocking(move || decode_video(&segment))
        .await
        .unwrap();
    // 1 s segments at 30 fps, cut on the camera's keyframes (every 30 frames).
    assert!(frames >= 20 && key, "{frames} frames, first a keyframe: {key}");
    eprintln!("live HLS segment: {frames} HEVC frames decoded");

    // The recording is HEVC too, and plays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, list) = s
        .call(Method::GET, "/v1/groups/dock/recordings", Some(&viewer), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let rid = list["recordings"][0]["id"].as_str().expect("a recording").to_owned();
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, rec) = s
            .call(Method::GET, &format!("/v1/recordings/{rid}"), Some(&viewer), None)
            .await;
        if rec["status"] == "ready" {
            // Its poster is decoded from an H.265 keyframe.
            let poster = rec["poster_url"].as_str().expect("poster_url").to_owned();
            let r = s.http().get(format!("{}{poster}", s.base)).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(&r.bytes().await.unwrap()[..2], &[0xff, 0xd8]);
            break;
        }
        assert!(Instant::now() < deadline, "recording not closed: {rec}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let url = format!("{}/v1/recordings/{rid}/index.m3u8?token={viewer}", s.base);
    let probe_url = url.clone();
    let (_, codecs) = tokio::task::spawn_blocking(move || probe(&probe_url)).await.unwrap();
    assert!(codecs.contains("hevc"), "{codecs}");
    let (frames, key) = tokio::task::spawn_blocking(move || decode_video(&url)).await.unwrap();
    assert!(frames >= 60 && key, "{frames} frames, first a keyframe: {key}");
    eprintln!("recording: {frames} HEVC frames decoded");
    let log = s.log();
    assert!(!log.contains("segmenter refused"), "the muxer took every frame:\n{log}");

    let (st, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, 200, "the server is still up");
    sub.close().await;
    drop(camera);
}

/// The picture types (`I`, `P`, `B`) of a finite media URL's video, in display order.
fn picture_types(url: &str) -> Vec<String> {
    probe_frames(url, "pict_type")
        .iter()
        .filter_map(|f| f["pict_type"].as_str().map(str::to_owned))
        .collect()
}

/// Plays camera `id` in group `yard` over WHEP from its first keyframe and returns the whole
/// frames per second it receives over 3 s (after 2 s, past a switch to a re-encode), every one
/// in display order and none incomplete.
async fn webrtc_fps(s: &Server, id: &str, viewer: &str) -> f64 {
    let sub = play(s, "yard", &format!("ingest-{id}"), viewer)
        .await
        .expect("WHEP playback of the camera");
    assert!(
        sub.wait_keyframes(1, Duration::from_secs(10)).await,
        "{:?}",
        sub.counts()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = sub.counts().frames;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = sub.counts();
    assert_eq!(c.frames_out_of_order, 0, "{c:?}");
    assert_eq!(c.incomplete_frames, 0, "no gap the viewer would NACK: {c:?}");
    sub.stop().await.expect("stop play");
    (c.frames - from) as f64 / 3.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_with_b_frames_keeps_every_frame_in_live_hls_and_webrtc_gets_them_in_order_re_encoded() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("yard", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    // Two B-frames between references: frames arrive in decode order, RTP carries display times.
    let camera = Camera::start(free_port(), &["--bframes", "2"]);
    let (st, created) = create(
        &s,
        &s.admin,
        json!({"url": camera.url(), "name": "Yard", "groups": ["yard"]}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;

    // Wait for segment 3, past the first keyframes (the reordering is learnt on the first GOP).
    let live = format!("{}/v1/groups/yard/live/index.m3u8?token={viewer}", s.base);
    let r = s.http().get(&live).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut text = String::new();
    for msn in 1..=4 {
        let r = s.http().get(format!("{live}&_HLS_msn={msn}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        text = r.text().await.unwrap_or_default();
    }
    let lines: Vec<&str> = text.lines().collect();
    // The newest whole segment and its EXTINF.
    let (extinf, uri) = lines
        .windows(2)
        .rev()
        .find_map(|w| {
            let d = w[0]
                .strip_prefix("#EXTINF:")?
                .trim_end_matches(',')
                .parse::<f64>()
                .ok()?;
            Some((d, w[1]))
        })
        .unwrap_or_else(|| panic!("a segment in {text}"));
    let segment = format!("{}/v1/groups/yard/live/{uri}", s.base);
    let types = tokio::task::spawn_blocking(move || picture_types(&segment))
        .await
        .unwrap();
    let expected = (extinf * 30.0).round() as usize;
    let b = types.iter().filter(|t| *t == "B").count();
    // Every frame of the segment decodes (before decode times were derived, the B-frames,
    // two thirds of them, were dropped).
    assert!(
        types.len() + 2 >= expected && b * 2 >= expected,
        "{} frames ({b} B) in a {extinf} s segment, expected about {expected}: {types:?}",
        types.len()
    );
    assert_eq!(types.first().map(String::as_str), Some("I"), "{types:?}");
    let log = s.log();
    assert!(log.contains("B-frames"), "the server noticed the reordering:\n{log}");

    // A WebRTC viewer gets every frame in display order, as browsers' WebRTC decoders need:
    // the camera re-encoded by the server (its scaled layer) while someone watches.
    let per_s = webrtc_fps(&s, &id, &viewer).await;
    assert!((25.0..=33.0).contains(&per_s), "about 30 frames/s: {per_s}");

    // Without a re-encode slot (`max_reencodes = 0`): the reference frames only (one in three
    // here), still in display order.
    let s = Server::start_with_config(&format!("{CONFIG}[rtc]\nmax_reencodes = 0\n")).await;
    s.group("yard", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let (st, created) = create(&s, &s.admin, json!({"url": camera.url(), "groups": ["yard"]})).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    let per_s = webrtc_fps(&s, &id, &viewer).await;
    assert!((6.0..=14.0).contains(&per_s), "about 10 frames/s of 30: {per_s}");
    assert_eq!(s.metric("fanfare_scaled_layers").await, 0.0);
    drop(camera);
}

/// A camera whose B-frames are references too (B-pyramid: they cannot be left out without
/// breaking the frames after them): WebRTC viewers get its re-encode, every frame in display
/// order; nothing of it is broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_with_a_b_pyramid_reaches_webrtc_viewers_re_encoded_in_order() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("yard", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let camera = Camera::start(free_port(), &["--bframes", "3", "--b-pyramid"]);
    let (st, created) = create(&s, &s.admin, json!({"url": camera.url(), "groups": ["yard"]})).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    let per_s = webrtc_fps(&s, &id, &viewer).await;
    assert!((25.0..=33.0).contains(&per_s), "about 30 frames/s: {per_s}");
    drop(camera);
}

/// A self-signed certificate for 127.0.0.1 in a temporary directory (PEM files for the camera),
/// and its SHA-256 fingerprint (of the DER) as plain lowercase hex.
struct CameraCert {
    dir: tempfile::TempDir,
    fingerprint: String,
}

impl CameraCert {
    fn new() -> CameraCert {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), certified.signing_key.serialize_pem()).expect("write key");
        let digest = <sha2::Sha256 as sha2::Digest>::digest(certified.cert.der().as_ref());
        let fingerprint = digest.iter().map(|b| format!("{b:02x}")).collect();
        CameraCert { dir, fingerprint }
    }

    /// `--tls-cert`/`--tls-key` for `tests/rtsp/server.py`.
    fn args(&self) -> Vec<String> {
        let path = |f: &str| self.dir.path().join(f).to_string_lossy().into_owned();
        vec![
            "--tls-cert".into(),
            path("cert.pem"),
            "--tls-key".into(),
            path("key.pem"),
        ]
    }

    /// The fingerprint as openssl prints it (`AB:CD:...`).
    fn colon_fingerprint(&self) -> String {
        let upper = self.fingerprint.to_uppercase();
        upper
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Starts a camera serving only RTSP over TLS with `cert`, plus `extra` arguments.
fn tls_camera(port: u16, cert: &CameraCert, extra: &[&str]) -> Camera {
    let mut args: Vec<String> = cert.args();
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Camera::start(port, &args)
}

/// Established IPv4 TCP connections (`/proc/net/tcp` of the test's network namespace) whose
/// remote port is `port`: clients of that server.
fn clients_of(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote = fields.get(2).and_then(|a| a.rsplit(':').next());
            let state = fields.get(3).copied();
            state == Some("01") && remote.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
        })
        .count()
}

/// A WHEP subscriber (token `viewer`) to `participant` in group `cams`, once it has H.264
/// frames: connected, a keyframe and 30 frames within 10 s each; `how` says where they come
/// from in the failure messages.
async fn watch_h264(s: &Server, viewer: &str, participant: &str, how: &str) -> WhepSubscriber {
    let sub = play(s, "cams", participant, viewer)
        .await
        .unwrap_or_else(|e| panic!("WHEP playback of the camera {how}: {e}"));
    assert!(sub.wait_connected(Duration::from_secs(10)).await, "subscriber connects");
    assert!(
        sub.wait_until(Duration::from_secs(10), |c| c.keyframes >= 1 && c.frames >= 30)
            .await,
        "frames flow {how}: {:?}",
        sub.counts()
    );
    assert_eq!(sub.counts().video_mime.as_deref(), Some("video/H264"));
    sub
}

/// Waits for ingest `id` to count 30 frames more than `v` (its view) shows.
async fn frames_advance(s: &Server, id: &str, v: &Value) {
    let frames = v["frames"].as_u64().unwrap_or(0);
    let v = wait_for(s, id, Duration::from_secs(10), |v| {
        v["frames"].as_u64().unwrap_or(0) >= frames + 30
    })
    .await;
    assert!(
        v["frames"].as_u64().unwrap_or(0) >= frames + 30,
        "frames after the restart: {v}"
    );
}

/// Cameras added and removed over and over leave nothing behind: 200 ingests of a camera with
/// audio (its AAC transcoded to Opus for a WebRTC viewer), five at a time, each live and
/// watched before it is deleted. The tracks, legs and connections go back to none, and the
/// server's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_added_and_removed_leave_nothing_behind() {
    const AT_ONCE: usize = 5;
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[]).await;
    let port = free_port();
    let _camera = Camera::start(port, &["--audio"]);
    let cycle = || async {
        let id = create_camera(&s, port, false).await;
        wait_status(&s, &id, "live", Duration::from_secs(15)).await;
        let viewer = play(&s, "cams", &format!("ingest-{id}"), &s.admin)
            .await
            .expect("play the camera");
        assert!(
            viewer.wait_frames(2, Duration::from_secs(10)).await,
            "{:?}",
            viewer.counts()
        );
        viewer.stop().await.expect("DELETE the playback");
        let (st, v) = s
            .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
            .await;
        assert_eq!(st, 200, "{v}");
    };
    let rounds = |n: usize| async move {
        for _ in 0..n {
            futures_util::future::join_all((0..AT_ONCE).map(|_| cycle())).await;
        }
    };
    let settled = || async {
        assert_eq!(
            s.metric_settles("fanfare_tracks", 0.0).await,
            0.0,
            "every camera track is released"
        );
        assert_eq!(s.metric_settles("fanfare_subscriber_legs", 0.0).await, 0.0);
        no_connection_within(port, Duration::from_secs(5)).await;
    };
    // Warm-up: the allocator's arenas and the server's pools reach their working size. Alone,
    // RSS grew over the first 25 to 50 ingests, then by about 11 kB an ingest (most likely the
    // database's cache of their records) over 275 more; in the full suite, up to 9 MB over 100. Each
    // camera's tracks being dropped is `fanfare_tracks` (counted down when one is freed); a
    // camera's other state left behind (retina's 64 kB read ring, the depacketizer's, the
    // audio transcoder) would add over 128 kB an ingest, 19 MB over these 150.
    rounds(10).await;
    settled().await;
    let before = s.rss_kb();
    rounds(30).await;
    settled().await;
    let after = s.rss_kb();
    assert!(
        after < before + 12288,
        "RSS grew from {before} kB to {after} kB over 150 ingests after the warm-up"
    );
}

/// Deletes ingest `id` and waits (up to 5 s) until nothing is connected to the camera's `port`.
async fn delete_leaves_no_connection(s: &Server, id: &str, port: u16) {
    let (st, v) = s
        .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("stopped")), "{v}");
    no_connection_within(port, Duration::from_secs(5)).await;
}

/// Waits until nothing is connected to the camera's `port`; panics after `wait`.
async fn no_connection_within(port: u16, wait: Duration) {
    let deadline = Instant::now() + wait;
    while clients_of(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "a connection to the camera outlived the ingest"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The happy path of `rtsps://`: the camera announces its own `rtsps` URL as Content-Base (as
/// real cameras do), so retina's SETUP and PLAY name the camera, not the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsps_camera_with_its_pinned_certificate_goes_live_for_whep_and_restarts_with_the_server() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let cert = CameraCert::new();
    let port = free_port();
    let camera = tls_camera(port, &cert, &["--own-content-base"]);
    let url = format!("rtsps://127.0.0.1:{port}/cam");

    // The pin as openssl prints it; stored and shown as plain lowercase hex.
    let (st, created) = create(
        &s,
        &s.admin,
        json!({"url": url, "name": "Gate", "groups": ["cams"], "tls_fingerprint": cert.colon_fingerprint()}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["url"], url.as_str(), "{created}");
    assert_eq!(created["tls_fingerprint"], cert.fingerprint.as_str(), "{created}");
    assert_eq!(created["transport"], "tcp", "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let v = wait_status(&s, &id, "live", Duration::from_secs(15)).await;
    assert_eq!(v["last_error"], Value::Null, "{v}");

    let participant = format!("ingest-{id}");
    let sub = watch_h264(&s, &viewer, &participant, "from the rtsps camera").await;
    let first = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;
    let v = wait_for(&s, &id, Duration::from_secs(5), |v| {
        v["frames"].as_u64().unwrap_or(0) >= first["frames"].as_u64().unwrap_or(0) + 30
    })
    .await;
    assert!(
        v["frames"].as_u64().unwrap_or(0) >= first["frames"].as_u64().unwrap_or(0) + 30
            && v["bytes"].as_u64().unwrap_or(0) > first["bytes"].as_u64().unwrap_or(0),
        "counters grow: {first} then {v}"
    );
    assert_eq!(v["reconnects"], 0, "one connection did it all: {v}");
    // One TLS connection to the camera: the bridge's.
    assert_eq!(
        clients_of(port),
        1,
        "{}",
        std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
    );
    sub.close().await;

    // The record keeps the pin: the ingest comes back with the server.
    let s = s.restart_after_kill().await;
    let v = wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    assert_eq!(v["tls_fingerprint"], cert.fingerprint.as_str(), "{v}");
    frames_advance(&s, &id, &v).await;

    // Deleting ends the bridge: no connection to the camera is left.
    delete_leaves_no_connection(&s, &id, port).await;
    drop(camera);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsps_certificate_problems_are_reported_and_retried() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("g", &[]).await;
    let cert = CameraCert::new();
    let port = free_port();
    let camera = tls_camera(port, &cert, &[]);
    let plain = Camera::start(free_port(), &[]);
    let url = format!("rtsps://127.0.0.1:{port}/cam");
    let wrong = "ab".repeat(32);

    let cases = [
        (
            "wrong fingerprint",
            json!({"url": url, "groups": ["g"], "tls_fingerprint": wrong}),
            vec![
                "TLS handshake with camera failed: certificate fingerprint does not match",
                wrong.as_str(),
                cert.fingerprint.as_str(),
            ],
        ),
        (
            "self-signed, no fingerprint",
            json!({"url": url, "groups": ["g"]}),
            vec![
                "TLS handshake with camera failed: certificate not trusted",
                "unknown issuer",
                cert.fingerprint.as_str(),
            ],
        ),
        (
            "rtsps to a plain RTSP camera",
            json!({"url": format!("rtsps://127.0.0.1:{}/cam", plain.port), "groups": ["g"]}),
            vec!["TLS handshake with camera failed"],
        ),
    ];
    let mut ids = Vec::new();
    for (what, body, _) in &cases {
        let (st, v) = create(&s, &s.admin, body.clone()).await;
        assert_eq!(st, 201, "{what}: {v}");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    for ((what, _, needles), id) in cases.iter().zip(&ids) {
        // Retried with backoff: the failure repeats and is counted.
        let v = wait_for(&s, id, Duration::from_secs(15), |v| {
            v["status"] == "retrying" && v["reconnects"].as_u64().unwrap_or(0) >= 1
        })
        .await;
        assert_eq!(v["status"], "retrying", "{what}: {v}");
        assert!(v["reconnects"].as_u64().unwrap_or(0) >= 1, "{what}: {v}");
        assert_eq!(
            (v["frames"].as_u64(), v["bytes"].as_u64()),
            (Some(0), Some(0)),
            "{what}: {v}"
        );
        let err = v["last_error"].as_str().unwrap_or("");
        for needle in needles {
            assert!(err.contains(needle), "{what}: {needle:?} not in {err:?}");
        }
        eprintln!("{what}: {err}");
    }
    for id in &ids {
        let (st, _) = s
            .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
            .await;
        assert_eq!(st, 200);
    }
    drop((camera, plain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsps_ingest_bodies_are_validated() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("g", &[]).await;
    let pin = "0123456789abcdef".repeat(4);
    for (what, body) in [
        (
            "rtsps over udp",
            json!({"url": "rtsps://127.0.0.1/cam", "groups": ["g"], "transport": "udp"}),
        ),
        (
            "short fingerprint",
            json!({"url": "rtsps://127.0.0.1/cam", "groups": ["g"], "tls_fingerprint": "ab:cd:ef"}),
        ),
        (
            "non-hex fingerprint",
            json!({"url": "rtsps://127.0.0.1/cam", "groups": ["g"], "tls_fingerprint": pin.replace('a', "x")}),
        ),
        (
            "fingerprint on rtsp",
            json!({"url": "rtsp://127.0.0.1/cam", "groups": ["g"], "tls_fingerprint": pin}),
        ),
    ] {
        let (st, v) = create(&s, &s.admin, body).await;
        assert_eq!(st, 400, "{what}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{what}: {v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
    }
    let (st, v) = create(
        &s,
        &s.admin,
        json!({"url": "rtsps://127.0.0.1/cam", "groups": ["g"], "tls_fingerprint": 5}),
    )
    .await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_body")), "{v}");
    // Valid: stored as given (normalized), shown, and none of these left an ingest behind.
    let (st, v) = create(
        &s,
        &s.admin,
        json!({"url": "rtsps://127.0.0.1/cam", "groups": ["g"], "tls_fingerprint": pin.to_uppercase()}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["tls_fingerprint"], pin.as_str(), "{v}");
    let (_, list) = s.call(Method::GET, "/v1/ingests", Some(&s.admin), None).await;
    assert_eq!(list["ingests"].as_array().map(Vec::len), Some(1), "{list}");
    let (st, v) = create(&s, &s.admin, json!({"url": "rtsp://127.0.0.1/cam", "groups": ["g"]})).await;
    assert_eq!((st, &v["tls_fingerprint"]), (201, &Value::Null), "{v}");
}

/// The HTTP tunnel (`"transport": "http"`) to GStreamer's server, which serves RTSP over HTTP
/// on its RTSP port: live for a WHEP subscriber (Digest credentials inside the tunnel, never
/// shown or logged), two connections to the camera (GET and POST), a camera restart survived,
/// the ingest restarted with the server (`transport` stored), and no connection left after
/// `DELETE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_tunnelled_camera_goes_live_for_whep_survives_restarts_and_leaves_no_connection() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let port = free_port();
    let auth = ["--user", "u", "--password", "sesame"];
    let camera = Camera::start(port, &auth);
    let url = format!("rtsp://u:sesame@127.0.0.1:{port}/cam");

    let (st, created) = create(
        &s,
        &s.admin,
        json!({"url": url, "name": "Tunnel", "groups": ["cams"], "transport": "http"}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["transport"], "http", "{created}");
    assert_eq!(created["url"], format!("rtsp://***@127.0.0.1:{port}/cam"), "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let v = wait_status(&s, &id, "live", Duration::from_secs(15)).await;
    assert_eq!(
        (&v["last_error"], &v["transport"]),
        (&Value::Null, &json!("http")),
        "{v}"
    );

    let participant = format!("ingest-{id}");
    let sub = watch_h264(&s, &viewer, &participant, "through the HTTP tunnel").await;
    // The tunnel's two HTTP connections (GET down, POST up), nothing else.
    assert_eq!(
        clients_of(port),
        2,
        "{}",
        std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
    );

    // The camera dies and comes back: retrying, then live again for the same subscriber.
    drop(camera);
    let v = wait_status(&s, &id, "retrying", Duration::from_secs(10)).await;
    assert!(v["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    let before = sub.counts();
    let camera = Camera::start(port, &auth);
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    assert!(
        sub.wait_until(Duration::from_secs(15), |c| c.frames >= before.frames + 30
            && c.keyframes > before.keyframes)
            .await,
        "frames resume after the camera restart: before {before:?}, now {:?}",
        sub.counts()
    );
    let v = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;
    assert!(v["reconnects"].as_u64().unwrap_or(0) >= 1, "{v}");
    sub.close().await;
    assert!(!s.log().contains("sesame"), "the password reached the log");

    // Stored with its transport: the ingest comes back with the server, through the tunnel.
    let s = s.restart_after_kill().await;
    let v = wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    assert_eq!(v["transport"], "http", "{v}");
    assert!(!v.to_string().contains("sesame"), "{v}");
    frames_advance(&s, &id, &v).await;

    // Deleting ends the tunnel: no connection to the camera is left.
    delete_leaves_no_connection(&s, &id, port).await;
    assert!(!s.log().contains("sesame"), "the password reached the log");
    drop(camera);
}

/// A TCP server on loopback answering every request with `answer` and closing; its port.
async fn http_responder(answer: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(answer.as_bytes()).await;
        }
    });
    (port, task)
}

/// `"transport": "http"` against what is not an RTSP tunnel: each is a camera failure with a
/// clear `last_error`, retried with backoff, and the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tunnels_to_non_tunnels_are_reported_and_retried() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("g", &[]).await;
    let (not_found, a) = http_responder("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
    let (web_page, b) = http_responder("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>").await;
    let (rtsp_only, c) = http_responder("RTSP/1.0 400 Bad Request\r\nCSeq: 0\r\n\r\n").await;
    let cases = [
        (
            "404",
            not_found,
            "HTTP tunnel: the camera answered the GET with \"HTTP/1.0 404 Not Found\", not 200",
        ),
        (
            "a web page",
            web_page,
            "HTTP tunnel: the camera answered the GET with Content-Type \"text/html\", not application/x-rtsp-tunnelled",
        ),
        (
            "RTSP without the tunnel",
            rtsp_only,
            "HTTP tunnel: the camera did not answer the GET with HTTP (it sent \"RTSP/1.0 400 Bad Request\")",
        ),
        (
            "closed port",
            free_port(),
            "HTTP tunnel: unable to connect to the camera: ",
        ),
    ];
    let mut ids = Vec::new();
    for (what, port, _) in &cases {
        let url = format!("rtsp://u:hunter22@127.0.0.1:{port}/cam");
        let (st, v) = create(&s, &s.admin, json!({"url": url, "groups": ["g"], "transport": "http"})).await;
        assert_eq!(st, 201, "{what}: {v}");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    for ((what, _, needle), id) in cases.iter().zip(&ids) {
        let v = wait_for(&s, id, Duration::from_secs(15), |v| {
            v["status"] == "retrying" && v["reconnects"].as_u64().unwrap_or(0) >= 1
        })
        .await;
        assert_eq!(v["status"], "retrying", "{what}: {v}");
        assert!(v["reconnects"].as_u64().unwrap_or(0) >= 1, "{what}: {v}");
        assert_eq!(
            (v["frames"].as_u64(), v["tracks"].as_array().map(Vec::len)),
            (Some(0), Some(0)),
            "{what}: {v}"
        );
        let err = v["last_error"].as_str().unwrap_or("");
        assert!(err.starts_with(needle), "{what}: {needle:?} does not start {err:?}");
        assert!(!v.to_string().contains("hunter22"), "{what}: credentials leaked: {v}");
        eprintln!("{what}: {err}");
    }
    assert!(!s.log().contains("hunter22"), "the password reached the log");
    let (st, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, 200, "the server is still up");
    for id in &ids {
        let (st, _) = s
            .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
            .await;
        assert_eq!(st, 200);
    }
    for task in [a, b, c] {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tunnel_ingest_bodies_are_validated() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("g", &[]).await;
    for (what, body, code) in [
        (
            "rtsps through the tunnel",
            json!({"url": "rtsps://127.0.0.1/cam", "groups": ["g"], "transport": "http"}),
            "invalid_argument",
        ),
        (
            "a fingerprint on rtsp through the tunnel",
            json!({"url": "rtsp://127.0.0.1/cam", "groups": ["g"], "transport": "http", "tls_fingerprint": "ab".repeat(32)}),
            "invalid_argument",
        ),
        (
            "transport in capitals",
            json!({"url": "rtsp://127.0.0.1/cam", "groups": ["g"], "transport": "HTTP"}),
            "invalid_body",
        ),
        (
            "an http:// URL",
            json!({"url": "http://127.0.0.1/cam", "groups": ["g"], "transport": "http"}),
            "ingest_invalid_url",
        ),
    ] {
        let (st, v) = create(&s, &s.admin, body).await;
        assert_eq!((st, v["error"]["code"].as_str()), (400, Some(code)), "{what}: {v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
    }
    let (_, v) = create(
        &s,
        &s.admin,
        json!({"url": "rtsps://127.0.0.1/cam", "groups": ["g"], "transport": "http"}),
    )
    .await;
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("\"http\"") && message.contains("rtsps://"), "{v}");
    let (_, list) = s.call(Method::GET, "/v1/ingests", Some(&s.admin), None).await;
    assert_eq!(list["ingests"].as_array().map(Vec::len), Some(0), "{list}");

    // Valid (nothing listens: it retries), shown with its transport, which cannot be patched.
    let (st, v) = create(
        &s,
        &s.admin,
        json!({"url": format!("rtsp://127.0.0.1:{}/cam", free_port()), "groups": ["g"], "transport": "http"}),
    )
    .await;
    assert_eq!((st, &v["transport"]), (201, &json!("http")), "{v}");
    let id = v["id"].as_str().expect("id");
    let (st, v) = s
        .call(Method::GET, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!((st, &v["transport"]), (200, &json!("http")), "{v}");
    for body in [json!({"transport": "tcp"}), json!({"transport": "http"})] {
        let (st, v) = patch(&s, &s.admin, id, body).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("ingest_field_immutable")),
            "{v}"
        );
    }
}

/// `PATCH /v1/ingests/{id}` with `body` as `token`.
async fn patch(s: &Server, token: &str, id: &str, body: Value) -> (u16, Value) {
    s.call(Method::PATCH, &format!("/v1/ingests/{id}"), Some(token), Some(body))
        .await
}

/// Whether `gid`'s call lists `participant`.
async fn in_call(s: &Server, gid: &str, participant: &str) -> bool {
    call_participants(s, gid).await.iter().any(|p| p["user"] == participant)
}

/// Polls `gid`'s call until it lists `participant` (or not, per `listed`), for up to `wait`.
async fn wait_in_call(s: &Server, gid: &str, participant: &str, listed: bool, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if in_call(s, gid, participant).await == listed {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The longest time `sub` went without a new complete frame over the next `window` (sampled
/// every 10 ms).
async fn longest_stall(sub: &WhepSubscriber, window: Duration) -> Duration {
    let end = Instant::now() + window;
    let (mut frames, mut since, mut longest) = (sub.counts().frames, Instant::now(), Duration::ZERO);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = sub.counts().frames;
        if now != frames {
            frames = now;
            since = Instant::now();
        }
        longest = longest.max(since.elapsed());
    }
    longest
}

/// Reads the realtime socket until a `ty` event about `participant` in `group` (within 5 s).
async fn wait_event(ws: &mut fanfare_tests::Ws, ty: &str, group: &str, participant: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next(left).await {
            Some(v) if v["type"] == ty && v["group"] == group && v["participant"] == participant => return v,
            Some(_) => continue,
            None => panic!("no {ty} for {participant} in {group} within 5 s"),
        }
    }
}

/// PATCH moves a live camera between calls: its connection, participant and tracks stay; a
/// viewer in an added group gets frames, a viewer in a kept group is not interrupted, a viewer
/// in a removed group is cut off; the change is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patching_groups_moves_a_live_camera_between_calls_without_a_reconnect() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("a", &[("viewer", json!({}))]).await;
    s.group("b", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let camera = Camera::start(free_port(), &[]);
    let (st, created) = create(&s, &s.admin, json!({"url": camera.url(), "groups": ["a"]})).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let participant = format!("ingest-{id}");
    wait_status(&s, &id, "live", Duration::from_secs(15)).await;

    let sub_a = play(&s, "a", &participant, &viewer).await.expect("WHEP playback in a");
    assert!(
        sub_a.wait_frames(30, Duration::from_secs(10)).await,
        "{:?}",
        sub_a.counts()
    );
    let mut ws = s.ws(&viewer).await;
    assert_eq!(ws.join("a").await["type"], "joined");
    assert_eq!(ws.join("b").await["type"], "joined");
    let before = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;

    // Add b: the same participant and tracks appear there, a's viewer goes on undisturbed.
    let (st, v) = patch(&s, &s.admin, &id, json!({"groups": ["a", "b"]})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["groups"], json!(["a", "b"]), "{v}");
    assert_eq!((&v["id"], &v["participant"]), (&before["id"], &before["participant"]));
    let published = wait_event(&mut ws, "track_published", "b", &participant).await;
    let track_ids: Vec<&Value> = before["tracks"]
        .as_array()
        .expect("tracks")
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert!(
        track_ids.contains(&&published["track"]["id"]),
        "the same track: {published} vs {before}"
    );
    assert!(in_call(&s, "b", &participant).await, "b's call lists the camera");
    let stall = tokio::spawn({
        let (base, viewer, participant) = (s.base.clone(), viewer.clone(), participant.clone());
        async move {
            let sub_b =
                WhepSubscriber::connect(&base, &format!("/v1/groups/b/whep?participant={participant}"), &viewer)
                    .await
                    .expect("WHEP playback in b");
            let got = sub_b
                .wait_until(Duration::from_secs(10), |c| c.keyframes >= 1 && c.frames >= 30)
                .await;
            (sub_b, got)
        }
    });
    let a_stall = longest_stall(&sub_a, Duration::from_secs(3)).await;
    let (sub_b, got) = stall.await.expect("the b viewer's task");
    assert!(got, "b's viewer gets the camera's frames: {:?}", sub_b.counts());
    eprintln!("a's viewer: longest gap between frames while b joined: {a_stall:?}");
    assert!(
        a_stall < Duration::from_millis(800),
        "a's viewer stalled {a_stall:?}: {:?}",
        sub_a.counts()
    );
    assert_eq!(
        sub_a.connection_state(),
        webrtc::peer_connection::RTCPeerConnectionState::Connected
    );
    // b's live HLS takes the camera as its program.
    let live = format!("{}/v1/groups/b/live/index.m3u8?token={viewer}", s.base);
    let r = s.http().get(&live).send().await.expect("live playlist");
    assert_eq!(r.status().as_u16(), 200, "b's live HLS has the camera");
    let v = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;
    assert_eq!(v["reconnects"], before["reconnects"], "no reconnect to the camera: {v}");
    assert_eq!(v["status"], "live", "{v}");

    // Remove a: the camera leaves a's call before the PATCH returns; a's viewer is cut off,
    // b's keeps receiving.
    let (st, v) = patch(&s, &s.admin, &id, json!({"groups": ["b"]})).await;
    assert_eq!((st, &v["groups"]), (200, &json!(["b"])), "{v}");
    assert!(!in_call(&s, "a", &participant).await, "a's call still lists the camera");
    assert!(in_call(&s, "b", &participant).await, "b's call lost the camera");
    wait_event(&mut ws, "track_unpublished", "a", &participant).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        sub_a.no_packets_within(Duration::from_secs(2)).await,
        "a's viewer still receives: {:?}",
        sub_a.counts()
    );
    let b_frames = sub_b.counts().frames;
    assert!(
        sub_b.wait_frames(b_frames + 30, Duration::from_secs(5)).await,
        "b's viewer goes on: {:?}",
        sub_b.counts()
    );
    let v = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;
    assert_eq!(v["reconnects"], before["reconnects"], "{v}");
    sub_a.close().await;
    sub_b.close().await;
    drop(ws);

    // Stored: the server comes back with the new groups.
    let s = s.restart_after_kill().await;
    let v = wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    assert_eq!(v["groups"], json!(["b"]), "{v}");
    assert!(wait_in_call(&s, "b", &participant, true, Duration::from_secs(5)).await);
    assert!(!in_call(&s, "a", &participant).await);
    drop(camera);
}

/// Turning `record` on with PATCH starts a recording of the running camera; turning it off
/// stops and finalizes it (one recording, as long as it was on); the camera stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patching_record_on_then_off_makes_one_recording_of_that_stretch() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("yard", &[("viewer", json!({}))]).await;
    s.group("porch", &[]).await;
    let viewer = s.token("viewer").await;
    let camera = Camera::start(free_port(), &["--audio", "opus"]);
    let (st, created) = create(&s, &s.admin, json!({"url": camera.url(), "groups": ["yard"]})).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let before = wait_status(&s, &id, "live", Duration::from_secs(15)).await;

    let (st, v) = patch(&s, &s.admin, &id, json!({"record": true})).await;
    assert_eq!((st, &v["record"]), (200, &json!(true)), "{v}");
    let on = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (st, v) = patch(&s, &s.admin, &id, json!({"record": false})).await;
    assert_eq!((st, &v["record"]), (200, &json!(false)), "{v}");
    let recorded = on.elapsed().as_secs_f64();
    eprintln!("record was on for {recorded:.2} s");

    let deadline = Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let (st, list) = s
            .call(Method::GET, "/v1/groups/yard/recordings", Some(&viewer), None)
            .await;
        assert_eq!(st, 200, "{list}");
        let recs = list["recordings"].as_array().cloned().unwrap_or_default();
        assert!(recs.len() <= 1, "one recording: {list}");
        if let Some(rec) = recs.first().filter(|r| r["status"] == "ready") {
            break rec.clone();
        }
        assert!(Instant::now() < deadline, "no finished recording: {list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(rec["kind"], "ingest", "{rec}");
    eprintln!("the recording: {rec}");
    let d = rec["duration_s"].as_f64().unwrap_or(0.0);
    // It starts at the camera's next keyframe (one a second).
    assert!(
        (recorded - 1.5..=recorded + 0.5).contains(&d),
        "{d} s recorded of {recorded} s: {rec}"
    );
    crate::recording::check_recording(&s, rec["id"].as_str().expect("id"), d, 0.6).await;

    // Off means off: no new recording starts, and the camera never reconnected.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(recordings(&s, "yard").await.len(), 1);
    let v = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;
    assert_eq!(
        (&v["status"], &v["reconnects"]),
        (&json!("live"), &before["reconnects"]),
        "{v}"
    );

    // On again, then the groups change: a recording whose group stays goes on; one whose
    // group is removed ends there and the camera's first group records from then on.
    let (st, v) = patch(&s, &s.admin, &id, json!({"record": true})).await;
    assert_eq!(st, 200, "{v}");
    let second = wait_recording(&s, "yard", |r| r["status"] == "recording").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, v) = patch(&s, &s.admin, &id, json!({"groups": ["porch", "yard"]})).await;
    assert_eq!(st, 200, "{v}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(recordings(&s, "porch").await.is_empty(), "yard's recording went on");
    let (st, v) = patch(&s, &s.admin, &id, json!({"groups": ["porch"]})).await;
    assert_eq!(st, 200, "{v}");
    let ended = wait_recording(&s, "yard", |r| r["id"] == second["id"] && r["status"] == "ready").await;
    assert!(
        ended["duration_s"].as_f64().unwrap_or(0.0) >= 3.0,
        "not cut by the first change: {ended}"
    );
    wait_recording(&s, "porch", |r| r["status"] == "recording" && r["kind"] == "ingest").await;
    let v = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;
    assert_eq!(v["reconnects"], before["reconnects"], "{v}");
    drop(camera);
}

/// The recordings of `gid`.
async fn recordings(s: &Server, gid: &str) -> Vec<Value> {
    let (st, list) = s
        .call(
            Method::GET,
            &format!("/v1/groups/{gid}/recordings"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{list}");
    list["recordings"].as_array().cloned().unwrap_or_default()
}

/// Polls `gid`'s recordings (up to 20 s) until one satisfies `pred`; returns it.
async fn wait_recording(s: &Server, gid: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let recs = recordings(s, gid).await;
        if let Some(rec) = recs.iter().find(|r| pred(r)) {
            return rec.clone();
        }
        assert!(Instant::now() < deadline, "no such recording in {gid}: {recs:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What PATCH refuses, and who may use it; changes made while the camera is away apply when
/// it comes; an ingest stopped because its groups were deleted starts again in new groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patching_an_ingest_is_validated_and_needs_can_publish_where_it_acts() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("g1", &[("pub", json!({}))]).await;
    s.group("g2", &[("pub", json!({"can_publish": false}))]).await;
    s.group("g3", &[("pub", json!({}))]).await;
    let publisher = s.token("pub").await;
    let port = free_port();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let (st, created) = create(&s, &s.admin, json!({"url": url, "name": "Gate", "groups": ["g1"]})).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();

    for (what, body, status, code) in [
        ("url", json!({"url": url}), 400, "ingest_field_immutable"),
        ("transport", json!({"transport": "udp"}), 400, "ingest_field_immutable"),
        (
            "tls_fingerprint",
            json!({"tls_fingerprint": null}),
            400,
            "ingest_field_immutable",
        ),
        ("an unknown field", json!({"colour": "red"}), 400, "invalid_body"),
        ("empty groups", json!({"groups": []}), 400, "invalid_argument"),
        ("null groups", json!({"groups": null}), 400, "invalid_body"),
        ("a bad group id", json!({"groups": ["no spaces"]}), 400, "invalid_body"),
        ("an empty name", json!({"name": ""}), 400, "invalid_argument"),
        (
            "an unknown group",
            json!({"groups": ["g1", "nope"]}),
            404,
            "group_not_found",
        ),
    ] {
        let (st, v) = patch(&s, &s.admin, &id, body).await;
        assert_eq!((st, v["error"]["code"].as_str()), (status, Some(code)), "{what}: {v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
    }
    let (_, v) = patch(&s, &s.admin, &id, json!({"url": url})).await;
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("delete"), "{v}");
    // POST answers an unknown group the same way.
    let (st, _) = create(&s, &s.admin, json!({"url": url, "groups": ["nope"]})).await;
    assert_eq!(st, 404);
    let (st, v) = patch(&s, &s.admin, "nosuchingest", json!({})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("ingest_not_found")),
        "{v}"
    );

    // A member without can_publish in a group being added, or in one being removed: 403.
    let (st, v) = patch(&s, &publisher, &id, json!({"groups": ["g1", "g2"]})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, v) = patch(&s, &s.admin, &id, json!({"groups": ["g1", "g2"]})).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = patch(&s, &publisher, &id, json!({"groups": ["g1"]})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, v) = patch(&s, &publisher, &id, json!({"name": "Porch"})).await;
    assert_eq!(st, 403, "g2 is still in the list: {v}");
    // Nothing of the refused requests was applied.
    let v = wait_for(&s, &id, Duration::from_secs(1), |_| true).await;
    assert_eq!(
        (&v["groups"], &v["name"]),
        (&json!(["g1", "g2"]), &json!("Gate")),
        "{v}"
    );

    // `{}` changes nothing; the admin moves it to g1 + g3, the member (can_publish in both)
    // renames it, and clears the name.
    let (st, v) = patch(&s, &s.admin, &id, json!({})).await;
    assert_eq!(
        (st, &v["groups"], &v["name"]),
        (200, &json!(["g1", "g2"]), &json!("Gate")),
        "{v}"
    );
    let (st, v) = patch(&s, &s.admin, &id, json!({"groups": ["g3", "g1", "g3"]})).await;
    assert_eq!((st, &v["groups"]), (200, &json!(["g3", "g1"])), "{v}");
    let (st, v) = patch(&s, &publisher, &id, json!({"name": "Porch", "record": false})).await;
    assert_eq!((st, &v["name"], &v["url"]), (200, &json!("Porch"), &json!(url)), "{v}");
    let (st, v) = patch(&s, &publisher, &id, json!({"name": null})).await;
    assert_eq!((st, &v["name"]), (200, &Value::Null), "{v}");
    let (st, v) = patch(&s, &publisher, &id, json!({"name": "Porch"})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "retrying", "no camera yet: {v}");

    // The camera comes: it goes live in the groups it has now, with its new name.
    let camera = Camera::start(port, &[]);
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    let participant = format!("ingest-{id}");
    assert!(wait_in_call(&s, "g3", &participant, true, Duration::from_secs(5)).await);
    assert!(in_call(&s, "g1", &participant).await);
    assert!(!in_call(&s, "g2", &participant).await);
    let named = call_participants(&s, "g3").await;
    assert!(
        named
            .iter()
            .any(|p| p["user"] == participant.as_str() && p["name"] == "Porch"),
        "{named:?}"
    );
    // Renaming a live camera renames it in the calls too.
    let (st, _) = patch(&s, &s.admin, &id, json!({"name": "Yard"})).await;
    assert_eq!(st, 200);
    let named = call_participants(&s, "g1").await;
    assert!(
        named
            .iter()
            .any(|p| p["user"] == participant.as_str() && p["name"] == "Yard"),
        "{named:?}"
    );

    // Its groups deleted, the ingest stops; given groups again, it starts again (the deleted
    // groups need no permission to leave).
    for g in ["g1", "g3"] {
        let (st, v) = s
            .call(Method::DELETE, &format!("/v1/groups/{g}"), Some(&s.admin), None)
            .await;
        assert_eq!(st, 204, "{v}");
    }
    wait_status(&s, &id, "stopped", Duration::from_secs(5)).await;
    let (st, v) = patch(&s, &s.admin, &id, json!({"groups": ["g2"]})).await;
    assert_eq!((st, &v["groups"]), (200, &json!(["g2"])), "{v}");
    wait_status(&s, &id, "live", Duration::from_secs(20)).await;
    assert!(wait_in_call(&s, "g2", &participant, true, Duration::from_secs(5)).await);

    let (_, doc) = s.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert!(
        doc["paths"]["/v1/ingests/{id}"]["patch"].is_object(),
        "openapi lists PATCH"
    );
    drop(camera);
}

/// An on-demand camera (`"on_demand": true`, as MediaMTX's `sourceOnDemand`): connected at
/// creation (its tracks join the call), let go once nobody reads it (`idle`, no connection at
/// the camera), connected again for a WebRTC viewer, who gets a fresh keyframe and frames, and
/// for live HLS; let go again when they leave. `PATCH` turns it off (connected for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_camera_is_connected_only_while_someone_watches() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let port = free_port();
    let _camera = Camera::start(port, &[]);
    let id = create_camera(&s, port, true).await;
    let participant = format!("ingest-{id}");
    // Nobody reads it: idle after a DESCRIBE alone (its tracks, no media), and not connected.
    let v = wait_status(&s, &id, "idle", Duration::from_secs(15)).await;
    assert_eq!(v["frames"], 0, "the camera never streamed: {v}");
    assert_eq!(v["tracks"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(clients_of(port), 0, "no connection at the camera while idle");
    assert!(
        call_participants(&s, "cams")
            .await
            .iter()
            .any(|p| p["user"] == participant.as_str()),
        "an idle camera stays in the call"
    );

    // A WebRTC viewer: connected again; the viewer gets a keyframe and frames.
    let sub = watch_h264(&s, &viewer, &participant, "on demand").await;
    let v = wait_status(&s, &id, "live", Duration::from_secs(5)).await;
    assert_eq!(clients_of(port), 1, "{v}");
    assert_eq!(v["reconnects"], 0, "resuming on demand is not a reconnect: {v}");
    sub.close().await;
    wait_status(&s, &id, "idle", Duration::from_secs(10)).await;
    assert_eq!(clients_of(port), 0);

    // Live HLS reads it too.
    let (live, text) = live_playlist(&s, "cams", &viewer).await;
    assert!(text.contains("#EXTINF"), "{text}");
    let (_, codecs) = tokio::task::spawn_blocking(move || probe(&live)).await.unwrap();
    assert!(codecs.contains("h264"), "{codecs}");
    assert_eq!(
        wait_for(&s, &id, Duration::from_secs(1), |_| true).await["status"],
        "live"
    );

    // Turned off: connected whoever reads it.
    let (st, v) = s
        .call(
            Method::PATCH,
            &format!("/v1/ingests/{id}"),
            Some(&s.admin),
            Some(json!({"on_demand": false})),
        )
        .await;
    assert_eq!((st, &v["on_demand"]), (200, &json!(false)), "{v}");
    let (st, v) = s
        .call(
            Method::PATCH,
            &format!("/v1/ingests/{id}"),
            Some(&s.admin),
            Some(json!({"on_demand": "yes"})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 200);
}

/// `GET /v1/ingests/{id}/snapshot` (extension): a JPEG of the camera's latest picture, for
/// those who may watch it; an idle on-demand camera is connected for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_camera_snapshot_is_a_jpeg_of_its_latest_picture() {
    let s = Server::start_with_config(CONFIG).await;
    s.group(
        "cams",
        &[("viewer", json!({})), ("lister", json!({"can_subscribe": false}))],
    )
    .await;
    let (viewer, lister) = (s.token("viewer").await, s.token("lister").await);
    let port = free_port();
    let _camera = Camera::start(port, &[]);
    let snapshot = |id: String, token: String| {
        let (http, base) = (s.http().clone(), s.base.clone());
        async move {
            let res = http
                .get(format!("{base}/v1/ingests/{id}/snapshot?token={token}"))
                .send()
                .await
                .expect("snapshot request");
            let status = res.status().as_u16();
            let kind = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (status, kind, res.bytes().await.expect("body").to_vec())
        }
    };
    // A whole JPEG (start and end of image) of the camera's 320 x 240 picture (its frame header,
    // SOF0, names the size).
    let is_jpeg = |b: &[u8]| {
        let size = b
            .windows(9)
            .find(|w| w[..2] == [0xff, 0xc0])
            .map(|w| (u16::from_be_bytes([w[7], w[8]]), u16::from_be_bytes([w[5], w[6]])));
        b.starts_with(&[0xff, 0xd8]) && b.ends_with(&[0xff, 0xd9]) && size == Some((320, 240))
    };

    let id = create_camera(&s, port, false).await;
    wait_status(&s, &id, "live", Duration::from_secs(15)).await;
    let (st, kind, body) = snapshot(id.clone(), viewer.clone()).await;
    assert_eq!((st, kind.as_str()), (200, "image/jpeg"));
    assert!(is_jpeg(&body), "{} bytes", body.len());
    // Seeing the ingest (can_list) is not watching it (can_subscribe).
    let (st, _, body) = snapshot(id.clone(), lister.clone()).await;
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    let (st, _, _) = snapshot("nosuchingest".into(), viewer.clone()).await;
    assert_eq!(st, 404);

    // An idle on-demand camera is connected for the snapshot.
    let idle = create_camera(&s, port, true).await;
    wait_status(&s, &idle, "idle", Duration::from_secs(15)).await;
    let (st, kind, body) = snapshot(idle.clone(), viewer.clone()).await;
    assert_eq!(
        (st, kind.as_str()),
        (200, "image/jpeg"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(is_jpeg(&body), "{} bytes", body.len());
    let v = wait_for(&s, &idle, Duration::from_secs(1), |_| true).await;
    assert_eq!(v["reconnects"], 0, "{v}");
}

/// A camera's audio carries no level: the server measures it (decoding the AAC), so a camera
/// that hears something is an active speaker of the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_camera_that_hears_a_sound_is_an_active_speaker() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[("viewer", json!({}))]).await;
    let viewer = s.token("viewer").await;
    let mut ws = s.ws(&viewer).await;
    assert_eq!(ws.join("cams").await["type"], "joined");
    let port = free_port();
    let _camera = Camera::start(port, &["--audio", "aac"]);
    let participant = format!("ingest-{}", create_camera(&s, port, false).await);
    let ev = ws.expect("active_speakers").await;
    assert_eq!(ev["speakers"][0]["user"], participant.as_str(), "{ev}");
    // GStreamer's test tone: a sine at 0.8 of full scale, RMS 0.57 (-5 dBov).
    let level = ev["speakers"][0]["level"].as_f64().unwrap_or(0.0);
    assert!((0.4..0.8).contains(&level), "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_on_demand_camera_stays_disconnected_across_a_restart() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[("viewer", json!({}))]).await;
    let port = free_port();
    let _camera = Camera::start(port, &["--audio", "aac"]);
    let id = create_camera(&s, port, true).await;
    let participant = format!("ingest-{id}");
    // The first connection describes the camera; the record keeps its tracks.
    let before = wait_status(&s, &id, "idle", Duration::from_secs(15)).await;
    let codecs = |v: &Value| -> Vec<String> {
        v["tracks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t["codec"].to_string())
            .collect()
    };
    assert_eq!(codecs(&before).len(), 3, "H.264, AAC and its Opus companion: {before}");

    // Restarted: the tracks are back in the call at once, and the camera is not dialled.
    let s = s.restart_after_kill().await;
    let viewer = s.token("viewer").await;
    let restarted = std::time::Instant::now();
    let v = wait_status(&s, &id, "idle", Duration::from_secs(5)).await;
    assert_eq!(codecs(&v), codecs(&before), "{v}");
    assert!(
        call_participants(&s, "cams")
            .await
            .iter()
            .any(|p| p["user"] == participant.as_str() && p["tracks"].as_array().is_some_and(|t| t.len() == 3)),
        "the remembered tracks are in the call"
    );
    while restarted.elapsed() < Duration::from_secs(3) {
        assert_eq!(clients_of(port), 0, "nobody reads it: no connection after the restart");
        let (_, v) = s
            .call(Method::GET, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
            .await;
        assert_eq!(v["status"], "idle", "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A viewer of the remembered tracks connects it: frames flow on them.
    let sub = watch_h264(&s, &viewer, &participant, "after a restart").await;
    let v = wait_status(&s, &id, "live", Duration::from_secs(5)).await;
    assert_eq!(clients_of(port), 1, "{v}");
    assert_eq!(codecs(&v), codecs(&before), "the same tracks: {v}");
    sub.close().await;
    wait_status(&s, &id, "idle", Duration::from_secs(10)).await;

    // The camera now sends no audio: when next read, its tracks are replaced by what it
    // carries, and the record remembers those for the next restart.
    drop(_camera);
    let _camera = Camera::start(port, &["--audio", "none"]);
    let s = s.restart_after_kill().await;
    let viewer = s.token("viewer").await;
    wait_status(&s, &id, "idle", Duration::from_secs(5)).await;
    // (This viewer's tracks go with the replacement: it only brings the camera back.)
    let sub = play(&s, "cams", &participant, &viewer)
        .await
        .expect("play the remembered tracks");
    let v = wait_for(&s, &id, Duration::from_secs(10), |v| codecs(v).len() == 1).await;
    assert_eq!(codecs(&v), vec!["\"video/H264\"".to_string()], "{v}");
    sub.close().await;
    let s = s.restart_after_kill().await;
    let v = wait_status(&s, &id, "idle", Duration::from_secs(5)).await;
    assert_eq!(codecs(&v), vec!["\"video/H264\"".to_string()], "remembered: {v}");
    assert_eq!(clients_of(port), 0);
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/ingests/{id}"), Some(&s.admin), None)
        .await;
    assert_eq!(st, 200);
}

/// A 720p camera watched by a member capped at VGA: the server scales the camera's picture
/// down for that viewer (a scaled layer, from the camera's next keyframe), while an uncapped
/// viewer gets the camera's 720p as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_capped_below_a_cameras_picture_gets_it_scaled_down() {
    let s = Server::start_with_config(CONFIG).await;
    s.group("cams", &[("free", json!({})), ("capped", json!({}))]).await;
    s.set_member_media("cams", "capped", json!({"max_resolution": "vga"}))
        .await;
    let (free_t, capped_t) = (s.token("free").await, s.token("capped").await);
    let port = free_port();
    let _camera = Camera::start(port, &["--width", "1280", "--height", "720"]);
    let id = create_camera(&s, port, false).await;
    wait_status(&s, &id, "live", Duration::from_secs(15)).await;
    let participant = format!("ingest-{id}");

    let free = play(&s, "cams", &participant, &free_t).await.expect("uncapped play");
    let capped = play(&s, "cams", &participant, &capped_t).await.expect("capped play");
    let wait = Duration::from_secs(20);
    assert!(
        capped
            .wait_until(wait, |c| c.resolution == Some((640, 360)) && c.frames >= 30)
            .await,
        "the vga cap gets the camera scaled to 360p: {:?}",
        capped.counts()
    );
    assert_eq!(capped.counts().resolutions, [(640, 360)], "never above the cap");
    assert!(
        free.wait_until(wait, |c| c.resolution == Some((1280, 720)) && c.frames >= 30)
            .await,
        "{:?}",
        free.counts()
    );
    assert_eq!(free.counts().resolutions, [(1280, 720)], "the camera as sent");
    assert_eq!(s.metric("fanfare_scaled_layers").await, 1.0);
    free.stop().await.expect("stop");
    capped.stop().await.expect("stop");
}
