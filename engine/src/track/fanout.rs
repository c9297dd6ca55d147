//! Per-track fan-out: the direct packet path from one publisher to many subscriber legs, plus
//! taps (recorders, live HLS: packets, or a local source's frames) and the cached keyframe a
//! new subscriber starts from. A simulcast track carries up to [`MAX_LAYERS`] layers (RID
//! streams); each leg forwards one of them and moves to its target layer at that layer's next
//! keyframe. Which layer a leg targets is decided by the track's [`Track`] actor; this file
//! only follows the choice per packet.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use actix::Addr;
use futures_util::FutureExt;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::actor::{LayersChanged, LossReport, SetEstimate, SetLegCaps, Subscribed, Track, TrackEnded, Unsubscribed};
use super::audio_level::{meter_for, parse_level, AudioLevels, MeasureLevel};
use super::congestion::EstimateSource;
use super::directory::RoomTraffic;
use super::frame_tap::{FrameTaps, SourceFrame};
use super::layers::{choose_layer, keyframe_dimensions, ranked, LayerStat, LayerView, LegCaps, MAX_LAYERS, SLOTS};
use super::link_quality::{now_ms, now_us, ntp_middle_now, rtt_ms, Jitter, SeqLoss, UplinkSample};
use super::scaled::SCALED_LAYER;
use super::{MediaKind, TrackInfo};
use crate::ids::{GroupId, UserId};
use crate::media::{PeerState, SendSideEstimate, ViewerTrack, Written};
use crate::metrics::EngineMetrics;

/// Keyframe requests to the publisher are at most this frequent (per layer).
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// Packets already waiting that the reader forwards with the one it woke for, at most.
const MAX_BURST: usize = 64;
/// A paced publisher's video packets arrive one at a time, each waking the reader: sent on
/// at once, each would be a `sendmsg` per viewer. They are held until their frame is complete
/// (its marker packet), so each viewer gets the frame as one run (one GSO `sendmsg`): the
/// frame is decodable no later than before, and the server's cost per packet is that of a
/// bursty publisher. A frame whose marker is lost goes on when the next frame starts, or after
/// this long without a packet.
const FRAME_HOLD: Duration = Duration::from_millis(40);
/// Packets held at most before they go on regardless (a frame of about 90 KB).
const MAX_HELD: usize = 64;
/// Video is held only for this many legs or more: the hold saves a `sendmsg` per packet per
/// leg, which only many legs make worth a frame's worth of latency on each packet (a frame's
/// completion is not delayed either way). Fewer legs get each packet at once.
const HOLD_FROM_LEGS: usize = 64;
/// A keyframe bigger than this is not cached (new legs wait for the next one).
const KEYFRAME_CACHE_BYTES: usize = 2 << 20;
/// A leg's layer before it has one.
pub const NO_LAYER: u8 = u8::MAX;
/// What a leg's writer is told a cached keyframe's packets come from: not a live layer, so the
/// live stream that follows is renumbered to continue from it.
const FROM_CACHE: u8 = u8::MAX - 1;
/// A leg's target while it is paused (its viewer hides the video): no layer is forwarded.
pub const PAUSED: u8 = u8::MAX - 2;

/// Where a track's packets come from, which decides how a keyframe is obtained.
pub enum Upstream {
    /// A WebRTC publisher: keyframes are asked for with a PLI on the layer's SSRC (`ssrc` is the
    /// first layer's).
    Rtc { remote: Arc<dyn TrackRemote>, ssrc: u32 },
    /// A server-side source (RTSP ingest, a file, a re-encode) that calls [`Fanout::forward`]
    /// itself. New subscribers start from the cached keyframe; their keyframe requests set a
    /// flag that a source able to make one reads ([`Fanout::take_keyframe_request`]), a camera
    /// cannot. It also hands its frames to frame taps ([`Fanout::forward_source_frame`]).
    Local,
}

/// Counters of one track, read by `/metrics`. What went out (and was asked again) is counted
/// per leg ([`LegCounters`]) and lands here when the leg goes: [`Fanout::sent`] adds both.
#[derive(Debug, Default)]
pub struct TrackCounters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Packets a subscriber leg or a tap lost because its queue was full (a frame tap's lost
    /// frames count one each).
    pub dropped: AtomicU64,
    /// Keyframe requests sent to the publisher.
    pub plis: AtomicU64,
    /// Packets subscribers asked to have resent (NACK), answered from each leg's history.
    pub nacked: AtomicU64,
    /// Layer switches made by subscriber legs.
    pub layer_switches: AtomicU64,
}

/// One subscriber leg. The task that forwards a packet writes it to the leg's connection
/// itself ([`LegWriter`]): no queue and no task of its own per leg, so a packet costs no task
/// wake-up per subscriber.
pub struct Downtrack {
    /// Unique id of this leg.
    pub id: u64,
    writer: Mutex<LegWriter>,
    /// Packets dropped so far on this leg; subtracted from sequence numbers so the subscriber
    /// sees no gap it would NACK forever (only the reader task writes it).
    skipped: AtomicU16,
    /// Set once the leg's connection is up; until then it is skipped.
    live: AtomicBool,
    /// The layer forwarded now ([`NO_LAYER`] until the first keyframe of `target`).
    current: AtomicU8,
    /// The layer to move to at its next keyframe (set by the [`Track`] actor).
    target: AtomicU8,
    /// The group whose viewer this leg serves (per-room traffic in `/metrics`).
    pub room: GroupId,
    /// The viewer it serves.
    pub viewer: UserId,
    /// The fraction lost (of 256) in the viewer's latest receiver report on this leg.
    last_loss: AtomicU8,
    /// The interarrival jitter (ms) in that report.
    last_jitter_ms: AtomicU32,
    /// The round-trip time (ms) it gave (0: none yet).
    last_rtt_ms: AtomicU32,
    /// When the viewer's client last sent RTCP on this leg's connection ([`now_ms`]), or when
    /// the leg went live.
    heard_ms: AtomicU64,
    /// What this leg sent and was asked to resend; added to the track's counters when it goes.
    pub counters: LegCounters,
}

/// Whether the video packets held (in arrival order) end a frame: a marker packet came, a
/// layer's packets span two frames (the first one's marker was lost), or enough are held.
fn frame_done(held: &[(u8, rtp::Packet)]) -> bool {
    if held.len() >= MAX_HELD || held.iter().any(|(_, p)| p.header.marker) {
        return true;
    }
    let Some((idx, last)) = held.last() else {
        return false;
    };
    held.iter()
        .any(|(i, p)| i == idx && p.header.timestamp != last.header.timestamp)
}

/// Counters of one subscriber leg.
#[derive(Debug, Default)]
pub struct LegCounters {
    /// RTP packets written to the leg's connection.
    pub packets_out: AtomicU64,
    /// Their payload bytes.
    pub bytes_out: AtomicU64,
    /// Packets the subscriber asked to have resent (NACK).
    pub nacked: AtomicU64,
}

impl Downtrack {
    /// What this leg sent and was asked to resend so far.
    pub fn traffic(&self) -> RoomTraffic {
        let c = &self.counters;
        RoomTraffic {
            packets_out: c.packets_out.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            nacked: c.nacked.load(Ordering::Relaxed),
            ..RoomTraffic::default()
        }
    }

    /// The share of packets the viewer's latest receiver report on this leg says were lost.
    pub fn downlink_loss(&self) -> f64 {
        f64::from(self.last_loss.load(Ordering::Relaxed)) / 256.0
    }

    /// The interarrival jitter (ms) the viewer's latest receiver report on this leg gives.
    pub fn downlink_jitter_ms(&self) -> f64 {
        f64::from(self.last_jitter_ms.load(Ordering::Relaxed))
    }

    /// The round-trip time (ms) the viewer's latest receiver report on this leg gives (0 before
    /// one answers a sender report).
    pub fn downlink_rtt_ms(&self) -> f64 {
        f64::from(self.last_rtt_ms.load(Ordering::Relaxed))
    }

