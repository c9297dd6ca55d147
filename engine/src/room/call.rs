//! The call side of a room: who publishes which tracks here, who watches whom, and the rules
//! that apply live (`can_publish`, `can_subscribe`, moderation); and, on the call's timer, who
//! is speaking (and leads, for the live program) and how good each participant's links are.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{AsyncContext, Context, Handler, MessageResult, Recipient, SpawnHandle};
use serde::Serialize;

use super::messages::{
    AnnouncePublish, CallActivity, CallChanged, CapsChanged, GetCall, MuteParticipant, PublishTrack, RemoveParticipant,
    RenamePublisher, Revoked, StopSession, Subscribe, TracksChanged, UnpublishSession, UnpublishTracks, Unsubscribe,
    UnwatchCall, WatchCall, Watched,
};
use super::Room;
use crate::error::EngineError;
use crate::ids::UserId;
use crate::model::{Group, MediaSettings};
use crate::perms::{Perms, Principal};
use crate::protocol::{ServerMessage, TrackView};
use crate::track::audio_level::{SpeechDetector, OBSERVE_EVERY};
use crate::track::link_quality::{now_ms, Quality, UplinkSample, PUBLISHER_LOST_ROUNDS, VIEWER_LOST_AFTER};
use crate::track::{Fanout, LegCaps, MediaKind, Source, TrackInfo};

/// One published track in this room.
pub struct Publication {
    pub session: u64,
    pub principal: Arc<Principal>,
    pub track: Arc<Fanout>,
    pub revoke: Recipient<Revoked>,
}

/// One viewing session in this room.
pub struct Viewing {
    pub principal: Arc<Principal>,
    pub watching: UserId,
    pub stop: Recipient<StopSession>,
    /// The viewer's media caps as last told, and where to tell changes.
    pub caps: LegCaps,
    pub caps_to: Recipient<CapsChanged>,
    /// Told when the watched user's tracks change (socket playbacks, which renegotiate).
    pub follow: Option<Recipient<TracksChanged>>,
}

/// The call's live state.
#[derive(Default)]
pub struct CallState {
    /// In publishing order: the first publisher is the group's default program.
    pub publications: Vec<Publication>,
    pub viewers: HashMap<u64, Viewing>,
    /// Per publishing session: its user, tracks that arrived here (published or kept out by the
    /// group's media settings), and tracks its offer announced.
    pub arrivals: HashMap<u64, (UserId, usize, usize)>,
    /// Told of every change to `publications` (see [`WatchCall`]).
    pub watchers: HashMap<u64, Recipient<CallChanged>>,
    /// Each audio track's smoothed level, by track id.
    pub levels: HashMap<String, SpeechDetector>,
    /// The active speakers last told, loudest first.
    pub speakers: Vec<Speaker>,
    /// The timer that reads the levels and the links, while the call has publications or
    /// speakers (a timer would otherwise keep an empty room alive), and its ticks so far.
    pub call_timer: Option<SpawnHandle>,
    pub ticks: u64,
    /// Each participant's link quality as last told.
    pub quality: HashMap<UserId, Quality>,
    /// Publishers whose uplink carried nothing, and for how many gradings in a row.
    pub quiet_rounds: HashMap<UserId, u8>,
    /// Each publication's uplink at this room's last grading, by track id.
    pub uplinks_seen: HashMap<String, UplinkSample>,
    /// The lead speaker (who the live program follows) and since when.
    pub lead: Option<(UserId, Instant)>,
    /// The loudest speaker who is not the lead, and since when they have been.
    pub challenger: Option<(UserId, Instant)>,
}

/// How long a speaker must be the loudest before they take the lead.
const LEAD_AFTER: Duration = Duration::from_millis(1_200);
/// How long a lead holds at least, whoever else speaks.
const LEAD_HOLD: Duration = Duration::from_secs(3);

/// `GET /v1/groups/{gid}/call`.
#[derive(Debug, Serialize)]
pub struct CallView {
    pub participants: Vec<ParticipantView>,
}

