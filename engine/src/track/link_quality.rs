//! How well a participant's links carry media: the loss and the interarrival jitter on a
//! publisher's uplink, counted from each layer's sequence numbers and timestamps by the reader
//! task ([`SeqLoss`], [`Jitter`], atomics only), and on a viewer's downlink, from the loss,
//! jitter and round trip its receiver reports give; graded into a [`Quality`] for the room's
//! `connection_quality` events. A link that goes quiet (an uplink that stops carrying packets,
//! a viewer that stops sending RTCP) is [`Quality::Lost`]. Pure logic; no I/O.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Loss below this is excellent.
const GOOD_LOSS: f64 = 0.02;
/// Loss at or above this is poor.
const POOR_LOSS: f64 = 0.10;
/// Jitter (ms) below this is excellent: a jitter buffer hides it.
const GOOD_JITTER_MS: f64 = 30.0;
/// Jitter (ms) at or above this is poor: a jitter buffer that hides it adds as much delay.
const POOR_JITTER_MS: f64 = 100.0;
/// Round-trip time (ms) below this is excellent: under 150 ms each way (ITU-T G.114).
const GOOD_RTT_MS: f64 = 300.0;
/// Round-trip time (ms) at or above this is poor: over 400 ms each way, talk gets hard.
const POOR_RTT_MS: f64 = 800.0;
/// `last` before the first packet.
const NONE: u32 = u32::MAX;
/// A viewer whose client has sent no RTCP for this long is lost. Browsers report on video
/// about every second and on audio every 2.5 to 7.5 s (RFC 3550's randomised interval).
pub const VIEWER_LOST_AFTER: Duration = Duration::from_secs(8);
/// A publisher whose uplink carried nothing in this many grading rounds in a row is lost.
pub const PUBLISHER_LOST_ROUNDS: u8 = 2;

/// A link's grade, as LiveKit's connection quality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Nothing heard from the participant for a while: its network is probably gone.
    Lost,
    Poor,
    Good,
    Excellent,
}

impl Quality {
    /// The grade of a link losing `loss` (0 to 1) of its packets.
    pub fn of_loss(loss: f64) -> Quality {
        Quality::of_measure(loss, GOOD_LOSS, POOR_LOSS)
    }

    /// The grade of a link whose packets arrive with `jitter_ms` of interarrival jitter.
    pub fn of_jitter(jitter_ms: f64) -> Quality {
        Quality::of_measure(jitter_ms, GOOD_JITTER_MS, POOR_JITTER_MS)
    }

    /// The grade of a link with a round-trip time of `rtt_ms`.
    pub fn of_rtt(rtt_ms: f64) -> Quality {
        Quality::of_measure(rtt_ms, GOOD_RTT_MS, POOR_RTT_MS)
    }

    /// Excellent under `good`, good under `poor`, else poor.
    fn of_measure(value: f64, good: f64, poor: f64) -> Quality {
        if value >= poor {
            Quality::Poor
        } else if value >= good {
            Quality::Good
        } else {
            Quality::Excellent
        }
    }
}

/// Milliseconds since the first call in this process: a clock cheap to keep in an atomic.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Microseconds since the first call in this process.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The middle 32 bits of the NTP time now (16.16 seconds), as RTCP's LSR field carries.
pub fn ntp_middle_now() -> u32 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since_epoch.subsec_nanos()) << 16) / 1_000_000_000;
    (((secs & 0xffff) << 16) | frac) as u32
}

/// The round-trip time (ms) a receiver report gives (RFC 3550 6.4.1): now, less the time of
/// the sender report it answers (`lsr`, our own NTP clock's middle 32 bits) and the delay the
/// receiver held it (`dlsr`, 1/65536 s). `None` without a sender report, or if it comes out
/// negative or over a minute (a clock step).
pub fn rtt_ms(now_middle: u32, lsr: u32, dlsr: u32) -> Option<f64> {
    if lsr == 0 {
        return None;
    }
    let rtt = now_middle.wrapping_sub(lsr).wrapping_sub(dlsr);
    (rtt < 60 << 16).then(|| f64::from(rtt) * 1000.0 / 65_536.0)
}

