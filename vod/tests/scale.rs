//! The scaled layer's codec work: the 720p fixture's RTP, scaled to fit VGA, comes out as H.264
//! RTP of 640x360 pictures, a frame out for each frame in, and a keyframe when one is asked for.

mod common;

use engine::track::layers::keyframe_dimensions;
use engine::track::scaled::{ScaleSpec, ScaleVideo};
use engine::track::starts_keyframe;
use fanfare_vod::depack::Depacketizer;
use fanfare_vod::scale::Downscaler;
use rtc::rtp;

fn spec(mime: &str) -> ScaleSpec {
    ScaleSpec {
        mime: mime.into(),
        width: 640,
        height: 360,
        kbps: 500,
    }
}

#[test]
fn a_720p_layer_is_scaled_to_360p_frame_for_frame() {
    let aus = common::access_units_of(&common::fixture_720p());
    let frames = common::packetize(&aus, 100, 9000);
    let mut scaler = Downscaler::new(&spec("video/H264")).expect("scaler");
    let mut out: Vec<Vec<rtp::Packet>> = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let mut made = Vec::new();
        for pkt in frame {
            // Ask for a keyframe half way through (the fixture's own are every 30 frames).
            made.extend(scaler.push(pkt, i == 45 && pkt.header.marker));
        }
        if !made.is_empty() {
            out.push(made);
        }
    }
    assert!(
        out.len() + 2 >= frames.len(),
        "{} frames out of {}",
        out.len(),
        frames.len()
    );
    // Each output frame is whole: one marker, at its end; sequence numbers run on.
    let all: Vec<&rtp::Packet> = out.iter().flatten().collect();
    for w in all.windows(2) {
        assert_eq!(w[1].header.sequence_number, w[0].header.sequence_number.wrapping_add(1));
    }
    for f in &out {
        assert!(f.last().is_some_and(|p| p.header.marker));
        assert_eq!(f.iter().filter(|p| p.header.marker).count(), 1);
    }
    // It starts with a keyframe announcing 640x360, and timestamps follow the source's.
    let first = &out[0][0];
    assert!(starts_keyframe("video/H264", &first.payload));
    assert_eq!(keyframe_dimensions("video/H264", &first.payload), Some((640, 360)));
    assert_eq!(first.header.timestamp, 9000);
    let keyframes: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, f)| starts_keyframe("video/H264", &f[0].payload))
        .map(|(i, _)| i)
        .collect();
    // The request came with frame 45's last packet: that frame is encoded as a keyframe. The
    // source's own keyframes (every 30 frames) are not copied.
    assert_eq!(keyframes, [0, 45], "a keyframe when asked for");
    // What a viewer would depacketize: whole 640x360 frames.
    let mut depack = Depacketizer::new("video/H264", 90_000, 0, "").expect("depacketizer");
    let decoded: usize = all.iter().map(|p| depack.push(p).len()).sum();
    assert!(decoded + 2 >= out.len(), "{decoded}");
}

#[test]
fn a_codec_it_cannot_scale_is_refused() {
    assert!(Downscaler::new(&spec("video/H265")).is_err());
    assert!(fanfare_vod::scale::scaler_for(&spec("video/AV1")).is_none());
}
