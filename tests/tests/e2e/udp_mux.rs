//! The shared UDP port (`[rtc] udp_port`, the ICE UDP mux): every candidate the server
//! advertises uses it, a publisher and several subscribers get whole frames through it (also
//! with ICE-lite), and closed connections leave nothing registered on it. The shared ICE-TCP
//! port (`[rtc] tcp_port`): clients with no UDP at all publish and play through it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare_tests::h264::{self, Packetizer};
use fanfare_tests::rtc_client::{
    h264_codec, local_track, negotiated_payload_type, random_u32, ClientError, ClientOptions, LoopbackPeer, SdpAnswer,
    WhepSubscriber, WhipPublisher,
};
use fanfare_tests::{Server, Ws, TEST_CONFIG};
use reqwest::Method;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCPeerConnectionState;

const WAIT: Duration = Duration::from_secs(15);

/// A UDP port nobody holds right now.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
    socket.local_addr().expect("probe address").port()
}

async fn mux_server(extra: &str) -> (Server, u16) {
    let port = free_udp_port();
    let config = format!("{TEST_CONFIG}[rtc]\nudp_port = {port}\n{extra}");
    (Server::start_with_config(&config).await, port)
}

/// WHIP/WHEP over HTTP, keeping each answer SDP in `answers` and its session URL for DELETE.
#[derive(Clone)]
struct Exchange {
    http: reqwest::Client,
    base: String,
    token: String,
    answers: Arc<Mutex<Vec<SdpAnswer>>>,
}

impl Exchange {
    fn new(s: &Server) -> Exchange {
        Exchange {
            http: s.http().clone(),
            base: s.base.clone(),
            token: s.admin.clone(),
            answers: Arc::default(),
        }
    }

    async fn post(self, path: String, offer: String) -> Result<SdpAnswer, ClientError> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = res.text().await.map_err(|e| ClientError::Request(e.to_string()))?;
        if status != 201 {
            return Err(ClientError::Http { status, body });
        }
        let answer = SdpAnswer { sdp: body, location };
        self.answers.lock().expect("answers").push(answer.clone());
        Ok(answer)
    }

    async fn publish(&self, group: &str) -> WhipPublisher {
        self.publish_opts(group, ClientOptions::default()).await
    }

    async fn publish_opts(&self, group: &str, opts: ClientOptions) -> WhipPublisher {
        let (x, path) = (self.clone(), format!("/v1/whip?groups={group}"));
        WhipPublisher::connect_with(opts, |offer| x.post(path, offer))
            .await
            .expect("publish")
    }

    async fn play(&self, group: &str) -> WhepSubscriber {
        self.play_opts(group, ClientOptions::default()).await
    }

    async fn play_opts(&self, group: &str, opts: ClientOptions) -> WhepSubscriber {
        let (x, path) = (self.clone(), format!("/v1/groups/{group}/whep"));
        WhepSubscriber::connect_with(opts, |offer| x.post(path, offer))
            .await
            .expect("play")
    }

    async fn delete(&self, s: &Server, location: &str) {
        let (st, body) = s.call(Method::DELETE, location, Some(&self.token), None).await;
        assert!((200..300).contains(&st), "DELETE {location}: {st} {body}");
    }
}

/// The ports of the `a=candidate` lines of `sdp`.
fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(|l| {
            l.split(' ')
                .nth(5)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("a candidate without a port: {l}"))
        })
        .collect()
}