/// A participant of the call.
#[derive(Debug, Serialize)]
pub struct ParticipantView {
    pub user: UserId,
    pub name: Option<String>,
    pub tracks: Vec<TrackView>,
    /// Extension: one of the call's active speakers now.
    pub speaking: bool,
    /// Extension: the grade of their links (`connection_quality`), once graded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
}

/// A participant's link quality (socket event `connection_quality`, extension).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct QualityView {
    pub user: UserId,
    pub quality: Quality,
}

/// Links are graded every this many timer ticks (about 2 s).
const QUALITY_EVERY_TICKS: u64 = 7;

/// An active speaker (socket event `active_speakers`, extension).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Speaker {
    pub user: UserId,
    /// The smoothed audio level, 0 to 1 (linear amplitude), to three decimals.
    pub level: f64,
}

impl CallState {
    fn publishes(&self, user: &UserId) -> bool {
        self.publications.iter().any(|p| &p.principal.user == user)
    }

    /// Whether every session of `user` has delivered all the tracks it announced.
    fn complete(&self, user: &UserId) -> bool {
        self.arrivals
            .values()
            .filter(|(u, _, _)| u == user)
            .all(|(_, arrived, expected)| arrived >= expected)
    }
}

impl Room {
    /// Tells the call observer that the call started or ended.
    fn call_activity(&self, publishing: bool) {
        if let Some(o) = &self.observer {
            o.do_send(CallActivity {
                group: self.group.clone(),
                publishing,
            });
        }
    }

    /// Sends the current publications to every watcher (or only to `only`).
    fn notify_watchers(&self, only: Option<u64>) {
        let msg = CallChanged {
            group: self.group.clone(),
            tracks: self.call.publications.iter().map(|p| p.track.clone()).collect(),
            speaker: self.call.lead.as_ref().map(|(u, _)| u.clone()),
        };
        for (id, w) in &self.call.watchers {
            if only.is_none_or(|o| o == *id) {
                w.do_send(msg.clone());
            }
        }
    }

    /// Tells the viewers that follow `user` which tracks `user` publishes here now.
    fn notify_followers(&self, user: &UserId) {
        let tracks: Vec<Arc<Fanout>> = self
            .call
            .publications
            .iter()
            .filter(|p| &p.principal.user == user)
            .map(|p| p.track.clone())
            .collect();
        if tracks.is_empty() {
            // Its viewers are stopped instead (see `unpublish_where`).
            return;
        }
        for v in self.call.viewers.values().filter(|v| &v.watching == user) {
            if let Some(follow) = &v.follow {
                follow.do_send(TracksChanged { tracks: tracks.clone() });
            }
        }
    }

    /// The media caps of `who` here: member caps over the group's media settings.
    fn caps_of(&self, group: &Group, who: &Principal) -> LegCaps {
        let member = self.store.member(&self.group, &who.user).ok().flatten();
        LegCaps::of(&group.settings.media, member.as_ref().map(|m| &m.media))
    }

    fn perms_of(&self, group: &Group, who: &Principal) -> Option<Perms> {
        let member = self.store.member(&self.group, &who.user).ok().flatten();
        group.effective(who, member.as_ref())
    }

