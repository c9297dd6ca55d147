//! Storage behind a small trait. Nothing above this module may assume sled: a clustered
//! backend can implement [`Store`] later. Every mutating call is durable when it returns.

mod keys;
mod sled_store;

pub use sled_store::SledStore;

use time::OffsetDateTime;

use crate::error::EngineError;
use crate::ids::{GroupId, UserId};
use crate::model::{Group, Member, Message};

/// Result alias for storage calls.
pub type StoreResult<T> = Result<T, EngineError>;

/// Durable storage for groups, members and messages.
pub trait Store: Send + Sync + 'static {
    /// Creates a group, and its first member if given, atomically. `GroupExists` if taken.
    fn create_group(&self, group: &Group, first_member: Option<&Member>) -> StoreResult<()>;
    /// One group.
    fn group(&self, gid: &GroupId) -> StoreResult<Option<Group>>;
    /// Replaces an existing group's record. `GroupNotFound` if it is gone.
    fn update_group(&self, group: &Group) -> StoreResult<()>;
    /// Deletes a group with its members and messages; `false` if there was none.
    fn delete_group(&self, gid: &GroupId) -> StoreResult<bool>;
    /// Every group, by id.
    fn groups(&self) -> StoreResult<Vec<Group>>;
    /// The groups `uid` is a member of, by id.
    fn groups_of(&self, uid: &UserId) -> StoreResult<Vec<Group>>;

    /// Inserts or replaces a member of an existing group.
    fn put_member(&self, gid: &GroupId, member: &Member) -> StoreResult<()>;
    /// One member.
    fn member(&self, gid: &GroupId, uid: &UserId) -> StoreResult<Option<Member>>;
    /// Removes a member; `false` if they were not one.
    fn delete_member(&self, gid: &GroupId, uid: &UserId) -> StoreResult<bool>;
    /// Every member of a group, by user id.
    fn members(&self, gid: &GroupId) -> StoreResult<Vec<Member>>;

    /// Appends a message to a group's history and returns it with its new id.
    fn append_message(&self, gid: &GroupId, from: &UserId, text: &str, ts: OffsetDateTime) -> StoreResult<Message>;
    /// Up to `limit` messages with ids greater than `after`, oldest first.
    fn messages(&self, gid: &GroupId, after: Option<u64>, limit: usize) -> StoreResult<Vec<Message>>;

    /// Writes one document (opaque bytes, usually JSON) under `key` in `table`: the storage
    /// of recordings, segment indexes and ingests. Durable on return.
    fn put_doc(&self, table: &str, key: &str, value: &[u8]) -> StoreResult<()>;
    /// One document.
    fn doc(&self, table: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Every document of `table` whose key starts with `prefix`, in key order.
    fn docs(&self, table: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;
    /// Deletes every document of `table` whose key starts with `prefix`; returns how many.
    fn delete_docs(&self, table: &str, prefix: &str) -> StoreResult<usize>;

    /// Checks that the store can be read and written (for `/readyz`).
    fn check(&self) -> StoreResult<()>;
    /// Makes everything written so far durable (called on shutdown).
    fn flush(&self) -> StoreResult<()>;
}
