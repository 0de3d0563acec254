//! Bookings from concurrent requests, decided and recorded together (ADR 0013).
//!
//! A booking alone is a few round trips (load its slot, its lot, append) and one synchronous
//! commit, and under load those dominate its cost, not the deciding. So requests queue at the
//! desk, and a worker takes everything queued at once: it reads the batch's slots and lots it
//! does not hold and, for retried requests, what their first attempt made, decides each
//! booking in arrival order on its slot as the batch's earlier bookings leave it, and appends
//! every event of the batch in one statement, numbered in the log: one commit for all. It
//! holds the slots and lots it decided on and decides the next batch on them without reading
//! them again; the append checks that none of the streams the batch decided on has moved
//! (migration 0008), so in the steady state a batch is one round trip.
//!
//! The appends are pipelined: while one is on its way, the next batch is decided on the states
//! it leaves, and its append is queued behind it on the desk's own connection
//! (`parking_infra::append::Appender`).
//! It records nothing unless the one it follows was recorded (migration 0009).
//!
//! Answers are given only once the batch is recorded, so nobody is answered from a state that
//! never became history. When a stream moved under the batch (another node, a cancellation),
//! the append records nothing, the desk lets go of the batch's streams and the whole batch is
//! decided again on the streams as they are now, like a single command's retry; so is every
//! batch that followed it.
//!
//! One worker per process, deciding one batch at a time, so two batches of one process never
//! race for a slot. A client going away cannot cut a batch short between its steps.
//!
//! The desk has no booking rule of its own: `batch` hands each request to the domain's
//! `decide_booking` and the slot's and booking's own `handle`, on the batch's `streams`.

mod batch;
mod streams;

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cqrs_es::Aggregate;
use futures::FutureExt;
use parking_domain::booking::{Booking, BookingPolicy, BookingState, VehicleNumber};
use parking_domain::lot::ParkingLot;
use parking_domain::slot::Slot;
use parking_domain::time::TimeRange;
use parking_domain::Actor;
use parking_infra::append::{
    append_checked, AppendError, AppendTarget, Appender, Chain, NewEvent, Seen, Sent,
};
use parking_infra::EventLog;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use self::batch::{Batch, Decision, Recording};
use self::streams::{StreamSet, Streams};
use crate::bus::Bus;
use crate::context::CommandContext;
use crate::error::{BoxError, CommandError};
use crate::retry;

/// A booking as a client asks for it: the driver and the booking's id come from the request's
/// context.
pub struct BookingRequest {
    pub slot_id: Uuid,
    pub range: TimeRange,
    pub vehicle_number: VehicleNumber,
}

/// A booking as its request decided it (or as the request's first attempt made it).
#[derive(Debug, Clone)]
pub struct CreatedBooking {
    pub booking_id: Uuid,
    pub booking: BookingState,
}

/// At most this many bookings per batch (one statement).
const MAX_BATCH: usize = 64;
/// At most this many batches on their way to the log at once: one committing while the next
/// waits behind it in the database.
const PIPELINE: usize = 2;
/// The share of an append's recent round trip after which the next batch is decided while it
/// is on its way (`Worker::next_batch_at`). Measured on this project's machine: 0 gave
/// batches of 4.5 bookings at 16 clients; from about 0.6 of the round trip on, 7, with 10 %
/// less CPU per booking and more bookings per second.
const LINGER: f64 = 0.6;

type Outcome = Result<CreatedBooking, CommandError>;

/// One request waiting at the desk.
struct Job {
    ctx: CommandContext,
    driver: Actor,
    request: BookingRequest,
    reply: oneshot::Sender<Outcome>,
    /// How many times it has been decided (a batch that lost a race is decided again).
    attempt: u32,
}