    /// Removes publications matching `pred`, telling `can_list` connections, and stops the
    /// viewers of publishers who no longer publish anything here.
    pub(super) fn unpublish_where(&mut self, pred: impl Fn(&Publication) -> bool) -> Vec<Publication> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.call.publications)
            .into_iter()
            .partition(|p| pred(p));
        self.call.publications = kept;
        if !gone.is_empty() {
            self.notify_watchers(None);
            if self.call.publications.is_empty() {
                self.call_activity(false);
            }
        }
        for p in &gone {
            p.track.leave_room(&self.group);
            let ev = ServerMessage::TrackUnpublished {
                group: self.group.clone(),
                participant: p.principal.user.clone(),
                track: p.track.info.id.clone(),
            };
            self.broadcast(&ev, |perms| perms.can_list, None);
        }
        let mut users: Vec<UserId> = gone.iter().map(|p| p.principal.user.clone()).collect();
        users.sort();
        users.dedup();
        for user in &users {
            self.notify_followers(user);
        }
        let orphaned: Vec<u64> = self
            .call
            .viewers
            .iter()
            .filter(|(_, v)| !self.call.publishes(&v.watching))
            .map(|(id, _)| *id)
            .collect();
        for id in orphaned {
            if let Some(v) = self.call.viewers.remove(&id) {
                v.stop.do_send(StopSession {
                    reason: "the publisher left this group's call",
                });
            }
        }
        gone
    }

    /// Applies permission changes to the call: publishers without `can_publish` lose this
    /// group, viewers without `can_subscribe` are stopped.
    pub(super) fn refresh_call(&mut self, group: &Group) {
        let revoked: Vec<u64> = self
            .call
            .publications
            .iter()
            .filter(|p| {
                !self
                    .perms_of(group, &p.principal)
                    .is_some_and(|perms| perms.can_publish)
            })
            .map(|p| p.session)
            .collect();
        if !revoked.is_empty() {
            for p in self.unpublish_where(|p| revoked.contains(&p.session)) {
                p.revoke.do_send(Revoked {
                    group: self.group.clone(),
                });
            }
        }
        let stopped: Vec<u64> = self
            .call
            .viewers
            .iter()
            .filter(|(_, v)| {
                !self
                    .perms_of(group, &v.principal)
                    .is_some_and(|perms| perms.can_subscribe)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stopped {
            if let Some(v) = self.call.viewers.remove(&id) {
                v.stop.do_send(StopSession {
                    reason: "can_subscribe was revoked",
                });
            }
        }
        // Media caps apply live: the viewer's legs move to the layer the new caps allow.
        let caps: Vec<(u64, LegCaps)> = self
            .call
            .viewers
            .iter()
            .map(|(id, v)| (*id, self.caps_of(group, &v.principal)))
            .filter(|(id, caps)| self.call.viewers.get(id).is_some_and(|v| &v.caps != caps))
            .collect();
        for (id, caps) in caps {
            if let Some(v) = self.call.viewers.get_mut(&id) {
                v.caps = caps.clone();
                v.caps_to.do_send(CapsChanged { caps });
            }
        }
    }

    /// Ends every session in the call (the group is gone).
    pub(super) fn end_call(&mut self) {
        for p in self.unpublish_where(|_| true) {
            p.revoke.do_send(Revoked {
                group: self.group.clone(),
            });
        }
        for (_, v) in self.call.viewers.drain() {
            v.stop.do_send(StopSession {
                reason: "the group was deleted",
            });
        }
    }

    /// The group, if `who` holds the permission `want` tests (named `name` in the error).
    fn require(&self, who: &Principal, want: impl Fn(&Perms) -> bool, name: &str) -> Result<Group, EngineError> {
        let group = self
            .store
            .group(&self.group)?
            .ok_or_else(|| EngineError::GroupNotFound(self.group.to_string()))?;
        match self.perms_of(&group, who) {
            Some(p) if want(&p) => Ok(group),
            _ => Err(EngineError::Forbidden(format!(
                "{name} is required in group {}",
                self.group
            ))),
        }
    }
}

/// Whether a group's media settings let a track of this kind and source into its call.
pub fn media_allowed(media: &MediaSettings, track: &TrackInfo) -> bool {
    match (track.kind, track.source) {
        (MediaKind::Audio, _) => media.audio,
        (MediaKind::Video, Source::Screen) => media.screen,
        (MediaKind::Video, _) => media.video,
    }
}

impl Handler<PublishTrack> for Room {
    type Result = Result<bool, EngineError>;

    fn handle(&mut self, msg: PublishTrack, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |room| {
            let group = room.require(&msg.principal, |p| p.can_publish, "can_publish")?;
            let arrival =
                room.call
                    .arrivals
                    .entry(msg.session)
                    .or_insert((msg.principal.user.clone(), 0, msg.expected));
            arrival.1 += 1;
            if !media_allowed(&group.settings.media, &msg.track.info) {
                return Ok(false);
            }
            let ev = ServerMessage::TrackPublished {
                group: room.group.clone(),
                participant: msg.principal.user.clone(),
                track: TrackView::of(&msg.track),
            };
            if room.call.publications.is_empty() {
                room.call_activity(true);
            }
            let user = msg.principal.user.clone();
            msg.track.enter_room(&room.group);
            room.call.publications.push(Publication {
                session: msg.session,
                principal: msg.principal,
                track: msg.track,
                revoke: msg.revoke,
            });
            room.broadcast(&ev, |p| p.can_list, None);
            room.notify_watchers(None);
            room.notify_followers(&user);
            Ok(true)
        })
        .unwrap_or(Err(EngineError::ActorGone("room")))
        .inspect(|_| self.watch_call(ctx))
    }
}

