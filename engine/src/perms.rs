//! Permissions: the seven booleans of the spec, per-member overrides, roles, and the one pure
//! function that resolves what a caller may do in a group.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// A full permission set (the spec's `Perms`). Missing fields in input take the conference
/// defaults: everything but `can_moderate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Perms {
    pub can_send: bool,
    pub can_receive: bool,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_list: bool,
    pub can_playback: bool,
    pub can_moderate: bool,
}

// Not derivable: the conference default grants everything but `can_moderate`.
#[allow(clippy::derivable_impls)]
impl Default for Perms {
    fn default() -> Self {
        Perms {
            can_moderate: false,
            ..Perms::ALL
        }
    }
}

impl Perms {
    /// Every permission.
    pub const ALL: Perms = Perms {
        can_send: true,
        can_receive: true,
        can_publish: true,
        can_subscribe: true,
        can_list: true,
        can_playback: true,
        can_moderate: true,
    };
    /// No permission at all.
    pub const NONE: Perms = Perms {
        can_send: false,
        can_receive: false,
        can_publish: false,
        can_subscribe: false,
        can_list: false,
        can_playback: false,
        can_moderate: false,
    };

    /// Reads one permission by its [`Perm`] name.
    pub fn has(&self, p: Perm) -> bool {
        match p {
            Perm::Send => self.can_send,
            Perm::Receive => self.can_receive,
            Perm::Publish => self.can_publish,
            Perm::Subscribe => self.can_subscribe,
            Perm::List => self.can_list,
            Perm::Playback => self.can_playback,
            Perm::Moderate => self.can_moderate,
        }
    }

    /// Returns this set with the fields present in `patch` replaced.
    pub fn overlay(mut self, patch: &PermsPatch) -> Perms {
        let pairs = [
            (&mut self.can_send, patch.can_send),
            (&mut self.can_receive, patch.can_receive),
            (&mut self.can_publish, patch.can_publish),
            (&mut self.can_subscribe, patch.can_subscribe),
            (&mut self.can_list, patch.can_list),
            (&mut self.can_playback, patch.can_playback),
            (&mut self.can_moderate, patch.can_moderate),
        ];
        for (field, value) in pairs {
            if let Some(v) = value {
                *field = v;
            }
        }
        self
    }
}

/// One named permission, for checks and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    Send,
    Receive,
    Publish,
    Subscribe,
    List,
    Playback,
    Moderate,
}

impl Perm {
    /// Every permission, in the spec's order.
    pub const ALL: [Perm; 7] = [
        Perm::Send,
        Perm::Receive,
        Perm::Publish,
        Perm::Subscribe,
        Perm::List,
        Perm::Playback,
        Perm::Moderate,
    ];

    /// The spec's field name, e.g. `can_send`.
    pub fn field(self) -> &'static str {
        match self {
            Perm::Send => "can_send",
            Perm::Receive => "can_receive",
            Perm::Publish => "can_publish",
            Perm::Subscribe => "can_subscribe",
            Perm::List => "can_list",
            Perm::Playback => "can_playback",
            Perm::Moderate => "can_moderate",
        }
    }
}

/// A member's overrides: each present field replaces the group-level value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_send: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_receive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_list: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_playback: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_moderate: Option<bool>,
}

impl PermsPatch {
    /// Merges `other` into `self`: fields present in `other` win (used by `PATCH` on a member).
    pub fn merge(&mut self, other: &PermsPatch) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            can_send,
            can_receive,
            can_publish,
            can_subscribe,
            can_list,
            can_playback,
            can_moderate
        );
    }
}

/// A member's role in a group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the group; implies every permission.
    Owner,
    /// Implies every permission.
    Admin,
    /// Group-level permissions plus the member's overrides.
    #[default]
    Member,
}

