//! Per-track fan-out: the direct packet path from one publisher to many subscriber legs, plus
//! taps (recorders, live HLS) and the cached keyframe a new subscriber starts from.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::{MediaKind, TrackInfo};
use crate::media::PeerState;
use crate::metrics::EngineMetrics;

/// Packets a subscriber leg may have queued before it starts losing them.
const LEG_QUEUE: usize = 512;
/// Keyframe requests to the publisher are at most this frequent.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// The cached group of pictures is given up (until the next keyframe) beyond this many bytes.
const GOP_CACHE_BYTES: usize = 2 << 20;

/// Where a track's packets come from, which decides how a keyframe is obtained.
pub enum Upstream {
    /// A WebRTC publisher: keyframes are asked for with a PLI on `ssrc`.
    Rtc { remote: Arc<dyn TrackRemote>, ssrc: u32 },
    /// A server-side source (RTSP ingest, a file) that calls [`Fanout::forward`] itself and
    /// cannot be asked for a keyframe: new subscribers start from the cached one.
    Local,
}

/// Counters of one track, read by `/metrics` and the call view.
#[derive(Debug, Default)]
pub struct TrackCounters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Packets a subscriber leg lost because its queue was full.
    pub dropped: AtomicU64,
    /// Keyframe requests sent to the publisher.
    pub plis: AtomicU64,
}

/// One subscriber leg: a bounded queue drained by the leg's writer task.
pub struct Downtrack {
    /// Unique id of this leg.
    pub id: u64,
    tx: mpsc::Sender<(rtp::Packet, u16)>,
    /// Packets dropped so far on this leg; subtracted from sequence numbers so the subscriber
    /// sees no gap it would NACK forever (only the reader task writes it).
    skipped: AtomicU16,
    /// Set once the leg's connection is up; until then it is skipped.
    live: AtomicBool,
}

/// The packets since the last keyframe started, so a new subscriber or tap begins with a
/// picture without waiting for the publisher.
#[derive(Default)]
struct GopCache {
    packets: Vec<rtp::Packet>,
    bytes: usize,
    /// The cache holds a whole keyframe onwards.
    valid: bool,
}

/// A published track's fan-out.
pub struct Fanout {
    pub info: TrackInfo,
    pub counters: TrackCounters,
    legs: RwLock<Vec<Arc<Downtrack>>>,
    taps: Mutex<Vec<mpsc::Sender<rtp::Packet>>>,
    /// Only for video codecs whose keyframes [`starts_keyframe`] recognises.
    gop: Option<Mutex<GopCache>>,
    muted: AtomicBool,
    upstream: Upstream,
    last_pli: Mutex<Option<Instant>>,
    /// A keyframe request is scheduled for the end of the current interval.
    pli_deferred: AtomicBool,
    metrics: EngineMetrics,
}

