//! A group's *program*: the one publisher whose camera (or screen) and microphone become the
//! group's live HLS and call recordings. The [`Program`] actor watches the room's publications,
//! picks the source (a moderator's choice, else the call's lead speaker while they publish
//! video, else the first publisher; or one fixed participant, for an ingest's own recording),
//! and taps its tracks. Tap tasks turn RTP into frames (an
//! ingest's tracks are tapped as frames, so there is nothing to depacketize) and segment them
//! in place (the [`Cutter`], shared by a program's tap tasks and its actor, so no
//! thread is woken per frame); parts and segments go to the live window, and finished segments
//! to a per-program recorder thread that spools them (with posters) for each recording.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};
use bytes::Bytes;
use engine::ids::{GroupId, UserId};
use engine::registry::{LeaveRoom, Registry, RoomFor};
use engine::room::messages::{CallChanged, UnwatchCall, WatchCall};
use engine::room::Room;
use engine::track::{Fanout, MediaKind, Source, SourceFrame};
use tokio::task::JoinHandle;

use crate::decode_order::DecodeTimes;
use crate::depack::Depacketizer;
use crate::frame::{Frame, CLOCK_HZ};
use crate::live::LiveBuffer;
use crate::recordings::{self, SegmentRow};
use crate::segment::{Segment, SegmentEvent, Segmenter, SegmenterConfig};
use crate::storage::SegmentStore;

/// How long the first source's tracks may take to all appear before the program starts on them.
const FIRST_SOURCE_SETTLE: Duration = Duration::from_millis(600);
/// Packets a tap holds before the track drops them for it.
const TAP_QUEUE: usize = 4096;
/// Frames a frame tap holds before the track drops them for it (8 s of 30 fps video).
const FRAME_TAP_QUEUE: usize = 256;

/// Which program: a group's, or one participant's in a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProgramKey {
    pub group: GroupId,
    pub participant: Option<UserId>,
}

/// What the program's parts share.
#[derive(Clone)]
pub struct ProgramDeps {
    pub registry: Addr<Registry>,
    pub store: SegmentStore,
    pub db: Arc<dyn engine::store::Store>,
    pub segmenting: SegmenterConfig,
    /// Where tap tasks run.
    pub runtime: tokio::runtime::Handle,
    pub metrics: crate::metrics::VodMetrics,
}

/// What the recorder thread is told, in order.
enum ToRecorder {
    /// A finished segment, with the keyframe posters are made from while any is wanted.
    Segment(Segment, Option<bytes::Bytes>),
    /// The source changed: the next segment of every recording follows a gap.
    Switch,
    Record(String),
    /// Stop feeding a recording; the reply comes once its last segment is spooled.
    StopRecording(String, tokio::sync::oneshot::Sender<()>),
}

/// The segmenting half of a program: frames in (from the tap tasks, inline), parts and segments
/// out to the live window, finished segments on to the recorder thread.
struct Cutter {
    segmenter: Segmenter,
    /// Segment numbers continue across segmenters (source switches).
    seq_base: u64,
    produced: u64,
    errors: u64,
    /// When the previous frame arrived: a part is complete (servable) when the frame after its
    /// last one arrives, so its delay is measured from the previous frame.
    previous_frame: Instant,
    /// The latest keyframe, kept only while a recording still wants a poster (a 1080p keyframe is
    /// a few hundred kB a camera would otherwise hold for nothing).
    last_keyframe: Option<bytes::Bytes>,
    posters_wanted: Arc<AtomicUsize>,
    live: Arc<LiveBuffer>,
    recorder: Sender<ToRecorder>,
    /// Whether a recording is on: finished segments then go to the recorder with their bytes
    /// (read back from the live window; the segmenter does not keep them).
    recording: bool,
    deps: ProgramDeps,
    group: GroupId,
}

impl Cutter {
    /// Segments one frame.
    fn frame(&mut self, frame: Frame, dts: i64) {
        if self.posters_wanted.load(Ordering::Relaxed) == 0 {
            self.last_keyframe = None;
        } else if frame.keyframe && frame.codec.is_video() {
            self.last_keyframe = Some(frame.data.clone());
        }
        let arrived = Instant::now();
        match self.segmenter.push_with_dts(frame, dts) {
            Ok(events) => {
                for ev in &events {
                    if matches!(ev, SegmentEvent::Part { .. }) {
                        let delay = self.previous_frame.elapsed().as_secs_f64();
                        self.deps.metrics.part_delay.observe(delay);
                    }
                }
                self.previous_frame = arrived;
                self.emit(events);
            }
            Err(e) => {
                self.errors += 1;
                if self.errors.is_power_of_two() {
                    tracing::warn!(group = %self.group, errors = self.errors, "segmenter refused a frame: {e}");
                }
            }
        }
    }

