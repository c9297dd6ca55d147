//! WebRTC sessions: a [`Publisher`] (a WHIP publish, fanned out to one or more groups) or a
//! [`Viewer`] (a WHEP playback of one publisher in one group), each an actor owning its peer
//! connection, and the [`Sessions`] table that maps the public session id to it.

mod publish;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::{Addr, Message};
pub use publish::Publisher;
pub use view::Viewer;

use crate::access::Access;
use crate::error::EngineError;
use crate::ids::{GroupId, UserId};
use crate::media::{check_offer, Media};
use crate::metrics::EngineMetrics;
use crate::perms::{Perm, Principal};
use crate::registry::Registry;
use crate::room::messages::StopSession;
use crate::store::Store;

/// What a session id refers to.
#[derive(Clone)]
pub enum SessionKind {
    Publish(Addr<Publisher>),
    View(Addr<Viewer>),
}

/// One live session.
#[derive(Clone)]
pub struct SessionEntry {
    /// Who started it (may end or change it).
    pub owner: UserId,
    pub kind: SessionKind,
}

/// Live sessions by public id.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, SessionEntry>>>,
}

impl Sessions {
    /// Registers a session.
    pub fn insert(&self, sid: String, entry: SessionEntry) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(sid, entry);
        }
    }

    /// Looks a session up.
    pub fn get(&self, sid: &str) -> Option<SessionEntry> {
        self.inner.lock().ok().and_then(|m| m.get(sid).cloned())
    }

    /// Forgets a session (it ended).
    pub fn remove(&self, sid: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(sid);
        }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A new public session id.
pub fn new_session_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 20)
}

/// Sent to whoever started a session when it ends, with why.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionClosed {
    pub session: String,
    pub reason: &'static str,
}

/// Answer a client's SDP offer; replies with the answer SDP. Sent once, right after start.
#[derive(Message)]
#[rtype(result = "Result<String, EngineError>")]
pub struct Negotiate {
    pub offer: String,
    /// For a publish: the video bitrate cap to announce in the answer.
    pub max_video_kbps: Option<u32>,
}

/// Replace the groups a publish fans out to (permissions already checked by the caller, and
/// checked again by each room).
#[derive(Message)]
#[rtype(result = "Result<Vec<GroupId>, EngineError>")]
pub struct SetGroups {
    pub groups: Vec<GroupId>,
}

/// A renegotiation offer from the client of a live publish (tracks added or removed); replies
/// with the answer SDP.
#[derive(Message)]
#[rtype(result = "Result<String, EngineError>")]
pub struct Renegotiate {
    pub offer: String,
}

/// The client's answer to a server offer of a playback session (see [`SessionOffer`]).
#[derive(Message)]
#[rtype(result = "Result<(), EngineError>")]
pub struct AcceptAnswer {
    pub answer: String,
}

/// Sent to whoever started a playback session that follows its publisher: the session's tracks
/// changed and the client must answer this offer (`answer` on the socket).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionOffer {
    pub session: String,
    pub sdp: String,
}

/// Sent to the realtime connection that started a publish: the simulcast layers (RIDs) of its
/// video track `track` (the client's track id) that anyone receives now. Its client may pause
/// the others (dynacast) until they are asked for again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LayersWanted {
    pub session: String,
    pub track: String,
    pub rids: Vec<String>,
}

/// Pin a playback's video to one simulcast layer (`rid`), or back to automatic (`None`): for
/// `track` only, or for every video track of the session. A pin is a preference within the
/// viewer's caps: a layer above its `max_resolution` / bitrate cap is not forwarded, and a
/// track without that layer stays automatic.
#[derive(Message)]
#[rtype(result = "Result<(), EngineError>")]
pub struct SetLayer {
    pub track: Option<String>,
    pub rid: Option<String>,
}

/// The largest view size a client may tell (device pixels, each side).
pub const MAX_VIEW: u32 = 16_384;

/// A view size from a client's `width` and `height`: both or neither (`None`: no longer told),
/// each at most [`MAX_VIEW`].
pub fn view_size(width: Option<u32>, height: Option<u32>) -> Result<Option<(u32, u32)>, EngineError> {
    match (width, height) {
        (None, None) => Ok(None),
        (Some(w), Some(h)) if w <= MAX_VIEW && h <= MAX_VIEW => Ok(Some((w, h))),
        _ => Err(EngineError::Invalid(format!(
            "width and height go together, each 0 to {MAX_VIEW} (or both null)"
        ))),
    }
}

/// Adaptive stream: the size (device pixels) a playback shows its video at, for `track` only or
/// for every video track of the session (`size` `None`: no longer told; (0, 0): hidden). Each
/// leg then gets the smallest layer that covers it, within the caps; a pin goes first; hidden,
/// it is paused.
#[derive(Message)]
#[rtype(result = "Result<(), EngineError>")]
pub struct SetView {
    pub track: Option<String>,
    pub size: Option<(u32, u32)>,
}

