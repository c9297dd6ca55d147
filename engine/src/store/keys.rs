//! The sled key codec. Keys sort the way they are read: `group \0 user` for members,
//! `user \0 group` for the reverse index, `group \0 seq(u64 big-endian)` for messages.
//! Ids never contain `\0`, so the separator is unambiguous.

use crate::ids::{GroupId, UserId};

const SEP: u8 = 0;

/// `prefix \0`: the start of every key under `prefix`.
pub fn prefix(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.extend_from_slice(id.as_bytes());
    k.push(SEP);
    k
}

/// `a \0 b`.
pub fn pair(a: &str, b: &str) -> Vec<u8> {
    let mut k = prefix(a);
    k.extend_from_slice(b.as_bytes());
    k
}

/// Member key.
pub fn member(gid: &GroupId, uid: &UserId) -> Vec<u8> {
    pair(gid.as_str(), uid.as_str())
}

/// Reverse-index key.
pub fn user_group(uid: &UserId, gid: &GroupId) -> Vec<u8> {
    pair(uid.as_str(), gid.as_str())
}

/// Message key.
pub fn message(gid: &GroupId, seq: u64) -> Vec<u8> {
    let mut k = prefix(gid.as_str());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The part of a `prefix \0 rest` key after the separator.
pub fn suffix(key: &[u8], prefix_len: usize) -> &[u8] {
    key.get(prefix_len..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_by_sequence() {
        let g = GroupId::new("g").unwrap();
        let mut keys: Vec<_> = [300u64, 2, 70_000, 1].iter().map(|s| message(&g, *s)).collect();
        keys.sort();
        let seqs: Vec<u64> = keys
            .iter()
            .map(|k| u64::from_be_bytes(suffix(k, 2).try_into().unwrap()))
            .collect();
        assert_eq!(seqs, [1, 2, 300, 70_000]);
    }

    #[test]
    fn prefixes_do_not_overlap() {
        // Group "a" must not see the members of group "a.b".
        let a = prefix("a");
        assert!(!pair("a.b", "x").starts_with(&a));
        assert!(pair("a", "x").starts_with(&a));
    }
}
