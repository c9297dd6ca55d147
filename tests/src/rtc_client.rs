//! WebRTC test clients for Fanfare's WHIP (publish) and WHEP (play) endpoints.
//!
//! [`WhipPublisher`] loops the H.264 fixture at 30 fps (plus optional Opus silence) once its
//! connection is up, and answers PLI/FIR by jumping to the next keyframe. [`WhepSubscriber`]
//! receives and counts packets, complete frames and keyframes. Both make a non-trickle offer from
//! a PeerConnection bound to 127.0.0.1 only, with no ICE servers and mDNS disabled. The SDP
//! exchange is pluggable (`connect_with`), so the clients can be tested against an in-process
//! answerer; `connect` does it over HTTP as RFC 9725 describes.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder,
};
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};
use webrtc::runtime::TokioRuntime;

use crate::h264::{self, AccessUnit, FrameCounter, Packetizer};

/// Time between two video frames (30 fps).
pub const FRAME_INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / 30);
/// RTP timestamp increment per video frame (90 kHz / 30 fps).
pub const FRAME_TICKS: u32 = h264::CLOCK_RATE / 30;
/// An Opus frame of 20 ms of silence (TOC 0xF8: CELT fullband 20 ms, one frame).
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];
/// RFC 6464 client-to-mixer audio level header extension.
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Where every test peer binds.
const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Why a client could not connect or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The server answered with an unexpected HTTP status (anything but 201 for an offer, or a
    /// non-2xx status for a DELETE).
    Http {
        /// The HTTP status code.
        status: u16,
        /// The response body, as text.
        body: String,
    },
    /// The HTTP request itself failed (connection refused, timeout, unreadable body).
    Request(String),
    /// The server's response broke the WHIP/WHEP contract (no Location, bad SDP, codec refused).
    Protocol(String),
    /// The WebRTC stack reported an error.
    WebRtc(String),
    /// A bounded wait ran out.
    Timeout(String),
    /// The media fixture could not be read.
    Media(String),
}

/// The error type of [`WhipPublisher`] and [`WhepSubscriber`].
pub type PublishError = ClientError;

impl ClientError {
    /// The HTTP status, for [`ClientError::Http`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Http { status, body } => write!(f, "HTTP {status}: {body}"),
            ClientError::Request(e) => write!(f, "HTTP request failed: {e}"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::WebRtc(e) => write!(f, "WebRTC error: {e}"),
            ClientError::Timeout(e) => write!(f, "timed out: {e}"),
            ClientError::Media(e) => write!(f, "media error: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<webrtc::error::Error> for ClientError {
    fn from(e: webrtc::error::Error) -> Self {
        ClientError::WebRtc(e.to_string())
    }
}

/// Settings shared by both clients.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Publisher: also send an Opus track (20 ms silence frames, 50 packets/s). Subscriber: also
    /// offer to receive audio.
    pub audio: bool,
    /// Bound on each step: one HTTP request, ICE gathering, and how long the publisher's sender
    /// waits for the connection before giving up.
    pub timeout: Duration,
    /// The Annex-B H.264 file the publisher loops.
    pub fixture: PathBuf,
    /// Publisher: send the video as three simulcast layers (RIDs `q`, `h`, `f`, each looping
    /// its own fixture from [`h264::simulcast_fixtures`]: 180p, 360p, 720p) instead of
    /// `fixture`; a PLI for one layer's SSRC makes that layer jump to its next keyframe.
    pub simulcast: bool,
    /// ICE over TCP only (RFC 6544): no UDP socket at all, as behind a firewall that drops UDP.
    pub tcp_only: bool,
    /// Subscriber: a simulated bottleneck on the downlink, as the client's TWCC feedback
    /// reports it (see [`Bottleneck`]).
    pub bottleneck: Option<Bottleneck>,
    /// Subscriber: simulated loss on the downlink, repaired by NACK (see [`Loss`]).
    pub loss: Option<Loss>,
    /// Publisher: the audio level (RFC 6464, -dBov: 0 loudest, 127 silence) put on each Opus
    /// packet, read as each is sent, as a browser's speaking or silent microphone would.
    /// Without it the packets carry no level.
    pub audio_level: Option<AudioLevel>,
    /// Publisher: video packets it leaves out, as a lossy uplink would (never sent, so a NACK
    /// cannot bring them back).
    pub uplink_loss: Option<UplinkLoss>,
    /// Publisher: offer the RFC 6464 audio level extension, as browsers do (default). Without
    /// it the client is like OBS or ffmpeg: its audio carries no level.
    pub audio_level_extension: bool,
    /// Publisher: the Opus packets (20 ms each) its audio track loops, e.g.
    /// [`crate::opus::tone_packets`]; while empty (and without it) it sends silence frames.
    pub audio_payloads: Option<AudioPayloads>,
    /// Subscriber: offer H.265 video, as Safari does (default); without it the offer names no
    /// H.265, as most browsers'.
    pub offer_h265: bool,
    /// Subscriber: while set, the client sends no RTCP at all (no receiver reports, NACKs or
    /// feedback), as one whose network went quiet; its ICE checks go on.
    pub rtcp_silence: Option<RtcpSilence>,
}

/// What a test viewer's receiver report claims (see [`WhepSubscriber::send_report`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Packets lost since the last report, of 256.
    pub fraction_lost: u8,
    /// Interarrival jitter, 90 kHz units.
    pub jitter: u32,
    /// The round trip to claim (none: no sender report answered).
    pub rtt: Option<Duration>,
}

/// The middle 32 bits of an NTP time (16.16 seconds), as RTCP's LSR field carries.
fn ntp_middle(t: SystemTime) -> u32 {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs() + 2_208_988_800;
    let frac = (u64::from(since_epoch.subsec_nanos()) << 16) / 1_000_000_000;
    (((secs & 0xffff) << 16) | frac) as u32
}

/// What a publisher's audio track sends (see [`ClientOptions::audio_payloads`]).
#[derive(Clone, Debug, Default)]
pub struct AudioPayloads(Arc<std::sync::Mutex<Vec<Bytes>>>);

impl AudioPayloads {
    /// Loops `packets` from now on (empty: silence frames).
    pub fn set(&self, packets: Vec<Bytes>) {
        if let Ok(mut p) = self.0.lock() {
            *p = packets;
        }
    }

    /// The payload of the `n`-th packet sent.
    fn nth(&self, n: usize) -> Bytes {
        match self.0.lock() {
            Ok(p) if !p.is_empty() => p[n % p.len()].clone(),
            _ => Bytes::from_static(&OPUS_SILENCE),
        }
    }
}

/// Whether a subscriber sends RTCP (see [`ClientOptions::rtcp_silence`]).
#[derive(Clone, Debug, Default)]
pub struct RtcpSilence(Arc<AtomicBool>);

impl RtcpSilence {
    /// Stops (`true`) or resumes (`false`) the client's RTCP.
    pub fn set(&self, silent: bool) {
        self.0.store(silent, Ordering::Relaxed);
    }
}

/// Every how many video packets a publisher leaves one out (0: none).
#[derive(Clone, Debug, Default)]
pub struct UplinkLoss(Arc<AtomicU32>);

