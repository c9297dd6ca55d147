//! Simulcast layers as pure logic: the chooser that picks a subscriber's layer from its caps, and
//! the parsers that learn a layer's picture size from its keyframes (H.264 SPS, VP8 key frame
//! header). No I/O; the [`super::Track`] actor and the fan-out call these.

use serde::Serialize;

use crate::model::Resolution;

/// Most simulcast layers a track carries (RID streams beyond this are not forwarded).
pub const MAX_LAYERS: usize = 3;
/// The slot of the server's own smaller layer, after the publisher's (`track/scaled.rs`).
pub const SCALED: usize = MAX_LAYERS;
/// Layer slots of a track: the publisher's, then the scaled one.
pub const SLOTS: usize = MAX_LAYERS + 1;

/// What is known of one layer when choosing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStat {
    /// The layer has delivered packets.
    pub active: bool,
    /// Picture size from its last keyframe; 0 while unknown.
    pub width: u32,
    pub height: u32,
    /// Measured bitrate (payload), smoothed; 0 while unknown.
    pub kbps: u32,
}

/// What limits one subscriber leg.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegCaps {
    /// The member's (else the group's) `max_resolution`.
    pub max_resolution: Option<Resolution>,
    /// The member's (else the group's) `max_bitrate_kbps`.
    pub max_kbps: Option<u32>,
    /// The congestion cap from the subscriber's receiver reports and REMB
    /// (`track/congestion.rs`), while its link shows congestion.
    pub estimate_kbps: Option<u32>,
    /// A layer picked by hand (by RID); still subject to the caps.
    pub pinned: Option<String>,
    /// The size (device pixels) the viewer shows the video at (adaptive stream): the smallest
    /// layer that covers it is enough; (0, 0) (hidden): the leg is paused (the [`super::Track`]
    /// actor's doing), or gets the lowest where it cannot be. Still subject to the caps; a pin
    /// goes first.
    pub view: Option<(u32, u32)>,
}

impl LegCaps {
    /// The caps `media` (group) and `member` (overrides) give a subscriber.
    pub fn of(media: &crate::model::MediaSettings, member: Option<&crate::model::MediaCaps>) -> LegCaps {
        LegCaps {
            max_resolution: Some(member.and_then(|m| m.max_resolution).unwrap_or(media.max_resolution)),
            max_kbps: Some(
                member
                    .and_then(|m| m.max_bitrate_kbps)
                    .unwrap_or(media.max_bitrate_kbps),
            ),
            estimate_kbps: None,
            pinned: None,
            view: None,
        }
    }

    fn kbps_limit(&self) -> Option<u32> {
        match (self.max_kbps, self.estimate_kbps) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A layer as clients see it (call view extension `layer_info`).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LayerView {
    pub rid: String,
    pub width: u32,
    pub height: u32,
    pub kbps: u32,
}

/// The largest picture with the aspect of `w`x`h` that [`fits`] within `res`, never larger
/// than the source; both sides even (what encoders take).
pub fn fitted_size(res: Resolution, w: u32, h: u32) -> (u32, u32) {
    let (mw, mh) = res.dimensions();
    let (w64, h64) = (u64::from(w.max(1)), u64::from(h.max(1)));
    // The scale (as a fraction num/den) that fits the picture in the box, either way round.
    let scale = |bw: u32, bh: u32| -> (u64, u64) {
        let (bw, bh) = (u64::from(bw), u64::from(bh));
        if bw * h64 <= bh * w64 {
            (bw, w64)
        } else {
            (bh, h64)
        }
    };
    let best = [scale(mw, mh), scale(mh, mw)]
        .into_iter()
        .max_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)))
        .unwrap_or((1, 1));
    let (num, den) = if best.0 >= best.1 { (1, 1) } else { best };
    let even = |v: u64| ((v * num / den) as u32 & !1).max(2);
    (even(w64), even(h64))
}

/// Whether a `w`x`h` picture fits within `res` (either orientation).
pub fn fits(res: Resolution, w: u32, h: u32) -> bool {
    let (mw, mh) = res.dimensions();
    (w <= mw && h <= mh) || (w <= mh && h <= mw)
}

