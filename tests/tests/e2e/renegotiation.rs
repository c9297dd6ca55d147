//! Renegotiation over the realtime socket: a publisher adds and removes a track on its live
//! publish (`renegotiate`), and a socket playback of it follows (the server's `offer`, the
//! client's `answer`), with frames counted on the added track. Plus the errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanfare_tests::h264::{self, Packetizer};
use fanfare_tests::rtc_client::{
    h264_codec, local_track, negotiated_payload_type, opus_codec, random_u32, LoopbackPeer,
};
use fanfare_tests::{Server, Ws};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::json;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::rtp_transceiver::RtpSender;

const WAIT: Duration = Duration::from_secs(15);

/// Adds a sendonly track and returns its sender.
async fn add_sending(peer: &LoopbackPeer, track: Arc<TrackLocalStaticRTP>) -> Arc<dyn RtpSender> {
    let init = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        ..Default::default()
    };
    let t = peer
        .pc()
        .add_transceiver_from_track(track as Arc<dyn TrackLocal>, Some(init))
        .await
        .expect("add transceiver");
    t.sender().await.expect("sender").expect("a sender")
}

/// Loops the H.264 fixture at 30 fps on `track` once the connection is up.
fn send_video(peer: &LoopbackPeer, track: Arc<TrackLocalStaticRTP>, pt: u8, ssrc: u32) -> tokio::task::JoinHandle<()> {
    let mut state = peer.state_watch();
    tokio::spawn(async move {
        let _ = state
            .wait_for(|s| *s == webrtc::peer_connection::RTCPeerConnectionState::Connected)
            .await;
        let aus = h264::read_access_units(&h264::fixture_path()).expect("fixture");
        let mut pk = Packetizer::new(pt, ssrc, random_u32() as u16);
        let mut ts = random_u32();
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for au in aus.iter().cycle() {
            tick.tick().await;
            for pkt in pk.packetize(au, ts).expect("packetize") {
                if track.write_rtp(pkt).await.is_err() {
                    return;
                }
            }
            ts = ts.wrapping_add(3000);
        }
    })
}

/// Sends Opus silence every 20 ms on `track`.
fn send_audio(peer: &LoopbackPeer, track: Arc<TrackLocalStaticRTP>, pt: u8, ssrc: u32) -> tokio::task::JoinHandle<()> {
    let mut state = peer.state_watch();
    tokio::spawn(async move {
        let _ = state
            .wait_for(|s| *s == webrtc::peer_connection::RTCPeerConnectionState::Connected)
            .await;
        let (mut seq, mut ts) = (random_u32() as u16, random_u32());
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let pkt = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc,
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(&fanfare_tests::rtc_client::OPUS_SILENCE),
            };
            if track.write_rtp(pkt).await.is_err() {
                return;
            }
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(960);
        }
    })
}

/// Complete video frames (packets with the marker bit) received per server track id.
type Frames = Arc<Mutex<HashMap<String, u64>>>;

fn frames_of(frames: &Frames, id: &str) -> u64 {
    frames.lock().unwrap().get(id).copied().unwrap_or(0)
}

async fn wait_frames(frames: &Frames, id: &str, n: u64) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if frames_of(frames, id) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Offers `peer`'s current state on the publish session `sid` and applies the answer.
async fn renegotiate(ws: &mut Ws, peer: &LoopbackPeer, sid: &str, req: &str) {
    let offer = peer.create_offer(WAIT).await.expect("offer");
    ws.send(json!({"type": "renegotiate", "session": sid, "sdp": offer, "req": req}))
        .await;
    let answer = ws.reply(req, WAIT).await;
    assert_eq!(answer["type"], "answer", "{answer}");
    assert_eq!(answer["session"], sid);
    peer.accept_answer(answer["sdp"].as_str().unwrap().to_string())
        .await
        .expect("answer applies");
}