impl UplinkLoss {
    /// Leaves out one video packet in `n` (0: none).
    pub fn set_every(&self, n: u32) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// The loudness a publisher says its audio has (see [`ClientOptions::audio_level`]).
#[derive(Clone, Debug)]
pub struct AudioLevel(Arc<AtomicU8>);

impl Default for AudioLevel {
    /// Silence.
    fn default() -> Self {
        AudioLevel(Arc::new(AtomicU8::new(127)))
    }
}

impl AudioLevel {
    /// Sets the level, -dBov (0 to 127).
    pub fn set(&self, level: u8) {
        self.0.store(level.min(127), Ordering::Relaxed);
    }
}

/// A simulated bottleneck on a subscriber's downlink, for congestion tests. While it has a
/// rate, each RTP packet received is stamped (for the client's TWCC feedback, and so for the
/// server's delay-based estimate) with the time a first-in-first-out link of that rate would
/// have delivered it: above the rate, the queue and the reported delays grow. Packets are not
/// really delayed or dropped. Set it to 0 to remove it.
#[derive(Clone, Debug, Default)]
pub struct Bottleneck(Arc<AtomicU32>);

impl Bottleneck {
    /// The link's rate in kbit/s (0: no bottleneck).
    pub fn set_kbps(&self, kbps: u32) {
        self.0.store(kbps, Ordering::Relaxed);
    }
}

/// A hook, placed nearest the wire, that restamps received RTP by [`Bottleneck`].
fn queue_delay(link: Bottleneck) -> impl FnMut(&mut TaggedPacket) -> bool + Send + Sync {
    // When the simulated link finishes delivering what it has queued.
    let mut free_at: Option<Instant> = None;
    move |msg| {
        if let Packet::Rtp(p) = &msg.message.packet {
            let kbps = link.0.load(Ordering::Relaxed);
            if kbps == 0 {
                free_at = None;
            } else {
                // RTP header, SRTP tag, UDP/IP headers: about 50 bytes over the payload.
                let bits = (p.payload.len() as f64 + 50.0) * 8.0;
                let start = free_at.map_or(msg.now, |f| f.max(msg.now));
                let out = start + Duration::from_secs_f64(bits / (f64::from(kbps) * 1000.0));
                free_at = Some(out);
                msg.now = out;
            }
        }
        true
    }
}

/// Simulated loss on a subscriber's downlink, for retransmission tests. While it has a period
/// `n`, every n-th RTP packet is dropped on its first arrival, before the client's NACK
/// generator sees it, so the client asks for it again. It counts what comes back, and whether
/// the copy that came back carried other header extensions than the dropped one (a sender
/// that numbers packets transport-wide gives a retransmission a number of its own).
#[derive(Clone, Debug, Default)]
pub struct Loss(Arc<LossState>);

#[derive(Debug, Default)]
struct LossState {
    every: AtomicU32,
    dropped: AtomicU64,
    repaired: AtomicU64,
    renumbered: AtomicU64,
}

impl Loss {
    /// Drops every `n`-th packet (0: none).
    pub fn set_every(&self, n: u32) {
        self.0.every.store(n, Ordering::Relaxed);
    }
    /// Packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
    /// Dropped packets that arrived again (retransmitted).
    pub fn repaired(&self) -> u64 {
        self.0.repaired.load(Ordering::Relaxed)
    }
    /// Repaired packets that carry header extensions, and other ones than the dropped copy's.
    pub fn renumbered(&self) -> u64 {
        self.0.renumbered.load(Ordering::Relaxed)
    }
}

/// A hook, placed nearest the wire, that drops packets as [`Loss`] says and counts the repairs:
/// the same packet again, or its RFC 4588 retransmission (on the stream's RTX SSRC, the
/// original sequence number leading the payload).
struct Lossy {
    loss: Loss,
    seen: u32,
    /// Media SSRC of each RTX SSRC.
    rtx: std::collections::HashMap<u32, u32>,
    /// (SSRC, sequence number) of each dropped packet, with its header extensions.
    dropped: std::collections::HashMap<(u32, u16), Vec<(u8, Bytes)>>,
}

impl Lossy {
    fn new(loss: Loss) -> Self {
        Lossy {
            loss,
            seen: 0,
            rtx: Default::default(),
            dropped: Default::default(),
        }
    }
}

impl Hook for Lossy {
    fn bind_remote(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.insert(rtx, info.ssrc);
        }
    }

    fn read(&mut self, msg: &mut TaggedPacket) -> bool {
        let Packet::Rtp(p) = &msg.message.packet else {
            return true;
        };
        let extensions: Vec<(u8, Bytes)> = p.header.extensions.iter().map(|e| (e.id, e.payload.clone())).collect();
        let key = match (self.rtx.get(&p.header.ssrc), p.payload.get(..2)) {
            (Some(&media), Some(osn)) => (media, u16::from_be_bytes([osn[0], osn[1]])),
            _ => (p.header.ssrc, p.header.sequence_number),
        };
        if let Some(first) = self.dropped.remove(&key) {
            self.loss.0.repaired.fetch_add(1, Ordering::Relaxed);
            if !extensions.is_empty() && first != extensions {
                self.loss.0.renumbered.fetch_add(1, Ordering::Relaxed);
            }
            return true;
        }
        let every = self.loss.0.every.load(Ordering::Relaxed);
        self.seen = self.seen.wrapping_add(1);
        if every == 0 || !self.seen.is_multiple_of(every) || self.rtx.contains_key(&p.header.ssrc) {
            return true;
        }
        if self.dropped.len() > 4096 {
            self.dropped.clear();
        }
        self.dropped.insert(key, extensions);
        self.loss.0.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }
}

impl ClientOptions {
    /// A publisher of one 720p H.264 layer (the simulcast fixtures' top one, about 270 kbit/s)
    /// and no audio.
    pub fn single_720p() -> ClientOptions {
        ClientOptions {
            audio: false,
            fixture: h264::simulcast_fixtures()[2].1.clone(),
            ..Default::default()
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            audio: true,
            timeout: Duration::from_secs(10),
            fixture: h264::fixture_path(),
            simulcast: false,
            tcp_only: false,
            bottleneck: None,
            loss: None,
            audio_level: None,
            uplink_loss: None,
            audio_level_extension: true,
            offer_h265: true,
            audio_payloads: None,
            rtcp_silence: None,
        }
    }
}

/// The answerer's side of an SDP exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpAnswer {
    /// The answer SDP.
    pub sdp: String,
    /// The session URL (the WHIP/WHEP `Location` header), e.g. `/v1/sessions/{sid}`.
    pub location: String,
}

/// A pseudo-random 32-bit value (no `rand` dependency): time, pid and a counter through splitmix64.
pub fn random_u32() -> u32 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        ^ ((std::process::id() as u64) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

fn random_ssrc() -> u32 {
    loop {
        let v = random_u32();
        if v != 0 {
            return v;
        }
    }
}

/// The H.264 codec the publisher sends (constrained baseline, packetization-mode 1).
pub fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: h264::CLOCK_RATE,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The Opus codec the publisher sends.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A local RTP track with one encoding of `codec` on `ssrc`.
pub fn local_track(
    stream_id: &str,
    track_id: &str,
    kind: RtpCodecKind,
    ssrc: u32,
    codec: RTCRtpCodec,
) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id.to_owned(),
        track_id.to_owned(),
        track_id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

/// The payload type negotiated on `sender` for `codec`: same MIME type, preferring the same fmtp line.
pub async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>, codec: &RTCRtpCodec) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    let codecs = &params.rtp_parameters.codecs;
    let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type)
    };
    codecs
        .iter()
        .filter(same_mime)
        .find(|c| c.rtp_codec.sdp_fmtp_line == codec.sdp_fmtp_line)
        .or_else(|| codecs.iter().find(same_mime))
        .map(|c| c.payload_type)
}

// ───────────────────────────── peer connection plumbing ─────────────────────────────

