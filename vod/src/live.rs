//! Live low-latency HLS for one program, kept in memory: the last few segments (at least three
//! and four seconds) with their parts as slices of them, the open segment's parts so far, and the LL-HLS playlist (`EXT-X-PART`,
//! `EXT-X-PRELOAD-HINT`, blocking playlist reload). `hls_m3u8` 0.7 has no LL-HLS tags, so this
//! playlist is written here; recordings' playlists use `hls_m3u8` (see [`crate::recordings`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::segment::SegmentEvent;

/// Complete segments kept for late joiners: at least this many...
const KEEP_SEGMENTS: usize = 3;
/// ...and at least this many seconds of them.
const KEEP_SECONDS: f64 = 4.0;
/// Segments whose parts stay listed (the spec asks for at least the last three target durations).
const PARTS_FOR_LAST: usize = 3;
/// A blocking request waits at most this long.
const BLOCK_LIMIT: Duration = Duration::from_secs(6);

struct LivePart {
    duration: f64,
    independent: bool,
    data: Bytes,
}

struct LiveSegment {
    seq: u64,
    duration: f64,
    discontinuity: bool,
    parts: Vec<LivePart>,
    data: Bytes,
}

#[derive(Default)]
struct LiveState {
    segments: VecDeque<LiveSegment>,
    /// The segment being written: its number and the parts so far.
    open: Option<(u64, Vec<LivePart>)>,
    /// Discontinuities dropped off the front (EXT-X-DISCONTINUITY-SEQUENCE).
    dropped_discontinuities: u64,
    /// Longest segment and part seen (the playlist's targets never shrink).
    longest_segment: f64,
    longest_part: f64,
    /// The next segment starts a new source.
    pending_discontinuity: bool,
}

/// Which media a live request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// A whole segment.
    Segment(u64),
    /// Part `1` of segment `0`.
    Part(u64, u32),
}

/// Why a live request got nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum LiveError {
    /// The chunk fell out of the window, or is too far ahead.
    Gone,
    /// Nothing arrived in time (nobody publishing).
    Timeout,
    /// `_HLS_msn` too far ahead of the live edge.
    BadRequest,
}

/// One program's live window.
pub struct LiveBuffer {
    state: Mutex<LiveState>,
    version: watch::Sender<u64>,
    part_target: f64,
    segment_target: f64,
}

impl LiveBuffer {
    /// An empty window for segments of `segment_target` and parts of `part_target`.
    pub fn new(segment_target: Duration, part_target: Duration) -> LiveBuffer {
        LiveBuffer {
            state: Mutex::new(LiveState::default()),
            version: watch::channel(0).0,
            part_target: part_target.as_secs_f64(),
            segment_target: segment_target.as_secs_f64(),
        }
    }