/// Waits for the server's offer for `sid` on `ws` (skipping events) and answers it.
async fn answer_offer(ws: &mut Ws, peer: &LoopbackPeer, sid: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let offer = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = ws.next(left).await.expect("a server offer");
        if msg["type"] == "offer" {
            assert_eq!(msg["session"], sid, "{msg}");
            break msg["sdp"].as_str().unwrap().to_string();
        }
    };
    let answer = peer.answer(offer.clone(), WAIT).await.expect("answer the server");
    ws.send(json!({"type": "answer", "session": sid, "sdp": answer})).await;
    offer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_playback_follows_tracks_added_and_removed_by_renegotiation() {
    let s = Server::start().await;
    s.group("reneg", &[("alice", json!({})), ("bob", json!({}))]).await;
    let (alice_t, bob_t) = (s.token("alice").await, s.token("bob").await);
    let mut alice = s.ws(&alice_t).await;
    let mut bob = s.ws(&bob_t).await;
    assert_eq!(bob.join("reneg").await["type"], "joined");

    // Alice publishes audio and a camera on one session.
    let publisher = LoopbackPeer::new(false).await.expect("peer");
    let stream = format!("alice-{:08x}", random_u32());
    let (mic_ssrc, cam_ssrc, screen_ssrc) = (random_u32() | 1, random_u32() | 1, random_u32() | 1);
    let mic = local_track(&stream, "mic", RtpCodecKind::Audio, mic_ssrc, opus_codec());
    let cam = local_track(&stream, "camera", RtpCodecKind::Video, cam_ssrc, h264_codec());
    let mic_sender = add_sending(&publisher, mic.clone()).await;
    let cam_sender = add_sending(&publisher, cam.clone()).await;
    let offer = publisher.create_offer(WAIT).await.expect("offer");
    alice
        .send(json!({"type": "publish", "groups": ["reneg"], "sdp": offer, "req": "p1"}))
        .await;
    let answer = alice.reply("p1", WAIT).await;
    assert_eq!(answer["type"], "answer", "{answer}");
    let pub_sid = answer["session"].as_str().unwrap().to_string();
    publisher
        .accept_answer(answer["sdp"].as_str().unwrap().to_string())
        .await
        .expect("answer applies");
    let mut tasks = vec![
        send_audio(
            &publisher,
            mic.clone(),
            negotiated_payload_type(&mic_sender, &opus_codec()).await.expect("opus"),
            mic_ssrc,
        ),
        send_video(
            &publisher,
            cam.clone(),
            negotiated_payload_type(&cam_sender, &h264_codec()).await.expect("h264"),
            cam_ssrc,
        ),
    ];
    assert!(publisher.wait_connected(WAIT).await);
    let mut published = Vec::new();
    while published.len() < 2 {
        let ev = bob.expect("track_published").await;
        published.push(ev["track"]["id"].as_str().unwrap().to_string());
    }

    // Bob plays her over the socket.
    let mut viewer = LoopbackPeer::new(false).await.expect("peer");
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        };
        viewer
            .pc()
            .add_transceiver_from_kind(kind, Some(init))
            .await
            .expect("transceiver");
    }
    let frames: Frames = Arc::default();
    let mut remote = viewer.take_tracks().expect("tracks");
    let counting = frames.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(track) = remote.recv().await {
            let (id, counting) = (track.track_id().await, counting.clone());
            tokio::spawn(async move {
                while let Some(ev) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                        if p.header.marker {
                            *counting.lock().unwrap().entry(id.clone()).or_default() += 1;
                        }
                    }
                }
            });
        }
    }));
    let offer = viewer.create_offer(WAIT).await.expect("offer");
    bob.send(json!({"type": "subscribe", "group": "reneg", "participant": "alice", "sdp": offer, "req": "s1"}))
        .await;
    let answer = bob.reply("s1", WAIT).await;
    assert_eq!(answer["type"], "answer", "{answer}");
    let view_sid = answer["session"].as_str().unwrap().to_string();
    viewer
        .accept_answer(answer["sdp"].as_str().unwrap().to_string())
        .await
        .expect("answer applies");
    assert!(viewer.wait_connected(WAIT).await);
    let deadline = Instant::now() + WAIT;
    while frames.lock().unwrap().values().all(|n| *n < 20) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let camera_id: String = frames
        .lock()
        .unwrap()
        .iter()
        .find(|(_, n)| **n >= 20)
        .map(|(id, _)| id.clone())
        .expect("camera frames reach bob");
    assert!(published.contains(&camera_id), "{camera_id} in {published:?}");

    // Bad input on the socket: each answered with the JSON error shape, nothing breaks.
    bob.send(json!({"type": "answer", "session": view_sid, "sdp": "v=0", "req": "a0"}))
        .await;
    let err = bob.reply("a0", WAIT).await;
    assert_eq!(err["type"], "error", "answer without an offer: {err}");
    bob.send(json!({"type": "answer", "session": "nope", "sdp": "v=0", "req": "a1"}))
        .await;
    let err = bob.reply("a1", WAIT).await;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("not_found")),
        "{err}"
    );
    alice
        .send(json!({"type": "renegotiate", "session": "nope", "sdp": "v=0", "req": "r0"}))
        .await;
    let err = alice.reply("r0", WAIT).await;
    assert_eq!(err["code"], "not_found", "{err}");
    alice
        .send(json!({"type": "renegotiate", "session": pub_sid, "sdp": "hello", "req": "r1"}))
        .await;
    let err = alice.reply("r1", WAIT).await;
    assert_eq!(err["code"], "invalid_sdp", "{err}");
    // Bob cannot renegotiate Alice's session, nor his playback from his side.
    bob.send(json!({"type": "renegotiate", "session": pub_sid, "sdp": "hello", "req": "r2"}))
        .await;
    assert_eq!(bob.reply("r2", WAIT).await["code"], "not_found");
    bob.send(json!({"type": "renegotiate", "session": view_sid, "sdp": "hello", "req": "r3"}))
        .await;
    assert_eq!(bob.reply("r3", WAIT).await["type"], "error");

    // Alice adds a screen share to the same session.
    let screen = local_track(&stream, "screen", RtpCodecKind::Video, screen_ssrc, h264_codec());
    let screen_sender = add_sending(&publisher, screen.clone()).await;
    renegotiate(&mut alice, &publisher, &pub_sid, "r4").await;
    let screen_pt = negotiated_payload_type(&screen_sender, &h264_codec())
        .await
        .expect("h264 for the screen");
    let screen_task = send_video(&publisher, screen.clone(), screen_pt, screen_ssrc);
    let ev = bob.expect("track_published").await;
    assert_eq!(ev["track"]["source"], "screen", "{ev}");
    let screen_id = ev["track"]["id"].as_str().unwrap().to_string();
    let offer = answer_offer(&mut bob, &viewer, &view_sid).await;
    assert_eq!(offer.matches("m=video").count(), 2, "{offer}");
    assert!(
        wait_frames(&frames, &screen_id, 20).await,
        "screen frames reach bob: {:?}",
        frames.lock().unwrap()
    );
    let camera_before = frames_of(&frames, &camera_id);

    // Alice stops the screen share: it leaves the call and bob's connection.
    publisher.pc().remove_track(&screen_sender).await.expect("remove track");
    screen_task.abort();
    renegotiate(&mut alice, &publisher, &pub_sid, "r5").await;
    let ev = bob.expect("track_unpublished").await;
    assert_eq!(ev["track"], screen_id.as_str(), "{ev}");
    let offer = answer_offer(&mut bob, &viewer, &view_sid).await;
    assert!(offer.contains("a=inactive") || offer.contains("a=recvonly"), "{offer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let screen_after = frames_of(&frames, &screen_id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        frames_of(&frames, &screen_id),
        screen_after,
        "no screen frames after removal"
    );
    // The camera went on all along, on the same session.
    assert!(frames_of(&frames, &camera_id) > camera_before + 10);
    let call = s
        .call(reqwest::Method::GET, "/v1/groups/reneg/call", Some(&bob_t), None)
        .await
        .1;
    assert_eq!(
        call["participants"][0]["tracks"].as_array().map(Vec::len),
        Some(2),
        "{call}"
    );

    // The offer was answered; a second answer has nothing to answer.
    bob.send(json!({"type": "answer", "session": view_sid, "sdp": "v=0", "req": "a2"}))
        .await;
    assert_eq!(bob.reply("a2", WAIT).await["type"], "error");

    // Layer pins over the socket: a single-layer camera accepts a pin (it stays automatic
    // for lack of layers); a bad rid, an unknown track and a publish session are refused.
    // (`set_view` after it: the single layer stays, whatever the size.)
    bob.send(json!({"type": "set_layer", "session": view_sid, "rid": "q", "req": "l1"}))
        .await;
    let set = bob.reply("l1", WAIT).await;
    assert_eq!(
        (set["type"].as_str(), set["rid"].as_str()),
        (Some("layer_set"), Some("q")),
        "{set}"
    );
    for (req, msg) in [
        (
            "l2",
            json!({"type": "set_layer", "session": view_sid, "rid": "no spaces", "req": "l2"}),
        ),
        (
            "l3",
            json!({"type": "set_layer", "session": view_sid, "track": "nope", "rid": null, "req": "l3"}),
        ),
        (
            "l4",
            json!({"type": "set_layer", "session": pub_sid, "rid": "q", "req": "l4"}),
        ),
    ] {
        bob.send(msg).await;
        let err = bob.reply(req, WAIT).await;
        assert_eq!(err["type"], "error", "{req}: {err}");
    }
    // View sizes (adaptive stream) likewise: one is taken and echoed; a width without a
    // height, an oversize one, an unknown track and a publish session are refused.
    bob.send(json!({"type": "set_view", "session": view_sid, "width": 320, "height": 180, "req": "v1"}))
        .await;
    let set = bob.reply("v1", WAIT).await;
    assert_eq!(
        (set["type"].as_str(), set["width"].as_u64(), set["height"].as_u64()),
        (Some("view_set"), Some(320), Some(180)),
        "{set}"
    );
    for (req, msg) in [
        (
            "v2",
            json!({"type": "set_view", "session": view_sid, "width": 320, "req": "v2"}),
        ),
        (
            "v3",
            json!({"type": "set_view", "session": view_sid, "width": 100_000, "height": 10, "req": "v3"}),
        ),
        (
            "v4",
            json!({"type": "set_view", "session": view_sid, "track": "nope", "width": 1, "height": 1, "req": "v4"}),
        ),
        (
            "v5",
            json!({"type": "set_view", "session": pub_sid, "width": 1, "height": 1, "req": "v5"}),
        ),
    ] {
        bob.send(msg).await;
        let err = bob.reply(req, WAIT).await;
        assert_eq!(err["type"], "error", "{req}: {err}");
    }
    assert!(frames_of(&frames, &camera_id) > 0);

    // A client that never answers the server's offer (alice drops her mic): the playback ends
    // with a reason after the answer timeout.
    publisher.pc().remove_track(&mic_sender).await.expect("remove the mic");
    renegotiate(&mut alice, &publisher, &pub_sid, "r6").await;
    let asked = Instant::now();
    let ended = loop {
        let left = (asked + Duration::from_secs(20)).saturating_duration_since(Instant::now());
        let msg = bob.next(left).await.expect("session_ended after an unanswered offer");
        if msg["type"] == "session_ended" {
            break msg;
        }
    };
    assert_eq!(ended["session"], view_sid.as_str(), "{ended}");
    assert!(
        ended["reason"].as_str().is_some_and(|r| r.contains("did not answer")),
        "{ended}"
    );
    assert!(
        asked.elapsed() >= Duration::from_secs(9),
        "not before the timeout: {ended}"
    );

    for t in tasks {
        t.abort();
    }
    publisher.close().await;
    viewer.close().await;
}