impl Fanout {
    /// A fan-out for a track fed by `upstream`.
    pub fn new(info: TrackInfo, upstream: Upstream, metrics: EngineMetrics) -> Arc<Fanout> {
        metrics.tracks.inc();
        let gop = (info.kind == MediaKind::Video && keyframe_aware(&info.codec.mime_type))
            .then(|| Mutex::new(GopCache::default()));
        let fanout = Arc::new(Fanout {
            info,
            counters: TrackCounters::default(),
            legs: RwLock::new(Vec::new()),
            taps: Mutex::new(Vec::new()),
            gop,
            muted: AtomicBool::new(false),
            upstream,
            last_pli: Mutex::new(None),
            pli_deferred: AtomicBool::new(false),
            metrics: metrics.clone(),
        });
        metrics.tracks_live.add(&fanout);
        fanout
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

    /// Hands one packet to every live leg and tap without waiting.
    pub fn forward(&self, pkt: rtp::Packet) {
        let c = &self.counters;
        c.packets_in.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
        self.metrics.rtp_packets_in.inc();
        self.metrics.rtp_bytes_in.inc_by(pkt.payload.len() as u64);
        if self.muted() {
            return;
        }
        // Held across the cache update so that a leg starting from the cache (under the write
        // lock) neither misses nor repeats a packet.
        let Ok(legs) = self.legs.read() else { return };
        if let Some(gop) = &self.gop {
            if let Ok(mut gop) = gop.lock() {
                gop.push(&self.info.codec.mime_type, &pkt);
            }
        }
        if let Ok(mut taps) = self.taps.lock() {
            taps.retain(|t| match t.try_send(pkt.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        for leg in legs.iter() {
            if !leg.live.load(Ordering::Relaxed) {
                continue;
            }
            let offset = leg.skipped.load(Ordering::Relaxed);
            if leg.tx.try_send((pkt.clone(), offset)).is_err() {
                leg.skipped.store(offset.wrapping_add(1), Ordering::Relaxed);
                c.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.rtp_dropped.inc();
            }
        }
    }

    /// Asks the publisher for a keyframe, at most once per [`PLI_INTERVAL`]. A request that
    /// falls inside the interval is not lost: one request is sent when the interval ends, so a
    /// subscriber joining right after another still gets a keyframe within [`PLI_INTERVAL`].
    /// Must be called on the media runtime.
    pub async fn request_keyframe(self: &Arc<Self>) {
        let wait = {
            let Ok(mut last) = self.last_pli.lock() else { return };
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
            None => self.send_pli().await,
            Some(wait) => {
                if !self.pli_deferred.swap(true, Ordering::AcqRel) {
                    let fanout = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        fanout.pli_deferred.store(false, Ordering::Release);
                        if let Ok(mut last) = fanout.last_pli.lock() {
                            *last = Some(Instant::now());
                        }
                        fanout.send_pli().await;
                    });
                }
            }
        }
    }

    /// [`Self::request_keyframe`] from any thread (spawned on the media runtime; a no-op
    /// before the media plane has started or for a local source).
    pub fn request_keyframe_soon(self: &Arc<Self>) {
        if let (Upstream::Rtc { .. }, Some(rt)) = (&self.upstream, crate::media::runtime_handle()) {
            let fanout = self.clone();
            rt.spawn(async move { fanout.request_keyframe().await });
        }
    }

    async fn send_pli(&self) {
        let Upstream::Rtc { remote, ssrc } = &self.upstream else {
            return;
        };
        self.counters.plis.fetch_add(1, Ordering::Relaxed);
        self.metrics.keyframe_requests.inc();
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: *ssrc,
        };
        if let Err(e) = remote.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(track = %self.info.id, "keyframe request failed: {e}");
        }
    }

    /// Starts `leg`: it receives the cached keyframe onwards, then every packet. Returns
    /// whether the cache had a keyframe to give.
    fn start_leg(&self, leg: &Downtrack) -> bool {
        let Ok(_guard) = self.legs.write() else { return false };
        let mut served = false;
        if let Some(gop) = self.gop.as_ref().and_then(|g| g.lock().ok()) {
            if gop.valid {
                for pkt in &gop.packets {
                    let _ = leg.tx.try_send((pkt.clone(), 0));
                }
                served = true;
            }
        }
        leg.live.store(true, Ordering::Relaxed);
        served
    }

