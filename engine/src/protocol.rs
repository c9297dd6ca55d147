//! The realtime protocol carried over the `/v1/rtc` WebSocket: JSON objects tagged by `type`.
//! [`ClientMessage`] is what clients send; [`ServerMessage`] what the server sends. The README
//! holds the catalogue for users.

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, UserId};
use crate::model::Message;
use crate::perms::Perms;

/// A message from the client. `req`, when present, is echoed in the reply so clients can match
/// replies to requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Enter a group's room: receive its messages and events.
    Join {
        group: GroupId,
        #[serde(default)]
        req: Option<String>,
    },
    /// Leave a group's room.
    Leave {
        group: GroupId,
        #[serde(default)]
        req: Option<String>,
    },
    /// Send a chat message (same rules as the REST call).
    SendMessage {
        group: GroupId,
        text: String,
        #[serde(default)]
        req: Option<String>,
    },
    /// Keep-alive; answered with `pong`.
    Ping {
        #[serde(default)]
        req: Option<String>,
    },
    /// Publish an SDP offer's tracks into one or more groups (like WHIP); answered with `answer`.
    Publish {
        groups: Vec<GroupId>,
        sdp: String,
        #[serde(default)]
        req: Option<String>,
    },
    /// Play a publisher of a group (like WHEP); answered with `answer`.
    Subscribe {
        group: GroupId,
        #[serde(default)]
        participant: Option<UserId>,
        sdp: String,
        #[serde(default)]
        req: Option<String>,
    },
    /// A new offer for a publish session of this connection (tracks added or removed);
    /// answered with `answer`.
    Renegotiate {
        session: String,
        sdp: String,
        #[serde(default)]
        req: Option<String>,
    },
    /// The client's answer to the server's `offer` for a playback session of this connection.
    /// No reply when accepted; `error` otherwise.
    Answer {
        session: String,
        sdp: String,
        #[serde(default)]
        req: Option<String>,
    },
    /// Pin a playback session's video to simulcast layer `rid` (`null`: automatic again), for
    /// `track` or every video track; within the member's caps. Answered with `layer_set`.
    SetLayer {
        session: String,
        #[serde(default)]
        track: Option<String>,
        rid: Option<String>,
        #[serde(default)]
        req: Option<String>,
    },
    /// Adaptive stream (extension): the size in device pixels a playback session shows its
    /// video at (`width` and `height`; both absent or `null`: no longer told; 0 x 0: hidden),
    /// for `track` or every video track. Each then gets the smallest layer that covers it,
    /// within the member's caps; a `set_layer` pin goes first. Answered with `view_set`.
    SetView {
        session: String,
        #[serde(default)]
        track: Option<String>,
        #[serde(default)]
        width: Option<u32>,
        #[serde(default)]
        height: Option<u32>,
        #[serde(default)]
        req: Option<String>,
    },
    /// Raise (or, with `raised: false`, lower) a hand in a joined group (extension): asking a
    /// moderator for the floor. Answered with `hand_raised`; the room's other connections
    /// that list or moderate it hear the same.
    RaiseHand {
        group: GroupId,
        #[serde(default = "raised_by_default")]
        raised: bool,
        #[serde(default)]
        req: Option<String>,
    },
    /// End a session this connection started; answered with `session_ended`.
    EndSession {
        session: String,
        #[serde(default)]
        req: Option<String>,
    },
}

fn raised_by_default() -> bool {
    true
}

/// Why a connection left a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The client asked to leave.
    Left,
    /// The user lost access (removed from the group, or guest access closed).
    Removed,
    /// The group was deleted.
    GroupDeleted,
}

