//! The scaled layer's codec work: the 720p fixture's RTP, scaled to fit VGA, comes out as H.264
//! RTP of 640x360 pictures, a frame out for each frame in, and a keyframe when one is asked for;
//! 720p VP8 (libvpx, by the ffmpeg CLI) comes out as 640x360 VP8; H.265 (libx265) comes out as
//! H.264 of its own size; garbage gives nothing and does not stop real frames after it.

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
        out_mime: mime.into(),
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
fn a_codec_it_cannot_make_or_read_is_refused() {
    // H.265 is read (see below), not written.
    assert!(Downscaler::new(&spec("video/H265")).is_err());
    assert!(fanfare_vod::scale::scaler_for(&spec("video/AV1")).is_none());
}

/// An H.265 camera's companion for viewers without H.265: its pictures, at their own size
/// (the spec leaves it open), come out as H.264.
#[test]
fn h265_is_re_encoded_as_h264_at_its_own_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nals = common::nal_units(&common::hevc_stream(dir.path(), 60));
    let mut scaler = Downscaler::new(&ScaleSpec {
        mime: "video/H265".into(),
        out_mime: "video/H264".into(),
        width: 0,
        height: 0,
        kbps: 0,
    })
    .expect("re-encoder");
    let (mut seq, mut frame, mut out) = (0u16, 0u32, Vec::new());
    for nal in nals {
        // One slice per picture here: a VCL NAL unit (type < 32) ends its access unit.
        let vcl = (nal[0] >> 1) & 0x3f < 32;
        let pkt = common::rtp_packet(nal, seq, frame * 3000, vcl);
        seq = seq.wrapping_add(1);
        frame += u32::from(vcl);
        out.extend(scaler.push(&pkt, false));
    }
    let first = out.first().expect("H.264 packets");
    assert!(starts_keyframe("video/H264", &first.payload));
    assert_eq!(keyframe_dimensions("video/H264", &first.payload), Some((320, 240)));
    let made = out.iter().filter(|p| p.header.marker).count();
    assert!(made + 2 >= 60, "{made} H.264 frames from 60");
}

/// The frames of an IVF file (32-byte file header, then a 12-byte header before each frame).
fn ivf_frames(data: &[u8]) -> Vec<bytes::Bytes> {
    let mut frames = Vec::new();
    let mut at = 32;
    while let Some(head) = data.get(at..at + 12) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(frame) = data.get(at + 12..at + 12 + len) else {
            break;
        };
        frames.push(bytes::Bytes::copy_from_slice(frame));
        at += 12 + len;
    }
    frames
}

#[test]
fn a_vp8_layer_is_scaled_in_vp8() {
    use rtc::rtp::codec::vp8::Vp8Payloader;
    use rtc::rtp::packetizer::Payloader;

    let dir = tempfile::tempdir().expect("tempdir");
    let ivf = dir.path().join("720p.ivf");
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30:duration=2",
        "-c:v",
        "libvpx",
        "-b:v",
        "1M",
        "-g",
        "30",
        ivf.to_str().expect("path"),
    ]);
    let frames = ivf_frames(&std::fs::read(&ivf).expect("ivf"));
    assert_eq!(frames.len(), 60);
    let mut pay = Vp8Payloader::default();
    let mut scaler = Downscaler::new(&spec("video/VP8")).expect("scaler");
    let (mut seq, mut out) = (0u16, Vec::new());
    for (i, frame) in frames.iter().enumerate() {
        let payloads = pay.payload(1200, frame).expect("payload");
        let n = payloads.len();
        for (k, payload) in payloads.into_iter().enumerate() {
            let pkt = common::rtp_packet(payload, seq, i as u32 * 3000, k + 1 == n);
            seq = seq.wrapping_add(1);
            out.extend(scaler.push(&pkt, false));
        }
    }
    let first = out.first().expect("scaled packets");
    assert!(starts_keyframe("video/VP8", &first.payload));
    assert_eq!(keyframe_dimensions("video/VP8", &first.payload), Some((640, 360)));
    let made = out.iter().filter(|p| p.header.marker).count();
    assert!(made + 2 >= frames.len(), "{made} of {}", frames.len());
}

/// Garbage in (random payloads, truncated fragments, a keyframe cut short): nothing out, no
/// panic, and real frames after it still come out.
#[test]
fn garbage_gives_nothing_and_breaks_nothing() {
    let mut scaler = Downscaler::new(&spec("video/H264")).expect("scaler");
    let mut seed = 0x2545_f491_u32;
    let mut noise = |n: usize| -> bytes::Bytes {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    for i in 0..300u16 {
        let len = [0, 1, 2, 13, 1200][usize::from(i) % 5];
        let pkt = common::rtp_packet(noise(len), i, u32::from(i / 3) * 3000, i % 3 == 2);
        assert!(scaler.push(&pkt, i % 7 == 0).is_empty(), "packet {i}");
    }
    let aus = common::access_units_of(&common::fixture_720p());
    let frames = common::packetize(&aus[..60], 300, 900_000);
    let made: usize = frames
        .iter()
        .flatten()
        .map(|p| scaler.push(p, false).iter().filter(|p| p.header.marker).count())
        .sum();
    assert!(made >= 55, "{made} frames after the garbage");
}