/// What a [`ReadHook`] does with each packet read: it may change it, and says whether it goes
/// on towards the application. It also sees the remote streams as they are bound.
trait Hook: Send + Sync {
    fn read(&mut self, msg: &mut TaggedPacket) -> bool;
    /// Whether a packet being written goes on (default: all do).
    fn write(&mut self, _msg: &TaggedPacket) -> bool {
        true
    }
    fn bind_remote(&mut self, _info: &StreamInfo) {}
}

impl<F: FnMut(&mut TaggedPacket) -> bool + Send + Sync> Hook for F {
    fn read(&mut self, msg: &mut TaggedPacket) -> bool {
        self(msg)
    }
}

/// A hook, placed nearest the wire, that drops outgoing RTCP while [`RtcpSilence`] is set.
impl Hook for RtcpSilence {
    fn read(&mut self, _msg: &mut TaggedPacket) -> bool {
        true
    }
    fn write(&mut self, msg: &TaggedPacket) -> bool {
        !(matches!(msg.message.packet, Packet::Rtcp(_)) && self.0.load(Ordering::Relaxed))
    }
}

/// An interceptor that hands each packet read, and each written, to its hook.
struct ReadHook<H> {
    hook: H,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl<H> ReadHook<H> {
    fn new(hook: H) -> Self {
        ReadHook {
            hook,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl<H: Hook> Protocol<TaggedPacket, TaggedPacket, ()> for ReadHook<H> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if self.hook.read(&mut msg) {
            self.read.push_back(msg);
        }
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if self.hook.write(&msg) {
            self.write.push_back(msg);
        }
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl<H: Hook> Interceptor for ReadHook<H> {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.hook.bind_remote(info);
    }
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// A hook, placed last, that hands PLI, FIR and NACK to the application
/// (`TrackLocal::poll`); without it inbound RTCP never leaves the interceptor chain.
fn deliver_feedback(msg: &mut TaggedPacket) -> bool {
    if let Packet::Rtcp(pkts) = &msg.message.packet {
        let keep: Vec<Box<dyn rtc::rtcp::Packet>> = pkts
            .iter()
            .filter(|p| {
                let a = p.as_any();
                a.is::<PictureLossIndication>() || a.is::<FullIntraRequest>() || a.is::<TransportLayerNack>()
            })
            .cloned()
            .collect();
        if keep.is_empty() {
            return false; // the interceptors before this one have consumed the rest
        }
        msg.message.packet = Packet::Rtcp(keep);
        msg.message.add(Attribute::DeliverToApplication);
    }
    true
}

/// Forwards PeerConnection events into channels; it runs on the connection's driver task, so it
/// only sends and returns.
struct PeerEvents {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerEvents {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

/// What a connection's simulated downlink does to what it receives.
#[derive(Default)]
struct Downlink {
    link: Option<Bottleneck>,
    loss: Option<Loss>,
    rtcp_silence: Option<RtcpSilence>,
}

/// How a [`LoopbackPeer`] is built.
struct Setup {
    /// The header extensions simulcast needs (mid, RID, repaired RID) for video.
    simulcast: bool,
    /// ICE over TCP only: no UDP socket.
    tcp: bool,
    /// Offer the RFC 6464 audio level extension (browsers do; OBS and ffmpeg do not).
    audio_levels: bool,
    downlink: Downlink,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            simulcast: false,
            tcp: false,
            audio_levels: true,
            downlink: Downlink::default(),
        }
    }
}

/// A PeerConnection on 127.0.0.1 (one UDP socket, random port) with the default codecs and
/// interceptors, no ICE servers and mDNS disabled, plus watches of its gathering and connection
/// state. The building block of both clients, and of in-process fake servers in tests.
pub struct LoopbackPeer {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    tracks: Option<mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>>,
    /// ICE over TCP only.
    tcp: bool,
}

impl LoopbackPeer {
    /// Builds the connection. With `rtcp_to_app`, inbound PLI/FIR/NACK reach `TrackLocal::poll`.
    pub async fn new(rtcp_to_app: bool) -> Result<Self, ClientError> {
        Self::bound(LOCALHOST, rtcp_to_app).await
    }

    /// Like [`LoopbackPeer::new`], bound to `ip` (e.g. a veth address in a private namespace).
    pub async fn bound(ip: std::net::IpAddr, rtcp_to_app: bool) -> Result<Self, ClientError> {
        Self::build(ip, rtcp_to_app, Setup::default()).await
    }

    /// Like [`LoopbackPeer::new`], receiving through the simulated downlink `opts` describes:
    /// arrivals reported through its `bottleneck` (see [`Bottleneck`]), packets dropped as its
    /// `loss` says (see [`Loss`]), RTCP held back by its `rtcp_silence`.
    pub async fn with_downlink(rtcp_to_app: bool, opts: &ClientOptions) -> Result<Self, ClientError> {
        let downlink = Downlink {
            link: opts.bottleneck.clone(),
            loss: opts.loss.clone(),
            rtcp_silence: opts.rtcp_silence.clone(),
        };
        let setup = Setup {
            downlink,
            ..Setup::default()
        };
        Self::build(LOCALHOST, rtcp_to_app, setup).await
    }

    /// Like [`LoopbackPeer::new`], with no UDP socket: its only candidates are TCP ones
    /// (ICE-TCP, active and passive).
    pub async fn tcp_only(rtcp_to_app: bool) -> Result<Self, ClientError> {
        let setup = Setup {
            tcp: true,
            ..Setup::default()
        };
        Self::build(LOCALHOST, rtcp_to_app, setup).await
    }

    async fn build(ip: std::net::IpAddr, rtcp_to_app: bool, setup: Setup) -> Result<Self, ClientError> {
        let Setup {
            simulcast,
            tcp,
            audio_levels,
            downlink,
        } = setup;
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        if audio_levels {
            media.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: AUDIO_LEVEL_URI.to_owned(),
                },
                RtpCodecKind::Audio,
                None,
            )?;
        }
        if simulcast {
            rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers(
                &mut media,
            )?;
        }
        let mut registry = register_default_interceptors(Registry::new(), &mut media)?;
        if let Some(silence) = downlink.rtcp_silence {
            registry = registry.with(Slot::from(300), ReadHook::new(silence));
        }
        if let Some(loss) = downlink.loss {
            registry = registry.with(Slot::from(400), ReadHook::new(Lossy::new(loss)));
        }
        if let Some(link) = downlink.link {
            registry = registry.with(Slot::from(500), ReadHook::new(queue_delay(link)));
        }
        if rtcp_to_app {
            registry = registry.with(Slot::from(14_000), ReadHook::new(deliver_feedback));
        }
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .build();
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_runtime(Arc::new(TokioRuntime))
            .with_handler(Arc::new(PeerEvents {
                gathered: gathered_tx,
                state: state_tx,
                tracks: tracks_tx,
            }))
            .with_udp_addrs(if tcp {
                vec![]
            } else {
                vec![std::net::SocketAddr::new(ip, 0)]
            })
            .with_tcp_addrs(if tcp {
                vec![std::net::SocketAddr::new(ip, 0)]
            } else {
                vec![]
            })
            .build()
            .await?;
        Ok(LoopbackPeer {
            pc: Arc::new(pc),
            gathered,
            state,
            tracks: Some(tracks),
            tcp,
        })
    }

    /// The connection.
    pub fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    /// The latest connection state.
    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// A watch of the connection state.
    pub fn state_watch(&self) -> watch::Receiver<RTCPeerConnectionState> {
        self.state.clone()
    }

    /// Waits up to `timeout` for the connection to be `Connected`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        wait_state(self.state.clone(), timeout).await
    }

    /// Takes the stream of remote tracks (`on_track`); `None` the second time.
    pub fn take_tracks(&mut self) -> Option<mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>> {
        self.tracks.take()
    }

    async fn set_local_and_gather(
        &self,
        desc: RTCSessionDescription,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        self.pc.set_local_description(desc).await?;
        let mut gathered = self.gathered.clone();
        match tokio::time::timeout(timeout, gathered.wait_for(|g| *g)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(ClientError::WebRtc("connection dropped while gathering".into())),
            Err(_) => return Err(ClientError::Timeout("ICE gathering".into())),
        }
        let desc = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| ClientError::WebRtc("no local description".into()))?;
        Ok(desc.sdp)
    }

