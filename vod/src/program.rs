//! A group's *program*: the one publisher whose camera (or screen) and microphone become the
//! group's live HLS and call recordings. The [`Program`] actor watches the room's publications,
//! picks the source (a moderator's choice, else the first publisher; or one fixed participant,
//! for an ingest's own recording), taps its tracks, and feeds a blocking worker thread that
//! depacketizes nothing itself: tap tasks turn RTP into frames, the worker segments them and
//! hands segments to the live window and to each recording's storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};
use engine::ids::{GroupId, UserId};
use engine::registry::{LeaveRoom, Registry, RoomFor};
use engine::room::messages::{CallChanged, UnwatchCall, WatchCall};
use engine::room::Room;
use engine::track::{Fanout, MediaKind, Source};
use tokio::task::JoinHandle;

use crate::decode_order::DecodeTimes;
use crate::depack::Depacketizer;
use crate::frame::{Frame, CLOCK_HZ};
use crate::live::LiveBuffer;
use crate::recordings::{self, SegmentRow};
use crate::segment::{SegmentEvent, Segmenter, SegmenterConfig};
use crate::storage::SegmentStore;

/// Frames queued for the worker before newer ones are dropped.
const WORKER_QUEUE: usize = 2048;
/// Packets a tap holds before the track drops them for it.
const TAP_QUEUE: usize = 4096;

/// Which program: a group's, or one participant's in a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProgramKey {
    pub group: GroupId,
    pub participant: Option<UserId>,
}

/// What the worker and the actor share.
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

enum Cmd {
    /// A frame and its decode time.
    Frame(Frame, i64),
    /// The source changed: close the open segment, start a new segmenter.
    Switch,
    Record(String),
    /// Stop feeding a recording; the reply comes once its last segment is spooled.
    StopRecording(String, tokio::sync::oneshot::Sender<()>),
}

/// Starts recording `rid` from this program.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub String);

/// Stops recording `rid`; answers when its segments are all spooled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRecording(pub String);

/// Makes `user` the program (a moderator's choice); `None` returns to the first publisher.
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
    worker: SyncSender<Cmd>,
    worker_rx: Option<Receiver<Cmd>>,
    pinned: Option<UserId>,
    /// Track ids of the current source (video, audio).
    current: (Option<String>, Option<String>),
    /// A source has been selected at some point (later changes are discontinuities).
    had_source: bool,
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
        let (tx, rx) = sync_channel(WORKER_QUEUE);
        Program {
            key,
            id: engine::next_id(),
            deps,
            live,
            room: None,
            worker: tx,
            worker_rx: Some(rx),
            pinned: None,
            current: (None, None),
            had_source: false,
            taps: Vec::new(),
            recordings: Vec::new(),
            last_touch: Instant::now(),
            t0: Instant::now(),
            on_stop: Some(on_stop),
        }
    }

    /// Picks the source among `tracks` and (re)starts the taps if it changed.
    fn select(&mut self, tracks: &[Arc<Fanout>]) {
        let user = match (&self.key.participant, &self.pinned) {
            (Some(only), _) => Some(only.clone()),
            (None, Some(pin)) if tracks.iter().any(|t| &t.info.publisher == pin) => Some(pin.clone()),
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
            // Blocking: a control command must not be lost to a full queue.
            let _ = self.worker.send(Cmd::Switch);
            self.live.mark_discontinuity();
        }
        self.had_source |= ids != (None, None);
        self.current = ids;
        let has_video = video.is_some();
        let video_started = Arc::new(AtomicBool::new(false));
        for track in video.into_iter().chain(audio) {
            let rx = track.tap(TAP_QUEUE);
            let started = video_started.clone();
            let task = feed(
                track,
                rx,
                self.worker.clone(),
                self.t0,
                has_video,
                started,
                self.deps.segmenting.target,
            );
            self.taps.push(self.deps.runtime.spawn(task));
        }
    }
}

