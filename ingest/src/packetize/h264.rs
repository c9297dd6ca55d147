//! H.264 access units (retina's length-prefixed NALs) to RTP payloads (RFC 6184,
//! packetization-mode 1): single NAL unit packets up to [`MAX_PAYLOAD`] bytes, FU-A fragments
//! beyond. SPS and PPS from the stream's parameters are sent as their own packets before every
//! IDR; in-band parameter sets and access unit delimiters are dropped. The caller sets the
//! marker on the last payload of the access unit.

use bytes::Bytes;

/// Largest RTP payload written (fits a 1280-byte path MTU after SRTP and headers).
pub const MAX_PAYLOAD: usize = 1200;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FU_A: u8 = 28;

/// Why an access unit could not be split into NAL units.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedAu(pub &'static str);

/// Splits 4-byte length-prefixed data into NAL units.
pub fn split_avcc(data: &[u8]) -> Result<Vec<&[u8]>, MalformedAu> {
    let mut nals = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(MalformedAu("truncated NAL length"));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len == 0 || len > tail.len() {
            return Err(MalformedAu("NAL length beyond the access unit"));
        }
        nals.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(nals)
}

/// Whether no other picture refers to this access unit: every slice has `nal_ref_idc` 0 (a
/// camera's usual B-frames). Such a frame can be left out without breaking later ones.
pub fn is_non_reference(data: &[u8]) -> bool {
    let Ok(nals) = split_avcc(data) else { return false };
    let mut slices = nals
        .iter()
        .filter_map(|n| n.first())
        .filter(|h| (1..=NAL_IDR).contains(&(*h & 0x1f)))
        .peekable();
    slices.peek().is_some() && slices.all(|h| h & 0x60 == 0)
}

/// The RTP payloads of one access unit, in order. `params` are the stream's SPS and PPS,
/// inserted before an IDR. Returns an empty list when nothing is left to send.
pub fn packetize_au(
    data: &[u8],
    params: Option<(&[u8], &[u8])>,
    max_payload: usize,
) -> Result<Vec<Bytes>, MalformedAu> {
    Ok(payloads(&nal_units(data, params)?, max_payload))
}

/// The NAL units of one access unit as they are sent, in order: `params` (the stream's SPS and
/// PPS) before an IDR's slices, in-band parameter sets (when `params` are known) and access
/// unit delimiters left out.
pub fn nal_units<'a>(data: &'a [u8], params: Option<(&'a [u8], &'a [u8])>) -> Result<Vec<&'a [u8]>, MalformedAu> {
    let nals = split_avcc(data)?;
    let has_idr = has_keyframe(&nals);
    let mut out = Vec::with_capacity(nals.len() + 2);
    let mut inserted = false;
    for nal in nals {
        let Some(&header) = nal.first() else { continue };
        let ty = header & 0x1f;
        match ty {
            NAL_AUD => continue,
            NAL_SPS | NAL_PPS if params.is_some() => continue,
            _ => {}
        }
        if has_idr && !inserted {
            if let Some((sps, pps)) = params {
                out.extend([sps, pps].into_iter().filter(|ps| !ps.is_empty()));
            }
            inserted = true;
        }
        out.push(nal);
    }
    Ok(out)
}

/// Whether these NAL units hold an IDR picture (a decoder can start there).
pub fn has_keyframe(nals: &[&[u8]]) -> bool {
    nals.iter().any(|n| n.first().is_some_and(|h| h & 0x1f == NAL_IDR))
}

/// The RTP payloads of [`nal_units`]' output.
pub fn payloads(nals: &[&[u8]], max_payload: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(nals.len());
    for nal in nals {
        fragment(nal, max_payload, &mut out);
    }
    out
}

/// One NAL unit as a single packet, or as FU-A fragments when larger than `max_payload`.
fn fragment(nal: &[u8], max_payload: usize, out: &mut Vec<Bytes>) {
    if nal.len() <= max_payload {
        out.push(Bytes::copy_from_slice(nal));
        return;
    }
    let Some((&header, body)) = nal.split_first() else {
        return;
    };
    // The FU indicator keeps F and NRI; its type says FU-A.
    let indicator = (header & 0xe0) | NAL_FU_A;
    super::fragment_units(&[indicator], header & 0x1f, body, max_payload, out);
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_reference_frames_are_those_whose_slices_all_have_ref_idc_zero() {
        let avcc = |nals: &[&[u8]]| -> Vec<u8> {
            nals.iter()
                .flat_map(|n| (n.len() as u32).to_be_bytes().into_iter().chain(n.iter().copied()))
                .collect()
        };
        // A non-reference B slice (ref_idc 0, type 1), after an AUD.
        assert!(is_non_reference(&avcc(&[&[0x09, 0x10], &[0x01, 0xaa]])));
        // A reference P slice (ref_idc 2), an IDR, a mix.
        assert!(!is_non_reference(&avcc(&[&[0x41, 0xaa]])));
        assert!(!is_non_reference(&avcc(&[&[0x65, 0xaa]])));
        assert!(!is_non_reference(&avcc(&[&[0x01, 0xaa], &[0x41, 0xbb]])));
        // No slice at all, or malformed: kept.
        assert!(!is_non_reference(&avcc(&[&[0x09, 0x10]])));
        assert!(!is_non_reference(&[0, 0, 0, 9, 1]));
    }

    use super::*;

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn small_nals_go_alone_and_params_precede_idr() {
        let sps = [0x67, 0x42, 0xe0, 0x1f];
        let pps = [0x68, 0xce];
        let idr = [0x65, 1, 2, 3];
        let au = avcc(&[&[0x09, 0xf0], &[0x67, 9, 9], &idr]);
        let p = packetize_au(&au, Some((&sps, &pps)), MAX_PAYLOAD).unwrap();
        let p: Vec<&[u8]> = p.iter().map(|b| b.as_ref()).collect();
        assert_eq!(p, vec![&sps[..], &pps[..], &idr[..]]);
        // A non-IDR slice gets no parameter sets.
        let p = packetize_au(&avcc(&[&[0x41, 7, 7]]), Some((&sps, &pps)), MAX_PAYLOAD).unwrap();
        assert_eq!(p.len(), 1);
        assert!(engine::track::starts_keyframe("video/H264", &[0x67, 0x42]));
    }

    #[test]
    fn large_nals_become_fu_a() {
        let mut idr = vec![0x65];
        idr.extend((0..3000u32).map(|i| (i % 251) as u8));
        let p = packetize_au(&avcc(&[&idr]), None, 1200).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|b| b.len() <= 1200));
        assert_eq!(p[0][0], 0x60 | 28);
        assert_eq!(p[0][1], 0x80 | 5);
        assert_eq!(p[1][1], 5);
        assert_eq!(p[2][1], 0x40 | 5);
        assert!(engine::track::starts_keyframe("video/H264", &p[0]));
        let rebuilt: Vec<u8> = p.iter().flat_map(|b| b[2..].to_vec()).collect();
        assert_eq!(rebuilt, idr[1..]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(split_avcc(&[0, 0, 0, 9, 1]).is_err());
        assert!(split_avcc(&[0, 0]).is_err());
        assert!(split_avcc(&[0, 0, 0, 0]).is_err());
        assert_eq!(split_avcc(&[]).unwrap().len(), 0);
    }
}