    /// Creates an offer, sets it, waits for ICE gathering and returns the SDP with its candidates.
    pub async fn create_offer(&self, timeout: Duration) -> Result<String, ClientError> {
        let offer = self.pc.create_offer(None).await?;
        self.set_local_and_gather(offer, timeout).await
    }

    /// Applies a remote offer and returns the complete answer SDP (non-trickle).
    pub async fn answer(&self, offer_sdp: String, timeout: Duration) -> Result<String, ClientError> {
        let offer =
            RTCSessionDescription::offer(offer_sdp).map_err(|e| ClientError::Protocol(format!("bad offer: {e}")))?;
        self.pc.set_remote_description(offer).await?;
        let answer = self.pc.create_answer(None).await?;
        self.set_local_and_gather(answer, timeout).await
    }

    /// Applies the remote answer to our offer.
    pub async fn accept_answer(&self, answer_sdp: String) -> Result<(), ClientError> {
        let answer = RTCSessionDescription::answer(answer_sdp)
            .map_err(|e| ClientError::Protocol(format!("bad answer SDP: {e}")))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| ClientError::Protocol(format!("answer rejected: {e}")))?;
        if self.tcp {
            // webrtc-rs only dials a remote passive TCP candidate that arrives through
            // `add_ice_candidate` (trickle), not one in the description: hand them over again.
            let sdp = self.pc.remote_description().await.map(|d| d.sdp).unwrap_or_default();
            for line in sdp
                .lines()
                .filter(|l| l.contains(" tcp ") && l.ends_with("tcptype passive"))
            {
                let Some(candidate) = line.strip_prefix("a=") else {
                    continue;
                };
                let init = RTCIceCandidateInit {
                    candidate: candidate.to_owned(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    ..Default::default()
                };
                self.pc
                    .add_ice_candidate(init)
                    .await
                    .map_err(|e| ClientError::Protocol(format!("TCP candidate refused: {e}")))?;
            }
        }
        Ok(())
    }

    /// Closes the connection (idempotent).
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// Waits for `Connected`; false on timeout or when the connection failed or closed first.
async fn wait_state(mut state: watch::Receiver<RTCPeerConnectionState>, timeout: Duration) -> bool {
    let done = |s: &RTCPeerConnectionState| {
        matches!(
            s,
            RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        )
    };
    let connected = matches!(
        tokio::time::timeout(timeout, state.wait_for(done)).await,
        Ok(Ok(s)) if *s == RTCPeerConnectionState::Connected
    );
    connected
}

fn is_over(state: &watch::Receiver<RTCPeerConnectionState>) -> bool {
    matches!(
        *state.borrow(),
        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
    )
}

// ───────────────────────────── HTTP (WHIP/WHEP) ─────────────────────────────

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Http {
    fn new(base_url: &str, token: &str, timeout: Duration) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Request(e.to_string()))?;
        Ok(Http {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.token.is_empty() {
            req
        } else {
            req.bearer_auth(&self.token)
        }
    }

    /// POSTs an offer; 201 with `Location` and an `application/sdp` answer is the only success.
    async fn post_offer(&self, path_and_query: &str, offer: String) -> Result<SdpAnswer, ClientError> {
        let req = self
            .client
            .post(self.url(path_and_query))
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer);
        let res = self
            .auth(req)
            .send()
            .await
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let status = res.status().as_u16();
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header(LOCATION);
        let content_type = header(CONTENT_TYPE);
        let body = res.text().await.map_err(|e| ClientError::Request(e.to_string()))?;
        if status != 201 {
            return Err(ClientError::Http { status, body });
        }
        let location = location.ok_or_else(|| ClientError::Protocol("201 without a Location header".into()))?;
        if !content_type
            .as_deref()
            .unwrap_or("")
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/sdp")
        {
            return Err(ClientError::Protocol(format!(
                "answer Content-Type is {content_type:?}, not application/sdp"
            )));
        }
        Ok(SdpAnswer { sdp: body, location })
    }

    /// DELETEs the session; any 2xx is success.
    async fn delete(&self, location: &str) -> Result<(), ClientError> {
        let req = self.client.delete(self.url(location));
        let res = self
            .auth(req)
            .send()
            .await
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(ClientError::Http { status, body })
        }
    }
}

