//! The `rtc` 0.21 stack under test: the sans-IO peer connection (`rtc::peer_connection`) that
//! the engine's `webrtc` crate drives, used directly, with no runtime and no sockets.
//!
//! Owns: building `peers` pairs of (server, client) peer connections, the offer/answer, the
//! in-memory datagram pump and simulated clock that bring every pair to `Connected` (ICE +
//! DTLS, SRTP keys in place), and the per-packet send path measured by the harness: one
//! `RTCRtpSender::write_rtp` per server peer, its timers, and draining its encrypted datagrams.
//!
//! Mirrors the engine's viewer connection as it was in the eleventh session
//! (`engine/src/media/viewer_peer.rs`, built with `media/peer.rs`'s `media_stack` for
//! `PeerRole::Viewer`, and `session/view.rs`): media engine with the default codecs and the
//! simulcast header extensions, `nack` and `nack pli` feedback, TWCC registered on the media
//! engine only (`configure_twcc_receiver_only` into a discarded registry), a `NackResponder`
//! with a 256-packet history and a `SenderReport` interceptor; mDNS off; the client offers
//! (as a browser does) and the server adds its one H.264 track before answering.
//!
//! Differs from the engine: no `RtcpForward` interceptor (so outgoing packets carry no
//! transport-wide sequence numbers, and no feedback is counted or bandwidth estimated); the
//! crate's codec list and NACK responder (the engine's viewers have a shorter codec list and
//! their own compact NACK history since the twelfth session, which this harness does not
//! measure); no lock, I/O task or outbox around each connection (the engine, since
//! the eleventh session, also writes into `rtc` directly, with no `webrtc` driver between); and
//! ICE disconnected/failed timeouts of an hour on both sides, because the clients answer no
//! keepalive while the stream is measured and the servers must stay connected (keepalives are
//! still sent at the default interval, and counted).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{NackResponderBuilder, SenderReportBuilder, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only, register_default_interceptors, Registry,
};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::measure::{Packet, Sent, Stack, CLOCK_HZ, PT, SSRC};

/// The engine's `NACK_HISTORY`: packets each outgoing stream keeps for retransmission.
const NACK_HISTORY: u16 = 256;

/// ICE disconnected and failed timeouts: long enough that no server leaves `Connected` while
/// its client, which is not driven during the measured stream, answers no keepalive.
const ICE_IDLE_TIMEOUT: Duration = Duration::from_secs(3_600);

/// Simulated time the handshakes of all pairs may take before setup gives up.
const SETUP_LIMIT: Duration = Duration::from_secs(30);

/// Timer rounds run per `drive_timers` call: `handle_timeout` runs every expired timer at once,
/// so more than a few rounds means a timer that does not move, which would otherwise spin.
const TIMER_ROUNDS: usize = 8;

/// The H.264 codec the server's track sends: the default codecs' payload type 102.
fn h264() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: CLOCK_HZ,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The setting engine both sides use: mDNS off, long ICE idle timeouts (see the module doc).
fn settings() -> rtc::peer_connection::configuration::setting_engine::SettingEngine {
    SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_timeouts(Some(ICE_IDLE_TIMEOUT), Some(ICE_IDLE_TIMEOUT), None)
        .build()
}

/// A server peer connection configured as the engine configures a viewer's.
fn server_pc(now: Instant) -> Result<RTCPeerConnection> {
    let mut engine = MediaEngine::default();
    engine
        .register_default_codecs()
        .context("registering the default codecs")?;
    configure_simulcast_extension_headers(&mut engine).context("registering the simulcast header extensions")?;
    for parameter in ["", "pli"] {
        engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    // The media engine side of TWCC only, as for the engine's viewers.
    configure_twcc_receiver_only(Registry::new(), &mut engine).context("registering TWCC on the media engine")?;
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new().with_size(NACK_HISTORY).build(),
        )
        .with(Slot::SenderReport, SenderReportBuilder::new().build());
    build_pc(engine, registry, now, "server")
}

/// A client peer connection: a browser-like receiver with the crate's default interceptors.
fn client_pc(now: Instant) -> Result<RTCPeerConnection> {
    let mut engine = MediaEngine::default();
    engine
        .register_default_codecs()
        .context("registering the default codecs")?;
    let registry =
        register_default_interceptors(Registry::new(), &mut engine).context("registering the default interceptors")?;
    build_pc(engine, registry, now, "client")
}

/// A peer connection (the `side` named in errors) with `engine` and `registry`, the common
/// settings and the default configuration.
fn build_pc(engine: MediaEngine, registry: Registry, now: Instant, side: &str) -> Result<RTCPeerConnection> {
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_setting_engine(settings())
        .with_interceptor_registry(registry)
        .build(now)
        .with_context(|| format!("building a {side} peer connection"))
}

