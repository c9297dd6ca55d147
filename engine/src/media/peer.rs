//! A publisher's peer connection, driven by the `webrtc` crate: built with Fanfare's settings
//! (bound to the configured addresses or on the shared UDP port, mDNS off, no ICE servers,
//! keyframe requests surfaced), answering a client's offer without trickle (the answer carries
//! all candidates). Also the media engine, interceptors and settings every connection of ours is
//! built with, a viewer's too ([`super::viewer_peer`]).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{NackGeneratorBuilder, SenderReportBuilder, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, RTCStatsReport, Registry, SettingEngine,
    SettingEngineBuilder, StatsSelector,
};

use super::nack_history::NackHistory;
use super::probe::Probes;
use super::rtcp_forward::{FeedbackCounters, RtcpForward};
use super::Media;
use crate::error::EngineError;
use crate::metrics::EngineMetrics;

/// A peer connection's state as the rest of the engine sees it.
pub type PeerState = RTCPeerConnectionState;

/// Largest SDP accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// How often a publisher's round trip is read ([`measure_rtt`]).
const RTT_EVERY: Duration = Duration::from_secs(2);

/// How long ICE gathering may take before the answer is sent anyway.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

/// A publisher connection's event handler. The connection owns it, so it lives exactly as
/// long as the connection does.
struct Events {
    state: watch::Sender<PeerState>,
    gathered: watch::Sender<bool>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    /// `fanfare_rtc_publisher_connections`, up while this handler (so its connection) lives.
    held: IntGauge,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.held.dec();
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Runs on the connection's driver: hand the track off and return.
        let _ = self.tracks.send(track);
    }
}

/// A server-side peer connection and its event streams.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    /// The connection state; `Connected` once DTLS is up (RTP written before that is lost).
    pub state: watch::Receiver<PeerState>,
    gathered: watch::Receiver<bool>,
    tracks: Option<mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>>,
    media: Media,
}

/// Packets each outgoing video stream keeps for retransmission on NACK: about 1.4 s of 720p at
/// 2 Mbit/s (180 packets/s), far beyond a NACK's round trip: 12 KB per stream in
/// [`NackHistory`].
const NACK_HISTORY: u16 = 256;
/// The same for an audio stream: 1.3 s of 20 ms packets, 3 KB.
const AUDIO_NACK_HISTORY: u16 = 64;

/// Which way media flows on a connection: every connection of ours only receives (a
/// publisher's) or only sends (a viewer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PeerRole {
    /// Receives the client's media.
    Publisher,
    /// Sends media to the client.
    Viewer,
}

/// The crate's default interceptors (NACK, RTCP reports, TWCC feedback for what we receive),
/// with our own NACK responder ([`NackHistory`], a compact retransmission history), and the
/// feedback types and header extension they need registered with `engine`'s codecs. A viewer's
/// connection receives no RTP, so it leaves out the interceptors that only act on received RTP
/// (NACK generator, TWCC feedback, receiver reports): every packet sent walks through each
/// interceptor in the chain, and at N = 200 viewers those walks were the largest single cost
/// (`bench/README.md`). Its [`RtcpForward`] numbers what it sends with transport-wide sequence
/// numbers and estimates its bandwidth from the client's TWCC feedback.
fn interceptors(
    engine: &mut MediaEngine,
    role: PeerRole,
    probes: Option<Arc<Probes>>,
) -> Result<Registry, EngineError> {
    for parameter in ["", "pli"] {
        engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let history = NackHistory::new(NACK_HISTORY, AUDIO_NACK_HISTORY);
    let history = match probes {
        Some(probes) => history.with_probes(probes),
        None => history,
    };
    let registry = Registry::new().with(Slot::NackResponder, history);
    match role {
        PeerRole::Publisher => {
            let registry = registry.with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
            let registry = configure_twcc_receiver_only(registry, engine).map_err(media_error)?;
            Ok(configure_rtcp_reports(registry))
        }
        PeerRole::Viewer => {
            // The media engine side of TWCC (feedback type, header extension) only.
            configure_twcc_receiver_only(Registry::new(), engine).map_err(media_error)?;
            Ok(registry.with(Slot::SenderReport, SenderReportBuilder::new().build()))
        }
    }
}

/// The media engine and interceptors of a new connection in `role`: its codecs (the crate's
/// defaults for a publisher, [`register_viewer_codecs`] for a viewer), the simulcast header
/// extensions, [`interceptors`], and the [`RtcpForward`] wire-most. A viewer's connection that
/// estimates its bandwidth also gets its [`Probes`] (padding before a leg climbs a layer).
pub(super) fn media_stack(
    media: &Media,
    metrics: &EngineMetrics,
    role: PeerRole,
) -> Result<(MediaEngine, Registry, Option<Arc<Probes>>), EngineError> {
    let mut engine = MediaEngine::default();
    if role == PeerRole::Publisher {
        engine.register_default_codecs().map_err(media_error)?;
    }
    // mid / rtp-stream-id / repaired-rtp-stream-id: without them a publisher's RID
    // layers (simulcast without a=ssrc lines) cannot be told apart.
    configure_simulcast_extension_headers(&mut engine).map_err(media_error)?;
    if role == PeerRole::Publisher {
        // Audio levels on a publisher's packets tell the room who is speaking.
        engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: crate::track::audio_level::AUDIO_LEVEL_URI.to_owned(),
                },
                RtpCodecKind::Audio,
                None,
            )
            .map_err(media_error)?;
    }
    // Wire-most (below the NACK responder at 4_000): what leaves is numbered after the
    // responder kept its copy, so retransmissions get numbers of their own and the
    // history holds packets without the extension. Inbound RTCP reaches it first; it
    // passes each packet on to the responder and delivers split copies upward.
    let estimate = role == PeerRole::Viewer && media.bandwidth_estimation();
    let probes = estimate.then(|| Probes::new(metrics.probe_packets.clone()));
    let registry = interceptors(&mut engine, role, probes.clone())?.with(
        Slot::from(1_500),
        RtcpForward::new(
            FeedbackCounters {
                nacks: metrics.nacks.clone(),
                twcc_feedback: metrics.twcc_feedback.clone(),
                retransmissions: metrics.retransmissions.clone(),
            },
            estimate,
        ),
    );
    if role == PeerRole::Viewer {
        register_viewer_codecs(&mut engine).map_err(media_error)?;
    }
    Ok((engine, registry, probes))
}

