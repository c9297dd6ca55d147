//! Self-test of the WebRTC test clients without the Fanfare server: a fake SFU (a minimal
//! HTTP/1.1 endpoint plus two answering PeerConnections, all on 127.0.0.1) takes a WHIP publish,
//! forwards its RTP to a WHEP subscriber, and relays the subscriber's PLI back upstream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use fanfare_tests::rtc_client::{
    h264_codec, local_track, negotiated_payload_type, opus_codec, ClientError, ClientOptions, LoopbackPeer, SdpAnswer,
    WhepSubscriber, WhipPublisher,
};

const TOKEN: &str = "good-token";
const STEP: Duration = Duration::from_secs(5);
const EGRESS_VIDEO_SSRC: u32 = 0x5151_5151;
const EGRESS_AUDIO_SSRC: u32 = 0x5252_5252;

/// One egress track: where to write, with which payload type and SSRC.
#[derive(Clone)]
struct Egress {
    track: Arc<TrackLocalStaticRTP>,
    payload_type: u8,
    ssrc: u32,
}

/// The fake SFU: one publisher, any number of subscribers (the last one gets the media).
#[derive(Default)]
struct FakeSfu {
    peers: Mutex<Vec<Arc<LoopbackPeer>>>,
    upstream_video: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    egress_video: Mutex<Option<Egress>>,
    egress_audio: Mutex<Option<Egress>>,
    deletes: Mutex<Vec<(String, String)>>,
    forwarded: AtomicU64,
    plis_relayed: AtomicU64,
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain".into())],
            body: body.into(),
        }
    }
    fn sdp(location: &str, sdp: String) -> Response {
        Response {
            status: 201,
            headers: vec![
                ("Content-Type", "application/sdp".into()),
                ("Location", location.into()),
            ],
            body: sdp,
        }
    }
}

/// Starts the fake server; returns its base URL.
async fn start_fake(sfu: Arc<FakeSfu>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake server");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let sfu = sfu.clone();
            tokio::spawn(async move {
                let _ = serve_one(sock, sfu).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn serve_one(mut sock: TcpStream, sfu: Arc<FakeSfu>) -> std::io::Result<()> {
    let req = tokio::time::timeout(STEP, read_request(&mut sock))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let res = route(&sfu, req).await;
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        res.status,
        res.body.len()
    );
    for (k, v) in &res.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&res.body);
    sock.write_all(out.as_bytes()).await?;
    sock.shutdown().await
}

async fn read_request(sock: &mut TcpStream) -> std::io::Result<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_len = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let path = start.next().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0usize);
    let mut body = buf[head_len..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn route(sfu: &Arc<FakeSfu>, req: Request) -> Response {
    let auth = req.headers.get("authorization").cloned().unwrap_or_default();
    if auth != format!("Bearer {TOKEN}") {
        return Response::text(403, "forbidden");
    }
    let path = req.path.split('?').next().unwrap_or_default().to_owned();
    match (req.method.as_str(), path.as_str()) {
        ("POST", "/v1/whip") | ("POST", "/v1/groups/g/whep") => {
            if req.headers.get("content-type").map(String::as_str) != Some("application/sdp") {
                return Response::text(415, "want application/sdp");
            }
            let offer = String::from_utf8_lossy(&req.body).into_owned();
            let result = if path == "/v1/whip" {
                whip(sfu, offer).await
            } else {
                whep(sfu, offer).await
            };
            match result {
                Ok(res) => res,
                Err(e) => Response::text(400, e.to_string()),
            }
        }
        ("DELETE", p) if p.starts_with("/v1/sessions/") => {
            sfu.deletes.lock().expect("lock").push((p.to_owned(), auth));
            Response::text(200, "")
        }
        _ => Response::text(404, "not found"),
    }
}

/// Ingress: answer the publisher and forward each of its tracks to the current egress.
async fn whip(sfu: &Arc<FakeSfu>, offer: String) -> Result<Response, ClientError> {
    let mut peer = LoopbackPeer::new(false).await?;
    let mut tracks = peer
        .take_tracks()
        .ok_or_else(|| ClientError::WebRtc("tracks taken".into()))?;
    let answer = peer.answer(offer, STEP).await?;
    sfu.peers.lock().expect("lock").push(Arc::new(peer));
    let sfu2 = sfu.clone();
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            tokio::spawn(forward(track, sfu2.clone()));
        }
    });
    Ok(Response::sdp("/v1/sessions/pub-1", answer))
}

