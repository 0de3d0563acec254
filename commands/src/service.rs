//! The write side as one service: a bus per aggregate plus the settings rules need.

use std::sync::Arc;

use parking_domain::booking::{Booking, BookingPolicy};
use parking_domain::lot::ParkingLot;
use parking_domain::payment::Payment;
use parking_domain::review::Review;
use parking_domain::slot::Slot;
use parking_domain::user::{EmailClaim, User};
use parking_infra::append::AppendTarget;
use parking_infra::event_store::Snapshots;
use parking_infra::stripe::StripeClient;
use parking_infra::{Clock, EventLog, PgEventStore};

use crate::booking_desk::BookingDesk;
use crate::bus::Bus;
use crate::{CommandContext, CommandError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub bcrypt_cost: u32,
    pub booking_policy: BookingPolicy,
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
    pub(crate) payments: Bus<Payment>,
    pub(crate) reviews: Bus<Review>,
    /// The payment provider; `None`: payments answer 503 `payments_unavailable`.
    pub(crate) stripe: Option<StripeClient>,
    /// Books concurrent requests in shared batches.
    pub(crate) desk: BookingDesk,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: Settings,
    pub(crate) log: EventLog,
    /// A hash to check unknown users' passwords against, made on first use.
    pub(crate) decoy_hash: tokio::sync::OnceCell<String>,
}

impl Commands {
    /// The write side on `log`. The booking desk appends through the log's pool, or, given
    /// `pipelined_bookings`, on a connection of its own, pipelined (as the server runs).
    pub fn new(
        log: EventLog,
        clock: Arc<dyn Clock>,
        settings: Settings,
        pipelined_bookings: Option<AppendTarget>,
    ) -> Self {
        let pool = log.pool().clone();
        let keys = log.keys();
        use Snapshots::{Every, Never};
        // A lot's stream grows with its slots; a slot's with its bookings.
        let lots = Bus::new(
            PgEventStore::new(
                pool.clone(),
                Every {
                    every: 100,
                    schema: LOT_SNAPSHOT_SCHEMA,
                },
                keys.clone(),
            ),
            (),
        );
        // Every 200: a slot's snapshot is its whole calendar, rewritten each time, and the
        // booking desk holds the slots it books, so snapshots serve only cold loads (ADR 0002).
        let slots = Bus::new(
            PgEventStore::new(
                pool.clone(),
                Every {
                    every: 200,
                    schema: SLOT_SNAPSHOT_SCHEMA,
                },
                keys.clone(),
            ),
            (),
        );
        let bookings = Bus::new(PgEventStore::new(pool.clone(), Never, keys.clone()), ());
        Self {
            users: Bus::new(PgEventStore::new(pool.clone(), Never, keys.clone()), ()),
            claims: Bus::new(PgEventStore::new(pool.clone(), Never, keys.clone()), ()),
            payments: Bus::new(PgEventStore::new(pool.clone(), Never, keys.clone()), ()),
            reviews: Bus::new(PgEventStore::new(pool.clone(), Never, keys.clone()), ()),
            stripe: None,
            desk: BookingDesk::new(
                log.clone(),
                slots.clone(),
                lots.clone(),
                bookings.clone(),
                settings.booking_policy,
                pipelined_bookings,
            ),
            lots,
            slots,
            bookings,
            clock,
            settings,
            log,
            decoy_hash: tokio::sync::OnceCell::new(),
        }
    }

    /// Takes payments through `stripe`.
    pub fn with_payments(mut self, stripe: StripeClient) -> Self {
        self.stripe = Some(stripe);
        self
    }

    /// The log position that covers what the request behind `ctx` recorded or found recorded.
    /// Appends number their own events; work found done by an earlier attempt of the request
    /// is covered by a sequencer run (`EventLog::sequence`, shared with concurrent requests),
    /// which also numbers anything that attempt's crash may have left unnumbered. Should that
    /// fail, the request gets the error (its retry finds the work done).
    pub async fn settle(&self, ctx: &CommandContext) -> Result<i64, CommandError> {
        // This process's projectors learn of the request's appends now, not at the notification.
        self.log.observed(ctx.position());
        if ctx.take_unsettled() {
            match self.log.sequence().await {
                Ok(head) => ctx.record_position(head),
                Err(e) => {
                    ctx.mark_unsettled();
                    return Err(CommandError::Infrastructure(e.into()));
                }
            }
        }
        Ok(ctx.position())
    }

    /// What the booking desk has done since the process started.
    pub fn booking_desk(&self) -> crate::DeskStats {
        self.desk.stats()
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}
