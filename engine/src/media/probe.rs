//! [`Probes`]: a viewer connection's padding probes. Before a subscriber leg climbs to a layer
//! of a higher bitrate, the track's control actor has the leg's stream sent the difference for
//! a while as padding ([`Probes::set`]), so the send-side estimate (`bwe.rs`) sees whether the
//! link carries the higher rate before the viewer's picture changes. The padding is copies of
//! packets the viewer already has, sent as RFC 4588 retransmissions on the stream's RTX SSRC
//! (as libwebrtc pads): the `rtc` crate writes no padding-only packet larger than 4 bytes. The
//! NACK responder ([`NackHistory`](super::nack_history::NackHistory)), which keeps the packets
//! and knows each stream's RTX, sends it after each frame ([`ProbeSlot::take_owed`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;

/// Padding owed at most, in time at the probe's rate: a frame that comes late does not make
/// the next burst bigger than this.
const MAX_OWED: Duration = Duration::from_millis(100);

/// The probes of one connection's streams that can carry one (video with NACK and RTX).
pub struct Probes {
    epoch: Instant,
    slots: Mutex<HashMap<u32, Arc<ProbeSlot>>>,
    /// Padding packets sent (every connection's).
    pub(super) packets: prometheus::IntCounter,
}

impl Probes {
    /// No stream yet; padding packets are counted in `packets`.
    pub fn new(packets: prometheus::IntCounter) -> Arc<Probes> {
        Arc::new(Probes {
            epoch: Instant::now(),
            slots: Mutex::new(HashMap::new()),
            packets,
        })
    }

    /// Pads stream `ssrc` at `kbps` for `duration` from now (0 kbps: stops). False when the
    /// stream cannot be padded (no RTX negotiated, or not bound yet).
    pub fn set(&self, ssrc: u32, kbps: u32, duration: Duration) -> bool {
        let Some(slot) = lock(&self.slots).get(&ssrc).cloned() else {
            return false;
        };
        let until = (Instant::now() + duration).saturating_duration_since(self.epoch);
        *lock(&slot.owed) = Owed::default();
        slot.until_ms.store(until.as_millis() as u64, Ordering::Relaxed);
        slot.kbps.store(kbps, Ordering::Relaxed);
        true
    }

    /// The slot of stream `ssrc`, made when the stream is bound.
    pub(super) fn open(&self, ssrc: u32) -> Arc<ProbeSlot> {
        let slot = Arc::new(ProbeSlot {
            epoch: self.epoch,
            packets: self.packets.clone(),
            kbps: AtomicU32::new(0),
            until_ms: AtomicU64::new(0),
            owed: Mutex::new(Owed::default()),
        });
        lock(&self.slots).insert(ssrc, slot.clone());
        slot
    }

    /// Forgets stream `ssrc` (unbound).
    pub(super) fn close(&self, ssrc: u32) {
        lock(&self.slots).remove(&ssrc);
    }
}

/// One stream's probe: its rate until when, and what is owed. (It holds no reference back to
/// its [`Probes`], which holds it: no cycle outlives the connection.)
pub(super) struct ProbeSlot {
    /// Its [`Probes`]' epoch.
    epoch: Instant,
    packets: prometheus::IntCounter,
    kbps: AtomicU32,
    /// Milliseconds from `epoch`.
    until_ms: AtomicU64,
    owed: Mutex<Owed>,
}

#[derive(Default)]
struct Owed {
    bytes: f64,
    since: Option<Instant>,
}

impl ProbeSlot {
    /// Bytes of padding owed now, at the end of a frame: the probe's rate times the time since
    /// the previous call (at most [`MAX_OWED`]'s worth in all), plus what earlier calls owed and
    /// [`Self::sent`] did not cover. 0 when no probe runs.
    pub(super) fn take_owed(&self, now: Instant) -> usize {
        // Every frame of every viewer's video passes here: no lock unless a probe runs.
        let kbps = self.kbps.load(Ordering::Relaxed);
        if kbps == 0 {
            return 0;
        }
        let until = self.epoch + Duration::from_millis(self.until_ms.load(Ordering::Relaxed));
        if now >= until {
            return 0;
        }
        let mut owed = lock(&self.owed);
        let rate = f64::from(kbps) * 1000.0 / 8.0;
        let elapsed = owed
            .since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t).min(MAX_OWED));
        owed.since = Some(now);
        owed.bytes = (owed.bytes + rate * elapsed.as_secs_f64()).min(rate * MAX_OWED.as_secs_f64());
        owed.bytes.max(0.0) as usize
    }

    /// Notes that `packets` of padding, `bytes` in all, went out.
    pub(super) fn sent(&self, packets: usize, bytes: usize) {
        let mut owed = lock(&self.owed);
        owed.bytes -= bytes as f64;
        self.packets.inc_by(packets as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_owes_its_rate_over_time_until_it_ends() {
        let probes = Probes::new(prometheus::IntCounter::new("p", "p").expect("counter"));
        assert!(!probes.set(7, 800, Duration::from_secs(1)), "no stream 7 yet");
        let slot = probes.open(7);
        let t = Instant::now();
        assert_eq!(slot.take_owed(t), 0, "no probe");
        assert!(probes.set(7, 800, Duration::from_secs(1)));
        // 800 kbps is 100 bytes a millisecond; the first frame starts the clock.
        assert_eq!(slot.take_owed(t), 0);
        assert_eq!(slot.take_owed(t + Duration::from_millis(33)), 3300);
        // 1,000 bytes sent of it: the rest is still owed with the next frame's share.
        slot.sent(1, 1000);
        assert_eq!(slot.take_owed(t + Duration::from_millis(66)), 5600);
        slot.sent(5, 5600);
        // A long gap owes at most 100 ms.
        assert_eq!(slot.take_owed(t + Duration::from_millis(600)), 10_000);
        assert_eq!(probes.packets.get(), 6);
        // Past the end, nothing; stopped, nothing.
        assert_eq!(slot.take_owed(t + Duration::from_secs(2)), 0);
        assert!(probes.set(7, 0, Duration::from_secs(1)));
        assert_eq!(slot.take_owed(t + Duration::from_millis(700)), 0);
        probes.close(7);
        assert!(!probes.set(7, 800, Duration::from_secs(1)));
    }
}