async fn forward(track: Arc<dyn TrackRemote>, sfu: Arc<FakeSfu>) {
    let video = track.kind().await == RtpCodecKind::Video;
    if video {
        let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        *sfu.upstream_video.lock().expect("lock") = Some((track.clone(), ssrc));
    }
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(mut pkt) = ev else {
            continue;
        };
        let slot = if video { &sfu.egress_video } else { &sfu.egress_audio };
        let Some(out) = slot.lock().expect("lock").clone() else {
            continue;
        };
        pkt.header.payload_type = out.payload_type;
        pkt.header.ssrc = out.ssrc;
        pkt.header.extension = false;
        pkt.header.extension_profile = 0;
        pkt.header.extensions.clear();
        pkt.header.extensions_padding = 0;
        if out.track.write_rtp(pkt).await.is_ok() {
            sfu.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Egress: answer the subscriber with one video and one audio track; relay its PLIs upstream.
async fn whep(sfu: &Arc<FakeSfu>, offer: String) -> Result<Response, ClientError> {
    let peer = LoopbackPeer::new(true).await?;
    let video = local_track("sfu", "sfu-video", RtpCodecKind::Video, EGRESS_VIDEO_SSRC, h264_codec());
    let audio = local_track("sfu", "sfu-audio", RtpCodecKind::Audio, EGRESS_AUDIO_SSRC, opus_codec());
    let video_sender = peer.pc().add_track(video.clone() as Arc<dyn TrackLocal>).await?;
    let audio_sender = peer.pc().add_track(audio.clone() as Arc<dyn TrackLocal>).await?;
    let answer = peer.answer(offer, STEP).await?;
    let video_pt = negotiated_payload_type(&video_sender, &h264_codec())
        .await
        .ok_or_else(|| ClientError::Protocol("subscriber refused H.264".into()))?;
    if let Some(pt) = negotiated_payload_type(&audio_sender, &opus_codec()).await {
        *sfu.egress_audio.lock().expect("lock") = Some(Egress {
            track: audio.clone(),
            payload_type: pt,
            ssrc: EGRESS_AUDIO_SSRC,
        });
    }
    *sfu.egress_video.lock().expect("lock") = Some(Egress {
        track: video.clone(),
        payload_type: video_pt,
        ssrc: EGRESS_VIDEO_SSRC,
    });
    sfu.peers.lock().expect("lock").push(Arc::new(peer));
    let sfu2 = sfu.clone();
    tokio::spawn(async move {
        while let Some(ev) = video.poll().await {
            let TrackLocalEvent::OnRtcpPacket(pkts) = ev else {
                continue;
            };
            for p in pkts {
                if !p.as_any().is::<PictureLossIndication>() {
                    continue;
                }
                let up = sfu2.upstream_video.lock().expect("lock").clone();
                if let Some((track, ssrc)) = up {
                    let pli = PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: ssrc,
                    };
                    if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                        sfu2.plis_relayed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    tokio::spawn(async move { while audio.poll().await.is_some() {} });
    Ok(Response::sdp("/v1/sessions/sub-1", answer))
}

impl FakeSfu {
    async fn close(&self) {
        let peers: Vec<_> = self.peers.lock().expect("lock").drain(..).collect();
        for p in peers {
            p.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_forward_play_and_pli_round_trip() {
    let t0 = Instant::now();
    let sfu = Arc::new(FakeSfu::default());
    let base = start_fake(sfu.clone()).await;

    let publisher = WhipPublisher::connect(&base, "/v1/whip?groups=g", TOKEN)
        .await
        .expect("publish");
    assert_eq!(publisher.location(), "/v1/sessions/pub-1");
    assert_eq!(publisher.session_id(), "pub-1");
    assert!(publisher.audio_payload_type().is_some(), "Opus negotiated");
    assert!(
        publisher.wait_connected(STEP).await,
        "publisher connects: {:?}",
        publisher.connection_state()
    );

    let subscriber = WhepSubscriber::connect(&base, "/v1/groups/g/whep", TOKEN)
        .await
        .expect("play");
    assert_eq!(subscriber.location(), "/v1/sessions/sub-1");
    assert!(subscriber.wait_connected(STEP).await, "subscriber connects");

    let deadline = Instant::now() + Duration::from_secs(10);
    let got = subscriber
        .wait_until(Duration::from_secs(10), |c| c.frames >= 60 && c.keyframes >= 2)
        .await;
    let c = subscriber.counts();
    eprintln!(
        "after {:?}: subscriber {c:?}; publisher {:?}",
        t0.elapsed(),
        publisher.stats()
    );
    assert!(got, "60 frames and 2 keyframes within 10 s: {c:?}");
    assert!(Instant::now() <= deadline);
    assert_eq!(
        c.video_mime.as_deref().map(str::to_ascii_lowercase).as_deref(),
        Some("video/h264")
    );
    assert!(c.first_packet.is_some() && c.first_keyframe.is_some());
    assert!(c.audio_packets > 0, "audio forwarded too");
    assert!(publisher.stats().write_errors == 0);

    // PLI: subscriber -> fake SFU -> publisher, which answers with a keyframe right away.
    let keyframes_before = subscriber.counts().keyframes;
    subscriber.send_pli().await.expect("send PLI");
    assert!(
        publisher
            .wait_until(Duration::from_secs(3), |s| s.plis_received >= 1
                && s.forced_keyframes >= 1)
            .await,
        "the PLI reaches the publisher: {:?}, relayed {}",
        publisher.stats(),
        sfu.plis_relayed.load(Ordering::Relaxed)
    );
    assert!(
        subscriber
            .wait_keyframes(keyframes_before + 1, Duration::from_millis(500))
            .await,
        "a keyframe follows the PLI within 500 ms (GOP is 1 s)"
    );
    assert_eq!(subscriber.counts().plis_sent, 1);

    // The publisher leaves: DELETE with its token, then the subscriber's media stops.
    publisher.stop().await.expect("DELETE the publish session");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        subscriber.no_packets_within(Duration::from_secs(1)).await,
        "no media after the publisher stopped"
    );
    subscriber.stop().await.expect("DELETE the play session");
    let deletes = sfu.deletes.lock().expect("lock").clone();
    let want = |p: &str| (p.to_owned(), format!("Bearer {TOKEN}"));
    assert_eq!(deletes, vec![want("/v1/sessions/pub-1"), want("/v1/sessions/sub-1")]);
    sfu.close().await;
    eprintln!("total {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusals_are_typed_errors() {
    let sfu = Arc::new(FakeSfu::default());
    let base = start_fake(sfu.clone()).await;

    let err = WhipPublisher::connect(&base, "/v1/whip?groups=g", "bad")
        .await
        .err()
        .expect("403 is an error");
    assert_eq!(err.status(), Some(403));
    assert_eq!(
        err,
        ClientError::Http {
            status: 403,
            body: "forbidden".into()
        }
    );
    let err = WhepSubscriber::connect(&base, "/v1/groups/nope/whep", TOKEN)
        .await
        .err()
        .expect("404");
    assert_eq!(err.status(), Some(404));

    // A 201 whose body is not SDP is a protocol error, not a panic.
    let bad = |_offer: String| async {
        Ok::<_, ClientError>(SdpAnswer {
            sdp: "not sdp".into(),
            location: "/v1/sessions/x".into(),
        })
    };
    let err = WhipPublisher::connect_with(ClientOptions::default(), bad)
        .await
        .err()
        .expect("bad answer");
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    let err = WhepSubscriber::connect_with(ClientOptions::default(), bad)
        .await
        .err()
        .expect("bad answer");
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");

    // Nothing listening: a request error.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let err = WhipPublisher::connect(&dead, "/v1/whip", TOKEN)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, ClientError::Request(_)), "{err:?}");
    assert!(sfu.deletes.lock().expect("lock").is_empty());
}
