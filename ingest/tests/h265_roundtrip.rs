//! The ingest's H.265 packetizer (RFC 7798) against the HLS side's depacketizer
//! (`vod::depack`): every access unit comes back byte for byte as Annex B, with the
//! parameter sets before each IRAP picture, across fragmentation units and the sequence and
//! timestamp wrap; a lost fragment drops only the pictures up to the next IRAP picture.

use std::time::Instant;

use bytes::Bytes;
use fanfare_ingest::packetize::{h264::MAX_PAYLOAD, h265, RtpTimeline};
use rtc::rtp;
use vod::depack::Depacketizer;
use vod::frame::{Codec, Frame};

const VPS: &[u8] = &[0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60];
const SPS: &[u8] = &[0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0xb0];
const PPS: &[u8] = &[0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40];
const GOP: usize = 30;

/// A NAL unit of type `ty` with a `len`-byte body of non-zero pseudo-random bytes.
fn nal(ty: u8, len: usize, seed: usize) -> Vec<u8> {
    let mut v = vec![ty << 1, 0x01];
    v.extend((0..len).map(|i| ((i * 7 + seed * 13) % 251 + 1) as u8));
    v
}

/// 75 access units: an IDR_W_RADL every 30 (large: fragmented), the others TRAIL_R pictures,
/// some in two slices, some with an AUD and a prefix SEI, a few large enough to fragment.
fn access_units() -> Vec<(Vec<Vec<u8>>, bool)> {
    (0..75)
        .map(|i| {
            let irap = i % GOP == 0;
            let mut nals = Vec::new();
            if i % 4 == 1 {
                nals.push(vec![35 << 1, 0x01, 0x50]); // AUD: dropped on the way
                nals.push(nal(39, 12, i)); // prefix SEI
            }
            if irap {
                nals.push(nal(19, 5000 + i, i));
            } else {
                let size = if i % 7 == 0 { 2600 } else { 300 + i * 3 };
                nals.push(nal(1, size, i));
                if i % 3 == 0 {
                    nals.push(nal(1, 150, i + 1000));
                }
            }
            (nals, irap)
        })
        .collect()
}

fn length_prefixed(nals: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for n in nals {
        v.extend_from_slice(&(n.len() as u32).to_be_bytes());
        v.extend_from_slice(n);
    }
    v
}

/// What the depacketizer should give back for an access unit.
fn expected(nals: &[Vec<u8>], irap: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let params: &[&[u8]] = if irap { &[VPS, SPS, PPS] } else { &[] };
    let own = nals.iter().map(Vec::as_slice).filter(|n| h265::nal_type(n) != Some(35));
    for n in params.iter().copied().chain(own) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    out
}

/// Packetizes every access unit (30 fps) on a timeline that wraps sequence and timestamp.
fn packetize(aus: &[(Vec<Vec<u8>>, bool)]) -> Vec<Vec<rtp::Packet>> {
    let t0 = Instant::now();
    let mut timeline = RtpTimeline::new(90_000, 0x1234, 65_500, u32::MAX - 30_000);
    aus.iter()
        .enumerate()
        .map(|(i, (nals, _))| {
            let payloads = h265::packetize_au(&length_prefixed(nals), Some([VPS, SPS, PPS]), MAX_PAYLOAD)
                .expect("well-formed access unit");
            let ts = timeline.timestamp(i as i64 * 3000, t0);
            let n = payloads.len();
            payloads
                .into_iter()
                .enumerate()
                .map(|(k, p)| timeline.packet(p, k + 1 == n, ts))
                .collect()
        })
        .collect()
}

fn depacketize<'a>(pkts: impl Iterator<Item = &'a rtp::Packet>) -> Vec<Frame> {
    let mut d = Depacketizer::new("video/H265", 90_000, 0, "").expect("H.265 is supported");
    pkts.flat_map(|p| d.push(p)).collect()
}

#[test]
fn every_access_unit_comes_back() {
    let aus = access_units();
    let pkts = packetize(&aus);
    let all: Vec<&rtp::Packet> = pkts.iter().flatten().collect();
    assert!(all.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
    assert!(
        all.iter().any(|p| h265::nal_type(&p.payload) == Some(49)),
        "large NAL units go as fragmentation units"
    );
    assert!(all.iter().any(|p| p.payload.as_ref() == VPS), "the VPS goes alone");
    let frames = depacketize(all.iter().copied());
    assert_eq!(frames.len(), aus.len());
    for (i, (f, (nals, irap))) in frames.iter().zip(&aus).enumerate() {
        assert_eq!(f.codec, Codec::H265);
        assert_eq!(f.keyframe, *irap, "access unit {i}");
        assert_eq!(f.pts - frames[0].pts, i as i64 * 3000, "access unit {i}");
        assert_eq!(f.data, Bytes::from(expected(nals, *irap)), "access unit {i}");
    }
}

#[test]
fn in_band_parameter_sets_pass_when_none_are_known() {
    let au = vec![VPS.to_vec(), SPS.to_vec(), PPS.to_vec(), nal(19, 3000, 1)];
    let payloads = h265::packetize_au(&length_prefixed(&au), None, MAX_PAYLOAD).expect("payloads");
    let mut timeline = RtpTimeline::new(90_000, 1, 0, 0);
    let n = payloads.len();
    let pkts: Vec<rtp::Packet> = payloads
        .into_iter()
        .enumerate()
        .map(|(k, p)| timeline.packet(p, k + 1 == n, 0))
        .collect();
    let frames = depacketize(pkts.iter());
    assert_eq!(frames.len(), 1);
    assert!(frames[0].keyframe);
    assert_eq!(frames[0].data, Bytes::from(expected(&au[3..], true)), "no set twice");
}

#[test]
fn a_lost_fragment_drops_pictures_until_the_next_irap() {
    let aus = access_units();
    let pkts = packetize(&aus);
    // Access unit 7 is a large P picture: lose its second fragment.
    assert!(pkts[7].len() > 2, "access unit 7 is fragmented");
    let kept = pkts
        .iter()
        .enumerate()
        .flat_map(|(i, au)| au.iter().enumerate().filter(move |(k, _)| !(i == 7 && *k == 1)))
        .map(|(_, p)| p);
    let frames = depacketize(kept);
    let first_pts = frames[0].pts;
    let got: Vec<usize> = frames.iter().map(|f| ((f.pts - first_pts) / 3000) as usize).collect();
    let want: Vec<usize> = (0..7).chain(GOP..aus.len()).collect();
    assert_eq!(got, want);
}