/// A configuration error of the media engine or interceptors.
fn media_error(e: rtc::shared::error::Error) -> EngineError {
    EngineError::Media(e.to_string())
}

/// A viewer's codecs: each codec a publisher's connection accepts (the crate's defaults) once,
/// with the default payload types, each video codec with its RTX (RFC 4588) payload type; not
/// H.264's packetization-mode 0 twins of the mode 1 entries. A viewer is sent the payload type
/// whose name (and, where one matches, format line) is the publisher's; mode 1 carries what
/// mode 0 does. The video codecs carry their feedback types themselves and the RTX entries none
/// (as browsers offer them), so this runs after [`interceptors`], whose feedback registrations
/// apply to the codecs already there. Each codec entry is held by the connection several times
/// over (engine, transceivers, both descriptions): 16 video entries without feedback on RTX,
/// instead of 19 with, keep a viewer's connection about 30 KB smaller (`bench/README.md`).
fn register_viewer_codecs(engine: &mut MediaEngine) -> rtc::shared::error::Result<()> {
    use rtc::peer_connection::configuration::media_engine::{
        MIME_TYPE_AV1, MIME_TYPE_G722, MIME_TYPE_H264, MIME_TYPE_HEVC, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU,
        MIME_TYPE_RTX, MIME_TYPE_VP8, MIME_TYPE_VP9,
    };
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters};
    let codec = |mime: &str, clock_rate: u32, channels: u16, fmtp: String, rtcp_feedback: Vec<RTCPFeedback>, pt: u8| {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp,
                rtcp_feedback,
            },
            payload_type: pt,
        }
    };
    for (mime, clock_rate, channels, fmtp, pt) in [
        (MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
        (MIME_TYPE_G722, 8_000, 0, "", 9),
        (MIME_TYPE_PCMU, 8_000, 0, "", 0),
        (MIME_TYPE_PCMA, 8_000, 0, "", 8),
    ] {
        let audio = codec(mime, clock_rate, channels, fmtp.to_owned(), Vec::new(), pt);
        engine.register_codec(audio, RtpCodecKind::Audio)?;
    }
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    for (mime, fmtp, pt, rtx) in [
        (MIME_TYPE_VP8, "", 96, 97),
        (MIME_TYPE_VP9, "profile-id=0", 98, 99),
        (MIME_TYPE_VP9, "profile-id=1", 100, 101),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            102,
            103,
        ),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            125,
            105,
        ),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032",
            123,
            124,
        ),
        (MIME_TYPE_AV1, "profile-id=0", 41, 106),
        (MIME_TYPE_HEVC, "", 126, 107),
    ] {
        let rtcp_feedback = vec![
            feedback("goog-remb", ""),
            feedback("ccm", "fir"),
            feedback("nack", ""),
            feedback("nack", "pli"),
            feedback("transport-cc", ""),
        ];
        engine.register_codec(
            codec(mime, 90_000, 0, fmtp.to_owned(), rtcp_feedback, pt),
            RtpCodecKind::Video,
        )?;
        let repair = codec(MIME_TYPE_RTX, 90_000, 0, format!("apt={pt}"), Vec::new(), rtx);
        engine.register_codec(repair, RtpCodecKind::Video)?;
    }
    Ok(())
}

