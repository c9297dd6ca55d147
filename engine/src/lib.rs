//! Fanfare's engine: validated ids, the permission model, storage behind a trait, and the actors
//! that own live state (a [`registry::Registry`] supervising one [`room::Room`] per active
//! group, one [`participant::Participant`] per realtime connection).

pub mod access;
pub mod chat;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod participant;
pub mod perms;
pub mod protocol;
pub mod registry;
pub mod room;
pub mod store;

pub use error::{EngineError, ErrorKind};