impl Handler<UnpublishSession> for Room {
    type Result = ();

    fn handle(&mut self, msg: UnpublishSession, ctx: &mut Context<Self>) {
        self.guarded(ctx, |room| {
            room.call.arrivals.remove(&msg.session);
            room.unpublish_where(|p| p.session == msg.session);
        });
    }
}

impl Handler<UnpublishTracks> for Room {
    type Result = ();

    fn handle(&mut self, msg: UnpublishTracks, ctx: &mut Context<Self>) {
        self.guarded(ctx, |room| {
            room.unpublish_where(|p| p.session == msg.session && msg.tracks.contains(&p.track.info.id));
        });
    }
}

impl Handler<RenamePublisher> for Room {
    type Result = ();

    fn handle(&mut self, msg: RenamePublisher, _ctx: &mut Context<Self>) {
        for p in self.call.publications.iter_mut().filter(|p| p.session == msg.session) {
            p.principal = msg.principal.clone();
        }
    }
}

impl Handler<Subscribe> for Room {
    type Result = Result<Watched, EngineError>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |room| {
            let group = room.require(&msg.principal, |p| p.can_subscribe, "can_subscribe")?;
            let caps = room.caps_of(&group, &msg.principal);
            // A publish that has negotiated but whose tracks have not all arrived yet.
            let pending = |user: Option<&UserId>| {
                room.call
                    .arrivals
                    .values()
                    .find(|(u, arrived, expected)| arrived < expected && user.is_none_or(|w| w == u))
                    .map(|(u, _, _)| u.clone())
            };
            let user = match msg.participant {
                Some(u) => u,
                None => match room.call.publications.first() {
                    Some(p) => p.principal.user.clone(),
                    None => {
                        return match pending(None) {
                            Some(user) => Ok(Watched {
                                user,
                                tracks: Vec::new(),
                                complete: false,
                                caps,
                            }),
                            None => Err(EngineError::NotFound(format!(
                                "nobody is publishing in group {}",
                                room.group
                            ))),
                        }
                    }
                },
            };
            let tracks: Vec<Arc<Fanout>> = room
                .call
                .publications
                .iter()
                .filter(|p| p.principal.user == user)
                .map(|p| p.track.clone())
                .collect();
            if tracks.is_empty() {
                if pending(Some(&user)).is_some() {
                    return Ok(Watched {
                        user,
                        tracks,
                        complete: false,
                        caps,
                    });
                }
                return Err(EngineError::NotFound(format!(
                    "{user} is not publishing in group {}",
                    room.group
                )));
            }
            room.call.viewers.insert(
                msg.session,
                Viewing {
                    principal: msg.principal,
                    watching: user.clone(),
                    stop: msg.stop,
                    caps: caps.clone(),
                    caps_to: msg.caps,
                    follow: msg.follow,
                },
            );
            let complete = room.call.complete(&user);
            Ok(Watched {
                user,
                tracks,
                complete,
                caps,
            })
        })
        .unwrap_or(Err(EngineError::ActorGone("room")))
    }
}

impl Handler<Unsubscribe> for Room {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        self.guarded(ctx, |room| {
            room.call.viewers.remove(&msg.session);
        });
    }
}

impl Handler<GetCall> for Room {
    type Result = MessageResult<GetCall>;

