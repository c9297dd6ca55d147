//! Uploads: a media file (MP4, WebM, anything FFmpeg opens) turned into the same segments a live
//! track gets. H.264 and AAC pass through (MP4's length-prefixed H.264 is rewritten to Annex-B
//! with SPS/PPS on keyframes); other codecs are transcoded. Synchronous: run it on a blocking
//! thread.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use ff::codec::Id;
use ff::media::Type;
use ff::Rescale;
use ffmpeg_next as ff;

use crate::frame::{Codec, Frame, CLOCK_HZ};
use crate::segment::{SegmentEvent, Segmenter, SegmenterConfig};
use crate::transcode::{poster_jpeg, AudioTranscoder, VideoTranscoder};
use crate::VodError;

/// What a converted upload turned out to be.
#[derive(Clone, Debug, Default)]
pub struct UploadInfo {
    /// Total duration of the segments, in seconds.
    pub duration_s: f64,
    /// A JPEG from the first keyframe, when there is video.
    pub poster: Option<Bytes>,
    /// The video codec as read from the file ("h264", "vp8", ...).
    pub video: Option<String>,
    /// The audio codec as read from the file ("aac", "opus", ...).
    pub audio: Option<String>,
}

/// How video packets become H.264 frames.
enum VideoPath {
    /// H.264 in MP4/MKV form (length-prefixed NAL units): rewrite to Annex-B.
    Avcc {
        len_size: usize,
        ps: Bytes,
    },
    /// Already Annex-B (TS, raw .h264).
    AnnexB,
    Transcode(VideoTranscoder),
}

enum AudioPath {
    Aac(Bytes),
    /// AAC with ADTS headers (TS, .aac): strip them.
    Adts,
    Transcode(AudioTranscoder),
}

