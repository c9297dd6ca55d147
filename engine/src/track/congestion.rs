//! A subscriber's congestion cap: the bitrate its leg may use, from what is known about the
//! viewer's link: its client's receiver reports (`fraction lost`), the client's REMB when it
//! sends one, and the server's own send-side estimate from the client's TWCC feedback
//! (`media/bwe.rs`: cut while the client's queue grows).
//!
//! The loss rule follows the loss-based half of Google Congestion Control: above 10 % loss the
//! cap becomes what the leg is sent times (1 − loss / 2), so the layer choice moves down. An
//! estimate (REMB or send-side; each leg's share of its connection's) that falls (a REMB by 5 %,
//! the send-side one by any cut) below what the leg is sent caps it at that estimate. An estimate that rises or holds is no congestion:
//! after a switch down, a client's REMB stays near the lower layer's rate, and the send-side
//! estimate climbs back slowly from its last cut, so neither must keep the leg there; and for
//! [`ESTIMATE_SETTLE`] after the cap changes, a falling estimate is not trusted (the switch itself
//! moves it: the new layer's first keyframe looks like queueing). Under 2 % loss (or an
//! estimate that does not fall) the cap is lifted one layer at a time, once the leg has been
//! clean for [`CLEAN_FOR`] since the last change, and removed above the top layer.
//!
//! Before a climb that raises the leg's bitrate, a leg that can be probed (its connection
//! estimates its bandwidth and the client negotiated RTX) is first sent the difference as
//! padding for [`PROBE_FOR`] (`media/probe.rs`), its picture unchanged. The send-side
//! estimator seeing the queue grow (or its estimate cut), a falling REMB or 2 % loss while
//! probing fails the probe: the leg stays and the padding stops. A probe that runs its time
//! clean climbs. Without probing (and if a climb fails anyway) the leg steps to the next
//! layer's bitrate and falls back at once if that brings loss or a queue. Each climb or probe
//! that fails doubles the wait for the next (up to 24 s), so a viewer on a link between two
//! layers stays on the lower.
//!
//! Chromium 156 sends receiver reports always and TWCC feedback once our packets carry
//! transport-wide sequence numbers (viewer connections number them); REMB only when it has no
//! TWCC to send and its own estimate has fallen.

use std::time::{Duration, Instant};

/// Loss above which the cap comes down.
const HIGH_LOSS: f64 = 0.10;
/// Loss under which the cap may go up.
const LOW_LOSS: f64 = 0.02;
/// A REMB at most this share of the previous one is a fall.
const ESTIMATE_FALL: f64 = 0.95;
/// A send-side estimate under this share of the previous one is a cut (its received-rate
/// measure wobbles by less).
const SEND_SIDE_CUT: f64 = 0.99;
/// How long a leg must stay clean before its cap goes up one layer, at first. A climb that is
/// cut back within [`CLIMB_TRIAL`] doubles the wait for the next one, up to [`CLEAN_FOR_MAX`]
/// (so a viewer on a link between two layers does not flip between them every few seconds);
/// a climb that holds for [`CLIMB_TRIAL`] resets it.
pub const CLEAN_FOR: Duration = Duration::from_secs(3);
/// The longest wait before a climb.
pub const CLEAN_FOR_MAX: Duration = Duration::from_secs(24);
/// A cut this soon after a climb means the climb failed.
pub const CLIMB_TRIAL: Duration = Duration::from_secs(10);
/// How long after a change of the cap a falling estimate is not trusted: estimates lag a
/// layer switch (the new layer's first keyframe looks like queueing).
pub const ESTIMATE_SETTLE: Duration = Duration::from_secs(5);

/// How long a probe pads before its leg climbs: long enough for a queue it builds to show in
/// the send-side estimate.
pub const PROBE_FOR: Duration = Duration::from_secs(2);

/// Where a bandwidth estimate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EstimateSource {
    /// The client's REMB.
    Remb,
    /// The server's estimate from the client's TWCC feedback.
    SendSide,
}