/// The queue of bookings to decide, and its one worker. (The queue is unbounded: what bounds
/// it is the number of requests the server has in flight, each waiting for its answer.)
pub(crate) struct BookingDesk {
    booker: Arc<Booker>,
    /// The runtime the commands were made on: the worker runs there, not on whichever HTTP
    /// worker thread happens to book first.
    runtime: Option<Handle>,
    /// Started on first use, so that constructing the commands needs no runtime.
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl BookingDesk {
    /// A desk that appends through `log`'s pool, one batch at a time, or, given `pipelined`, on
    /// a connection of its own to it, with the next batch's append sent before the last has
    /// answered.
    pub(crate) fn new(
        log: EventLog,
        slots: Bus<Slot>,
        lots: Bus<ParkingLot>,
        bookings: Bus<Booking>,
        policy: BookingPolicy,
        pipelined: Option<AppendTarget>,
    ) -> Self {
        Self {
            booker: Arc::new(Booker {
                log,
                slots,
                lots,
                bookings,
                policy,
                pipelined,
                stats: Counters::default(),
            }),
            runtime: Handle::try_current().ok(),
            queue: OnceLock::new(),
        }
    }

    /// What the desk has done since the process started.
    pub(crate) fn stats(&self) -> DeskStats {
        let counters = &self.booker.stats;
        DeskStats {
            received: counters.received.load(Ordering::Relaxed),
            batches: counters.batches.load(Ordering::Relaxed),
            bookings: counters.bookings.load(Ordering::Relaxed),
            redecided: counters.redecided.load(Ordering::Relaxed),
        }
    }

    /// Books `request` for `driver` together with whatever else is being booked meanwhile.
    pub(crate) async fn book(
        &self,
        ctx: &CommandContext,
        driver: Actor,
        request: BookingRequest,
    ) -> Outcome {
        let queue = self.queue.get_or_init(|| {
            let (queue, jobs) = mpsc::unbounded_channel();
            let runtime = self.runtime.clone().unwrap_or_else(Handle::current);
            runtime.spawn(self.booker.clone().serve(jobs));
            queue
        });
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ctx: ctx.clone(),
            driver,
            request,
            reply,
            attempt: 1,
        };
        if queue.send(job).is_err() {
            return Err(worker_lost());
        }
        self.booker.stats.received.fetch_add(1, Ordering::Relaxed);
        answer.await.unwrap_or_else(|_| Err(worker_lost()))
    }
}

fn worker_lost() -> CommandError {
    CommandError::Infrastructure("the booking worker stopped before answering".into())
}

/// What the desk's worker shares with the tasks it starts.
struct Booker {
    log: EventLog,
    slots: Bus<Slot>,
    lots: Bus<ParkingLot>,
    bookings: Bus<Booking>,
    policy: BookingPolicy,
    /// Where the desk's own connection goes, if it pipelines its appends.
    pipelined: Option<AppendTarget>,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    batches: AtomicU64,
    bookings: AtomicU64,
    redecided: AtomicU64,
}

/// What the booking desk has done since the process started (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeskStats {
    /// Booking requests handed to the desk (less `bookings`: those waiting to be decided).
    pub received: u64,
    /// Batches decided (a batch decided again counts again).
    pub batches: u64,
    /// Booking requests in them: divided by `batches`, the mean batch size.
    pub bookings: u64,
    /// Times a batch was decided again because a stream moved under it.
    pub redecided: u64,
}

/// A batch decided, whose append is on its way.
struct InFlight {
    jobs: Vec<Job>,
    decisions: Vec<Decision>,
    /// Every stream it decided on, as it found them.
    seen: Vec<Seen>,
    /// Its name, for the batch decided after it to follow (`Chain`).
    name: Uuid,
    outcome: Sent,
    sent_at: Instant,
}

/// Jobs to decide again, not before a pause.
#[derive(Default)]
struct Redo {
    jobs: Vec<Job>,
    not_before: Option<Instant>,
}

