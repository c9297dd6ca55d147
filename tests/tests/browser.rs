//! Real browsers against the real server: two headless Chromium pages (Debian's
//! `/usr/bin/chromium`, driven by `tests/browser/two_pages.mjs` with playwright-core) open
//! `assets/tools/loopback.html`, each publishes its fake camera with WHIP and plays the other
//! with WHEP. Passes when both pages decode video and the call view lists both publishers. A
//! third test plays a Rust simulcast publish in one page while nftables limits the server's
//! outgoing UDP: the page must drop to a lower layer and get the top one back. A fourth has a
//! page publish with `fanfare.js` (`tests/browser/dynacast.mjs`) and checks that it pauses the
//! simulcast layers nobody receives and resumes them for a viewer (dynacast); a fifth has a
//! page play a simulcast publish with `fanfare.js`'s `adaptTo` (`tests/browser/adaptive.mjs`)
//! and get the layer that covers the size it shows the video at, none while it is hidden
//! (adaptive stream). Two more listen: a page whose fake microphone plays a tone
//! (`tests/browser/speaking.mjs`) is named in `active_speakers`, and a page watching an RTSP
//! camera that sends AAC hears its tone, transcoded to Opus. A page capped at VGA decodes the
//! server's scaled layer of a 720p single-layer publish, and one without H.265 sees an H.265
//! camera through its H.264 companion.
//!
//! Needs `scripts/setup.sh test` (chromium, node, `npm ci` in tests/browser). Like every test it
//! runs inside `scripts/test.sh`'s loopback-only network namespace, so no candidate leaves lo.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanfare_tests::camera::{free_port, Camera};
use fanfare_tests::rtc_client::{ClientOptions, WhepSubscriber, WhipPublisher};
use fanfare_tests::{browser, Server, TEST_CONFIG};
use reqwest::Method;
use serde_json::{json, Value};

/// Longer than the script's own 60 s limit, so its JSON report normally arrives.
const NODE_TIMEOUT: Duration = Duration::from_secs(90);
const GROUP: &str = "room1";

