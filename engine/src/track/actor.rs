//! The `Track` actor: the control side of one published track. It owns the subscribers' caps,
//! measures each simulcast layer's bitrate, chooses each leg's layer with
//! [`super::layers::choose_layer`] and asks the publisher for the keyframe a switch waits for.
//! It also runs each leg's congestion cap, and the padding probe before a climb; and, for a
//! publisher that can be told (a realtime-socket publish), which of its simulcast layers anyone
//! receives, so its client may pause the others (dynacast). A leg whose viewer hides the video
//! (a 0 x 0 view) is paused, and resumes at a keyframe when it is shown again. When a viewer's
//! `max_resolution` or bitrate cap fits none of the publisher's layers, or the source's frames
//! come out of display order (a camera's B-frames), it starts the track's scaled layer
//! (`track/scaled.rs`, within `rtc.max_reencodes`), and stops it once no viewer has needed it
//! for a while.
//! Packets never pass through it: the reader task hands them to the legs directly
//! ([`super::Fanout`]), and legs follow the target layer this actor sets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};

use super::congestion::{CongestionCap, EstimateSource, PROBE_FOR};
use super::fanout::{Downtrack, Fanout, NO_LAYER};
use super::layers::{fits, fitted_size, ranked, LegCaps, MAX_LAYERS, SLOTS};
use super::scaled::{default_kbps, Refused, ScaleSpec, ScaledLayer, SCALED_LAYER};
use super::MediaKind;
use crate::model::Resolution;

/// How often layer bitrates are measured and choices revisited.
const TICK: Duration = Duration::from_millis(500);
/// A leg's padding stops by itself this long after a probe should have ended, should the
/// actor not stop it.
const PROBE_SLACK: Duration = Duration::from_secs(1);
/// How long a layer nobody receives is still asked for before the publisher is told it may
/// pause it (a viewer moving between layers does not make it flap).
const PAUSE_AFTER: Duration = Duration::from_secs(3);
/// How long the scaled layer runs on after no viewer needs it (a cap lifted and lowered again
/// does not restart it).
const UNSCALE_AFTER: Duration = Duration::from_secs(5);

/// Told the RIDs of the simulcast layers anyone receives, each time that set changes.
pub type LayersListener = Box<dyn Fn(Vec<String>) + Send>;

/// The publisher's side of dynacast: what it was last told, and since when each layer has
/// had no receiver.
struct Dynacast {
    tell: LayersListener,
    /// The layers last reported wanted (`None`: nothing reported; every layer is sent).
    told: Option<[bool; MAX_LAYERS]>,
    unwanted_since: [Option<Instant>; MAX_LAYERS],
}

/// A leg was attached (sent by [`Fanout::attach_capped`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribed {
    pub leg: Arc<Downtrack>,
    pub caps: LegCaps,
}

/// A leg was detached.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribed {
    pub leg: u64,
}

/// A leg's caps changed (member media settings, a manual layer pick).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetLegCaps {
    pub leg: u64,
    pub caps: LegCaps,
}

/// A bandwidth estimate for a leg: its client's REMB or the server's send-side estimate (the
/// leg's share of its connection's, either way).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetEstimate {
    pub leg: u64,
    pub kbps: u32,
    pub source: EstimateSource,
    /// The send-side estimator saw the queue start growing.
    pub overusing: bool,
}

/// A subscriber's receiver report on its leg: `fraction_lost` of 256 packets since its last.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LossReport {
    pub leg: u64,
    pub fraction_lost: u8,
}

/// A layer appeared or its picture size changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LayersChanged;

/// The track ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrackEnded;

struct LegControl {
    leg: Arc<Downtrack>,
    /// Its caps; `estimate_kbps` is `congestion`'s cap.
    caps: LegCaps,
    /// The cap from its receiver reports, REMB and the send-side estimate.
    congestion: CongestionCap,
    /// The padding rate the leg was last told to send (kbps; 0: none).
    padding_kbps: u32,
}

impl LegControl {
    fn new(leg: Arc<Downtrack>, caps: LegCaps) -> LegControl {
        LegControl {
            leg,
            caps,
            congestion: CongestionCap::probing(),
            padding_kbps: 0,
        }
    }
}