    /// Closes the open segment (a source switch or a recording's end) and starts a new
    /// segmenter: the next segment begins at the next keyframe.
    fn close(&mut self) {
        if let Ok(events) = self.segmenter.finish() {
            self.emit(events);
        }
        self.seq_base += self.produced;
        self.produced = 0;
        self.segmenter = live_segmenter(&self.deps);
    }

    /// Numbers the segmenter's output on the program's sequence and hands it on.
    fn emit(&mut self, events: Vec<SegmentEvent>) {
        for ev in events {
            let ev = match ev {
                SegmentEvent::Part {
                    segment,
                    index,
                    duration,
                    independent,
                    data,
                } => SegmentEvent::Part {
                    segment: segment + self.seq_base,
                    index,
                    duration,
                    independent,
                    data,
                },
                SegmentEvent::Segment(mut seg) => {
                    self.deps.metrics.segments.inc();
                    seg.seq += self.seq_base;
                    self.produced = seg.seq + 1 - self.seq_base;
                    self.live.push(&SegmentEvent::Segment(seg.clone()));
                    if self.recording && !seg.has_bytes() {
                        if let Some(data) = self.live.segment_bytes(seg.seq) {
                            seg.parts = vec![data];
                        }
                    }
                    let _ = self.recorder.send(ToRecorder::Segment(seg, self.last_keyframe.clone()));
                    continue;
                }
            };
            self.live.push(&ev);
        }
    }
}

/// A live program's segmenter: the live window holds the bytes, so segments do not.
fn live_segmenter(deps: &ProgramDeps) -> Segmenter {
    Segmenter::new(deps.segmenting).keep_bytes(false)
}

/// Locks the cutter (a panic elsewhere left it usable).
fn lock(cutter: &Mutex<Cutter>) -> MutexGuard<'_, Cutter> {
    cutter.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts recording `rid` from this program.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub String);

/// Stops recording `rid`; answers when its segments are all spooled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRecording(pub String);

/// Makes `user` the program (a moderator's choice); `None` returns to the automatic choice (the
/// lead speaker, else the first publisher).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pin(pub Option<UserId>);

/// Someone is watching the live HLS: keep the program up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Touch;

/// The program actor of one [`ProgramKey`].
pub struct Program {
    key: ProgramKey,
    id: u64,
    deps: ProgramDeps,
    live: Arc<LiveBuffer>,
    room: Option<Addr<Room>>,
    cutter: Arc<Mutex<Cutter>>,
    recorder: Sender<ToRecorder>,
    recorder_rx: Option<Receiver<ToRecorder>>,
    posters_wanted: Arc<AtomicUsize>,
    pinned: Option<UserId>,
    /// The call's lead speaker, as the room last said.
    speaker: Option<UserId>,
    /// Track ids of the current source (video, audio).
    current: (Option<String>, Option<String>),
    /// A source has been selected at some point (later changes are discontinuities).
    had_source: bool,
    /// While the first source settles ([`FIRST_SOURCE_SETTLE`]): the call's latest tracks.
    settling_tracks: Option<Vec<Arc<Fanout>>>,
    taps: Vec<JoinHandle<()>>,
    recordings: Vec<String>,
    last_touch: Instant,
    t0: Instant,
    /// Called when the program ends (removes it from the directory).
    on_stop: Option<Box<dyn FnOnce() + Send>>,
}

/// How long a program with no recording lives after its last live request.
const IDLE: Duration = Duration::from_secs(30);

