//! The depacketizer against the H.264 fixture packetized with STAP-A and FU-A: every access
//! unit comes back, loss drops only what it broke until the next keyframe, garbage is harmless.

mod common;

use bytes::Bytes;
use fanfare_vod::depack::Depacketizer;
use fanfare_vod::frame::Codec;

#[test]
fn every_access_unit_comes_back() {
    let aus = common::access_units();
    assert_eq!(aus.len(), 120);
    let keys = aus.iter().filter(|a| a.keyframe).count();
    assert_eq!(keys, 4);
    // Start near the sequence and timestamp wrap to exercise unwrapping.
    let pkts = common::packetize(&aus, 65500, u32::MAX - 30_000);
    assert!(pkts.iter().any(|p| p.len() > 1), "some AUs need FU-A");
    assert!(
        pkts.iter().flatten().any(|p| p.payload[0] & 0x1f == 24),
        "SPS/PPS go as STAP-A"
    );
    let mut d = Depacketizer::new("video/H264", 90000, 0, "").unwrap();
    let frames: Vec<_> = pkts.iter().flatten().flat_map(|p| d.push(p)).collect();
    assert_eq!(frames.len(), aus.len());
    assert_eq!(frames.iter().filter(|f| f.keyframe).count(), keys);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.codec, Codec::H264);
        assert_eq!(f.pts - frames[0].pts, i as i64 * 3000);
        assert!(f.data.starts_with(&[0, 0, 0, 1]));
        if f.keyframe {
            // SPS and PPS come first.
            assert_eq!(f.data[4] & 0x1f, 7);
        }
    }
}

#[test]
fn loss_drops_until_next_keyframe() {
    let aus = common::access_units();
    let pkts = common::packetize(&aus, 1, 0);
    let mut d = Depacketizer::new("video/H264", 90000, 0, "").unwrap();
    // Lose one packet of AU 10 (a P frame of the first GOP).
    let mut got = Vec::new();
    for (i, au) in pkts.iter().enumerate() {
        for (k, p) in au.iter().enumerate() {
            if i == 10 && k == 0 {
                continue;
            }
            for f in d.push(p) {
                got.push(f.pts / 3000);
            }
        }
    }
    // AUs 10..29 are lost (the rest of the GOP), everything else arrives.
    let expected: Vec<i64> = (0..120).filter(|i| !(10..30).contains(i)).collect();
    assert_eq!(got, expected);
}

#[test]
fn garbage_payloads_do_not_panic() {
    let mut seed = 0x1234_5678u32;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for mime in ["video/H264", "video/VP8", "audio/opus", "audio/PCMU"] {
        let mut d = Depacketizer::new(mime, 90000, 2, "").unwrap();
        for i in 0..5000u32 {
            let len = (rnd() % 40) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            let p = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker: rnd() % 3 == 0,
                    sequence_number: if rnd() % 10 == 0 { rnd() as u16 } else { i as u16 },
                    timestamp: rnd() % 4 * 3000,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            let _ = d.push(&p);
        }
    }
    let mut d = Depacketizer::new("audio/mpeg4-generic", 48000, 2, "config=1190").unwrap();
    for i in 0..2000u32 {
        let payload: Vec<u8> = (0..(rnd() % 30)).map(|_| rnd() as u8).collect();
        let p = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                sequence_number: i as u16,
                timestamp: i * 1024,
                marker: true,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        let _ = d.push(&p);
    }
}