/// A message to the client.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every connection.
    Hello { user: UserId, connection: String },
    /// Reply to `join`: the caller's effective permissions in the group.
    Joined {
        group: GroupId,
        permissions: Perms,
        /// Who else is connected to the room (only with `can_list`).
        participants: Vec<crate::room::messages::Present>,
        /// The caller's media caps here (member over group): what to capture and send.
        media: crate::model::MediaCaps,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// The connection is no longer in the room.
    Left {
        group: GroupId,
        reason: LeaveReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// A chat message in a joined group (sent to connections with `can_receive`).
    Message { group: GroupId, message: Message },
    /// Reply to `send_message`.
    MessageSent {
        group: GroupId,
        message: Message,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// The caller's media caps in a joined group changed (a moderator's PATCH of the member's
    /// `media`, or of the group's `settings.media`).
    MediaChanged {
        group: GroupId,
        media: crate::model::MediaCaps,
    },
    /// The caller's effective permissions in a joined group changed.
    PermissionsChanged { group: GroupId, permissions: Perms },
    /// Another user's connection entered the room.
    ParticipantJoined {
        group: GroupId,
        user: UserId,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Another user's connection left the room.
    ParticipantLeft { group: GroupId, user: UserId },
    /// The room was restarted after an internal fault; state was reloaded from storage.
    RoomRestarted { group: GroupId },
    /// A participant published a track in a joined group (sent with `can_list`).
    TrackPublished {
        group: GroupId,
        participant: UserId,
        track: TrackView,
    },
    /// A track left the group's call (sent with `can_list`).
    TrackUnpublished {
        group: GroupId,
        participant: UserId,
        track: String,
    },
    /// A moderator muted a track for everyone (sent with `can_list`).
    TrackMuted {
        group: GroupId,
        participant: UserId,
        track: String,
    },
    /// Reply to `publish` or `subscribe`: the session id and the SDP answer.
    Answer {
        session: String,
        sdp: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// The tracks of a playback session of this connection changed (its publisher published or
    /// unpublished one): the client answers this offer with `answer`.
    Offer { session: String, sdp: String },
    /// A session of this connection ended: on request (with `req`), or by the server (with
    /// `reason`).
    SessionEnded {
        session: String,
        /// Why, when the server ended it (permission revoked, publisher left, connection lost).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// Connection quality (extension, as LiveKit's): the grade of each participant's links in
    /// `group`'s call whose grade changed (the worst of its publishing uplink and its viewing
    /// downlink, from their loss; lost once they go quiet), to connections with `can_list`.
    ConnectionQuality {
        group: GroupId,
        participants: Vec<crate::room::call::QualityView>,
    },
    /// A hand was raised or lowered in `group` (extension): by `user` (`raise_hand`), or
    /// lowered by the server when `user` was given `can_publish` or left.
    HandRaised {
        group: GroupId,
        user: UserId,
        raised: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// Active speakers (extension): who in `group`'s call is speaking now, loudest first, from
    /// the audio levels their clients put on their packets; sent when that list changes (empty:
    /// nobody speaks), to connections with `can_list`.
    ActiveSpeakers {
        group: GroupId,
        speakers: Vec<crate::room::call::Speaker>,
    },
    /// Dynacast (extension): the simulcast layers (`rids`) of one of this connection's
    /// published video tracks (`track`, the client's track id) that anyone receives now. The
    /// client may stop sending the others until a later `layers_wanted` names them again.
    LayersWanted {
        session: String,
        track: String,
        rids: Vec<String>,
    },
    /// Reply to `set_layer`.
    LayerSet {
        session: String,
        track: Option<String>,
        rid: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// Reply to `set_view`.
    ViewSet {
        session: String,
        track: Option<String>,
        width: Option<u32>,
        height: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// Reply to `ping`.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
    /// A request failed; `code` and `message` as in the REST error shape.
    Error {
        code: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<String>,
    },
}

impl ServerMessage {
    /// Serialises once, for sharing across many connections.
    pub fn to_text(&self) -> std::sync::Arc<str> {
        // Serialising these plain data types cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from("{}"))
            .into()
    }
}

/// A published track as clients see it (in `GET .../call` and `track_published`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrackView {
    pub id: String,
    pub kind: crate::track::MediaKind,
    pub source: crate::track::Source,
    pub muted: bool,
    /// Simulcast layers by RID, lowest first (empty: one layer).
    pub layers: Vec<String>,
    /// Extension: each layer's RID, picture size (0 until its first keyframe) and measured
    /// bitrate, lowest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_info: Vec<crate::track::LayerView>,
    /// Extension: the codec's MIME type, e.g. `video/H264`.
    pub codec: String,
    /// Extension: current subscriber legs.
    pub subscribers: usize,
}

impl TrackView {
    /// The view of a live track.
    pub fn of(track: &crate::track::Fanout) -> TrackView {
        let layer_info = track.layer_views();
        TrackView {
            id: track.info.id.clone(),
            kind: track.info.kind,
            source: track.info.source,
            muted: track.muted(),
            layers: layer_info.iter().map(|l| l.rid.clone()).collect(),
            layer_info,
            codec: track.info.codec.mime_type.clone(),
            subscribers: track.subscribers(),
        }
    }
}