impl Redo {
    /// Queues the jobs of a batch that lost a race, after those already waiting and before
    /// anything new, to be decided again after the retry policy's pause for the most tried of
    /// them; answers `409 contention` to those that have had their last attempt.
    fn push(&mut self, jobs: Vec<Job>) {
        let mut pause = Duration::ZERO;
        for mut job in jobs {
            match retry::after_lost_race(job.attempt) {
                Some(after) => {
                    pause = pause.max(after);
                    job.attempt += 1;
                    self.jobs.push(job);
                }
                None => {
                    let contention = CommandError::Contention {
                        aggregate: Slot::TYPE,
                        id: job.request.slot_id.to_string(),
                    };
                    let _ = job.reply.send(Err(contention));
                }
            }
        }
        if !self.jobs.is_empty() {
            let not_before = Instant::now() + pause;
            self.not_before = Some(self.not_before.map_or(not_before, |n| n.max(not_before)));
        }
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// When the waiting jobs may be decided again, if any wait.
    fn due(&self) -> Option<Instant> {
        self.not_before.filter(|_| !self.jobs.is_empty())
    }

    /// The first `at_most` waiting jobs.
    fn take(&mut self, at_most: usize) -> Vec<Job> {
        let rest = self.jobs.split_off(at_most.min(self.jobs.len()));
        let first = std::mem::replace(&mut self.jobs, rest);
        if self.jobs.is_empty() {
            self.not_before = None;
        }
        first
    }
}

/// The desk's worker: it decides one batch at a time, in arrival order, and has up to
/// [`PIPELINE`] of them on their way to the log.
struct Worker {
    booker: Arc<Booker>,
    /// The streams of the batches appended so far (those on their way included), as they
    /// leave them.
    held: Streams,
    /// The desk's own connection; without one, each batch is appended through the pool and
    /// answered before the next is decided.
    appender: Option<Appender>,
    in_flight: VecDeque<InFlight>,
    /// How long appends have recently taken to come back, from sent to settled.
    round_trip: Duration,
    /// Jobs of batches that lost a race, decided again (first) once nothing is in flight.
    redo: Redo,
}

impl Booker {
    /// The worker's loop: takes everything queued, up to a batch, whenever the pipeline has
    /// room; answers each batch as its append comes back, in order.
    async fn serve(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Job>) {
        let appender = self.pipelined.clone().map(Appender::new);
        let mut worker = Worker {
            booker: self,
            held: Streams::default(),
            appender,
            in_flight: VecDeque::new(),
            round_trip: Duration::ZERO,
            redo: Redo::default(),
        };
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        // Until the desk is dropped: then what is on its way is still answered.
        let mut open = true;
        loop {
            let room = open && worker.has_room();
            let at = worker.next_batch_at();
            let due = at <= Instant::now();
            if let Some(first) = worker.in_flight.front_mut() {
                tokio::select! {
                    biased;
                    outcome = &mut first.outcome => {
                        let batch = worker.in_flight.pop_front().expect("the batch just polled");
                        worker.settle(batch, outcome);
                    }
                    () = tokio::time::sleep_until(at), if room && !due => {}
                    taken = queue.recv_many(&mut jobs, MAX_BATCH), if room && due => {
                        if taken > 0 {
                            worker.start(std::mem::take(&mut jobs)).await;
                        } else {
                            open = false;
                        }
                    }
                }
            } else if let Some(not_before) = worker.redo.due() {
                tokio::time::sleep_until(not_before).await;
                // A batch at most; the rest, next (they still go before anything new).
                let mut jobs = worker.redo.take(MAX_BATCH);
                while jobs.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                worker.start(jobs).await;
            } else if queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
                worker.start(std::mem::take(&mut jobs)).await;
            } else {
                return;
            }
        }
    }
}

impl Worker {
    /// Whether another batch may be decided now: not while the jobs of a batch that lost a race
    /// wait to be decided again, and not beyond the pipeline's depth.
    fn has_room(&self) -> bool {
        let depth = if self.appender.is_some() { PIPELINE } else { 1 };
        self.redo.is_empty() && self.in_flight.len() < depth
    }