impl Program {
    /// A program for `key`, writing live HLS into `live`.
    pub fn new(
        key: ProgramKey,
        deps: ProgramDeps,
        live: Arc<LiveBuffer>,
        on_stop: Box<dyn FnOnce() + Send>,
    ) -> Program {
        let (tx, rx) = channel();
        let posters_wanted = Arc::new(AtomicUsize::new(0));
        let cutter = Cutter {
            segmenter: live_segmenter(&deps),
            seq_base: 0,
            produced: 0,
            errors: 0,
            previous_frame: Instant::now(),
            last_keyframe: None,
            posters_wanted: posters_wanted.clone(),
            live: live.clone(),
            recorder: tx.clone(),
            recording: false,
            deps: deps.clone(),
            group: key.group.clone(),
        };
        Program {
            key,
            id: engine::next_id(),
            deps,
            live,
            room: None,
            cutter: Arc::new(Mutex::new(cutter)),
            recorder: tx,
            recorder_rx: Some(rx),
            posters_wanted,
            pinned: None,
            speaker: None,
            current: (None, None),
            had_source: false,
            settling_tracks: None,
            taps: Vec::new(),
            recordings: Vec::new(),
            last_touch: Instant::now(),
            t0: Instant::now(),
            on_stop: Some(on_stop),
        }
    }

    /// Picks the source among `tracks` and (re)starts the taps if it changed.
    fn select(&mut self, tracks: &[Arc<Fanout>]) {
        let shows_video = |user: &UserId| {
            tracks
                .iter()
                .any(|t| &t.info.publisher == user && t.info.kind == MediaKind::Video)
        };
        let user = match (&self.key.participant, &self.pinned, &self.speaker) {
            (Some(only), _, _) => Some(only.clone()),
            (None, Some(pin), _) if tracks.iter().any(|t| &t.info.publisher == pin) => Some(pin.clone()),
            (None, _, Some(speaker)) if shows_video(speaker) => Some(speaker.clone()),
            _ => tracks.first().map(|t| t.info.publisher.clone()),
        };
        let mine: Vec<&Arc<Fanout>> = tracks
            .iter()
            .filter(|t| Some(&t.info.publisher) == user.as_ref())
            .filter(|t| {
                let c = &t.info.codec;
                Depacketizer::new(&c.mime_type, c.clock_rate, c.channels.max(1), &c.sdp_fmtp_line).is_ok()
            })
            .collect();
        let video = mine
            .iter()
            .find(|t| t.info.kind == MediaKind::Video && t.info.source != Source::Screen)
            .or_else(|| mine.iter().find(|t| t.info.kind == MediaKind::Video))
            .map(|t| (*t).clone());
        let audio = mine
            .iter()
            .find(|t| t.info.kind == MediaKind::Audio)
            .map(|t| (*t).clone());
        let ids = (
            video.as_ref().map(|t| t.info.id.clone()),
            audio.as_ref().map(|t| t.info.id.clone()),
        );
        if ids == self.current {
            return;
        }
        tracing::info!(group = %self.key.group, user = ?user, video = ?ids.0, audio = ?ids.1, "program source");
        for t in self.taps.drain(..) {
            t.abort();
        }
        // Any change after the first source (including the source going away and another
        // arriving) closes the open segment and marks a discontinuity.
        if self.had_source {
            lock(&self.cutter).close();
            let _ = self.recorder.send(ToRecorder::Switch);
            self.live.mark_discontinuity();
        }
        self.had_source |= ids != (None, None);
        self.current = ids;
        let has_video = video.is_some();
        // Taps that only repackage (H.264/H.265 video) run on the media runtime beside the tasks
        // that produce the packets, so a frame wakes no other thread; a video transcode (VP8)
        // would hold a media thread for milliseconds per frame, so that program stays here.
        let transcodes = video.as_ref().is_some_and(|t| {
            !matches!(
                t.info.codec.mime_type.to_ascii_lowercase().as_str(),
                "video/h264" | "video/h265"
            )
        });
        let rt = match engine::media::runtime_handle() {
            Some(media) if !transcodes => media,
            _ => self.deps.runtime.clone(),
        };
        let video_started = Arc::new(AtomicBool::new(false));
        for track in video.into_iter().chain(audio) {
            let input = match track.tap_frames(FRAME_TAP_QUEUE) {
                Some(frames) => TapInput::Frames(frames),
                None => TapInput::Packets(track.tap(TAP_QUEUE)),
            };
            let started = video_started.clone();
            let task = feed(
                track,
                input,
                self.cutter.clone(),
                self.t0,
                has_video,
                started,
                self.deps.segmenting.target,
            );
            self.taps.push(rt.spawn(task));
        }
    }
}