/// RFC 3550's interarrival jitter of one RTP stream (section 6.4.1, A.8): the smoothed
/// difference between packets' spacing on arrival and in their timestamps. Written by one
/// task (the reader), read by another (the room).
#[derive(Debug, Default)]
pub struct Jitter {
    started: AtomicBool,
    /// The last packet's relative transit time (arrival minus timestamp, clock units).
    transit: AtomicU32,
    /// The jitter in clock units, times 16 (the RFC's integer form).
    jitter_q4: AtomicU32,
}

impl Jitter {
    /// Counts a packet with RTP timestamp `ts` that arrived at `arrival_us` ([`now_us`]), on a
    /// `clock` Hz clock.
    pub fn observe(&self, ts: u32, arrival_us: u64, clock: u32) {
        let arrival = (u128::from(arrival_us) * u128::from(clock) / 1_000_000) as u32;
        let transit = arrival.wrapping_sub(ts);
        if !self.started.swap(true, Ordering::Relaxed) {
            self.transit.store(transit, Ordering::Relaxed);
            return;
        }
        let d = (transit.wrapping_sub(self.transit.swap(transit, Ordering::Relaxed)) as i32).unsigned_abs();
        // J += (|D| - J) / 16, in sixteenths; a jump over a second (a new stream, a pause) is
        // left out.
        if d < clock.max(1) {
            let j = self.jitter_q4.load(Ordering::Relaxed);
            self.jitter_q4
                .store(j.saturating_add(d).saturating_sub((j + 8) >> 4), Ordering::Relaxed);
        }
    }

    /// The jitter now, in ms.
    pub fn ms(&self, clock: u32) -> f64 {
        f64::from(self.jitter_q4.load(Ordering::Relaxed)) / 16.0 * 1000.0 / f64::from(clock.max(1))
    }
}

/// A look at a publication's uplink, for a room's grading: running totals, never reset, so
/// that each room reading the same track compares with its own last look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkSample {
    /// Packets received on the track.
    pub packets_in: u64,
    /// Packets expected from the sequence numbers, over every layer.
    pub expected: u64,
    /// Packets received that were counted against them.
    pub received: u64,
}

impl UplinkSample {
    /// Since `before`: whether nothing came, and the share of what was expected that was lost
    /// (`None` when nothing was expected).
    pub fn since(&self, before: &UplinkSample) -> (bool, Option<f64>) {
        let expected = self.expected.saturating_sub(before.expected);
        let received = self.received.saturating_sub(before.received).min(expected);
        (self.packets_in == before.packets_in, loss(expected, received))
    }
}

/// Packets expected and received on one RTP stream, from its sequence numbers. Written by
/// one task (the reader), taken by another (the room).
#[derive(Debug)]
pub struct SeqLoss {
    last: AtomicU32,
    expected: AtomicU64,
    received: AtomicU64,
}

impl Default for SeqLoss {
    fn default() -> Self {
        SeqLoss {
            last: AtomicU32::new(NONE),
            expected: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }
}

impl SeqLoss {
    /// Counts a packet with sequence number `seq`: a jump forward expects the packets skipped,
    /// a late or repeated one expects nothing more.
    pub fn observe(&self, seq: u16) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        let ahead = if last == NONE {
            1
        } else {
            i64::from(seq.wrapping_sub(last as u16) as i16)
        };
        if ahead > 0 {
            self.expected.fetch_add(ahead as u64, Ordering::Relaxed);
            self.last.store(u32::from(seq), Ordering::Relaxed);
        }
    }

    /// Whether any packet has come.
    pub fn started(&self) -> bool {
        self.last.load(Ordering::Relaxed) != NONE
    }