    /// When the next batch may be decided. With nothing on its way, at once. Otherwise a little
    /// before the last batch sent is due back ([`LINGER`] of the recent round trips): its
    /// follower then waits in the server for less time than it would otherwise wait at the desk,
    /// and takes in the requests that arrive meanwhile. (Deciding at once, measured: batches of
    /// 4.5 instead of 7, and more CPU per booking for no more bookings.)
    fn next_batch_at(&self) -> Instant {
        match self.in_flight.back() {
            Some(last) => last.sent_at + self.round_trip.mul_f64(LINGER),
            None => Instant::now(),
        }
    }

    /// Decides `jobs` together on the held streams (as the batches in flight leave them) and
    /// sends their append.
    async fn start(&mut self, jobs: Vec<Job>) {
        let stats = &self.booker.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .bookings
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        // A bug that panics fails this batch's requests (their answers are dropped), not the
        // desk. The held streams are only read while deciding: they stay as they were.
        let decided = AssertUnwindSafe(self.booker.decide_all(&self.held, &jobs))
            .catch_unwind()
            .await;
        let (streams, decisions) = match decided {
            Ok(Ok(decided)) => decided,
            Ok(Err(CommandError::Infrastructure(e))) => return fail_all(jobs, e),
            Ok(Err(e)) => return fail_all(jobs, Box::new(e)),
            Err(_) => {
                tracing::error!(bookings = jobs.len(), "a booking batch panicked");
                return;
            }
        };
        let events: Vec<&NewEvent> = decisions.iter().flat_map(Decision::events).collect();
        let seen = streams.seen();
        // Even a batch that records nothing checks the streams it was refused on.
        let unwritten = only_read(&seen, &events);
        let chain = Chain {
            after: self.in_flight.back().map(|batch| batch.name),
            batch: Uuid::new_v4(),
        };
        let outcome: Sent = match &mut self.appender {
            Some(appender) => appender.send(&events, &unwritten, chain).await,
            None => {
                let appended = append_checked(self.booker.log.pool(), events, &unwritten).await;
                Box::pin(std::future::ready(appended))
            }
        };
        // The next batch decides on these states; its append follows this one's, and records
        // nothing unless this one was recorded.
        self.held.hold(streams);
        self.in_flight.push_back(InFlight {
            jobs,
            decisions,
            seen,
            name: chain.batch,
            outcome,
            sent_at: Instant::now(),
        });
    }

    /// A batch's append came back: answers its requests, or has them decided again.
    fn settle(&mut self, batch: InFlight, outcome: Result<i64, AppendError>) {
        // A moving average over about the last eight batches.
        let took = batch.sent_at.elapsed();
        self.round_trip = (self.round_trip * 7 + took) / 8;
        let InFlight {
            jobs,
            decisions,
            seen,
            ..
        } = batch;
        match outcome {
            Ok(head) => {
                self.booker.log.observed(head);
                self.booker.answer(jobs, decisions, head);
            }
            Err(AppendError::Conflict) => {
                // A stream moved under the batch, or the batch it followed was not recorded
                // (whose streams it then decided on): decided again on the streams as they are.
                tracing::debug!(
                    bookings = jobs.len(),
                    "a batch's streams moved; deciding again"
                );
                self.held.let_go(&seen);
                self.booker.stats.redecided.fetch_add(1, Ordering::Relaxed);
                self.redo.push(jobs);
            }
            Err(AppendError::Database(e)) => self.failed(jobs, e),
        }
    }

    /// The database failed a batch: whether it was recorded is unknown, so the desk forgets
    /// every stream it holds.
    fn failed(&mut self, jobs: Vec<Job>, error: BoxError) {
        self.held = Streams::default();
        fail_all(jobs, error);
    }
}

