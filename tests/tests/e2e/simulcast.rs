//! Simulcast over real WebRTC on loopback: a Rust client publishes three RID layers (180p,
//! 360p, 720p fixtures), Rust subscribers play them with WHEP and read the picture size from the
//! SPS of what they receive. Each subscriber gets the highest layer its member/group
//! `max_resolution` allows, and a moderator's live change moves it at a keyframe; a viewer
//! whose receiver reports show heavy loss moves down, and back up once they are clean; so does
//! one whose link queues (the server's delay-based estimate from the client's TWCC feedback).

use std::time::Duration;

use fanfare_tests::rtc_client::{Bottleneck, ClientOptions, Report, WhepSubscriber, WhipPublisher};
use fanfare_tests::{Server, TEST_CONFIG};
use reqwest::Method;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

async fn group(s: &Server, id: &str, media: serde_json::Value, members: &[&str]) {
    let body = json!({"id": id, "name": id, "settings": {"media": media}});
    let (st, body) = s.call(Method::POST, "/v1/groups", Some(&s.admin), Some(body)).await;
    assert_eq!(st, 201, "{body}");
    for user in members {
        let (st, body) = s
            .call(
                Method::PUT,
                &format!("/v1/groups/{id}/members/{user}"),
                Some(&s.admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
}

fn simulcast() -> ClientOptions {
    ClientOptions {
        audio: false,
        simulcast: true,
        ..Default::default()
    }
}

/// Waits until group `gid`'s call view lists the first publisher's video track with its three
/// layers' sizes (learned from their SPS), asserts their RIDs, and returns that track's view.
async fn wait_layers(s: &Server, gid: &str, token: &str) -> serde_json::Value {
    let mut track = json!(null);
    for _ in 0..50 {
        let (st, call) = s
            .call(Method::GET, &format!("/v1/groups/{gid}/call"), Some(token), None)
            .await;
        assert_eq!(st, 200, "{call}");
        track = call["participants"][0]["tracks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["kind"] == "video"))
            .cloned()
            .unwrap_or_default();
        if track["layer_info"]
            .as_array()
            .is_some_and(|l| l.len() == 3 && l[2]["height"] == 720)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(track["layers"], json!(["q", "h", "f"]), "{track}");
    track
}

/// Waits until the subscriber has decoded `frames` more frames since `from` at `size`.
async fn settles_at(v: &WhepSubscriber, size: (u32, u32), frames: u64) -> bool {
    let start = v.counts().frames;
    v.wait_until(WAIT, |c| c.resolution == Some(size) && c.frames >= start + frames)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_the_layer_their_caps_allow_and_follow_live_changes() {
    let s = Server::start().await;
    // "open": default media settings (fhd). "small": the group caps everyone at vga.
    group(&s, "open", json!({}), &["pub", "free", "later"]).await;
    group(&s, "small", json!({"max_resolution": "vga"}), &["pub", "capped"]).await;
    let (pub_t, free_t, later_t, capped_t) = (
        s.token("pub").await,
        s.token("free").await,
        s.token("later").await,
        s.token("capped").await,
    );

    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=open,small", &pub_t, simulcast())
        .await
        .expect("simulcast publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    assert!(publisher.wait_until(WAIT, |p| p.frames_sent >= 60).await);

    // The call view lists the layers, lowest first, with the sizes learned from their SPS.
    let layers = wait_layers(&s, "open", &pub_t).await;
    let sizes: Vec<(u64, u64)> = layers["layer_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["width"].as_u64().unwrap(), l["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(sizes, [(320, 180), (640, 360), (1280, 720)], "{layers}");

    let free = WhepSubscriber::connect_opts(&s.base, "/v1/groups/open/whep", &free_t, simulcast())
        .await
        .expect("uncapped play");
    let capped = WhepSubscriber::connect_opts(&s.base, "/v1/groups/small/whep", &capped_t, simulcast())
        .await
        .expect("capped play");
    assert!(
        settles_at(&free, (1280, 720), 60).await,
        "uncapped gets 720p: {:?}",
        free.counts()
    );
    assert!(
        settles_at(&capped, (640, 360), 60).await,
        "vga cap gets 360p: {:?}",
        capped.counts()
    );
    let c = capped.counts();
    assert_eq!(c.resolutions, [(640, 360)], "never above the cap: {c:?}");
    assert!(c.first_keyframe.is_some_and(|t| t < Duration::from_secs(3)), "{c:?}");
    assert!(
        free.counts().resolutions.iter().all(|r| *r == (1280, 720)),
        "{:?}",
        free.counts()
    );

    // A moderator lowers one member's cap live: only that subscriber moves down, at a
    // keyframe, without a gap in decoded frames.
    let later = WhepSubscriber::connect_opts(&s.base, "/v1/groups/open/whep", &later_t, simulcast())
        .await
        .expect("second uncapped play");
    assert!(settles_at(&later, (1280, 720), 30).await, "{:?}", later.counts());
    let before = later.counts();
    s.set_member_media("open", "later", json!({"max_resolution": "vga"}))
        .await;
    assert!(
        settles_at(&later, (640, 360), 30).await,
        "cap lowered live: {:?}",
        later.counts()
    );
    let after = later.counts();
    assert!(after.keyframes > before.keyframes, "{after:?}");
    assert_eq!(after.resolutions, [(1280, 720), (640, 360)], "{after:?}");
    assert!(
        after.max_frame_gap < Duration::from_secs(1),
        "frames keep coming: {after:?}"
    );
    // The member cap is lifted to hd: back up to 720p.
    s.set_member_media("open", "later", json!({"max_resolution": "hd"}))
        .await;
    assert!(
        settles_at(&later, (1280, 720), 30).await,
        "cap raised live: {:?}",
        later.counts()
    );
    assert!(
        later.counts().max_frame_gap < Duration::from_secs(1),
        "{:?}",
        later.counts()
    );
    // The others never moved.
    assert!(settles_at(&free, (1280, 720), 30).await);
    assert_eq!(free.counts().resolutions, [(1280, 720)]);
    assert_eq!(capped.counts().resolutions, [(640, 360)]);
    assert!(s.metric("fanfare_track_packets_out").await > 0.0);

    for v in [&free, &capped, &later] {
        v.stop().await.expect("stop play");
    }
    publisher.stop().await.expect("stop publish");
}

/// `PUT /v1/sessions/{sid}/layer`: a viewer pins a layer, switches at a keyframe, and returns
/// to automatic; a pin never lifts the viewer's cap; `PUT /v1/sessions/{sid}/view` gets the
/// layer that covers a view size, and nothing while hidden; bad requests get the JSON error
/// shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_pins_a_simulcast_layer_within_its_caps() {
    let s = Server::start().await;
    group(&s, "pins", json!({}), &["pub", "viewer", "capped", "other"]).await;
    let (pub_t, viewer_t, capped_t, other_t) = (
        s.token("pub").await,
        s.token("viewer").await,
        s.token("capped").await,
        s.token("other").await,
    );
    let (st, body) = s
        .call(
            Method::PUT,
            "/v1/groups/pins/members/capped",
            Some(&s.admin),
            Some(json!({"media": {"max_resolution": "vga"}})),
        )
        .await;
    assert!(st == 200 || st == 201, "{st} {body}");
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=pins", &pub_t, simulcast())
        .await
        .expect("simulcast publish");
    // Viewers who join before the layers' sizes are known may start on another layer.
    wait_layers(&s, "pins", &pub_t).await;
    let viewer = WhepSubscriber::connect_opts(&s.base, "/v1/groups/pins/whep", &viewer_t, simulcast())
        .await
        .expect("play");
    let capped = WhepSubscriber::connect_opts(&s.base, "/v1/groups/pins/whep", &capped_t, simulcast())
        .await
        .expect("capped play");
    assert!(settles_at(&viewer, (1280, 720), 30).await, "{:?}", viewer.counts());
    assert!(settles_at(&capped, (640, 360), 30).await, "{:?}", capped.counts());
    let layer = |v: &WhepSubscriber| format!("{}/layer", v.location());

    // Pin the lowest layer: 180p at a keyframe, frames keep coming.
    let (st, body) = s
        .call(Method::PUT, &layer(&viewer), Some(&viewer_t), Some(json!({"rid": "q"})))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["rid"], "q", "{body}");
    assert!(
        settles_at(&viewer, (320, 180), 30).await,
        "pinned to q: {:?}",
        viewer.counts()
    );
    assert!(
        viewer.counts().max_frame_gap < Duration::from_secs(1),
        "{:?}",
        viewer.counts()
    );
    // Back to automatic: the highest layer again.
    let (st, body) = s
        .call(
            Method::PUT,
            &layer(&viewer),
            Some(&viewer_t),
            Some(json!({"rid": null})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert!(
        settles_at(&viewer, (1280, 720), 30).await,
        "unpinned: {:?}",
        viewer.counts()
    );
    assert_eq!(
        viewer.counts().resolutions,
        [(1280, 720), (320, 180), (1280, 720)],
        "{}",
        s.log_lines("congestion cap changed")
    );

    // A pin above the cap is not forwarded: the capped viewer stays at 360p.
    let (st, body) = s
        .call(Method::PUT, &layer(&capped), Some(&capped_t), Some(json!({"rid": "f"})))
        .await;
    assert_eq!(st, 200, "{body}");
    assert!(settles_at(&capped, (640, 360), 60).await);
    assert_eq!(
        capped.counts().resolutions,
        [(640, 360)],
        "{:?}\n{}",
        capped.counts(),
        s.log_lines("congestion cap changed")
    );

    // A view size instead (adaptive stream): the smallest layer that covers it, then
    // automatic again once it is no longer told.
    let view = |v: &WhepSubscriber| format!("{}/view", v.location());
    for (size, want) in [
        (json!({"width": 600, "height": 300}), (640, 360)),
        (json!({"width": 320, "height": 180}), (320, 180)),
        (json!({"width": null, "height": null}), (1280, 720)),
    ] {
        let (st, body) = s
            .call(Method::PUT, &view(&viewer), Some(&viewer_t), Some(size.clone()))
            .await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            (&body["width"], &body["height"]),
            (&size["width"], &size["height"]),
            "{body}"
        );
        assert!(
            settles_at(&viewer, want, 30).await,
            "viewed at {size}: {:?}",
            viewer.counts()
        );
    }
    // Hidden: no video at all; shown at 320x180 again: the 180p layer, from its keyframe,
    // numbered on from where it stopped.
    let (st, _) = s
        .call(
            Method::PUT,
            &view(&viewer),
            Some(&viewer_t),
            Some(json!({"width": 0, "height": 0})),
        )
        .await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hidden = viewer.counts().video_packets;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(viewer.counts().video_packets, hidden, "no video while hidden");
    let (st, _) = s
        .call(
            Method::PUT,
            &view(&viewer),
            Some(&viewer_t),
            Some(json!({"width": 320, "height": 180})),
        )
        .await;
    assert_eq!(st, 200);
    assert!(
        settles_at(&viewer, (320, 180), 30).await,
        "shown again: {:?}",
        viewer.counts()
    );
    assert_eq!(
        viewer.counts().video_seq_skipped,
        0,
        "one stream through every switch and the pause: {:?}",
        viewer.counts()
    );

    // Bad requests.
    for (who, path, body, want) in [
        (&viewer_t, view(&viewer), json!({"width": 320}), 400),
        (&viewer_t, view(&viewer), json!({"width": 20_000, "height": 10}), 400),
        (
            &viewer_t,
            view(&viewer),
            json!({"width": 1, "height": 1, "track": "nope"}),
            404,
        ),
        (&other_t, view(&viewer), json!({"width": 1, "height": 1}), 403),
        (
            &pub_t,
            format!("{}/view", publisher.location()),
            json!({"width": 1, "height": 1}),
            400,
        ),
        (&viewer_t, layer(&viewer), json!({"rid": "not a rid"}), 400),
        (&viewer_t, layer(&viewer), json!({"rid": "q", "track": "nope"}), 404),
        (&viewer_t, layer(&viewer), json!({"layer": "q"}), 400),
        (&other_t, layer(&viewer), json!({"rid": "q"}), 403),
        (
            &pub_t,
            format!("{}/layer", publisher.location()),
            json!({"rid": "q"}),
            400,
        ),
        (
            &viewer_t,
            "/v1/sessions/nope/layer".to_string(),
            json!({"rid": "q"}),
            404,
        ),
    ] {
        let (st, reply) = s.call(Method::PUT, &path, Some(who), Some(body.clone())).await;
        assert_eq!(st, want, "{path} {body}: {reply}");
        assert!(reply["error"]["code"].is_string(), "{reply}");
    }

    for v in [&viewer, &capped] {
        v.stop().await.expect("stop play");
    }
    publisher.stop().await.expect("stop publish");
}

/// Sends `fraction_lost` receiver reports from `v` every 250 ms until it has decoded `frames`
/// more frames at `size` (or [`WAIT`] passes). Returns whether it did.
async fn reports_until(v: &WhepSubscriber, fraction_lost: u8, size: (u32, u32), frames: u64) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut start: Option<u64> = None;
    while tokio::time::Instant::now() < deadline {
        v.send_report(Report {
            fraction_lost,
            ..Default::default()
        })
        .await
        .expect("receiver report");
        let c = v.counts();
        match start {
            Some(n) if c.resolution == Some(size) && c.frames >= n + frames => return true,
            Some(_) if c.resolution == Some(size) => {}
            _ if c.resolution == Some(size) => start = Some(c.frames),
            _ => start = None,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// A viewer whose receiver reports show heavy loss is moved down to the layer its link carries
/// (REMB-less clients, as browsers are to us); once its reports are clean it climbs back to the
/// top. The other viewer never moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reporting_loss_moves_down_a_layer_and_climbs_back_when_clean() {
    let s = Server::start().await;
    group(&s, "lossy", json!({}), &["pub", "lossy", "fine"]).await;
    let (pub_t, lossy_t, fine_t) = (s.token("pub").await, s.token("lossy").await, s.token("fine").await);
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=lossy", &pub_t, simulcast())
        .await
        .expect("simulcast publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    wait_layers(&s, "lossy", &pub_t).await;
    let lossy = WhepSubscriber::connect_opts(&s.base, "/v1/groups/lossy/whep", &lossy_t, simulcast())
        .await
        .expect("play");
    let fine = WhepSubscriber::connect_opts(&s.base, "/v1/groups/lossy/whep", &fine_t, simulcast())
        .await
        .expect("play");
    // Layer bitrates are measured over a few seconds: wait until both play the top layer.
    assert!(settles_at(&lossy, (1280, 720), 90).await, "{:?}", lossy.counts());
    assert!(settles_at(&fine, (1280, 720), 90).await, "{:?}", fine.counts());

    // Half the packets lost: down, at a keyframe, to the lowest layer (each step's cap is
    // three quarters of what it is sent), without a gap in decoded frames.
    assert!(
        reports_until(&lossy, 128, (320, 180), 15).await,
        "heavy loss moves the viewer down: {:?}",
        lossy.counts()
    );
    let down = lossy.counts();
    assert!(down.resolutions.starts_with(&[(1280, 720)]), "{down:?}");
    assert!(
        down.max_frame_gap < Duration::from_secs(1),
        "frames keep coming: {down:?}"
    );

    // Clean reports: back up to the top (through the middle layer when the top's bitrate is
    // above the middle's plus 5 %; these fixtures' are close, so it may go straight up), not
    // before the leg has been clean for 3 s.
    let clean_from = tokio::time::Instant::now();
    assert!(
        reports_until(&lossy, 0, (1280, 720), 15).await,
        "a clean link climbs back: {:?}",
        lossy.counts()
    );
    assert!(clean_from.elapsed() >= Duration::from_secs(3), "{:?}", lossy.counts());
    let up = lossy.counts();
    let tail: Vec<_> = up
        .resolutions
        .iter()
        .skip_while(|r| **r != (320, 180))
        .copied()
        .collect();
    assert_eq!(tail.first(), Some(&(320, 180)), "{up:?}");
    assert_eq!(tail.last(), Some(&(1280, 720)), "{up:?}");
    assert!(up.max_frame_gap < Duration::from_secs(1), "{up:?}");

    // The viewer that reported nothing stayed on the top layer throughout.
    assert_eq!(fine.counts().resolutions, [(1280, 720)]);
    assert!(
        s.metric("fanfare_congestion_cap_changes_total{direction=\"down\"}")
            .await
            >= 1.0
    );
    assert!(s.metric("fanfare_congestion_cap_changes_total{direction=\"up\"}").await >= 1.0);
    for v in [&lossy, &fine] {
        v.stop().await.expect("stop play");
    }
    publisher.stop().await.expect("stop publish");
}

/// A viewer whose downlink queues (a simulated 150 kbit/s bottleneck under the 720p layer's
/// ~280 kbit/s, as the client's TWCC feedback reports it; no packet is lost) is moved down by
/// the server's own delay-based estimate; while the link stays narrow, the probes before each
/// climb fail and its picture does not grow; once the bottleneck goes, a probe passes and it
/// climbs back to the top.
/// Publisher and viewers also send and play audio, so each RTCP report covers two streams
/// and the estimate is shared between them. The other viewer, whose feedback is clean, never
/// moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_link_queues_moves_down_by_the_delay_estimate_and_back_when_it_clears() {
    let s = Server::start().await;
    group(&s, "queue", json!({}), &["pub", "queued", "fine"]).await;
    let (pub_t, queued_t, fine_t) = (s.token("pub").await, s.token("queued").await, s.token("fine").await);
    let with_audio = ClientOptions {
        audio: true,
        ..simulcast()
    };
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=queue", &pub_t, with_audio.clone())
        .await
        .expect("simulcast publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    wait_layers(&s, "queue", &pub_t).await;
    let link = Bottleneck::default();
    let queued = WhepSubscriber::connect_opts(
        &s.base,
        "/v1/groups/queue/whep",
        &queued_t,
        ClientOptions {
            bottleneck: Some(link.clone()),
            ..with_audio.clone()
        },
    )
    .await
    .expect("play");
    let fine = WhepSubscriber::connect_opts(&s.base, "/v1/groups/queue/whep", &fine_t, with_audio)
        .await
        .expect("play");
    assert!(settles_at(&queued, (1280, 720), 90).await, "{:?}", queued.counts());
    assert!(settles_at(&fine, (1280, 720), 90).await, "{:?}", fine.counts());
    assert!(queued.counts().audio_packets > 0, "{:?}", queued.counts());

    link.set_kbps(150);
    let limited = tokio::time::Instant::now();
    let down = queued
        .wait_until(Duration::from_secs(20), |c| c.resolution.is_some_and(|(w, _)| w < 1280))
        .await;
    let caps = || s.log_lines("congestion cap changed");
    assert!(
        down,
        "a queueing link moves the viewer down: {:?}\n{}",
        queued.counts(),
        caps()
    );
    assert!(caps().contains("send-side estimate"), "{}", caps());
    println!("moved down {:?} after the bottleneck", limited.elapsed());
    assert!(
        s.metric("fanfare_congestion_cap_changes_total{direction=\"down\"}")
            .await
            >= 1.0
    );

    // While the link stays narrow, each climb is probed first with padding, and the probe
    // fails: the picture never grows back (unprobed, it would step up and fall again).
    let since = queued.counts().resolutions.len() - 1;
    let failed = "fanfare_congestion_probes_total{result=\"failed\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s.metric(failed).await < 1.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.metric(failed).await >= 1.0,
        "a probe on the narrow link fails ({} padding packets)\n{}\n{}",
        s.metric("fanfare_probe_packets_sent_total").await,
        caps(),
        s.log_lines("prob")
    );
    assert!(s.metric("fanfare_probe_packets_sent_total").await > 0.0);
    let c = queued.counts();
    let widths: Vec<u32> = c.resolutions[since..].iter().map(|r| r.0).collect();
    assert!(
        widths.windows(2).all(|w| w[1] < w[0]),
        "no step up while the link is narrow: {:?}\n{}",
        c.resolutions,
        caps()
    );

    link.set_kbps(0);
    assert!(
        queued
            .wait_until(Duration::from_secs(30), |c| c.resolution == Some((1280, 720)))
            .await,
        "a clear link climbs back: {:?}\n{}",
        queued.counts(),
        caps()
    );
    assert!(
        s.metric("fanfare_congestion_probes_total{result=\"passed\"}").await >= 1.0,
        "{}",
        caps()
    );
    assert!(
        settles_at(&queued, (1280, 720), 90).await,
        "and stays: {:?}\n{}",
        queued.counts(),
        caps()
    );
    let c = queued.counts();
    assert!(c.max_frame_gap < Duration::from_secs(1), "frames keep coming: {c:?}");
    assert_eq!(fine.counts().resolutions, [(1280, 720)], "{}", caps());
    println!("resolutions {:?}\n{}\n{}", c.resolutions, caps(), s.log_lines("prob"));
    for v in [&queued, &fine] {
        v.stop().await.expect("stop play");
    }
    publisher.stop().await.expect("stop publish");
}

/// With `[rtc] bandwidth_estimation = false` the server numbers nothing, so the client sends no
/// TWCC feedback and a queueing link moves no one (loss and REMB still would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bandwidth_estimation_off_a_queueing_link_moves_no_one() {
    let s = Server::start_with_config(&format!("{TEST_CONFIG}[rtc]\nbandwidth_estimation = false\n")).await;
    group(&s, "off", json!({}), &["pub", "queued"]).await;
    let (pub_t, queued_t) = (s.token("pub").await, s.token("queued").await);
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=off", &pub_t, simulcast())
        .await
        .expect("simulcast publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    wait_layers(&s, "off", &pub_t).await;
    let link = Bottleneck::default();
    link.set_kbps(150);
    let queued = WhepSubscriber::connect_opts(
        &s.base,
        "/v1/groups/off/whep",
        &queued_t,
        ClientOptions {
            bottleneck: Some(link),
            ..simulcast()
        },
    )
    .await
    .expect("play");
    assert!(settles_at(&queued, (1280, 720), 90).await, "{:?}", queued.counts());
    // Twice as long as the estimate needed to move the viewer in the test above.
    assert!(settles_at(&queued, (1280, 720), 240).await, "{:?}", queued.counts());
    assert_eq!(queued.counts().resolutions, [(1280, 720)]);
    let estimates = s
        .metric("fanfare_bandwidth_estimates_total{source=\"send_side\"}")
        .await;
    assert_eq!(estimates, 0.0);
    queued.stop().await.expect("stop play");
    publisher.stop().await.expect("stop publish");
}

/// A single-layer 720p publish watched by a member capped at VGA: the server decodes the
/// layer, scales it to 640x360 and encodes it again for that viewer alone (a scaled layer),
/// while an uncapped viewer gets the publisher's 720p as sent. Lifting the cap moves the
/// viewer to 720p at a keyframe, and the scaled layer stops once nobody needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_capped_below_a_single_layer_publish_gets_a_scaled_layer() {
    let s = Server::start().await;
    group(&s, "talk", json!({}), &["pub", "free", "capped"]).await;
    s.set_member_media("talk", "capped", json!({"max_resolution": "vga"}))
        .await;
    let (pub_t, free_t, capped_t) = (s.token("pub").await, s.token("free").await, s.token("capped").await);

    let hd = ClientOptions::single_720p();
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=talk", &pub_t, hd)
        .await
        .expect("720p publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    assert!(publisher.wait_until(WAIT, |p| p.frames_sent >= 45).await);
    assert_eq!(s.metric("fanfare_scaled_layers").await, 0.0, "nobody needs one yet");

    let opts = ClientOptions {
        audio: false,
        ..Default::default()
    };
    let free = WhepSubscriber::connect_opts(&s.base, "/v1/groups/talk/whep", &free_t, opts.clone())
        .await
        .expect("uncapped play");
    let capped = WhepSubscriber::connect_opts(&s.base, "/v1/groups/talk/whep", &capped_t, opts)
        .await
        .expect("capped play");
    assert!(
        settles_at(&capped, (640, 360), 60).await,
        "the vga cap gets the scaled 360p: {:?}",
        capped.counts()
    );
    let c = capped.counts();
    assert_eq!(c.resolutions, [(640, 360)], "never above the cap: {c:?}");
    assert!(c.first_keyframe.is_some_and(|t| t < Duration::from_secs(3)), "{c:?}");
    assert!(c.max_frame_gap < Duration::from_millis(500), "{c:?}");
    assert!(settles_at(&free, (1280, 720), 60).await, "{:?}", free.counts());
    assert_eq!(free.counts().resolutions, [(1280, 720)], "the publish as sent");
    assert_eq!(s.metric("fanfare_scaled_layers").await, 1.0);
    // The publisher's own figures do not count the server's layer.
    let call = s.call(Method::GET, "/v1/groups/talk/call", Some(&pub_t), None).await.1;
    let track = &call["participants"][0]["tracks"][0];
    assert_eq!(track["layers"], json!([]), "no layer of its own is listed: {track}");

    // The cap is lifted to hd: the viewer moves to the publisher's 720p at a keyframe, with
    // no gap, and the scaled layer stops a few seconds later.
    s.set_member_media("talk", "capped", json!({"max_resolution": "hd"}))
        .await;
    assert!(settles_at(&capped, (1280, 720), 30).await, "{:?}", capped.counts());
    let c = capped.counts();
    assert_eq!(c.resolutions, [(640, 360), (1280, 720)], "{c:?}");
    assert!(c.max_frame_gap < Duration::from_secs(1), "{c:?}");
    assert_eq!(
        s.metric_settles_within("fanfare_scaled_layers", 0.0, Duration::from_secs(10))
            .await,
        0.0,
        "the scaled layer stops once unneeded"
    );
    assert!(settles_at(&capped, (1280, 720), 30).await, "{:?}", capped.counts());

    for v in [&free, &capped] {
        v.stop().await.expect("stop play");
    }
    publisher.stop().await.expect("stop publish");
}

/// A viewer whose member bitrate cap is under a single-layer publish's bitrate gets the scaled
/// layer too, made smaller for that bitrate: the 720p fixture (about 270 kbit/s) to a
/// 100 kbit/s cap is 320x180, and what the viewer receives stays near the cap, while an
/// uncapped viewer gets the publish as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_capped_below_a_publishs_bitrate_gets_a_smaller_scaled_layer() {
    let s = Server::start().await;
    group(&s, "thin", json!({}), &["pub", "free", "slow"]).await;
    s.set_member_media("thin", "slow", json!({"max_bitrate_kbps": 100}))
        .await;
    let (pub_t, free_t, slow_t) = (s.token("pub").await, s.token("free").await, s.token("slow").await);
    let hd = ClientOptions::single_720p();
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=thin", &pub_t, hd)
        .await
        .expect("720p publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    // Long enough for its bitrate to be measured.
    assert!(publisher.wait_until(WAIT, |p| p.frames_sent >= 60).await);
    let opts = ClientOptions {
        audio: false,
        ..Default::default()
    };
    let free = WhepSubscriber::connect_opts(&s.base, "/v1/groups/thin/whep", &free_t, opts.clone())
        .await
        .expect("uncapped play");
    let slow = WhepSubscriber::connect_opts(&s.base, "/v1/groups/thin/whep", &slow_t, opts)
        .await
        .expect("bitrate-capped play");
    assert!(settles_at(&slow, (320, 180), 60).await, "{:?}", slow.counts());
    assert_eq!(slow.counts().resolutions, [(320, 180)], "{:?}", slow.counts());
    assert!(settles_at(&free, (1280, 720), 30).await, "{:?}", free.counts());
    // Over 5 s, the capped viewer gets about its 100 kbit/s, and less than the publish's.
    let (slow0, free0) = (slow.counts().video_bytes, free.counts().video_bytes);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kbps = |now: u64, before: u64| (now - before) * 8 / 5 / 1000;
    let (slow_kbps, free_kbps) = (
        kbps(slow.counts().video_bytes, slow0),
        kbps(free.counts().video_bytes, free0),
    );
    assert!(
        slow_kbps <= 150 && slow_kbps < free_kbps,
        "{slow_kbps} against {free_kbps} kbit/s"
    );
    assert_eq!(s.metric("fanfare_scaled_layers").await, 1.0);
    for v in [&free, &slow] {
        v.stop().await.expect("stop play");
    }
    publisher.stop().await.expect("stop publish");
}

/// `rtc.max_reencodes` bounds the server's re-encoding: with one allowed, a VGA-capped viewer
/// of two single-layer 720p publishes gets the first one scaled and the second as sent; once
/// the first publisher leaves, its slot goes to the second, and the viewer of it moves to
/// 640x360.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_encodes_are_bounded_and_a_freed_slot_is_taken_up() {
    let s = Server::start_with_config("[testing]\nfault_injection = true\n[rtc]\nmax_reencodes = 1\n").await;
    group(&s, "pair", json!({"max_resolution": "vga"}), &["a", "b", "viewer"]).await;
    let hd = ClientOptions::single_720p();
    let (a_t, b_t, viewer_t) = (s.token("a").await, s.token("b").await, s.token("viewer").await);
    let first = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=pair", &a_t, hd.clone())
        .await
        .expect("first publish");
    assert!(first.wait_connected(WAIT).await);
    let opts = ClientOptions {
        audio: false,
        ..Default::default()
    };
    let watch_a = WhepSubscriber::connect_opts(&s.base, "/v1/groups/pair/whep?participant=a", &viewer_t, opts.clone())
        .await
        .expect("play a");
    assert!(settles_at(&watch_a, (640, 360), 30).await, "{:?}", watch_a.counts());
    assert_eq!(s.metric("fanfare_scaled_layers").await, 1.0);

    let second = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=pair", &b_t, hd)
        .await
        .expect("second publish");
    assert!(second.wait_connected(WAIT).await);
    let watch_b = WhepSubscriber::connect_opts(&s.base, "/v1/groups/pair/whep?participant=b", &viewer_t, opts)
        .await
        .expect("play b");
    assert!(
        settles_at(&watch_b, (1280, 720), 30).await,
        "no slot left: as sent {:?}",
        watch_b.counts()
    );
    assert_eq!(s.metric("fanfare_scaled_layers").await, 1.0, "still one");

    // The first publisher leaves: its scaled layer stops, and the second one gets the slot.
    watch_a.stop().await.expect("stop play a");
    first.stop().await.expect("stop publish a");
    assert!(
        settles_at(&watch_b, (640, 360), 30).await,
        "the freed slot is taken up: {:?}",
        watch_b.counts()
    );
    assert_eq!(watch_b.counts().resolutions, [(1280, 720), (640, 360)]);
    assert_eq!(s.metric("fanfare_scaled_layers").await, 1.0);
    watch_b.stop().await.expect("stop play b");
    second.stop().await.expect("stop publish b");
}
