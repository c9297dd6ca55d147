//! Real browsers against the real server: two headless Chromium pages (Debian's
//! `/usr/bin/chromium`, driven by `tests/browser/two_pages.mjs` with playwright-core) open
//! `assets/tools/loopback.html`, each publishes its fake camera with WHIP and plays the other
//! with WHEP. Passes when both pages decode video and the call view lists both publishers.
//!
//! Needs `scripts/setup.sh test` (chromium, node, `npm ci` in tests/browser). Like every test it
//! runs inside `scripts/test.sh`'s loopback-only network namespace, so no candidate leaves lo.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