/// What both clients share: the connection, the session, the background tasks.
struct Session {
    peer: LoopbackPeer,
    location: String,
    http: Option<Http>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Session {
    fn abort_tasks(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }

    async fn stop(&self) -> Result<(), ClientError> {
        let deleted = match &self.http {
            Some(http) => http.delete(&self.location).await,
            None => Ok(()),
        };
        self.close().await;
        deleted
    }

    async fn close(&self) {
        self.abort_tasks();
        self.peer.close().await;
    }

    fn session_id(&self) -> &str {
        self.location.trim_end_matches('/').rsplit('/').next().unwrap_or("")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.abort_tasks();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let pc = self.peer.pc.clone();
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// Runs `exchange` and applies its answer; closes the connection on failure.
async fn negotiate<F, Fut>(peer: &LoopbackPeer, timeout: Duration, exchange: F) -> Result<SdpAnswer, ClientError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<SdpAnswer, ClientError>>,
{
    let result = async {
        let offer = peer.create_offer(timeout).await?;
        let answer = exchange(offer).await?;
        peer.accept_answer(answer.sdp.clone()).await?;
        Ok(answer)
    }
    .await;
    if result.is_err() {
        peer.close().await;
    }
    result
}

/// `sdp` without the codec `name`: its payload types (and the RTX types repairing them) are
/// taken off the media lines, with their `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines.
fn without_codec(sdp: &str, name: &str) -> String {
    let pt_of = |line: &str, prefix: &str| -> Option<String> {
        let rest = line.strip_prefix(prefix)?;
        Some(rest.split([' ', ':']).next()?.to_owned())
    };
    let mut gone: Vec<String> = sdp
        .lines()
        .filter(|l| {
            l.split_once(' ')
                .is_some_and(|(_, c)| c.split('/').next().is_some_and(|c| c.eq_ignore_ascii_case(name)))
        })
        .filter_map(|l| pt_of(l, "a=rtpmap:"))
        .collect();
    let repairs: Vec<String> = sdp
        .lines()
        .filter(|l| l.starts_with("a=fmtp:") && gone.iter().any(|pt| l.ends_with(&format!("apt={pt}"))))
        .filter_map(|l| pt_of(l, "a=fmtp:"))
        .collect();
    gone.extend(repairs);
    let mut out = String::new();
    for line in sdp.lines() {
        let pt = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
            .iter()
            .find_map(|p| pt_of(line, p));
        if pt.is_some_and(|pt| gone.contains(&pt)) {
            continue;
        }
        if line.starts_with("m=") {
            // m=<media> <port> <proto> <payload types...>
            let kept: Vec<&str> = line
                .split(' ')
                .enumerate()
                .filter(|(i, f)| *i < 3 || !gone.iter().any(|g| g == f))
                .map(|(_, f)| f)
                .collect();
            out.push_str(&kept.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

// ───────────────────────────── WHIP publisher ─────────────────────────────

#[derive(Default)]
struct PublisherCounters {
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_sent: AtomicU64,
    keyframes_sent: AtomicU64,
    audio_packets_sent: AtomicU64,
    write_errors: AtomicU64,
    plis_received: AtomicU64,
    firs_received: AtomicU64,
    nacks_received: AtomicU64,
    forced_keyframes: AtomicU64,
    keyframe_requested: AtomicBool,
}

/// A snapshot of a publisher's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Video RTP packets accepted by the connection.
    pub packets_sent: u64,
    /// Video RTP payload bytes accepted by the connection.
    pub bytes_sent: u64,
    /// Video frames sent.
    pub frames_sent: u64,
    /// Keyframes (IDR pictures) among them.
    pub keyframes_sent: u64,
    /// Opus packets sent.
    pub audio_packets_sent: u64,
    /// RTP writes the connection refused.
    pub write_errors: u64,
    /// PLIs received for the video track.
    pub plis_received: u64,
    /// FIRs received for the video track.
    pub firs_received: u64,
    /// NACK packets received for the video track.
    pub nacks_received: u64,
    /// Keyframe requests (PLI/FIR) acted on by sending a keyframe next.
    pub forced_keyframes: u64,
}

/// A WHIP publisher: sends the H.264 fixture in a loop (and Opus silence) to the server.
pub struct WhipPublisher {
    session: Session,
    counters: Arc<PublisherCounters>,
    video_ssrc: u32,
    video_payload_type: u8,
    audio_payload_type: Option<u8>,
}

impl WhipPublisher {
    /// Publishes over HTTP: POSTs the offer to `base_url` + `path_and_query` (e.g.
    /// `/v1/whip?groups=a,b`) with `token` as bearer (none when empty). Anything but 201 with a
    /// `Location` and an SDP answer is an error; [`ClientError::status`] has the HTTP status.
    pub async fn connect(base_url: &str, path_and_query: &str, token: &str) -> Result<Self, ClientError> {
        Self::connect_opts(base_url, path_and_query, token, ClientOptions::default()).await
    }

    /// [`WhipPublisher::connect`] with options.
    pub async fn connect_opts(
        base_url: &str,
        path_and_query: &str,
        token: &str,
        opts: ClientOptions,
    ) -> Result<Self, ClientError> {
        let http = Http::new(base_url, token, opts.timeout)?;
        let h = http.clone();
        let mut publisher =
            Self::connect_with(opts, |offer| async move { h.post_offer(path_and_query, offer).await }).await?;
        publisher.session.http = Some(http);
        Ok(publisher)
    }

    /// Publishes with a custom SDP exchange: `exchange` gets the complete offer and returns the
    /// answer and session location. [`WhipPublisher::stop`] then sends no DELETE.
    pub async fn connect_with<F, Fut>(opts: ClientOptions, exchange: F) -> Result<Self, ClientError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<SdpAnswer, ClientError>>,
    {
        let fixtures = if opts.simulcast {
            h264::simulcast_fixtures()
        } else {
            vec![(String::new(), opts.fixture.clone())]
        };
        let mut layers = Vec::new();
        for (rid, path) in fixtures {
            let aus =
                h264::read_access_units(&path).map_err(|e| ClientError::Media(format!("{}: {e}", path.display())))?;
            if !aus.iter().any(|a| a.keyframe) {
                return Err(ClientError::Media(format!("{}: no keyframe", path.display())));
            }
            layers.push((rid, random_ssrc(), aus));
        }
        let setup = Setup {
            simulcast: opts.simulcast,
            tcp: opts.tcp_only,
            audio_levels: opts.audio_level_extension,
            downlink: Downlink::default(),
        };
        let peer = LoopbackPeer::build(LOCALHOST, true, setup).await?;
        let video_ssrc = layers[0].1;
        let stream_id = format!("fanfare-test-{video_ssrc:08x}");
        let video = if opts.simulcast {
            Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                stream_id.clone(),
                "video".to_owned(),
                "video".to_owned(),
                RtpCodecKind::Video,
                layers
                    .iter()
                    .map(|(rid, ssrc, _)| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            rid: rid.clone(),
                            ssrc: Some(*ssrc),
                            ..Default::default()
                        },
                        codec: h264_codec(),
                        ..Default::default()
                    })
                    .collect(),
            )))
        } else {
            local_track(&stream_id, "video", RtpCodecKind::Video, video_ssrc, h264_codec())
        };
        let added = async {
            let (video_transceiver, video_sender) = add_sendonly(&peer, video.clone()).await?;
            let audio = if opts.audio {
                let track = local_track(&stream_id, "audio", RtpCodecKind::Audio, random_ssrc(), opus_codec());
                let (_, sender) = add_sendonly(&peer, track.clone()).await?;
                Some((track, sender))
            } else {
                None
            };
            Ok::<_, ClientError>((video_transceiver, video_sender, audio))
        }
        .await;
        let (video_transceiver, video_sender, audio) = match added {
            Ok(v) => v,
            Err(e) => {
                peer.close().await;
                return Err(e);
            }
        };
        let answer = negotiate(&peer, opts.timeout, exchange).await?;

        let Some(video_payload_type) = negotiated_payload_type(&video_sender, &h264_codec()).await else {
            peer.close().await;
            return Err(ClientError::Protocol("the answer did not accept H.264 video".into()));
        };
        let mut audio_payload_type = None;
        let mut audio_track = None;
        let mut audio_level = None;
        if let Some((track, sender)) = audio {
            if let Some(pt) = negotiated_payload_type(&sender, &opus_codec()).await {
                audio_payload_type = Some(pt);
                audio_track = Some(track);
            }
            if let (Some(level), Ok(params)) = (&opts.audio_level, sender.get_parameters().await) {
                audio_level = params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == AUDIO_LEVEL_URI)
                    .map(|e| (e.id as u8, level.clone()));
            }
        }

        let counters = Arc::new(PublisherCounters::default());
        // Simulcast: each packet names its layer (RID) and media section (mid).
        let mut ext_ids = (None, None);
        if opts.simulcast {
            if let Ok(params) = video_sender.get_parameters().await {
                for ext in &params.rtp_parameters.header_extensions {
                    if ext.uri == "urn:ietf:params:rtp-hdrext:sdes:mid" {
                        ext_ids.0 = Some(ext.id as u8);
                    } else if ext.uri == "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" {
                        ext_ids.1 = Some(ext.id as u8);
                    }
                }
            }
        }
        // The video section's own mid: `get_transceivers()` comes from a HashMap, in no
        // particular order, so its first entry may be the audio section.
        let mid = video_transceiver
            .mid()
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "0".to_owned());
        let flags: Vec<(u32, Arc<AtomicBool>)> = layers
            .iter()
            .map(|(_, ssrc, _)| (*ssrc, Arc::new(AtomicBool::new(false))))
            .collect();
        let mut tasks = vec![tokio::spawn(read_feedback(
            video.clone(),
            counters.clone(),
            flags.clone(),
        ))];
        for ((rid, ssrc, aus), (_, flag)) in layers.into_iter().zip(flags) {
            let mut exts = Vec::new();
            if opts.simulcast {
                if let Some(id) = ext_ids.0 {
                    exts.push((id, Bytes::from(mid.clone().into_bytes())));
                }
                if let Some(id) = ext_ids.1 {
                    exts.push((id, Bytes::from(rid.into_bytes())));
                }
            }
            let packetizer = Packetizer::new(video_payload_type, ssrc, random_u32() as u16);
            tasks.push(tokio::spawn(send_video(
                video.clone(),
                packetizer,
                aus,
                VideoLayer {
                    exts,
                    requested: flag,
                    loss: opts.uplink_loss.clone(),
                },
                counters.clone(),
                peer.state_watch(),
                opts.timeout,
            )));
        }
        if let (Some(track), Some(pt)) = (audio_track, audio_payload_type) {
            tasks.push(tokio::spawn(read_feedback(
                track.clone(),
                Arc::new(PublisherCounters::default()),
                Vec::new(),
            )));
            tasks.push(tokio::spawn(send_audio(
                track,
                pt,
                (audio_level, opts.audio_payloads.clone().unwrap_or_default()),
                counters.clone(),
                peer.state_watch(),
                opts.timeout,
            )));
        }
        Ok(WhipPublisher {
            session: Session {
                peer,
                location: answer.location,
                http: None,
                tasks: Mutex::new(tasks),
            },
            counters,
            video_ssrc,
            video_payload_type,
            audio_payload_type,
        })
    }

    /// The session URL from the `Location` header, e.g. `/v1/sessions/{sid}`.
    pub fn location(&self) -> &str {
        &self.session.location
    }

    /// The last path segment of [`WhipPublisher::location`].
    pub fn session_id(&self) -> &str {
        self.session.session_id()
    }

    /// The SSRC of the video stream.
    pub fn video_ssrc(&self) -> u32 {
        self.video_ssrc
    }

    /// The negotiated H.264 payload type.
    pub fn video_payload_type(&self) -> u8 {
        self.video_payload_type
    }

    /// The negotiated Opus payload type; `None` without audio or when the server refused it.
    pub fn audio_payload_type(&self) -> Option<u8> {
        self.audio_payload_type
    }

    /// The current connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        self.session.peer.state()
    }

    /// Waits up to `timeout` for the connection to be `Connected`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.session.peer.wait_connected(timeout).await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PublisherStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PublisherStats {
            packets_sent: get(&c.packets_sent),
            bytes_sent: get(&c.bytes_sent),
            frames_sent: get(&c.frames_sent),
            keyframes_sent: get(&c.keyframes_sent),
            audio_packets_sent: get(&c.audio_packets_sent),
            write_errors: get(&c.write_errors),
            plis_received: get(&c.plis_received),
            firs_received: get(&c.firs_received),
            nacks_received: get(&c.nacks_received),
            forced_keyframes: get(&c.forced_keyframes),
        }
    }

    /// Video packets sent so far.
    pub fn packets_sent(&self) -> u64 {
        self.counters.packets_sent.load(Ordering::Relaxed)
    }

    /// Video frames sent so far.
    pub fn frames_sent(&self) -> u64 {
        self.counters.frames_sent.load(Ordering::Relaxed)
    }

    /// PLIs received so far.
    pub fn plis_received(&self) -> u64 {
        self.counters.plis_received.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for `pred` to hold on the counters (polled every 10 ms).
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&PublisherStats) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stats()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the session: DELETE on the location (with the token; HTTP sessions only), then closes
    /// the connection whatever the DELETE returned. A non-2xx DELETE is [`ClientError::Http`].
    pub async fn stop(&self) -> Result<(), ClientError> {
        self.session.stop().await
    }

    /// Closes the connection without telling the server (a vanished publisher).
    pub async fn close(&self) {
        self.session.close().await
    }
}

