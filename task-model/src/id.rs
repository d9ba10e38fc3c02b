//! Task ids: UUIDs in canonical hyphenated form, case-insensitive.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A task's id. Displayed lower-case and hyphenated.
///
/// [`TaskId::parse`] accepts only the canonical 36-character form (any case),
/// not the braced, URN or hyphen-less forms `uuid` would also take, so one task
/// has exactly one spelling in URLs, keys and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(Uuid);

/// Why a string is not a [`TaskId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task ids are UUIDs in canonical hyphenated form (8-4-4-4-12 hex digits)")]
pub struct TaskIdError;

impl TaskId {
    /// A fresh random (v4) id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses the canonical hyphenated form, in any case.
    ///
    /// # Errors
    /// [`TaskIdError`] for anything else.
    pub fn parse(s: &str) -> Result<Self, TaskIdError> {
        let bytes = s.as_bytes();
        let canonical = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !canonical {
            return Err(TaskIdError);
        }
        Uuid::parse_str(s).map(Self).map_err(|_| TaskIdError)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = TaskIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TaskId {
    type Error = TaskIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> Self {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids_parse_in_any_case_and_display_lower_case() {
        let id = TaskId::parse("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(id.to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }

    #[test]
    fn non_canonical_forms_are_rejected() {
        for bad in [
            "",
            "42",
            "6f9619ff8b86d011b42d00c04fc964ff",
            "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
            "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "6f9619ff-8b86-d011-b42d-00c04fc964fg",
            "6f9619ff-8b86-d011-b42d_00c04fc964ff",
            "6f9619ff-8b86-d011-b42d-00c04fc964ffé",
        ] {
            assert_eq!(
                TaskId::parse(bad),
                Err(TaskIdError),
                "{bad:?} must be rejected"
            );
        }
    }
}
