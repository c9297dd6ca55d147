//! The server's own smaller layer of a video track, for viewers capped below every layer its
//! publisher sends (a single-layer 720p publish and a viewer held to VGA): one of the
//! publisher's layers is decoded, scaled down and encoded again, and the result is forwarded
//! as one more layer ([`SCALED`]), which legs choose and switch to like a simulcast layer.
//! The codec work is not the engine's: the server installs it at start ([`install_scalers`]).
//! Each scaled layer runs on a thread of its own, reading a tap of its source layer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rtc::rtp;

use super::fanout::Fanout;
use super::layers::SCALED;

/// What a scaled layer is made as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleSpec {
    /// The track's codec (`video/H264`, `video/VP8`); the scaled layer is encoded the same.
    pub mime: String,
    /// The picture size to encode (even sides).
    pub width: u32,
    pub height: u32,
    /// The encoder's target bitrate.
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

/// A running scaled layer; it stops when dropped (or when its track ends).
pub struct ScaledLayer {
    /// What it makes.
    pub spec: ScaleSpec,
    /// The publisher's layer it is made from.
    pub source: u8,
    stop: Arc<AtomicBool>,
}

impl ScaledLayer {
    /// Starts making `fanout`'s scaled layer from its layer `source`. `None` when no scaler is
    /// installed, it does not take the codec, or there is no media runtime to send from.
    pub fn start(fanout: &Arc<Fanout>, source: u8, spec: ScaleSpec) -> Option<ScaledLayer> {
        let factory = SCALERS.get()?;
        let mut scaler = factory(&spec)?;
        let runtime = crate::media::runtime_handle()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tap = fanout.tap_layer(source, TAP_CAPACITY);
        fanout.open_scaled();
        let (fanout2, stopped) = (fanout.clone(), stop.clone());
        let spawned = std::thread::Builder::new().name("scaled-layer".into()).spawn(move || {
            // Legs are written from this thread, within the media runtime's context.
            let _entered = runtime.enter();
            let fanout = fanout2;
            while !stopped.load(Ordering::Relaxed) {
                let pkt = match runtime.block_on(tokio::time::timeout(STOP_POLL, tap.recv())) {
                    Ok(Some(pkt)) => pkt,
                    Ok(None) => break,
                    Err(_) => continue,
                };
                let out = scaler.push(&pkt, fanout.take_scaled_keyframe_request());
                if !out.is_empty() && !stopped.load(Ordering::Relaxed) {
                    fanout.forward_scaled(out);
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(track = %fanout.info.id, "scaled layer not started: {e}");
            fanout.close_scaled();
            return None;
        }
        tracing::info!(track = %fanout.info.id, source, ?spec, "scaled layer started");
        fanout.metrics.scaled_layers.inc();
        Some(ScaledLayer { spec, source, stop })
    }

    /// Stops it: `fanout`'s scaled layer is gone at once (the thread ends within
    /// [`STOP_POLL`]).
    pub fn stop(self, fanout: &Fanout) {
        self.stop.store(true, Ordering::Relaxed);
        fanout.close_scaled();
        fanout.metrics.scaled_layers.dec();
        tracing::info!(track = %fanout.info.id, "scaled layer stopped");
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
