//! One MPEG-TS muxer (libavformat `mpegts`) writing into memory: one per segment, so each
//! segment starts with its own PAT/PMT. Bytes written so far can be taken at any frame
//! boundary, which is how a segment is split into parts.

use std::ffi::CString;
use std::ptr;

use bytes::{Bytes, BytesMut};
use ffmpeg_next::ffi;

use crate::VodError;

/// The video codec of a muxer (Annex-B frames either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    fn id(self) -> ffi::AVCodecID {
        match self {
            VideoCodec::H264 => ffi::AVCodecID::AV_CODEC_ID_H264,
            VideoCodec::H265 => ffi::AVCodecID::AV_CODEC_ID_HEVC,
        }
    }
}

/// The audio track of a muxer: AAC with its AudioSpecificConfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AudioTrack {
    pub config: Bytes,
    pub rate: u32,
    pub channels: u16,
}

/// An MPEG-TS muxer writing into a growing in-memory buffer.
pub(crate) struct TsMuxer {
    ctx: *mut ffi::AVFormatContext,
    out: Box<BytesMut>,
    pkt: *mut ffi::AVPacket,
    video: Option<i32>,
    audio: Option<i32>,
    trailer_written: bool,
}

// The raw pointers are owned exclusively by this struct.
unsafe impl Send for TsMuxer {}

const IO_BUF: usize = 32 * 1024;

unsafe extern "C" fn write_cb(opaque: *mut libc::c_void, buf: *mut u8, size: libc::c_int) -> libc::c_int {
    if opaque.is_null() || buf.is_null() || size <= 0 {
        return size.max(0);
    }
    let out = &mut *(opaque as *mut BytesMut);
    out.extend_from_slice(std::slice::from_raw_parts(buf, size as usize));
    size
}

fn check(ret: libc::c_int, what: &str) -> Result<libc::c_int, VodError> {
    if ret < 0 {
        Err(VodError::Ffmpeg(format!("{what}: {}", ffmpeg_next::Error::from(ret))))
    } else {
        Ok(ret)
    }
}