    /// The next segment comes from another source (the program switched).
    pub fn mark_discontinuity(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.pending_discontinuity = true;
        }
    }

    /// Adds what the segmenter produced (segment numbers as given).
    pub fn push(&self, event: &SegmentEvent) {
        let Ok(mut s) = self.state.lock() else { return };
        match event {
            SegmentEvent::Part {
                segment,
                duration,
                independent,
                data,
                ..
            } => {
                if s.open.as_ref().is_none_or(|(seq, _)| seq != segment) {
                    s.open = Some((*segment, Vec::new()));
                }
                s.longest_part = s.longest_part.max(*duration);
                if let Some((_, parts)) = s.open.as_mut() {
                    parts.push(LivePart {
                        duration: *duration,
                        independent: *independent,
                        data: data.clone(),
                    });
                }
            }
            SegmentEvent::Segment(seg) => {
                let mut parts = match s.open.take() {
                    Some((seq, parts)) if seq == seg.seq => parts,
                    _ => Vec::new(),
                };
                // The parts are the segment's bytes in order: keep one copy, the parts as
                // slices of the segment.
                if parts.iter().map(|p| p.data.len()).sum::<usize>() == seg.data.len() {
                    let mut at = 0;
                    for p in &mut parts {
                        let len = p.data.len();
                        p.data = seg.data.slice(at..at + len);
                        at += len;
                    }
                }
                let discontinuity = seg.discontinuity || std::mem::take(&mut s.pending_discontinuity);
                s.longest_segment = s.longest_segment.max(seg.duration);
                s.segments.push_back(LiveSegment {
                    seq: seg.seq,
                    duration: seg.duration,
                    discontinuity,
                    parts,
                    data: seg.data.clone(),
                });
                while s.segments.len() > KEEP_SEGMENTS
                    && s.segments.iter().skip(1).map(|g| g.duration).sum::<f64>() >= KEEP_SECONDS
                {
                    if let Some(old) = s.segments.pop_front() {
                        if old.discontinuity {
                            s.dropped_discontinuities += 1;
                        }
                    }
                }
            }
        }
        drop(s);
        self.version.send_modify(|v| *v += 1);
    }

    /// Whether any media has arrived yet.
    pub fn has_media(&self) -> bool {
        self.state
            .lock()
            .map(|s| !s.segments.is_empty() || s.open.as_ref().is_some_and(|(_, p)| !p.is_empty()))
            .unwrap_or(false)
    }

    /// Waits until `ready` holds for the window, up to [`BLOCK_LIMIT`].
    async fn wait_until(&self, ready: impl Fn(&LiveState) -> bool) -> bool {
        let mut rx = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + BLOCK_LIMIT;
        loop {
            if self.state.lock().map(|s| ready(&s)).unwrap_or(false) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return false,
            }
        }
    }

    /// The playlist, after waiting (blocking reload) for segment `msn` / part `part` when asked,
    /// and at least for the first media. `query` is appended to every media URI.
    pub async fn playlist(&self, msn: Option<u64>, part: Option<u32>, query: &str) -> Result<String, LiveError> {
        if let Some(msn) = msn {
            let edge = self.state.lock().map(|s| next_seq(&s)).unwrap_or(0);
            if msn > edge + 2 {
                return Err(LiveError::BadRequest);
            }
            let ok = self
                .wait_until(|s| match part {
                    None => s.segments.back().is_some_and(|g| g.seq >= msn),
                    Some(p) => {
                        s.segments.back().is_some_and(|g| g.seq > msn)
                            || s.open
                                .as_ref()
                                .is_some_and(|(seq, parts)| *seq > msn || (*seq == msn && parts.len() as u32 > p))
                    }
                })
                .await;
            if !ok {
                return Err(LiveError::Timeout);
            }
        } else if !self.has_media() && !self.wait_until(|s| !s.segments.is_empty() || s.open.is_some()).await {
            return Err(LiveError::Timeout);
        }
        let s = self.state.lock().map_err(|_| LiveError::Gone)?;
        Ok(self.render(&s, query))
    }

    fn render(&self, s: &LiveState, query: &str) -> String {
        let part_target = s.longest_part.max(self.part_target);
        let target = s.longest_segment.max(self.segment_target).ceil() as u64;
        let first = s
            .segments
            .front()
            .map(|g| g.seq)
            .or(s.open.as_ref().map(|(seq, _)| *seq))
            .unwrap_or(0);
        let mut out = String::with_capacity(2048);
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            part_target * 3.0
        );
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", s.dropped_discontinuities);
        let with_parts_from = s.segments.len().saturating_sub(PARTS_FOR_LAST);
        for (i, g) in s.segments.iter().enumerate() {
            if g.discontinuity && i > 0 {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            if i >= with_parts_from {
                for (k, p) in g.parts.iter().enumerate() {
                    part_line(&mut out, g.seq, k, p, query);
                }
            }
            let _ = writeln!(out, "#EXTINF:{:.3},", g.duration);
            let _ = writeln!(out, "{}.ts?{query}", g.seq);
        }
        let (open_seq, open_parts) = match &s.open {
            Some((seq, parts)) => (*seq, parts.len()),
            None => (next_seq(s), 0),
        };
        if let Some((seq, parts)) = &s.open {
            if s.pending_discontinuity && !s.segments.is_empty() {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            for (k, p) in parts.iter().enumerate() {
                part_line(&mut out, *seq, k, p, query);
            }
        }
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{open_seq}.{open_parts}.ts?{query}\""
        );
        out
    }

    /// A segment or part, waiting for it if it is the next one expected (preload hint).
    pub async fn chunk(&self, chunk: Chunk) -> Result<Bytes, LiveError> {
        let find = |s: &LiveState| -> Option<Bytes> {
            match chunk {
                Chunk::Segment(seq) => s.segments.iter().find(|g| g.seq == seq).map(|g| g.data.clone()),
                Chunk::Part(seq, k) => s
                    .segments
                    .iter()
                    .find(|g| g.seq == seq)
                    .and_then(|g| g.parts.get(k as usize))
                    .or_else(|| {
                        s.open
                            .as_ref()
                            .filter(|(o, _)| *o == seq)
                            .and_then(|(_, p)| p.get(k as usize))
                    })
                    .map(|p| p.data.clone()),
            }
        };
        let upcoming = |s: &LiveState| -> bool {
            let next = next_seq(s);
            match chunk {
                Chunk::Segment(seq) => seq >= next.saturating_sub(1) && seq <= next + 1,
                Chunk::Part(seq, _) => seq >= next.saturating_sub(1) && seq <= next + 1,
            }
        };
        {
            let s = self.state.lock().map_err(|_| LiveError::Gone)?;
            if let Some(b) = find(&s) {
                return Ok(b);
            }
            if !upcoming(&s) {
                return Err(LiveError::Gone);
            }
        }
        if self.wait_until(|s| find(s).is_some()).await {
            let s = self.state.lock().map_err(|_| LiveError::Gone)?;
            return find(&s).ok_or(LiveError::Gone);
        }
        Err(LiveError::Timeout)
    }
}

fn part_line(out: &mut String, seq: u64, k: usize, p: &LivePart, query: &str) {
    let _ = writeln!(
        out,
        "#EXT-X-PART:DURATION={:.3},URI=\"{seq}.{k}.ts?{query}\"{}",
        p.duration,
        if p.independent { ",INDEPENDENT=YES" } else { "" }
    );
}

/// The number of the segment being written (or the next one).
fn next_seq(s: &LiveState) -> u64 {
    match (&s.open, s.segments.back()) {
        (Some((seq, _)), _) => *seq,
        (None, Some(g)) => g.seq + 1,
        (None, None) => 0,
    }
}
