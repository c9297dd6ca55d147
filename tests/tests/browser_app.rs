//! The web app in real browsers: `tests/browser/app_flow.mjs` drives headless Chromium (Debian's
//! `/usr/bin/chromium`, playwright-core) through `assets/index.html` as alice (owner), bob and
//! carol (a member without `can_publish`), all signing in by name with `POST /v1/dev/token`:
//! a two-person call where each plays the other's video, a classroom grant and revoke of
//! `can_publish` seen live by a third person, chat both ways, and, when the server has
//! `GET /v1/groups/{gid}/recordings`, a call recording listed and played in the recordings view.
//! Screenshots go to `tests/out/` (call-view.png, webinar-view.png, recordings-view.png).
//!
//! Needs `scripts/setup.sh test` (chromium, node, `npm ci` in tests/browser). Like every test it
//! runs inside a loopback-only network namespace, so no candidate leaves lo.

use std::time::{Duration, Instant};

use fanfare_tests::{browser, workspace, Server};
use reqwest::Method;
use serde_json::json;

/// Longer than the script's own 100 s limit, so its JSON report normally arrives.
const NODE_TIMEOUT: Duration = Duration::from_secs(115);
const GROUP: &str = "class";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_app_call_classroom_chat_recordings() {
    let root = workspace();
    browser::require_tools();
    let out_dir = root.join("tests/out");
    std::fs::create_dir_all(&out_dir).expect("create tests/out");

    let s = Server::start().await;
    // Dev tokens are on: the server listens on loopback.
    let (st, body) = s
        .call(Method::POST, "/v1/dev/token", None, Some(json!({"user": "probe"})))
        .await;
    assert_eq!(st, 201, "dev token on a loopback server: {body}");
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&s.admin),
            Some(json!({"id": GROUP, "name": "Physics 101"})),
        )
        .await;
    assert_eq!(st, 201, "create group: {body}");
    for (user, member) in [
        ("alice", json!({"role": "owner"})),
        ("bob", json!({})),
        ("carol", json!({"permissions": {"can_publish": false}})),
    ] {
        let (st, body) = s
            .call(
                Method::PUT,
                &format!("/v1/groups/{GROUP}/members/{user}"),
                Some(&s.admin),
                Some(member),
            )
            .await;
        assert_eq!(st, 201, "add {user}: {body}");
    }

    // Everyone's fake microphone plays a steady tone: the call outlines an active speaker.
    let wav = out_dir.join("tone.wav");
    browser::write_tone_wav(&wav, 5);
    let started = Instant::now();
    let run = browser::run(
        "app_flow.mjs",
        browser::args([
            "--base".into(),
            s.base.clone().into(),
            "--group".into(),
            GROUP.into(),
            "--out".into(),
            out_dir.clone().into_os_string(),
            "--wav".into(),
            wav.into_os_string(),
        ]),
        NODE_TIMEOUT,
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "app_flow.mjs did not finish within {NODE_TIMEOUT:?}\n--- server log ---\n{}",
            s.log()
        )
    });
    let (report, stderr) = (&run.report, &run.stderr);
    let context = || {
        format!(
            "node exit: {}\nreport: {report}\n--- node stderr ---\n{stderr}\n--- server log (tail) ---\n{}",
            run.status,
            tail(&s.log(), 60)
        )
    };
    println!("web app run took {:?}: {report}", started.elapsed());
    println!("recordings: {}", report["recordings"]);
    assert!(
        run.success && report["ok"] == true,
        "the web app flow failed\n{}",
        context()
    );

    let steps = &report["steps"];
    for (step, who) in [
        ("aliceSeesBob", "alice watching bob"),
        ("bobSeesAlice", "bob watching alice"),
        ("carolWatchesAlice", "carol (webinar) watching alice"),
        ("bobSeesCarol", "bob watching carol once she may present"),
    ] {
        let v = &steps[step];
        let (before, after) = (
            v["framesDecodedBefore"].as_u64().unwrap_or(0),
            v["framesDecoded"].as_u64().unwrap_or(0),
        );
        assert!(
            v["videoWidth"].as_u64().unwrap_or(0) > 0,
            "{who}: no picture\n{}",
            context()
        );
        assert!(
            after > before,
            "{who}: decoding stopped ({before} then {after})\n{}",
            context()
        );
    }
    // The camera goes out as simulcast (Chromium's fake camera is 640x480: two layers, h and f).
    let layers = steps["aliceCameraLayers"].as_array().cloned().unwrap_or_default();
    let rids: Vec<&str> = layers.iter().filter_map(|l| l["rid"].as_str()).collect();
    assert!(
        rids.len() >= 2 && rids.contains(&"f"),
        "camera layers {layers:?}\n{}",
        context()
    );
    for step in ["carolButtonAppeared", "carolButtonGone", "carolTileGoneForBob", "chat"] {
        assert_eq!(steps[step], true, "step {step}\n{}", context());
    }
    // The recordings part runs only when the server has the recordings API.
    let (st, _) = s
        .call(
            Method::GET,
            &format!("/v1/groups/{GROUP}/recordings"),
            Some(&s.admin),
            None,
        )
        .await;
    if st == 200 {
        assert_eq!(report["recordings"], "verified", "recordings\n{}", context());
        let v = &steps["recordingPlays"];
        assert!(
            v["currentTime"].as_f64().unwrap_or(0.0) > v["currentTimeBefore"].as_f64().unwrap_or(0.0),
            "the recording did not play\n{}",
            context()
        );
    } else {
        println!(
            "NOT VERIFIED: GET /v1/groups/{GROUP}/recordings answered {st}; the recordings playback check was skipped"
        );
    }
    for shot in ["call-view.png", "webinar-view.png", "recordings-view.png"] {
        assert!(out_dir.join(shot).is_file(), "screenshot {shot} missing\n{}", context());
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