/// Reads a media file (MP4 and anything FFmpeg opens) and emits the same segments a live track would get.
/// Not a media file / no audio or video stream -> Err(VodError::BadMedia(<a sentence a user understands>)).
pub fn convert_file(
    path: &Path,
    cfg: SegmenterConfig,
    on_event: &mut dyn FnMut(SegmentEvent) -> Result<(), VodError>,
) -> Result<UploadInfo, VodError> {
    crate::transcode::init();
    let mut input = ff::format::input(&path)
        .map_err(|_| VodError::BadMedia("This file is not a video or audio file we can read.".into()))?;
    let vstream = input
        .streams()
        .best(Type::Video)
        .map(|s| (s.index(), s.time_base(), s.parameters()));
    let astream = input
        .streams()
        .best(Type::Audio)
        .map(|s| (s.index(), s.time_base(), s.parameters()));
    if vstream.is_none() && astream.is_none() {
        return Err(VodError::BadMedia("This file has no video or audio track.".into()));
    }
    let mut info = UploadInfo::default();
    let mut vpath = None;
    if let Some((_, _, par)) = &vstream {
        let id = par.id();
        info.video = Some(id.name().to_string());
        vpath = Some(match id {
            Id::H264 => {
                let extra = extradata(par);
                match parse_avcc(&extra) {
                    Some((len_size, ps)) => VideoPath::Avcc { len_size, ps },
                    None => VideoPath::AnnexB,
                }
            }
            _ => VideoPath::Transcode(VideoTranscoder::from_parameters(par.clone()).map_err(|e| {
                VodError::BadMedia(format!("The video track ({}) could not be decoded: {e}", id.name()))
            })?),
        });
    }
    let mut apath = None;
    if let Some((_, _, par)) = &astream {
        let id = par.id();
        info.audio = Some(id.name().to_string());
        let extra = extradata(par);
        apath = Some(match id {
            Id::AAC if extra.len() >= 2 => AudioPath::Aac(Bytes::from(extra)),
            Id::AAC => AudioPath::Adts,
            _ => AudioPath::Transcode(AudioTranscoder::from_parameters(par.clone()).map_err(|e| {
                VodError::BadMedia(format!("The audio track ({}) could not be decoded: {e}", id.name()))
            })?),
        });
    }
    let vidx = vstream.as_ref().map(|v| v.0);
    let aidx = astream.as_ref().map(|a| a.0);
    let vtb = vstream
        .as_ref()
        .map(|v| v.1)
        .unwrap_or(ff::Rational(1, CLOCK_HZ as i32));
    let atb = astream
        .as_ref()
        .map(|a| a.1)
        .unwrap_or(ff::Rational(1, CLOCK_HZ as i32));

    let mut seg = Segmenter::new(cfg);
    let mut offset: Option<i64> = None;
    let mut total = 0.0;
    let mut emit = |events: Vec<SegmentEvent>, total: &mut f64| -> Result<(), VodError> {
        for e in events {
            if let SegmentEvent::Segment(s) = &e {
                *total += s.duration;
            }
            on_event(e)?;
        }
        Ok(())
    };
    let mut frames = 0u64;
    for (stream, packet) in input.packets() {
        let idx = stream.index();
        let is_video = Some(idx) == vidx;
        if !is_video && Some(idx) != aidx {
            continue;
        }
        let Some(data) = packet.data() else { continue };
        let tb = if is_video { vtb } else { atb };
        let to90 = |t: i64| t.rescale(tb, ff::Rational(1, CLOCK_HZ as i32));
        let Some(pts) = packet.pts().or(packet.dts()).map(to90) else {
            continue;
        };
        let dts = packet.dts().map(to90).unwrap_or(pts);
        // Rebase so the first decode timestamp is not negative (MP4 B-frame edit lists).
        let off = *offset.get_or_insert((-dts.min(pts)).max(0));
        let (pts, dts) = (pts + off, dts + off);
        if pts < 0 || dts < 0 {
            continue;
        }
        let mut out = Vec::new();
        if is_video {
            match vpath.as_mut() {
                Some(VideoPath::Avcc { len_size, ps }) => {
                    let key = packet.is_key();
                    if let Some(d) = avcc_to_annexb(data, *len_size, if key { Some(ps) } else { None }) {
                        out.push((
                            Frame {
                                codec: Codec::H264,
                                pts,
                                keyframe: key,
                                data: d,
                            },
                            dts,
                        ));
                    }
                }
                Some(VideoPath::AnnexB) => out.push((
                    Frame {
                        codec: Codec::H264,
                        pts,
                        keyframe: packet.is_key(),
                        data: Bytes::copy_from_slice(data),
                    },
                    dts,
                )),
                Some(VideoPath::Transcode(tc)) => {
                    for f in tc.push(pts, data)? {
                        out.push((
                            Frame {
                                codec: Codec::H264,
                                pts: f.pts,
                                keyframe: f.key,
                                data: f.data,
                            },
                            f.dts,
                        ));
                    }
                }
                None => {}
            }
        } else {
            match apath.as_mut() {
                Some(AudioPath::Aac(config)) => out.push((
                    Frame {
                        codec: Codec::Aac { config: config.clone() },
                        pts,
                        keyframe: true,
                        data: Bytes::copy_from_slice(data),
                    },
                    pts,
                )),
                Some(AudioPath::Adts) => {
                    if let Some((config, payload)) = strip_adts(data) {
                        out.push((
                            Frame {
                                codec: Codec::Aac { config },
                                pts,
                                keyframe: true,
                                data: payload,
                            },
                            pts,
                        ));
                    }
                }
                Some(AudioPath::Transcode(tc)) => {
                    let config = tc.track().config.clone();
                    for f in tc.push(pts, data)? {
                        out.push((
                            Frame {
                                codec: Codec::Aac { config: config.clone() },
                                pts: f.pts,
                                keyframe: true,
                                data: f.data,
                            },
                            f.pts,
                        ));
                    }
                }
                None => {}
            }
        }
        for (f, dts) in out {
            if f.codec == Codec::H264 && f.keyframe && info.poster.is_none() {
                info.poster = poster_jpeg(&f.data).ok();
            }
            frames += 1;
            let ev = seg.push_with_dts(f, dts)?;
            emit(ev, &mut total)?;
        }
    }
    // Drain the transcoders.
    let mut tail = Vec::new();
    if let Some(VideoPath::Transcode(tc)) = vpath.as_mut() {
        for f in tc.flush()? {
            tail.push((
                Frame {
                    codec: Codec::H264,
                    pts: f.pts,
                    keyframe: f.key,
                    data: f.data,
                },
                f.dts,
            ));
        }
    }
    if let Some(AudioPath::Transcode(tc)) = apath.as_mut() {
        let config = tc.track().config.clone();
        for f in tc.flush()? {
            tail.push((
                Frame {
                    codec: Codec::Aac { config: config.clone() },
                    pts: f.pts,
                    keyframe: true,
                    data: f.data,
                },
                f.pts,
            ));
        }
    }
    tail.sort_by_key(|(_, dts)| *dts);
    for (f, dts) in tail {
        if f.codec == Codec::H264 && f.keyframe && info.poster.is_none() {
            info.poster = poster_jpeg(&f.data).ok();
        }
        frames += 1;
        let ev = seg.push_with_dts(f, dts)?;
        emit(ev, &mut total)?;
    }
    let ev = seg.finish()?;
    emit(ev, &mut total)?;
    if frames == 0 || total <= 0.0 {
        return Err(VodError::BadMedia(
            "This file contains no playable audio or video.".into(),
        ));
    }
    info.duration_s = total;
    Ok(info)
}