/// One published track's control actor.
pub struct Track {
    fanout: Arc<Fanout>,
    legs: HashMap<u64, LegControl>,
    /// Per layer: bytes seen at the last tick.
    last_bytes: [u64; SLOTS],
    /// Per layer: smoothed kbps.
    kbps: [f64; SLOTS],
    last_tick: Instant,
    dynacast: Option<Dynacast>,
    /// The scaled layer, while it runs.
    scaled: Option<ScaledLayer>,
    /// Since when no viewer needs the running scaled layer.
    unscaled_since: Option<Instant>,
    /// A scaled layer that could not be started (no scaler for the codec): not tried again.
    scale_refused: Option<ScaleSpec>,
}

impl Track {
    /// Starts the actor for `fanout` and hands it the track's control. With `layers`, a
    /// simulcast track's publisher is told which layers anyone receives (dynacast).
    /// A track that has one already keeps it.
    pub fn launch(fanout: Arc<Fanout>, layers: Option<LayersListener>) -> actix::Addr<Track> {
        if let Some(addr) = fanout.control() {
            return addr;
        }
        let addr = Track {
            fanout: fanout.clone(),
            legs: HashMap::new(),
            last_bytes: [0; SLOTS],
            kbps: [0.0; SLOTS],
            last_tick: Instant::now(),
            dynacast: layers.map(|tell| Dynacast {
                tell,
                told: None,
                unwanted_since: [None; MAX_LAYERS],
            }),
            scaled: None,
            unscaled_since: None,
            scale_refused: None,
        }
        .start();
        fanout.set_control(addr.clone());
        addr
    }

    /// Samples each layer's byte counter into a smoothed bitrate.
    fn measure(&mut self) {
        let elapsed = self.last_tick.elapsed().as_secs_f64().max(0.001);
        self.last_tick = Instant::now();
        let paused = self.dynacast.as_ref().and_then(|d| d.told);
        for (i, layer) in self.fanout.layer_slots().iter().enumerate() {
            let bytes = layer.bytes.load(std::sync::atomic::Ordering::Relaxed);
            let rate = (bytes - self.last_bytes[i]) as f64 * 8.0 / 1000.0 / elapsed;
            self.last_bytes[i] = bytes;
            // A layer its publisher paused keeps the rate it had: it is what resuming costs.
            if paused.is_some_and(|wanted| wanted.get(i) == Some(&false)) {
                continue;
            }
            // About a 3 s average: keyframes come and go without moving choices.
            self.kbps[i] = if self.kbps[i] == 0.0 {
                rate
            } else {
                self.kbps[i] * 0.85 + rate * 0.15
            };
            layer.set_kbps(self.kbps[i].round() as u32);
        }
    }

    /// Sets every leg's target layer; a leg not on its target asks that layer for a keyframe.
    fn choose_all(&mut self) {
        let ids: Vec<u64> = self.legs.keys().copied().collect();
        for id in ids {
            self.choose_for(id);
        }
    }

    /// Dynacast: tells the publisher, when it changes, which layers anyone receives: each leg's
    /// current and target layer and the layer each tap (recorder, live HLS) follows; the lowest
    /// when there is none of those, so the track stays alive. A layer is reported unwanted only
    /// after [`PAUSE_AFTER`] without a receiver; one a receiver needs, at once.
    fn report_layers(&mut self) {
        let Some(d) = self.dynacast.as_mut() else { return };
        let (stats, rids) = self.fanout.layer_stats();
        // The publisher's layers only (the scaled one is the server's).
        let stats = &stats[..MAX_LAYERS];
        if stats.iter().filter(|l| l.active).count() < 2 {
            return;
        }
        let order = ranked(stats);
        let mut needed = [false; MAX_LAYERS];
        let legs = self.legs.values().flat_map(|c| [c.leg.target(), c.leg.current()]);
        for layer in legs.chain(self.fanout.tapped_layers()) {
            if let Some(n) = needed.get_mut(usize::from(layer)) {
                *n = true;
            }
        }
        if !needed.iter().any(|&n| n) {
            if let Some(&lowest) = order.first() {
                needed[lowest] = true;
            }
        }
        let now = Instant::now();
        let mut wanted = [false; MAX_LAYERS];
        for (i, w) in wanted.iter_mut().enumerate() {
            if !stats[i].active {
                continue;
            }
            if needed[i] {
                d.unwanted_since[i] = None;
                *w = true;
            } else {
                let since = *d.unwanted_since[i].get_or_insert(now);
                *w = now.saturating_duration_since(since) < PAUSE_AFTER;
            }
        }
        let before = d.told.unwrap_or_else(|| std::array::from_fn(|i| stats[i].active));
        if wanted == before {
            return;
        }
        d.told = Some(wanted);
        let names: Vec<String> = (0..MAX_LAYERS)
            .filter(|&i| wanted[i])
            .filter_map(|i| rids[i].clone())
            .collect();
        tracing::info!(track = %self.fanout.info.id, rids = ?names, "layers wanted from the publisher");
        (d.tell)(names);
    }