    /// A tap: every packet of the track from now on (starting with the cached keyframe when
    /// there is one), for a consumer on another thread such as a recorder. Packets a full tap
    /// cannot take are dropped and counted; the tap ends when the track does.
    pub fn tap(self: &Arc<Self>, capacity: usize) -> mpsc::Receiver<rtp::Packet> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let Ok(_guard) = self.legs.write() else { return rx };
        let mut served = false;
        if let Some(gop) = self.gop.as_ref().and_then(|g| g.lock().ok()) {
            if gop.valid {
                for pkt in &gop.packets {
                    let _ = tx.try_send(pkt.clone());
                }
                served = true;
            }
        }
        if let Ok(mut taps) = self.taps.lock() {
            taps.push(tx);
        }
        drop(_guard);
        if !served && self.info.kind == MediaKind::Video {
            self.request_keyframe_soon();
        }
        rx
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
    }

    /// Reads a WebRTC publisher's packets and fans them out until the track ends. Runs on the
    /// media runtime; returns when the publisher's connection closes.
    pub async fn run_reader(self: Arc<Self>) {
        let Upstream::Rtc { remote, ssrc } = &self.upstream else {
            return;
        };
        while let Some(event) = remote.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(mut pkt) = event {
                // One stream per track: further simulcast layers (and repair streams) arrive with
                // other SSRCs and are not mixed in. Layer selection is not implemented yet.
                if pkt.header.ssrc != *ssrc {
                    continue;
                }
                // Extension ids are per leg; none are forwarded.
                pkt.header.extension = false;
                pkt.header.extension_profile = 0;
                pkt.header.extensions.clear();
                pkt.header.extensions_padding = 0;
                self.forward(pkt);
            }
        }
        // Closing every queue ends every leg's writer.
        self.close();
    }

    /// Attaches a subscriber leg writing to `local` with the leg's payload type `pt` and SSRC
    /// `ssrc`. Forwarding starts when `state` reaches `Connected`, with a keyframe request.
    /// Must be called on the media runtime.
    pub fn attach(
        self: &Arc<Self>,
        local: Arc<TrackLocalStaticRTP>,
        pt: u8,
        ssrc: u32,
        mut state: tokio::sync::watch::Receiver<PeerState>,
    ) -> Arc<Downtrack> {
        let (tx, mut rx) = mpsc::channel::<(rtp::Packet, u16)>(LEG_QUEUE);
        let leg = Arc::new(Downtrack {
            id: crate::next_id(),
            tx,
            skipped: AtomicU16::new(0),
            live: AtomicBool::new(false),
        });
        let fanout = self.clone();
        let writer_local = local.clone();
        let starting = leg.clone();
        tokio::spawn(async move {
            let connected =
                tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| *s == PeerState::Connected));
            if !matches!(connected.await, Ok(Ok(_))) {
                return;
            }
            let from_cache = fanout.start_leg(&starting);
            drop(starting);
            if !from_cache {
                fanout.request_keyframe().await;
            }
            while let Some((mut pkt, offset)) = rx.recv().await {
                pkt.header.payload_type = pt;
                pkt.header.ssrc = ssrc;
                pkt.header.sequence_number = pkt.header.sequence_number.wrapping_sub(offset);
                let len = pkt.payload.len() as u64;
                if writer_local.write_rtp(pkt).await.is_err() {
                    break;
                }
                fanout.counters.packets_out.fetch_add(1, Ordering::Relaxed);
                fanout.counters.bytes_out.fetch_add(len, Ordering::Relaxed);
                fanout.metrics.rtp_packets_out.inc();
                fanout.metrics.rtp_bytes_out.inc_by(len);
            }
        });
        let fanout = self.clone();
        tokio::spawn(async move {
            // The subscriber's keyframe requests (surfaced by the RTCP interceptor).
            while let Some(event) = local.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(_) = event {
                    fanout.request_keyframe().await;
                }
            }
        });
        if let Ok(mut legs) = self.legs.write() {
            legs.push(leg.clone());
            self.metrics.legs.inc();
        }
        leg
    }

    /// Detaches a subscriber leg; its writer ends once its queue drains.
    pub fn detach(&self, leg_id: u64) {
        if let Ok(mut legs) = self.legs.write() {
            let before = legs.len();
            legs.retain(|l| l.id != leg_id);
            self.metrics.legs.sub((before - legs.len()) as i64);
        }
    }
}

impl GopCache {
    /// Keeps `pkt` if it belongs to the current group of pictures; a keyframe's first packet
    /// starts a new one.
    fn push(&mut self, mime: &str, pkt: &rtp::Packet) {
        if starts_keyframe(mime, &pkt.payload) {
            self.packets.clear();
            self.bytes = 0;
            self.valid = true;
        }
        if !self.valid {
            return;
        }
        self.bytes += pkt.payload.len();
        if self.bytes > GOP_CACHE_BYTES {
            // Too long a GOP to keep: new legs fall back to keyframe requests.
            *self = GopCache::default();
            return;
        }
        self.packets.push(pkt.clone());
    }
}

/// Whether [`starts_keyframe`] understands this codec.
fn keyframe_aware(mime: &str) -> bool {
    mime.eq_ignore_ascii_case("video/H264") || mime.eq_ignore_ascii_case("video/VP8")
}

/// Whether an RTP payload of codec `mime` is the first packet of a keyframe: for H.264 a
/// packet carrying (or starting) an SPS or IDR NAL unit; for VP8 the start of a key frame.
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
    } else {
        false
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
    }
}