/// Whether the call view lists `user` with a video track.
fn publishes_video(view: &Value, user: &str) -> bool {
    view["participants"].as_array().into_iter().flatten().any(|p| {
        p["user"] == user
            && p["tracks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["kind"] == "video")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_see_each_other() {
    browser::require_tools();
    let s = Server::start().await;
    let pages = two_pages(&s, false).await;
    for page in &pages {
        assert_eq!(page["playProtocol"], "udp", "{page}");
    }
}

/// Chromium given only the server's TCP candidates (the pages drop the answers' UDP ones, as
/// if a firewall blocked UDP) publishes and plays through the server's ICE-TCP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_without_udp_see_each_other_over_ice_tcp() {
    browser::require_tools();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let s = Server::start_with_config(&format!("{TEST_CONFIG}[rtc]\ntcp_port = {port}\n")).await;
    let pages = two_pages(&s, true).await;
    for page in &pages {
        assert_eq!(page["publishProtocol"], "tcp", "{page}");
        assert_eq!(page["playProtocol"], "tcp", "{page}");
    }
}

/// Runs `two_pages.mjs` against `s` (alice and bob in one group; with `tcp_only`, the pages use
/// only the server's TCP candidates), asserts that both pages decode the other's video and that the call view
/// lists both publishing, and returns the pages' reports.
async fn two_pages(s: &Server, tcp_only: bool) -> Vec<Value> {
    let out_dir = browser::output_dir();
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&s.admin),
            Some(json!({"id": GROUP, "name": "Room"})),
        )
        .await;
    assert_eq!(st, 201, "create group: {body}");
    for user in ["alice", "bob"] {
        let (st, body) = s
            .call(
                Method::PUT,
                &format!("/v1/groups/{GROUP}/members/{user}"),
                Some(&s.admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, 201, "add {user}: {body}");
    }
    let (alice, bob) = (s.token("alice").await, s.token("bob").await);

    let started = Instant::now();
    let args = browser::args([
        "--base".into(),
        s.base.clone().into(),
        "--group".into(),
        GROUP.into(),
        "--out".into(),
        out_dir.into_os_string(),
        "--user".into(),
        "alice".into(),
        "--token".into(),
        alice.clone().into(),
        "--user".into(),
        "bob".into(),
        "--token".into(),
        bob.clone().into(),
        "--tcp-only".into(),
        if tcp_only { "yes" } else { "no" }.into(),
    ]);
    // While the pages are open, the call view must list both of them publishing video.
    let done = AtomicBool::new(false);
    let node = async {
        let out = browser::run("two_pages.mjs", args, NODE_TIMEOUT).await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let watch_call = async {
        let mut last = Value::Null;
        while !done.load(Ordering::SeqCst) {
            let (st, view) = s
                .call(Method::GET, &format!("/v1/groups/{GROUP}/call"), Some(&alice), None)
                .await;
            if st == 200 && publishes_video(&view, "alice") && publishes_video(&view, "bob") {
                return Ok(view);
            }
            last = view;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(last)
    };
    let (out, call_view) = tokio::join!(node, watch_call);
    let elapsed = started.elapsed();

    let run = out.unwrap_or_else(|| {
        panic!(
            "two_pages.mjs did not finish within {NODE_TIMEOUT:?}\n--- server log ---\n{}",
            s.log()
        )
    });
    let (report, stderr) = (&run.report, &run.stderr);
    let context = || {
        format!(
            "node exit: {}\nreport: {report}\n--- node stderr ---\n{stderr}\n--- server log ---\n{}",
            run.status,
            s.log()
        )
    };
    println!("browser run took {elapsed:?}: {report}");

    assert!(
        run.success && report["ok"] == true,
        "the browsers failed\n{}",
        context()
    );
    let pages = report["pages"].as_array().cloned().unwrap_or_default();
    assert_eq!(pages.len(), 2, "two pages reported\n{}", context());
    for page in &pages {
        let who = format!("{} watching {}", page["user"], page["peer"]);
        let frames = page["framesDecoded"].as_u64().unwrap_or(0);
        let before = page["framesDecodedBefore"].as_u64().unwrap_or(0);
        assert!(frames > 30, "{who} decoded only {frames} frames\n{}", context());
        assert!(
            frames > before,
            "{who} stopped decoding ({before} then {frames})\n{}",
            context()
        );
        assert!(
            page["videoWidth"].as_u64().unwrap_or(0) > 0,
            "{who} shows no picture\n{}",
            context()
        );
    }
    if let Err(last) = call_view {
        panic!(
            "the call view never listed alice and bob with video while the pages were open; last: {last}\n{}",
            context()
        );
    }
    pages
}

/// Limits the server's outgoing UDP (its shared media port) with nftables in the test's network
/// namespace; the limit goes when this is dropped.
struct UdpLimit {
    table: String,
}

impl UdpLimit {
    /// Drops the server's datagrams from `port` above `kbit_s` (a policer, as a congested link).
    fn new(port: u16, kbit_s: u64) -> UdpLimit {
        let table = format!("fanfare_limit_{port}");
        let rules = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0;\n    \
             udp sport {port} limit rate over {} kbytes/second burst 16 kbytes counter drop\n  }}\n}}\n",
            (kbit_s / 8).max(1)
        );
        let path = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&path, rules).expect("write the nft rules");
        let st = std::process::Command::new("nft")
            .arg("-f")
            .arg(&path)
            .status()
            .expect("run nft (run `scripts/setup.sh test`)");
        let _ = std::fs::remove_file(&path);
        assert!(st.success(), "nft could not add the limit: {st}");
        UdpLimit { table }
    }

    /// Datagrams dropped so far (the rule's counter).
    fn dropped(&self) -> u64 {
        let out = std::process::Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .expect("run nft");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "packets" {
                return words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
        }
        0
    }
}

