//! The server's own smaller layer of a video track, for viewers capped below every layer its
//! publisher sends (a single-layer 720p publish and a viewer held to VGA): one of the
//! publisher's layers is decoded, scaled down and encoded again, and the result is forwarded
//! as one more layer ([`SCALED`]), which legs choose and switch to like a simulcast layer.
//! The same machinery re-encodes a track into a companion track in another codec
//! ([`ScaledLayer::start_into`]: an H.265 camera's H.264 for viewers without H.265).
//! The codec work is not the engine's: the server installs it at start ([`install_scalers`]).
//! Each runs on a thread of its own, reading a tap of its source layer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rtc::rtp;

use super::fanout::Fanout;
use super::layers::SCALED;

/// What a scaled layer (or a companion track) is made from and as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleSpec {
    /// The source's codec (`video/H264`, `video/VP8`, `video/H265`).
    pub mime: String,
    /// The codec to encode: the source's for a scaled layer; a companion's own.
    pub out_mime: String,
    /// The picture size to encode (even sides); 0 x 0: the source's, within 1280x720.
    pub width: u32,
    pub height: u32,
    /// The encoder's target bitrate; 0: [`default_kbps`] of the size.
    pub kbps: u32,
}

/// Turns a source layer's RTP packets into the scaled layer's.
pub trait ScaleVideo: Send {
    /// Takes one packet of the source layer (in order); returns the scaled layer's packets
    /// now complete (a whole frame's, its marker set; empty most of the time). With
    /// `keyframe`, the next picture encoded is a keyframe.
    fn push(&mut self, pkt: &rtp::Packet, keyframe: bool) -> Vec<rtp::Packet>;
}

/// Makes a [`ScaleVideo`] for a spec, or `None` for a codec it does not take.
pub type ScalerFactory = fn(&ScaleSpec) -> Option<Box<dyn ScaleVideo>>;

static SCALERS: OnceLock<ScalerFactory> = OnceLock::new();

/// Installs how this process scales video (the server does so at start; without it, a viewer
/// capped below every layer gets the lowest as it is). The first call wins.
pub fn install_scalers(factory: ScalerFactory) {
    let _ = SCALERS.set(factory);
}

/// Re-encodes allowed at once ([`set_limit`]); unlimited until set.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Re-encodes running.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Sets how many re-encodes may run at once in this process (the server's
/// `rtc.max_reencodes`); 0 allows none.
pub fn set_limit(n: usize) {
    LIMIT.store(n, Ordering::Relaxed);
}

/// Takes a re-encode slot, if one is free.
fn reserve() -> bool {
    RUNNING
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < LIMIT.load(Ordering::Relaxed)).then_some(n + 1)
        })
        .is_ok()
}

fn release() {
    RUNNING.fetch_sub(1, Ordering::AcqRel);
}

/// Why a re-encode did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No scaler is installed, it does not take the codecs, or no thread could be made: not
    /// worth trying again.
    Unable,
    /// As many re-encodes run as allowed (`rtc.max_reencodes`): try again later.
    Busy,
}

/// A bitrate that suits a `w`x`h` picture at 30 fps (about 0.08 bit per pixel), 150 kbps to
/// 4 Mbps.
pub fn default_kbps(w: u32, h: u32) -> u32 {
    let kbps = u64::from(w) * u64::from(h) * 30 * 8 / 100 / 1000;
    kbps.clamp(150, 4000) as u32
}

/// How long the thread waits for a packet before it looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(500);
/// Packets of the source layer that may wait for the thread (a few frames of 1080p).
const TAP_CAPACITY: usize = 512;

/// Where a re-encode's frames go.
enum Output {
    /// The source track's own scaled layer.
    Layer,
    /// A companion track (its first layer).
    Track(Arc<Fanout>),
}

/// A running scaled layer or companion re-encode. [`Self::stop`] it; its thread also ends
/// when its source track does.
pub struct ScaledLayer {
    /// What it makes.
    pub spec: ScaleSpec,
    /// The publisher's layer it is made from.
    pub source: u8,
    stop: Arc<AtomicBool>,
    /// Into a companion track (not the source's scaled layer).
    companion: Option<Arc<Fanout>>,
}