/// What a tap task reads: a track's packets (a WebRTC publisher's), or a local source's whole
/// frames (an RTSP ingest's: nothing to depacketize).
enum TapInput {
    Packets(tokio::sync::mpsc::Receiver<rtc::rtp::Packet>),
    Frames(tokio::sync::mpsc::Receiver<SourceFrame>),
}

impl TapInput {
    /// Waits for the next packet or frame and returns the frames it completes; None once the
    /// tap has ended.
    async fn next(&mut self, depack: &mut Depacketizer) -> Option<Vec<Frame>> {
        match self {
            TapInput::Packets(rx) => rx.recv().await.map(|p| depack.push(&p)),
            TapInput::Frames(rx) => rx.recv().await.map(|f| depack.push_frame(&f).into_iter().collect()),
        }
    }

    /// [`Self::next`] without waiting: None when nothing is queued.
    fn try_next(&mut self, depack: &mut Depacketizer) -> Option<Vec<Frame>> {
        match self {
            TapInput::Packets(rx) => rx.try_recv().ok().map(|p| depack.push(&p)),
            TapInput::Frames(rx) => rx.try_recv().ok().map(|f| depack.push_frame(&f).into_iter().collect()),
        }
    }
}

/// Reads one track's tap, turns its packets (or frames) into frames on the shared clock, and
/// segments them. Video waits for a keyframe and asks for one when the group of pictures runs
/// longer than a segment; audio waits for the video (if any) to start.
async fn feed(
    track: Arc<Fanout>,
    mut input: TapInput,
    cutter: Arc<Mutex<Cutter>>,
    t0: Instant,
    has_video: bool,
    video_started: Arc<AtomicBool>,
    target: Duration,
) {
    let codec = &track.info.codec;
    let channels = codec.channels.max(1);
    let mut depack = match Depacketizer::new(&codec.mime_type, codec.clock_rate, channels, &codec.sdp_fmtp_line) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(track = %track.info.id, "not recordable: {e}");
            return;
        }
    };
    let mut feed = Feed {
        is_video: track.info.kind == MediaKind::Video,
        track: track.clone(),
        cutter,
        t0,
        has_video,
        video_started,
        target,
        base: None,
        last_key: Instant::now(),
        started: false,
        decode: DecodeTimes::default(),
        told_reorder: false,
    };
    // The first packets may arrive as a burst (queued while this task started): place them so
    // the newest is "now", keeping audio and video in step.
    let Some(mut burst) = input.next(&mut depack).await else {
        return;
    };
    while let Some(frames) = input.try_next(&mut depack) {
        burst.extend(frames);
    }
    if let (Some(f), Some(l)) = (burst.first(), burst.last()) {
        let now = (t0.elapsed().as_secs_f64() * CLOCK_HZ as f64) as i64;
        feed.base = Some((f.pts, (now - (l.pts - f.pts).max(0)).max(0)));
    }
    for frame in burst {
        feed.emit(frame);
    }
    while let Some(frames) = input.next(&mut depack).await {
        for frame in frames {
            feed.emit(frame);
        }
    }
}

/// A tap task's state between frames.
struct Feed {
    is_video: bool,
    track: Arc<Fanout>,
    cutter: Arc<Mutex<Cutter>>,
    t0: Instant,
    has_video: bool,
    video_started: Arc<AtomicBool>,
    target: Duration,
    /// `(first pts, its place on the program clock)`.
    base: Option<(i64, i64)>,
    last_key: Instant,
    started: bool,
    /// Decode times for video (B-frames reorder it).
    decode: DecodeTimes,
    told_reorder: bool,
}

impl Feed {
    /// Places one frame on the program clock and segments it.
    fn emit(&mut self, mut frame: Frame) {
        if self.is_video {
            if frame.keyframe {
                self.last_key = Instant::now();
                self.started = true;
                self.video_started.store(true, Ordering::Relaxed);
            } else if !self.started {
                return;
            }
            if self.last_key.elapsed() > self.target {
                self.track.request_keyframe_soon();
                self.last_key = Instant::now();
            }
        } else if self.has_video && !self.video_started.load(Ordering::Relaxed) {
            return;
        }
        let t0 = self.t0;
        let (pts0, at) = *self.base.get_or_insert_with(|| {
            let at = (t0.elapsed().as_secs_f64() * CLOCK_HZ as f64) as i64;
            (frame.pts, at)
        });
        frame.pts = frame.pts - pts0 + at;
        if !self.is_video {
            let dts = frame.pts;
            lock(&self.cutter).frame(frame, dts);
            return;
        }
        let timed = self.decode.push(frame);
        if self.decode.reorders() && !self.told_reorder {
            self.told_reorder = true;
            tracing::info!(track = %self.track.info.id, "the video has B-frames; decode times are derived");
        }
        let mut cutter = lock(&self.cutter);
        for (frame, dts) in timed {
            cutter.frame(frame, dts);
        }
    }
}

