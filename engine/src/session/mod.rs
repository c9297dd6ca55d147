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

use crate::error::EngineError;
use crate::ids::{GroupId, UserId};

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

/// Answer a client's SDP offer; replies with the answer SDP. Sent once, right after start.
#[derive(Message)]
#[rtype(result = "Result<String, EngineError>")]
pub struct Negotiate {
    pub offer: String,
}

/// Replace the groups a publish fans out to (permissions already checked by the caller, and
/// checked again by each room).
#[derive(Message)]
#[rtype(result = "Result<Vec<GroupId>, EngineError>")]
pub struct SetGroups {
    pub groups: Vec<GroupId>,
}

/// Add ICE candidates from a trickle PATCH (`a=candidate:` lines).
#[derive(Message)]
#[rtype(result = "Result<usize, EngineError>")]
pub struct AddCandidates {
    pub candidates: Vec<String>,
}