/// Hands `pc` its one host candidate, at `addr`, and ends gathering.
fn add_host_candidate(pc: &mut RTCPeerConnection, addr: SocketAddr) -> Result<()> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .context("making a host candidate")?;
    let init = RTCIceCandidate::from(&candidate)
        .to_json()
        .context("encoding a host candidate")?;
    pc.add_local_candidate(init).context("adding a local candidate")
}

/// Runs `pc`'s expired timers as of `now`.
fn drive_timers(pc: &mut RTCPeerConnection, now: Instant) -> Result<()> {
    for _ in 0..TIMER_ROUNDS {
        match pc.poll_timeout() {
            Some(t) if t <= now => pc.handle_timeout(now).context("handling a timeout")?,
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Hands `pc` one datagram received on `local` from `peer` at `now`.
fn receive(
    pc: &mut RTCPeerConnection,
    now: Instant,
    local: SocketAddr,
    peer: SocketAddr,
    data: BytesMut,
) -> Result<()> {
    pc.handle_read(TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: peer,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: data,
    })
    .context("handling a received datagram")
}

/// Drains `pc`'s events, returning its latest connection state if one was reported.
fn drain_events(pc: &mut RTCPeerConnection) -> Option<RTCPeerConnectionState> {
    let mut state = None;
    while let Some(event) = pc.poll_event() {
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = event {
            state = Some(s);
        }
    }
    state
}

/// One server peer and the client it is connected to.
struct Pair {
    server: RTCPeerConnection,
    client: RTCPeerConnection,
    /// The server's sender of its one video track.
    sender: RTCRtpSenderId,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
    server_state: RTCPeerConnectionState,
    client_state: RTCPeerConnectionState,
}

impl Pair {
    /// Builds pair `i` and runs the offer/answer: the client offers to receive video, the
    /// server adds its H.264 track (SSRC [`SSRC`]) and answers, candidates in the SDP.
    fn new(i: usize, now: Instant) -> Result<Pair> {
        let port = |base: usize| -> Result<u16> {
            u16::try_from(base + i).map_err(|_| anyhow!("too many peers for a port each"))
        };
        let server_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port(10_000)?));
        let client_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port(20_000)?));
        let mut server = server_pc(now)?;
        let mut client = client_pc(now)?;

        client
            .add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .context("adding the client's receiving transceiver")?;
        add_host_candidate(&mut client, client_addr)?;
        let offer = client.create_offer(None).context("creating the client's offer")?;
        client
            .set_local_description(now, offer.clone())
            .context("setting the client's offer")?;

        let track = MediaStreamTrack::new(
            format!("stream-{i}"),
            "video".to_owned(),
            "video".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(SSRC),
                    ..Default::default()
                },
                codec: h264(),
                ..Default::default()
            }],
        );
        let sender = server.add_track(track).context("adding the server's track")?;
        add_host_candidate(&mut server, server_addr)?;
        server
            .set_remote_description(now, offer)
            .context("setting the client's offer on the server")?;
        let answer = server.create_answer(None).context("creating the server's answer")?;
        server
            .set_local_description(now, answer.clone())
            .context("setting the server's answer")?;
        client
            .set_remote_description(now, answer)
            .context("setting the server's answer on the client")?;

        let mut pair = Pair {
            server,
            client,
            sender,
            server_addr,
            client_addr,
            server_state: RTCPeerConnectionState::New,
            client_state: RTCPeerConnectionState::New,
        };
        let negotiated = pair.payload_type()?;
        if negotiated != PT {
            bail!("H.264 negotiated as payload type {negotiated}, not {PT}");
        }
        Ok(pair)
    }

    /// The payload type the server's sender negotiated for H.264.
    fn payload_type(&mut self) -> Result<u8> {
        let mut sender = self
            .server
            .rtp_sender(self.sender)
            .context("the server's sender is gone")?;
        sender
            .get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_H264))
            .map(|c| c.payload_type)
            .context("the server's sender negotiated no H.264 codec")
    }

    fn connected(&self) -> bool {
        self.server_state == RTCPeerConnectionState::Connected && self.client_state == RTCPeerConnectionState::Connected
    }

    /// Moves every pending datagram between the two sides, both ways, until neither has one;
    /// notes their connection states. Returns whether anything moved.
    fn exchange(&mut self, now: Instant) -> Result<bool> {
        let mut moved = false;
        loop {
            let mut any = false;
            while let Some(d) = self.server.poll_write() {
                receive(&mut self.client, now, self.client_addr, self.server_addr, d.message)?;
                any = true;
            }
            while let Some(d) = self.client.poll_write() {
                receive(&mut self.server, now, self.server_addr, self.client_addr, d.message)?;
                any = true;
            }
            while self.server.poll_read().is_some() {}
            while self.client.poll_read().is_some() {}
            if let Some(s) = drain_events(&mut self.server) {
                self.server_state = s;
            }
            if let Some(s) = drain_events(&mut self.client) {
                self.client_state = s;
            }
            if self.server_state == RTCPeerConnectionState::Failed
                || self.client_state == RTCPeerConnectionState::Failed
            {
                bail!(
                    "connection failed (server {}, client {})",
                    self.server_state,
                    self.client_state
                );
            }
            if !any {
                return Ok(moved);
            }
            moved = true;
        }
    }

    /// Writes `pkt` through the server's sender and runs the server's timers up to `pkt.now`.
    fn write(&mut self, rtp: rtc::rtp::Packet, now: Instant) -> Result<()> {
        self.server
            .rtp_sender(self.sender)
            .context("the server's sender is gone")?
            .write_rtp(now, rtp)
            .context("writing an RTP packet")?;
        drive_timers(&mut self.server, now)
    }
}