/// Adds `track` on a sendonly transceiver (as WHIP clients do) and returns it with its sender.
async fn add_sendonly(
    peer: &LoopbackPeer,
    track: Arc<TrackLocalStaticRTP>,
) -> Result<(Arc<dyn RtpTransceiver>, Arc<dyn RtpSender>), ClientError> {
    let init = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        ..Default::default()
    };
    let transceiver = peer
        .pc
        .add_transceiver_from_track(track as Arc<dyn TrackLocal>, Some(init))
        .await?;
    let sender = transceiver
        .sender()
        .await?
        .ok_or_else(|| ClientError::WebRtc("transceiver without a sender".into()))?;
    Ok((transceiver, sender))
}

/// Counts keyframe requests and NACKs arriving for `track`, and flags the sender of the layer a
/// PLI names (`layers`: SSRC and flag; every layer for a FIR or an unknown SSRC).
async fn read_feedback(
    track: Arc<TrackLocalStaticRTP>,
    counters: Arc<PublisherCounters>,
    layers: Vec<(u32, Arc<AtomicBool>)>,
) {
    let flag = |ssrc: Option<u32>| {
        let named: Vec<_> = layers.iter().filter(|(s, _)| Some(*s) == ssrc).collect();
        for (_, f) in if named.is_empty() {
            layers.iter().collect()
        } else {
            named
        } {
            f.store(true, Ordering::SeqCst);
        }
    };
    while let Some(ev) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(pkts) = ev else {
            continue;
        };
        for p in pkts {
            let any = p.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                counters.plis_received.fetch_add(1, Ordering::Relaxed);
                counters.keyframe_requested.store(true, Ordering::SeqCst);
                flag(Some(pli.media_ssrc));
            } else if any.is::<FullIntraRequest>() {
                counters.firs_received.fetch_add(1, Ordering::Relaxed);
                counters.keyframe_requested.store(true, Ordering::SeqCst);
                flag(None);
            } else if any.is::<TransportLayerNack>() {
                counters.nacks_received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One video stream of the publisher: the header extensions its packets carry (simulcast: mid
/// and RID) and its keyframe-request flag.
struct VideoLayer {
    exts: Vec<(u8, Bytes)>,
    /// Leaves out packets, as a lossy uplink.
    loss: Option<UplinkLoss>,
    requested: Arc<AtomicBool>,
}

/// Paces the fixture at 30 fps from the moment the connection is up (RTP before DTLS is lost),
/// looping it with continuous timestamps and sequence numbers.
async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    mut packetizer: Packetizer,
    aus: Vec<AccessUnit>,
    layer: VideoLayer,
    counters: Arc<PublisherCounters>,
    state: watch::Receiver<RTCPeerConnectionState>,
    connect_timeout: Duration,
) {
    if !wait_state(state.clone(), connect_timeout).await {
        return;
    }
    let mut tick = tokio::time::interval(FRAME_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut idx = 0;
    let mut timestamp = random_u32();
    let mut written = 0u32;
    loop {
        tick.tick().await;
        if is_over(&state) {
            return;
        }
        if layer.requested.swap(false, Ordering::SeqCst) {
            counters.keyframe_requested.store(false, Ordering::SeqCst);
            counters.forced_keyframes.fetch_add(1, Ordering::Relaxed);
            if !aus[idx].keyframe {
                idx = h264::next_keyframe(&aus, idx).unwrap_or(idx);
            }
        }
        let au = &aus[idx];
        match packetizer.packetize(au, timestamp) {
            Ok(pkts) => {
                for mut p in pkts {
                    let len = p.payload.len() as u64;
                    written = written.wrapping_add(1);
                    let every = layer.loss.as_ref().map_or(0, |l| l.0.load(Ordering::Relaxed));
                    if every > 0 && written.is_multiple_of(every) {
                        continue;
                    }
                    for (id, value) in &layer.exts {
                        let _ = p.header.set_extension(*id, value.clone());
                    }
                    if track.write_rtp(p).await.is_ok() {
                        counters.packets_sent.fetch_add(1, Ordering::Relaxed);
                        counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
                    } else {
                        counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        if au.keyframe {
            counters.keyframes_sent.fetch_add(1, Ordering::Relaxed);
        }
        timestamp = timestamp.wrapping_add(FRAME_TICKS);
        idx = (idx + 1) % aus.len();
    }
}

/// Sends a 20 ms Opus frame every 20 ms once the connection is up (from `payloads`: silence
/// unless told otherwise), each with `level`'s audio level under its extension id when there
/// is one.
async fn send_audio(
    track: Arc<TrackLocalStaticRTP>,
    payload_type: u8,
    (level, payloads): (Option<(u8, AudioLevel)>, AudioPayloads),
    counters: Arc<PublisherCounters>,
    state: watch::Receiver<RTCPeerConnectionState>,
    connect_timeout: Duration,
) {
    if !wait_state(state.clone(), connect_timeout).await {
        return;
    }
    let Some(ssrc) = track.ssrcs().await.first().copied() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut seq, mut timestamp, mut first) = (random_u32() as u16, random_u32(), true);
    for n in 0usize.. {
        tick.tick().await;
        if is_over(&state) {
            return;
        }
        let mut pkt = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: first,
                payload_type,
                sequence_number: seq,
                timestamp,
                ssrc,
                ..Default::default()
            },
            payload: payloads.nth(n),
        };
        if let Some((id, level)) = &level {
            let db = level.0.load(Ordering::Relaxed);
            // The V bit (voice activity) with the level in the low seven bits.
            let v = if db < 127 { 0x80 } else { 0 };
            let _ = pkt.header.set_extension(*id, Bytes::copy_from_slice(&[v | db]));
        }
        if track.write_rtp(pkt).await.is_ok() {
            counters.audio_packets_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        seq = seq.wrapping_add(1);
        timestamp = timestamp.wrapping_add(960);
    }
}

// ───────────────────────────── WHEP subscriber ─────────────────────────────

/// A snapshot of what a subscriber has received. Times are measured from the start of `connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberCounts {
    /// RTP packets received (all tracks).
    pub packets: u64,
    /// RTP payload bytes received (all tracks).
    pub bytes: u64,
    /// Video RTP packets received.
    pub video_packets: u64,
    /// Video RTP payload bytes received.
    pub video_bytes: u64,
    /// Audio RTP packets received.
    pub audio_packets: u64,
    /// Audio RTP payload bytes received.
    pub audio_bytes: u64,
    /// Complete H.264 frames (every packet of the timestamp, in sequence, ending with the marker).
    pub frames: u64,
    /// Complete frames containing an IDR slice.
    pub keyframes: u64,
    /// Frames abandoned because of loss or a missing start or marker.
    pub incomplete_frames: u64,
    /// When the first RTP packet arrived.
    pub first_packet: Option<Duration>,
    /// When the first complete keyframe arrived.
    pub first_keyframe: Option<Duration>,
    /// When the latest RTP packet arrived.
    pub last_packet: Option<Duration>,
    /// Remote video tracks seen.
    pub video_tracks: u32,
    /// Remote audio tracks seen.
    pub audio_tracks: u32,
    /// MIME type of the (latest) remote video track, e.g. `video/H264`.
    pub video_mime: Option<String>,
    /// PLIs this subscriber sent.
    pub plis_sent: u64,
    /// Picture size of the latest SPS received (H.264 video).
    pub resolution: Option<(u32, u32)>,
    /// Every change of picture size, in order (a simulcast layer switch shows up here).
    pub resolutions: Vec<(u32, u32)>,
    /// Longest time between two complete frames.
    pub max_frame_gap: Duration,
    /// When the latest complete frame arrived.
    pub last_frame: Option<Duration>,
    /// Complete frames whose RTP timestamp is before the previous frame's (B-frames sent in
    /// decode order).
    pub frames_out_of_order: u64,
    /// Video packets whose sequence numbers were skipped (the sum of each forward jump less
    /// one): 0 on a clean link whatever the server paused or switched.
    pub video_seq_skipped: u64,
}

struct SubscriberShared {
    counts: watch::Sender<SubscriberCounts>,
    video: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    started: Instant,
    /// An H.265 video track's stream as received (see [`WhepSubscriber::h265_stream`]).
    h265: Mutex<crate::h265::AnnexB>,
}

/// A WHEP subscriber: receives the server's tracks and counts packets, frames and keyframes.
pub struct WhepSubscriber {
    session: Session,
    shared: Arc<SubscriberShared>,
    counts: watch::Receiver<SubscriberCounts>,
}

impl WhepSubscriber {
    /// Plays over HTTP: POSTs a recvonly offer to `base_url` + `path_and_query` (e.g.
    /// `/v1/groups/g/whep?participant=uid`) with `token` as bearer (none when empty). Anything
    /// but 201 with a `Location` and an SDP answer is an error.
    pub async fn connect(base_url: &str, path_and_query: &str, token: &str) -> Result<Self, ClientError> {
        Self::connect_opts(base_url, path_and_query, token, ClientOptions::default()).await
    }

    /// [`WhepSubscriber::connect`] with options.
    pub async fn connect_opts(
        base_url: &str,
        path_and_query: &str,
        token: &str,
        opts: ClientOptions,
    ) -> Result<Self, ClientError> {
        let http = Http::new(base_url, token, opts.timeout)?;
        let h = http.clone();
        let mut subscriber =
            Self::connect_with(opts, |offer| async move { h.post_offer(path_and_query, offer).await }).await?;
        subscriber.session.http = Some(http);
        Ok(subscriber)
    }

    /// Plays with a custom SDP exchange (see [`WhipPublisher::connect_with`]).
    pub async fn connect_with<F, Fut>(opts: ClientOptions, exchange: F) -> Result<Self, ClientError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<SdpAnswer, ClientError>>,
    {
        let started = Instant::now();
        let mut peer = if opts.tcp_only {
            LoopbackPeer::tcp_only(false).await?
        } else if opts.bottleneck.is_some() || opts.loss.is_some() || opts.rtcp_silence.is_some() {
            LoopbackPeer::with_downlink(false, &opts).await?
        } else {
            LoopbackPeer::new(false).await?
        };
        let mut kinds = vec![RtpCodecKind::Video];
        if opts.audio {
            kinds.push(RtpCodecKind::Audio);
        }
        for kind in kinds {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            if let Err(e) = peer.pc.add_transceiver_from_kind(kind, Some(init)).await {
                peer.close().await;
                return Err(e.into());
            }
        }
        let Some(tracks) = peer.take_tracks() else {
            return Err(ClientError::WebRtc("track stream already taken".into()));
        };
        let (counts_tx, counts) = watch::channel(SubscriberCounts::default());
        let shared = Arc::new(SubscriberShared {
            counts: counts_tx,
            video: Mutex::new(None),
            started,
            h265: Mutex::new(crate::h265::AnnexB::default()),
        });
        // Start draining tracks before the answer is applied: on_track may fire right after.
        let dispatch = tokio::spawn(dispatch_tracks(tracks, shared.clone()));
        // The client's engine offers H.265 (as Safari does); without it, as most browsers.
        let exchange = |offer: String| {
            exchange(if opts.offer_h265 {
                offer
            } else {
                without_codec(&offer, "H265")
            })
        };
        let answer = match negotiate(&peer, opts.timeout, exchange).await {
            Ok(a) => a,
            Err(e) => {
                dispatch.abort();
                return Err(e);
            }
        };
        Ok(WhepSubscriber {
            session: Session {
                peer,
                location: answer.location,
                http: None,
                tasks: Mutex::new(vec![dispatch]),
            },
            shared,
            counts,
        })
    }

    /// The session URL from the `Location` header.
    pub fn location(&self) -> &str {
        &self.session.location
    }

    /// The last path segment of [`WhepSubscriber::location`].
    pub fn session_id(&self) -> &str {
        self.session.session_id()
    }

    /// The current connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        self.session.peer.state()
    }

    /// Waits up to `timeout` for the connection to be `Connected`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.session.peer.wait_connected(timeout).await
    }

    /// A snapshot of the counters.
    pub fn counts(&self) -> SubscriberCounts {
        self.counts.borrow().clone()
    }

    /// What an H.265 video track brought so far, as an Annex B stream for FFmpeg (empty for
    /// other codecs).
    pub fn h265_stream(&self) -> Vec<u8> {
        self.shared.h265.lock().map(|a| a.bytes.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for `pred` to hold on the counters.
    pub async fn wait_until(&self, timeout: Duration, pred: impl FnMut(&SubscriberCounts) -> bool) -> bool {
        let mut rx = self.counts.clone();
        let reached = matches!(tokio::time::timeout(timeout, rx.wait_for(pred)).await, Ok(Ok(_)));
        reached
    }

    /// Waits up to `timeout` for at least `n` complete frames in total.
    pub async fn wait_frames(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| c.frames >= n).await
    }

    /// Waits up to `timeout` for at least `n` complete keyframes in total.
    pub async fn wait_keyframes(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| c.keyframes >= n).await
    }

    /// Whether no RTP packet at all arrives during the next `window`.
    pub async fn no_packets_within(&self, window: Duration) -> bool {
        let before = self.counts().packets;
        !self.wait_until(window, |c| c.packets > before).await
    }

    /// Sends a PLI for the remote video track; fails before the track has arrived.
    pub async fn send_pli(&self) -> Result<(), ClientError> {
        let video = self.shared.video.lock().ok().and_then(|v| v.clone());
        let Some((track, ssrc)) = video else {
            return Err(ClientError::Protocol("no remote video track yet".into()));
        };
        track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })])
            .await?;
        self.shared.counts.send_modify(|c| c.plis_sent += 1);
        Ok(())
    }

    /// Sends a receiver report on the remote video track claiming what `report` says, as a
    /// client on a congested, uneven or distant link would; fails before the track has arrived.
    pub async fn send_report(&self, report: Report) -> Result<(), ClientError> {
        let Report {
            fraction_lost,
            jitter,
            rtt,
        } = report;
        // A round trip of `rtt`: as if the server's sender report (its NTP time, the same
        // clock on this machine) had gone out that long ago and been answered at once.
        let last_sender_report = rtt.map_or(0, |rtt| ntp_middle(SystemTime::now() - rtt));
        let video = self.shared.video.lock().ok().and_then(|v| v.clone());
        let Some((track, ssrc)) = video else {
            return Err(ClientError::Protocol("no remote video track yet".into()));
        };
        let block = ReceptionReport {
            ssrc,
            fraction_lost,
            jitter,
            last_sender_report,
            ..Default::default()
        };
        track
            .write_rtcp(vec![Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![block],
                profile_extensions: Bytes::new(),
            })])
            .await?;
        Ok(())
    }

    /// Ends the session: DELETE on the location (HTTP sessions only), then closes the connection
    /// whatever the DELETE returned. A non-2xx DELETE is [`ClientError::Http`].
    pub async fn stop(&self) -> Result<(), ClientError> {
        self.session.stop().await
    }

    /// Closes the connection without telling the server.
    pub async fn close(&self) {
        self.session.close().await
    }
}