    /// (expected, received) so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.expected.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

/// The share lost of `expected` packets when `received` came (repeats count once at most).
pub fn loss(expected: u64, received: u64) -> Option<f64> {
    (expected > 0).then(|| expected.saturating_sub(received) as f64 / expected as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_loss_and_late_or_repeated_packets_are_not() {
        let s = SeqLoss::default();
        assert!(!s.started());
        for seq in [65_530u16, 65_531, 65_534, 65_535, 0, 3, 2, 3] {
            s.observe(seq);
        }
        // 65530..=3 expects 10; 8 came (2 of them late or repeated).
        let (expected, received) = s.totals();
        assert_eq!((expected, received), (10, 8));
        assert_eq!(loss(expected, received), Some(0.2));
        assert!(s.started());
        assert_eq!(loss(0, 0), None);
        assert_eq!(loss(5, 7), Some(0.0), "repeats never make a gain");
    }

    #[test]
    fn each_look_compares_with_its_own_last_one() {
        let first = UplinkSample {
            packets_in: 100,
            expected: 100,
            received: 100,
        };
        let later = UplinkSample {
            packets_in: 190,
            expected: 200,
            received: 190,
        };
        assert_eq!(later.since(&first), (false, Some(0.1)));
        assert_eq!(later.since(&later), (true, None), "nothing came");
        assert_eq!(later.since(&UplinkSample::default()), (false, Some(0.05)));
        let repeats = UplinkSample {
            packets_in: 230,
            expected: 210,
            received: 230,
        };
        assert_eq!(repeats.since(&later), (false, Some(0.0)), "repeats never make a gain");
    }

    #[test]
    fn steady_packets_have_no_jitter_and_uneven_ones_do() {
        // 90 kHz video, a frame every 33 ms (timestamps wrapping): on time, or every other
        // frame 60 ms late.
        let steady = Jitter::default();
        let uneven = Jitter::default();
        for i in 0..200u32 {
            let ts = i.wrapping_mul(3000).wrapping_add(u32::MAX - 10_000);
            let on_time = 1_000_000 + u64::from(i) * 100_000 / 3;
            steady.observe(ts, on_time, 90_000);
            uneven.observe(ts, on_time + if i % 2 == 1 { 60_000 } else { 0 }, 90_000);
        }
        assert!(steady.ms(90_000) < 1.0, "{}", steady.ms(90_000));
        // Every spacing is 60 ms off: the estimate settles at 60 ms.
        assert!((55.0..=61.0).contains(&uneven.ms(90_000)), "{}", uneven.ms(90_000));
        assert_eq!(Quality::of_jitter(uneven.ms(90_000)), Quality::Good);
        assert_eq!(Quality::of_jitter(5.0), Quality::Excellent);
        assert_eq!(Quality::of_jitter(150.0), Quality::Poor);
    }

    #[test]
    fn a_receiver_report_gives_the_round_trip() {
        // Sent at 100.5 s (middle bits), held 0.25 s by the receiver, back at 101 s: 250 ms.
        let (sent, held, now) = ((100 << 16) | 0x8000, 0x4000, 101 << 16);
        assert_eq!(rtt_ms(now, sent, held), Some(250.0));
        assert_eq!(rtt_ms(now, 0, 0), None, "no sender report yet");
        assert_eq!(rtt_ms(sent, now, 0), None, "negative");
        assert_eq!(Quality::of_rtt(250.0), Quality::Excellent);
        assert_eq!(Quality::of_rtt(500.0), Quality::Good);
        assert_eq!(Quality::of_rtt(900.0), Quality::Poor);
        let a = ntp_middle_now();
        assert!(rtt_ms(ntp_middle_now(), a, 0).is_some_and(|ms| ms < 1_000.0));
    }

    #[test]
    fn loss_grades_the_link() {
        assert_eq!(Quality::of_loss(0.0), Quality::Excellent);
        assert_eq!(Quality::of_loss(0.05), Quality::Good);
        assert_eq!(Quality::of_loss(0.3), Quality::Poor);
        assert!(Quality::Lost < Quality::Poor && Quality::Poor < Quality::Good && Quality::Good < Quality::Excellent);
    }
}