/// Reads one track's tap, turns packets into frames on the shared clock, and queues them for
/// the worker. Video waits for a keyframe and asks for one when the group of pictures runs
/// longer than a segment; audio waits for the video (if any) to start.
async fn feed(
    track: Arc<Fanout>,
    mut rx: tokio::sync::mpsc::Receiver<rtc::rtp::Packet>,
    worker: SyncSender<Cmd>,
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
        worker,
        t0,
        has_video,
        video_started,
        target,
        base: None,
        last_key: Instant::now(),
        started: false,
        dropped: 0,
        decode: DecodeTimes::default(),
        told_reorder: false,
    };
    // The first packets may arrive as a burst (queued while this task started): place them so
    // the newest is "now", keeping audio and video in step.
    let Some(first) = rx.recv().await else { return };
    let mut burst = depack.push(&first);
    while let Ok(pkt) = rx.try_recv() {
        burst.extend(depack.push(&pkt));
    }
    if let (Some(f), Some(l)) = (burst.first(), burst.last()) {
        let now = (t0.elapsed().as_secs_f64() * CLOCK_HZ as f64) as i64;
        feed.base = Some((f.pts, (now - (l.pts - f.pts).max(0)).max(0)));
    }
    for frame in burst {
        if !feed.emit(frame) {
            return;
        }
    }
    while let Some(pkt) = rx.recv().await {
        for frame in depack.push(&pkt) {
            if !feed.emit(frame) {
                return;
            }
        }
    }
}

/// A tap task's state between frames.
struct Feed {
    is_video: bool,
    track: Arc<Fanout>,
    worker: SyncSender<Cmd>,
    t0: Instant,
    has_video: bool,
    video_started: Arc<AtomicBool>,
    target: Duration,
    /// `(first pts, its place on the program clock)`.
    base: Option<(i64, i64)>,
    last_key: Instant,
    started: bool,
    dropped: u64,
    /// Decode times for video (B-frames reorder it).
    decode: DecodeTimes,
    told_reorder: bool,
}

impl Feed {
    /// Queues one frame for the worker; `false` once the worker is gone.
    fn emit(&mut self, mut frame: Frame) -> bool {
        if self.is_video {
            if frame.keyframe {
                self.last_key = Instant::now();
                self.started = true;
                self.video_started.store(true, Ordering::Relaxed);
            } else if !self.started {
                return true;
            }
            if self.last_key.elapsed() > self.target {
                self.track.request_keyframe_soon();
                self.last_key = Instant::now();
            }
        } else if self.has_video && !self.video_started.load(Ordering::Relaxed) {
            return true;
        }
        let t0 = self.t0;
        let (pts0, at) = *self.base.get_or_insert_with(|| {
            let at = (t0.elapsed().as_secs_f64() * CLOCK_HZ as f64) as i64;
            (frame.pts, at)
        });
        frame.pts = frame.pts - pts0 + at;
        if !self.is_video {
            let dts = frame.pts;
            return self.send(frame, dts);
        }
        let timed = self.decode.push(frame);
        if self.decode.reorders() && !self.told_reorder {
            self.told_reorder = true;
            tracing::info!(track = %self.track.info.id, "the video has B-frames; decode times are derived");
        }
        timed.into_iter().all(|(frame, dts)| self.send(frame, dts))
    }