/// Starts a counting task per remote track; those end when the connection closes.
async fn dispatch_tracks(mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>, shared: Arc<SubscriberShared>) {
    while let Some(track) = tracks.recv().await {
        let kind = track.kind().await;
        let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        let mime = track.codec(ssrc).await.map(|c| c.mime_type);
        if kind == RtpCodecKind::Video {
            if let Ok(mut v) = shared.video.lock() {
                *v = Some((track.clone(), ssrc));
            }
            shared.counts.send_modify(|c| {
                c.video_tracks += 1;
                c.video_mime = mime.clone();
            });
        } else {
            shared.counts.send_modify(|c| c.audio_tracks += 1);
        }
        let codec = match mime.as_deref() {
            Some(m) if m.eq_ignore_ascii_case(MIME_TYPE_H264) => Some(VideoCodec::H264),
            Some(m) if m.eq_ignore_ascii_case("video/H265") => Some(VideoCodec::H265),
            _ => None,
        };
        tokio::spawn(read_track(track, kind == RtpCodecKind::Video, codec, shared.clone()));
    }
}

/// A video codec a subscriber looks into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum VideoCodec {
    H264,
    H265,
}

/// Counts one remote track's packets and, for H.264 video, its complete frames and keyframes;
/// keeps an H.265 track's stream (see [`WhepSubscriber::h265_stream`]).
async fn read_track(
    track: Arc<dyn TrackRemote>,
    video: bool,
    codec: Option<VideoCodec>,
    shared: Arc<SubscriberShared>,
) {
    let h264 = codec == Some(VideoCodec::H264);
    let mut counter = FrameCounter::new();
    let mut last_frame_ts: Option<u32> = None;
    let mut last_seq: Option<u16> = None;
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
            continue;
        };
        let now = shared.started.elapsed();
        if codec == Some(VideoCodec::H265) {
            if let Ok(mut stream) = shared.h265.lock() {
                stream.push(&pkt.payload);
            }
        }
        let incomplete_before = counter.incomplete;
        let frame = if h264 { counter.push(&pkt) } else { None };
        let size = if h264 {
            h264::payload_sps_dimensions(&pkt.payload)
        } else {
            None
        };
        let newly_incomplete = counter.incomplete - incomplete_before;
        let ts = pkt.header.timestamp;
        let out_of_order = frame.is_some() && last_frame_ts.is_some_and(|prev| (ts.wrapping_sub(prev) as i32) < 0);
        if frame.is_some() {
            last_frame_ts = Some(ts);
        }
        let seq = pkt.header.sequence_number;
        let ahead = last_seq.map_or(1, |prev| seq.wrapping_sub(prev) as i16);
        let skipped = if video && ahead > 1 {
            u64::from(ahead.unsigned_abs() - 1)
        } else {
            0
        };
        if ahead > 0 {
            last_seq = Some(seq);
        }
        let len = pkt.payload.len() as u64;
        shared.counts.send_modify(|c| {
            c.packets += 1;
            c.bytes += len;
            if video {
                c.video_packets += 1;
                c.video_bytes += len;
            } else {
                c.audio_packets += 1;
                c.audio_bytes += len;
            }
            c.first_packet.get_or_insert(now);
            c.last_packet = Some(now);
            c.incomplete_frames += newly_incomplete;
            c.video_seq_skipped += skipped;
            if let Some(size) = size {
                if c.resolution != Some(size) {
                    c.resolutions.push(size);
                }
                c.resolution = Some(size);
            }
            if let Some(f) = &frame {
                if let Some(prev) = c.last_frame {
                    c.max_frame_gap = c.max_frame_gap.max(now.saturating_sub(prev));
                }
                c.last_frame = Some(now);
                c.frames += 1;
                c.frames_out_of_order += u64::from(out_of_order);
                if f.keyframe {
                    c.keyframes += 1;
                    c.first_keyframe.get_or_insert(now);
                }
            }
        });
    }
}