impl Drop for UdpLimit {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// The flags of a page script that samples its stats into `stats` until `stop` exists
/// (`watch_page.mjs`, `dynacast.mjs`), for `user` in `group`.
fn sampled_page_args(
    s: &Server,
    group: &str,
    user: &str,
    token: &str,
    stats: &std::path::Path,
    stop: &std::path::Path,
) -> Vec<std::ffi::OsString> {
    let mut args = browser::args(["--base", &s.base, "--group", group, "--user", user, "--token", token]);
    for (flag, path) in [("--stats-file", stats), ("--stop-file", stop)] {
        args.extend([flag.into(), path.as_os_str().to_owned()]);
    }
    args
}

/// The last stats a sampling page script wrote (`Null` before the first).
fn page_stats(path: &std::path::Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Waits up to `limit` for the page's stats to satisfy `pred`; returns the last stats and
/// whether they did.
async fn page_until(path: &std::path::Path, limit: Duration, pred: impl Fn(&Value) -> bool) -> (Value, bool) {
    let deadline = Instant::now() + limit;
    loop {
        let s = page_stats(path);
        if pred(&s) {
            return (s, true);
        }
        if Instant::now() > deadline {
            return (s, false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Chromium sends us receiver reports, and REMB only once its estimate falls: with the
/// server's outgoing bandwidth limited below the top simulcast layer, the loss and the falling
/// estimate move the browser viewer to a lower layer; once the limit goes it climbs back to the
/// top (through a padding probe, which Chromium takes) and stays there. The publisher is a
/// Rust client sending three layers (180p, 360p, 720p).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_a_congested_link_gets_a_lower_layer_and_the_top_one_back() {
    browser::require_tools();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let s = Server::start_with_config(&format!("{TEST_CONFIG}[rtc]\nudp_port = {port}\n")).await;
    s.group("lossy", &[("pub", json!({})), ("viewer", json!({}))]).await;
    let (pub_t, viewer_t) = (s.token("pub").await, s.token("viewer").await);
    let opts = ClientOptions {
        audio: false,
        simulcast: true,
        ..Default::default()
    };
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=lossy", &pub_t, opts)
        .await
        .expect("simulcast publish");
    assert!(publisher.wait_connected(Duration::from_secs(15)).await);

    // The layers' measured bitrates (smoothed over a few seconds).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (st, call) = s.call(Method::GET, "/v1/groups/lossy/call", Some(&pub_t), None).await;
    assert_eq!(st, 200, "{call}");
    let kbps: Vec<u64> = call["participants"][0]["tracks"][0]["layer_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["kbps"].as_u64())
        .collect();
    assert_eq!(kbps.len(), 3, "three layers measured: {call}");
    // Room for the lowest layer, not the top one. (These fixtures' middle layer is not
    // cheaper than the top one, so the viewer goes to the lowest.)
    let limit_kbit = kbps[2] / 2;
    assert!(
        kbps[0] < limit_kbit * 3 / 4,
        "the lowest layer fits under the limit: {kbps:?}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let (stats, stop) = (dir.path().join("stats.json"), dir.path().join("stop"));
    let mut args = sampled_page_args(&s, "lossy", "viewer", &viewer_t, &stats, &stop);
    args.extend(browser::args(["--peer", "pub"]));
    // Longer than the script's own 150 s limit; the steps below take about 100 s at most.
    let node = tokio::spawn(browser::run("watch_page.mjs", args, Duration::from_secs(180)));
    let width = |v: &Value| v["videoWidth"].as_u64().unwrap_or(0);

    let (first, ok) = page_until(&stats, Duration::from_secs(30), |v| {
        width(v) == 1280 && v["framesDecoded"].as_u64().unwrap_or(0) > 30
    })
    .await;
    assert!(ok, "the browser plays the top layer: {first}\n{}", s.log());

    let caps = || s.log_lines("congestion cap changed");
    let limit = UdpLimit::new(port, limit_kbit);
    let (low, ok) = page_until(&stats, Duration::from_secs(30), |v| (1..1280).contains(&width(v))).await;
    assert!(
        ok,
        "limited to {limit_kbit} kbit/s (layers {kbps:?} kbit/s), the browser stays on the top layer: {low}\n{}",
        caps()
    );
    let dropped = limit.dropped();
    drop(limit);
    let (back, ok) = page_until(&stats, Duration::from_secs(30), |v| width(v) == 1280).await;
    assert!(
        ok,
        "without the limit the browser gets the top layer back: {back}\n{}",
        s.log()
    );
    let frames = back["framesDecoded"].as_u64().unwrap_or(0);
    let (more, ok) = page_until(&stats, Duration::from_secs(5), |v| {
        v["framesDecoded"].as_u64().unwrap_or(0) > frames + 30
    })
    .await;
    assert!(ok, "and keeps decoding: {more}\n{}", caps());
    // On the clean link it stays there (no flapping).
    let (moved, flapped) = page_until(&stats, Duration::from_secs(8), |v| width(v) != 1280).await;
    assert!(
        !flapped,
        "the browser left the top layer on a clean link: {moved}\n{}",
        caps()
    );

    std::fs::write(&stop, b"").expect("write the stop file");
    let run = node.await.expect("node task").expect("watch_page.mjs finishes");
    println!("watch_page: {}\ncongestion caps:\n{}", run.report, caps());
    assert!(run.success, "{}\n{}", run.report, run.stderr);
    let widths: Vec<u64> = run.report["widths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(widths.first(), Some(&1280), "{widths:?}\n{}", caps());
    assert_eq!(widths.last(), Some(&1280), "{widths:?}\n{}", caps());
    assert!(widths.iter().any(|w| *w < 1280), "{widths:?}\n{}", caps());
    assert!(
        s.metric("fanfare_congestion_cap_changes_total{direction=\"down\"}")
            .await
            >= 1.0
    );
    // Chromium answers our transport-wide sequence numbers with TWCC feedback. (The policer
    // drops without queueing, so it is the loss in receiver reports that moves the viewer.)
    let feedback = s.metric("fanfare_twcc_feedback_received_total").await;
    assert!(feedback >= 10.0, "{feedback}");
    // The policer's losses: Chromium asks for them again, and the server resends them. (When
    // the delay estimate moved the viewer down before the policer dropped anything, there is
    // nothing to ask for; `sfu::a_viewer_that_loses_packets…` covers resending on its own.)
    let nacked = s.metric_total("fanfare_track_nacked_packets").await;
    let resent = s.metric("fanfare_retransmissions_sent_total").await;
    println!("the policer dropped {dropped} datagrams; {nacked} packets NACKed, {resent} resent");
    assert!(
        dropped == 0 || (nacked >= 1.0 && resent >= 1.0),
        "the policer dropped {dropped} datagrams: {nacked} packets NACKed, {resent} resent"
    );
    // The climb back was probed first: Chromium negotiated RTX, took the padding (copies of
    // packets it had, on the RTX SSRC) without a hitch in decoding (above), and its TWCC
    // feedback showed the link carried the higher rate.
    let passed = s.metric("fanfare_congestion_probes_total{result=\"passed\"}").await;
    let padding = s.metric("fanfare_probe_packets_sent_total").await;
    println!(
        "probes passed: {passed}, padding packets: {padding}\n{}",
        s.log_lines("prob")
    );
    assert!(passed >= 1.0 && padding > 0.0, "{}", s.log_lines("prob"));
    publisher.stop().await.expect("stop publish");
}

/// The simulcast layers a `dynacast.mjs` sample shows, smallest picture first: (RID, bytes
/// sent so far, width).
fn sent_layers(v: &Value) -> Vec<(String, u64, u64)> {
    let mut layers: Vec<(String, u64, u64)> = v["layers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(rid, l)| {
            let n = |k: &str| l[k].as_u64().unwrap_or(0);
            (rid.clone(), n("bytesSent"), n("width"))
        })
        .collect();
    layers.sort_by_key(|l| l.2);
    layers
}

/// Bytes layer `rid` sent so far, in a `dynacast.mjs` sample.
fn layer_bytes(v: &Value, rid: &str) -> u64 {
    v["layers"][rid]["bytesSent"].as_u64().unwrap_or(0)
}

/// The last `layers_wanted` a `dynacast.mjs` page heard.
fn last_wanted(v: &Value) -> Vec<String> {
    let last = v["wanted"].as_array().and_then(|w| w.last()).cloned();
    last.and_then(|l| serde_json::from_value(l).ok()).unwrap_or_default()
}

/// Dynacast: a browser publishing its camera as simulcast with `fanfare.js` is told which layers
/// anyone receives (`layers_wanted` on its socket) and stops sending the others. With nobody
/// watching it sends only its lowest layer; a viewer who plays it gets the top layer back at
/// once, and once the viewer leaves the top layer is paused again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_publisher_pauses_the_layers_nobody_receives_and_resumes_them_for_a_viewer() {
    browser::require_tools();
    let s = Server::start().await;
    s.group("dyn", &[("pub", json!({})), ("viewer", json!({}))]).await;
    let (pub_t, viewer_t) = (s.token("pub").await, s.token("viewer").await);
    // Listens to the call: Chromium's paced simulcast uplink is graded, and well.
    let mut listener = s.ws(&viewer_t).await;
    assert_eq!(listener.join("dyn").await["type"], "joined");
    let dir = tempfile::tempdir().expect("temp dir");
    let (stats, stop) = (dir.path().join("stats.json"), dir.path().join("stop"));
    let args = sampled_page_args(&s, "dyn", "pub", &pub_t, &stats, &stop);
    let node = tokio::spawn(browser::run("dynacast.mjs", args, Duration::from_secs(150)));
    let logs = || s.log_lines("layers wanted");

    // The page sends its camera as two layers or more.
    let (first, ok) = page_until(&stats, Duration::from_secs(30), |v| {
        let l = sent_layers(v);
        l.len() >= 2 && l.iter().all(|(_, bytes, width)| *bytes > 0 && *width > 0)
    })
    .await;
    assert!(ok, "the page publishes simulcast: {first}");
    let layers = sent_layers(&first);
    let (low, top) = (layers[0].0.clone(), layers[layers.len() - 1].0.clone());

    // Nobody watches: only the lowest layer is wanted, and the page stops sending the top one.
    let (v, ok) = page_until(&stats, Duration::from_secs(20), |v| last_wanted(v) == [low.clone()]).await;
    assert!(ok, "only {low} is asked for: {v}\n{}", logs());
    let growth = |rid: &str, a: &Value, b: &Value| layer_bytes(b, rid).saturating_sub(layer_bytes(a, rid));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = page_stats(&stats);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = page_stats(&stats);
    assert!(growth(&top, &a, &b) < 2_000, "{top} paused: {a} -> {b}");
    assert!(growth(&low, &a, &b) > 10_000, "{low} still sent: {a} -> {b}");

    // A viewer plays: the top layer is asked for again, the page sends it, the viewer gets it.
    let viewer = WhepSubscriber::connect_opts(
        &s.base,
        "/v1/groups/dyn/whep",
        &viewer_t,
        ClientOptions {
            audio: false,
            ..Default::default()
        },
    )
    .await
    .expect("play");
    let (v, ok) = page_until(&stats, Duration::from_secs(10), |v| last_wanted(v).contains(&top)).await;
    assert!(ok, "{top} is asked for again: {v}\n{}", logs());
    let a = page_stats(&stats);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = page_stats(&stats);
    assert!(growth(&top, &a, &b) > 10_000, "{top} resumed: {a} -> {b}");
    assert!(
        viewer
            .wait_until(Duration::from_secs(15), |c| c.video_packets > 100)
            .await,
        "the viewer receives video: {:?}",
        viewer.counts()
    );

    // The viewer leaves: the top layer is paused again.
    viewer.stop().await.expect("stop play");
    let (v, ok) = page_until(&stats, Duration::from_secs(20), |v| last_wanted(v) == [low.clone()]).await;
    assert!(ok, "{top} is let go again: {v}\n{}", logs());

    // Over the whole run (layers paused and resumed), the publisher's link was excellent: its
    // loss and jitter as the server measured them, never poor or lost.
    assert_graded_well(&mut listener, "pub").await;

    std::fs::write(&stop, b"").expect("write the stop file");
    let run = node.await.expect("node task").expect("dynacast.mjs finishes");
    println!("dynacast: {}\n{}", run.report, logs());
    assert!(run.success, "{}\n{}", run.report, run.stderr);
}

/// Reads the `connection_quality` events `listener` got so far and asserts that `user` was
/// graded, first `excellent`, and never `poor` or `lost` (a clean loopback link, as the server
/// measures it and as Chromium's own receiver reports tell it).
async fn assert_graded_well(listener: &mut fanfare_tests::Ws, user: &str) {
    let mut grades = Vec::new();
    while let Some(ev) = listener.next(Duration::from_millis(200)).await {
        if ev["type"] == "connection_quality" {
            let of_user = ev["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["user"] == user);
            grades.extend(of_user.map(|p| p["quality"].as_str().unwrap_or("").to_owned()));
        }
    }
    println!("{user} graded {grades:?}");
    assert!(
        grades.first().map(String::as_str) == Some("excellent")
            && grades.iter().all(|q| q == "excellent" || q == "good"),
        "{user}: {grades:?}"
    );
}

/// Adaptive stream: a browser playing a three-layer simulcast publish (180p, 360p, 720p) with
/// `fanfare.js`'s `adaptTo` tells the server the size it shows the video at, and gets the
/// smallest layer that covers it: 180p in a 320x180 box, 720p at 1280x720, 360p at 600x300;
/// none while the video is hidden (decoding stops), and 180p again, decoding, once it is shown
/// in a 320x180 box.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_gets_the_layer_that_covers_the_size_it_shows_the_video_at() {
    browser::require_tools();
    let s = Server::start().await;
    s.group("adapt", &[("pub", json!({})), ("viewer", json!({}))]).await;
    let (pub_t, viewer_t) = (s.token("pub").await, s.token("viewer").await);
    let opts = ClientOptions {
        audio: false,
        simulcast: true,
        ..Default::default()
    };
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=adapt", &pub_t, opts)
        .await
        .expect("simulcast publish");
    assert!(publisher.wait_connected(Duration::from_secs(15)).await);
    // Listens to the call: Chromium's downlink is graded from its receiver reports (loss,
    // jitter, round trip), and well.
    let mut listener = s.ws(&pub_t).await;
    assert_eq!(listener.join("adapt").await["type"], "joined");
    let args = browser::args([
        "--base",
        &s.base,
        "--group",
        "adapt",
        "--user",
        "viewer",
        "--token",
        &viewer_t,
        "--peer",
        "pub",
        "--sizes",
        "320x180,1280x720,600x300,hidden,320x180",
        "--widths",
        "320,1280,640,0,320",
    ]);
    let run = browser::run("adaptive.mjs", args, Duration::from_secs(150))
        .await
        .expect("adaptive.mjs finishes");
    println!("adaptive: {}", run.report);
    assert!(run.success, "{}\n{}", run.report, run.stderr);
    assert_graded_well(&mut listener, "viewer").await;
    publisher.stop().await.expect("stop publish");
}

/// Active speakers with a real browser: a page publishing a microphone that plays a steady
/// tone (`tests/browser/speaking.mjs`) is named in the server's `active_speakers` events, from
/// the audio levels Chromium puts on its packets, and is no longer once it unpublishes. A Rust
/// socket client in the same group hears the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_whose_microphone_hears_speech_is_an_active_speaker() {
    browser::require_tools();
    let s = Server::start().await;
    s.group("speak", &[("talker", json!({})), ("listener", json!({}))])
        .await;
    let (talker_t, listener_t) = (s.token("talker").await, s.token("listener").await);
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("tone.wav");
    browser::write_tone_wav(&wav, 5);
    let mut listener = s.ws(&listener_t).await;
    assert_eq!(listener.join("speak").await["type"], "joined");
    let args = browser::args([
        "--base",
        &s.base,
        "--group",
        "speak",
        "--user",
        "talker",
        "--token",
        &talker_t,
        "--wav",
        wav.to_str().expect("utf-8 path"),
    ]);
    let run = browser::run("speaking.mjs", args, Duration::from_secs(120))
        .await
        .expect("speaking.mjs finishes");
    println!("speaking: {}", run.report);
    assert!(run.success, "{}\n{}", run.report, run.stderr);
    // The listener heard the talker start and stop.
    let mut heard = Vec::new();
    while let Some(ev) = listener.next(Duration::from_millis(500)).await {
        if ev["type"] == "active_speakers" {
            heard.push(ev["speakers"].clone());
        }
    }
    let named = |v: &Value| v.as_array().is_some_and(|a| a.iter().any(|s| s["user"] == "talker"));
    let first = heard.iter().position(named);
    assert!(first.is_some(), "{heard:?}");
    assert!(
        heard[first.unwrap_or(0)..].iter().any(|v| !named(v)),
        "the listener heard the talker stop: {heard:?}"
    );
}

/// An RTSP camera that sends AAC (GStreamer's RTSP server, a 440 Hz tone) is heard in a
/// browser: the page (`watch_page.mjs`, WHEP) decodes the camera's video and plays its sound,
/// which the server transcodes to Opus for WebRTC viewers: the page's WebAudio measures the
/// tone's loudness (not silence) while the received samples keep growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_hears_an_aac_camera_as_opus() {
    browser::require_tools();
    let s = Server::start().await;
    s.group("yard", &[("viewer", json!({}))]).await;
    let viewer_t = s.token("viewer").await;
    let camera = Camera::start(free_port(), &["--audio", "aac"]);
    assert_eq!(
        camera.audio, "aac",
        "the camera serves AAC (gstreamer1.0-libav installed?)"
    );
    let (st, created) = s
        .call(
            Method::POST,
            "/v1/ingests",
            Some(&s.admin),
            Some(json!({"url": camera.url(), "groups": ["yard"]})),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    let participant = format!("ingest-{}", created["id"].as_str().expect("id"));

    let dir = tempfile::tempdir().expect("temp dir");
    let (stats, stop) = (dir.path().join("stats.json"), dir.path().join("stop"));
    let mut args = sampled_page_args(&s, "yard", "viewer", &viewer_t, &stats, &stop);
    args.extend(browser::args(["--peer", &participant]));
    let node = tokio::spawn(browser::run("watch_page.mjs", args, Duration::from_secs(180)));
    let rms = |v: &Value| v["audioRms"].as_f64().unwrap_or(0.0);
    let (first, ok) = page_until(&stats, Duration::from_secs(30), |v| {
        v["framesDecoded"].as_u64().unwrap_or(0) > 30 && rms(v) > 0.05
    })
    .await;
    assert!(ok, "the browser plays the camera with sound: {first}\n{}", s.log());
    // The tone goes on, over more samples.
    let (more, ok) = page_until(&stats, Duration::from_secs(10), |v| {
        rms(v) > 0.05
            && v["audioSamplesReceived"].as_u64().unwrap_or(0)
                > first["audioSamplesReceived"].as_u64().unwrap_or(0) + 48_000
    })
    .await;
    assert!(ok, "the sound goes on: {first} -> {more}");
    std::fs::write(&stop, b"").expect("write the stop file");
    let run = node.await.expect("node task").expect("watch_page.mjs finishes");
    println!("watch_page: {}", run.report);
    assert!(run.success, "{}\n{}", run.report, run.stderr);
}

/// The scaled layer in a real browser: a Rust client publishes a single 720p H.264 layer, and a
/// Chromium page (`watch_page.mjs`, WHEP) playing it as a member capped at VGA decodes the
/// server's re-encoded 640x360 picture (never the 720p one), its frames still coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_capped_below_a_single_layer_publish_decodes_the_scaled_layer() {
    browser::require_tools();
    let s = Server::start().await;
    s.group("scaled", &[("pub", json!({})), ("viewer", json!({}))]).await;
    s.set_member_media("scaled", "viewer", json!({"max_resolution": "vga"}))
        .await;
    let (pub_t, viewer_t) = (s.token("pub").await, s.token("viewer").await);
    let publisher =
        WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=scaled", &pub_t, ClientOptions::single_720p())
            .await
            .expect("720p publish");
    assert!(publisher.wait_connected(Duration::from_secs(15)).await);

    let dir = tempfile::tempdir().expect("temp dir");
    let (stats, stop) = (dir.path().join("stats.json"), dir.path().join("stop"));
    let mut args = sampled_page_args(&s, "scaled", "viewer", &viewer_t, &stats, &stop);
    args.extend(browser::args(["--peer", "pub"]));
    let node = tokio::spawn(browser::run("watch_page.mjs", args, Duration::from_secs(120)));
    let frames = |v: &Value| v["framesDecoded"].as_u64().unwrap_or(0);
    let (first, ok) = page_until(&stats, Duration::from_secs(30), |v| {
        v["videoWidth"] == 640 && v["videoHeight"] == 360 && frames(v) > 30
    })
    .await;
    assert!(ok, "the page decodes the scaled 640x360 picture: {first}\n{}", s.log());
    let (more, ok) = page_until(&stats, Duration::from_secs(10), |v| frames(v) > frames(&first) + 60).await;
    assert!(ok, "frames keep coming: {first} -> {more}");
    assert_eq!((&more["videoWidth"], &more["videoHeight"]), (&json!(640), &json!(360)));
    std::fs::write(&stop, b"").expect("write the stop file");
    let run = node.await.expect("node task").expect("watch_page.mjs finishes");
    println!("watch_page: {}", run.report);
    assert!(run.success, "{}\n{}", run.report, run.stderr);
    assert_eq!(
        run.report["widths"],
        json!([640]),
        "never the publisher's 720p: {}",
        run.report
    );
    publisher.stop().await.expect("stop publish");
}

/// An H.265 camera in a browser that cannot decode H.265 (headless Chromium offers none): the
/// page (`watch_page.mjs`, WHEP) decodes the camera's picture from the server's H.264
/// companion, re-encoded while it watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_h265_sees_an_h265_camera_as_h264() {
    browser::require_tools();
    let s = Server::start().await;
    s.group("gate", &[("viewer", json!({}))]).await;
    let viewer_t = s.token("viewer").await;
    let camera = Camera::start(free_port(), &["--video", "h265"]);
    let (st, created) = s
        .call(
            Method::POST,
            "/v1/ingests",
            Some(&s.admin),
            Some(json!({"url": camera.url(), "groups": ["gate"]})),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    let participant = format!("ingest-{}", created["id"].as_str().expect("id"));

    let dir = tempfile::tempdir().expect("temp dir");
    let (stats, stop) = (dir.path().join("stats.json"), dir.path().join("stop"));
    let mut args = sampled_page_args(&s, "gate", "viewer", &viewer_t, &stats, &stop);
    args.extend(browser::args(["--peer", &participant]));
    let node = tokio::spawn(browser::run("watch_page.mjs", args, Duration::from_secs(120)));
    let frames = |v: &Value| v["framesDecoded"].as_u64().unwrap_or(0);
    let (first, ok) = page_until(&stats, Duration::from_secs(30), |v| {
        v["videoWidth"] == 320 && v["videoHeight"] == 240 && frames(v) > 30
    })
    .await;
    assert!(ok, "the page decodes the camera's picture: {first}\n{}", s.log());
    let (more, ok) = page_until(&stats, Duration::from_secs(10), |v| frames(v) > frames(&first) + 60).await;
    assert!(ok, "frames keep coming: {first} -> {more}");
    assert_eq!(s.metric("fanfare_reencoded_tracks").await, 1.0);
    std::fs::write(&stop, b"").expect("write the stop file");
    let run = node.await.expect("node task").expect("watch_page.mjs finishes");
    println!("watch_page: {}", run.report);
    assert!(run.success, "{}\n{}", run.report, run.stderr);
}