/// One recording fed by the recorder thread.
struct Sink {
    next_seq: u64,
    /// The next segment follows a gap or a source change.
    discontinuity: bool,
    poster_done: bool,
}

/// The recorder thread: spools each finished segment (and a first poster) for every recording,
/// in order. Woken once per segment, not per frame.
fn record(rx: Receiver<ToRecorder>, deps: ProgramDeps, posters_wanted: Arc<AtomicUsize>, group: GroupId) {
    let mut sinks: HashMap<String, Sink> = HashMap::new();
    // One recording fewer waits for its poster.
    let stop_wanting = || {
        let _ = posters_wanted.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    };
    while let Ok(msg) = rx.recv() {
        match msg {
            ToRecorder::Segment(seg, keyframe) => {
                if sinks.is_empty() {
                    continue;
                }
                if !seg.has_bytes() {
                    // Not expected: the cutter reads them while a recording is on. A gap, not
                    // an empty segment.
                    tracing::error!(%group, seq = seg.seq, "segment bytes unavailable for recording");
                    for sink in sinks.values_mut() {
                        sink.discontinuity = true;
                    }
                    continue;
                }
                // Joined here, off the media path.
                let data = seg.data();
                for (rid, sink) in sinks.iter_mut() {
                    let had_poster = sink.poster_done;
                    store_segment(&deps, rid, sink, &seg, &data, &keyframe);
                    if sink.poster_done && !had_poster {
                        stop_wanting();
                    }
                }
            }
            ToRecorder::Switch => {
                for sink in sinks.values_mut() {
                    sink.discontinuity = true;
                }
            }
            ToRecorder::Record(rid) => {
                match sinks.entry(rid) {
                    // Counted twice by the actor: once is enough.
                    Entry::Occupied(_) => stop_wanting(),
                    Entry::Vacant(v) => {
                        v.insert(Sink {
                            next_seq: 0,
                            discontinuity: false,
                            poster_done: false,
                        });
                    }
                }
            }
            ToRecorder::StopRecording(rid, done) => {
                if sinks.remove(&rid).is_some_and(|sink| !sink.poster_done) {
                    stop_wanting();
                }
                let _ = done.send(());
            }
        }
    }
    tracing::debug!(%group, "program recorder ended");
}

/// Spools one segment (and, the first time, a poster) for recording `rid`.
fn store_segment(
    deps: &ProgramDeps,
    rid: &str,
    sink: &mut Sink,
    seg: &crate::segment::Segment,
    data: &Bytes,
    last_keyframe: &Option<Bytes>,
) {
    let seq = sink.next_seq;
    let row = SegmentRow {
        seq,
        duration: seg.duration,
        discontinuity: seq > 0 && (seg.discontinuity || sink.discontinuity),
        bytes: data.len() as u64,
    };
    match deps
        .store
        .put(&recordings::segment_key(rid, seq), data, Some(row.index_row(rid)))
    {
        Ok(()) => {
            sink.next_seq += 1;
            sink.discontinuity = false;
        }
        Err(e) => tracing::error!(recording = rid, seq, "cannot spool a segment: {e}"),
    }
    // The poster waits for a keyframe (none is kept while no recording needs one).
    if !sink.poster_done {
        if let Some(key) = last_keyframe {
            sink.poster_done = true;
            match crate::transcode::poster_jpeg(key) {
                Ok(jpeg) => {
                    if deps.store.put(&recordings::poster_key(rid), &jpeg, None).is_ok() {
                        if let Ok(Some(mut rec)) = recordings::load(deps.db.as_ref(), rid) {
                            rec.poster = true;
                            let _ = recordings::save(deps.db.as_ref(), &rec);
                        }
                    }
                }
                Err(e) => tracing::debug!(recording = rid, "no poster: {e}"),
            }
        }
    }
}