impl Role {
    /// Owners and admins hold every permission whatever the settings say.
    pub fn is_privileged(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// Who is asking: the identity carried by a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub user: UserId,
    /// The token's optional display name.
    pub name: Option<String>,
    /// A backend/admin token (`admin: true`): every permission everywhere.
    pub admin: bool,
}

/// How the caller relates to a group, as input to [`resolve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing<'a> {
    /// Holder of an admin token.
    ServerAdmin,
    /// A member, with role and overrides.
    Member { role: Role, overrides: &'a PermsPatch },
    /// An authenticated non-member.
    Guest,
}

/// The caller's effective permissions in a group, or `None` when the caller has no access at
/// all (a non-member of a closed group). `members` and `guests` are the group's settings.
pub fn resolve(standing: Standing<'_>, members: &Perms, guests: Option<&Perms>) -> Option<Perms> {
    match standing {
        Standing::ServerAdmin => Some(Perms::ALL),
        Standing::Member { role, .. } if role.is_privileged() => Some(Perms::ALL),
        Standing::Member { overrides, .. } => Some(members.overlay(overrides)),
        Standing::Guest => guests.copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(f: impl FnOnce(&mut PermsPatch)) -> PermsPatch {
        let mut p = PermsPatch::default();
        f(&mut p);
        p
    }

    const VIEWER: Perms = Perms {
        can_send: true,
        can_receive: true,
        can_publish: false,
        can_subscribe: true,
        can_list: true,
        can_playback: true,
        can_moderate: false,
    };

    /// One row of the scenario table: who, in which group settings, gets what.
    struct Row {
        name: &'static str,
        standing: Standing<'static>,
        members: Perms,
        guests: Option<Perms>,
        want: Option<Perms>,
    }

    #[test]
    fn scenarios() {
        static NO_OVERRIDES: PermsPatch = PermsPatch {
            can_send: None,
            can_receive: None,
            can_publish: None,
            can_subscribe: None,
            can_list: None,
            can_playback: None,
            can_moderate: None,
        };
        static GRANT_PUBLISH: PermsPatch = PermsPatch {
            can_publish: Some(true),
            ..NO_OVERRIDES
        };
        static REVOKE_PUBLISH: PermsPatch = PermsPatch {
            can_publish: Some(false),
            ..NO_OVERRIDES
        };
        static MUTE_CHAT: PermsPatch = PermsPatch {
            can_send: Some(false),
            can_publish: Some(false),
            ..NO_OVERRIDES
        };
        let member = |o: &'static PermsPatch| Standing::Member {
            role: Role::Member,
            overrides: o,
        };
        let owner = Standing::Member {
            role: Role::Owner,
            overrides: &REVOKE_PUBLISH,
        };
        let student = Perms {
            can_publish: false,
            ..Perms::default()
        };
        let rows = [
            // Conference: every member publishes; closed to guests.
            Row {
                name: "conference member",
                standing: member(&NO_OVERRIDES),
                members: Perms::default(),
                guests: None,
                want: Some(Perms::default()),
            },
            Row {
                name: "conference guest",
                standing: Standing::Guest,
                members: Perms::default(),
                guests: None,
                want: None,
            },
            Row {
                name: "conference owner",
                standing: owner,
                members: Perms::default(),
                guests: None,
                want: Some(Perms::ALL),
            },
            // Open webinar: members watch, one presenter publishes, guests watch.
            Row {
                name: "open webinar viewer",
                standing: member(&NO_OVERRIDES),
                members: VIEWER,
                guests: Some(VIEWER),
                want: Some(VIEWER),
            },
            Row {
                name: "open webinar presenter",
                standing: member(&GRANT_PUBLISH),
                members: VIEWER,
                guests: Some(VIEWER),
                want: Some(Perms {
                    can_publish: true,
                    ..VIEWER
                }),
            },
            Row {
                name: "open webinar guest",
                standing: Standing::Guest,
                members: VIEWER,
                guests: Some(VIEWER),
                want: Some(VIEWER),
            },
            // Members-only webinar: guests get nothing.
            Row {
                name: "members-only webinar guest",
                standing: Standing::Guest,
                members: VIEWER,
                guests: None,
                want: None,
            },
            Row {
                name: "members-only webinar viewer",
                standing: member(&NO_OVERRIDES),
                members: VIEWER,
                guests: None,
                want: Some(VIEWER),
            },
            // Classroom: students may not publish until the teacher grants it, then revokes it.
            Row {
                name: "classroom student",
                standing: member(&NO_OVERRIDES),
                members: student,
                guests: None,
                want: Some(student),
            },
            Row {
                name: "classroom student granted",
                standing: member(&GRANT_PUBLISH),
                members: student,
                guests: None,
                want: Some(Perms {
                    can_publish: true,
                    ..student
                }),
            },
            Row {
                name: "classroom student revoked",
                standing: member(&REVOKE_PUBLISH),
                members: student,
                guests: None,
                want: Some(student),
            },
            Row {
                name: "classroom student silenced",
                standing: member(&MUTE_CHAT),
                members: student,
                guests: None,
                want: Some(Perms {
                    can_send: false,
                    ..student
                }),
            },
            Row {
                name: "teacher (admin role)",
                standing: Standing::Member {
                    role: Role::Admin,
                    overrides: &MUTE_CHAT,
                },
                members: student,
                guests: None,
                want: Some(Perms::ALL),
            },
            Row {
                name: "server admin in closed group",
                standing: Standing::ServerAdmin,
                members: student,
                guests: None,
                want: Some(Perms::ALL),
            },
        ];
        for row in rows {
            assert_eq!(
                resolve(row.standing, &row.members, row.guests.as_ref()),
                row.want,
                "{}",
                row.name
            );
        }
    }

    #[test]
    fn merge_keeps_absent_fields() {
        let mut a = patch(|p| {
            p.can_send = Some(false);
            p.can_publish = Some(true);
        });
        a.merge(&patch(|p| p.can_publish = Some(false)));
        assert_eq!(a.can_send, Some(false));
        assert_eq!(a.can_publish, Some(false));
    }

    #[test]
    fn partial_perms_input_takes_defaults() {
        let p: Perms = serde_json::from_str(r#"{"can_publish": false}"#).unwrap();
        assert_eq!(
            p,
            Perms {
                can_publish: false,
                ..Perms::default()
            }
        );
        assert!(serde_json::from_str::<Perms>(r#"{"can_fly": true}"#).is_err());
    }
}
