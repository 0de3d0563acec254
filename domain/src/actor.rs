//! Who issues a command.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A role as carried in tokens and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    ParkingOwner,
    Admin,
    Auditor,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::ParkingOwner => "parking_owner",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Role::User,
            Role::ParkingOwner,
            Role::Admin,
            Role::Auditor,
            Role::Service,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Roles a person may give themselves at sign-up; the others are granted by an admin.
    pub fn is_self_assignable(self) -> bool {
        matches!(self, Role::User | Role::ParkingOwner)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signed-in principal a command acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user_id: Uuid,
    pub role: Role,
}

impl Actor {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The actor may read everything: an admin, or an auditor (who may change nothing).
    pub fn reads_everything(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Auditor)
    }

    /// The actor is `owner` or an admin.
    pub fn is_or_admin(&self, owner: Uuid) -> bool {
        self.user_id == owner || self.is_admin()
    }
}