impl TsMuxer {
    /// A muxer with an H.264 or H.265 track (if `video`) and an AAC track (if `audio`), header
    /// written.
    pub fn new(video: Option<VideoCodec>, audio: Option<&AudioTrack>) -> Result<TsMuxer, VodError> {
        crate::transcode::init();
        let mut m = TsMuxer {
            ctx: ptr::null_mut(),
            out: Box::new(BytesMut::with_capacity(64 * 1024)),
            pkt: ptr::null_mut(),
            video: None,
            audio: None,
            trailer_written: false,
        };
        unsafe {
            let fmt = CString::new("mpegts").map_err(|e| VodError::Ffmpeg(e.to_string()))?;
            check(
                ffi::avformat_alloc_output_context2(&mut m.ctx, ptr::null_mut(), fmt.as_ptr(), ptr::null()),
                "mpegts muxer",
            )?;
            if m.ctx.is_null() {
                return Err(VodError::Ffmpeg("mpegts muxer unavailable".into()));
            }
            let buf = ffi::av_malloc(IO_BUF) as *mut u8;
            if buf.is_null() {
                return Err(VodError::Ffmpeg("out of memory".into()));
            }
            let opaque = &mut *m.out as *mut BytesMut as *mut libc::c_void;
            let pb = ffi::avio_alloc_context(buf, IO_BUF as libc::c_int, 1, opaque, None, Some(write_cb), None);
            if pb.is_null() {
                ffi::av_free(buf as *mut libc::c_void);
                return Err(VodError::Ffmpeg("out of memory".into()));
            }
            (*m.ctx).pb = pb;
            (*m.ctx).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
            // Keep the caller's timestamps exactly: segments of one stream share one timeline.
            (*m.ctx).avoid_negative_ts = 0;
            (*m.ctx).max_delay = 0;
            if let Some(codec) = video {
                let st = ffi::avformat_new_stream(m.ctx, ptr::null());
                if st.is_null() {
                    return Err(VodError::Ffmpeg("cannot add video stream".into()));
                }
                let par = (*st).codecpar;
                (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
                (*par).codec_id = codec.id();
                (*st).time_base = ffi::AVRational { num: 1, den: 90000 };
                m.video = Some((*st).index);
            }
            if let Some(a) = audio {
                let st = ffi::avformat_new_stream(m.ctx, ptr::null());
                if st.is_null() {
                    return Err(VodError::Ffmpeg("cannot add audio stream".into()));
                }
                let par = (*st).codecpar;
                (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_AUDIO;
                (*par).codec_id = ffi::AVCodecID::AV_CODEC_ID_AAC;
                (*par).sample_rate = a.rate as libc::c_int;
                ffi::av_channel_layout_default(&mut (*par).ch_layout, a.channels.max(1) as libc::c_int);
                let ed = ffi::av_mallocz(a.config.len() + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
                if ed.is_null() {
                    return Err(VodError::Ffmpeg("out of memory".into()));
                }
                ptr::copy_nonoverlapping(a.config.as_ptr(), ed, a.config.len());
                (*par).extradata = ed;
                (*par).extradata_size = a.config.len() as libc::c_int;
                (*st).time_base = ffi::AVRational { num: 1, den: 90000 };
                m.audio = Some((*st).index);
            }
            check(ffi::avformat_write_header(m.ctx, ptr::null_mut()), "mpegts header")?;
            m.pkt = ffi::av_packet_alloc();
            if m.pkt.is_null() {
                return Err(VodError::Ffmpeg("out of memory".into()));
            }
        }
        Ok(m)
    }

    /// Whether the muxer has a video track.
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// Writes one frame (90 kHz timestamps). The data must be Annex-B H.264/H.265 or raw AAC.
    pub fn write(&mut self, video: bool, pts: i64, dts: i64, key: bool, data: &[u8]) -> Result<(), VodError> {
        let idx = if video { self.video } else { self.audio };
        let Some(idx) = idx else {
            return Err(VodError::BadMedia("frame for a track the segment does not have".into()));
        };
        if data.is_empty() || data.len() > i32::MAX as usize {
            return Err(VodError::BadMedia("empty frame".into()));
        }
        unsafe {
            let st = *(*self.ctx).streams.add(idx as usize);
            let tb = (*st).time_base;
            let src = ffi::AVRational { num: 1, den: 90000 };
            let p = self.pkt;
            ffi::av_packet_unref(p);
            // Not reference counted: av_write_frame does not keep the data past the call.
            (*p).data = data.as_ptr() as *mut u8;
            (*p).size = data.len() as libc::c_int;
            (*p).stream_index = idx;
            (*p).pts = ffi::av_rescale_q(pts, src, tb);
            (*p).dts = ffi::av_rescale_q(dts, src, tb);
            (*p).flags = if key { ffi::AV_PKT_FLAG_KEY } else { 0 };
            let r = ffi::av_write_frame(self.ctx, p);
            (*p).data = ptr::null_mut();
            (*p).size = 0;
            check(r, "mpegts write")?;
        }
        Ok(())
    }

    /// Flushes buffered PES data and returns every byte written since the last call.
    pub fn take(&mut self) -> Result<Bytes, VodError> {
        unsafe {
            if !self.trailer_written {
                check(ffi::av_write_frame(self.ctx, ptr::null_mut()), "mpegts flush")?;
                ffi::avio_flush((*self.ctx).pb);
            }
        }
        let taken = self.out.split().freeze();
        // The next part is about as long as this one: room for it now, so the buffer is not
        // regrown (and copied) as the muxer writes.
        self.out.reserve(taken.len() + taken.len() / 4 + IO_BUF);
        Ok(taken)
    }

    /// Writes the trailer and returns the remaining bytes.
    pub fn finish(&mut self) -> Result<Bytes, VodError> {
        if !self.trailer_written {
            self.trailer_written = true;
            unsafe {
                check(ffi::av_write_trailer(self.ctx), "mpegts trailer")?;
                ffi::avio_flush((*self.ctx).pb);
            }
        }
        Ok(self.out.split().freeze())
    }
}

impl Drop for TsMuxer {
    fn drop(&mut self) {
        unsafe {
            if !self.pkt.is_null() {
                ffi::av_packet_free(&mut self.pkt);
            }
            if !self.ctx.is_null() {
                let mut pb = (*self.ctx).pb;
                if !pb.is_null() {
                    ffi::av_freep(&mut (*pb).buffer as *mut *mut u8 as *mut libc::c_void);
                    ffi::avio_context_free(&mut pb);
                    (*self.ctx).pb = ptr::null_mut();
                }
                ffi::avformat_free_context(self.ctx);
                self.ctx = ptr::null_mut();
            }
        }
    }
}