/// The local ports of the UDP sockets process `pid` holds (from `/proc`).
fn udp_ports_of(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st queues tr retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(9).is_some_and(|inode| inodes.iter().any(|i| i == inode)) {
                let port = fields[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.push(port.expect("a port in /proc/net/udp"));
            }
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_udp_port_serves_a_publisher_and_its_subscribers() {
    let (s, port) = mux_server("").await;
    s.group("mux", &[]).await;
    let x = Exchange::new(&s);
    let publisher = x.publish("mux").await;
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(x.play("mux").await);
    }
    for (i, v) in viewers.iter().enumerate() {
        assert!(
            v.wait_frames(30, WAIT).await,
            "viewer {i} decodes frames: {:?}",
            v.counts()
        );
        assert!(v.counts().keyframes >= 1, "{:?}", v.counts());
    }
    let answers = x.answers.lock().expect("answers").clone();
    assert_eq!(answers.len(), 4);
    for a in &answers {
        let ports = candidate_ports(&a.sdp);
        assert!(!ports.is_empty(), "an answer without candidates:\n{}", a.sdp);
        assert!(
            ports.iter().all(|p| *p == port),
            "candidates off the shared port {port}:\n{}",
            a.sdp
        );
    }
    assert_eq!(s.metric("fanfare_rtc_mux_peers").await, 4.0);
    assert_eq!(udp_ports_of(s.pid()), vec![port], "four connections, one UDP socket");

    for a in &answers[1..] {
        x.delete(&s, &a.location).await;
    }
    for v in &viewers {
        v.close().await;
    }
    assert_eq!(s.metric_settles("fanfare_rtc_mux_peers", 1.0).await, 1.0);
    x.delete(&s, &answers[0].location).await;
    publisher.close().await;
    assert_eq!(
        s.metric_settles("fanfare_rtc_mux_peers", 0.0).await,
        0.0,
        "closed connections leave the shared port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_lite_works_on_the_shared_port_and_viewers_come_and_go() {
    let (s, port) = mux_server("ice_lite = true\n").await;
    s.group("lite", &[]).await;
    let x = Exchange::new(&s);
    let publisher = x.publish("lite").await;
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    for round in 0..5 {
        let v = x.play("lite").await;
        assert!(v.wait_frames(5, WAIT).await, "round {round}: {:?}", v.counts());
        let answer = x.answers.lock().expect("answers").last().cloned().expect("an answer");
        assert!(answer.sdp.contains("a=ice-lite"), "{}", answer.sdp);
        assert!(
            candidate_ports(&answer.sdp).iter().all(|p| *p == port),
            "{}",
            answer.sdp
        );
        x.delete(&s, &answer.location).await;
        v.close().await;
    }
    assert_eq!(s.metric_settles("fanfare_rtc_mux_peers", 1.0).await, 1.0);
    assert_eq!(s.metric_settles("fanfare_rtc_sessions{kind=\"view\"}", 0.0).await, 0.0);
    publisher.close().await;
}

/// Sends `offer` as `msg` on `ws` and returns the answer SDP (and the session, for a publish).
async fn offer_on_socket(ws: &mut Ws, msg: Value, req: &str) -> (String, String) {
    ws.send(msg).await;
    let answer = ws.reply(req, WAIT).await;
    assert_eq!(answer["type"], "answer", "{answer}");
    let sdp = answer["sdp"].as_str().expect("answer SDP").to_owned();
    (sdp, answer["session"].as_str().unwrap_or_default().to_owned())
}

fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:"))
}

/// A client-initiated ICE restart (new client credentials in a renegotiation offer): the server
/// keeps its own ufrag (pinned for the mux's routing), its candidates stay on the shared port,
/// and the media keeps flowing to a viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_ice_restart_keeps_media_flowing_on_the_shared_port() {
    let (s, port) = mux_server("").await;
    s.group("restart", &[]).await;
    let mut ws = s.ws(&s.admin).await;
    let publisher = LoopbackPeer::new(false).await.expect("peer");
    let ssrc = random_u32() | 1;
    let cam = local_track(
        &format!("p-{:08x}", random_u32()),
        "camera",
        RtpCodecKind::Video,
        ssrc,
        h264_codec(),
    );
    let init = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        ..Default::default()
    };
    let transceiver = publisher
        .pc()
        .add_transceiver_from_track(cam.clone() as Arc<dyn TrackLocal>, Some(init))
        .await
        .expect("transceiver");
    let sender = transceiver.sender().await.expect("sender").expect("a sender");
    let offer = publisher.create_offer(WAIT).await.expect("offer");
    let msg = json!({"type": "publish", "groups": ["restart"], "sdp": offer, "req": "p1"});
    let (answer, sid) = offer_on_socket(&mut ws, msg, "p1").await;
    publisher.accept_answer(answer.clone()).await.expect("answer applies");
    let pt = negotiated_payload_type(&sender, &h264_codec()).await.expect("h264");
    let sending = tokio::spawn(async move {
        let aus = h264::read_access_units(&h264::fixture_path()).expect("fixture");
        let mut packetizer = Packetizer::new(pt, ssrc, random_u32() as u16);
        let mut ts = random_u32();
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for au in aus.iter().cycle() {
            tick.tick().await;
            for pkt in packetizer.packetize(au, ts).expect("packetize") {
                let _ = cam.write_rtp(pkt).await;
            }
            ts = ts.wrapping_add(3000);
        }
    });
    assert!(publisher.wait_connected(WAIT).await, "publisher connects");
    let viewer = Exchange::new(&s).play("restart").await;
    assert!(viewer.wait_frames(10, WAIT).await, "{:?}", viewer.counts());

    publisher.pc().restart_ice().await.expect("restart ICE");
    let offer = publisher.create_offer(WAIT).await.expect("restart offer");
    assert_ne!(ice_ufrag(&offer), ice_ufrag(&answer), "the client took new credentials");
    let msg = json!({"type": "renegotiate", "session": sid, "sdp": offer, "req": "r1"});
    let (restarted, _) = offer_on_socket(&mut ws, msg, "r1").await;
    publisher
        .accept_answer(restarted.clone())
        .await
        .expect("restart answer applies");
    assert_eq!(
        ice_ufrag(&restarted),
        ice_ufrag(&answer),
        "the server's ufrag is pinned"
    );
    assert!(candidate_ports(&restarted).iter().all(|p| *p == port), "{restarted}");

    let seen = viewer.counts().frames;
    assert!(
        viewer.wait_frames(seen + 60, WAIT).await,
        "frames keep coming after the restart: {:?}",
        viewer.counts()
    );
    assert_eq!(publisher.state(), RTCPeerConnectionState::Connected);
    sending.abort();
    viewer.close().await;
    publisher.close().await;
}