    fn handle(&mut self, _msg: GetCall, _ctx: &mut Context<Self>) -> Self::Result {
        let mut participants: Vec<ParticipantView> = Vec::new();
        for p in &self.call.publications {
            let view = TrackView::of(&p.track);
            match participants.iter_mut().find(|v| v.user == p.principal.user) {
                Some(v) => v.tracks.push(view),
                None => participants.push(ParticipantView {
                    user: p.principal.user.clone(),
                    name: p.principal.name.clone(),
                    tracks: vec![view],
                    speaking: self.call.speakers.iter().any(|s| s.user == p.principal.user),
                    quality: self.call.quality.get(&p.principal.user).copied(),
                }),
            }
        }
        MessageResult(CallView { participants })
    }
}

impl Room {
    /// Starts the call's timer if the call has publications and it is not running: every
    /// [`OBSERVE_EVERY`] it reads the audio levels, every [`QUALITY_EVERY_TICKS`] it grades the
    /// links. It stops itself once no publication and no speaker is left.
    pub(super) fn watch_call(&mut self, ctx: &mut Context<Self>) {
        if self.call.call_timer.is_some() || self.call.publications.is_empty() {
            return;
        }
        let handle = ctx.run_interval(OBSERVE_EVERY, move |room, ctx| {
            room.call.ticks += 1;
            let grade = room.call.ticks.is_multiple_of(QUALITY_EVERY_TICKS);
            room.guarded(ctx, |r| {
                r.observe_speakers();
                if grade {
                    r.grade_links();
                }
            });
            if room.call.publications.is_empty() && room.call.speakers.is_empty() {
                room.call.quality.clear();
                room.call.quiet_rounds.clear();
                room.call.uplinks_seen.clear();
                if let Some(h) = room.call.call_timer.take() {
                    ctx.cancel_future(h);
                }
            }
        });
        self.call.call_timer = Some(handle);
    }

    /// Grades each participant's links (the worst of its publications' uplink loss and jitter
    /// and its legs' downlink loss, jitter and round trip in this room) and tells `can_list`
    /// connections those that changed. A publisher whose uplink carried nothing for
    /// [`PUBLISHER_LOST_ROUNDS`] gradings, or a viewer not heard from for [`VIEWER_LOST_AFTER`]
    /// on any leg, is lost.
    fn grade_links(&mut self) {
        let mut now: HashMap<UserId, Quality> = HashMap::new();
        let mut worst = |user: &UserId, q: Quality| {
            let e = now.entry(user.clone()).or_insert(q);
            *e = (*e).min(q);
        };
        let (mut carried, mut quiet) = (HashSet::new(), HashSet::new());
        let mut heard: HashMap<UserId, u64> = HashMap::new();
        let mut seen = HashMap::new();
        for p in &self.call.publications {
            let user = &p.principal.user;
            // Measured since this room's last grading: a track in several rooms is read by each.
            let mut silent = false;
            if let Some(up) = p.track.uplink() {
                let before = self
                    .call
                    .uplinks_seen
                    .get(&p.track.info.id)
                    .copied()
                    .unwrap_or_default();
                seen.insert(p.track.info.id.clone(), up);
                let loss;
                (silent, loss) = up.since(&before);
                if silent {
                    quiet.insert(user);
                } else {
                    carried.insert(user);
                    // Media came: graded from it (a local source has no more to say).
                    worst(user, Quality::of_loss(loss.unwrap_or(0.0)));
                }
                if !silent {
                    worst(user, Quality::of_jitter(p.track.uplink_jitter_ms()));
                    worst(user, Quality::of_rtt(p.track.uplink_rtt_ms()));
                }
            }
            p.track.for_each_leg(|leg| {
                if leg.room != self.group {
                    return;
                }
                worst(&leg.viewer, Quality::of_loss(leg.downlink_loss()));
                worst(&leg.viewer, Quality::of_jitter(leg.downlink_jitter_ms()));
                worst(&leg.viewer, Quality::of_rtt(leg.downlink_rtt_ms()));
                // A viewer is sent nothing of a quiet track, so owes no report on it.
                if let (Some(at), false) = (leg.heard_ms(), silent) {
                    let newest = heard.entry(leg.viewer.clone()).or_insert(at);
                    *newest = (*newest).max(at);
                }
            });
        }
        self.call.uplinks_seen = seen;
        let rounds = &mut self.call.quiet_rounds;
        rounds.retain(|u, _| quiet.contains(u) && !carried.contains(u));
        for user in quiet.into_iter().filter(|u| !carried.contains(u)) {
            let n = rounds.entry(user.clone()).or_default();
            *n = n.saturating_add(1);
            if *n >= PUBLISHER_LOST_ROUNDS {
                worst(user, Quality::Lost);
            } else if let Some(q) = self.call.quality.get(user) {
                worst(user, *q); // quiet for a moment: the last grade stands
            }
        }
        let at = now_ms();
        for (viewer, newest) in heard {
            if at.saturating_sub(newest) >= VIEWER_LOST_AFTER.as_millis() as u64 {
                worst(&viewer, Quality::Lost);
            }
        }
        let changed: Vec<QualityView> = now
            .iter()
            .filter(|(u, q)| self.call.quality.get(*u) != Some(*q))
            .map(|(u, q)| QualityView {
                user: u.clone(),
                quality: *q,
            })
            .collect();
        // Those no longer measured (gone) are forgotten, so a return is told again.
        self.call.quality = now;
        if changed.is_empty() {
            return;
        }
        let msg = ServerMessage::ConnectionQuality {
            group: self.group.clone(),
            participants: changed,
        };
        self.broadcast(&msg, |p| p.can_list, None);
    }

