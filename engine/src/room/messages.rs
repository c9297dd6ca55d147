//! Messages a [`super::Room`] handles, and the notice it sends back to participants.

use std::sync::Arc;

use actix::{Message, Recipient};

use crate::error::EngineError;
use crate::ids::GroupId;
use crate::outbox::Outbox;
use crate::perms::{Perms, Principal};

/// Identifies one realtime connection for the server's lifetime.
pub type ConnId = u64;

/// What a room needs to know about a connection that joins it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub id: ConnId,
    pub principal: Arc<Principal>,
    pub outbox: Outbox,
    /// Where the room tells the connection's actor that it was removed.
    pub notices: Recipient<Removed>,
}

/// Someone connected to a room (for the `joined` reply's presence list).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Present {
    pub user: crate::ids::UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extension: their hand is raised.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hand_raised: bool,
}

/// What joining a room gives: the connection's permissions there and, with `can_list`, who
/// else is connected.
#[derive(Clone, Debug)]
pub struct JoinedRoom {
    pub perms: Perms,
    pub present: Vec<Present>,
    /// The caller's effective media caps (member over group), both fields set.
    pub media: crate::model::MediaCaps,
}

/// Add a connection to the room; replies with its effective permissions and who is present,
/// or `Forbidden`.
#[derive(Message)]
#[rtype(result = "Result<JoinedRoom, EngineError>")]
pub struct Join {
    pub conn: ConnInfo,
}

/// Raise or lower the hand of the user of connection `conn` (which must have joined).
#[derive(Message)]
#[rtype(result = "Result<crate::ids::UserId, EngineError>")]
pub struct RaiseHand {
    pub conn: ConnId,
    pub raised: bool,
}

/// Remove a connection (it left or closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub conn: ConnId,
}

/// Deliver a stored chat message to every connection with `can_receive`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast {
    pub message: crate::model::Message,
}

/// The group's settings or members changed in storage: re-resolve everyone's permissions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

/// The group was deleted: tell every connection and empty the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// Fault injection for tests: panic inside a handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Sent to a participant actor: it is no longer in `group`'s room.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Removed {
    pub group: GroupId,
}

/// Publish a track into this group's call. Replies `Forbidden` without `can_publish`, and
/// `false` when the group's media settings keep this kind of track out (audio, video, screen).
#[derive(Message)]
#[rtype(result = "Result<bool, EngineError>")]
pub struct PublishTrack {
    /// The publishing session.
    pub session: u64,
    pub principal: Arc<Principal>,
    pub track: Arc<crate::track::Fanout>,
    /// How many tracks the session's offer announced (to tell when they have all arrived).
    pub expected: usize,
    /// Where the room tells the session it may no longer publish here.
    pub revoke: Recipient<Revoked>,
}

/// Remove every track a session published here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnpublishSession {
    pub session: u64,
}

/// A publishing session's principal changed (an RTSP camera renamed): the call view lists the
/// new display name. The tracks stay published; nothing is sent to anyone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RenamePublisher {
    pub session: u64,
    pub principal: Arc<Principal>,
}

/// Watch a publisher's tracks (the given participant, or the group's first publisher).
/// Replies with who is watched and their tracks, `Forbidden` without `can_subscribe`,
/// `NotFound` when nobody (or not that participant) publishes.
#[derive(Message, Clone)]
#[rtype(result = "Result<Watched, EngineError>")]
pub struct Subscribe {
    pub session: u64,
    pub principal: Arc<Principal>,
    pub participant: Option<crate::ids::UserId>,
    /// Where the room tells the viewing session to stop.
    pub stop: Recipient<StopSession>,
    /// Where the room tells the viewing session that its media caps changed.
    pub caps: Recipient<CapsChanged>,
    /// Where the room tells the viewing session that the watched user's tracks changed (a
    /// socket playback that renegotiates; `None` for WHEP, which keeps its first tracks).
    pub follow: Option<Recipient<TracksChanged>>,
}

/// The watched user's tracks in this room changed (one was published or unpublished): all of
/// them now, in publishing order. Sent to viewers that follow (see [`Subscribe::follow`]).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct TracksChanged {
    pub tracks: Vec<Arc<crate::track::Fanout>>,
}

/// Remove some tracks a session published here (its client renegotiated them away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnpublishTracks {
    pub session: u64,
    /// Server track ids.
    pub tracks: Vec<String>,
}

/// A viewer's media caps (its member or group `max_resolution` / `max_bitrate_kbps`) changed.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CapsChanged {
    pub caps: crate::track::LegCaps,
}

/// A viewing session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub session: u64,
}

/// Who is in the call and what they publish.
#[derive(Message)]
#[rtype(result = "crate::room::call::CallView")]
pub struct GetCall;

/// Mute a participant's tracks (all, or those of one source) for everyone. Replies with how
/// many tracks were muted.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct MuteParticipant {
    pub user: crate::ids::UserId,
    pub source: Option<crate::track::Source>,
}

/// Take a participant out of the call: their publishing loses this group, their viewing
/// sessions here stop. Replies whether they were in the call.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RemoveParticipant {
    pub user: crate::ids::UserId,
}

/// Sent to a publishing session: it may no longer publish into `group`.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Revoked {
    pub group: GroupId,
}

/// Sent to a session: end now.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct StopSession {
    pub reason: &'static str,
}

/// The reply to [`Subscribe`].
pub struct Watched {
    pub user: crate::ids::UserId,
    pub tracks: Vec<Arc<crate::track::Fanout>>,
    /// Whether every track the publisher announced has arrived (tracks of one offer arrive one
    /// by one; a viewer asks again until this holds, or gives up waiting).
    pub complete: bool,
    /// What limits the viewer's video: member caps over the group's media settings.
    pub caps: crate::track::LegCaps,
}

/// Subscribes `watcher` (identified by `id`) to the call's publications: it is sent the
/// current list at once and again after every change. Used by recorders and live HLS.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchCall {
    pub id: u64,
    pub watcher: Recipient<CallChanged>,
}

/// Ends a [`WatchCall`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnwatchCall {
    pub id: u64,
}

/// The call's published tracks, in publishing order (the first publisher's tracks first), and
/// its lead speaker.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CallChanged {
    pub group: GroupId,
    pub tracks: Vec<Arc<crate::track::Fanout>>,
    /// Who has held the floor last: the loudest speaker once they have led for a moment (see
    /// `call.rs`); `None` until anyone has. The live program follows them.
    pub speaker: Option<crate::ids::UserId>,
}

/// A group's call started (its first track was published) or ended (its last one went):
/// sent to the registry's call observer (automatic recording).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct CallActivity {
    pub group: GroupId,
    pub publishing: bool,
}

/// A publish session finished negotiating and will deliver `expected` tracks: viewers asking
/// for its publisher meanwhile wait for them instead of getting 404.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AnnouncePublish {
    pub session: u64,
    pub principal: Arc<Principal>,
    pub expected: usize,
}
