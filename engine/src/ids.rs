//! Validated identifiers. Every id that comes from outside is checked once, at the edge,
//! by constructing one of these newtypes; code past the edge never re-validates.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::EngineError;

/// Longest accepted user or group id, in bytes (the spec's `{1,64}`).
pub const MAX_ID_LEN: usize = 64;

/// Checks the spec's id grammar `[A-Za-z0-9_.-]{1,64}`; `.` and `..` alone are refused too,
/// since ids end up in storage keys and object paths.
pub fn validate_id(kind: &'static str, s: &str) -> Result<(), EngineError> {
    let ok_len = !s.is_empty() && s.len() <= MAX_ID_LEN;
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok_len && ok_chars && s != "." && s != ".." {
        Ok(())
    } else {
        Err(EngineError::InvalidId {
            kind,
            id: s.chars().take(80).collect(),
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, EngineError> {
                let s = s.into();
                validate_id($kind, &s)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = EngineError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

id_type!(
    /// A group id.
    GroupId,
    "group id"
);
id_type!(
    /// A user id (the `sub` of a token).
    UserId,
    "user id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_grammar() {
        for ok in ["a", "alice", "A-b_c.d", "x".repeat(64).as_str(), "..a", "a.."] {
            assert!(GroupId::new(ok).is_ok(), "{ok:?} should be valid");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", "é", "x".repeat(65).as_str(), "a\0"] {
            assert!(GroupId::new(bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
