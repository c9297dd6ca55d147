//! H.265 over RTP (RFC 7798) as a test viewer receives it: packets turned back into an Annex B
//! byte stream that FFmpeg can decode, so a test can count the pictures that really decode.

/// Rebuilds an Annex B stream from H.265 RTP payloads (single NAL units, aggregation packets
/// and fragmentation units), in arrival order; payloads it cannot read are left out.
#[derive(Debug, Default)]
pub struct AnnexB {
    /// The stream so far.
    pub bytes: Vec<u8>,
    /// Inside a fragmented NAL unit whose start fragment was seen.
    in_fragment: bool,
}

const START: [u8; 4] = [0, 0, 0, 1];

impl AnnexB {
    /// Appends the NAL units (or NAL unit part) of one payload.
    pub fn push(&mut self, payload: &[u8]) {
        let Some(&first) = payload.first() else { return };
        match (first >> 1) & 0x3f {
            48 => {
                self.in_fragment = false;
                let mut rest = payload.get(2..).unwrap_or(&[]);
                while rest.len() > 2 {
                    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let Some(nal) = rest.get(2..2 + len) else { break };
                    self.bytes.extend_from_slice(&START);
                    self.bytes.extend_from_slice(nal);
                    rest = &rest[2 + len..];
                }
            }
            49 => {
                let (Some(&second), Some(&fu)) = (payload.get(1), payload.get(2)) else {
                    return;
                };
                let data = payload.get(3..).unwrap_or(&[]);
                if fu & 0x80 != 0 {
                    // The NAL unit header: the payload header's, with the fragment's type.
                    self.bytes.extend_from_slice(&START);
                    self.bytes
                        .extend_from_slice(&[(first & 0x81) | ((fu & 0x3f) << 1), second]);
                    self.in_fragment = true;
                }
                if self.in_fragment {
                    self.bytes.extend_from_slice(data);
                }
                if fu & 0x40 != 0 {
                    self.in_fragment = false;
                }
            }
            _ => {
                self.in_fragment = false;
                self.bytes.extend_from_slice(&START);
                self.bytes.extend_from_slice(payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_aggregated_and_fragmented_units_come_back_with_start_codes() {
        let mut a = AnnexB::default();
        a.push(&[0x40, 0x01, 0xaa]); // a VPS alone
        a.push(&[48 << 1, 1, 0, 2, 0x42, 0x01, 0, 2, 0x44, 0x01]); // SPS + PPS
        a.push(&[49 << 1, 1, 0x80 | 19, 0x11]); // IDR start
        a.push(&[49 << 1, 1, 0x40 | 19, 0x22]); // IDR end
        assert_eq!(
            a.bytes,
            [
                &START[..],
                &[0x40, 0x01, 0xaa],
                &START,
                &[0x42, 0x01],
                &START,
                &[0x44, 0x01],
                &START,
                &[19 << 1, 1, 0x11, 0x22],
            ]
            .concat()
        );
    }
}
