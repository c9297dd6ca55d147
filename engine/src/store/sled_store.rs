//! [`Store`] on sled: one tree per record kind, JSON values, transactions where a change spans
//! trees, and a flush before every mutating call returns (so a SIGKILL loses nothing
//! acknowledged).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use time::OffsetDateTime;

use super::{keys, Store, StoreResult};
use crate::error::EngineError;
use crate::ids::{GroupId, UserId};
use crate::model::{Group, Member, Message};

/// The embedded store.
pub struct SledStore {
    db: sled::Db,
    groups: sled::Tree,
    members: sled::Tree,
    user_groups: sled::Tree,
    messages: sled::Tree,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            // Every mutating call flushes before it returns, so sled's periodic flusher (a
            // thread waking five times a second at the default) has nothing to add.
            .flush_every_ms(None)
            .open()
            .map_err(|e| EngineError::Storage(format!("cannot open database in {}: {e}", dir.display())))?;
        Ok(SledStore {
            groups: db.open_tree("groups")?,
            members: db.open_tree("members")?,
            user_groups: db.open_tree("user_groups")?,
            messages: db.open_tree("messages")?,
            db,
        })
    }

    fn durable(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }

    /// The tree of a document table (`doc:` names keep them apart from the fixed trees).
    fn doc_tree(&self, table: &str) -> StoreResult<sled::Tree> {
        Ok(self.db.open_tree(format!("doc:{table}"))?)
    }

    /// Removes every key under `prefix` in `tree`.
    fn clear_prefix(tree: &sled::Tree, prefix: &[u8]) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for kv in tree.scan_prefix(prefix).keys() {
            batch.remove(kv?);
        }
        tree.apply_batch(batch)?;
        Ok(())
    }
}

fn encode<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EngineError::Storage(format!("encoding failed: {e}")))
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| EngineError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: e.to_string(),
    })
}