/// Indexes of the active layers from lowest to highest (picture area, then bitrate; layers
/// whose size is still unknown last, in index order).
pub fn ranked(layers: &[LayerStat]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].active).collect();
    idx.sort_by_key(|&i| {
        let l = &layers[i];
        let area = u64::from(l.width) * u64::from(l.height);
        (area == 0, area, l.kbps, i)
    });
    idx
}

/// The layer a leg should receive: the highest whose size fits `max_resolution` and whose
/// bitrate fits the bitrate cap and the subscriber's estimate (a pinned layer instead, when it
/// fits; with a view size, the smallest fitting layer that covers it); when none fits, a layer
/// whose size is not known yet (the lowest bitrate: it may well fit, where a known one does
/// not) or else the lowest; `None` while no layer is active. `rids[i]` names layer `i` (for
/// pinning).
pub fn choose_layer(layers: &[LayerStat], rids: &[Option<String>], caps: &LegCaps) -> Option<usize> {
    let order = ranked(layers);
    let known: Vec<usize> = order.iter().copied().filter(|&i| layers[i].width > 0).collect();
    if known.is_empty() {
        return order.first().copied();
    }
    let limit = caps.kbps_limit();
    let ok = |i: usize| {
        let l = &layers[i];
        caps.max_resolution.is_none_or(|r| fits(r, l.width, l.height))
            && limit.is_none_or(|k| l.kbps == 0 || l.kbps <= k)
    };
    if let Some(pin) = &caps.pinned {
        if let Some(i) = known
            .iter()
            .copied()
            .find(|&i| rids.get(i).and_then(|r| r.as_deref()) == Some(pin.as_str()))
        {
            if ok(i) {
                return Some(i);
            }
        }
    }
    if let Some((w, h)) = caps.view {
        let covers = |i: usize| layers[i].width >= w && layers[i].height >= h;
        if let Some(i) = known.iter().copied().find(|&i| ok(i) && covers(i)) {
            return Some(i);
        }
    }
    let unknown = order
        .iter()
        .copied()
        .filter(|&i| layers[i].width == 0)
        .min_by_key(|&i| (layers[i].kbps, i));
    known
        .iter()
        .rev()
        .copied()
        .find(|&i| ok(i))
        .or(unknown)
        .or(known.first().copied())
}

/// The picture size announced by a keyframe's first RTP packet, when it carries one: an H.264
/// SPS (alone or in a STAP-A) or a VP8 key frame header.
pub fn keyframe_dimensions(mime: &str, payload: &[u8]) -> Option<(u32, u32)> {
    if mime.eq_ignore_ascii_case("video/H264") {
        let first = *payload.first()?;
        match first & 0x1f {
            7 => h264_sps_dimensions(payload),
            24 => {
                let mut rest = &payload[1..];
                while rest.len() > 2 {
                    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    let nal = rest.get(2..2 + len)?;
                    if nal.first().is_some_and(|h| h & 0x1f == 7) {
                        return h264_sps_dimensions(nal);
                    }
                    rest = rest.get(2 + len..).unwrap_or(&[]);
                }
                None
            }
            _ => None,
        }
    } else if mime.eq_ignore_ascii_case("video/VP8") {
        vp8_dimensions(payload)
    } else {
        None
    }
}