    /// Reads every audio track's levels (each [`OBSERVE_EVERY`]) and, when the set of active
    /// speakers or their order changes, tells the connections that may list the call
    /// (`active_speakers`, loudest first; empty when nobody speaks).
    pub(super) fn observe_speakers(&mut self) {
        let call = &mut self.call;
        if call.levels.is_empty() && call.speakers.is_empty() && call.publications.is_empty() {
            return;
        }
        let mut loudest: HashMap<&UserId, f64> = HashMap::new();
        let mut seen = Vec::new();
        for p in call
            .publications
            .iter()
            .filter(|p| p.track.info.kind == MediaKind::Audio)
        {
            if !p.track.levels.reported() {
                continue;
            }
            let d = call.levels.entry(p.track.info.id.clone()).or_default();
            seen.push(p.track.info.id.clone());
            if d.update(p.track.levels.take()) {
                let l = loudest.entry(&p.principal.user).or_default();
                *l = l.max(d.level());
            }
        }
        call.levels.retain(|id, _| seen.contains(id));
        let mut speakers: Vec<Speaker> = loudest
            .into_iter()
            .map(|(user, level)| Speaker {
                user: user.clone(),
                level: (level * 1000.0).round() / 1000.0,
            })
            .collect();
        speakers.sort_by(|a, b| b.level.total_cmp(&a.level).then_with(|| a.user.cmp(&b.user)));
        let same = |a: &[Speaker], b: &[Speaker]| a.iter().map(|s| &s.user).eq(b.iter().map(|s| &s.user));
        let changed = !same(&speakers, &call.speakers);
        call.speakers = speakers.clone();
        if changed {
            let msg = ServerMessage::ActiveSpeakers {
                group: self.group.clone(),
                speakers,
            };
            self.broadcast(&msg, |p| p.can_list, None);
        }
        if self.call.take_lead(Instant::now()) {
            self.notify_watchers(None);
        }
    }
}

impl CallState {
    /// Moves the lead to the loudest speaker once they have been the loudest for
    /// [`LEAD_AFTER`] and the lead has held for [`LEAD_HOLD`]; silence keeps the lead where it
    /// is. Returns whether it moved.
    fn take_lead(&mut self, now: Instant) -> bool {
        let Some(top) = self.speakers.first().map(|s| s.user.clone()) else {
            self.challenger = None;
            return false;
        };
        if self.lead.as_ref().is_some_and(|(u, _)| *u == top) {
            self.challenger = None;
            return false;
        }
        let since = match &self.challenger {
            Some((u, t)) if *u == top => *t,
            _ => {
                self.challenger = Some((top.clone(), now));
                now
            }
        };
        let held = self
            .lead
            .as_ref()
            .is_none_or(|(_, t)| now.saturating_duration_since(*t) >= LEAD_HOLD);
        if now.saturating_duration_since(since) < LEAD_AFTER || !held {
            return false;
        }
        self.lead = Some((top, now));
        self.challenger = None;
        true
    }
}

