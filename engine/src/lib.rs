//! Fanfare's engine: validated ids, the permission model, storage behind a trait, and the actors
//! that own live state (a [`registry::Registry`] supervising one [`room::Room`] per active
//! group, one [`participant::Participant`] per realtime connection).

pub mod access;
pub mod chat;
pub mod error;
pub mod ids;
pub mod media;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod participant;
pub mod perms;
pub mod protocol;
pub mod registry;
pub mod room;
pub mod session;
pub mod store;
pub mod track;

pub use error::{EngineError, ErrorKind};

/// A process-wide unique id (connections, sessions, subscriber legs).
pub fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