/// The setting engine of a new connection: mDNS off, ICE-lite as configured, and the local
/// ICE `credentials` a shared port routes by.
pub(super) fn setting_engine(media: &Media, credentials: Option<(String, String)>) -> SettingEngine {
    let mut settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_lite(media.ice_lite());
    if let Some((ufrag, pwd)) = credentials {
        settings = settings.with_ice_credentials(ufrag, pwd);
    }
    settings.build()
}

impl Peer {
    /// Builds a publisher's peer connection. Must run on the media runtime (see [`Media::run`]).
    pub async fn new(media: &Media, metrics: &EngineMetrics) -> Result<Peer, EngineError> {
        let mut last_error = String::new();
        for _ in 0..media.bind_attempts() {
            let (engine, registry, _) = media_stack(media, metrics, PeerRole::Publisher)?;
            let transport = media.transport();
            let settings = setting_engine(media, transport.credentials);
            let (state_tx, state) = watch::channel(PeerState::New);
            let (gathered_tx, gathered) = watch::channel(false);
            let (tracks_tx, tracks) = mpsc::unbounded_channel();
            metrics.rtc_publisher_connections.inc();
            let events = Arc::new(Events {
                state: state_tx,
                gathered: gathered_tx,
                tracks: tracks_tx,
                held: metrics.rtc_publisher_connections.clone(),
            });
            let built = PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(engine)
                .with_setting_engine(settings)
                .with_interceptor_registry(registry)
                .with_runtime(transport.runtime)
                .with_handler(events)
                .with_udp_addrs(transport.udp_addrs)
                .with_tcp_addrs(transport.tcp_addrs)
                .build()
                .await;
            match built {
                Ok(pc) => {
                    return Ok(Peer {
                        pc: Arc::new(pc),
                        state,
                        gathered,
                        tracks: Some(tracks),
                        media: media.clone(),
                    })
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(EngineError::Media(format!(
            "cannot open a peer connection: {last_error}"
        )))
    }

    /// Answers `offer` (non-trickle) and returns the answer SDP with every candidate.
    pub async fn answer(&mut self, offer: String) -> Result<String, EngineError> {
        let offer = RTCSessionDescription::offer(offer).map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| EngineError::Media(e.to_string()))?;
        // Gathering on fixed host addresses takes about a millisecond; the timeout only guards.
        let _ = tokio::time::timeout(GATHER_TIMEOUT, self.gathered.wait_for(|g| *g)).await;
        let local = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| EngineError::Media("no local description".into()))?;
        Ok(self.media.advertise(local.sdp))
    }

    /// The stream of tracks the client sends (taken once).
    pub fn take_tracks(&mut self) -> Option<mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>> {
        self.tracks.take()
    }
}

/// Answers a renegotiation offer on a connection that is already up (ICE and DTLS stay as they
/// are; candidates were gathered for the first answer). Returns the answer SDP.
pub async fn reanswer(pc: &Arc<dyn PeerConnection>, media: &Media, offer: String) -> Result<String, EngineError> {
    let offer = RTCSessionDescription::offer(offer).map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.set_remote_description(offer)
        .await
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    apply_local(pc, media, answer).await
}

/// Sets `description` as the local one and returns its SDP as advertised to the client.
async fn apply_local(
    pc: &Arc<dyn PeerConnection>,
    media: &Media,
    description: RTCSessionDescription,
) -> Result<String, EngineError> {
    pc.set_local_description(description)
        .await
        .map_err(|e| EngineError::Media(e.to_string()))?;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| EngineError::Media("no local description".into()))?;
    Ok(media.advertise(local.sdp))
}

/// The client track ids (`a=msid:<stream> <track>`) of the audio and video sections an offer
/// sends on; `None` when it cannot be parsed or a sending section names no track.
pub fn sending_track_ids(sdp: &str) -> Option<Vec<String>> {
    use rtc::sdp::description::session::SessionDescription;

    let desc = SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes())).ok()?;
    let mut ids = Vec::new();
    for m in &desc.media_descriptions {
        if !matches!(m.media_name.media.as_str(), "audio" | "video") || m.media_name.port.value == 0 {
            continue;
        }
        if m.attributes.iter().any(|a| a.key == "recvonly" || a.key == "inactive") {
            continue;
        }
        let msid = m.attributes.iter().find(|a| a.key == "msid")?;
        let track = msid.value.as_deref()?.split_whitespace().nth(1)?;
        ids.push(track.to_owned());
    }
    Some(ids)
}