/// Whether `rid` is a valid RTP stream id (RFC 8851: alphanumeric, `-`, `_`; at most 16 here).
pub fn valid_rid(rid: &str) -> bool {
    !rid.is_empty() && rid.len() <= 16 && rid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Add ICE candidates from a trickle PATCH (`a=candidate:` lines).
#[derive(Message)]
#[rtype(result = "Result<usize, EngineError>")]
pub struct AddCandidates {
    pub candidates: Vec<String>,
}

/// Everything starting a session needs; shared by the WHIP/WHEP routes and the realtime socket.
#[derive(Clone)]
pub struct SessionDeps {
    pub store: Arc<dyn Store>,
    pub media: Media,
    pub registry: Addr<Registry>,
    pub sessions: Sessions,
    pub metrics: EngineMetrics,
}

/// Publishes `who`'s offer into every group of `groups` (needs `can_publish` in each).
/// Returns the session id and the SDP answer.
pub async fn start_publish(
    deps: &SessionDeps,
    who: Principal,
    groups: Vec<GroupId>,
    offer: String,
    notify: Option<actix::Recipient<SessionClosed>>,
    layers: Option<actix::Recipient<LayersWanted>>,
) -> Result<(String, String), EngineError> {
    check_offer(&offer)?;
    let mut max_video_kbps: Option<u32> = None;
    for g in &groups {
        let access = Access::load(deps.store.as_ref(), &who, g)?;
        access.require(Perm::Publish)?;
        let member_cap = access.member.as_ref().and_then(|m| m.media.max_bitrate_kbps);
        for cap in [Some(access.group.settings.media.max_bitrate_kbps), member_cap]
            .into_iter()
            .flatten()
        {
            max_video_kbps = Some(max_video_kbps.map_or(cap, |c| c.min(cap)));
        }
    }
    let sid = new_session_id();
    let publisher = Publisher::launch(sid.clone(), who, groups, deps.clone(), notify, layers);
    let answer = publisher
        .send(Negotiate { offer, max_video_kbps })
        .await
        .map_err(|_| EngineError::ActorGone("publisher"))??;
    Ok((sid, answer))
}

/// Plays `participant` (or the group's first publisher) in `group` for `who` (needs
/// `can_subscribe`). Returns the session id and the SDP answer.
pub async fn start_view(
    deps: &SessionDeps,
    who: Principal,
    group: GroupId,
    participant: Option<UserId>,
    offer: String,
    notify: Option<actix::Recipient<SessionClosed>>,
) -> Result<(String, String), EngineError> {
    start_view_following(deps, who, group, participant, offer, notify, None).await
}

/// [`start_view`] for a session that follows its publisher: when the publisher's tracks change,
/// the session adds or removes tracks and sends a new offer to `offers` (the realtime socket).
pub async fn start_view_following(
    deps: &SessionDeps,
    who: Principal,
    group: GroupId,
    participant: Option<UserId>,
    offer: String,
    notify: Option<actix::Recipient<SessionClosed>>,
    offers: Option<actix::Recipient<SessionOffer>>,
) -> Result<(String, String), EngineError> {
    check_offer(&offer)?;
    Access::load(deps.store.as_ref(), &who, &group)?.require(Perm::Subscribe)?;
    let sid = new_session_id();
    let viewer = Viewer::launch(sid.clone(), who, group, participant, deps.clone(), notify, offers);
    let answer = viewer
        .send(Negotiate {
            offer,
            max_video_kbps: None,
        })
        .await
        .map_err(|_| EngineError::ActorGone("viewer"))??;
    Ok((sid, answer))
}

impl Sessions {
    /// Ends session `sid` if it exists; returns whether it did.
    pub fn stop(&self, sid: &str, reason: &'static str) -> bool {
        let Some(entry) = self.get(sid) else { return false };
        match entry.kind {
            SessionKind::Publish(a) => a.do_send(StopSession { reason }),
            SessionKind::View(a) => a.do_send(StopSession { reason }),
        }
        self.remove(sid);
        true
    }
}

/// Ends a session (through `stop`) once its connection drops, fails or closes.
async fn stop_when_dropped(
    mut state: tokio::sync::watch::Receiver<crate::media::PeerState>,
    stop: actix::Recipient<StopSession>,
) {
    use crate::media::PeerState;
    let ended = state
        .wait_for(|s| matches!(s, PeerState::Disconnected | PeerState::Failed | PeerState::Closed))
        .await
        .is_ok();
    if ended {
        stop.do_send(StopSession {
            reason: "the connection dropped",
        });
    }
}