/// One leg's congestion cap.
#[derive(Clone, Debug, Default)]
pub struct CongestionCap {
    cap_kbps: Option<u32>,
    changed: Option<Instant>,
    last_remb: Option<u32>,
    last_send_side: Option<u32>,
    /// The wait before the next climb (`None`: [`CLEAN_FOR`]).
    clean_for: Option<Duration>,
    /// When the cap last went up.
    climbed: Option<Instant>,
    /// Whether a climb that raises the bitrate is probed first.
    probes: bool,
    /// The probe running, if any.
    probe: Option<Probe>,
    /// The outcome of the last probe that ended (`true`: passed), until taken.
    probe_result: Option<bool>,
}

/// A probe before a climb.
#[derive(Clone, Copy, Debug)]
struct Probe {
    since: Instant,
    /// The cap the leg climbs to if it passes.
    cap: u32,
    /// The padding's rate: the climb's cap less what the leg was sent.
    padding_kbps: u32,
}

impl CongestionCap {
    /// A cap whose climbs that raise the bitrate are probed first (see the module doc).
    pub fn probing() -> Self {
        CongestionCap {
            probes: true,
            ..Default::default()
        }
    }

    /// The padding a running probe wants, in kbps (0: none runs).
    pub fn probe_kbps(&self) -> u32 {
        self.probe.map_or(0, |p| p.padding_kbps)
    }

    /// The leg cannot be probed: the probe running (if any) climbs at once, and later climbs
    /// are not probed.
    pub fn probe_refused(&mut self, now: Instant) {
        self.probes = false;
        if let Some(p) = self.probe.take() {
            self.climb(Some(p.cap), now);
        }
    }

    /// Drops the probe running, if any, without an outcome (its leg was paused): the leg stays
    /// where it is.
    pub fn abandon_probe(&mut self) {
        self.probe = None;
    }

    /// The outcome of the last probe that ended (`true`: passed), once.
    pub fn take_probe_result(&mut self) -> Option<bool> {
        self.probe_result.take()
    }

    /// The send-side estimator saw the connection's queue start growing: a probe running
    /// fails (whether or not its estimate falls: it may already be below the probe's rate).
    pub fn overuse(&mut self, now: Instant) {
        if self.probe.is_some() {
            self.probe_failed(now);
        }
    }

    /// Ends a probe that has run [`PROBE_FOR`] clean: the leg climbs.
    pub fn tick(&mut self, now: Instant) -> Option<u32> {
        if let Some(p) = self
            .probe
            .filter(|p| now.saturating_duration_since(p.since) >= PROBE_FOR)
        {
            self.probe = None;
            self.probe_result = Some(true);
            self.climb(Some(p.cap), now);
        }
        self.cap_kbps
    }

    /// The cap now, in kbps (`None`: no limit).
    pub fn kbps(&self) -> Option<u32> {
        self.cap_kbps
    }

    /// Applies one receiver report of `fraction_lost` (of 256, since the client's previous
    /// report) while the leg is sent `sending_kbps`; `up_kbps` is the bitrate of the next layer
    /// above what it is sent (`None` at the top). Returns the new cap.
    pub fn report(&mut self, fraction_lost: u8, sending_kbps: u32, up_kbps: Option<u32>, now: Instant) -> Option<u32> {
        let loss = f64::from(fraction_lost) / 256.0;
        if self.probe.is_some() && loss >= LOW_LOSS {
            self.probe_failed(now);
        } else if loss > HIGH_LOSS {
            if sending_kbps > 0 {
                self.lower((f64::from(sending_kbps) * (1.0 - loss / 2.0)) as u32, now);
            }
        } else if loss < LOW_LOSS {
            self.clean(sending_kbps, up_kbps, now);
        }
        self.cap_kbps
    }