/// The established pairs.
struct RtcStack {
    pairs: Vec<Pair>,
}

impl RtcStack {
    /// `pkt` as the RTP packet each server writes.
    fn rtp(pkt: &Packet<'_>) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: pkt.marker,
                payload_type: PT,
                sequence_number: pkt.seq,
                timestamp: pkt.timestamp,
                ssrc: SSRC,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(pkt.payload),
        }
    }
}

impl Stack for RtcStack {
    fn send_all(&mut self, pkt: &Packet<'_>) -> Result<Sent> {
        // One payload shared by every peer, as the fan-out shares one buffer between legs.
        let rtp = Self::rtp(pkt);
        let mut sent = Sent::default();
        for pair in &mut self.pairs {
            pair.write(rtp.clone(), pkt.now)?;
            while let Some(d) = pair.server.poll_write() {
                sent.datagrams += 1;
                sent.bytes += d.message.len() as u64;
                crate::measure::wire(&d.message);
            }
            while pair.server.poll_event().is_some() {}
            while pair.server.poll_read().is_some() {}
        }
        Ok(sent)
    }

    fn verify(&mut self, pkt: &Packet<'_>) -> Result<usize> {
        let rtp = Self::rtp(pkt);
        let mut decrypted = 0;
        for pair in &mut self.pairs {
            pair.write(rtp.clone(), pkt.now)?;
            drive_timers(&mut pair.client, pkt.now)?;
            while let Some(d) = pair.server.poll_write() {
                receive(&mut pair.client, pkt.now, pair.client_addr, pair.server_addr, d.message)?;
            }
            while pair.server.poll_event().is_some() {}
            while pair.client.poll_event().is_some() {}
            while pair.client.poll_write().is_some() {}
            let mut got = false;
            while let Some(TaggedRTCMessage { message, .. }) = pair.client.poll_read() {
                if let RTCMessage::RtpPacket(_, p) = message {
                    got |= p.payload[..] == *pkt.payload;
                }
            }
            decrypted += usize::from(got);
        }
        Ok(decrypted)
    }
}

/// N established server peers of this stack, and the simulated clock after setup.
pub fn setup(peers: usize) -> Result<(Box<dyn Stack>, Instant)> {
    let start = Instant::now();
    let mut now = start;
    let mut pairs = (0..peers)
        .map(|i| Pair::new(i, now).with_context(|| format!("pair {i}")))
        .collect::<Result<Vec<_>>>()?;
    loop {
        let mut moved = false;
        for (i, pair) in pairs.iter_mut().enumerate() {
            moved |= pair.exchange(now).with_context(|| format!("pair {i}"))?;
        }
        if pairs.iter().all(Pair::connected) {
            break;
        }
        if moved {
            continue;
        }
        // Nothing in flight: jump the clock to the next timer of any peer and run it.
        let next = pairs
            .iter_mut()
            .flat_map(|p| [p.server.poll_timeout(), p.client.poll_timeout()])
            .flatten()
            .min()
            .context("no pair is connected and no peer has a timer")?;
        now = now.max(next);
        if now - start > SETUP_LIMIT {
            let waiting = pairs.iter().filter(|p| !p.connected()).count();
            bail!("{waiting} of {peers} pairs not connected after {SETUP_LIMIT:?} of simulated time");
        }
        for (i, pair) in pairs.iter_mut().enumerate() {
            drive_timers(&mut pair.server, now).with_context(|| format!("pair {i}: server"))?;
            drive_timers(&mut pair.client, now).with_context(|| format!("pair {i}: client"))?;
        }
    }
    Ok((Box::new(RtcStack { pairs }), now))
}
