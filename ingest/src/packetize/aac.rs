//! AAC to RTP (RFC 3640, `mode=AAC-hbr`): one access unit per packet behind a 16-bit
//! AU-headers-length and one AU header (13-bit size, 3-bit index). The fmtp line carries the
//! AudioSpecificConfig in hex, which the HLS side uses to depacketize.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest access unit the 13-bit size field can describe.
pub const MAX_AU: usize = (1 << 13) - 1;

/// The `a=fmtp` line of an AAC track with this AudioSpecificConfig.
pub fn fmtp(audio_specific_config: &[u8]) -> String {
    let hex: String = audio_specific_config.iter().map(|b| format!("{b:02x}")).collect();
    format!("streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config={hex}")
}

/// The RTP payload of one raw AAC access unit, or `None` when it is too large to describe.
pub fn payload(au: &[u8]) -> Option<Bytes> {
    if au.is_empty() || au.len() > MAX_AU {
        return None;
    }
    let mut b = BytesMut::with_capacity(au.len() + 4);
    b.put_u16(16); // AU-headers-length in bits: one 16-bit header.
    b.put_u16((au.len() as u16) << 3); // size, index 0
    b.put_slice(au);
    Some(b.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn au_header_and_fmtp() {
        let p = payload(&[0xaa; 300]).unwrap();
        assert_eq!(&p[..4], &[0x00, 0x10, (300u16 << 3 >> 8) as u8, (300u16 << 3) as u8]);
        assert_eq!(p.len(), 304);
        assert!(payload(&[]).is_none());
        assert!(payload(&vec![0; 9000]).is_none());
        assert!(fmtp(&[0x11, 0x88]).ends_with("config=1188"));
    }
}
