//! Live low-latency HLS for one program: the last few segments (at least three and four
//! seconds), the open segment's parts so far, and the LL-HLS playlist (`EXT-X-PART`,
//! `EXT-X-PRELOAD-HINT`, blocking playlist reload). `hls_m3u8` 0.7 has no LL-HLS tags, so this
//! playlist is written here; recordings' playlists use `hls_m3u8` (see [`crate::recordings`]).
//!
//! The media bytes live in one file per segment under the program's directory (parts are
//! appended as they come; a part is a byte range of its segment's file), so a camera's window
//! costs page cache rather than heap. As segments leave the window their files are written
//! over by new segments (two kept spare) or removed, and the directory goes when the window is
//! dropped. If the directory cannot be written, bytes are kept in memory instead.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::segment::{Segment, SegmentEvent};

/// Complete segments kept for late joiners: at least this many...
const KEEP_SEGMENTS: usize = 3;
/// ...and at least this many seconds of them.
const KEEP_SECONDS: f64 = 4.0;
/// Segments whose parts stay listed (the spec asks for at least the last three target durations).
const PARTS_FOR_LAST: usize = 3;
/// A blocking request waits at most this long.
const BLOCK_LIMIT: Duration = Duration::from_secs(6);

/// Files of segments that left the window, kept to be written over by later segments:
/// rewriting pages already in the page cache costs less than creating, growing and removing a
/// file per segment.
const SPARE_FILES: usize = 2;

/// A segment file no segment uses, ready to be written over from its start.
struct SpareFile {
    file: File,
    path: PathBuf,
}

type Spares = Arc<Mutex<Vec<SpareFile>>>;