    /// Sets leg `id`'s target layer (a simulcast leg's choice, or a pause while its viewer hides
    /// the video); a leg not on its target asks that layer for a keyframe.
    fn choose_for(&mut self, id: u64) {
        let Some(c) = self.legs.get_mut(&id) else { return };
        let hidden = c.caps.view == Some((0, 0)) && self.fanout.pausable();
        if hidden {
            if !c.leg.paused() {
                tracing::debug!(track = %self.fanout.info.id, leg = id, "paused: its viewer hides the video");
                c.leg.pause();
                c.congestion.abandon_probe();
                if c.padding_kbps > 0 {
                    c.leg.probe(0, Duration::ZERO);
                    c.padding_kbps = 0;
                }
                self.fanout.metrics.legs_paused.inc();
            }
            return;
        }
        let resuming = c.leg.paused();
        // One layer: nothing to choose, unless the leg is still on a scaled layer now gone.
        if self.fanout.layer_count() < 2 && !resuming && c.leg.target() != SCALED_LAYER {
            return;
        }
        let target = self.fanout.choose(&c.caps);
        if target == NO_LAYER {
            return;
        }
        if resuming {
            tracing::debug!(track = %self.fanout.info.id, leg = id, "resumed: its viewer shows the video");
            self.fanout.metrics.legs_paused.dec();
        }
        if c.leg.target() != target {
            tracing::debug!(track = %self.fanout.info.id, leg = c.leg.id, from = c.leg.target(), to = target, "layer target changed");
            c.leg.set_target(target);
        }
        if c.leg.current() != target {
            self.fanout.request_keyframe_of_soon(target);
        }
    }
}

impl Track {
    /// The scaled layer the legs need now, with the publisher's layer to make it from: when
    /// some unpaused leg's `max_resolution` fits none of the publisher's layers (all of whose
    /// sizes are known), or its `max_bitrate_kbps` is under every layer's measured bitrate (by
    /// a quarter, or at all while the scaled layer runs), or for every unpaused leg when the
    /// source is reordered (B-frames): the smallest layer fitted within the smallest such
    /// picture cap (else its own size; within 720p for a reordered source), made smaller while
    /// it would need more than twice the bitrate cap ([`default_kbps`]), at the tightest such
    /// bitrate cap or one for its size.
    fn scaled_wanted(&self) -> Option<(u8, ScaleSpec)> {
        if self.fanout.info.kind != MediaKind::Video {
            return None;
        }
        let (stats, _) = self.fanout.layer_stats();
        let real = &stats[..MAX_LAYERS];
        let order = ranked(real);
        let &source = order.first()?;
        if order.iter().any(|&i| real[i].width == 0) {
            return None;
        }
        // A reordered source (B-frames) is re-encoded in display order for every viewer.
        let reordered = self.fanout.reordered();
        let margin = if self.scaled.is_some() { 1.0 } else { 1.25 };
        let lowest_kbps = order.iter().map(|&i| real[i].kbps).min().unwrap_or(0);
        let too_big = |r: Resolution| !order.iter().any(|&i| fits(r, real[i].width, real[i].height));
        let too_fast = |k: u32| lowest_kbps > 0 && f64::from(lowest_kbps) > f64::from(k) * margin;
        let over: Vec<&LegCaps> = self
            .legs
            .values()
            .filter(|c| !c.leg.paused())
            .map(|c| &c.caps)
            .filter(|caps| reordered || caps.max_resolution.is_some_and(too_big) || caps.max_kbps.is_some_and(too_fast))
            .collect();
        if over.is_empty() {
            return None;
        }
        // A re-encode for reordering alone is held within 720p (its cost).
        let picture_cap = over
            .iter()
            .filter_map(|caps| caps.max_resolution)
            .filter(|&r| too_big(r))
            .chain(reordered.then_some(Resolution::Hd))
            .min_by_key(|r| {
                let (w, h) = r.dimensions();
                u64::from(w) * u64::from(h)
            });
        let (mut width, mut height) = (real[source].width & !1, real[source].height & !1);
        if let Some(cap) = picture_cap {
            (width, height) = fitted_size(cap, width, height);
        }
        let kbps = over
            .iter()
            .filter_map(|caps| caps.max_kbps)
            .fold(default_kbps(width, height), u32::min);
        while default_kbps(width, height) > kbps.saturating_mul(2) && height > 180 {
            (width, height) = ((width / 2).max(2) & !1, (height / 2).max(2) & !1);
        }
        let mime = self.fanout.info.codec.mime_type.clone();
        let spec = ScaleSpec {
            out_mime: mime.clone(),
            mime,
            width,
            height,
            kbps,
        };
        Some((source as u8, spec))
    }