/// What [`check_offer`] learned about an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferInfo {
    /// Audio and video sections the offerer sends on (not `recvonly` or `inactive`).
    pub sending: usize,
}

/// Checks an SDP offer before it reaches the WebRTC stack: size, syntax, at least one audio or
/// video section, and the ICE credentials and DTLS fingerprint every WebRTC offer carries.
pub fn check_offer(sdp: &str) -> Result<OfferInfo, EngineError> {
    use rtc::sdp::description::session::SessionDescription;

    if sdp.len() > MAX_SDP_BYTES {
        return Err(EngineError::InvalidSdp(format!(
            "the offer is larger than {MAX_SDP_BYTES} bytes"
        )));
    }
    let desc = SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes()))
        .map_err(|e| EngineError::InvalidSdp(format!("the offer cannot be parsed: {e}")))?;
    let media: Vec<_> = desc
        .media_descriptions
        .iter()
        .filter(|m| matches!(m.media_name.media.as_str(), "audio" | "video"))
        .collect();
    if media.is_empty() {
        return Err(EngineError::InvalidSdp(
            "the offer has no audio or video section".into(),
        ));
    }
    for key in ["ice-ufrag", "ice-pwd", "fingerprint"] {
        let present = desc.attributes.iter().any(|a| a.key == key)
            || media.iter().all(|m| m.attributes.iter().any(|a| a.key == key));
        if !present {
            return Err(EngineError::InvalidSdp(format!("the offer lacks a={key}")));
        }
    }
    let sending = media
        .iter()
        .filter(|m| !m.attributes.iter().any(|a| a.key == "recvonly" || a.key == "inactive"))
        .count();
    Ok(OfferInfo { sending })
}

/// The round trip (seconds) of the connection's selected ICE candidate pair: the latest of the
/// server's own STUN checks on it (ICE consent, every few seconds) and its answer. `None`
/// before one was answered (and always with ICE-lite, which sends no checks).
fn selected_pair_rtt(report: &RTCStatsReport) -> Option<f64> {
    let selected = report
        .transport()
        .map(|t| t.selected_candidate_pair_id.as_str())
        .filter(|id| !id.is_empty());
    let mut pairs = report.candidate_pairs();
    let pair = match selected {
        Some(id) => pairs.find(|p| p.stats.id == id),
        None => pairs.filter(|p| p.nominated).max_by_key(|p| p.responses_received),
    };
    pair.filter(|p| p.responses_received > 0 && p.current_round_trip_time > 0.0)
        .map(|p| p.current_round_trip_time)
}

/// Keeps `rtt_ms` at the round trip of a publisher's connection (its tracks' uplink: the
/// client measures its own, the server these), read every [`RTT_EVERY`] until the connection
/// closes. Runs on the media runtime.
pub async fn measure_rtt(
    pc: std::sync::Weak<dyn PeerConnection>,
    mut state: watch::Receiver<PeerState>,
    rtt_ms: Arc<AtomicU32>,
    metrics: EngineMetrics,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RTT_EVERY) => {}
            changed = state.changed() => if changed.is_err() { return },
        }
        match *state.borrow() {
            PeerState::Closed | PeerState::Failed => return,
            PeerState::Connected => {}
            _ => continue,
        }
        // Held only while asking: the connection is the session's to drop.
        let Some(pc) = pc.upgrade() else { return };
        let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
        drop(pc);
        if let Some(rtt) = selected_pair_rtt(&report) {
            rtt_ms.store((rtt * 1000.0).round().max(1.0) as u32, Ordering::Relaxed);
            metrics.link_rtt.with_label_values(&["up"]).observe(rtt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_offer;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB:CD\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz12\r\n\
        a=rtpmap:96 H264/90000\r\na=sendonly\r\n";

    #[test]
    fn offers_are_checked() {
        assert_eq!(check_offer(OFFER).unwrap().sending, 1);
        assert_eq!(
            check_offer(&OFFER.replace("a=sendonly", "a=recvonly")).unwrap().sending,
            0
        );
        assert!(check_offer("hello").is_err());
        assert!(check_offer(&OFFER.replace("m=video", "m=application")).is_err());
        assert!(check_offer(&OFFER.replace("a=ice-pwd", "a=ice-pass")).is_err());
        assert!(check_offer(&OFFER.replace("a=fingerprint", "a=fingerprints")).is_err());
        assert!(check_offer(&"a".repeat(70_000)).is_err());
    }
}