impl Actor for Program {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.deps.metrics.programs.inc();
        if let Some(rx) = self.recorder_rx.take() {
            let (deps, wanted, group) = (self.deps.clone(), self.posters_wanted.clone(), self.key.group.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("recorder-{group}"))
                .spawn(move || record(rx, deps, wanted, group));
            if let Err(e) = spawned {
                tracing::error!("cannot start a recorder thread: {e}");
                ctx.stop();
                return;
            }
        }
        let (registry, group, id) = (self.deps.registry.clone(), self.key.group.clone(), self.id);
        ctx.wait(
            async move { registry.send(RoomFor { group, holder: id }).await }
                .into_actor(self)
                .map(|room, act, ctx| match room {
                    Ok(room) => {
                        room.do_send(WatchCall {
                            id: act.id,
                            watcher: ctx.address().recipient(),
                        });
                        act.room = Some(room);
                    }
                    Err(_) => ctx.stop(),
                }),
        );
        ctx.run_interval(Duration::from_secs(5), |act, ctx| {
            if act.recordings.is_empty() && act.last_touch.elapsed() > IDLE {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.deps.metrics.programs.dec();
        for t in self.taps.drain(..) {
            t.abort();
        }
        if let Some(room) = self.room.take() {
            room.do_send(UnwatchCall { id: self.id });
            self.deps.registry.do_send(LeaveRoom {
                group: self.key.group.clone(),
                conn: self.id,
            });
        }
        if let Some(f) = self.on_stop.take() {
            f();
        }
        tracing::info!(group = %self.key.group, "program ended");
    }
}

impl Handler<CallChanged> for Program {
    type Result = ();

    fn handle(&mut self, msg: CallChanged, ctx: &mut Context<Self>) {
        self.speaker = msg.speaker;
        if self.had_source {
            return self.select(&msg.tracks);
        }
        // The first source: a publisher's tracks arrive one by one, and starting on the first
        // (video alone, say) would switch a moment later, leaving a one-frame segment and a
        // discontinuity at the head of the live stream and of recordings. Let them settle.
        if self.settling_tracks.replace(msg.tracks).is_none() {
            ctx.run_later(FIRST_SOURCE_SETTLE, |act, _| {
                if let Some(tracks) = act.settling_tracks.take() {
                    act.select(&tracks);
                }
            });
        }
    }
}

impl Handler<Record> for Program {
    type Result = ();

    fn handle(&mut self, msg: Record, _ctx: &mut Context<Self>) {
        if !self.recordings.contains(&msg.0) {
            self.recordings.push(msg.0.clone());
        }
        // Keyframes are kept for its poster from now on, and segments go with their bytes. Set
        // before the recorder hears of it: every segment after the message has them.
        self.posters_wanted.fetch_add(1, Ordering::Relaxed);
        lock(&self.cutter).recording = true;
        let _ = self.recorder.send(ToRecorder::Record(msg.0));
    }
}

impl Handler<StopRecording> for Program {
    type Result = actix::ResponseFuture<()>;

    fn handle(&mut self, msg: StopRecording, _ctx: &mut Context<Self>) -> Self::Result {
        self.recordings.retain(|r| r != &msg.0);
        self.last_touch = Instant::now();
        // Close the open segment so the recording ends where it was stopped; the next segment
        // (live, other recordings) starts at the next keyframe.
        {
            let mut cutter = lock(&self.cutter);
            cutter.close();
            cutter.recording = !self.recordings.is_empty();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.recorder.send(ToRecorder::StopRecording(msg.0, tx));
        Box::pin(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        })
    }
}

impl Handler<Pin> for Program {
    type Result = ();

    fn handle(&mut self, msg: Pin, ctx: &mut Context<Self>) {
        self.pinned = msg.0;
        // Re-read the call to apply the choice.
        if let Some(room) = &self.room {
            room.do_send(UnwatchCall { id: self.id });
            room.do_send(WatchCall {
                id: self.id,
                watcher: ctx.address().recipient(),
            });
        }
    }
}

impl Handler<Touch> for Program {
    type Result = ();

    fn handle(&mut self, _msg: Touch, _ctx: &mut Context<Self>) {
        self.last_touch = Instant::now();
    }
}

/// Stops the actor (used by the directory when its group is deleted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct End;

impl Handler<End> for Program {
    type Result = ();

    fn handle(&mut self, _msg: End, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