impl Handler<MuteParticipant> for Room {
    type Result = usize;

    fn handle(&mut self, msg: MuteParticipant, _ctx: &mut Context<Self>) -> usize {
        let mut n = 0;
        for p in self.call.publications.iter().filter(|p| p.principal.user == msg.user) {
            if msg.source.is_none_or(|s| s == p.track.info.source) {
                p.track.set_muted(true);
                n += 1;
                let ev = ServerMessage::TrackMuted {
                    group: self.group.clone(),
                    participant: msg.user.clone(),
                    track: p.track.info.id.clone(),
                };
                self.broadcast(&ev, |perms| perms.can_list, None);
            }
        }
        n
    }
}

impl Handler<RemoveParticipant> for Room {
    type Result = bool;

    fn handle(&mut self, msg: RemoveParticipant, ctx: &mut Context<Self>) -> bool {
        self.guarded(ctx, |room| {
            let gone = room.unpublish_where(|p| p.principal.user == msg.user);
            for p in &gone {
                p.revoke.do_send(Revoked {
                    group: room.group.clone(),
                });
            }
            let viewing: Vec<u64> = room
                .call
                .viewers
                .iter()
                .filter(|(_, v)| v.principal.user == msg.user)
                .map(|(id, _)| *id)
                .collect();
            for id in &viewing {
                if let Some(v) = room.call.viewers.remove(id) {
                    v.stop.do_send(StopSession {
                        reason: "removed from the call by a moderator",
                    });
                }
            }
            !gone.is_empty() || !viewing.is_empty()
        })
        .unwrap_or(false)
    }
}

impl Handler<WatchCall> for Room {
    type Result = ();

    fn handle(&mut self, msg: WatchCall, _ctx: &mut Context<Self>) {
        self.call.watchers.insert(msg.id, msg.watcher);
        self.notify_watchers(Some(msg.id));
    }
}

impl Handler<UnwatchCall> for Room {
    type Result = ();

    fn handle(&mut self, msg: UnwatchCall, _ctx: &mut Context<Self>) {
        self.call.watchers.remove(&msg.id);
    }
}

impl Handler<AnnouncePublish> for Room {
    type Result = ();

    fn handle(&mut self, msg: AnnouncePublish, ctx: &mut Context<Self>) {
        self.guarded(ctx, |room| {
            let allowed = room.require(&msg.principal, |p| p.can_publish, "can_publish").is_ok();
            if allowed && msg.expected > 0 {
                room.call
                    .arrivals
                    .entry(msg.session)
                    .or_insert((msg.principal.user.clone(), 0, msg.expected));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaking(call: &mut CallState, users: &[&str]) {
        call.speakers = users
            .iter()
            .map(|u| Speaker {
                user: UserId::new(*u).expect("a valid id"),
                level: 0.1,
            })
            .collect();
    }

    #[test]
    fn the_lead_goes_to_whoever_stays_loudest_and_holds_through_silence() {
        let mut call = CallState::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        speaking(&mut call, &["ann"]);
        assert!(!call.take_lead(at(0)), "not at the first word");
        assert!(call.take_lead(at(1_200)), "after 1.2 s");
        assert_eq!(call.lead.as_ref().map(|(u, _)| u.as_str()), Some("ann"));
        // Ben interrupts: not before the lead has held 3 s, and not for a short burst.
        speaking(&mut call, &["ben", "ann"]);
        assert!(!call.take_lead(at(1_500)));
        speaking(&mut call, &["ann"]);
        assert!(!call.take_lead(at(1_800)));
        speaking(&mut call, &["ben"]);
        assert!(!call.take_lead(at(3_000)));
        assert!(!call.take_lead(at(4_000)), "the lead holds 3 s");
        assert!(call.take_lead(at(4_300)));
        assert_eq!(call.lead.as_ref().map(|(u, _)| u.as_str()), Some("ben"));
        // Silence keeps Ben.
        speaking(&mut call, &[]);
        assert!(!call.take_lead(at(20_000)));
        assert_eq!(call.lead.as_ref().map(|(u, _)| u.as_str()), Some("ben"));
    }
}
