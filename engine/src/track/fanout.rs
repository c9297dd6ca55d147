//! Per-track fan-out: the direct packet path from one publisher to many subscriber legs.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::TrackInfo;
use crate::media::PeerState;
use crate::metrics::EngineMetrics;

/// Packets a subscriber leg may have queued before it starts losing them.
const LEG_QUEUE: usize = 512;
/// Keyframe requests to the publisher are at most this frequent.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

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
}

/// A published track's fan-out.
pub struct Fanout {
    pub info: TrackInfo,
    pub counters: TrackCounters,
    legs: RwLock<Vec<Arc<Downtrack>>>,
    muted: AtomicBool,
    remote: Arc<dyn TrackRemote>,
    ssrc: u32,
    last_pli: Mutex<Option<Instant>>,
    /// A keyframe request is scheduled for the end of the current interval.
    pli_deferred: AtomicBool,
    metrics: EngineMetrics,
}

impl Fanout {
    /// A fan-out for `remote` (the publisher's track, first SSRC `ssrc`).
    pub fn new(info: TrackInfo, remote: Arc<dyn TrackRemote>, ssrc: u32, metrics: EngineMetrics) -> Arc<Fanout> {
        metrics.tracks.inc();
        let fanout = Arc::new(Fanout {
            info,
            counters: TrackCounters::default(),
            legs: RwLock::new(Vec::new()),
            muted: AtomicBool::new(false),
            remote,
            ssrc,
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

    /// Hands one packet to every leg without waiting.
    pub fn forward(&self, pkt: rtp::Packet) {
        let c = &self.counters;
        c.packets_in.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
        self.metrics.rtp_packets_in.inc();
        self.metrics.rtp_bytes_in.inc_by(pkt.payload.len() as u64);
        if self.muted() {
            return;
        }
        let Ok(legs) = self.legs.read() else { return };
        for leg in legs.iter() {
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

    async fn send_pli(&self) {
        self.counters.plis.fetch_add(1, Ordering::Relaxed);
        self.metrics.keyframe_requests.inc();
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: self.ssrc,
        };
        if let Err(e) = self.remote.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(track = %self.info.id, "keyframe request failed: {e}");
        }
    }

    /// Reads the publisher's packets and fans them out until the track ends. Runs on the media
    /// runtime; returns when the publisher's connection closes.
    pub async fn run_reader(self: Arc<Self>) {
        while let Some(event) = self.remote.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(mut pkt) = event {
                // One stream per track: further simulcast layers (and repair streams) arrive with
                // other SSRCs and are not mixed in. Layer selection is not implemented yet.
                if pkt.header.ssrc != self.ssrc {
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
        if let Ok(mut legs) = self.legs.write() {
            self.metrics.legs.sub(legs.len() as i64);
            legs.clear();
        }
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
        });
        let fanout = self.clone();
        let writer_local = local.clone();
        tokio::spawn(async move {
            let connected =
                tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| *s == PeerState::Connected));
            if !matches!(connected.await, Ok(Ok(_))) {
                return;
            }
            fanout.request_keyframe().await;
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

impl Drop for Fanout {
    fn drop(&mut self) {
        self.metrics.tracks.dec();
    }
}
