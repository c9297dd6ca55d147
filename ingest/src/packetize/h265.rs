//! H.265 access units (retina's length-prefixed NALs) to RTP payloads (RFC 7798, no DONL):
//! single NAL unit packets up to the payload limit, fragmentation units (type 49) beyond. VPS,
//! SPS and PPS from the stream's parameters are sent as their own packets before every IRAP
//! picture (NAL types 16..=21); in-band parameter sets and access unit delimiters are dropped.
//! The caller sets the marker on the last payload of the access unit.

use bytes::Bytes;

use super::h264::{split_avcc, MalformedAu};

const NAL_IRAP_FIRST: u8 = 16;
const NAL_IRAP_LAST: u8 = 21;
const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;
const NAL_AUD: u8 = 35;
const NAL_FU: u8 = 49;

/// The stream's parameter sets, in the order they are sent: VPS, SPS, PPS.
pub type ParameterSets<'a> = [&'a [u8]; 3];

/// The NAL unit type of an H.265 NAL unit (its first header byte, bits 1..=6).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// Whether a NAL unit type is an IRAP picture's (a decoder can start there).
pub fn is_irap(ty: u8) -> bool {
    (NAL_IRAP_FIRST..=NAL_IRAP_LAST).contains(&ty)
}

/// The RTP payloads of one access unit, in order. `params` are the stream's VPS, SPS and PPS,
/// inserted before an IRAP picture. NAL units shorter than their 2-byte header are dropped.
pub fn packetize_au(
    data: &[u8],
    params: Option<ParameterSets<'_>>,
    max_payload: usize,
) -> Result<Vec<Bytes>, MalformedAu> {
    Ok(payloads(&nal_units(data, params)?, max_payload))
}

/// The NAL units of one access unit as they are sent, in order: `params` (VPS, SPS, PPS)
/// before an IRAP picture's, in-band parameter sets (when `params` are known), access unit
/// delimiters and NAL units shorter than their 2-byte header left out.
pub fn nal_units<'a>(data: &'a [u8], params: Option<ParameterSets<'a>>) -> Result<Vec<&'a [u8]>, MalformedAu> {
    let nals: Vec<&[u8]> = split_avcc(data)?.into_iter().filter(|n| n.len() >= 2).collect();
    let has_irap = has_keyframe(&nals);
    let mut out = Vec::with_capacity(nals.len() + 3);
    let mut inserted = false;
    for nal in nals {
        match nal_type(nal) {
            Some(NAL_AUD) => continue,
            Some(NAL_VPS | NAL_SPS | NAL_PPS) if params.is_some() => continue,
            _ => {}
        }
        if has_irap && !inserted {
            out.extend(params.iter().flatten().filter(|ps| ps.len() >= 2));
            inserted = true;
        }
        out.push(nal);
    }
    Ok(out)
}

/// Whether these NAL units hold an IRAP picture (a decoder can start there).
pub fn has_keyframe(nals: &[&[u8]]) -> bool {
    nals.iter().any(|n| nal_type(n).is_some_and(is_irap))
}

/// The RTP payloads of [`nal_units`]' output.
pub fn payloads(nals: &[&[u8]], max_payload: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(nals.len());
    for nal in nals {
        fragment(nal, max_payload, &mut out);
    }
    out
}

/// One NAL unit (at least its 2-byte header) as a single packet, or as fragmentation units
/// when larger than `max_payload`.
fn fragment(nal: &[u8], max_payload: usize, out: &mut Vec<Bytes>) {
    if nal.len() <= max_payload {
        out.push(Bytes::copy_from_slice(nal));
        return;
    }
    let Some((&[h0, h1], body)) = nal.split_first_chunk::<2>() else {
        return;
    };
    // The payload header keeps F, LayerId and TID; its type says "fragmentation unit".
    let header = [(h0 & 0x81) | (NAL_FU << 1), h1];
    super::fragment_units(&header, (h0 >> 1) & 0x3f, body, max_payload, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packetize::h264::MAX_PAYLOAD;

    fn hvcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    const VPS: [u8; 4] = [0x40, 0x01, 0x0c, 0x01];
    const SPS: [u8; 4] = [0x42, 0x01, 0x01, 0x01];
    const PPS: [u8; 3] = [0x44, 0x01, 0xc1];

    #[test]
    fn parameter_sets_precede_irap_pictures_only() {
        let idr = [0x26, 0x01, 0xaf, 0x10]; // IDR_W_RADL (19)
        let au = hvcc(&[&[0x46, 0x01, 0x50], &[0x42, 0x01, 9], &idr]);
        let p = packetize_au(&au, Some([&VPS, &SPS, &PPS]), MAX_PAYLOAD).unwrap();
        let p: Vec<&[u8]> = p.iter().map(|b| b.as_ref()).collect();
        assert_eq!(p, vec![&VPS[..], &SPS[..], &PPS[..], &idr[..]]);
        // A CRA (21) is IRAP too; a TRAIL_R (1) picture gets nothing.
        let cra = [0x2a, 0x01, 7];
        assert_eq!(
            packetize_au(&hvcc(&[&cra]), Some([&VPS, &SPS, &PPS]), 1200)
                .unwrap()
                .len(),
            4
        );
        let trail = [0x02, 0x01, 7];
        assert_eq!(
            packetize_au(&hvcc(&[&trail]), Some([&VPS, &SPS, &PPS]), 1200)
                .unwrap()
                .len(),
            1
        );
        // Without known parameter sets, in-band ones are kept.
        let p = packetize_au(&hvcc(&[&VPS, &idr]), None, 1200).unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn large_nals_become_fragmentation_units() {
        let mut idr = vec![0x26, 0x01];
        idr.extend((0..3000u32).map(|i| (i % 251) as u8));
        let p = packetize_au(&hvcc(&[&idr]), None, 1200).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|b| b.len() <= 1200));
        assert_eq!((nal_type(&p[0]), p[0][1]), (Some(NAL_FU), 0x01));
        assert_eq!(p[0][2], 0x80 | 19);
        assert_eq!(p[1][2], 19);
        assert_eq!(p[2][2], 0x40 | 19);
        let rebuilt: Vec<u8> = p.iter().flat_map(|b| b[3..].to_vec()).collect();
        assert_eq!(rebuilt, idr[2..]);
    }

    #[test]
    fn malformed_input_is_an_error_or_dropped() {
        assert!(packetize_au(&[0, 0, 0, 9, 1], None, 1200).is_err());
        assert!(packetize_au(&[0, 0], None, 1200).is_err());
        // A 1-byte NAL unit has no complete header: dropped, no panic.
        assert!(packetize_au(&hvcc(&[&[0x26]]), Some([&VPS, &SPS, &PPS]), 1200)
            .unwrap()
            .is_empty());
        // Tiny payload limits still make progress.
        let p = packetize_au(&hvcc(&[&[0x26, 0x01, 1, 2, 3]]), None, 2).unwrap();
        assert_eq!(p.len(), 3);
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..seed).map(|i| (i.wrapping_mul(seed) ^ 0x5a) as u8).collect();
            let _ = packetize_au(&junk, Some([&VPS, &SPS, &PPS]), 16);
        }
    }
}