impl Booker {
    /// Loads the batch's streams and decides each job in arrival order on them.
    async fn decide_all(
        &self,
        held: &Streams,
        jobs: &[Job],
    ) -> Result<(Streams, Vec<Decision>), CommandError> {
        let mut batch = self.load(held, jobs).await?;
        // The drivers' data keys, so that deciding seals their vehicle numbers without I/O.
        let drivers = jobs.iter().map(|job| job.driver.user_id);
        let sealer = (self.log.keys().sealer(drivers).await)
            .map_err(|e| CommandError::Infrastructure(Box::new(e)))?;
        let decisions = batch::decide_all(&mut batch, jobs, &self.policy, &sealer).await;
        Ok((batch.streams, decisions))
    }

    /// The batch's slots, their lots, and the bookings its retried requests may have made
    /// already. Streams the desk holds are taken as it holds them, unread: the append checks
    /// that they have not moved. The rest are read: the slots (with the retried requests'
    /// bookings), then the lots of those slots that the desk does not hold. In the steady state
    /// no query is sent here at all.
    async fn load(&self, held: &Streams, jobs: &[Job]) -> Result<Batch, CommandError> {
        let slot_ids: Vec<Uuid> = distinct(jobs.iter().map(|job| job.request.slot_id));
        let booking_ids = distinct(
            jobs.iter()
                .filter(|job| job.ctx.may_be_retry())
                .map(|job| job.ctx.new_id("booking")),
        );
        let mut slots = StreamSet::copies(&held.slots, &slot_ids);
        let unheld_slots = slots.missing(slot_ids);
        let (slot_keys, booking_keys) = (keys(&unheld_slots), keys(&booking_ids));
        let (read_slots, made) = tokio::try_join!(
            self.slots.load_many(&slot_keys),
            self.bookings.load_many(&booking_keys),
        )?;
        slots.add(unheld_slots, read_slots);
        let lot_ids = distinct(
            slots
                .states()
                .filter_map(|slot| Some(slot.info.as_ref()?.lot_id)),
        );
        let mut lots = StreamSet::copies(&held.lots, &lot_ids);
        let unheld_lots = lots.missing(lot_ids);
        let read_lots = self.lots.load_many(&keys(&unheld_lots)).await?;
        lots.add(unheld_lots, read_lots);
        Ok(Batch {
            streams: Streams { slots, lots },
            made: booking_ids
                .into_iter()
                .zip(made)
                .filter(|(_, made)| made.current_sequence > 0)
                .map(|(id, made)| (id, made.aggregate))
                .collect(),
        })
    }

    /// After a batch was recorded (the log's head then was `head`): every answer, then, in a
    /// task of their own, the snapshots that are due.
    fn answer(self: &Arc<Self>, jobs: Vec<Job>, decisions: Vec<Decision>, head: i64) {
        let mut recorded = Vec::new();
        for (job, decision) in jobs.into_iter().zip(decisions) {
            let outcome = match decision {
                Decision::Record(recording) => {
                    job.ctx.settled_at(head);
                    let booking = recording.booking.clone();
                    recorded.push((recording, job.ctx.clone()));
                    Ok(booking)
                }
                Decision::Answer(outcome) => outcome,
            };
            // The client may have gone; its booking stands all the same.
            let _ = job.reply.send(outcome);
        }
        // Snapshots only shorten later loads: they delay neither an answer nor the next batch.
        let booker = self.clone();
        tokio::spawn(async move {
            for (recording, ctx) in recorded {
                let Recording {
                    reserved, created, ..
                } = *recording;
                booker.slots.recorded(reserved, head, &ctx).await;
                booker.bookings.recorded(created, head, &ctx).await;
            }
        });
    }
}

