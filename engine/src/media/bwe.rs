//! [`SendSideBwe`]: a viewer connection's own bandwidth estimate. It numbers what the
//! connection sends with transport-wide sequence numbers, remembers when each packet left (a
//! ring of the last [`HISTORY`] packets), and reads the client's TWCC feedback with a delay
//! detector after libwebrtc's: packets are grouped into bursts, each burst's added delay is
//! accumulated and smoothed, and the slope of that over the last [`WINDOW`] bursts, scaled,
//! is compared with an adaptive threshold. While it shows the queue growing, the estimate is
//! cut to 85 % of what the client received (counted by the client's arrival times, in
//! [`RATE_BINS`] bins of the last half second: the rate that came through the link, not the
//! rate it was fed); while not, it climbs 8 % a second back towards its ceiling. It says when
//! the queue starts growing even if the estimate is already lower ([`Estimate::overusing`]):
//! a probe (`probe.rs`) fails on that. Loss is left to receiver reports (`track::congestion`).
//!
//! The `rtc` crate's `Gcc` (with its `TwccSender` and `CongestionControl` interceptors) was
//! tried first: its Kalman filter took about 10 s to notice a link at a third of the rate in
//! the e2e test, and the two interceptors cost about 40 % more server CPU at N = 200 viewers
//! against about 20–25 % for this one pass (bench/README.md). This runs inside
//! [`RtcpForward`](super::rtcp_forward::RtcpForward), which every packet passes anyway.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::convert_twcc;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

/// Packets remembered for matching feedback (4 KB): about 1 s of a 2 Mbit/s 720p stream with
/// audio, where clients send feedback every 50–100 ms.
const HISTORY: usize = 256;

/// The estimate starts here, so that it means "no congestion seen" until its first cut: the
/// SFU does not pace to it, it only moves a viewer down when it falls below what is sent.
const MAX_BPS: f64 = 100_000_000.0;
const MIN_BPS: f64 = 30_000.0;

/// Packets that left within this of a burst's first one belong to it.
const BURST: Duration = Duration::from_millis(5);
/// Bursts in the slope's window.
const WINDOW: usize = 20;
/// Smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// Scale of the slope before it is compared with the threshold.
const GAIN: f64 = 4.0;
/// The threshold's bounds, start and adaptation rates (per ms, up and down).
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const THRESHOLD_START: f64 = 12.5;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// How long the trend must stay over the threshold to count as overuse.
const OVERUSE_FOR: f64 = 10.0;
/// What a cut leaves of the acknowledged rate.
const CUT: f64 = 0.85;
/// Growth per second while the path is clear.
const CLIMB: f64 = 1.08;
/// The window over which the acknowledged rate is measured, in bins of [`RATE_BIN`]: a fixed
/// few bytes per connection, where a list of the acknowledged packets grew to kilobytes.
const RATE_BINS: usize = 10;
/// One bin's length.
const RATE_BIN: Duration = Duration::from_millis(50);

#[derive(Clone, Copy)]
struct Sent {
    /// The low 32 bits of the unwrapped transport-wide sequence number; 0: empty (numbering
    /// starts at 1).
    id: u32,
    size: u16,
    /// When it left, in µs since the estimator's `epoch`.
    at_us: u64,
}

/// A burst of packets that left together.
#[derive(Clone, Copy)]
struct Burst {
    first_departure: Instant,
    departure: Instant,
    /// On the client's clock, from its feedback's reference.
    arrival: Duration,
}

/// What [`SendSideBwe::on_feedback`] has to say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The connection's estimate, bit/s.
    pub target_bps: f64,
    /// The queue started growing with this feedback.
    pub overusing: bool,
}