    /// Starts, changes or (after [`UNSCALE_AFTER`] unneeded) stops the scaled layer.
    fn tend_scaled(&mut self) {
        let wanted = self.scaled_wanted();
        let running = self.scaled.as_ref().map(|l| (l.source, &l.spec));
        match wanted {
            Some((source, spec)) if running == Some((source, &spec)) => self.unscaled_since = None,
            Some((source, spec)) => {
                if self.scale_refused.as_ref() == Some(&spec) {
                    return;
                }
                self.stop_scaled();
                match ScaledLayer::start(&self.fanout, source, spec.clone()) {
                    Ok(layer) => self.scaled = Some(layer),
                    // Tried again at the next tick, when a slot may be free.
                    Err(Refused::Busy) => {}
                    Err(Refused::Unable) => self.scale_refused = Some(spec),
                }
            }
            None if self.scaled.is_some() => {
                let since = *self.unscaled_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNSCALE_AFTER {
                    self.stop_scaled();
                }
            }
            None => {}
        }
    }

    fn stop_scaled(&mut self) {
        if let Some(layer) = self.scaled.take() {
            layer.stop(&self.fanout);
        }
        self.unscaled_since = None;
    }
}

impl Actor for Track {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        ctx.run_interval(TICK, |act, _| {
            act.measure();
            act.tend_scaled();
            act.choose_all();
            act.end_probes();
            act.report_layers();
        });
    }
}

impl Handler<Subscribed> for Track {
    type Result = ();

    fn handle(&mut self, msg: Subscribed, _ctx: &mut Context<Self>) {
        let id = msg.leg.id;
        self.legs.insert(id, LegControl::new(msg.leg, msg.caps));
        self.tend_scaled();
        self.choose_for(id);
        // A paused layer this viewer needs is asked for at once.
        self.report_layers();
    }
}

impl Handler<Unsubscribed> for Track {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribed, _ctx: &mut Context<Self>) {
        if let Some(c) = self.legs.remove(&msg.leg) {
            self.forget(&c);
        }
    }
}

impl Handler<SetLegCaps> for Track {
    type Result = ();

    fn handle(&mut self, msg: SetLegCaps, _ctx: &mut Context<Self>) {
        if let Some(c) = self.legs.get_mut(&msg.leg) {
            let estimate = c.caps.estimate_kbps;
            c.caps = LegCaps {
                estimate_kbps: estimate,
                ..msg.caps
            };
        }
        self.tend_scaled();
        self.choose_for(msg.leg);
    }
}

impl Track {
    /// Applies one piece of a leg's feedback to its congestion cap (`apply` gets the cap, what
    /// the leg is sent and the next larger layer's bitrate, in kbps), then [`Self::settle`]s.
    fn congestion(&mut self, leg: u64, what: &str, apply: impl FnOnce(&mut CongestionCap, u32, Option<u32>)) {
        let Some(c) = self.legs.get_mut(&leg) else {
            return;
        };
        // A paused leg is sent nothing: its feedback says nothing of the layer it would get.
        if c.leg.paused() {
            return;
        }
        let (layers, _) = self.fanout.layer_stats();
        let layer = match c.leg.current() {
            NO_LAYER => c.leg.target(),
            l => l,
        };
        let sending = layers.get(usize::from(layer)).map_or(0, |l| l.kbps);
        // The next layer up by picture size; none above the top one (the cap can go).
        let order = ranked(&layers);
        let up = order
            .iter()
            .position(|&i| i == usize::from(layer))
            .and_then(|p| order.get(p + 1))
            .map(|&i| layers[i].kbps);
        let before = c.congestion.kbps();
        apply(&mut c.congestion, sending, up);
        self.settle(leg, what, before);
    }

