//! What a caller may do in a group: loads the group and the caller's membership and resolves
//! effective permissions. Every action goes through [`Access::load`] and [`Access::require`].

use crate::error::EngineError;
use crate::ids::GroupId;
use crate::model::{Group, Member};
use crate::perms::{Perm, Perms, Principal};
use crate::store::Store;

/// The caller's standing in one group, read fresh from the store.
#[derive(Clone, Debug)]
pub struct Access {
    pub group: Group,
    /// The caller's member record, if they are a member.
    pub member: Option<Member>,
    /// Effective permissions; `None` means no access at all (closed group, non-member).
    pub perms: Option<Perms>,
}

impl Access {
    /// Loads `gid` and the caller's place in it. `GroupNotFound` if there is no such group.
    pub fn load(store: &dyn Store, who: &Principal, gid: &GroupId) -> Result<Access, EngineError> {
        let group = store
            .group(gid)?
            .ok_or_else(|| EngineError::GroupNotFound(gid.to_string()))?;
        let member = store.member(gid, &who.user)?;
        let perms = group.effective(who, member.as_ref());
        Ok(Access { group, member, perms })
    }

    /// Fails with `Forbidden` unless the caller has some access to the group.
    pub fn require_any(&self) -> Result<Perms, EngineError> {
        self.perms
            .ok_or_else(|| EngineError::Forbidden(format!("group {} is closed to non-members", self.group.id)))
    }

    /// Fails with `Forbidden` unless the caller holds `perm` in the group.
    pub fn require(&self, perm: Perm) -> Result<Perms, EngineError> {
        let perms = self.require_any()?;
        if perms.has(perm) {
            Ok(perms)
        } else {
            Err(EngineError::Forbidden(format!(
                "{} is required in group {}",
                perm.field(),
                self.group.id
            )))
        }
    }

    /// Owners, admins (role) and server admins: may change roles and delete the group.
    pub fn is_privileged(&self, who: &Principal) -> bool {
        who.admin || self.member.as_ref().is_some_and(|m| m.role.is_privileged())
    }
}