    /// Queues one timed frame for the worker; `false` once the worker is gone.
    fn send(&mut self, frame: Frame, dts: i64) -> bool {
        match self.worker.try_send(Cmd::Frame(frame, dts)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    tracing::warn!(track = %self.track.info.id, dropped = self.dropped, "segmenter behind; frames dropped");
                }
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// One recording fed by the worker.
struct Sink {
    next_seq: u64,
    /// The next segment follows a gap or a source change.
    discontinuity: bool,
    poster_done: bool,
}

/// The blocking worker: segments frames, feeds the live window and the recordings.
fn work(rx: Receiver<Cmd>, deps: ProgramDeps, live: Arc<LiveBuffer>, group: GroupId) {
    let mut segmenter = Segmenter::new(deps.segmenting);
    // Segment numbers continue across segmenters (source switches).
    let mut seq_base = 0u64;
    let mut produced = 0u64;
    let mut sinks: HashMap<String, Sink> = HashMap::new();
    let mut last_keyframe: Option<bytes::Bytes> = None;
    let mut errors = 0u64;
    // When the previous frame reached the worker: a part is complete (servable) when the frame
    // after its last one arrives, so its delay is measured from the previous frame.
    let mut previous_frame = Instant::now();
    let handle = |events: Vec<SegmentEvent>,
                  sinks: &mut HashMap<String, Sink>,
                  produced: &mut u64,
                  seq_base: u64,
                  last_keyframe: &Option<bytes::Bytes>| {
        for ev in events {
            let ev = match ev {
                SegmentEvent::Part {
                    segment,
                    index,
                    duration,
                    independent,
                    data,
                } => SegmentEvent::Part {
                    segment: segment + seq_base,
                    index,
                    duration,
                    independent,
                    data,
                },
                SegmentEvent::Segment(mut seg) => {
                    deps.metrics.segments.inc();
                    seg.seq += seq_base;
                    *produced = seg.seq + 1 - seq_base;
                    for (rid, sink) in sinks.iter_mut() {
                        store_segment(&deps, rid, sink, &seg, last_keyframe);
                    }
                    SegmentEvent::Segment(seg)
                }
            };
            live.push(&ev);
        }
    };
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Frame(frame, dts) => {
                // Kept only for posters still to make: a 1080p keyframe is a few hundred kB
                // a camera would otherwise hold for nothing.
                if frame.keyframe && frame.codec.is_video() && sinks.values().any(|s| !s.poster_done) {
                    last_keyframe = Some(frame.data.clone());
                } else if last_keyframe.is_some() && sinks.values().all(|s| s.poster_done) {
                    last_keyframe = None;
                }
                let arrived = Instant::now();
                match segmenter.push_with_dts(frame, dts) {
                    Ok(events) => {
                        for ev in &events {
                            if matches!(ev, SegmentEvent::Part { .. }) {
                                deps.metrics.part_delay.observe(previous_frame.elapsed().as_secs_f64());
                            }
                        }
                        previous_frame = arrived;
                        handle(events, &mut sinks, &mut produced, seq_base, &last_keyframe)
                    }
                    Err(e) => {
                        errors += 1;
                        if errors.is_power_of_two() {
                            tracing::warn!(%group, errors, "segmenter refused a frame: {e}");
                        }
                    }
                }
            }
            Cmd::Switch => {
                if let Ok(events) = segmenter.finish() {
                    handle(events, &mut sinks, &mut produced, seq_base, &last_keyframe);
                }
                seq_base += produced;
                produced = 0;
                segmenter = Segmenter::new(deps.segmenting);
                for sink in sinks.values_mut() {
                    sink.discontinuity = true;
                }
            }
            Cmd::Record(rid) => {
                sinks.entry(rid).or_insert(Sink {
                    next_seq: 0,
                    discontinuity: false,
                    poster_done: false,
                });
            }
            Cmd::StopRecording(rid, done) => {
                // Close the open segment so the recording ends where it was stopped; the next
                // segment (live, other recordings) starts at the next keyframe.
                if let Ok(events) = segmenter.finish() {
                    handle(events, &mut sinks, &mut produced, seq_base, &last_keyframe);
                }
                seq_base += produced;
                produced = 0;
                segmenter = Segmenter::new(deps.segmenting);
                sinks.remove(&rid);
                let _ = done.send(());
            }
        }
    }
    tracing::debug!(%group, "program worker ended");
}

/// Spools one segment (and, the first time, a poster) for recording `rid`.
fn store_segment(
    deps: &ProgramDeps,
    rid: &str,
    sink: &mut Sink,
    seg: &crate::segment::Segment,
    last_keyframe: &Option<bytes::Bytes>,
) {
    let seq = sink.next_seq;
    let row = SegmentRow {
        seq,
        duration: seg.duration,
        discontinuity: seq > 0 && (seg.discontinuity || sink.discontinuity),
        bytes: seg.data.len() as u64,
    };
    match deps
        .store
        .put(&recordings::segment_key(rid, seq), &seg.data, Some(row.index_row(rid)))
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
        if let Some(rx) = self.worker_rx.take() {
            let (deps, live, group) = (self.deps.clone(), self.live.clone(), self.key.group.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("segmenter-{group}"))
                .spawn(move || work(rx, deps, live, group));
            if let Err(e) = spawned {
                tracing::error!("cannot start a segmenter thread: {e}");
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

    fn handle(&mut self, msg: CallChanged, _ctx: &mut Context<Self>) {
        self.select(&msg.tracks);
    }
}

impl Handler<Record> for Program {
    type Result = ();

    fn handle(&mut self, msg: Record, _ctx: &mut Context<Self>) {
        if !self.recordings.contains(&msg.0) {
            self.recordings.push(msg.0.clone());
        }
        // Blocking send: a recording start must not be lost to a full queue.
        let _ = self.worker.send(Cmd::Record(msg.0));
    }
}

impl Handler<StopRecording> for Program {
    type Result = actix::ResponseFuture<()>;

    fn handle(&mut self, msg: StopRecording, _ctx: &mut Context<Self>) -> Self::Result {
        self.recordings.retain(|r| r != &msg.0);
        self.last_touch = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.worker.send(Cmd::StopRecording(msg.0, tx));
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
