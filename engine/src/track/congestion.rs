//! A subscriber's congestion cap: the bitrate its leg may use, from what its client tells us
//! about the leg: receiver reports (`fraction lost`) and REMB, when it sends one.
//!
//! The loss rule follows the loss-based half of Google Congestion Control: above 10 % loss the
//! cap becomes what the leg is sent times (1 − loss / 2), so the layer choice moves down. A
//! REMB that falls below what the leg is sent (the client's delay-based estimator saw its queue
//! grow) caps it at that REMB. A REMB that rises or holds is no congestion: a client estimates
//! from what it receives, so after a switch down its REMB stays near the lower layer's rate and
//! must not keep the leg there; and for [`REMB_SETTLE`] after the cap changes, a falling REMB
//! is not trusted (the switch itself moves it). Under 2 % loss (or a REMB that does not fall) the cap is lifted
//! one layer at a time, once the leg has been clean for [`CLEAN_FOR`] since the last change, and
//! removed above the top layer. The SFU cannot probe a rate between its layers, so it steps to
//! the next layer's bitrate and falls back at once if that brings loss.
//!
//! Chromium 156 sends us receiver reports always, and REMB only once its estimate has fallen.

use std::time::{Duration, Instant};

/// Loss above which the cap comes down.
const HIGH_LOSS: f64 = 0.10;
/// Loss under which the cap may go up.
const LOW_LOSS: f64 = 0.02;
/// A REMB at most this share of the previous one is a fall.
const REMB_FALL: f64 = 0.95;
/// How long a leg must stay clean before its cap goes up one layer.
pub const CLEAN_FOR: Duration = Duration::from_secs(3);
/// How long after a change of the cap a falling REMB is not trusted: the client's estimate
/// lags a layer switch (the new layer's first keyframe looks like queueing to it).
pub const REMB_SETTLE: Duration = Duration::from_secs(5);

/// One leg's congestion cap.
#[derive(Clone, Debug, Default)]
pub struct CongestionCap {
    cap_kbps: Option<u32>,
    changed: Option<Instant>,
    last_remb: Option<u32>,
}

impl CongestionCap {
    /// The cap now, in kbps (`None`: no limit).
    pub fn kbps(&self) -> Option<u32> {
        self.cap_kbps
    }

    /// Applies one receiver report of `fraction_lost` (of 256, since the client's previous
    /// report) while the leg is sent `sending_kbps`; `up_kbps` is the bitrate of the next layer
    /// above what it is sent (`None` at the top). Returns the new cap.
    pub fn report(&mut self, fraction_lost: u8, sending_kbps: u32, up_kbps: Option<u32>, now: Instant) -> Option<u32> {
        let loss = f64::from(fraction_lost) / 256.0;
        if loss > HIGH_LOSS {
            if sending_kbps > 0 {
                self.lower((f64::from(sending_kbps) * (1.0 - loss / 2.0)) as u32, now);
            }
        } else if loss < LOW_LOSS {
            self.clean(up_kbps, now);
        }
        self.cap_kbps
    }

    /// Applies one REMB of `kbps` (the other arguments as for [`Self::report`]).
    pub fn remb(&mut self, kbps: u32, sending_kbps: u32, up_kbps: Option<u32>, now: Instant) -> Option<u32> {
        let fell = self
            .last_remb
            .is_some_and(|last| f64::from(kbps) <= f64::from(last) * REMB_FALL);
        self.last_remb = Some(kbps);
        let settled = self
            .changed
            .is_none_or(|t| now.saturating_duration_since(t) >= REMB_SETTLE);
        if fell && kbps < sending_kbps {
            if settled {
                self.lower(kbps, now);
            }
        } else {
            self.clean(up_kbps, now);
        }
        self.cap_kbps
    }

    fn lower(&mut self, kbps: u32, now: Instant) {
        self.cap_kbps = Some(self.cap_kbps.map_or(kbps, |c| c.min(kbps)));
        self.changed = Some(now);
    }

    /// A clean signal: after [`CLEAN_FOR`] without a change, up one layer (or no cap at the top).
    fn clean(&mut self, up_kbps: Option<u32>, now: Instant) {
        let Some(cap) = self.cap_kbps else { return };
        if self
            .changed
            .is_none_or(|t| now.saturating_duration_since(t) >= CLEAN_FOR)
        {
            // 5 % above the next layer, so its measured rate's wobble still fits.
            self.cap_kbps = up_kbps.map(|up| cap.max(up + up / 20));
            self.changed = Some(now);
        }
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
        assert_eq!(c.remb(300, 2500, None, t), None);
        assert_eq!(c.remb(600, 2500, None, t), None, "rising");
        // A fall, below what is sent: capped there.
        assert_eq!(c.remb(400, 2500, None, t), Some(400));
        // Low but rising (the client ramps up on the lower layer): not lowered, and after the
        // clean period up one layer.
        assert_eq!(c.remb(420, 300, Some(2500), t + Duration::from_secs(1)), Some(400));
        let t1 = t + CLEAN_FOR;
        assert_eq!(c.remb(450, 300, Some(2500), t1), Some(2625));
        // Right after the switch up, the client's REMB dips: not trusted yet...
        assert_eq!(c.remb(380, 2500, None, t1 + Duration::from_secs(1)), Some(2625));
        // ...and lifted at the top once clean.
        let t2 = t1 + REMB_SETTLE;
        assert_eq!(c.remb(2600, 2500, None, t2), None);
        // Settled, a fall below what is sent counts again.
        assert_eq!(c.remb(2000, 2500, None, t2 + REMB_SETTLE), Some(2000));
        // A fall that stays above what is sent is no congestion.
        let mut d = CongestionCap::default();
        assert_eq!(d.remb(3000, 2500, None, t), None);
        assert_eq!(d.remb(2800, 2500, None, t), None);
    }
}