    /// When the viewer was last heard on this leg ([`now_ms`]): its last RTCP, or the leg going
    /// live. `None` while the leg is not live or is paused (nothing is sent to report on).
    pub fn heard_ms(&self) -> Option<u64> {
        (self.live.load(Ordering::Relaxed) && !self.paused()).then(|| self.heard_ms.load(Ordering::Relaxed))
    }

    /// The layer this leg forwards now.
    pub fn current(&self) -> u8 {
        self.current.load(Ordering::Relaxed)
    }

    /// The layer this leg moves to at its next keyframe.
    pub fn target(&self) -> u8 {
        self.target.load(Ordering::Relaxed)
    }

    /// Sets the target layer. A paused leg resumes: its stream goes on, renumbered to continue
    /// where it stopped, from the layer's next keyframe.
    pub(super) fn set_target(&self, layer: u8) {
        if self.target.swap(layer, Ordering::Relaxed) == PAUSED {
            self.restart_stream();
            // Nothing was sent to report on while paused: the wait for a report starts now.
            self.heard_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Whether the leg is paused.
    pub fn paused(&self) -> bool {
        self.target() == PAUSED
    }

    /// Pauses the leg: nothing is forwarded to it until [`Self::set_target`] names a layer.
    pub(super) fn pause(&self) {
        self.target.store(PAUSED, Ordering::Relaxed);
        self.current.store(NO_LAYER, Ordering::Relaxed);
        self.restart_stream();
    }

    /// The next packet written starts a new run of the leg's stream: its sequence number and
    /// timestamp follow on from the last packet sent, as at a layer switch.
    fn restart_stream(&self) {
        if let Ok(mut w) = self.writer.lock() {
            w.layer = NO_LAYER;
        }
    }

    /// Pads the leg's stream at `kbps` for `duration` (0: stops), for a probe before a climb;
    /// false when its connection cannot (see [`ViewerTrack::probe`]).
    pub(super) fn probe(&self, kbps: u32, duration: Duration) -> bool {
        match self.writer.lock() {
            Ok(w) => w.local.probe(w.ssrc, kbps, duration),
            Err(_) => false,
        }
    }

    /// Writes one packet (see [`LegWriter::write`]).
    fn write(&self, pkt: &rtp::Packet, offset: u16, from: u8) -> bool {
        match self.writer.lock() {
            Ok(mut w) => w.write(pkt.clone(), offset, from),
            Err(_) => false,
        }
    }

    /// Writes one packet of layer `from` to a live leg: if the leg is on that layer, or, with
    /// `switch` (the packet starts the leg's target layer at a keyframe), moving the leg onto
    /// it. The layer is checked again under the writer's lock, since two layers can write at
    /// once (the publisher's reader and the scaled layer's thread): a packet of the layer a leg
    /// has just left is not written after the new layer's keyframe.
    fn write_on_layer(&self, pkt: &rtp::Packet, offset: u16, from: u8, switch: bool) -> LegWrite {
        let Ok(mut w) = self.writer.lock() else {
            return LegWrite::Failed;
        };
        let on_layer = self.current.load(Ordering::Relaxed) == from;
        let joins = switch && self.target.load(Ordering::Relaxed) == from;
        if !(on_layer || joins) {
            return LegWrite::Raced;
        }
        if !w.write(pkt.clone(), offset, from) {
            return LegWrite::Failed;
        }
        if on_layer {
            LegWrite::Sent
        } else {
            self.current.store(from, Ordering::Relaxed);
            LegWrite::Switched
        }
    }
}

/// What [`Downtrack::write_on_layer`] did with a packet.
enum LegWrite {
    /// Written on the leg's layer.
    Sent,
    /// Written, and the leg is now on the packet's layer.
    Switched,
    /// Not written: the leg left the packet's layer (or its target moved) since the caller
    /// looked.
    Raced,
    /// The connection did not take it, or is gone.
    Failed,
}

/// Puts a leg's packets onto one continuous stream (its payload type and SSRC; sequence
/// numbers and timestamps carried across layer switches, each layer having its own) and writes
/// them into the subscriber's connection, in the caller's task.
struct LegWriter {
    local: Arc<ViewerTrack>,
    pt: u8,
    ssrc: u32,
    clock: u64,
    layer: u8,
    seq_delta: u16,
    ts_delta: u32,
    last: Option<(u16, u32)>,
    last_at: Instant,
    /// The connection is gone.
    closed: bool,
}

impl LegWriter {
    /// Rewrites `pkt` (of layer `from`, sequence numbers shifted down by `offset`) and writes
    /// it; `false` when the connection did not take it or is gone.
    fn write(&mut self, pkt: rtp::Packet, offset: u16, from: u8) -> bool {
        if self.closed {
            return false;
        }
        let pkt = self.rewrite(pkt, offset, from);
        match self.local.write(pkt) {
            Written::Sent => true,
            Written::Lost => false,
            Written::Closed => {
                self.closed = true;
                false
            }
        }
    }

    /// Puts `pkt` on the leg's stream and notes it as the last one sent.
    fn rewrite(&mut self, mut pkt: rtp::Packet, offset: u16, from: u8) -> rtp::Packet {
        let seq_in = pkt.header.sequence_number.wrapping_sub(offset);
        if from != self.layer {
            if let Some((seq, ts)) = self.last {
                self.seq_delta = seq.wrapping_add(1).wrapping_sub(seq_in);
                let ticks = (self.last_at.elapsed().as_micros() as u64 * self.clock / 1_000_000).max(1);
                self.ts_delta = ts.wrapping_add(ticks as u32).wrapping_sub(pkt.header.timestamp);
            }
            self.layer = from;
        }
        pkt.header.payload_type = self.pt;
        pkt.header.ssrc = self.ssrc;
        pkt.header.sequence_number = seq_in.wrapping_add(self.seq_delta);
        pkt.header.timestamp = pkt.header.timestamp.wrapping_add(self.ts_delta);
        if pkt.header.marker {
            self.last_at = Instant::now();
        }
        self.last = Some((pkt.header.sequence_number, pkt.header.timestamp));
        pkt
    }
}

/// What a WebRTC publisher's reader task keeps between packets.
struct Reading {
    /// Packets to fan out together: a burst, and for video up to a whole frame.
    burst: Vec<(u8, rtp::Packet)>,
    /// Measures audio whose packets carry no level.
    meter: Option<Box<dyn MeasureLevel>>,
    /// When the packets being read arrived ([`now_us`]: once per wake-up).
    arrival_us: u64,
}

/// A packet admitted to a burst: its layer and whether it starts a keyframe.
struct Outgoing {
    idx: u8,
    pkt: rtp::Packet,
    keyframe: bool,
}

/// How often a new leg looks again at a keyframe cache being filled...
const CACHE_FILL_POLL: Duration = Duration::from_millis(5);
/// ... and how many times (200 ms in all).
const CACHE_FILL_POLLS: u32 = 40;

/// The last keyframe's packets (parameter sets included, up to its marker bit), so a new
/// subscriber shows a picture at once; it then joins the live stream at the next keyframe.
/// Only the keyframe, not the group of pictures after it: a camera's GOP is a megabyte or
/// more per track, and replaying it would burst that much at every join.
#[derive(Default)]
struct KeyframeCache {
    packets: Vec<rtp::Packet>,
    bytes: usize,
    /// A keyframe started (the cache holds its first packets).
    valid: bool,
    /// Its last packet (marker bit) is in.
    complete: bool,
}

/// One simulcast layer (a single-layer track has only layer 0).
#[derive(Default)]
pub struct Layer {
    rid: OnceLock<String>,
    ssrc: AtomicU32,
    active: AtomicBool,
    width: AtomicU32,
    height: AtomicU32,
    /// Smoothed bitrate, measured by the [`Track`] actor.
    kbps: AtomicU32,
    /// Payload bytes received (sampled by the actor).
    pub(super) bytes: AtomicU64,
    /// Only for video codecs whose keyframes [`starts_keyframe`] recognises.
    keyframe: Option<Mutex<KeyframeCache>>,
    last_pli: Mutex<Option<Instant>>,
    /// A keyframe request is scheduled for the end of the current interval.
    pli_deferred: AtomicBool,
    /// Packets expected and received (the publisher's uplink loss).
    loss: SeqLoss,
    /// The interarrival jitter of the publisher's uplink.
    jitter: Jitter,
}

impl Layer {
    fn new(keyframe_aware: bool) -> Layer {
        Layer {
            keyframe: keyframe_aware.then(|| Mutex::new(KeyframeCache::default())),
            ..Default::default()
        }
    }

    pub(super) fn set_kbps(&self, kbps: u32) {
        self.kbps.store(kbps, Ordering::Relaxed);
    }
}

/// A published track's fan-out.
pub struct Fanout {
    pub info: TrackInfo,
    pub counters: TrackCounters,
    legs: RwLock<Vec<Arc<Downtrack>>>,
    /// The groups whose calls list this track (kept by their rooms), each with the track's
    /// counts when it entered: the room is credited with what came in since.
    rooms: Mutex<Vec<(GroupId, RoomTraffic)>>,
    /// Each tap and the layer it follows.
    taps: Mutex<Vec<(u8, mpsc::Sender<rtp::Packet>)>>,
    frame_taps: FrameTaps,
    /// The publisher's layers, then the server's scaled one (`track/scaled.rs`).
    layers: [Layer; SLOTS],
    /// A leg asked the scaled layer for a keyframe (its encoder makes the next picture one).
    scaled_keyframe: AtomicBool,
    /// A leg asked a local source for a keyframe (one that can make them reads it).
    local_keyframe: AtomicBool,
    /// Video whose keyframes [`starts_keyframe`] recognises: layer switches wait for one.
    keyframe_aware: bool,
    muted: AtomicBool,
    /// An audio track's levels, as its publisher's packets tell them (active speakers).
    pub levels: AudioLevels,
    /// A local source that sends nothing on purpose (an on-demand camera nobody reads): its
    /// quiet is not a lost link.
    source_idle: AtomicBool,
    /// The source's frames come out of display order (a camera's B-frames), which browsers'
    /// WebRTC decoders do not take: viewers get the scaled layer, re-encoded in order.
    reordered: AtomicBool,
    /// The publisher's connection's round trip (ms; 0: unknown), kept by its session.
    uplink_rtt: OnceLock<Arc<AtomicU32>>,
    upstream: Upstream,
    /// The track's control actor (WebRTC publishes, a camera's video).
    control: OnceLock<Addr<Track>>,
    pub(super) metrics: EngineMetrics,
}

impl Fanout {
    /// A fan-out for a track fed by `upstream`.
    pub fn new(info: TrackInfo, upstream: Upstream, metrics: EngineMetrics) -> Arc<Fanout> {
        metrics.tracks.inc();
        let aware = info.kind == MediaKind::Video && keyframe_aware(&info.codec.mime_type);
        let layers = std::array::from_fn(|_| Layer::new(aware));
        layers[0].active.store(true, Ordering::Relaxed);
        if let Upstream::Rtc { ssrc, .. } = &upstream {
            layers[0].ssrc.store(*ssrc, Ordering::Relaxed);
        }
        let fanout = Arc::new(Fanout {
            info,
            counters: TrackCounters::default(),
            legs: RwLock::new(Vec::new()),
            rooms: Mutex::new(Vec::new()),
            taps: Mutex::new(Vec::new()),
            frame_taps: FrameTaps::default(),
            layers,
            scaled_keyframe: AtomicBool::new(false),
            local_keyframe: AtomicBool::new(false),
            keyframe_aware: aware,
            muted: AtomicBool::new(false),
            levels: AudioLevels::default(),
            source_idle: AtomicBool::new(false),
            reordered: AtomicBool::new(false),
            uplink_rtt: OnceLock::new(),
            upstream,
            control: OnceLock::new(),
            metrics: metrics.clone(),
        });
        metrics.tracks_live.add(&fanout);
        fanout
    }

    /// Hands control to `track` (the actor that chooses layers); once.
    pub fn set_control(&self, track: Addr<Track>) {
        let _ = self.control.set(track);
    }

    /// The track's control actor, once it has one.
    pub(super) fn control(&self) -> Option<Addr<Track>> {
        self.control.get().cloned()
    }

    fn tell<M>(&self, msg: M)
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        Track: actix::Handler<M>,
    {
        if let Some(c) = self.control.get() {
            c.do_send(msg);
        }
    }

    /// Whether the track is muted for everyone.
    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// Mutes or unmutes the track for every subscriber.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// Number of subscriber legs.
    pub fn subscribers(&self) -> usize {
        self.legs.read().map(|l| l.len()).unwrap_or(0)
    }

    /// The layers (for the [`Track`] actor).
    pub(super) fn layer_slots(&self) -> &[Layer; SLOTS] {
        &self.layers
    }

    /// The layers open taps follow (recorders, live HLS).
    pub(super) fn tapped_layers(&self) -> Vec<u8> {
        match self.taps.lock() {
            Ok(taps) => taps.iter().filter(|(_, tx)| !tx.is_closed()).map(|(l, _)| *l).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Forgets each layer's cached keyframe: a local source that stopped for a while (an
    /// on-demand camera) should not start its next viewer on an old picture.
    pub fn forget_keyframes(&self) {
        for cache in self.layers.iter().filter_map(|l| l.keyframe.as_ref()) {
            if let Ok(mut c) = cache.lock() {
                *c = KeyframeCache::default();
            }
        }
    }

    /// A look at the publisher's uplink (running totals over every layer; the room compares it
    /// with its last one). A local source (a camera) has no sequence numbers of its own to
    /// count loss from: only its packets. `None` before the first packet, and while a local
    /// source is idle on purpose.
    pub fn uplink(&self) -> Option<UplinkSample> {
        if let Upstream::Local = self.upstream {
            let packets_in = self.counters.packets_in.load(Ordering::Relaxed);
            return (packets_in > 0 && !self.source_idle.load(Ordering::Relaxed)).then_some(UplinkSample {
                packets_in,
                ..UplinkSample::default()
            });
        }
        if !self.layers.iter().any(|l| l.loss.started()) {
            return None;
        }
        let (expected, received) = self.layers.iter().fold((0, 0), |(e, r), l| {
            let (le, lr) = l.loss.totals();
            (e + le, r + lr)
        });
        Some(UplinkSample {
            packets_in: self.counters.packets_in.load(Ordering::Relaxed),
            expected,
            received,
        })
    }

    /// The interarrival jitter (ms) of the publisher's uplink now: the most of any layer.
    pub fn uplink_jitter_ms(&self) -> f64 {
        let clock = self.info.codec.clock_rate;
        self.layers
            .iter()
            .filter(|l| l.active.load(Ordering::Relaxed))
            .map(|l| l.jitter.ms(clock))
            .fold(0.0, f64::max)
    }

    /// Reads the publisher's round trip from `rtt_ms` (ms, 0 while unknown), which its session
    /// keeps; once.
    pub fn share_uplink_rtt(&self, rtt_ms: Arc<AtomicU32>) {
        let _ = self.uplink_rtt.set(rtt_ms);
    }

    /// The round trip (ms) of the publisher's connection (0: not known).
    pub fn uplink_rtt_ms(&self) -> f64 {
        self.uplink_rtt
            .get()
            .map_or(0.0, |r| f64::from(r.load(Ordering::Relaxed)))
    }

    /// Says whether a local source sends nothing on purpose (see [`Self::uplink`]).
    pub fn set_source_idle(&self, idle: bool) {
        self.source_idle.store(idle, Ordering::Relaxed);
    }

    /// Whether a leg of this track can be paused and resumed: video whose keyframes the
    /// fan-out recognises, so a resumed leg starts at one.
    pub fn pausable(&self) -> bool {
        self.keyframe_aware
    }

    /// How many layers have appeared.
    pub fn layer_count(&self) -> usize {
        self.layers.iter().filter(|l| l.active.load(Ordering::Relaxed)).count()
    }

    /// What the chooser needs: each layer's state and RID.
    pub fn layer_stats(&self) -> (Vec<LayerStat>, Vec<Option<String>>) {
        let stats = self
            .layers
            .iter()
            .map(|l| LayerStat {
                active: l.active.load(Ordering::Relaxed),
                width: l.width.load(Ordering::Relaxed),
                height: l.height.load(Ordering::Relaxed),
                kbps: l.kbps.load(Ordering::Relaxed),
            })
            .collect();
        let rids = self.layers.iter().map(|l| l.rid.get().cloned()).collect();
        (stats, rids)
    }

    /// The layers from lowest to highest, as clients see them; empty for a track without RIDs.
    pub fn layer_views(&self) -> Vec<LayerView> {
        let (stats, rids) = self.layer_stats();
        ranked(&stats)
            .into_iter()
            .filter_map(|i| {
                Some(LayerView {
                    rid: rids[i].clone()?,
                    width: stats[i].width,
                    height: stats[i].height,
                    kbps: stats[i].kbps,
                })
            })
            .collect()
    }

    /// Says the source's frames come out of display order (see [`Self::reordered`]); for
    /// good.
    pub fn set_reordered(&self) {
        if !self.reordered.swap(true, Ordering::Relaxed) {
            self.tell(LayersChanged);
        }
    }

    /// Whether the source's frames come out of display order: every viewer then needs the
    /// scaled layer (re-encoded in display order), and gets it whenever it runs.
    pub fn reordered(&self) -> bool {
        self.reordered.load(Ordering::Relaxed)
    }

    /// Whether the scaled layer runs (is active).
    pub fn scaled_running(&self) -> bool {
        self.layers[usize::from(SCALED_LAYER)].active.load(Ordering::Relaxed)
    }

    /// The layer a leg with `caps` should receive now: for a reordered source whose scaled
    /// layer runs, that one.
    pub fn choose(&self, caps: &LegCaps) -> u8 {
        let (mut stats, rids) = self.layer_stats();
        if self.reordered() && self.scaled_running() {
            for s in &mut stats[..MAX_LAYERS] {
                s.active = false;
            }
        }
        choose_layer(&stats, &rids, caps).map_or(NO_LAYER, |i| i as u8)
    }

    /// Hands one packet of the first (or only) layer to every live leg and tap without waiting.
    pub fn forward(&self, pkt: rtp::Packet) {
        self.fan_out(vec![(0, pkt)])
    }

    /// Hands one frame's packets of the first (or only) layer to every live leg and tap, each
    /// leg's share in one go (so its datagrams leave as one run).
    pub fn forward_frame(&self, pkts: Vec<rtp::Packet>) {
        self.fan_out(pkts.into_iter().map(|p| (0, p)).collect())
    }

    /// Hands one frame of the scaled layer (`track/scaled.rs`) to the legs on it.
    pub(super) fn forward_scaled(&self, pkts: Vec<rtp::Packet>) {
        self.fan_out(pkts.into_iter().map(|p| (SCALED_LAYER, p)).collect())
    }

    /// The scaled layer exists from now on (its size is known from its first keyframe).
    pub(super) fn open_scaled(&self) {
        self.layers[usize::from(SCALED_LAYER)]
            .active
            .store(true, Ordering::Relaxed);
        self.tell(LayersChanged);
    }

    /// The scaled layer is gone: forgotten, so no leg chooses it.
    pub(super) fn close_scaled(&self) {
        let layer = &self.layers[usize::from(SCALED_LAYER)];
        layer.active.store(false, Ordering::Relaxed);
        layer.width.store(0, Ordering::Relaxed);
        layer.height.store(0, Ordering::Relaxed);
        layer.kbps.store(0, Ordering::Relaxed);
        if let Some(Ok(mut cache)) = layer.keyframe.as_ref().map(|c| c.lock()) {
            *cache = KeyframeCache::default();
        }
        self.tell(LayersChanged);
    }

    /// Whether a leg asked the scaled layer for a keyframe since the last look.
    pub(super) fn take_scaled_keyframe_request(&self) -> bool {
        self.scaled_keyframe.swap(false, Ordering::Relaxed)
    }

    /// Whether a leg asked this local source for a keyframe since the last look (for sources
    /// that can make one: an encoder, not a camera).
    pub fn take_keyframe_request(&self) -> bool {
        self.local_keyframe.swap(false, Ordering::Relaxed)
    }

    /// Hands a burst of packets (each with its layer) to the taps, then to the legs leg by leg:
    /// each live leg gets every packet of the burst on its layer (or switching to it at a
    /// keyframe) before the next leg gets any, so a leg's datagrams are queued back to back and
    /// leave as one GSO run (`media/send_batch.rs`), and the first legs' leave before the last
    /// legs' are encrypted. A leg sees its packets in the burst's order, as it would one by one.
    fn fan_out(&self, burst: Vec<(u8, rtp::Packet)>) {
        let Ok(legs) = self.legs.read() else { return };
        let burst: Vec<Outgoing> = burst
            .into_iter()
            .filter_map(|(idx, pkt)| self.admit(idx, pkt))
            .collect();
        if burst.is_empty() {
            return;
        }
        let c = &self.counters;
        for leg in legs.iter() {
            if !leg.live.load(Ordering::Relaxed) {
                continue;
            }
            for Outgoing { idx, pkt, keyframe } in &burst {
                let (idx, len) = (*idx, pkt.payload.len() as u64);
                let offset = leg.skipped.load(Ordering::Relaxed);
                let switch = leg.current.load(Ordering::Relaxed) != idx;
                // Another layer: join this one only at its keyframe, if it is the target.
                if switch && (leg.target.load(Ordering::Relaxed) != idx || (!keyframe && self.keyframe_aware)) {
                    continue;
                }
                match leg.write_on_layer(pkt, offset, idx, switch) {
                    LegWrite::Sent => self.count_out(leg, len),
                    LegWrite::Switched => {
                        c.layer_switches.fetch_add(1, Ordering::Relaxed);
                        self.count_out(leg, len);
                    }
                    LegWrite::Raced => {}
                    // A switch that failed is tried again at the layer's next keyframe.
                    LegWrite::Failed if switch => {}
                    LegWrite::Failed => {
                        leg.skipped.store(offset.wrapping_add(1), Ordering::Relaxed);
                        c.dropped.fetch_add(1, Ordering::Relaxed);
                        self.metrics.rtp_dropped.inc();
                    }
                }
            }
        }
    }

    /// Counts one packet of layer `idx` in, notes its picture size, caches it (keyframes) and
    /// hands it to the taps; the packet to send the legs, unless the layer is unknown or the
    /// track muted.
    fn admit(&self, idx: u8, pkt: rtp::Packet) -> Option<Outgoing> {
        let c = &self.counters;
        let len = pkt.payload.len() as u64;
        // The scaled layer is the server's own: not what the publisher sent.
        if idx != SCALED_LAYER {
            c.packets_in.fetch_add(1, Ordering::Relaxed);
            c.bytes_in.fetch_add(len, Ordering::Relaxed);
            self.metrics.rtp_packets_in.inc();
            self.metrics.rtp_bytes_in.inc_by(len);
        }
        let layer = self.layers.get(usize::from(idx))?;
        layer.bytes.fetch_add(len, Ordering::Relaxed);
        if self.muted() {
            return None;
        }
        let keyframe = self.keyframe_aware && starts_keyframe(&self.info.codec.mime_type, &pkt.payload);
        if keyframe {
            if let Some((w, h)) = keyframe_dimensions(&self.info.codec.mime_type, &pkt.payload) {
                let old = (
                    layer.width.swap(w, Ordering::Relaxed),
                    layer.height.swap(h, Ordering::Relaxed),
                );
                if old != (w, h) {
                    self.tell(LayersChanged);
                }
            }
        }
        if let Some(cache) = &layer.keyframe {
            if let Ok(mut cache) = cache.lock() {
                cache.push(keyframe, &pkt);
            }
        }
        if let Ok(mut taps) = self.taps.lock() {
            taps.retain(|(l, t)| {
                if *l != idx {
                    return true;
                }
                match t.try_send(pkt.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        c.dropped.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
        Some(Outgoing { idx, pkt, keyframe })
    }

    /// Counts one packet of `len` payload bytes written to `leg`.
    fn count_out(&self, leg: &Downtrack, len: u64) {
        leg.counters.packets_out.fetch_add(1, Ordering::Relaxed);
        leg.counters.bytes_out.fetch_add(len, Ordering::Relaxed);
        self.metrics.rtp_packets_out.inc();
        self.metrics.rtp_bytes_out.inc_by(len);
    }

    /// Asks the publisher for a keyframe on layer `idx`, at most once per [`PLI_INTERVAL`] per
    /// layer. A request that falls inside the interval is not lost: one request is sent when the
    /// interval ends, so a subscriber joining right after another still gets a keyframe within
    /// [`PLI_INTERVAL`]. Must be called on the media runtime.
    pub async fn request_keyframe_of(self: &Arc<Self>, idx: u8) {
        let Some(layer) = self.layers.get(usize::from(idx)) else {
            return;
        };
        let wait = {
            let Ok(mut last) = layer.last_pli.lock() else { return };
            let now = Instant::now();
            match *last {
                Some(t) if now.duration_since(t) < PLI_INTERVAL => Some(PLI_INTERVAL - now.duration_since(t)),
                _ => {
                    *last = Some(now);
                    None
                }
            }
        };
        match wait {
            None => self.send_pli(idx).await,
            Some(wait) => {
                if !layer.pli_deferred.swap(true, Ordering::AcqRel) {
                    let fanout = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let layer = &fanout.layers[usize::from(idx)];
                        layer.pli_deferred.store(false, Ordering::Release);
                        if let Ok(mut last) = layer.last_pli.lock() {
                            *last = Some(Instant::now());
                        }
                        fanout.send_pli(idx).await;
                    });
                }
            }
        }
    }

    /// [`Self::request_keyframe_of`] the top layer (the only one of a single-layer track).
    pub async fn request_keyframe(self: &Arc<Self>) {
        self.request_keyframe_of(self.top_layer()).await
    }

    /// [`Self::request_keyframe`] from any thread (spawned on the media runtime; a no-op
    /// before the media plane has started; for a local source, the flag it may read).
    pub fn request_keyframe_soon(self: &Arc<Self>) {
        self.request_keyframe_of_soon(self.top_layer());
    }

    /// [`Self::request_keyframe_of`] from any thread.
    pub fn request_keyframe_of_soon(self: &Arc<Self>, idx: u8) {
        if idx == SCALED_LAYER {
            self.scaled_keyframe.store(true, Ordering::Relaxed);
            return;
        }
        if let Upstream::Local = self.upstream {
            self.local_keyframe.store(true, Ordering::Relaxed);
            return;
        }
        if let (Upstream::Rtc { .. }, Some(rt)) = (&self.upstream, crate::media::runtime_handle()) {
            let fanout = self.clone();
            rt.spawn(async move { fanout.request_keyframe_of(idx).await });
        }
    }

    /// The publisher's highest layer (what taps record).
    fn top_layer(&self) -> u8 {
        let (stats, _) = self.layer_stats();
        ranked(&stats[..MAX_LAYERS]).last().map_or(0, |&i| i as u8)
    }

    async fn send_pli(&self, idx: u8) {
        if idx == SCALED_LAYER {
            self.scaled_keyframe.store(true, Ordering::Relaxed);
            return;
        }
        let Upstream::Rtc { remote, .. } = &self.upstream else {
            self.local_keyframe.store(true, Ordering::Relaxed);
            return;
        };
        let media_ssrc = self.layers[usize::from(idx)].ssrc.load(Ordering::Relaxed);
        if media_ssrc == 0 {
            return;
        }
        self.counters.plis.fetch_add(1, Ordering::Relaxed);
        self.metrics.keyframe_requests.inc();
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        if let Err(e) = remote.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(track = %self.info.id, "keyframe request failed: {e}");
        }
    }

    /// Starts `leg`: it receives its target layer's cached keyframe, if there is a whole one,
    /// then the live stream from the layer's next keyframe (the packets after the cached one
    /// depend on pictures the leg never got, so nothing is forwarded to it in between). Returns
    /// whether the cache had a keyframe to give.
    async fn start_leg(&self, leg: &Downtrack) -> bool {
        let target = leg.target.load(Ordering::Relaxed);
        let cache = self.layers.get(usize::from(target)).and_then(|l| l.keyframe.as_ref());
        let mut cached: Vec<rtp::Packet> = Vec::new();
        // A keyframe arriving right now (its first packets are in the cache, the marker is not)
        // is only milliseconds from complete: wait for it rather than ask the publisher for
        // another one, which the keyframe-request throttle may hold back for 500 ms.
        for _ in 0..CACHE_FILL_POLLS {
            // `Some(packets)` once complete; `None` while filling; out when there is nothing.
            let found = match cache.and_then(|g| g.lock().ok()) {
                Some(state) if state.complete => Some(state.packets.clone()),
                Some(state) if state.valid => None,
                _ => break,
            };
            if let Some(packets) = found {
                cached = packets;
                break;
            }
            tokio::time::sleep(CACHE_FILL_POLL).await;
        }
        // A leg whose target moved off its first layer before it started (to a scaled layer
        // just made for it) waits for the target's keyframe, as one with a cached picture does.
        let target_moved = leg.current.load(Ordering::Relaxed) != leg.target.load(Ordering::Relaxed);
        if !cached.is_empty() || target_moved {
            leg.current.store(NO_LAYER, Ordering::Relaxed);
        }
        for pkt in &cached {
            if leg.write(pkt, 0, FROM_CACHE) {
                self.count_out(leg, pkt.payload.len() as u64);
            }
        }
        leg.heard_ms.store(now_ms(), Ordering::Relaxed);
        leg.live.store(true, Ordering::Relaxed);
        !cached.is_empty()
    }

    /// A tap: every packet of the track's top layer from now on, for a consumer on another
    /// thread such as a recorder. Unlike a subscriber leg it does not start from the cached
    /// keyframe: that picture may be seconds old and has no audio beside it, which would put
    /// stale, silent video at the head of a recording. A WebRTC publisher is asked for a fresh
    /// keyframe instead (a local source sends its next one). Packets a full tap cannot take are
    /// dropped and counted; the tap ends when the track does.
    pub fn tap(self: &Arc<Self>, capacity: usize) -> mpsc::Receiver<rtp::Packet> {
        self.tap_layer(self.top_layer(), capacity)
    }

    /// A [`Self::tap`] of layer `layer`.
    pub(super) fn tap_layer(self: &Arc<Self>, layer: u8, capacity: usize) -> mpsc::Receiver<rtp::Packet> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        if let Ok(mut taps) = self.taps.lock() {
            taps.push((layer, tx));
        }
        if self.info.kind == MediaKind::Video {
            self.request_keyframe_of_soon(layer);
        }
        rx
    }

    /// A frame tap, for a local source's track (None for a WebRTC publisher's: tap its packets):
    /// every frame the source hands over from now on, starting wherever it is (the consumer
    /// waits for a keyframe), up to `capacity` waiting. A frame the tap cannot take is counted
    /// as dropped, and the video after it until the next keyframe with it.
    pub fn tap_frames(&self, capacity: usize) -> Option<mpsc::Receiver<SourceFrame>> {
        matches!(self.upstream, Upstream::Local).then(|| self.frame_taps.open(capacity))
    }

    /// Whether a frame tap is open: a local source builds its frames only then.
    pub fn wants_frames(&self) -> bool {
        self.frame_taps.any()
    }

    /// Hands one frame of a local source to the frame taps (its packets go separately, through
    /// [`Self::forward`] or [`Self::forward_frame`]). Nothing while the track is muted.
    pub fn forward_source_frame(&self, frame: &SourceFrame) {
        if self.muted() {
            return;
        }
        let dropped = self.frame_taps.send(frame);
        if dropped > 0 {
            self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Ends the track: every leg's writer and every tap finishes once drained.
    pub fn close(&self) {
        if let Ok(mut legs) = self.legs.write() {
            self.metrics.legs.sub(legs.len() as i64);
            legs.clear();
        }
        if let Ok(mut taps) = self.taps.lock() {
            taps.clear();
        }
        self.frame_taps.close();
        self.tell(TrackEnded);
    }

    /// A layer appeared (the publisher's first packet of a RID stream): maps `ssrc` to it.
    fn open_layer(&self, ssrc: u32, rid: Option<&str>) {
        let real = &self.layers[..MAX_LAYERS];
        let known = real
            .iter()
            .position(|l| l.active.load(Ordering::Relaxed) && l.ssrc.load(Ordering::Relaxed) == ssrc);
        let slot = match (known, rid) {
            (Some(i), _) => Some(i),
            (None, None) => None,
            (None, Some(rid)) => real
                .iter()
                .position(|l| l.rid.get().map(String::as_str) == Some(rid))
                .or_else(|| real.iter().position(|l| !l.active.load(Ordering::Relaxed))),
        };
        let Some(i) = slot else {
            tracing::debug!(track = %self.info.id, ssrc, ?rid, "stream not forwarded (no layer for it)");
            return;
        };
        let layer = &self.layers[i];
        if let Some(rid) = rid {
            let _ = layer.rid.set(rid.to_owned());
        }
        layer.ssrc.store(ssrc, Ordering::Relaxed);
        layer.active.store(true, Ordering::Relaxed);
        tracing::info!(track = %self.info.id, ssrc, ?rid, layer = i, "layer opened");
        self.tell(LayersChanged);
    }

    /// The layer of a packet's SSRC.
    fn layer_of(&self, ssrc: u32) -> Option<u8> {
        self.layers[..MAX_LAYERS]
            .iter()
            .position(|l| l.ssrc.load(Ordering::Relaxed) == ssrc && l.active.load(Ordering::Relaxed))
            .map(|i| i as u8)
    }

    /// Reads a WebRTC publisher's packets and fans them out until the track ends. Runs on the
    /// media runtime; returns when the publisher's connection closes. Simulcast layers all
    /// arrive on the one remote track; each announces itself with an `OnOpen` carrying its RID.
    pub async fn run_reader(self: Arc<Self>) {
        let Upstream::Rtc { remote, ssrc } = &self.upstream else {
            return;
        };
        if let Some(rid) = remote.rid(*ssrc).await {
            self.open_layer(*ssrc, Some(rid.as_str()));
        }
        let mut r = Reading {
            burst: Vec::new(),
            meter: None,
            arrival_us: 0,
        };
        // Audio whose packets carry no level is measured here (decoded), if the server can.
        if self.info.kind == MediaKind::Audio && self.levels.extension().is_none() {
            r.meter = meter_for(&self.info.codec.mime_type, self.info.codec.channels);
            if r.meter.is_some() {
                self.levels.set_measured();
            }
        }
        // Video to many legs is forwarded a whole frame at a time (see `FRAME_HOLD`); audio,
        // and video to few legs, at once.
        let video = self.info.kind == MediaKind::Video;
        'read: loop {
            let event = if r.burst.is_empty() {
                remote.poll().await
            } else {
                match tokio::time::timeout(FRAME_HOLD, remote.poll()).await {
                    Ok(event) => event,
                    Err(_) => {
                        self.fan_out(std::mem::take(&mut r.burst));
                        continue;
                    }
                }
            };
            let Some(event) = event else { break };
            // This packet and those already waiting behind it (the rest of a frame) go out
            // together: each leg's share as one run.
            r.arrival_us = now_us();
            self.on_remote_event(event, &mut r);
            for _ in 0..MAX_BURST {
                match remote.poll().now_or_never() {
                    Some(Some(event)) => self.on_remote_event(event, &mut r),
                    Some(None) => break 'read,
                    None => break,
                }
            }
            let hold = video && self.subscribers() >= HOLD_FROM_LEGS;
            if !hold || frame_done(&r.burst) {
                self.fan_out(std::mem::take(&mut r.burst));
            }
        }
        self.fan_out(r.burst);
        // Closing every queue ends every leg's writer.
        self.close();
    }

    /// Adds a packet of the publisher's remote track to the burst (header extensions
    /// stripped; its sequence number and arrival counted for the uplink's loss and jitter; an
    /// audio packet's level counted, read from its extension or measured by the meter), or
    /// opens the layer an event announces (after sending what the burst holds, so the layer
    /// exists for what follows).
    fn on_remote_event(&self, event: TrackRemoteEvent, r: &mut Reading) {
        match event {
            TrackRemoteEvent::OnRtpPacket(mut pkt) => {
                // Streams that are not a layer (repair streams, extra RIDs) are not mixed in.
                let Some(idx) = self.layer_of(pkt.header.ssrc) else {
                    return;
                };
                if let Some(layer) = self.layers.get(usize::from(idx)) {
                    layer.loss.observe(pkt.header.sequence_number);
                    layer
                        .jitter
                        .observe(pkt.header.timestamp, r.arrival_us, self.info.codec.clock_rate);
                }
                if let Some(id) = self.levels.extension() {
                    let level = pkt.header.get_extension(id).and_then(|e| parse_level(&e));
                    if let (Some(level), false) = (level, self.muted()) {
                        self.levels.observe(level);
                    }
                } else if let (Some(m), false, true) = (r.meter.as_mut(), self.muted(), self.levels.may_measure()) {
                    if let Some(level) = m.measure(&pkt.payload) {
                        self.levels.observe(level);
                    }
                }
                // Extension ids are per leg; none are forwarded.
                pkt.header.extension = false;
                pkt.header.extension_profile = 0;
                pkt.header.extensions.clear();
                pkt.header.extensions_padding = 0;
                r.burst.push((idx, pkt));
            }
            TrackRemoteEvent::OnOpen(init) => {
                self.fan_out(std::mem::take(&mut r.burst));
                self.open_layer(init.ssrc, init.rid.as_deref());
            }
            _ => {}
        }
    }

    /// Attaches a subscriber leg for `viewer` in `room`, writing to `local` with the leg's
    /// payload type `pt` and SSRC `ssrc`, on the layer `caps` allow. Forwarding starts when
    /// `state` reaches `Connected`, with a keyframe request. Must be called on the media runtime.
    pub fn attach_capped(
        self: &Arc<Self>,
        (room, viewer): (GroupId, UserId),
        local: Arc<ViewerTrack>,
        pt: u8,
        ssrc: u32,
        mut state: tokio::sync::watch::Receiver<PeerState>,
        caps: LegCaps,
    ) -> Arc<Downtrack> {
        let target = self.choose(&caps);
        // One layer: forward from the start, as before simulcast. Several: from a keyframe.
        let multi = self.layer_count() > 1;
        let leg = Arc::new(Downtrack {
            id: crate::next_id(),
            writer: Mutex::new(LegWriter {
                local: local.clone(),
                pt,
                ssrc,
                clock: u64::from(self.info.codec.clock_rate.max(1)),
                layer: NO_LAYER,
                seq_delta: 0,
                ts_delta: 0,
                last: None,
                last_at: Instant::now(),
                closed: false,
            }),
            skipped: AtomicU16::new(0),
            live: AtomicBool::new(false),
            current: AtomicU8::new(if multi { NO_LAYER } else { target }),
            target: AtomicU8::new(target),
            room,
            viewer,
            last_loss: AtomicU8::new(0),
            last_jitter_ms: AtomicU32::new(0),
            last_rtt_ms: AtomicU32::new(0),
            heard_ms: AtomicU64::new(0),
            counters: LegCounters::default(),
        });
        let fanout = self.clone();
        let starting = leg.clone();
        tokio::spawn(async move {
            let connected =
                tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| *s == PeerState::Connected));
            if !matches!(connected.await, Ok(Ok(_))) {
                return;
            }
            // With or without a cached picture, the live stream resumes at the next keyframe:
            // a WebRTC publisher is asked for it (a local source sends its next one).
            fanout.start_leg(&starting).await;
            let layer = starting.target();
            if layer == PAUSED {
                return;
            }
            fanout
                .request_keyframe_of(if layer == NO_LAYER { 0 } else { layer })
                .await;
        });
        let fanout = self.clone();
        let feedback = leg.clone();
        let leg_ssrc = ssrc;
        tokio::spawn(async move {
            // The subscriber's keyframe requests, bandwidth estimates and loss reports on this
            // leg (surfaced by the RTCP interceptor).
            let Some(mut reports) = local.take_feedback() else {
                return;
            };
            while let Some(pkts) = reports.recv().await {
                feedback.heard_ms.store(now_ms(), Ordering::Relaxed);
                let remb = pkts
                    .iter()
                    .rev()
                    .find_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
                    .map(|r| ((r.bitrate / 1000.0) as u32, EstimateSource::Remb, false));
                let send_side = pkts
                    .iter()
                    .rev()
                    .find_map(|p| p.as_any().downcast_ref::<SendSideEstimate>())
                    .map(|e| ((e.bitrate_bps / 1000) as u32, EstimateSource::SendSide, e.overusing));
                for (kbps, source, overusing) in remb.into_iter().chain(send_side) {
                    fanout.tell(SetEstimate {
                        leg: feedback.id,
                        kbps,
                        source,
                        overusing,
                    });
                }
                let report = pkts
                    .iter()
                    .rev()
                    .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
                    .flat_map(|rr| rr.reports.iter())
                    .find(|r| r.ssrc == leg_ssrc)
                    .map(|r| (r.fraction_lost, r.jitter, r.last_sender_report, r.delay));
                if let Some((fraction_lost, jitter, lsr, dlsr)) = report {
                    if let Some(rtt) = rtt_ms(ntp_middle_now(), lsr, dlsr) {
                        feedback.last_rtt_ms.store(rtt.round() as u32, Ordering::Relaxed);
                        fanout
                            .metrics
                            .link_rtt
                            .with_label_values(&["down"])
                            .observe(rtt / 1000.0);
                    }
                    let clock = u64::from(fanout.info.codec.clock_rate.max(1));
                    let jitter_ms = (u64::from(jitter) * 1000 / clock).min(u64::from(u32::MAX)) as u32;
                    feedback.last_jitter_ms.store(jitter_ms, Ordering::Relaxed);
                    feedback.last_loss.store(fraction_lost, Ordering::Relaxed);
                    fanout.tell(LossReport {
                        leg: feedback.id,
                        fraction_lost,
                    });
                }
                let nacked: u64 = pkts
                    .iter()
                    .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
                    .filter(|n| n.media_ssrc == leg_ssrc)
                    .flat_map(|n| n.nacks.iter())
                    .map(|pair| 1 + u64::from(pair.lost_packets.count_ones()))
                    .sum();
                feedback.counters.nacked.fetch_add(nacked, Ordering::Relaxed);
                let keyframe_request = pkts.iter().any(|p| {
                    let a = p.as_any();
                    a.is::<PictureLossIndication>() || a.is::<FullIntraRequest>()
                });
                if keyframe_request && !feedback.paused() {
                    let layer = match feedback.current() {
                        NO_LAYER => feedback.target(),
                        l => l,
                    };
                    fanout
                        .request_keyframe_of(if layer == NO_LAYER { 0 } else { layer })
                        .await;
                }
            }
        });
        if let Ok(mut legs) = self.legs.write() {
            legs.push(leg.clone());
            self.metrics.legs.inc();
        }
        self.tell(Subscribed { leg: leg.clone(), caps });
        leg
    }

    /// Changes what limits leg `leg_id` (its member caps changed, or it picked a layer).
    pub fn set_leg_caps(&self, leg_id: u64, caps: LegCaps) {
        self.tell(SetLegCaps { leg: leg_id, caps });
    }

    /// Detaches a subscriber leg; what it sent stays in the track's counters.
    pub fn detach(&self, leg_id: u64) {
        if let Ok(mut legs) = self.legs.write() {
            let before = legs.len();
            let c = &self.counters;
            for gone in legs.iter().filter(|l| l.id == leg_id) {
                let t = gone.traffic();
                c.packets_out.fetch_add(t.packets_out, Ordering::Relaxed);
                c.bytes_out.fetch_add(t.bytes_out, Ordering::Relaxed);
                c.nacked.fetch_add(t.nacked, Ordering::Relaxed);
                self.metrics.tracks_live.add_gone(gone.room.as_str(), t);
            }
            legs.retain(|l| l.id != leg_id);
            self.metrics.legs.sub((before - legs.len()) as i64);
        }
        self.tell(Unsubscribed { leg: leg_id });
    }

    /// What the track sent and was asked to resend so far: its departed legs' counts plus the
    /// live legs'. Each live leg is also handed to `per_leg` with its own counts.
    pub fn sent(&self, mut per_leg: impl FnMut(&Downtrack, RoomTraffic)) -> RoomTraffic {
        let c = &self.counters;
        let mut total = RoomTraffic {
            packets_out: c.packets_out.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            nacked: c.nacked.load(Ordering::Relaxed),
            ..RoomTraffic::default()
        };
        self.for_each_leg(|leg| {
            let t = leg.traffic();
            total += t;
            per_leg(leg, t);
        });
        total
    }

    /// Hands each live subscriber leg to `f`.
    pub fn for_each_leg(&self, f: impl FnMut(&Downtrack)) {
        if let Ok(legs) = self.legs.read() {
            legs.iter().map(|l| l.as_ref()).for_each(f);
        }
    }

    /// The call of `group` lists this track now.
    pub fn enter_room(&self, group: &GroupId) {
        let now = self.received();
        if let Ok(mut rooms) = self.rooms.lock() {
            if !rooms.iter().any(|(g, _)| g == group) {
                rooms.push((group.clone(), now));
            }
        }
    }

    /// The call of `group` no longer lists this track: what came in meanwhile stays the room's.
    pub fn leave_room(&self, group: &GroupId) {
        let now = self.received();
        if let Ok(mut rooms) = self.rooms.lock() {
            for (g, since) in rooms.iter().filter(|(g, _)| g == group) {
                self.metrics.tracks_live.add_gone(g.as_str(), now.since(since));
            }
            rooms.retain(|(g, _)| g != group);
        }
    }

    /// Each group whose call lists this track, with what came in since it did.
    pub fn room_traffic(&self) -> Vec<(GroupId, RoomTraffic)> {
        let now = self.received();
        self.rooms
            .lock()
            .map(|r| r.iter().map(|(g, since)| (g.clone(), now.since(since))).collect())
            .unwrap_or_default()
    }

    /// What came in on this track (and the keyframe requests sent for it) so far.
    fn received(&self) -> RoomTraffic {
        let c = &self.counters;
        RoomTraffic {
            packets_in: c.packets_in.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            plis: c.plis.load(Ordering::Relaxed),
            ..RoomTraffic::default()
        }
    }
}

impl KeyframeCache {
    /// Keeps `pkt` if it belongs to the current keyframe. A keyframe's first packet starts a
    /// new one, unless it is of the same picture (an IDR slice after its SPS and PPS).
    fn push(&mut self, keyframe: bool, pkt: &rtp::Packet) {
        let same_picture = self
            .packets
            .first()
            .is_some_and(|p| p.header.timestamp == pkt.header.timestamp);
        if keyframe && !(self.valid && !self.complete && same_picture) {
            self.packets.clear();
            self.bytes = 0;
            self.valid = true;
            self.complete = false;
        }
        if !self.valid || self.complete {
            return;
        }
        self.bytes += pkt.payload.len();
        if self.bytes > KEYFRAME_CACHE_BYTES {
            // Too big to keep: new legs wait for the next keyframe.
            *self = KeyframeCache::default();
            return;
        }
        self.packets.push(pkt.clone());
        self.complete = pkt.header.marker;
    }
}

/// Whether [`starts_keyframe`] understands this codec.
fn keyframe_aware(mime: &str) -> bool {
    ["video/H264", "video/VP8", "video/H265"]
        .iter()
        .any(|m| mime.eq_ignore_ascii_case(m))
}

/// Whether an RTP payload of codec `mime` is the first packet of a keyframe: for H.264 a
/// packet carrying (or starting) an SPS or IDR NAL unit; for H.265 one carrying (or starting)
/// a VPS, SPS or IRAP picture; for VP8 the start of a key frame.
pub fn starts_keyframe(mime: &str, payload: &[u8]) -> bool {
    if mime.eq_ignore_ascii_case("video/H264") {
        let Some(&first) = payload.first() else { return false };
        match first & 0x1f {
            // SPS, or an IDR slice sent alone.
            7 | 5 => true,
            // STAP-A: any aggregated SPS or IDR.
            24 => {
                let mut rest = &payload[1..];
                while rest.len() > 2 {
                    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    let Some(&nal) = rest.get(2) else { break };
                    if matches!(nal & 0x1f, 5 | 7) {
                        return true;
                    }
                    rest = rest.get(2 + len..).unwrap_or(&[]);
                }
                false
            }
            // FU-A: the start fragment of an IDR slice.
            28 => payload.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == 5),
            _ => false,
        }
    } else if mime.eq_ignore_ascii_case("video/VP8") {
        vp8_starts_keyframe(payload)
    } else if mime.eq_ignore_ascii_case("video/H265") {
        h265_starts_keyframe(payload)
    } else {
        false
    }
}

/// H.265 (RFC 7798): a single NAL unit, an aggregation packet holding one, or the start
/// fragment of one, that is a VPS (32), an SPS (33) or an IRAP picture's slice (16 to 21).
fn h265_starts_keyframe(payload: &[u8]) -> bool {
    let starts = |ty: u8| (16..=21).contains(&ty) || ty == 32 || ty == 33;
    let Some(&first) = payload.first() else { return false };
    match (first >> 1) & 0x3f {
        48 => {
            let mut rest = payload.get(2..).unwrap_or(&[]);
            while rest.len() > 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(&nal) = rest.get(2) else { break };
                if starts((nal >> 1) & 0x3f) {
                    return true;
                }
                rest = rest.get(2 + len..).unwrap_or(&[]);
            }
            false
        }
        49 => payload.get(2).is_some_and(|fu| fu & 0x80 != 0 && starts(fu & 0x3f)),
        ty => starts(ty),
    }
}

/// VP8 (RFC 7741): the payload descriptor's S bit with partition 0, then the frame header's
/// inverse key-frame bit.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&d) = payload.first() else { return false };
    if d & 0x10 == 0 || d & 0x07 != 0 {
        return false;
    }
    let mut i = 1;
    if d & 0x80 != 0 {
        let Some(&x) = payload.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID, 7 or 15 bits.
            let Some(&p) = payload.get(i) else { return false };
            i += if p & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    payload.get(i).is_some_and(|h| h & 0x01 == 0)
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.metrics.tracks.dec();
        // Rooms and legs still listed (a room that stopped without unpublishing): their
        // traffic stays their rooms'.
        let now = self.received();
        if let Ok(rooms) = self.rooms.lock() {
            for (g, since) in rooms.iter() {
                self.metrics.tracks_live.add_gone(g.as_str(), now.since(since));
            }
        }
        if let Ok(legs) = self.legs.read() {
            for leg in legs.iter() {
                self.metrics.tracks_live.add_gone(leg.room.as_str(), leg.traffic());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ts: u32, marker: bool, payload: &[u8]) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                timestamp: ts,
                marker,
                ..Default::default()
            },
            payload: bytes::Bytes::copy_from_slice(payload),
        }
    }

    fn push(cache: &mut KeyframeCache, p: rtp::Packet) {
        cache.push(starts_keyframe("video/H264", &p.payload), &p);
    }

    #[test]
    fn h265_keyframes_start_at_a_parameter_set_or_an_irap_picture() {
        let h265 = |p: &[u8]| starts_keyframe("video/H265", p);
        assert!(h265(&[32 << 1, 1, 0x0c]), "a VPS alone");
        assert!(h265(&[19 << 1, 1, 0xaf]), "an IDR_W_RADL slice alone");
        assert!(!h265(&[1 << 1, 1, 0xaf]), "a TRAIL_R slice");
        assert!(!h265(&[34 << 1, 1, 0xc1]), "a PPS alone goes with the SPS before it");
        // A fragmentation unit: its header's S bit and type.
        assert!(h265(&[49 << 1, 1, 0x80 | 20, 0xaa]));
        assert!(!h265(&[49 << 1, 1, 20, 0xaa]), "not the start fragment");
        assert!(!h265(&[49 << 1, 1, 0x80 | 1, 0xaa]));
        // An aggregation packet of a VPS and an SPS.
        assert!(h265(&[48 << 1, 1, 0, 3, 32 << 1, 1, 0x0c, 0, 3, 33 << 1, 1, 1]));
        assert!(!h265(&[48 << 1, 1, 0, 3, 34 << 1, 1, 0xc1]));
        assert!(!h265(&[]));
    }

    #[test]
    fn a_frame_goes_on_at_its_marker_or_when_the_next_one_starts() {
        let held = |ps: &[(u8, u32, bool)]| -> Vec<(u8, rtp::Packet)> {
            ps.iter().map(|&(l, ts, m)| (l, pkt(ts, m, b"x"))).collect()
        };
        assert!(!frame_done(&[]));
        assert!(
            !frame_done(&held(&[(0, 100, false), (0, 100, false)])),
            "the frame goes on"
        );
        assert!(frame_done(&held(&[(0, 100, false), (0, 100, true)])), "its marker");
        // The marker was lost: the next frame's first packet lets the rest go.
        assert!(frame_done(&held(&[(0, 100, false), (0, 3100, false)])));
        // Simulcast: another layer's packets at another timestamp are not a new frame.
        assert!(!frame_done(&held(&[(0, 100, false), (1, 900, false)])));
        let many: Vec<(u8, u32, bool)> = (0..MAX_HELD).map(|_| (0, 100, false)).collect();
        assert!(frame_done(&held(&many)), "enough is held");
    }

    #[test]
    fn the_cache_holds_one_whole_keyframe_with_its_parameter_sets() {
        let mut cache = KeyframeCache::default();
        push(&mut cache, pkt(1, false, &[0x41, 1])); // a P slice before any keyframe
        assert!(!cache.valid);
        push(&mut cache, pkt(9, false, &[0x67, 1])); // SPS
        push(&mut cache, pkt(9, false, &[0x68, 1])); // PPS
        push(&mut cache, pkt(9, false, &[0x7c, 0x85, 1])); // FU-A start of the IDR
        assert!(!cache.complete);
        push(&mut cache, pkt(9, true, &[0x7c, 0x45, 1])); // FU-A end
        push(&mut cache, pkt(12, true, &[0x41, 2])); // the next P frame is not kept
        assert!(cache.complete);
        let nal_headers: Vec<u8> = cache.packets.iter().map(|p| p.payload[0]).collect();
        assert_eq!(nal_headers, [0x67, 0x68, 0x7c, 0x7c]);
        // The next keyframe replaces it.
        push(&mut cache, pkt(20, true, &[0x65, 1]));
        assert_eq!(cache.packets.len(), 1);
        assert!(cache.complete);
    }
}