fn tx_error(e: TransactionError<EngineError>) -> EngineError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl Store for SledStore {
    fn create_group(&self, group: &Group, first_member: Option<&Member>) -> StoreResult<()> {
        let gid = &group.id;
        if self.groups.contains_key(gid.as_str())? {
            return Err(EngineError::GroupExists(gid.to_string()));
        }
        // Leftovers of an earlier group with this id (deleted, then a crash mid-cleanup).
        Self::clear_prefix(&self.members, &keys::prefix(gid.as_str()))?;
        Self::clear_prefix(&self.messages, &keys::prefix(gid.as_str()))?;
        let value = encode(group)?;
        let member = first_member.map(|m| encode(m).map(|v| (m, v))).transpose()?;
        (&self.groups, &self.members, &self.user_groups)
            .transaction(|(groups, members, user_groups)| {
                if groups.get(gid.as_str())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(EngineError::GroupExists(
                        gid.to_string(),
                    )));
                }
                groups.insert(gid.as_str(), value.clone())?;
                if let Some((m, v)) = &member {
                    members.insert(keys::member(gid, &m.user), v.clone())?;
                    user_groups.insert(keys::user_group(&m.user, gid), &[])?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable()
    }

    fn group(&self, gid: &GroupId) -> StoreResult<Option<Group>> {
        self.groups
            .get(gid.as_str())?
            .map(|v| decode(gid.as_str().as_bytes(), &v))
            .transpose()
    }

    fn update_group(&self, group: &Group) -> StoreResult<()> {
        let value = encode(group)?;
        let gid = group.id.as_str();
        self.groups
            .transaction(|groups| {
                if groups.get(gid)?.is_none() {
                    return Err(ConflictableTransactionError::Abort(EngineError::GroupNotFound(
                        gid.to_string(),
                    )));
                }
                groups.insert(gid, value.clone())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable()
    }

    fn delete_group(&self, gid: &GroupId) -> StoreResult<bool> {
        // The group row goes first: once it is gone the rest is unreachable, and a crash before
        // the cleanup below finishes is mended by `create_group` if the id is reused.
        if self.groups.remove(gid.as_str())?.is_none() {
            return Ok(false);
        }
        self.durable()?;
        let prefix = keys::prefix(gid.as_str());
        for key in self.members.scan_prefix(&prefix).keys() {
            let key = key?;
            let uid = String::from_utf8_lossy(keys::suffix(&key, prefix.len())).into_owned();
            self.user_groups.remove(keys::pair(&uid, gid.as_str()))?;
        }
        Self::clear_prefix(&self.members, &prefix)?;
        Self::clear_prefix(&self.messages, &prefix)?;
        self.durable()?;
        Ok(true)
    }

    fn groups(&self) -> StoreResult<Vec<Group>> {
        self.groups
            .iter()
            .map(|kv| kv.map_err(EngineError::from).and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    fn groups_of(&self, uid: &UserId) -> StoreResult<Vec<Group>> {
        let prefix = keys::prefix(uid.as_str());
        let mut out = Vec::new();
        for key in self.user_groups.scan_prefix(&prefix).keys() {
            let key = key?;
            let gid = String::from_utf8_lossy(keys::suffix(&key, prefix.len())).into_owned();
            if let Some(v) = self.groups.get(&gid)? {
                out.push(decode(gid.as_bytes(), &v)?);
            }
        }
        Ok(out)
    }

    fn put_member(&self, gid: &GroupId, member: &Member) -> StoreResult<()> {
        let value = encode(member)?;
        (&self.groups, &self.members, &self.user_groups)
            .transaction(|(groups, members, user_groups)| {
                if groups.get(gid.as_str())?.is_none() {
                    return Err(ConflictableTransactionError::Abort(EngineError::GroupNotFound(
                        gid.to_string(),
                    )));
                }
                members.insert(keys::member(gid, &member.user), value.clone())?;
                user_groups.insert(keys::user_group(&member.user, gid), &[])?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable()
    }

    fn member(&self, gid: &GroupId, uid: &UserId) -> StoreResult<Option<Member>> {
        let key = keys::member(gid, uid);
        self.members.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    fn delete_member(&self, gid: &GroupId, uid: &UserId) -> StoreResult<bool> {
        let existed = (&self.members, &self.user_groups)
            .transaction(|(members, user_groups)| {
                let existed = members.remove(keys::member(gid, uid))?.is_some();
                user_groups.remove(keys::user_group(uid, gid))?;
                Ok(existed)
            })
            .map_err(tx_error)?;
        self.durable()?;
        Ok(existed)
    }

    fn members(&self, gid: &GroupId) -> StoreResult<Vec<Member>> {
        self.members
            .scan_prefix(keys::prefix(gid.as_str()))
            .map(|kv| kv.map_err(EngineError::from).and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    fn append_message(&self, gid: &GroupId, from: &UserId, text: &str, ts: OffsetDateTime) -> StoreResult<Message> {
        let seq = self.db.generate_id()?;
        let msg = Message {
            id: seq.to_string(),
            from: from.clone(),
            text: text.to_owned(),
            ts,
        };
        self.messages.insert(keys::message(gid, seq), encode(&msg)?)?;
        self.durable()?;
        Ok(msg)
    }

    fn messages(&self, gid: &GroupId, after: Option<u64>, limit: usize) -> StoreResult<Vec<Message>> {
        let start = keys::message(gid, after.map_or(0, |a| a.saturating_add(1)));
        let end = keys::message(gid, u64::MAX);
        self.messages
            .range(start..=end)
            .take(limit)
            .map(|kv| kv.map_err(EngineError::from).and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    fn put_doc(&self, table: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.doc_tree(table)?.insert(key.as_bytes(), value)?;
        self.durable()
    }

    fn doc(&self, table: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.doc_tree(table)?.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    fn docs(&self, table: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for kv in self.doc_tree(table)?.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    fn delete_docs(&self, table: &str, prefix: &str) -> StoreResult<usize> {
        let tree = self.doc_tree(table)?;
        let n = tree.scan_prefix(prefix.as_bytes()).count();
        Self::clear_prefix(&tree, prefix.as_bytes())?;
        self.durable()?;
        Ok(n)
    }

    fn check(&self) -> StoreResult<()> {
        self.db.insert("readyz", &[1u8])?;
        Ok(())
    }

    fn flush(&self) -> StoreResult<()> {
        self.durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Settings;
    use crate::perms::{PermsPatch, Role};

    fn group(id: &str) -> Group {
        Group {
            id: GroupId::new(id).unwrap(),
            name: id.into(),
            settings: Settings::default(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: None,
        }
    }

    fn member(uid: &str) -> Member {
        Member {
            user: UserId::new(uid).unwrap(),
            role: Role::Member,
            permissions: PermsPatch::default(),
            media: Default::default(),
            added_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn groups_members_messages_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let g = group("g1");
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.create_group(&g, Some(&member("alice"))).unwrap();
            assert!(matches!(s.create_group(&g, None), Err(EngineError::GroupExists(_))));
            s.put_member(&g.id, &member("bob")).unwrap();
            s.create_group(&group("g1.x"), Some(&member("carol"))).unwrap();
            for i in 0..10 {
                s.append_message(
                    &g.id,
                    &UserId::new("alice").unwrap(),
                    &format!("m{i}"),
                    OffsetDateTime::UNIX_EPOCH,
                )
                .unwrap();
            }
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.group(&g.id).unwrap().unwrap(), g);
        let names: Vec<_> = s
            .members(&g.id)
            .unwrap()
            .into_iter()
            .map(|m| m.user.to_string())
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        let all = s.messages(&g.id, None, 100).unwrap();
        assert_eq!(all.len(), 10);
        let after: u64 = all[4].id.parse().unwrap();
        let rest = s.messages(&g.id, Some(after), 3).unwrap();
        assert_eq!(
            rest.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["m5", "m6", "m7"]
        );
        assert_eq!(s.groups_of(&UserId::new("bob").unwrap()).unwrap().len(), 1);

        assert!(s.delete_group(&g.id).unwrap());
        assert!(s.members(&g.id).unwrap().is_empty());
        assert!(s.messages(&g.id, None, 10).unwrap().is_empty());
        assert!(s.groups_of(&UserId::new("bob").unwrap()).unwrap().is_empty());
        assert_eq!(s.members(&GroupId::new("g1.x").unwrap()).unwrap().len(), 1);
    }

    #[test]
    fn member_of_missing_group_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let err = s.put_member(&GroupId::new("nope").unwrap(), &member("a")).unwrap_err();
        assert!(matches!(err, EngineError::GroupNotFound(_)));
    }
}
