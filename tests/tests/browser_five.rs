//! A five-person call in the web app: `tests/browser/five_party.mjs` opens five pages of one
//! headless Chromium (Debian's `/usr/bin/chromium`, playwright-core), each signing in by name
//! (`POST /v1/dev/token`) and joining the same group call with a small fake camera (a 160x120
//! Y4M made by ffmpeg in the output directory) and the fake microphone. Every page must show a
//! tile for each of the other four with their video playing (videoWidth > 0, frames growing over
//! 2 s), `GET /v1/groups/{gid}/call` must list the five each with a video track, and when one
//! leaves (the Leave button) the other four pages must drop that tile within seconds; then one
//! more closes the tab and the remaining three drop that tile too. The screenshot of one page
//! goes to `<target>/test-output/browser/five-party.png` (the README shows a copy from
//! `docs/screenshots/`; a test run leaves tracked files alone).
//!
//! Needs `scripts/setup.sh test` (chromium, node, ffmpeg, `npm ci` in tests/browser). Like every
//! test it runs inside a loopback-only network namespace.

use std::time::{Duration, Instant};

use fanfare_tests::{browser, Server};
use serde_json::{json, Value};

/// Longer than the script's own 90 s limit, so its JSON report normally arrives.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
const GROUP: &str = "five";
const USERS: [&str; 5] = ["ann", "ben", "cleo", "dan", "eve"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_people_in_one_call_all_see_each_other() {
    browser::require_tools();
    assert!(
        std::process::Command::new("ffmpeg").arg("-version").output().is_ok(),
        "ffmpeg is missing: run `scripts/setup.sh test`"
    );
    let out_dir = browser::output_dir();

    let s = Server::start().await;
    let members: Vec<(&str, Value)> = USERS.iter().map(|u| (*u, json!({}))).collect();
    s.group(GROUP, &members).await;

    let started = Instant::now();
    let run = browser::run(
        "five_party.mjs",
        browser::args([
            "--base".into(),
            s.base.clone().into(),
            "--group".into(),
            GROUP.into(),
            "--users".into(),
            USERS.join(",").into(),
            "--out".into(),
            out_dir.clone().into_os_string(),
        ]),
        NODE_TIMEOUT,
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "five_party.mjs did not finish within {NODE_TIMEOUT:?}\n--- server log (tail) ---\n{}",
            tail(&s.log(), 80)
        )
    });
    let (report, stderr) = (&run.report, &run.stderr);
    let context = || {
        format!(
            "node exit: {}\nreport: {report}\n--- node stderr ---\n{stderr}\n--- server log (tail) ---\n{}",
            run.status,
            tail(&s.log(), 80)
        )
    };
    println!("five-party run took {:?}", started.elapsed());
    println!("report: {report}");
    println!("--- node stderr ---\n{stderr}");
    // The WebRTC library's own chatter while connections come up is left out.
    let log = s.log();
    let own: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("rtc::") && !l.contains("rtc_"))
        .collect();
    println!(
        "server warnings and errors (WebRTC library ones left out): {}\n{}",
        own.len(),
        own.join("\n")
    );
    assert!(
        run.success && report["ok"] == true,
        "the five-party call failed\n{}",
        context()
    );

    let steps = &report["steps"];
    // Every page plays the other four.
    for viewer in USERS {
        for other in USERS.iter().filter(|u| **u != viewer) {
            let v = &steps["playing"][viewer][other];
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            assert_eq!(v["tile"], true, "{viewer} has no tile for {other}\n{}", context());
            assert!(
                n("videoWidth") > 0,
                "{viewer} shows no picture of {other}\n{}",
                context()
            );
            assert!(
                n("totalVideoFrames") > n("totalVideoFramesBefore") && n("framesDecoded") > n("framesDecodedBefore"),
                "{viewer}'s video of {other} is frozen: {v}\n{}",
                context()
            );
        }
    }
    // The server listed the five, each with a video track.
    let listed = steps["serverCall"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), USERS.len(), "GET /call: {listed:?}\n{}", context());
    for user in USERS {
        let p = listed.iter().find(|p| p["user"] == user);
        let tracks = p.map(|p| p["tracks"].to_string()).unwrap_or_default();
        assert!(
            tracks.contains("video/"),
            "GET /call: {user} has no video track ({tracks})\n{}",
            context()
        );
    }
    // The one who left is gone from the other four pages.
    let leaver = steps["leaver"].as_str().unwrap_or_default();
    let gone = steps["tileGoneAfterMs"].as_object().cloned().unwrap_or_default();
    assert_eq!(
        gone.len(),
        USERS.len() - 1,
        "tile of {leaver} not dropped everywhere\n{}",
        context()
    );
    assert_eq!(steps["othersStillPlay"], true, "{}", context());
    let closer = steps["closer"].as_str().unwrap_or_default();
    let gone = steps["closedTileGoneAfterMs"].as_object().cloned().unwrap_or_default();
    assert_eq!(
        gone.len(),
        USERS.len() - 2,
        "tile of {closer} (tab closed) not dropped everywhere\n{}",
        context()
    );

    let shot = out_dir.join("five-party.png");
    assert!(shot.is_file(), "screenshot five-party.png missing\n{}", context());
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