/// Fails every request of a batch with its error, which each of them carries as its source
/// (so that an outage still answers 503, not 500).
fn fail_all(jobs: Vec<Job>, error: BoxError) {
    tracing::warn!(error = %error, bookings = jobs.len(), "a booking batch failed");
    let shared = BatchFailed(Arc::from(error));
    for job in jobs {
        let failure = CommandError::Infrastructure(Box::new(shared.clone()));
        let _ = job.reply.send(Err(failure));
    }
}

/// The failure of a batch, as each of its requests sees it.
#[derive(Debug, Clone)]
struct BatchFailed(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the booking batch failed: {}", self.0)
    }
}

impl std::error::Error for BatchFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// The streams of `seen` that `events` do not append to: those the append must probe. A stream
/// the batch appends to needs no probe: its first new event takes the sequence right after the
/// one the batch saw, so if the stream moved meanwhile that sequence is taken and the append
/// fails on the primary key, as a lost race does. (In the steady state that leaves the lots:
/// one probe per batch instead of one per booking.)
fn only_read(seen: &[Seen], events: &[&NewEvent]) -> Vec<Seen> {
    let written: std::collections::HashSet<(&str, &str)> = events
        .iter()
        .map(|e| (e.aggregate_type, e.aggregate_id.as_str()))
        .collect();
    seen.iter()
        .filter(|s| !written.contains(&(s.aggregate_type, s.aggregate_id.as_str())))
        .cloned()
        .collect()
}

fn distinct(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let mut seen = std::collections::HashSet::new();
    ids.filter(|id| seen.insert(*id)).collect()
}

fn keys(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

/// Retry counting of the jobs whose batch lost a race, without a database.
#[cfg(test)]
mod tests {
    use chrono::Utc;
    use parking_domain::booking::VehicleNumber;
    use parking_domain::Role;

    use super::*;

    fn job(request_id: &str, attempt: u32) -> (Job, oneshot::Receiver<Outcome>) {
        let driver = Actor {
            user_id: Uuid::from_u128(1),
            role: Role::User,
        };
        let now = Utc::now();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ctx: CommandContext::for_request(Some(driver), request_id.into(), now),
            driver,
            request: BookingRequest {
                slot_id: Uuid::from_u128(11),
                range: TimeRange::new(now, now + chrono::Duration::hours(1)).unwrap(),
                vehicle_number: VehicleNumber::parse("AB-1").unwrap(),
            },
            reply,
            attempt,
        };
        (job, answer)
    }

    #[test]
    fn jobs_that_lost_a_race_are_decided_again_in_order_after_a_pause() {
        let mut redo = Redo::default();
        let ((a, _), (b, _), (c, _)) = (job("a", 1), job("b", 1), job("c", 3));
        let before = Instant::now();
        redo.push(vec![a, b]);
        redo.push(vec![c]);
        let due = redo.due().expect("jobs wait");
        assert!(due >= before && due <= Instant::now() + Duration::from_millis(6));
        let first = redo.take(2);
        let order: Vec<_> = first
            .iter()
            .map(|j| (j.ctx.request_id.as_str(), j.attempt))
            .collect();
        assert_eq!(order, [("a", 2), ("b", 2)]);
        assert!(!redo.is_empty(), "the rest waits for the next batch");
        let rest = redo.take(MAX_BATCH);
        assert_eq!((rest.len(), rest[0].attempt), (1, 4));
        assert!(redo.is_empty() && redo.due().is_none());
    }

    #[test]
    fn a_job_that_lost_its_last_race_is_answered_contention() {
        let mut redo = Redo::default();
        let (last, mut answer) = job("a", retry::MAX_ATTEMPTS);
        let (earlier, mut waiting) = job("b", retry::MAX_ATTEMPTS - 1);
        redo.push(vec![last, earlier]);
        let answered = answer.try_recv().expect("answered at once");
        assert!(matches!(answered, Err(CommandError::Contention { .. })));
        assert!(waiting.try_recv().is_err(), "one more attempt left");
        assert_eq!(redo.take(MAX_BATCH).len(), 1);
    }
}