fn extradata(par: &ff::codec::Parameters) -> Vec<u8> {
    unsafe {
        let p = par.as_ptr();
        if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize).to_vec()
        }
    }
}

/// Parses an avcC record: NAL length size and the SPS/PPS as Annex-B.
fn parse_avcc(d: &[u8]) -> Option<(usize, Bytes)> {
    if d.len() < 7 || d[0] != 1 {
        return None;
    }
    let len_size = (d[4] & 0x03) as usize + 1;
    let mut ps = BytesMut::new();
    let mut i = 5;
    let nsps = (d[i] & 0x1f) as usize;
    i += 1;
    for _ in 0..nsps {
        let n = u16::from_be_bytes([*d.get(i)?, *d.get(i + 1)?]) as usize;
        ps.put_slice(&[0, 0, 0, 1]);
        ps.put_slice(d.get(i + 2..i + 2 + n)?);
        i += 2 + n;
    }
    let npps = *d.get(i)? as usize;
    i += 1;
    for _ in 0..npps {
        let n = u16::from_be_bytes([*d.get(i)?, *d.get(i + 1)?]) as usize;
        ps.put_slice(&[0, 0, 0, 1]);
        ps.put_slice(d.get(i + 2..i + 2 + n)?);
        i += 2 + n;
    }
    Some((len_size, ps.freeze()))
}

/// Rewrites length-prefixed NAL units to Annex-B, with `ps` first (keyframes) unless present.
fn avcc_to_annexb(d: &[u8], len_size: usize, ps: Option<&Bytes>) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(d.len() + 64);
    let mut nalus = Vec::new();
    let mut i = 0;
    while i + len_size <= d.len() {
        let n = d[i..i + len_size].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        i += len_size;
        let nal = d.get(i..i + n)?;
        i += n;
        if !nal.is_empty() {
            nalus.push(nal);
        }
    }
    let has_sps = nalus.iter().any(|n| n[0] & 0x1f == 7);
    if let Some(ps) = ps.filter(|_| !has_sps) {
        out.put_slice(ps);
    }
    for n in nalus {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(n);
    }
    (!out.is_empty()).then(|| out.freeze())
}

/// Splits an ADTS frame into its AudioSpecificConfig and raw payload.
fn strip_adts(d: &[u8]) -> Option<(Bytes, Bytes)> {
    if d.len() < 7 || d[0] != 0xff || d[1] & 0xf0 != 0xf0 {
        return None;
    }
    let hdr = if d[1] & 0x01 == 0 { 9 } else { 7 };
    let profile = ((d[2] >> 6) & 0x03) + 1;
    let freq = (d[2] >> 2) & 0x0f;
    let ch = ((d[2] & 0x01) << 2) | (d[3] >> 6);
    let config = Bytes::from(vec![(profile << 3) | (freq >> 1), ((freq & 1) << 7) | (ch << 3)]);
    Some((config, Bytes::copy_from_slice(d.get(hdr..)?)))
}
