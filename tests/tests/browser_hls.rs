//! hls.js in headless Chromium plays what the API hands out: the live LL-HLS playlist of a
//! group whose call a Rust WebRTC client publishes into, and the VOD playlist of a recording of
//! it, using only the URL (with `?token=`) and the signed segment links inside.

use std::time::Duration;

use fanfare_tests::rtc_client::WhipPublisher;
use fanfare_tests::{browser, Server};
use reqwest::Method;
use serde_json::{json, Value};

/// Runs tests/browser/hls_play.mjs on `src`; returns its report.
async fn play(base: &str, src: &str, shot: &str) -> Value {
    let out = browser::output_dir();
    let args = browser::args([
        "--base".into(),
        base.into(),
        "--src".into(),
        src.into(),
        "--out".into(),
        out.join(shot).into_os_string(),
    ]);
    let run = browser::run("hls_play.mjs", args, Duration::from_secs(60))
        .await
        .expect("hls_play.mjs finishes within 60 s");
    assert!(
        run.success && run.report["ok"] == true,
        "hls.js did not play {src}: {}\n--- node stderr ---\n{}",
        run.report,
        run.stderr
    );
    run.report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_live_and_recorded_playlists() {
    browser::require_tools();
    let s = Server::start().await;
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&s.admin),
            Some(json!({"id": "show", "name": "Show"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = s
        .call(
            Method::PUT,
            "/v1/groups/show/members/fan",
            Some(&s.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let fan = s.token("fan").await;
    let publisher = WhipPublisher::connect(&s.base, "/v1/whip?groups=show", &s.admin)
        .await
        .expect("publish");
    assert!(publisher.wait_connected(Duration::from_secs(15)).await);
    let (st, rec) = s
        .call(Method::POST, "/v1/groups/show/recordings", Some(&s.admin), None)
        .await;
    assert_eq!(st, 201, "{rec}");
    let rid = rec["id"].as_str().unwrap().to_owned();

    let live = format!("{}/v1/groups/show/live/index.m3u8?token={fan}", s.base);
    let report = play(&s.base, &live, "hls-live.png").await;
    println!("live: {report}");

    let (st, body) = s
        .call(
            Method::POST,
            &format!("/v1/recordings/{rid}/stop"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    publisher.close().await;
    for _ in 0..60 {
        let (_, r) = s
            .call(Method::GET, &format!("/v1/recordings/{rid}"), Some(&fan), None)
            .await;
        if r["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let vod = format!("{}/v1/recordings/{rid}/index.m3u8?token={fan}", s.base);
    let report = play(&s.base, &vod, "hls-vod.png").await;
    println!("vod: {report}");
}
