//! The stored records: groups with their settings, members, and chat messages.
//! These are also the JSON shapes of the public API.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{GroupId, UserId};
use crate::perms::{Perms, PermsPatch, Principal, Role, Standing};

/// A video resolution cap (the spec's `max_resolution`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// 640x480.
    Vga,
    /// 1280x720.
    Hd,
    /// 1920x1080.
    Fhd,
    /// 3840x2160.
    #[serde(rename = "4k")]
    Uhd4k,
}

impl Resolution {
    /// Width and height in pixels.
    pub fn dimensions(self) -> (u32, u32) {
        match self {
            Resolution::Vga => (640, 480),
            Resolution::Hd => (1280, 720),
            Resolution::Fhd => (1920, 1080),
            Resolution::Uhd4k => (3840, 2160),
        }
    }
}

/// Largest accepted `max_bitrate_kbps` (100 Mbps).
pub const MAX_BITRATE_KBPS: u32 = 100_000;

/// Group-level media settings (the spec's `settings.media`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSettings {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
    pub max_resolution: Resolution,
    pub max_bitrate_kbps: u32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            audio: true,
            video: true,
            screen: true,
            max_resolution: Resolution::Fhd,
            max_bitrate_kbps: 4_000,
        }
    }
}

/// Per-member media caps: each present field tightens the group's setting for this member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaCaps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate_kbps: Option<u32>,
}

impl MediaCaps {
    /// Merges `other` into `self`: present fields win.
    pub fn merge(&mut self, other: &MediaCaps) {
        if other.max_resolution.is_some() {
            self.max_resolution = other.max_resolution;
        }
        if other.max_bitrate_kbps.is_some() {
            self.max_bitrate_kbps = other.max_bitrate_kbps;
        }
    }
}

/// A group's settings (the spec's `settings`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Applies to every member.
    pub members: Perms,
    /// Applies to authenticated non-members; `None` closes the group to them.
    pub guests: Option<Perms>,
    pub media: MediaSettings,
    /// Record calls automatically.
    pub record: bool,
}

impl Settings {
    /// Checks values that the types alone do not bound.
    pub fn validate(&self) -> Result<(), crate::EngineError> {
        validate_bitrate(self.media.max_bitrate_kbps)
    }
}

/// Checks a `max_bitrate_kbps` value.
pub fn validate_bitrate(kbps: u32) -> Result<(), crate::EngineError> {
    if (1..=MAX_BITRATE_KBPS).contains(&kbps) {
        Ok(())
    } else {
        Err(crate::EngineError::Invalid(format!(
            "max_bitrate_kbps must be between 1 and {MAX_BITRATE_KBPS}, got {kbps}"
        )))
    }
}

/// Longest accepted group name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Checks a display name (group or user).
pub fn validate_name(name: &str) -> Result<(), crate::EngineError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        Err(crate::EngineError::Invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters without control characters"
        )))
    } else {
        Ok(())
    }
}

/// A group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub settings: Settings,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The user who created it, if it was created with a user token.
    #[serde(default)]
    pub created_by: Option<UserId>,
}

/// A group member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub role: Role,
    /// Overrides of the group-level member permissions.
    #[serde(default)]
    pub permissions: PermsPatch,
    /// Per-member media caps.
    #[serde(default)]
    pub media: MediaCaps,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

/// A chat message as stored and returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Decimal string of a sequence number that grows with time within the server.
    pub id: String,
    pub from: UserId,
    pub text: String,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
}

/// Longest accepted message text, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4_000;

/// Checks message text.
pub fn validate_text(text: &str) -> Result<(), crate::EngineError> {
    let n = text.chars().count();
    if text.trim().is_empty() || n > MAX_MESSAGE_CHARS {
        Err(crate::EngineError::Invalid(format!(
            "text must be 1 to {MAX_MESSAGE_CHARS} characters and not blank"
        )))
    } else {
        Ok(())
    }
}

impl Group {
    /// The caller's effective permissions here (`None`: no access), given their membership.
    pub fn effective(&self, who: &Principal, member: Option<&Member>) -> Option<Perms> {
        crate::perms::resolve(
            standing(who, member),
            &self.settings.members,
            self.settings.guests.as_ref(),
        )
    }
}

/// How `who` stands in a group, given their member record there (if any).
pub fn standing<'a>(who: &Principal, member: Option<&'a Member>) -> Standing<'a> {
    match (who.admin, member) {
        (true, _) => Standing::ServerAdmin,
        (false, Some(m)) => Standing::Member {
            role: m.role,
            overrides: &m.permissions,
        },
        (false, None) => Standing::Guest,
    }
}