/// Transport-wide numbering, send history and delay detector of one connection.
pub struct SendSideBwe {
    last_id: u64,
    sent: Vec<Sent>,
    current: Option<Burst>,
    previous: Option<Burst>,
    /// Client time of the first burst, for the slope's x axis.
    first_arrival: Option<Duration>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    /// (arrival ms, smoothed accumulated delay ms) of the last bursts.
    window: VecDeque<(f64, f64)>,
    deltas: usize,
    threshold: f64,
    last_threshold_update: Option<f64>,
    over_ms: f64,
    over_count: u32,
    previous_trend: f64,
    overusing: bool,
    /// Bytes that arrived per [`RATE_BIN`] of the client's clock: `acked[bin % RATE_BINS]`
    /// for the last [`RATE_BINS`] bins up to `acked_bin`, the latest arrival's.
    acked: [usize; RATE_BINS],
    acked_bin: u64,
    /// The latest arrival, on the client's clock.
    latest_arrival: Duration,
    /// The bin of the first arrival: the bins span no further back.
    first_acked_bin: Option<u64>,
    /// What send times count from.
    epoch: Instant,
    target: f64,
    last_update: Option<Instant>,
}

impl SendSideBwe {
    /// A fresh estimator; times count from `now`.
    pub fn new(now: Instant) -> Self {
        SendSideBwe {
            last_id: 0,
            sent: vec![
                Sent {
                    id: 0,
                    size: 0,
                    at_us: 0,
                };
                HISTORY
            ],
            current: None,
            previous: None,
            first_arrival: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            window: VecDeque::with_capacity(WINDOW),
            deltas: 0,
            threshold: THRESHOLD_START,
            last_threshold_update: None,
            over_ms: 0.0,
            over_count: 0,
            previous_trend: 0.0,
            overusing: false,
            acked: [0; RATE_BINS],
            acked_bin: 0,
            latest_arrival: Duration::ZERO,
            first_acked_bin: None,
            epoch: now,
            target: MAX_BPS,
            last_update: None,
        }
    }

    /// Records a packet of `size` bytes leaving at `now`; returns the transport-wide sequence
    /// number to put in its header extension.
    pub fn on_send(&mut self, size: usize, now: Instant) -> u16 {
        self.last_id += 1;
        let id = self.last_id;
        self.sent[(id % HISTORY as u64) as usize] = Sent {
            id: id as u32,
            size: u16::try_from(size).unwrap_or(u16::MAX),
            at_us: self.since_epoch(now).as_micros() as u64,
        };
        id as u16
    }

