//! Live tracks, for per-track metrics: a weak list read by a Prometheus collector at scrape
//! time, so the packet path only bumps its own atomics.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

use super::Fanout;

const LABELS: [&str; 3] = ["track", "publisher", "kind"];

/// The live tracks, and the collector that reports them.
#[derive(Clone, Default)]
pub struct TrackDirectory {
    tracks: Arc<Mutex<Vec<Weak<Fanout>>>>,
}

impl TrackDirectory {
    /// Adds a track; it drops out by itself once the track is gone.
    pub fn add(&self, track: &Arc<Fanout>) {
        if let Ok(mut t) = self.tracks.lock() {
            t.retain(|w| w.strong_count() > 0);
            t.push(Arc::downgrade(track));
        }
    }

    fn live(&self) -> Vec<Arc<Fanout>> {
        self.tracks
            .lock()
            .map(|t| t.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    /// A collector emitting `fanfare_track_*{track,publisher,kind}` for every live track.
    pub fn collector(&self) -> Result<TrackCollector, prometheus::Error> {
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &LABELS);
        Ok(TrackCollector {
            directory: self.clone(),
            packets_in: gauge("fanfare_track_packets_in", "RTP packets received on this track")?,
            bytes_in: gauge("fanfare_track_bytes_in", "RTP payload bytes received on this track")?,
            packets_out: gauge(
                "fanfare_track_packets_out",
                "RTP packets sent to this track's subscribers",
            )?,
            bytes_out: gauge(
                "fanfare_track_bytes_out",
                "RTP payload bytes sent to this track's subscribers",
            )?,
            dropped: gauge(
                "fanfare_track_dropped",
                "RTP packets slow subscribers of this track lost",
            )?,
            plis: gauge(
                "fanfare_track_keyframe_requests",
                "Keyframe requests sent for this track",
            )?,
            nacked: gauge(
                "fanfare_track_nacked_packets",
                "Packets this track's subscribers asked to have resent (NACK)",
            )?,
            subscribers: gauge("fanfare_track_subscribers", "Subscriber legs of this track")?,
        })
    }
}

/// Reports every live track's counters at scrape time.
pub struct TrackCollector {
    directory: TrackDirectory,
    packets_in: IntGaugeVec,
    bytes_in: IntGaugeVec,
    packets_out: IntGaugeVec,
    bytes_out: IntGaugeVec,
    dropped: IntGaugeVec,
    plis: IntGaugeVec,
    nacked: IntGaugeVec,
    subscribers: IntGaugeVec,
}

impl TrackCollector {
    fn all(&self) -> [&IntGaugeVec; 8] {
        [
            &self.packets_in,
            &self.bytes_in,
            &self.packets_out,
            &self.bytes_out,
            &self.dropped,
            &self.plis,
            &self.nacked,
            &self.subscribers,
        ]
    }
}

impl Collector for TrackCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.all().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for g in self.all() {
            g.reset();
        }
        for t in self.directory.live() {
            let kind = match t.info.kind {
                super::MediaKind::Audio => "audio",
                super::MediaKind::Video => "video",
            };
            let labels = [t.info.id.as_str(), t.info.publisher.as_str(), kind];
            let c = &t.counters;
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as i64;
            self.packets_in.with_label_values(&labels).set(get(&c.packets_in));
            self.bytes_in.with_label_values(&labels).set(get(&c.bytes_in));
            self.packets_out.with_label_values(&labels).set(get(&c.packets_out));
            self.bytes_out.with_label_values(&labels).set(get(&c.bytes_out));
            self.dropped.with_label_values(&labels).set(get(&c.dropped));
            self.plis.with_label_values(&labels).set(get(&c.plis));
            self.nacked.with_label_values(&labels).set(get(&c.nacked));
            self.subscribers.with_label_values(&labels).set(t.subscribers() as i64);
        }
        self.all().into_iter().flat_map(|g| g.collect()).collect()
    }
}
