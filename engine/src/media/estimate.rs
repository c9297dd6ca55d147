//! [`SendSideEstimate`]: the server's own bandwidth estimate for one outgoing stream, handed from
//! the RTCP interceptor to the application as if it were an RTCP packet (the only way the
//! `webrtc` crate delivers anything about a stream to its `TrackLocal`). It never goes on the
//! wire; its encoding (an RTCP APP packet named `FFSE`) exists because the trait asks for one.

use std::any::Any;
use std::fmt;

use bytes::{Buf, BufMut};
use rtc::rtcp::header::{Header, PacketType};
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};

/// The APP packet's name.
const NAME: &[u8; 4] = b"FFSE";
/// The APP packet's subtype bit saying the queue started growing.
const SUBTYPE_OVERUSING: u8 = 1;
/// Header, SSRC, name and a 64-bit bitrate.
const SIZE: usize = 4 + 4 + 4 + 8;

/// What the server's send-side (TWCC) estimator allows stream `ssrc`: the connection's estimate
/// times the stream's share of the bytes the connection sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendSideEstimate {
    /// The outgoing stream this share is for.
    pub ssrc: u32,
    /// Bits per second.
    pub bitrate_bps: u64,
    /// The connection's queue started growing (even if the estimate did not fall).
    pub overusing: bool,
}

impl fmt::Display for SendSideEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let overusing = if self.overusing { ", overusing" } else { "" };
        write!(
            f,
            "send-side estimate for {}: {} bit/s{overusing}",
            self.ssrc, self.bitrate_bps
        )
    }
}

impl MarshalSize for SendSideEstimate {
    fn marshal_size(&self) -> usize {
        SIZE
    }
}

impl Marshal for SendSideEstimate {
    fn marshal_to(&self, mut buf: &mut [u8]) -> Result<usize, Error> {
        if buf.len() < SIZE {
            return Err(Error::BufferTooShort);
        }
        let header = rtc::rtcp::Packet::header(self);
        let n = header.marshal_to(buf)?;
        buf = &mut buf[n..];
        buf.put_u32(self.ssrc);
        buf.put_slice(NAME);
        buf.put_u64(self.bitrate_bps);
        Ok(SIZE)
    }
}

impl Unmarshal for SendSideEstimate {
    fn unmarshal<B: Buf>(buf: &mut B) -> Result<Self, Error> {
        if buf.remaining() < SIZE {
            return Err(Error::PacketTooShort);
        }
        let header = Header::unmarshal(buf)?;
        if header.packet_type != PacketType::ApplicationDefined {
            return Err(Error::WrongType);
        }
        let ssrc = buf.get_u32();
        let mut name = [0u8; 4];
        buf.copy_to_slice(&mut name);
        if &name != NAME {
            return Err(Error::WrongType);
        }
        Ok(SendSideEstimate {
            ssrc,
            bitrate_bps: buf.get_u64(),
            overusing: header.count & SUBTYPE_OVERUSING != 0,
        })
    }
}

impl rtc::rtcp::Packet for SendSideEstimate {
    fn header(&self) -> Header {
        Header {
            padding: false,
            count: if self.overusing { SUBTYPE_OVERUSING } else { 0 },
            packet_type: PacketType::ApplicationDefined,
            length: (SIZE / 4 - 1) as u16,
        }
    }

    fn destination_ssrc(&self) -> Vec<u32> {
        vec![self.ssrc]
    }

    fn raw_size(&self) -> usize {
        SIZE
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn equal(&self, other: &dyn rtc::rtcp::Packet) -> bool {
        other.as_any().downcast_ref::<SendSideEstimate>() == Some(self)
    }

    fn cloned(&self) -> Box<dyn rtc::rtcp::Packet> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_an_app_packet() {
        for overusing in [false, true] {
            let e = SendSideEstimate {
                ssrc: 0x0102_0304,
                bitrate_bps: 1_234_567,
                overusing,
            };
            let bytes = e.marshal().expect("marshal");
            assert_eq!(bytes.len(), SIZE);
            assert_eq!(bytes[1], 204);
            let back = SendSideEstimate::unmarshal(&mut bytes.clone()).expect("unmarshal");
            assert_eq!(back, e);
        }
        let bytes = SendSideEstimate {
            ssrc: 1,
            bitrate_bps: 1,
            overusing: false,
        }
        .marshal()
        .expect("marshal");
        let mut short = &bytes[..10];
        assert!(SendSideEstimate::unmarshal(&mut short).is_err());
    }
}
