//! Real browsers against the real server: two headless Chromium pages (Debian's
//! `/usr/bin/chromium`, driven by `tests/browser/two_pages.mjs` with playwright-core) open
//! `assets/tools/loopback.html`, each publishes its fake camera with WHIP and plays the other
//! with WHEP. Passes when both pages decode video and the call view lists both publishers.
//!
//! Needs `scripts/setup.sh test` (chromium, node, `npm ci` in tests/browser). Like every test it
//! runs inside `scripts/test.sh`'s loopback-only network namespace, so no candidate leaves lo.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanfare_tests::{workspace, Server};
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
    let root = workspace();
    let script = root.join("tests/browser/two_pages.mjs");
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `scripts/setup.sh test` (it runs `npm ci` there)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run `scripts/setup.sh test`"
    );
    let out_dir: PathBuf = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("test-output/browser");
    std::fs::create_dir_all(&out_dir).expect("create the screenshot directory");

    let s = Server::start().await;
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
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .args(["--base", &s.base, "--group", GROUP, "--out"])
        .arg(&out_dir)
        .args(["--user", "alice", "--token", &alice, "--user", "bob", "--token", &bob])
        .current_dir(root.join("tests/browser"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node (is Node.js installed? run `scripts/setup.sh test`)");

    // While the pages are open, the call view must list both of them publishing video.
    let done = AtomicBool::new(false);
    let node = async {
        let out = tokio::time::timeout(NODE_TIMEOUT, child.wait_with_output()).await;
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

    let out = match out {
        Ok(out) => out.expect("wait for node"),
        Err(_) => panic!(
            "two_pages.mjs did not finish within {NODE_TIMEOUT:?}\n--- server log ---\n{}",
            s.log()
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    let context = || {
        format!(
            "node exit: {}\nreport: {report}\n--- node stderr ---\n{stderr}\n--- server log ---\n{}",
            out.status,
            s.log()
        )
    };
    println!("browser run took {elapsed:?}: {report}");

    assert!(
        out.status.success() && report["ok"] == true,
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
}