    /// Applies one estimate of `kbps` from `source` (the other arguments as for
    /// [`Self::report`]). A fall is judged against the previous estimate from the same source.
    pub fn estimate(
        &mut self,
        source: EstimateSource,
        kbps: u32,
        sending_kbps: u32,
        up_kbps: Option<u32>,
        now: Instant,
    ) -> Option<u32> {
        let last = match source {
            EstimateSource::Remb => &mut self.last_remb,
            EstimateSource::SendSide => &mut self.last_send_side,
        };
        let previous = last.replace(kbps);
        let fell = match (source, previous) {
            (EstimateSource::Remb, p) => p.is_some_and(|p| f64::from(kbps) <= f64::from(p) * ESTIMATE_FALL),
            // It starts at its ceiling and is only delivered when it changes: the first value
            // is already a cut.
            (EstimateSource::SendSide, None) => true,
            (EstimateSource::SendSide, Some(p)) => f64::from(kbps) < f64::from(p) * SEND_SIDE_CUT,
        };
        if self.probe.is_some() && fell {
            self.probe_failed(now);
            return self.cap_kbps;
        }
        let congested = fell && kbps < sending_kbps;
        let clean = match (source, previous) {
            // A REMB that does not fall (or stays above what is sent) is a clean signal.
            (EstimateSource::Remb, _) => !congested,
            // It is only cut while the client's queue grows, and climbs slowly from there
            // while the path is clear: any rise is clean, and a target held below what is sent
            // is neither.
            (EstimateSource::SendSide, None) => kbps >= sending_kbps,
            (EstimateSource::SendSide, Some(p)) => !congested && (kbps > p || kbps >= sending_kbps),
        };
        let settled = self
            .changed
            .is_none_or(|t| now.saturating_duration_since(t) >= ESTIMATE_SETTLE);
        if congested {
            if settled {
                self.lower(kbps, now);
            }
        } else if clean {
            self.clean(sending_kbps, up_kbps, now);
        }
        self.cap_kbps
    }

    /// The wait before the next climb.
    pub fn clean_for(&self) -> Duration {
        self.clean_for.unwrap_or(CLEAN_FOR)
    }

    fn lower(&mut self, kbps: u32, now: Instant) {
        self.cap_kbps = Some(self.cap_kbps.map_or(kbps, |c| c.min(kbps)));
        self.changed = Some(now);
        match self.climbed.take() {
            Some(t) if now.saturating_duration_since(t) < CLIMB_TRIAL => {
                self.clean_for = Some((self.clean_for() * 2).min(CLEAN_FOR_MAX));
            }
            Some(_) => self.clean_for = None,
            None => {}
        }
    }

    /// A probe failed: the leg stays where it is, and waits twice as long (from now) before
    /// it tries again. The estimate is left to settle, as after a change: the queue the
    /// padding built drains after it.
    fn probe_failed(&mut self, now: Instant) {
        self.probe = None;
        self.probe_result = Some(false);
        self.changed = Some(now);
        self.clean_for = Some((self.clean_for() * 2).min(CLEAN_FOR_MAX));
    }

    /// A clean signal: after [`Self::clean_for`] without a change, up one layer (or no cap at
    /// the top), through a probe where the climb raises what the leg is sent (`sending_kbps`).
    /// A probe that has run its time climbs.
    fn clean(&mut self, sending_kbps: u32, up_kbps: Option<u32>, now: Instant) {
        if self
            .climbed
            .is_some_and(|t| now.saturating_duration_since(t) >= CLIMB_TRIAL)
        {
            self.clean_for = None;
        }
        if self.probe.is_some() {
            self.tick(now);
            return;
        }
        let Some(cap) = self.cap_kbps else { return };
        let wait = self.clean_for();
        if self.changed.is_none_or(|t| now.saturating_duration_since(t) >= wait) {
            // 5 % above the next layer, so its measured rate's wobble still fits.
            let next = up_kbps.map(|up| cap.max(up + up / 20));
            match next {
                Some(next) if self.probes && next > sending_kbps => {
                    self.probe = Some(Probe {
                        since: now,
                        cap: next,
                        padding_kbps: next - sending_kbps,
                    });
                }
                _ => self.climb(next, now),
            }
        }
    }

