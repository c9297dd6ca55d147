//! [`SendSideBwe`]: a viewer connection's own bandwidth estimate. It numbers what the
//! connection sends with transport-wide sequence numbers, remembers when each packet left (a
//! ring of the last [`HISTORY`] packets), and feeds the client's TWCC feedback to `Gcc` (the
//! `rtc` crate's Google Congestion Control: delay gradient and loss).
//!
//! The crate's own `TwccSender` and `CongestionControl` interceptors do the same job, but as
//! two more links of the chain every outgoing packet walks, with a hash map per packet: at
//! N = 200 viewers they cost about 40 % more server CPU, this about 20 % (bench/README.md).
//! This runs inside [`RtcpForward`](super::rtcp_forward::RtcpForward), which every packet
//! passes anyway.

use std::time::Instant;

use rtc::interceptor::{convert_twcc, BandwidthEstimator, Gcc, PacketReport};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

/// Packets remembered for matching feedback (8 KB): about 1 s of a 2 Mbit/s 720p stream with
/// audio, where clients send feedback every 50–100 ms.
const HISTORY: usize = 256;

/// The estimate starts here, so that it means "no congestion seen" until its first cut: the
/// SFU does not pace to it, it only moves a viewer down when it falls below what is sent.
const MAX_BPS: f64 = 100_000_000.0;
const MIN_BPS: f64 = 30_000.0;

#[derive(Clone, Copy)]
struct Sent {
    /// Unwrapped transport-wide sequence number; 0: empty (numbering starts at 1).
    id: u64,
    at: Instant,
    ssrc: u32,
    size: u16,
}

/// Transport-wide numbering, send history and estimator of one connection.
pub struct SendSideBwe {
    last_id: u64,
    sent: Vec<Sent>,
    gcc: Gcc,
    target: f64,
}

impl SendSideBwe {
    /// A fresh estimator; `now` fills the empty history.
    pub fn new(now: Instant) -> Self {
        SendSideBwe {
            last_id: 0,
            sent: vec![
                Sent {
                    id: 0,
                    at: now,
                    ssrc: 0,
                    size: 0,
                };
                HISTORY
            ],
            gcc: Gcc::new(MAX_BPS, MIN_BPS, MAX_BPS),
            target: MAX_BPS,
        }
    }

    /// Records a packet of `size` bytes on stream `ssrc` leaving at `now`; returns the
    /// transport-wide sequence number to put in its header extension.
    pub fn on_send(&mut self, ssrc: u32, size: usize, now: Instant) -> u16 {
        self.last_id += 1;
        let id = self.last_id;
        self.sent[(id % HISTORY as u64) as usize] = Sent {
            id,
            at: now,
            ssrc,
            size: u16::try_from(size).unwrap_or(u16::MAX),
        };
        id as u16
    }

    /// Applies one TWCC feedback packet received at `now`; returns the new target (bit/s)
    /// when it changed. Packets it names that are no longer (or never were) in the history
    /// are ignored, and each packet is reported once.
    pub fn on_feedback(&mut self, feedback: &TransportLayerCc, now: Instant) -> Option<f64> {
        let last = self.last_id;
        let reports: Vec<PacketReport> = convert_twcc(feedback)
            .into_iter()
            .filter_map(|ack| {
                // The most recent id whose low 16 bits are this sequence number.
                let back = u64::from((last as u16).wrapping_sub(ack.sequence_number));
                let id = last.checked_sub(back).filter(|&id| id > 0)?;
                let slot = &mut self.sent[(id % HISTORY as u64) as usize];
                if slot.id != id {
                    return None;
                }
                slot.id = 0;
                Some(PacketReport {
                    ssrc: slot.ssrc,
                    id,
                    rtp_sequence_number: 0,
                    is_twcc: true,
                    twcc_sequence_number: ack.sequence_number,
                    size: usize::from(slot.size),
                    arrived: ack.arrived,
                    departure: slot.at,
                    arrival: ack.arrival,
                    ecn: ack.ecn,
                })
            })
            .collect();
        if reports.is_empty() {
            return None;
        }
        self.gcc.on_reports(now, &reports);
        let target = self.gcc.target_bitrate();
        if target == self.target {
            return None;
        }
        self.target = target;
        Some(target)
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
    /// batch as arriving `spacing_ms` apart; returns the first target change.
    fn run(spacing_ms: u64) -> Option<f64> {
        let t0 = Instant::now();
        let mut bwe = SendSideBwe::new(t0);
        let mut first = None;
        for batch in 0..200u64 {
            for i in 0..8u64 {
                let id = bwe.on_send(7, 1200, t0 + Duration::from_millis((batch * 8 + i) * 8));
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
            let now = t0 + Duration::from_millis(arrival_ms + 8 * spacing_ms + 5);
            if let Some(t) = bwe.on_feedback(&fb, now) {
                first.get_or_insert(t);
            }
        }
        first
    }

    #[test]
    fn a_growing_queue_cuts_the_target_and_a_clear_path_does_not() {
        // Arriving as sent: no change from the ceiling.
        assert_eq!(run(8), None);
        // Arriving 24 ms apart (a 0.4 Mbit/s link): the queue grows, the target is cut. (This
        // `Gcc` compares each group's added delay with a 6–12.5 ms threshold, so it notices a
        // link well below the rate sent, about 70 % or less at 30 frames/s, not a slight one.)
        let cut = run(24).expect("the queue is noticed");
        assert!(cut < 1_200_000.0, "cut below what is sent: {cut}");
    }

    #[test]
    fn a_packet_is_reported_once() {
        let t0 = Instant::now();
        let mut b = SendSideBwe::new(t0);
        b.on_send(1, 1200, t0);
        assert!(b.sent.iter().any(|s| s.id == 1));
        b.on_feedback(&feedback(1, 1, 0, 1000, 0, 0), t0);
        assert!(b.sent.iter().all(|s| s.id == 0), "forgotten once reported");
    }

    #[test]
    fn sequence_numbers_wrap_and_old_packets_are_forgotten() {
        let t0 = Instant::now();
        let mut b = SendSideBwe::new(t0);
        for _ in 0..70_000u32 {
            b.on_send(1, 100, t0);
        }
        assert_eq!(b.on_send(1, 100, t0), (70_001u32 % 65_536) as u16);
        // A number from long before the history: ignored, nothing reported.
        assert_eq!(b.on_feedback(&feedback(10, 1, 0, 1000, 0, 0), t0), None);
    }
}