/// VP8 (RFC 7741 descriptor, then RFC 6386 key frame header: tag, start code, sizes).
fn vp8_dimensions(payload: &[u8]) -> Option<(u32, u32)> {
    let d = *payload.first()?;
    let mut i = 1;
    if d & 0x80 != 0 {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            i += if payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let f = payload.get(i..i + 10)?;
    if f[0] & 0x01 != 0 || f[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([f[6], f[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([f[8], f[9]]) & 0x3fff);
    Some((w, h))
}

/// Bit reader over an RBSP (emulation prevention bytes already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some(acc << 1 | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let v = self.ue()?;
        Some(if v % 2 == 1 {
            v.div_ceil(2) as i32
        } else {
            -((v / 2) as i32)
        })
    }
}

/// Width and height from an H.264 SPS NAL unit (header byte included), cropping applied.
pub fn h264_sps_dimensions(nal: &[u8]) -> Option<(u32, u32)> {
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits { data: &rbsp, pos: 0 };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        chroma = r.ue()?;
        if chroma == 3 {
            r.bit()?;
        }
        r.ue()?;
        r.ue()?;
        r.bit()?;
        if r.bit()? == 1 {
            for i in 0..if chroma == 3 { 12 } else { 8 } {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()? {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?;
    let w_mbs = r.ue()? + 1;
    let h_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?;
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        (cl, cr, ct, cb) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    let (sub_w, sub_h) = match chroma {
        0 => (1, 1),
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let crop_y = sub_h * (2 - frame_mbs_only);
    let width = (w_mbs * 16).checked_sub((cl + cr) * sub_w)?;
    let height = ((2 - frame_mbs_only) * h_units * 16).checked_sub((ct + cb) * crop_y)?;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_fitted_within_a_cap_keeping_its_aspect() {
        assert_eq!(fitted_size(Resolution::Vga, 1280, 720), (640, 360));
        assert_eq!(fitted_size(Resolution::Hd, 1920, 1080), (1280, 720));
        // Portrait: the cap applies either way round.
        assert_eq!(fitted_size(Resolution::Vga, 720, 1280), (360, 640));
        // Already within: unchanged.
        assert_eq!(fitted_size(Resolution::Vga, 640, 360), (640, 360));
        // Odd sides are made even.
        assert_eq!(fitted_size(Resolution::Vga, 1281, 721), (640, 360));
        for (w, h) in [(1920, 1080), (1080, 1920), (4000, 300), (300, 4000)] {
            let (fw, fh) = fitted_size(Resolution::Vga, w, h);
            assert!(fits(Resolution::Vga, fw, fh), "{w}x{h} -> {fw}x{fh}");
        }
    }

    fn stat(w: u32, h: u32, kbps: u32) -> LayerStat {
        LayerStat {
            active: true,
            width: w,
            height: h,
            kbps,
        }
    }

    fn caps(res: Option<Resolution>, kbps: Option<u32>) -> LegCaps {
        LegCaps {
            max_resolution: res,
            max_kbps: kbps,
            ..Default::default()
        }
    }

    #[test]
    fn a_view_size_takes_the_smallest_layer_that_covers_it_within_the_caps() {
        let layers = [stat(1280, 720, 1500), stat(320, 180, 150), stat(640, 360, 500)];
        let rids = [Some("f".to_owned()), Some("q".to_owned()), Some("h".to_owned())];
        let view = |size, kbps| LegCaps {
            view: Some(size),
            ..caps(None, kbps)
        };
        assert_eq!(choose_layer(&layers, &rids, &view((320, 180), None)), Some(1));
        assert_eq!(choose_layer(&layers, &rids, &view((400, 200), None)), Some(2));
        assert_eq!(
            choose_layer(&layers, &rids, &view((1920, 1080), None)),
            Some(0),
            "none covers: the top"
        );
        assert_eq!(
            choose_layer(&layers, &rids, &view((0, 0), None)),
            Some(1),
            "hidden: the lowest"
        );
        // Within the caps: a 720p view on a 600 kbit/s cap gets 360p.
        assert_eq!(choose_layer(&layers, &rids, &view((1280, 720), Some(600))), Some(2));
        // A pin goes first.
        let pinned = LegCaps {
            pinned: Some("f".to_owned()),
            ..view((320, 180), None)
        };
        assert_eq!(choose_layer(&layers, &rids, &pinned), Some(0));
    }

    #[test]
    fn the_chooser_takes_the_highest_layer_within_the_caps() {
        // Layers listed out of order (as RIDs may arrive): 720p, 180p, 360p.
        let layers = [stat(1280, 720, 1500), stat(320, 180, 150), stat(640, 360, 500)];
        let rids = [Some("f".to_owned()), Some("q".to_owned()), Some("h".to_owned())];
        let table: &[(Option<Resolution>, Option<u32>, Option<usize>)] = &[
            (None, None, Some(0)),
            (Some(Resolution::Fhd), Some(4000), Some(0)),
            (Some(Resolution::Hd), None, Some(0)),
            (Some(Resolution::Vga), None, Some(2)),
            (Some(Resolution::Fhd), Some(600), Some(2)),
            (Some(Resolution::Fhd), Some(200), Some(1)),
            // Nothing fits: the lowest layer.
            (Some(Resolution::Fhd), Some(50), Some(1)),
        ];
        for (res, kbps, want) in table {
            assert_eq!(
                choose_layer(&layers, &rids, &caps(*res, *kbps)),
                *want,
                "{res:?} {kbps:?}"
            );
        }
        // The subscriber's estimate lowers it further; a pin picks within the caps only.
        let mut c = caps(None, Some(4000));
        c.estimate_kbps = Some(300);
        assert_eq!(choose_layer(&layers, &rids, &c), Some(1));
        let mut c = caps(Some(Resolution::Vga), None);
        c.pinned = Some("q".into());
        assert_eq!(choose_layer(&layers, &rids, &c), Some(1));
        c.pinned = Some("f".into());
        assert_eq!(choose_layer(&layers, &rids, &c), Some(2));
        // Inactive layers are never chosen; unknown sizes only when nothing else is known.
        let mut l = layers;
        l[0].active = false;
        assert_eq!(choose_layer(&l, &rids, &caps(None, None)), Some(2));
        let unknown = [LayerStat {
            active: true,
            ..Default::default()
        }];
        assert_eq!(
            choose_layer(&unknown, &rids, &caps(Some(Resolution::Vga), None)),
            Some(0)
        );
        assert_eq!(choose_layer(&[], &rids, &caps(None, None)), None);
        // Only the 720p layer's size known yet, under a VGA cap: not 720p, but a layer whose
        // size is still unknown (the lower bitrate), until the sizes come in.
        let mut early = layers;
        early[1].width = 0;
        early[1].height = 0;
        early[2].width = 0;
        early[2].height = 0;
        assert_eq!(choose_layer(&early, &rids, &caps(Some(Resolution::Vga), None)), Some(1));
        assert_eq!(choose_layer(&early, &rids, &caps(None, None)), Some(0));
    }

    #[test]
    fn member_caps_override_the_group() {
        let media = crate::model::MediaSettings::default();
        let member = crate::model::MediaCaps {
            max_resolution: Some(Resolution::Vga),
            max_bitrate_kbps: None,
        };
        let c = LegCaps::of(&media, Some(&member));
        assert_eq!(c.max_resolution, Some(Resolution::Vga));
        assert_eq!(c.max_kbps, Some(media.max_bitrate_kbps));
        assert_eq!(LegCaps::of(&media, None).max_resolution, Some(media.max_resolution));
    }

    #[test]
    fn sizes_come_from_sps_and_vp8_headers() {
        // The fixtures' SPSs (x264 baseline): 640x360 and 1280x720 crop 8 lines, 320x180 crops 12.
        let sps_360 = [
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00,
            0x03, 0x00, 0x3c, 0x0f, 0x18, 0x32, 0x48,
        ];
        let sps_180 = [
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x01, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
            0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
        ];
        let sps_720 = [
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
            0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
        ];
        assert_eq!(keyframe_dimensions("video/H264", &sps_360), Some((640, 360)));
        assert_eq!(keyframe_dimensions("video/H264", &sps_180), Some((320, 180)));
        assert_eq!(keyframe_dimensions("video/H264", &sps_720), Some((1280, 720)));
        let stap = [
            &[0x18u8, 0x00, sps_360.len() as u8][..],
            &sps_360[..],
            &[0x00, 0x02, 0x68, 0xce],
        ]
        .concat();
        assert_eq!(keyframe_dimensions("video/H264", &stap), Some((640, 360)));
        assert_eq!(keyframe_dimensions("video/H264", &[0x65, 0x88]), None);
        // VP8: descriptor (S=1, PID 0), key frame tag, start code, 320x240.
        let vp8 = [0x10, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        assert_eq!(keyframe_dimensions("video/VP8", &vp8), Some((320, 240)));
        assert!(fits(Resolution::Vga, 640, 360) && !fits(Resolution::Vga, 1280, 720));
        assert!(fits(Resolution::Hd, 720, 1280));
    }
}
