//! The SFU over real WebRTC on loopback: a Rust client publishes the H.264 fixture with WHIP,
//! Rust clients play it with WHEP. Multi-group fan-out, permissions applied live, bad input,
//! nothing left behind once everyone has gone, a hidden video paused, active speakers, and
//! connection quality.

use std::time::Duration;

use fanfare_tests::rtc_client::{
    AudioLevel, AudioPayloads, ClientError, ClientOptions, Loss, Report, RtcpSilence, SdpAnswer, UplinkLoss,
    WhepSubscriber, WhipPublisher,
};
use fanfare_tests::Server;
use reqwest::Method;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// A viewer that loses packets on its downlink asks for them again (NACK) and gets them: the
/// server keeps a history per leg and resends from it. Each resent packet carries a
/// transport-wide sequence number of its own, so the send-side estimate counts it as new
/// bytes on the wire rather than as the lost copy arriving late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_loses_packets_gets_them_again_each_with_a_new_transport_wide_number() {
    let s = Server::start().await;
    s.group("g", &[("pub", json!({})), ("v", json!({}))]).await;
    let (publisher_t, viewer_t) = (s.token("pub").await, s.token("v").await);
    let publisher = WhipPublisher::connect(&s.base, "/v1/whip?groups=g", &publisher_t)
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    let loss = Loss::default();
    let opts = ClientOptions {
        loss: Some(loss.clone()),
        ..Default::default()
    };
    let viewer = WhepSubscriber::connect_opts(&s.base, "/v1/groups/g/whep", &viewer_t, opts)
        .await
        .expect("play");
    assert!(
        viewer.wait_frames(10, WAIT).await,
        "frames before loss: {:?}",
        viewer.counts()
    );
    loss.set_every(25);
    let deadline = tokio::time::Instant::now() + WAIT;
    while loss.repaired() < 10 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loss.set_every(0);
    let (dropped, repaired, renumbered) = (loss.dropped(), loss.repaired(), loss.renumbered());
    assert!(repaired >= 10, "{repaired} of {dropped} dropped packets came back");
    assert_eq!(
        renumbered, repaired,
        "every resent packet has a transport-wide number of its own"
    );
    assert!(s.metric("fanfare_nacks_received_total").await >= 1.0);
    let nacked = s.metric_total("fanfare_track_nacked_packets").await;
    let resent = s.metric("fanfare_retransmissions_sent_total").await;
    assert!(resent >= repaired as f64, "{resent} resent, {repaired} came back");
    let in_room = s.metric("fanfare_room_nacked_packets{group=\"g\"}").await;
    assert_eq!(in_room, nacked, "the viewer's room counts the same NACKs");
    assert!(
        nacked >= repaired as f64,
        "the track counts what was asked again: {nacked}"
    );
    let before = viewer.counts().frames;
    assert!(
        viewer.wait_frames(before + 30, WAIT).await,
        "plays on: {:?}",
        viewer.counts()
    );
    viewer.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_fans_out_to_several_groups_each_with_its_own_permissions() {
    let s = Server::start().await;
    s.group(
        "ga",
        &[
            ("pub", json!({})),
            ("va", json!({})),
            ("mute", json!({"can_subscribe": false})),
        ],
    )
    .await;
    s.group("gb", &[("pub", json!({})), ("vb", json!({}))]).await;
    s.group("gc", &[("vc", json!({}))]).await;
    let (publisher_t, va, vb, vc, muted) = (
        s.token("pub").await,
        s.token("va").await,
        s.token("vb").await,
        s.token("vc").await,
        s.token("mute").await,
    );

    let publisher = WhipPublisher::connect(&s.base, "/v1/whip?groups=ga,gb", &publisher_t)
        .await
        .expect("publish");
    assert!(publisher.location().starts_with("/v1/sessions/"));
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");

    let viewer_a = WhepSubscriber::connect(&s.base, "/v1/groups/ga/whep", &va)
        .await
        .expect("play in ga");
    let viewer_b = WhepSubscriber::connect(&s.base, "/v1/groups/gb/whep?participant=pub", &vb)
        .await
        .expect("play in gb");
    assert!(
        viewer_a.wait_frames(30, WAIT).await,
        "ga viewer decodes frames: {:?}",
        viewer_a.counts()
    );
    assert!(
        viewer_b.wait_frames(30, WAIT).await,
        "gb viewer decodes frames: {:?}",
        viewer_b.counts()
    );
    let a = viewer_a.counts();
    assert!(
        a.keyframes >= 1 && a.video_mime.as_deref() == Some("video/H264"),
        "{a:?}"
    );
    // A fresh subscriber gets a picture fast: from the track's keyframe cache (the publisher
    // has been sending for a while), or by a keyframe request.
    assert!(
        a.first_keyframe.is_some_and(|t| t < Duration::from_secs(3)),
        "first keyframe: {a:?}"
    );
    // Per-track and per-room metrics.
    assert!(s.metric("fanfare_track_packets_in").await > 0.0);
    assert!(s.metric("fanfare_track_packets_out").await > 0.0);
    assert_eq!(s.metric_settles("fanfare_room_viewers{group=\"ga\"}", 1.0).await, 1.0);
    assert!(s.metric("fanfare_room_tracks{group=\"gb\"}").await >= 1.0);
    // Per-room traffic: both groups list the publish; each has its own viewer's leg.
    for g in ["ga", "gb"] {
        assert!(
            s.metric(&format!("fanfare_room_packets_in{{group=\"{g}\"}}")).await > 0.0,
            "{g} in"
        );
        assert!(
            s.metric(&format!("fanfare_room_bytes_out{{group=\"{g}\"}}")).await > 0.0,
            "{g} out"
        );
    }
    assert!(s.metric_total("fanfare_room_subscriber_legs").await >= 2.0);
    assert!(s.metric("fanfare_nacks_received_total").await >= 0.0);
    // Sends are batched: a frame's packets to one viewer leave in one GSO call, and none is lost.
    let calls = s.metric("fanfare_rtc_send_calls_total").await;
    let sent = s.metric("fanfare_rtc_sent_datagrams_total").await;
    assert!(sent > 0.0 && calls < sent, "{calls} send calls for {sent} datagrams");
    assert_eq!(s.metric("fanfare_rtc_send_dropped_total").await, 0.0);

    // Not a member of ga (closed): refused. Member of gc only: nobody publishes there.
    let err = WhepSubscriber::connect(&s.base, "/v1/groups/ga/whep", &vc)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.status(), Some(403));
    let err = WhepSubscriber::connect(&s.base, "/v1/groups/gc/whep", &vc)
        .await
        .err()
        .expect("nothing to play");
    assert_eq!(err.status(), Some(404));
    // A member of ga without can_subscribe: 403 and no media.
    let err = WhepSubscriber::connect(&s.base, "/v1/groups/ga/whep", &muted)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.status(), Some(403));

    // The call view lists the publisher's tracks in both groups.
    let (st, call) = s.call(Method::GET, "/v1/groups/ga/call", Some(&va), None).await;
    assert_eq!(st, 200);
    let p = &call["participants"][0];
    assert_eq!(p["user"], "pub");
    let kinds: Vec<_> = p["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"video".to_string()), "{call}");
    let (st, _) = s.call(Method::GET, "/v1/groups/gb/call", Some(&va), None).await;
    assert_eq!(st, 403, "va is not in gb");

    // Narrow the fan-out to ga: gb's viewer stops, ga's continues.
    let sid = publisher.session_id().to_string();
    let (st, body) = s
        .call(
            Method::PUT,
            &format!("/v1/sessions/{sid}/groups"),
            Some(&publisher_t),
            Some(json!({"groups": ["ga"]})),
        )
        .await;
    assert_eq!((st, &body["groups"]), (200, &json!(["ga"])), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        viewer_b.no_packets_within(Duration::from_secs(1)).await,
        "gb viewer stopped: {:?}",
        viewer_b.counts()
    );
    let before = viewer_a.counts().frames;
    assert!(viewer_a.wait_frames(before + 15, WAIT).await, "ga viewer continues");
    // Someone else cannot change or end the session.
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/sessions/{sid}"), Some(&va), None)
        .await;
    assert_eq!(st, 403);

    publisher.stop().await.expect("DELETE the session");
    assert!(
        viewer_a.no_packets_within(Duration::from_secs(1)).await
            || viewer_a.no_packets_within(Duration::from_secs(1)).await
    );
    viewer_a.stop().await.ok();
    viewer_b.stop().await.ok();
    // Nothing left behind: sessions, tracks, legs, rooms.
    assert_eq!(
        s.metric_settles("fanfare_rtc_sessions{kind=\"publish\"}", 0.0).await,
        0.0
    );
    assert_eq!(s.metric_settles("fanfare_rtc_sessions{kind=\"view\"}", 0.0).await, 0.0);
    assert_eq!(s.metric_settles("fanfare_subscriber_legs", 0.0).await, 0.0);
    assert_eq!(s.metric_settles("fanfare_rooms", 0.0).await, 0.0);
    assert!(s.metric("fanfare_rtp_packets_out_total").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classroom_teacher_grants_then_revokes_publishing() {
    let s = Server::start().await;
    let teacher = s.token("teacher").await;
    let settings = json!({"members": {"can_publish": false}});
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&teacher),
            Some(json!({"id": "class", "name": "Class", "settings": settings})),
        )
        .await;
    assert_eq!(st, 201);
    for u in ["student", "peer"] {
        let (st, _) = s
            .call(
                Method::PUT,
                &format!("/v1/groups/class/members/{u}"),
                Some(&teacher),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, 201);
    }
    let (student, peer) = (s.token("student").await, s.token("peer").await);

    let err = WhipPublisher::connect(&s.base, "/v1/whip?groups=class", &student)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.status(), Some(403));

    let grant = json!({"permissions": {"can_publish": true}});
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/class/members/student",
            Some(&teacher),
            Some(grant),
        )
        .await;
    assert_eq!(st, 200);
    let publisher = WhipPublisher::connect(&s.base, "/v1/whip?groups=class", &student)
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await);
    let viewer = WhepSubscriber::connect(&s.base, "/v1/groups/class/whep?participant=student", &peer)
        .await
        .expect("play");
    assert!(viewer.wait_frames(20, WAIT).await, "{:?}", viewer.counts());

    let revoke = json!({"permissions": {"can_publish": false}});
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/class/members/student",
            Some(&teacher),
            Some(revoke),
        )
        .await;
    assert_eq!(st, 200);
    // Within one second of the revocation the media has stopped for everyone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        viewer.no_packets_within(Duration::from_secs(1)).await,
        "media stopped: {:?}",
        viewer.counts()
    );
    let (st, call) = s.call(Method::GET, "/v1/groups/class/call", Some(&peer), None).await;
    assert_eq!(
        (st, call["participants"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{call}"
    );
    assert_eq!(
        s.metric_settles("fanfare_rtc_sessions{kind=\"publish\"}", 0.0).await,
        0.0,
        "the publish session ended"
    );
    publisher.close().await;
    viewer.close().await;
}

#[tokio::test]
async fn bad_offers_and_sessions_get_clear_errors() {
    let s = Server::start().await;
    s.group("g", &[("pub", json!({}))]).await;
    let t = s.token("pub").await;
    let post = |path: &'static str, ct: &'static str, body: Vec<u8>| s.raw(Method::POST, path, Some(&t), ct, body);

    let v = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_vec();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "garbage",
            "application/sdp",
            b"hello there".to_vec(),
            400,
            "invalid_sdp",
        ),
        ("no media", "application/sdp", v.clone(), 400, "invalid_sdp"),
        (
            "truncated",
            "application/sdp",
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96"
                .to_vec(),
            400,
            "invalid_sdp",
        ),
        (
            "not utf-8",
            "application/sdp",
            vec![0xff, 0xfe, 0x00],
            400,
            "invalid_sdp",
        ),
        (
            "json",
            "application/json",
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        ("1 MiB", "application/sdp", vec![b'a'; 1 << 20], 413, "body_too_large"),
    ];
    for (name, ct, body, status, code) in cases {
        let (st, resp) = post("/v1/whip?groups=g", ct, body.clone()).await;
        assert_eq!(
            (st, resp["error"]["code"].as_str()),
            (status, Some(code)),
            "WHIP {name}: {resp}"
        );
        let (st, resp) = post("/v1/groups/g/whep", ct, body).await;
        assert_eq!(st, status, "WHEP {name}: {resp}");
    }
    // Well-formed (parses, has media, ICE credentials and a fingerprint) but never negotiated.
    let sdp = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB:CD\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz12\r\n\
a=rtpmap:96 H264/90000\r\na=sendonly\r\n"
        .to_vec();
    for (path, status) in [
        ("/v1/whip", 400),
        ("/v1/whip?groups=", 400),
        ("/v1/whip?groups=..%2Fx", 400),
        ("/v1/whip?groups=nope", 404),
    ] {
        let (st, resp) = s
            .raw(Method::POST, path, Some(&t), "application/sdp", sdp.clone())
            .await;
        assert_eq!(st, status, "{path}: {resp}");
        assert!(resp["error"]["code"].is_string(), "{path}: {resp}");
    }
    let (st, _) = s
        .raw(Method::POST, "/v1/whip?groups=g", None, "application/sdp", sdp.clone())
        .await;
    assert_eq!(st, 401);
    for (method, path) in [
        (Method::DELETE, "/v1/sessions/nope"),
        (Method::PUT, "/v1/sessions/nope/groups"),
    ] {
        let (st, resp) = s.call(method, path, Some(&t), Some(json!({"groups": ["g"]}))).await;
        assert_eq!(
            (st, resp["error"]["code"].as_str()),
            (404, Some("session_not_found")),
            "{path}"
        );
    }
    let (st, _) = s
        .raw(
            Method::PATCH,
            "/v1/sessions/nope",
            Some(&t),
            "application/trickle-ice-sdpfrag",
            b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host".to_vec(),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups/g/call/participants/pub/mute",
            Some(&s.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 404, "nobody is in the call");
    // Failed negotiations leave nothing behind, and the server still serves.
    assert_eq!(
        s.metric_settles("fanfare_rtc_sessions{kind=\"publish\"}", 0.0).await,
        0.0
    );
    assert_eq!(s.metric_settles("fanfare_rtc_sessions{kind=\"view\"}", 0.0).await, 0.0);
    assert_eq!(s.metric_settles("fanfare_rooms", 0.0).await, 0.0);
    let (st, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, 200);
}

/// Publishes or plays over the realtime socket instead of WHIP/WHEP.
async fn ws_exchange(ws: &mut fanfare_tests::Ws, request: serde_json::Value) -> Result<SdpAnswer, ClientError> {
    ws.send(request).await;
    loop {
        let Some(msg) = ws.next(Duration::from_secs(15)).await else {
            return Err(ClientError::Timeout("no answer on the socket".into()));
        };
        match msg["type"].as_str() {
            Some("answer") => {
                let session = msg["session"].as_str().unwrap_or_default();
                return Ok(SdpAnswer {
                    sdp: msg["sdp"].as_str().unwrap_or_default().to_string(),
                    location: format!("/v1/sessions/{session}"),
                });
            }
            Some("error") => {
                return Err(ClientError::Http {
                    status: 403,
                    body: msg.to_string(),
                })
            }
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_play_over_the_realtime_socket() {
    let s = Server::start().await;
    s.group(
        "live",
        &[
            ("alice", json!({})),
            ("bob", json!({})),
            ("eve", json!({"can_publish": false})),
        ],
    )
    .await;
    let (alice_t, bob_t, eve_t) = (s.token("alice").await, s.token("bob").await, s.token("eve").await);
    let mut alice = s.ws(&alice_t).await;
    let mut bob = s.ws(&bob_t).await;
    assert_eq!(bob.join("live").await["type"], "joined");

    let opts = ClientOptions::default;
    let publish = |offer: String| json!({"type": "publish", "groups": ["live"], "sdp": offer, "req": "p1"});
    let publisher = WhipPublisher::connect_with(opts(), |offer| ws_exchange(&mut alice, publish(offer)))
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await);
    let ev = bob.expect("track_published").await;
    assert_eq!(
        (ev["group"].as_str(), ev["participant"].as_str()),
        (Some("live"), Some("alice")),
        "{ev}"
    );

    let play = |offer: String| json!({"type": "subscribe", "group": "live", "participant": "alice", "sdp": offer});
    let viewer = WhepSubscriber::connect_with(opts(), |offer| ws_exchange(&mut bob, play(offer)))
        .await
        .expect("play");
    assert!(viewer.wait_frames(20, WAIT).await, "{:?}", viewer.counts());

    // Without can_publish the socket says no, with the spec's error code.
    let mut eve = s.ws(&eve_t).await;
    let err = WhipPublisher::connect_with(opts(), |offer| ws_exchange(&mut eve, publish(offer)))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, ClientError::Http { body, .. } if body.contains("forbidden")),
        "{err:?}"
    );

    // Ending the publish over the socket stops the media and tells the room.
    let sid = publisher.session_id().to_string();
    alice
        .send(json!({"type": "end_session", "session": sid, "req": "e1"}))
        .await;
    assert_eq!(alice.expect("session_ended").await["req"], "e1");
    assert_eq!(bob.expect("track_unpublished").await["participant"], "alice");
    // Bob's playback of it was ended by the server, and his socket is told why.
    let ended = bob.expect("session_ended").await;
    assert!(
        ended["reason"].as_str().is_some_and(|r| r.contains("publisher")),
        "{ended}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(viewer.no_packets_within(Duration::from_secs(1)).await);
    // Sessions started on a socket end with it.
    drop(bob);
    assert_eq!(s.metric_settles("fanfare_rtc_sessions{kind=\"view\"}", 0.0).await, 0.0);
    assert_eq!(
        s.metric_settles("fanfare_rtc_sessions{kind=\"publish\"}", 0.0).await,
        0.0
    );
    publisher.close().await;
    viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_mute_and_remove_call_participants() {
    let s = Server::start().await;
    s.group(
        "stage",
        &[
            ("talker", json!({})),
            ("viewer", json!({})),
            ("mod", json!({"can_moderate": true})),
        ],
    )
    .await;
    let (talker, viewer_t, moderator) = (s.token("talker").await, s.token("viewer").await, s.token("mod").await);
    let publisher = WhipPublisher::connect(&s.base, "/v1/whip?groups=stage", &talker)
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await);
    let viewer = WhepSubscriber::connect(&s.base, "/v1/groups/stage/whep", &viewer_t)
        .await
        .expect("play");
    assert!(viewer.wait_frames(15, WAIT).await, "{:?}", viewer.counts());

    // Only moderators may mute; muting video stops it for everyone and shows in the call view.
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups/stage/call/participants/talker/mute",
            Some(&viewer_t),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups/stage/call/participants/talker/mute",
            Some(&moderator),
            Some(json!({"source": "camera"})),
        )
        .await;
    assert_eq!((st, &body["muted"]), (200, &json!(1)), "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let video_before = viewer.counts().video_packets;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        viewer.counts().video_packets,
        video_before,
        "muted video is not forwarded"
    );
    let (_, call) = s
        .call(Method::GET, "/v1/groups/stage/call", Some(&viewer_t), None)
        .await;
    let video = call["participants"][0]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "video")
        .cloned()
        .unwrap();
    assert_eq!(video["muted"], true, "{call}");

    // Removing the participant from the call ends their publish here and everyone's playback of it.
    let (st, _) = s
        .call(
            Method::DELETE,
            "/v1/groups/stage/call/participants/talker",
            Some(&viewer_t),
            None,
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .call(
            Method::DELETE,
            "/v1/groups/stage/call/participants/talker",
            Some(&moderator),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (_, call) = s
        .call(Method::GET, "/v1/groups/stage/call", Some(&viewer_t), None)
        .await;
    assert_eq!(call["participants"], json!([]));
    assert_eq!(
        s.metric_settles("fanfare_rtc_sessions{kind=\"publish\"}", 0.0).await,
        0.0
    );
    assert_eq!(s.metric_settles("fanfare_rtc_sessions{kind=\"view\"}", 0.0).await, 0.0);
    let (st, _) = s
        .call(
            Method::DELETE,
            "/v1/groups/stage/call/participants/talker",
            Some(&moderator),
            None,
        )
        .await;
    assert_eq!(st, 404, "no longer in the call");
    publisher.close().await;
    viewer.close().await;
}

/// Closed peer connections must not pile up (webrtc-rs#906 describes an Arc cycle that leaked
/// every closed connection in older lines): 1,000 viewer sessions come and go, ten at a time,
/// each receiving frames before it leaves, with 1,000 WHIP publishers and 500 call participants
/// who publish over their realtime socket and drop it; RSS and the counts stay flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_viewers_and_publishers_joining_and_leaving_leave_nothing_behind() {
    const AT_ONCE: usize = 10;
    let s = Server::start().await;
    s.group("churn", &[]).await;
    let t = s.admin.clone();
    let publisher = WhipPublisher::connect(&s.base, "/v1/whip?groups=churn", &t)
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await);
    let cycle = || async {
        let v = WhepSubscriber::connect(&s.base, "/v1/groups/churn/whep", &t)
            .await
            .expect("play");
        assert!(v.wait_frames(2, WAIT).await, "{:?}", v.counts());
        v.stop().await.expect("DELETE the playback");
    };
    // Publishers come and go beside them, into a group of their own.
    s.group("churn-pub", &[]).await;
    let publish_cycle = || async {
        let p = WhipPublisher::connect(&s.base, "/v1/whip?groups=churn-pub", &t)
            .await
            .expect("publish");
        assert!(p.wait_connected(WAIT).await, "a churning publisher connects");
        p.stop().await.expect("DELETE the publish");
    };
    // And call participants: a realtime socket joins the call, publishes over it, then goes
    // away without a word (its sessions end with it).
    let socket_cycle = || async {
        let mut ws = s.ws(&t).await;
        assert_eq!(ws.join("churn-pub").await["type"], "joined");
        let publish = |offer: String| json!({"type": "publish", "groups": ["churn-pub"], "sdp": offer, "req": "p"});
        let p = WhipPublisher::connect_with(ClientOptions::default(), |offer| ws_exchange(&mut ws, publish(offer)))
            .await
            .expect("publish over the socket");
        assert!(p.wait_connected(WAIT).await, "a socket's publish connects");
        drop(ws);
        p.close().await;
    };
    let rounds = |n: usize| async move {
        for _ in 0..n {
            let viewers = futures_util::future::join_all((0..AT_ONCE).map(|_| cycle()));
            let publishers = futures_util::future::join_all((0..AT_ONCE).map(|_| publish_cycle()));
            let sockets = futures_util::future::join_all((0..AT_ONCE / 2).map(|_| socket_cycle()));
            futures_util::future::join3(viewers, publishers, sockets).await;
        }
    };
    // The first viewer has frames: the publisher's tracks are all there.
    cycle().await;
    let tracks = s.metric("fanfare_tracks").await;
    assert!(tracks >= 1.0, "the publisher's tracks are counted: {tracks}");
    // Warm-up: the allocator's arenas and the server's pools reach their working size.
    rounds(5).await;
    let settled = s.metric_settles("fanfare_rtc_sessions{kind=\"view\"}", 0.0).await;
    assert_eq!(settled, 0.0);
    assert_eq!(
        s.metric_settles("fanfare_rtc_sessions{kind=\"publish\"}", 1.0).await,
        1.0
    );
    assert_eq!(s.metric_settles("fanfare_tracks", tracks).await, tracks);
    let before = s.rss_kb();
    rounds(100).await;
    assert_eq!(s.metric_settles("fanfare_rtc_sessions{kind=\"view\"}", 0.0).await, 0.0);
    assert_eq!(s.metric_settles("fanfare_subscriber_legs", 0.0).await, 0.0);
    assert_eq!(
        s.metric_settles("fanfare_rtc_viewer_connections", 0.0).await,
        0.0,
        "every viewer connection's I/O task ends"
    );
    assert_eq!(
        s.metric_settles("fanfare_rtc_publisher_connections", 1.0).await,
        1.0,
        "every closed publisher connection is dropped, not only closed"
    );
    assert_eq!(
        s.metric_settles("fanfare_connections", 0.0).await,
        0.0,
        "every socket is gone"
    );
    let (st, call) = s
        .call(Method::GET, "/v1/groups/churn-pub/call", Some(&s.admin), None)
        .await;
    assert_eq!(st, 200, "{call}");
    assert_eq!(call["participants"], json!([]), "nobody is left in the call");
    let after = s.rss_kb();
    // A leak of a closed connection's state (about 190 kB each for a publisher's, as a task
    // holding its `Arc` showed) would be hundreds of MB.
    assert!(
        after < before + 8192,
        "RSS grew from {before} kB to {after} kB over 1,000 viewer and 1,000 publish sessions"
    );
    assert_eq!(
        s.metric_settles("fanfare_rtc_sessions{kind=\"publish\"}", 1.0).await,
        1.0
    );
    assert_eq!(
        s.metric_settles("fanfare_tracks", tracks).await,
        tracks,
        "the churning publishers' tracks are released"
    );
    publisher.stop().await.expect("DELETE the publish");
    assert_eq!(
        s.metric_settles("fanfare_tracks", 0.0).await,
        0.0,
        "the publisher's tracks are released"
    );
    assert_eq!(s.metric_settles("fanfare_rtc_publisher_connections", 0.0).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_media_settings_cap_bitrate_and_keep_kinds_out() {
    let s = Server::start().await;
    let settings = json!({"media": {"max_bitrate_kbps": 800}});
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&s.admin),
            Some(json!({"id": "capped", "name": "c", "settings": settings})),
        )
        .await;
    assert_eq!(st, 201);
    let body = json!({"media": {"max_bitrate_kbps": 300, "max_resolution": "vga"}});
    let (st, _) = s
        .call(Method::PUT, "/v1/groups/capped/members/cam", Some(&s.admin), Some(body))
        .await;
    assert_eq!(st, 201);
    let audio_only = json!({"media": {"video": false, "screen": false}});
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&s.admin),
            Some(json!({"id": "radio", "name": "r", "settings": audio_only})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/groups/radio/members/cam",
            Some(&s.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 201);
    let cam = s.token("cam").await;

    // The answer caps the publisher's video at the tighter of the group's and the member's caps.
    let mut ws = s.ws(&cam).await;
    let mut answer_sdp = String::new();
    let publish = json!({"type": "publish", "groups": ["capped", "radio"], "sdp": ""});
    let publisher = WhipPublisher::connect_with(ClientOptions::default(), |offer| {
        let mut req = publish.clone();
        req["sdp"] = json!(offer);
        let (ws, answer_sdp) = (&mut ws, &mut answer_sdp);
        async move {
            let answer = ws_exchange(ws, req).await?;
            *answer_sdp = answer.sdp.clone();
            Ok(answer)
        }
    })
    .await
    .expect("publish");
    assert!(
        answer_sdp.contains("b=AS:300\r\n") && answer_sdp.contains("b=TIAS:300000\r\n"),
        "{answer_sdp}"
    );
    assert!(publisher.wait_connected(WAIT).await);

    // The audio-only group lists the audio track and keeps the video out; the other has both.
    let kinds = |g: &'static str| {
        let s = &s;
        let cam = cam.clone();
        async move {
            for _ in 0..50 {
                let (_, call) = s
                    .call(Method::GET, &format!("/v1/groups/{g}/call"), Some(&cam), None)
                    .await;
                let mut k: Vec<String> = call["participants"][0]["tracks"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .map(|t| t["kind"].as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                k.sort();
                if k.len() == 2 || (g == "radio" && k.len() == 1) {
                    return k;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Vec::new()
        }
    };
    assert_eq!(kinds("capped").await, ["audio", "video"]);
    assert_eq!(kinds("radio").await, ["audio"]);
    publisher.stop().await.ok();
}

/// A room that restarts after a fault keeps its call, and its traffic figures keep counting
/// what the call's tracks receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_room_goes_on_counting_its_tracks_traffic() {
    let s = Server::start().await;
    s.group("g", &[("pub", json!({}))]).await;
    let publisher_t = s.token("pub").await;
    let publisher = WhipPublisher::connect(&s.base, "/v1/whip?groups=g", &publisher_t)
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    let room_in = "fanfare_room_packets_in{group=\"g\"}";
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.metric_total(room_in).await == 0.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, _) = s
        .call(Method::POST, "/v1/debug/groups/g/room/crash", Some(&s.admin), None)
        .await;
    assert_eq!(st, 202);
    assert_eq!(s.metric_settles("fanfare_room_restarts_total", 1.0).await, 1.0);
    let before = s.metric(room_in).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = s.metric(room_in).await;
    assert!(
        after > before + 50.0,
        "the room counts its track after the restart: {before} -> {after}"
    );
    publisher.close().await;
}

/// Adaptive stream's hidden video: a WHEP viewer that says its video is shown at 0 x 0 gets
/// no video at all (its audio goes on, and another viewer of the same track is untouched),
/// and once it says a size again the video resumes at a keyframe, numbered on from where it
/// stopped: no gap to NACK, no broken frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_hides_the_video_is_paused_and_resumes_at_a_keyframe() {
    let s = Server::start().await;
    s.group("g", &[("pub", json!({})), ("v", json!({})), ("w", json!({}))])
        .await;
    let (publisher_t, v_t, w_t) = (s.token("pub").await, s.token("v").await, s.token("w").await);
    let av = ClientOptions {
        audio: true,
        ..Default::default()
    };
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=g", &publisher_t, av.clone())
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    let viewer = WhepSubscriber::connect_opts(&s.base, "/v1/groups/g/whep", &v_t, av.clone())
        .await
        .expect("play");
    let other = WhepSubscriber::connect_opts(&s.base, "/v1/groups/g/whep", &w_t, av)
        .await
        .expect("play");
    for v in [&viewer, &other] {
        assert!(v.wait_frames(15, WAIT).await, "frames before: {:?}", v.counts());
    }
    let view = format!("{}/view", viewer.location());
    let (st, body) = s
        .call(Method::PUT, &view, Some(&v_t), Some(json!({"width": 0, "height": 0})))
        .await;
    assert_eq!(st, 200, "{body}");
    // What was in flight lands; then no video for 2 s, while audio and the other viewer go on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (hidden, other_before) = (viewer.counts(), other.counts());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (still, other_after) = (viewer.counts(), other.counts());
    assert_eq!(still.video_packets, hidden.video_packets, "no video while hidden");
    assert!(
        still.audio_packets >= hidden.audio_packets + 50,
        "audio goes on: {hidden:?} -> {still:?}"
    );
    assert!(
        other_after.frames >= other_before.frames + 30,
        "the other viewer plays on: {other_after:?}"
    );
    assert_eq!(s.metric_settles("fanfare_subscriber_legs_paused", 1.0).await, 1.0);

    let (st, body) = s
        .call(
            Method::PUT,
            &view,
            Some(&v_t),
            Some(json!({"width": 320, "height": 240})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert!(
        viewer
            .wait_keyframes(hidden.keyframes + 1, Duration::from_secs(3))
            .await,
        "a keyframe soon after it is shown: {:?}",
        viewer.counts()
    );
    assert!(
        viewer.wait_frames(viewer.counts().frames + 30, WAIT).await,
        "plays on: {:?}",
        viewer.counts()
    );
    let c = viewer.counts();
    assert_eq!(c.video_seq_skipped, 0, "numbered on without a gap: {c:?}");
    assert_eq!(c.incomplete_frames, 0, "{c:?}");
    assert_eq!(s.metric_settles("fanfare_subscriber_legs_paused", 0.0).await, 0.0);

    // Hidden again and gone: the paused count goes back to nothing.
    let (st, _) = s
        .call(Method::PUT, &view, Some(&v_t), Some(json!({"width": 0, "height": 0})))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        s.metric_settles("fanfare_subscriber_legs_paused", 1.0).await,
        1.0,
        "paused again"
    );
    viewer.close().await;
    assert_eq!(
        s.metric_settles("fanfare_subscriber_legs_paused", 0.0).await,
        0.0,
        "a paused leg that leaves is no longer counted"
    );
    other.close().await;
    publisher.close().await;
}

/// Active speakers: the room reads the audio levels publishers' clients put on their packets
/// (RFC 6464) and tells the call, `active_speakers`, who is speaking, loudest first; the call
/// view marks them `speaking`. Silence, a moderator's mute and leaving all end a turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_tells_who_is_speaking_from_the_publishers_audio_levels() {
    let s = Server::start().await;
    s.group(
        "talk",
        &[
            ("ann", json!({})),
            ("ben", json!({})),
            ("mod", json!({"can_moderate": true})),
        ],
    )
    .await;
    let (ann_t, ben_t, mod_t) = (s.token("ann").await, s.token("ben").await, s.token("mod").await);
    let mut watcher = s.ws(&mod_t).await;
    assert_eq!(watcher.join("talk").await["type"], "joined");
    let (ann_level, ben_level) = (AudioLevel::default(), AudioLevel::default());
    let publish = |token: String, level: AudioLevel| {
        let base = s.base.clone();
        async move {
            let opts = ClientOptions {
                audio_level: Some(level),
                ..Default::default()
            };
            let p = WhipPublisher::connect_opts(&base, "/v1/whip?groups=talk", &token, opts)
                .await
                .expect("publish");
            assert!(p.wait_connected(WAIT).await, "publisher connects");
            p
        }
    };
    let ann = publish(ann_t, ann_level.clone()).await;
    let ben = publish(ben_t, ben_level.clone()).await;
    // Both silent: nobody speaks.
    watcher.expect_no("active_speakers", Duration::from_secs(1)).await;
    let speakers = |ev: &serde_json::Value| -> Vec<String> {
        ev["speakers"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["user"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    };

    ann_level.set(20);
    let ev = active_speakers(&mut watcher).await;
    assert_eq!(speakers(&ev), ["ann"], "{ev}");
    assert!(ev["speakers"][0]["level"].as_f64().unwrap_or(0.0) > 0.05, "{ev}");
    let (st, call) = s.call(Method::GET, "/v1/groups/talk/call", Some(&mod_t), None).await;
    assert_eq!(st, 200);
    let speaking: Vec<(&str, bool)> = call["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| {
            (
                p["user"].as_str().unwrap_or(""),
                p["speaking"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(
        speaking.contains(&("ann", true)) && speaking.contains(&("ben", false)),
        "{call}"
    );

    // Ben louder: both speak, Ben first.
    ben_level.set(5);
    let ev = active_speakers(&mut watcher).await;
    assert_eq!(speakers(&ev), ["ben", "ann"], "{ev}");
    // Ann stops: Ben alone, within about a second.
    ann_level.set(127);
    let ev = active_speakers(&mut watcher).await;
    assert_eq!(speakers(&ev), ["ben"], "{ev}");
    // A moderator mutes Ben's microphone: his turn ends.
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups/talk/call/participants/ben/mute",
            Some(&mod_t),
            Some(json!({"source": "microphone"})),
        )
        .await;
    assert!(st == 200 || st == 204, "{st} {body}");
    let ev = active_speakers(&mut watcher).await;
    assert!(speakers(&ev).is_empty(), "{ev}");
    // Ann speaks again and leaves mid-sentence: the list empties.
    ann_level.set(25);
    let ev = active_speakers(&mut watcher).await;
    assert_eq!(speakers(&ev), ["ann"], "{ev}");
    ann.close().await;
    let ev = active_speakers(&mut watcher).await;
    assert!(speakers(&ev).is_empty(), "{ev}");
    ben.close().await;
}

/// The next `active_speakers` event of group `talk` on `ws`.
async fn active_speakers(ws: &mut fanfare_tests::Ws) -> serde_json::Value {
    let ev = ws.expect("active_speakers").await;
    assert_eq!(ev["group"], "talk", "{ev}");
    ev
}

/// A publisher whose client offers no audio level extension (as OBS or ffmpeg over WHIP) is
/// measured by the server, which decodes its Opus: its silence says nothing, a tone at half
/// scale makes it the speaker at about that loudness, and silence ends its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publisher_whose_audio_carries_no_level_is_measured_by_the_server() {
    let s = Server::start().await;
    s.group("talk", &[("obs", json!({})), ("w", json!({}))]).await;
    let (obs_t, w_t) = (s.token("obs").await, s.token("w").await);
    let mut watcher = s.ws(&w_t).await;
    assert_eq!(watcher.join("talk").await["type"], "joined");
    let audio = AudioPayloads::default();
    let opts = ClientOptions {
        audio_level_extension: false,
        audio_payloads: Some(audio.clone()),
        ..Default::default()
    };
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=talk", &obs_t, opts)
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await);
    watcher.expect_no("active_speakers", Duration::from_secs(2)).await;

    audio.set(fanfare_tests::opus::tone_packets());
    let ev = active_speakers(&mut watcher).await;
    assert_eq!(ev["speakers"][0]["user"], "obs", "{ev}");
    // A sine at half scale: RMS 0.35 (-9 dBov).
    let level = ev["speakers"][0]["level"].as_f64().unwrap_or(0.0);
    assert!((0.2..0.5).contains(&level), "{ev}");
    let (_, call) = s.call(Method::GET, "/v1/groups/talk/call", Some(&w_t), None).await;
    assert_eq!(call["participants"][0]["speaking"], true, "{call}");

    audio.set(Vec::new());
    let ev = active_speakers(&mut watcher).await;
    assert_eq!(ev["speakers"], json!([]), "{ev}");
    publisher.close().await;
}

/// Connection quality (extension `connection_quality`): the room grades each participant's
/// links from their loss, jitter and round trip: a viewer whose receiver reports say it loses
/// a third of its packets is `poor`, and `excellent` again once they are clean; one reporting
/// 50 ms of jitter is `good`, 150 ms `poor`; a 500 ms round trip `good`, 1 s `poor`; a
/// publisher whose uplink loses one video packet in four (never sent, so no NACK repairs it)
/// is `poor` until that stops, and `excellent` otherwise (its steady 30 fps has no jitter to
/// speak of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_grades_each_participants_links_from_loss_jitter_and_round_trip() {
    let s = Server::start().await;
    s.group("q", &[("pub", json!({})), ("v", json!({})), ("w", json!({}))])
        .await;
    let (pub_t, v_t, w_t) = (s.token("pub").await, s.token("v").await, s.token("w").await);
    let mut watcher = s.ws(&w_t).await;
    assert_eq!(watcher.join("q").await["type"], "joined");
    let uplink = UplinkLoss::default();
    let opts = ClientOptions {
        uplink_loss: Some(uplink.clone()),
        ..Default::default()
    };
    let publisher = WhipPublisher::connect_opts(&s.base, "/v1/whip?groups=q", &pub_t, opts)
        .await
        .expect("publish");
    assert!(publisher.wait_connected(WAIT).await);
    let viewer = WhepSubscriber::connect(&s.base, "/v1/groups/q/whep", &v_t)
        .await
        .expect("play");
    assert!(viewer.wait_frames(10, WAIT).await, "{:?}", viewer.counts());

    // Until `user` is graded `want` (within 15 s), sending `report` from the viewer.
    async fn graded(ws: &mut fanfare_tests::Ws, viewer: &WhepSubscriber, report: Report, user: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            viewer.send_report(report).await.expect("receiver report");
            if let Some(ev) = ws.next(Duration::from_millis(250)).await {
                let hit = ev["type"] == "connection_quality"
                    && ev["participants"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|p| p["user"] == user && p["quality"] == want));
                if hit {
                    assert_eq!(ev["group"], "q", "{ev}");
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{user} never graded {want}");
        }
    }
    let clean = Report::default();
    let report = |fraction_lost, jitter, rtt_ms: Option<u64>| Report {
        fraction_lost,
        jitter,
        rtt: rtt_ms.map(Duration::from_millis),
    };
    graded(&mut watcher, &viewer, clean, "v", "excellent").await;
    graded(&mut watcher, &viewer, report(85, 0, None), "v", "poor").await;
    graded(&mut watcher, &viewer, clean, "v", "excellent").await;
    // Interarrival jitter: 50 ms (4,500 at 90 kHz) is good, 150 ms poor.
    graded(&mut watcher, &viewer, report(0, 4_500, None), "v", "good").await;
    graded(&mut watcher, &viewer, report(0, 13_500, None), "v", "poor").await;
    // A round trip (from the server's sender report the viewer answers): 500 ms is good,
    // 1 s poor, a few ms excellent.
    graded(&mut watcher, &viewer, report(0, 0, Some(500)), "v", "good").await;
    graded(&mut watcher, &viewer, report(0, 0, Some(1_000)), "v", "poor").await;
    graded(&mut watcher, &viewer, report(0, 0, Some(5)), "v", "excellent").await;
    uplink.set_every(4);
    graded(&mut watcher, &viewer, clean, "pub", "poor").await;
    let (st, call) = s.call(Method::GET, "/v1/groups/q/call", Some(&w_t), None).await;
    assert_eq!(
        (st, &call["participants"][0]["quality"]),
        (200, &json!("poor")),
        "{call}"
    );
    uplink.set_every(0);
    graded(&mut watcher, &viewer, clean, "pub", "excellent").await;
    // Round trips are measured both ways: the publisher's from the server's own ICE consent
    // checks on its connection (graded with the same thresholds; on loopback, well under
    // 50 ms), the viewer's from its receiver reports (those claimed above included).
    let up = s
        .metric_with("fanfare_link_rtt_seconds_count", r#"direction="up""#)
        .await;
    let up_sum = s.metric_with("fanfare_link_rtt_seconds_sum", r#"direction="up""#).await;
    assert!(up >= 2.0, "the publisher's round trip is measured: {up}");
    assert!(up_sum / up < 0.05, "{up_sum} s over {up} measures");
    let down = s
        .metric_with("fanfare_link_rtt_seconds_count", r#"direction="down""#)
        .await;
    assert!(down >= 3.0, "the viewer's round trips: {down}");
    viewer.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_participant_whose_link_goes_quiet_is_graded_lost_and_back() {
    let s = Server::start().await;
    s.group("ql", &[("pub", json!({})), ("v", json!({})), ("w", json!({}))])
        .await;
    s.group("ql2", &[("pub", json!({})), ("w", json!({}))]).await;
    let (pub_t, v_t, w_t) = (s.token("pub").await, s.token("v").await, s.token("w").await);
    let mut watcher = s.ws(&w_t).await;
    assert_eq!(watcher.join("ql").await["type"], "joined");
    // The same publish in a second room, graded by that room's own timer.
    let mut other = s.ws(&w_t).await;
    assert_eq!(other.join("ql2").await["type"], "joined");
    let uplink = UplinkLoss::default();
    let publisher = WhipPublisher::connect_opts(
        &s.base,
        "/v1/whip?groups=ql,ql2",
        &pub_t,
        ClientOptions {
            audio: false,
            uplink_loss: Some(uplink.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("publish");
    assert!(publisher.wait_connected(WAIT).await);
    let silence = RtcpSilence::default();
    let viewer = WhepSubscriber::connect_opts(
        &s.base,
        "/v1/groups/ql/whep",
        &v_t,
        ClientOptions {
            rtcp_silence: Some(silence.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("play");
    assert!(viewer.wait_frames(10, WAIT).await, "{:?}", viewer.counts());
    watcher.expect_graded("v", "excellent").await;

    // The viewer's client stops sending RTCP (its ICE checks go on): lost, then back.
    silence.set(true);
    let quiet = std::time::Instant::now();
    watcher.expect_graded("v", "lost").await;
    assert!(
        quiet.elapsed() >= Duration::from_secs(7),
        "lost after {:?}",
        quiet.elapsed()
    );
    silence.set(false);
    watcher.expect_graded("v", "excellent").await;

    // Meanwhile (about 20 s) the second room, reading the same uplink, never thought it lost.
    let mut graded_there = Vec::new();
    while let Some(ev) = other.next(Duration::from_millis(100)).await {
        if ev["type"] == "connection_quality" {
            graded_there.extend(ev["participants"].as_array().cloned().unwrap_or_default());
        }
    }
    assert!(
        graded_there
            .iter()
            .any(|p| p["user"] == "pub" && p["quality"] == "excellent")
            && !graded_there
                .iter()
                .any(|p| p["user"] == "pub" && p["quality"] == "lost"),
        "{graded_there:?}"
    );

    // The publisher's uplink stops carrying anything: lost, shown in the call view, then back.
    uplink.set_every(1);
    watcher.expect_graded("pub", "lost").await;
    let (st, call) = s.call(Method::GET, "/v1/groups/ql/call", Some(&w_t), None).await;
    assert_eq!(
        (st, &call["participants"][0]["quality"]),
        (200, &json!("lost")),
        "{call}"
    );
    uplink.set_every(0);
    watcher.expect_graded("pub", "excellent").await;
    viewer.close().await;
    publisher.close().await;
}