    /// Applies one TWCC feedback packet received at `now`; returns the estimate when its
    /// target changed or the queue started growing. Packets it names that are no longer (or
    /// never were) in the history are ignored, and each packet is counted once.
    pub fn on_feedback(&mut self, feedback: &TransportLayerCc, now: Instant) -> Option<Estimate> {
        let last = self.last_id;
        let was_overusing = self.overusing;
        let mut any = false;
        for ack in convert_twcc(feedback) {
            // The most recent id whose low 16 bits are this sequence number.
            let back = u64::from((last as u16).wrapping_sub(ack.sequence_number));
            let Some(id) = last.checked_sub(back).filter(|&id| id > 0) else {
                continue;
            };
            let slot = &mut self.sent[(id % HISTORY as u64) as usize];
            if slot.id != id as u32 {
                continue;
            }
            slot.id = 0;
            let departure = self.epoch + Duration::from_micros(slot.at_us);
            let size = usize::from(slot.size);
            if let (true, Some(arrival)) = (ack.arrived, ack.arrival) {
                any = true;
                self.count_acked(size, arrival);
                self.on_arrival(departure, arrival);
            }
        }
        if !any {
            return None;
        }
        let before = self.target;
        let elapsed = self
            .last_update
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64().min(1.0));
        self.last_update = Some(now);
        if self.overusing {
            let acked_bps = self.acked_bps();
            self.target = self.target.min(acked_bps * CUT).max(MIN_BPS);
        } else {
            self.target = (self.target * CLIMB.powf(elapsed)).min(MAX_BPS);
        }
        let began = self.overusing && !was_overusing;
        (self.target != before || began).then_some(Estimate {
            target_bps: self.target,
            overusing: began,
        })
    }

    fn since_epoch(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    /// Counts `bytes` that arrived at `arrival` (client clock) in its bin, moving the bins on
    /// (emptying those passed) when it is the latest; an arrival older than the bins is left
    /// out.
    fn count_acked(&mut self, bytes: usize, arrival: Duration) {
        let bin = (arrival.as_micros() / RATE_BIN.as_micros()) as u64;
        self.first_acked_bin = Some(self.first_acked_bin.map_or(bin, |first| first.min(bin)));
        if bin > self.acked_bin {
            for passed in (self.acked_bin + 1..=bin).take(RATE_BINS) {
                self.acked[(passed % RATE_BINS as u64) as usize] = 0;
            }
            self.acked_bin = bin;
        }
        self.latest_arrival = self.latest_arrival.max(arrival);
        if bin + (RATE_BINS as u64) > self.acked_bin {
            self.acked[(bin % RATE_BINS as u64) as usize] += bytes;
        }
    }

    /// The rate that arrived over the bins' span (the last [`RATE_BINS`] − 1 whole bins, or
    /// those since the first arrival, and the latest one up to the latest arrival), in bit/s.
    fn acked_bps(&self) -> f64 {
        let bytes: usize = self.acked.iter().sum();
        let bin_us = RATE_BIN.as_micros() as u64;
        let latest_us = self.latest_arrival.as_micros() as u64;
        let into_bin_us = latest_us.saturating_sub(self.acked_bin * bin_us).min(bin_us);
        let whole = self
            .acked_bin
            .saturating_sub(self.first_acked_bin.unwrap_or(0))
            .min(RATE_BINS as u64 - 1);
        let span_us = bin_us * whole + into_bin_us;
        bytes as f64 * 8.0 / (span_us.max(1_000) as f64 / 1e6)
    }

    /// One packet that arrived: grows the current burst or closes it.
    fn on_arrival(&mut self, departure: Instant, arrival: Duration) {
        match self.current.as_mut() {
            Some(b) if departure.saturating_duration_since(b.first_departure) <= BURST => {
                b.departure = b.departure.max(departure);
                b.arrival = b.arrival.max(arrival);
            }
            _ => {
                let closed = self.current.replace(Burst {
                    first_departure: departure,
                    departure,
                    arrival,
                });
                if let Some(closed) = closed {
                    if let Some(previous) = self.previous.replace(closed) {
                        let arrival_ms = (closed.arrival.as_secs_f64() - previous.arrival.as_secs_f64()) * 1e3;
                        let departure_ms = closed
                            .departure
                            .saturating_duration_since(previous.departure)
                            .as_secs_f64()
                            * 1e3;
                        self.on_delta(arrival_ms - departure_ms, arrival_ms, closed.arrival);
                    }
                }
            }
        }
    }

    /// One burst's added delay: the trend over the window, and overuse against the threshold.
    fn on_delta(&mut self, delta_ms: f64, interval_ms: f64, arrival: Duration) {
        let first = *self.first_arrival.get_or_insert(arrival);
        let x = arrival.saturating_sub(first).as_secs_f64() * 1e3;
        self.deltas += 1;
        self.accumulated_ms += delta_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back((x, self.smoothed_ms));
        if self.window.len() < WINDOW {
            return;
        }
        let n = self.window.len() as f64;
        let mean_x = self.window.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = self.window.iter().map(|p| p.1).sum::<f64>() / n;
        let (num, den) = self.window.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
            (num + (x - mean_x) * (y - mean_y), den + (x - mean_x) * (x - mean_x))
        });
        let slope = if den > 0.0 { num / den } else { 0.0 };
        let trend = (self.deltas.min(60) as f64) * slope * GAIN;
        if trend > self.threshold {
            self.over_ms += interval_ms.max(0.0);
            self.over_count += 1;
            if self.over_ms > OVERUSE_FOR && self.over_count > 1 && trend >= self.previous_trend {
                self.over_ms = 0.0;
                self.over_count = 0;
                self.overusing = true;
            }
        } else {
            self.over_ms = 0.0;
            self.over_count = 0;
            self.overusing = false;
        }
        self.previous_trend = trend;
        // The threshold follows the trend's magnitude (up slowly, down faster), but not spikes.
        let magnitude = trend.abs();
        if magnitude <= self.threshold + 15.0 {
            let k = if magnitude < self.threshold { K_DOWN } else { K_UP };
            let dt = self.last_threshold_update.map_or(0.0, |t| (x - t).clamp(0.0, 100.0));
            self.threshold =
                (self.threshold + k * (magnitude - self.threshold) * dt).clamp(THRESHOLD_MIN, THRESHOLD_MAX);
        }
        self.last_threshold_update = Some(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    };
    use std::time::Duration;

    /// Feedback saying packets `base..base + n` all arrived, the first `first_us` after the
    /// 64 ms tick `reference`, each next one `spacing_us` later.
    fn feedback(base: u16, n: u16, reference: u32, first_us: i64, spacing_us: i64, count: u8) -> TransportLayerCc {
        TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: base,
            packet_status_count: n,
            reference_time: reference,
            fb_pkt_count: count,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: n,
            })],
            recv_deltas: (0..n)
                .map(|k| RecvDelta {
                    type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                    delta: if k == 0 { first_us } else { spacing_us },
                })
                .collect(),
        }
    }

    /// Sends 200 batches of 8 packets of 1,200 bytes 8 ms apart (1.2 Mbit/s) and reports each
    /// batch as arriving `spacing_ms` apart; returns the first target change and how long
    /// after the first packet left it came.
    fn run(spacing_ms: u64) -> (Option<f64>, Duration) {
        let t0 = Instant::now();
        let mut bwe = SendSideBwe::new(t0);
        for batch in 0..200u64 {
            for i in 0..8u64 {
                let id = bwe.on_send(1200, t0 + Duration::from_millis((batch * 8 + i) * 8));
                assert_eq!(u64::from(id), batch * 8 + i + 1);
            }
            let arrival_ms = 20 + batch * 8 * spacing_ms;
            let reference = arrival_ms / 64;
            let first_us = ((arrival_ms - reference * 64) * 1000) as i64;
            let fb = feedback(
                (batch * 8 + 1) as u16,
                8,
                reference as u32,
                first_us,
                (spacing_ms * 1000) as i64,
                batch as u8,
            );
            // Feedback leaves the client as the batch's last packet arrives.
            let now = t0 + Duration::from_millis(arrival_ms + 7 * spacing_ms + 5);
            if let Some(e) = bwe.on_feedback(&fb, now) {
                assert!(e.overusing, "the first news is the queue growing");
                return (Some(e.target_bps), now - t0);
            }
        }
        (None, Duration::ZERO)
    }

    #[test]
    fn a_growing_queue_cuts_the_target_and_a_clear_path_does_not() {
        // Arriving as sent: no change from the ceiling.
        assert_eq!(run(8).0, None);
        // Arriving 12 ms apart (a link at two thirds of the rate), 16 ms (a half), 24 ms (a
        // third): the queue grows, and the target is cut below what is sent within a second
        // or so (20 bursts of slope at 8 ms), to about 85 % of what came through the link (by the
        // client's arrival times), not of what was sent into it.
        for spacing in [12, 16, 24] {
            let (cut, after) = run(spacing);
            let cut = cut.unwrap_or_else(|| panic!("a link at 8/{spacing} of the rate is noticed"));
            let link = 1_200_000.0 * 8.0 / spacing as f64;
            assert!(
                cut <= link * 0.9 && cut >= link * 0.75,
                "{spacing}: cut to {cut}, link {link}"
            );
            assert!(
                after < Duration::from_millis(1500),
                "{spacing}: noticed after {after:?}"
            );
        }
    }

    #[test]
    fn a_packet_is_reported_once() {
        let t0 = Instant::now();
        let mut b = SendSideBwe::new(t0);
        b.on_send(1200, t0);
        assert!(b.sent.iter().any(|s| s.id == 1));
        b.on_feedback(&feedback(1, 1, 0, 1000, 0, 0), t0);
        assert!(b.sent.iter().all(|s| s.id == 0), "forgotten once reported");
    }

    #[test]
    fn sequence_numbers_wrap_and_old_packets_are_forgotten() {
        let t0 = Instant::now();
        let mut b = SendSideBwe::new(t0);
        for _ in 0..70_000u32 {
            b.on_send(100, t0);
        }
        assert_eq!(b.on_send(100, t0), (70_001u32 % 65_536) as u16);
        // A number from long before the history: ignored, nothing reported.
        assert_eq!(b.on_feedback(&feedback(10, 1, 0, 1000, 0, 0), t0), None);
    }
}