impl ScaledLayer {
    /// Starts making `fanout`'s scaled layer from its layer `source`. Refused when no scaler
    /// is installed, it does not take the codec, there is no media runtime to send from
    /// ([`Refused::Unable`]), or no slot is free ([`Refused::Busy`]).
    pub fn start(fanout: &Arc<Fanout>, source: u8, spec: ScaleSpec) -> Result<ScaledLayer, Refused> {
        let started = Self::spawn(fanout, source, spec, Output::Layer)?;
        fanout.open_scaled();
        fanout.metrics.scaled_layers.inc();
        Ok(started)
    }

    /// Starts re-encoding `from`'s first layer into the companion track `into`, which a local
    /// source's owner publishes; legs' keyframe requests on `into` reach the encoder.
    pub fn start_into(from: &Arc<Fanout>, spec: ScaleSpec, into: Arc<Fanout>) -> Result<ScaledLayer, Refused> {
        let metrics = into.metrics.clone();
        let started = Self::spawn(from, 0, spec, Output::Track(into))?;
        metrics.reencoded_tracks.inc();
        Ok(started)
    }

    /// Starts the thread, within the [`set_limit`] slots.
    fn spawn(fanout: &Arc<Fanout>, source: u8, spec: ScaleSpec, output: Output) -> Result<ScaledLayer, Refused> {
        if !reserve() {
            return Err(Refused::Busy);
        }
        let made = SCALERS
            .get()
            .and_then(|factory| factory(&spec))
            .zip(crate::media::runtime_handle());
        let Some((mut scaler, runtime)) = made else {
            release();
            return Err(Refused::Unable);
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut tap = fanout.tap_layer(source, TAP_CAPACITY);
        let companion = match &output {
            Output::Layer => None,
            Output::Track(t) => Some(t.clone()),
        };
        let (fanout2, stopped) = (fanout.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("video-reencode".into())
            .spawn(move || {
                // Legs are written from this thread, within the media runtime's context.
                let _entered = runtime.enter();
                let fanout = fanout2;
                while !stopped.load(Ordering::Relaxed) {
                    let pkt = match runtime.block_on(tokio::time::timeout(STOP_POLL, tap.recv())) {
                        Ok(Some(pkt)) => pkt,
                        Ok(None) => break,
                        Err(_) => continue,
                    };
                    let keyframe = match &output {
                        Output::Layer => fanout.take_scaled_keyframe_request(),
                        Output::Track(t) => t.take_keyframe_request(),
                    };
                    // A panic in the codec work ends this re-encode only: its layer goes, so
                    // its viewers move back to the publisher's.
                    let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scaler.push(&pkt, keyframe)));
                    let Ok(out) = pushed else {
                        tracing::error!(track = %fanout.info.id, "the video re-encode panicked; it stops");
                        match &output {
                            Output::Layer => fanout.close_scaled(),
                            Output::Track(t) => t.forget_keyframes(),
                        }
                        break;
                    };
                    if out.is_empty() || stopped.load(Ordering::Relaxed) {
                        continue;
                    }
                    match &output {
                        Output::Layer => fanout.forward_scaled(out),
                        Output::Track(t) => t.forward_frame(out),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(track = %fanout.info.id, "video re-encode not started: {e}");
            release();
            return Err(Refused::Unable);
        }
        let into = companion.as_ref().map(|c| c.info.id.clone());
        tracing::info!(track = %fanout.info.id, source, ?spec, ?into, "video re-encode started");
        Ok(ScaledLayer {
            spec,
            source,
            stop,
            companion,
        })
    }

    /// Stops it: `fanout`'s scaled layer is gone at once, or the companion track's cached
    /// picture (the thread ends within [`STOP_POLL`]).
    pub fn stop(self, fanout: &Fanout) {
        self.stop.store(true, Ordering::Relaxed);
        release();
        match &self.companion {
            None => {
                fanout.close_scaled();
                fanout.metrics.scaled_layers.dec();
            }
            Some(companion) => {
                companion.forget_keyframes();
                companion.metrics.reencoded_tracks.dec();
            }
        }
        tracing::info!(track = %fanout.info.id, "video re-encode stopped");
    }
}

/// The layer index legs use for the scaled layer.
pub const SCALED_LAYER: u8 = SCALED as u8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_bitrates_follow_the_picture_size() {
        assert_eq!(default_kbps(640, 360), 552);
        assert_eq!(default_kbps(1280, 720), 2211);
        assert_eq!(default_kbps(160, 90), 150);
        assert_eq!(default_kbps(3840, 2160), 4000);
    }
}