    /// Raises the cap to `cap` (`None`: no cap).
    fn climb(&mut self, cap: Option<u32>, now: Instant) {
        self.cap_kbps = cap;
        self.changed = Some(now);
        self.climbed = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cap_until_loss() {
        let mut c = CongestionCap::default();
        let t = Instant::now();
        assert_eq!(c.report(0, 1500, None, t), None);
        assert_eq!(c.report(20, 1500, None, t), None, "8 % holds");
    }

    #[test]
    fn heavy_loss_caps_below_what_is_sent() {
        let mut c = CongestionCap::default();
        let t = Instant::now();
        // 50 % loss on a 1,500 kbps layer: 1,500 × 0.75.
        assert_eq!(c.report(128, 1500, None, t), Some(1125));
        // More loss on the lower layer it moved to: lower again, never up.
        assert_eq!(c.report(128, 500, Some(1500), t), Some(375));
        assert_eq!(c.report(64, 1500, None, t), Some(375));
        // Nothing measured yet: no change.
        let mut d = CongestionCap::default();
        assert_eq!(d.report(255, 0, None, t), None);
    }

    #[test]
    fn a_clean_leg_climbs_one_layer_per_clean_period_then_is_uncapped() {
        let mut c = CongestionCap::default();
        let t0 = Instant::now();
        // 78 % loss on the 500 kbps layer: 304, so the leg drops to the 150 kbps one.
        assert_eq!(c.report(200, 500, Some(1500), t0), Some(304));
        let capped = c.kbps();
        // Clean but too soon: holds.
        assert_eq!(c.report(0, 150, Some(500), t0 + Duration::from_secs(1)), capped);
        // Clean for the period: up to the next layer (plus 5 %).
        let t1 = t0 + CLEAN_FOR;
        assert_eq!(c.report(0, 150, Some(500), t1), Some(525));
        // Another clean period on the middle layer: to the top one.
        let t2 = t1 + CLEAN_FOR;
        assert_eq!(c.report(0, 500, Some(1500), t2), Some(1575));
        // At the top, a clean period lifts the cap.
        assert_eq!(c.report(0, 1500, None, t2 + CLEAN_FOR), None);
    }

    #[test]
    fn a_climb_that_fails_doubles_the_wait_for_the_next_and_one_that_holds_resets_it() {
        let mut c = CongestionCap::default();
        let mut t = Instant::now();
        let s = Duration::from_secs;
        // Loss on the 500 kbps layer: down to the 150 one.
        assert_eq!(c.report(128, 500, Some(1500), t), Some(375));
        let mut waits = Vec::new();
        for _ in 0..5 {
            // Clean: up after the wait...
            let wait = c.clean_for();
            waits.push(wait.as_secs());
            assert_eq!(c.report(0, 150, Some(500), t + wait - s(1)), Some(375), "not before");
            t += wait;
            assert_eq!(c.report(0, 150, Some(500), t), Some(525));
            // ...and loss again 2 s later: back down.
            t += s(2);
            assert_eq!(c.report(128, 500, Some(1500), t), Some(375));
        }
        assert_eq!(waits, [3, 6, 12, 24, 24]);
        // A climb that holds for the trial period resets the wait.
        t += c.clean_for();
        assert_eq!(c.report(0, 150, Some(500), t), Some(525));
        t += CLIMB_TRIAL;
        assert_eq!(c.report(0, 500, Some(1500), t), Some(1575));
        assert_eq!(c.clean_for(), CLEAN_FOR);
    }

    #[test]
    fn moderate_loss_holds_the_cap() {
        let mut c = CongestionCap::default();
        let t = Instant::now();
        c.report(128, 1000, None, t);
        assert_eq!(c.report(13, 750, Some(1000), t + CLEAN_FOR * 2), Some(750));
    }

    #[test]
    fn a_falling_remb_below_the_rate_caps_a_low_or_rising_one_does_not() {
        let mut c = CongestionCap::default();
        let t = Instant::now();
        // A first REMB is no fall, however low: a client starts low and ramps up.
        assert_eq!(c.estimate(EstimateSource::Remb, 300, 2500, None, t), None);
        assert_eq!(c.estimate(EstimateSource::Remb, 600, 2500, None, t), None, "rising");
        // A fall, below what is sent: capped there.
        assert_eq!(c.estimate(EstimateSource::Remb, 400, 2500, None, t), Some(400));
        // Low but rising (the client ramps up on the lower layer): not lowered, and after the
        // clean period up one layer.
        assert_eq!(
            c.estimate(EstimateSource::Remb, 420, 300, Some(2500), t + Duration::from_secs(1)),
            Some(400)
        );
        let t1 = t + CLEAN_FOR;
        assert_eq!(c.estimate(EstimateSource::Remb, 450, 300, Some(2500), t1), Some(2625));
        // Right after the switch up, the client's REMB dips: not trusted yet...
        assert_eq!(
            c.estimate(EstimateSource::Remb, 380, 2500, None, t1 + Duration::from_secs(1)),
            Some(2625)
        );
        // ...and lifted at the top once clean.
        let t2 = t1 + ESTIMATE_SETTLE;
        assert_eq!(c.estimate(EstimateSource::Remb, 2600, 2500, None, t2), None);
        // Settled, a fall below what is sent counts again.
        assert_eq!(
            c.estimate(EstimateSource::Remb, 2000, 2500, None, t2 + ESTIMATE_SETTLE),
            Some(2000)
        );
        // A fall that stays above what is sent is no congestion.
        let mut d = CongestionCap::default();
        assert_eq!(d.estimate(EstimateSource::Remb, 3000, 2500, None, t), None);
        assert_eq!(d.estimate(EstimateSource::Remb, 2800, 2500, None, t), None);
    }

    #[test]
    fn a_fall_is_judged_per_source() {
        let mut c = CongestionCap::default();
        let t = Instant::now();
        // The send-side estimate starts at its ceiling; a REMB far below it is no fall of it.
        assert_eq!(c.estimate(EstimateSource::SendSide, 100_000, 2500, None, t), None);
        // Its first value is a cut from the ceiling.
        let mut first = CongestionCap::default();
        assert_eq!(
            first.estimate(EstimateSource::SendSide, 2000, 2500, None, t),
            Some(2000)
        );
        assert_eq!(c.estimate(EstimateSource::Remb, 3000, 2500, None, t), None);
        assert_eq!(c.estimate(EstimateSource::SendSide, 99_000, 2500, None, t), None, "1 %");
        // The queue grew: cut to 85 % of what arrives.
        assert_eq!(c.estimate(EstimateSource::SendSide, 2125, 2500, None, t), Some(2125));
        // Its slow climb afterwards is no fall, and holds the cap until the clean period.
        let t1 = t + Duration::from_millis(200);
        assert_eq!(
            c.estimate(EstimateSource::SendSide, 2140, 500, Some(2500), t1),
            Some(2125)
        );
        let t2 = t + CLEAN_FOR;
        assert_eq!(
            c.estimate(EstimateSource::SendSide, 2300, 500, Some(2500), t2),
            Some(2625)
        );
        // Back on the top layer, the target held below what is sent: not clean, the cap stays.
        let t3 = t2 + CLEAN_FOR;
        assert_eq!(c.estimate(EstimateSource::SendSide, 2300, 2500, None, t3), Some(2625));
        // A cut right after the switch is not trusted; one once settled is.
        let t4 = t2 + Duration::from_secs(1);
        assert_eq!(c.estimate(EstimateSource::SendSide, 2200, 2500, None, t4), Some(2625));
        let t5 = t2 + ESTIMATE_SETTLE;
        assert_eq!(c.estimate(EstimateSource::SendSide, 2150, 2500, None, t5), Some(2150));
    }

    #[test]
    fn a_probing_leg_pads_before_it_climbs_and_stays_when_the_probe_fails() {
        let mut c = CongestionCap::probing();
        let t = Instant::now();
        let s = Duration::from_secs;
        // Loss on the 500 kbps layer: down to the 150 one.
        assert_eq!(c.report(128, 500, Some(1500), t), Some(375));
        // Clean for the period: a probe for the climb to 525 starts, padding the difference;
        // the cap holds meanwhile.
        let t1 = t + CLEAN_FOR;
        assert_eq!(c.report(0, 150, Some(500), t1), Some(375));
        assert_eq!(c.probe_kbps(), 375);
        assert_eq!(c.report(0, 150, Some(500), t1 + s(1)), Some(375), "still probing");
        // The send-side estimate is cut while it pads: failed, no climb, no lowering either
        // (the padding built the queue), and twice the wait from now.
        assert_eq!(
            c.estimate(EstimateSource::SendSide, 140, 150, Some(500), t1 + s(1)),
            Some(375)
        );
        assert_eq!(c.probe_kbps(), 0);
        assert_eq!(c.take_probe_result(), Some(false));
        assert_eq!(c.take_probe_result(), None, "taken once");
        assert_eq!(c.clean_for(), CLEAN_FOR * 2);
        let t2 = t1 + s(1) + CLEAN_FOR * 2;
        assert_eq!(c.report(0, 150, Some(500), t2 - s(1)), Some(375), "not before");
        assert_eq!(c.report(0, 150, Some(500), t2), Some(375));
        assert_eq!(c.probe_kbps(), 375);
        // Loss while probing fails it too.
        assert_eq!(c.report(8, 150, Some(500), t2 + s(1)), Some(375));
        assert_eq!(c.take_probe_result(), Some(false));
        // So does the queue starting to grow, though the estimate does not fall.
        let t25 = t2 + s(1) + c.clean_for();
        assert_eq!(c.report(0, 150, Some(500), t25), Some(375));
        assert!(c.probe_kbps() > 0);
        c.overuse(t25 + s(1));
        assert_eq!(c.take_probe_result(), Some(false));
        assert_eq!(c.kbps(), Some(375));
        c.overuse(t25 + s(1));
        assert_eq!(c.take_probe_result(), None, "no probe, nothing to fail");
        // A probe that runs its time clean climbs, at the tick.
        let t3 = t25 + s(1) + c.clean_for();
        assert_eq!(c.report(0, 150, Some(500), t3), Some(375));
        assert_eq!(c.tick(t3 + PROBE_FOR - Duration::from_millis(1)), Some(375));
        assert_eq!(c.tick(t3 + PROBE_FOR), Some(525));
        assert_eq!(c.take_probe_result(), Some(true));
        assert_eq!(c.probe_kbps(), 0);
    }

    #[test]
    fn a_climb_that_sends_no_more_or_a_leg_that_cannot_pad_is_not_probed() {
        let t = Instant::now();
        // The next layer by size costs less than the one sent: nothing to probe.
        let mut c = CongestionCap::probing();
        assert_eq!(c.report(128, 500, Some(1500), t), Some(375));
        assert_eq!(c.report(0, 400, Some(300), t + CLEAN_FOR), Some(375));
        assert_eq!(c.probe_kbps(), 0);
        // A leg whose connection cannot pad climbs at once, and is not probed again.
        let mut d = CongestionCap::probing();
        assert_eq!(d.report(128, 500, Some(1500), t), Some(375));
        assert_eq!(d.report(0, 150, Some(500), t + CLEAN_FOR), Some(375));
        assert!(d.probe_kbps() > 0);
        d.probe_refused(t + CLEAN_FOR);
        assert_eq!(d.kbps(), Some(525));
        assert_eq!(d.report(0, 500, Some(1500), t + CLEAN_FOR * 2), Some(1575));
        assert_eq!(d.take_probe_result(), None);
    }
}