    /// Ends the probes that have run their time (the legs climb).
    fn end_probes(&mut self) {
        let now = Instant::now();
        let probing: Vec<u64> = self
            .legs
            .iter()
            .filter(|(_, c)| c.congestion.probe_kbps() > 0)
            .map(|(&id, _)| id)
            .collect();
        for leg in probing {
            let Some(c) = self.legs.get_mut(&leg) else { continue };
            let before = c.congestion.kbps();
            c.congestion.tick(now);
            self.settle(leg, "probe", before);
        }
    }

    /// After `leg`'s congestion cap was given `what` (the cap was `before`): starts or stops
    /// its padding as the cap's probe says, counts a probe that ended, and re-chooses its layer
    /// if the cap changed.
    fn settle(&mut self, leg: u64, what: &str, before: Option<u32>) {
        let Some(c) = self.legs.get_mut(&leg) else {
            return;
        };
        let track = &self.fanout.info.id;
        let want = c.congestion.probe_kbps();
        if want != c.padding_kbps {
            let padded = c.leg.probe(want, PROBE_FOR + PROBE_SLACK);
            if want > 0 && !padded {
                // No RTX or no estimate on this connection: climb without probing.
                c.congestion.probe_refused(Instant::now());
            } else if want > 0 {
                tracing::info!(%track, leg, padding_kbps = want, "{what}: probing before a climb");
            }
            c.padding_kbps = if padded { want } else { 0 };
        }
        if let Some(passed) = c.congestion.take_probe_result() {
            let result = if passed { "passed" } else { "failed" };
            tracing::info!(%track, leg, "{what}: probe {result}");
            self.fanout.metrics.congestion_probes.with_label_values(&[result]).inc();
        }
        let after = c.congestion.kbps();
        if before == after {
            return;
        }
        tracing::info!(%track, leg, ?before, ?after, "{what}: congestion cap changed");
        let down = match (before, after) {
            (Some(b), Some(a)) => a < b,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        self.fanout
            .metrics
            .congestion_caps
            .with_label_values(&[if down { "down" } else { "up" }])
            .inc();
        c.caps.estimate_kbps = after;
        self.choose_for(leg);
    }

    /// Undoes what a departing leg holds: its padding and its place in the paused count.
    fn forget(&self, c: &LegControl) {
        if c.padding_kbps > 0 {
            c.leg.probe(0, Duration::ZERO);
        }
        if c.leg.paused() {
            self.fanout.metrics.legs_paused.dec();
        }
    }
}

impl Handler<SetEstimate> for Track {
    type Result = ();

    fn handle(&mut self, msg: SetEstimate, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        let (what, label) = match msg.source {
            EstimateSource::Remb => ("REMB", "remb"),
            EstimateSource::SendSide => ("send-side estimate", "send_side"),
        };
        self.fanout
            .metrics
            .bandwidth_estimates
            .with_label_values(&[label])
            .inc();
        self.congestion(msg.leg, what, |cap, sending, up| {
            if msg.overusing {
                cap.overuse(now);
            }
            cap.estimate(msg.source, msg.kbps, sending, up, now);
        });
    }
}

impl Handler<LossReport> for Track {
    type Result = ();

    fn handle(&mut self, msg: LossReport, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.congestion(msg.leg, "receiver report", |cap, sending, up| {
            cap.report(msg.fraction_lost, sending, up, now);
        });
    }
}

impl Handler<LayersChanged> for Track {
    type Result = ();

    fn handle(&mut self, _msg: LayersChanged, _ctx: &mut Context<Self>) {
        self.choose_all();
    }
}

impl Handler<TrackEnded> for Track {
    type Result = ();

    fn handle(&mut self, _msg: TrackEnded, ctx: &mut Context<Self>) {
        for c in std::mem::take(&mut self.legs).values() {
            self.forget(c);
        }
        self.stop_scaled();
        ctx.stop();
    }
}