/// One segment's file. When the last reference goes (the window moved on and no request is
/// still reading it) it becomes a spare of its window, or is removed.
struct SegmentFile {
    file: File,
    path: PathBuf,
    spares: std::sync::Weak<Mutex<Vec<SpareFile>>>,
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        if let Some(spares) = self.spares.upgrade() {
            if let Ok(mut spares) = spares.lock() {
                if spares.len() < SPARE_FILES {
                    if let Ok(file) = self.file.try_clone() {
                        spares.push(SpareFile { file, path });
                        return;
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// Where a part's or a segment's bytes are.
#[derive(Clone)]
enum Body {
    /// `len` bytes at `at` in a segment file.
    File {
        file: Arc<SegmentFile>,
        at: u64,
        len: usize,
    },
    /// In memory (the directory could not be written).
    Memory(Bytes),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::File { len, .. } => *len,
            Body::Memory(b) => b.len(),
        }
    }

    /// The bytes (a positioned read for a file; the page cache usually has them).
    fn read(&self) -> Result<Bytes, LiveError> {
        match self {
            Body::Memory(b) => Ok(b.clone()),
            Body::File { file, at, len } => {
                let mut buf = vec![0u8; *len];
                file.file.read_exact_at(&mut buf, *at).map_err(|e| {
                    tracing::warn!(path = %file.path.display(), "live segment unreadable: {e}");
                    LiveError::Gone
                })?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

struct LivePart {
    duration: f64,
    independent: bool,
    body: Body,
}

struct LiveSegment {
    seq: u64,
    duration: f64,
    discontinuity: bool,
    parts: Vec<LivePart>,
    body: Body,
}

/// The segment being written: its number, its file (bytes appended so far) and parts.
struct OpenSegment {
    seq: u64,
    file: Option<Arc<SegmentFile>>,
    written: u64,
    parts: Vec<LivePart>,
}

#[derive(Default)]
struct LiveState {
    segments: VecDeque<LiveSegment>,
    open: Option<OpenSegment>,
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
    /// The program's segment files; `None`: bytes stay in memory.
    dir: Option<PathBuf>,
    spares: Spares,
}

impl Drop for LiveBuffer {
    fn drop(&mut self) {
        if let Ok(s) = self.state.get_mut() {
            s.segments.clear();
            s.open = None;
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl LiveBuffer {
    /// An empty window for segments of `segment_target` and parts of `part_target`, its
    /// segment files in `dir` (created; removed with the window). Without a usable `dir` the
    /// bytes are kept in memory.
    pub fn new(segment_target: Duration, part_target: Duration, dir: Option<PathBuf>) -> LiveBuffer {
        let dir = dir.and_then(|d| match std::fs::create_dir_all(&d) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::warn!(dir = %d.display(), "live HLS kept in memory: cannot create the directory: {e}");
                None
            }
        });
        LiveBuffer {
            state: Mutex::new(LiveState::default()),
            version: watch::channel(0).0,
            part_target: part_target.as_secs_f64(),
            segment_target: segment_target.as_secs_f64(),
            dir,
            spares: Spares::default(),
        }
    }

    /// The next segment comes from another source (the program switched).
    pub fn mark_discontinuity(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.pending_discontinuity = true;
        }
    }

    /// A file for a new segment, written from its start: a spare (its old bytes past what is
    /// written are never read), else a new, empty file `name.ts`, if there is a directory and
    /// it is writable.
    fn create_file(&self, name: &str) -> Option<Arc<SegmentFile>> {
        let dir = self.dir.as_ref()?;
        let spare = self.spares.lock().ok().and_then(|mut s| s.pop());
        if let Some(SpareFile { file, path }) = spare {
            return Some(Arc::new(SegmentFile {
                file,
                path,
                spares: Arc::downgrade(&self.spares),
            }));
        }
        let path = dir.join(format!("{name}.ts"));
        match File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
        {
            Ok(file) => Some(Arc::new(SegmentFile {
                file,
                path,
                spares: Arc::downgrade(&self.spares),
            })),
            Err(e) => {
                tracing::warn!(path = %path.display(), "live segment kept in memory: {e}");
                None
            }
        }
    }

    /// Appends `data` to the open segment's file; in memory if there is none or it fails.
    fn append(open: &mut OpenSegment, data: &Bytes) -> Body {
        if let Some(file) = &open.file {
            match file.file.write_all_at(data, open.written) {
                Ok(()) => {
                    let body = Body::File {
                        file: file.clone(),
                        at: open.written,
                        len: data.len(),
                    };
                    open.written += data.len() as u64;
                    return body;
                }
                Err(e) => {
                    tracing::warn!(path = %file.path.display(), "live part kept in memory: {e}");
                    // Later parts would not follow on in the file: keep them in memory too.
                    open.file = None;
                }
            }
        }
        Body::Memory(data.clone())
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
                if s.open.as_ref().is_none_or(|o| o.seq != *segment) {
                    s.open = Some(OpenSegment {
                        seq: *segment,
                        file: self.create_file(&segment.to_string()),
                        written: 0,
                        parts: Vec::new(),
                    });
                }
                s.longest_part = s.longest_part.max(*duration);
                if let Some(open) = s.open.as_mut() {
                    let body = Self::append(open, data);
                    open.parts.push(LivePart {
                        duration: *duration,
                        independent: *independent,
                        body,
                    });
                }
            }
            SegmentEvent::Segment(seg) => {
                let open = s.open.take().filter(|o| o.seq == seg.seq);
                let (parts, body) = self.close_segment(seg, open);
                let discontinuity = seg.discontinuity || std::mem::take(&mut s.pending_discontinuity);
                s.longest_segment = s.longest_segment.max(seg.duration);
                s.segments.push_back(LiveSegment {
                    seq: seg.seq,
                    duration: seg.duration,
                    discontinuity,
                    parts,
                    body,
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

    /// The finished segment's parts and body. Its parts are its bytes in order, so when they
    /// were all written to its file the file is the segment; otherwise the segment is stored
    /// whole (in a new file or memory) and its parts are kept as they are.
    fn close_segment(&self, seg: &Segment, open: Option<OpenSegment>) -> (Vec<LivePart>, Body) {
        let Some(open) = open else {
            return (Vec::new(), self.store_whole(seg.seq, &seg.data()));
        };
        let len = seg.len;
        let parts_len: usize = open.parts.iter().map(|p| p.body.len()).sum();
        if parts_len == len {
            if let Some(file) = &open.file {
                if open.written == len as u64 {
                    let body = Body::File {
                        file: file.clone(),
                        at: 0,
                        len,
                    };
                    return (open.parts, body);
                }
            }
        }
        // The parts are in memory, or the file stopped taking them part way: the segment is
        // its parts joined (read back from the file where they are there), and the parts
        // become slices of it.
        let data = if seg.has_bytes() {
            seg.data()
        } else {
            let mut data = bytes::BytesMut::with_capacity(parts_len);
            for p in &open.parts {
                match p.body.read() {
                    Ok(b) => data.extend_from_slice(&b),
                    Err(_) => return (open.parts, Body::Memory(Bytes::new())),
                }
            }
            data.freeze()
        };
        if parts_len == data.len() && open.parts.iter().all(|p| matches!(p.body, Body::Memory(_))) {
            let mut parts = open.parts;
            let mut at = 0;
            for p in &mut parts {
                let len = p.body.len();
                p.body = Body::Memory(data.slice(at..at + len));
                at += len;
            }
            return (parts, Body::Memory(data));
        }
        let body = self.store_whole(seg.seq, &data);
        (open.parts, body)
    }

    /// A segment of the window, whole (a positioned read when it is in a file): what a
    /// recording stores when the segmenter did not keep the bytes.
    pub fn segment_bytes(&self, seq: u64) -> Option<Bytes> {
        let body = {
            let s = self.state.lock().ok()?;
            s.segments.iter().find(|g| g.seq == seq)?.body.clone()
        };
        body.read().ok()
    }

    /// A finished segment stored on its own, in a new file (or memory).
    fn store_whole(&self, seq: u64, data: &Bytes) -> Body {
        let mut open = OpenSegment {
            seq,
            file: self.create_file(&format!("{seq}.whole")),
            written: 0,
            parts: Vec::new(),
        };
        Self::append(&mut open, data)
    }

    /// Whether any media has arrived yet.
    pub fn has_media(&self) -> bool {
        self.state
            .lock()
            .map(|s| !s.segments.is_empty() || s.open.as_ref().is_some_and(|o| !o.parts.is_empty()))
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
                                .is_some_and(|o| o.seq > msn || (o.seq == msn && o.parts.len() as u32 > p))
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
            .or(s.open.as_ref().map(|o| o.seq))
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
            // Also before the first listed segment: its discontinuity is only counted in
            // EXT-X-DISCONTINUITY-SEQUENCE once it leaves the window, and until then players must
            // see the same discontinuity count for it on every reload.
            if g.discontinuity {
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
            Some(o) => (o.seq, o.parts.len()),
            None => (next_seq(s), 0),
        };
        if let Some(o) = &s.open {
            if s.pending_discontinuity && !s.segments.is_empty() {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            for (k, p) in o.parts.iter().enumerate() {
                part_line(&mut out, o.seq, k, p, query);
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
        let find = |s: &LiveState| -> Option<Body> {
            match chunk {
                Chunk::Segment(seq) => s.segments.iter().find(|g| g.seq == seq).map(|g| g.body.clone()),
                Chunk::Part(seq, k) => s
                    .segments
                    .iter()
                    .find(|g| g.seq == seq)
                    .and_then(|g| g.parts.get(k as usize))
                    .or_else(|| {
                        s.open
                            .as_ref()
                            .filter(|o| o.seq == seq)
                            .and_then(|o| o.parts.get(k as usize))
                    })
                    .map(|p| p.body.clone()),
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
                drop(s);
                return b.read();
            }
            if !upcoming(&s) {
                return Err(LiveError::Gone);
            }
        }
        if self.wait_until(|s| find(s).is_some()).await {
            let body = find(&*self.state.lock().map_err(|_| LiveError::Gone)?);
            return body.ok_or(LiveError::Gone)?.read();
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
        (Some(o), _) => o.seq,
        (None, Some(g)) => g.seq + 1,
        (None, None) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(segment: u64, index: u32, data: &[u8]) -> SegmentEvent {
        SegmentEvent::Part {
            segment,
            index,
            duration: 0.2,
            independent: index == 0,
            data: Bytes::copy_from_slice(data),
        }
    }

    /// Pushes segment `seq` as two parts, then the whole; returns its bytes.
    fn push_segment(live: &LiveBuffer, seq: u64) -> Vec<u8> {
        let a = vec![seq as u8; 188];
        let b = vec![seq as u8 + 100; 376];
        live.push(&part(seq, 0, &a));
        live.push(&part(seq, 1, &b));
        let whole: Vec<u8> = [a, b].concat();
        live.push(&SegmentEvent::Segment(Segment::whole(
            seq,
            0,
            2.0,
            false,
            Bytes::from(whole.clone()),
        )));
        whole
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn segments_and_parts_are_served_from_files_that_follow_the_window() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p1");
        let live = LiveBuffer::new(Duration::from_secs(2), Duration::from_millis(200), Some(dir.clone()));
        let first = push_segment(&live, 0);
        assert_eq!(live.chunk(Chunk::Segment(0)).await.unwrap(), first);
        assert_eq!(live.chunk(Chunk::Part(0, 1)).await.unwrap(), first[188..]);
        // An open segment's parts are served before the segment ends.
        live.push(&part(1, 0, &[7u8; 188]));
        assert_eq!(live.chunk(Chunk::Part(1, 0)).await.unwrap(), vec![7u8; 188]);
        assert_eq!(files(&dir), ["0.ts", "1.ts"]);
        let mut bytes = vec![first];
        for seq in 1..8 {
            bytes.push(push_segment(&live, seq));
        }
        // Three 2 s segments are the window; the files of older ones are written over by
        // newer segments (at most two kept spare) or removed.
        let names = files(&dir);
        assert!(names.len() <= 3 + SPARE_FILES, "{names:?}");
        for seq in 5..8 {
            let whole = &bytes[seq as usize];
            assert_eq!(&live.chunk(Chunk::Segment(seq)).await.unwrap(), whole);
            assert_eq!(live.chunk(Chunk::Part(seq, 1)).await.unwrap(), whole[188..]);
        }
        assert_eq!(live.chunk(Chunk::Segment(0)).await, Err(LiveError::Gone));
        let playlist = live.playlist(None, None, "t=1").await.unwrap();
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:5"), "{playlist}");
        assert!(playlist.contains("URI=\"7.1.ts?t=1\""), "{playlist}");
        drop(live);
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_shorter_segment_written_over_a_spare_file_serves_only_its_own_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p3");
        let live = LiveBuffer::new(Duration::from_secs(2), Duration::from_millis(200), Some(dir.clone()));
        // Long segments fill the window, then short ones are written over their files.
        for seq in 0..8u64 {
            let len = if seq < 4 { 188 * 40 } else { 188 };
            let data = vec![seq as u8 + 1; len];
            live.push(&part(seq, 0, &data));
            live.push(&SegmentEvent::Segment(Segment::whole(
                seq,
                0,
                2.0,
                false,
                Bytes::from(data),
            )));
        }
        for seq in 5..8u64 {
            assert_eq!(live.chunk(Chunk::Segment(seq)).await.unwrap(), vec![seq as u8 + 1; 188]);
            assert_eq!(live.chunk(Chunk::Part(seq, 0)).await.unwrap(), vec![seq as u8 + 1; 188]);
        }
        assert!(files(&dir).len() <= 3 + SPARE_FILES, "{:?}", files(&dir));
    }

    /// The discontinuity count (hls.js's `cc`) of each listed segment, as a player computes it.
    fn discontinuity_counts(playlist: &str) -> Vec<(u64, u64)> {
        let mut cc = 0;
        let mut out = Vec::new();
        for line in playlist.lines() {
            if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                cc = v.parse().unwrap();
            } else if line == "#EXT-X-DISCONTINUITY" {
                cc += 1;
            } else if let Some(seq) = line.split_once(".ts?").and_then(|(n, _)| n.parse::<u64>().ok()) {
                out.push((seq, cc));
            }
        }
        out
    }

    #[tokio::test]
    async fn a_segment_keeps_its_discontinuity_count_as_the_window_moves() {
        let live = LiveBuffer::new(Duration::from_secs(2), Duration::from_millis(200), None);
        push_segment(&live, 0);
        live.mark_discontinuity();
        for seq in 1..6 {
            push_segment(&live, seq);
            let playlist = live.playlist(None, None, "t=1").await.unwrap();
            for (seg, cc) in discontinuity_counts(&playlist) {
                assert_eq!(cc, u64::from(seg >= 1), "segment {seg} in\n{playlist}");
            }
        }
    }

    #[tokio::test]
    async fn without_a_directory_bytes_stay_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("a-file");
        std::fs::write(&blocker, b"x").unwrap();
        let live = LiveBuffer::new(
            Duration::from_secs(2),
            Duration::from_millis(200),
            Some(blocker.join("sub")),
        );
        let first = push_segment(&live, 0);
        assert_eq!(live.chunk(Chunk::Segment(0)).await.unwrap(), first);
        assert_eq!(live.chunk(Chunk::Part(0, 0)).await.unwrap(), first[..188]);
    }

    #[tokio::test]
    async fn a_segment_without_its_bytes_is_its_parts_in_a_file_or_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("a-file");
        std::fs::write(&blocker, b"x").unwrap();
        for dir in [Some(tmp.path().join("p3")), Some(blocker.join("sub"))] {
            let live = LiveBuffer::new(Duration::from_secs(2), Duration::from_millis(200), dir);
            let (a, b) = (vec![5u8; 188], vec![6u8; 376]);
            live.push(&part(0, 0, &a));
            live.push(&part(0, 1, &b));
            let seg = Segment {
                seq: 0,
                start_pts: 0,
                duration: 2.0,
                discontinuity: false,
                parts: Vec::new(),
                len: 564,
            };
            assert!(!seg.has_bytes());
            live.push(&SegmentEvent::Segment(seg));
            let whole = [a, b].concat();
            assert_eq!(live.chunk(Chunk::Segment(0)).await.unwrap(), whole);
            assert_eq!(live.chunk(Chunk::Part(0, 1)).await.unwrap(), whole[188..]);
            assert_eq!(live.segment_bytes(0).unwrap(), whole, "what a recording stores");
            assert!(live.segment_bytes(1).is_none());
        }
    }

    #[tokio::test]
    async fn a_segment_whose_parts_do_not_add_up_is_stored_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p2");
        let live = LiveBuffer::new(Duration::from_secs(2), Duration::from_millis(200), Some(dir.clone()));
        live.push(&part(0, 0, &[1u8; 188]));
        live.push(&SegmentEvent::Segment(Segment::whole(
            0,
            0,
            2.0,
            false,
            Bytes::from(vec![2u8; 376]),
        )));
        assert_eq!(live.chunk(Chunk::Segment(0)).await.unwrap(), vec![2u8; 376]);
        assert_eq!(live.chunk(Chunk::Part(0, 0)).await.unwrap(), vec![1u8; 188]);
        assert_eq!(files(&dir), ["0.ts", "0.whole.ts"]);
    }
}