/// A TCP port nobody holds right now.
fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
    listener.local_addr().expect("probe address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_udp_publish_and_play_over_the_ice_tcp_port() {
    let port = free_tcp_port();
    let s = Server::start_with_config(&format!("{TEST_CONFIG}[rtc]\ntcp_port = {port}\n")).await;
    s.group("tcp", &[]).await;
    let x = Exchange::new(&s);
    let tcp_only = ClientOptions {
        tcp_only: true,
        ..Default::default()
    };
    let publisher = x.publish_opts("tcp", tcp_only.clone()).await;
    assert!(publisher.wait_connected(WAIT).await, "a TCP-only publisher connects");
    let viewer = x.play_opts("tcp", tcp_only).await;
    assert!(
        viewer.wait_frames(30, WAIT).await,
        "a TCP-only viewer decodes frames: {:?}",
        viewer.counts()
    );
    assert!(viewer.counts().keyframes >= 1, "{:?}", viewer.counts());
    // Both answers offer the shared port as a passive TCP candidate (and UDP ones as usual).
    for a in x.answers.lock().expect("answers").iter() {
        let passive: Vec<&str> = a
            .sdp
            .lines()
            .filter(|l| l.starts_with("a=candidate:") && l.contains(" tcp ") && l.ends_with("tcptype passive"))
            .collect();
        assert!(
            !passive.is_empty() && passive.iter().all(|l| l.split(' ').nth(5) == Some(&port.to_string())),
            "passive TCP candidates off port {port}:\n{}",
            a.sdp
        );
    }
    // A connection that is not an ICE check for one of ours is closed and counted.
    let mut stranger = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stranger, b"\x00\x04ping")
        .await
        .expect("write");
    let mut sink = [0u8; 16];
    let closed = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut stranger, &mut sink)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert_eq!(
        s.metric_settles("fanfare_rtc_mux_dropped_total{reason=\"tcp_unknown\"}", 1.0)
            .await,
        1.0
    );
    viewer.close().await;
    publisher.close().await;
}
