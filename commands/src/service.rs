//! The write side as one service: a bus per aggregate plus the settings rules need.

use std::sync::Arc;

use cqrs_es::Query;
use parking_domain::booking::{Booking, BookingPolicy};
use parking_domain::lot::ParkingLot;
use parking_domain::slot::Slot;
use parking_domain::user::{EmailClaim, User};
use parking_infra::event_store::Snapshots;
use parking_infra::{Clock, PgEventStore};
use sqlx::PgPool;

use crate::bus::Bus;

#[derive(Debug, Clone)]
pub struct Settings {
    pub bcrypt_cost: u32,
    pub booking_policy: BookingPolicy,
}

/// Read-model updaters run after each commit, per aggregate type.
#[derive(Default)]
pub struct Queries {
    pub users: Vec<Box<dyn Query<User>>>,
    pub claims: Vec<Box<dyn Query<EmailClaim>>>,
    pub lots: Vec<Box<dyn Query<ParkingLot>>>,
    pub slots: Vec<Box<dyn Query<Slot>>>,
    pub bookings: Vec<Box<dyn Query<Booking>>>,
}

/// Snapshot schema of the slot calendar; bump it when `Slot`'s serialized state changes.
const SLOT_SNAPSHOT_SCHEMA: i32 = 1;
/// Snapshot schema of the lot; bump it when `ParkingLot`'s serialized state changes.
const LOT_SNAPSHOT_SCHEMA: i32 = 1;

pub struct Commands {
    pub(crate) users: Bus<User>,
    pub(crate) claims: Bus<EmailClaim>,
    pub(crate) lots: Bus<ParkingLot>,
    pub(crate) slots: Bus<Slot>,
    pub(crate) bookings: Bus<Booking>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: Settings,
    /// A hash to check unknown users' passwords against, made on first use.
    pub(crate) decoy_hash: tokio::sync::OnceCell<String>,
}

impl Commands {
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>, settings: Settings, queries: Queries) -> Self {
        use Snapshots::{Every, Never};
        Self {
            users: Bus::new(PgEventStore::new(pool.clone(), Never), (), queries.users),
            claims: Bus::new(PgEventStore::new(pool.clone(), Never), (), queries.claims),
            // A lot's stream grows with its slots; a slot's with its bookings.
            lots: Bus::new(
                PgEventStore::new(
                    pool.clone(),
                    Every {
                        every: 100,
                        schema: LOT_SNAPSHOT_SCHEMA,
                    },
                ),
                (),
                queries.lots,
            ),
            slots: Bus::new(
                PgEventStore::new(
                    pool.clone(),
                    Every {
                        every: 50,
                        schema: SLOT_SNAPSHOT_SCHEMA,
                    },
                ),
                (),
                queries.slots,
            ),
            bookings: Bus::new(
                PgEventStore::new(pool, Never),
                settings.booking_policy,
                queries.bookings,
            ),
            clock,
            settings,
            decoy_hash: tokio::sync::OnceCell::new(),
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}
