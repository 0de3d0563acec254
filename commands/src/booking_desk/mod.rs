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
//! it leaves, and its append is queued behind it on the desk's own connection (`appender`).
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

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cqrs_es::Aggregate;
use futures::FutureExt;
use parking_domain::booking::{price_for, Booking, BookingCommand, BookingPolicy};
use parking_domain::lot::ParkingLot;
use parking_domain::slot::{Slot, SlotCommand};
use parking_domain::{Actor, Violation};
use parking_infra::appender::{Appender, Chain, Sent};
use parking_infra::event_store::{append_checked, AppendError, NewEvent, Pending, Seen};
use parking_infra::EventLog;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::bookings::{BookingRequest, CreatedBooking};
use crate::bus::{backoff, Bus, Loaded, MAX_ATTEMPTS};
use crate::context::{key_reused, CommandContext};
use crate::error::{BoxError, CommandError};

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
    pub(crate) fn new(
        log: EventLog,
        slots: Bus<Slot>,
        lots: Bus<ParkingLot>,
        bookings: Bus<Booking>,
        policy: BookingPolicy,
    ) -> Self {
        Self {
            booker: Arc::new(Booker {
                log,
                slots,
                lots,
                bookings,
                policy,
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
        answer.await.unwrap_or_else(|_| Err(worker_lost()))
    }
}

fn worker_lost() -> CommandError {
    CommandError::Infrastructure("the booking worker stopped before answering".into())
}

fn slot_not_found() -> CommandError {
    CommandError::rejected("slot_not_found", Violation::NotFound, "no such slot")
}

fn lot_not_found() -> CommandError {
    CommandError::rejected("lot_not_found", Violation::NotFound, "no such lot")
}

/// What the desk's worker shares with the tasks it starts.
struct Booker {
    log: EventLog,
    slots: Bus<Slot>,
    lots: Bus<ParkingLot>,
    bookings: Bus<Booking>,
    policy: BookingPolicy,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    bookings: AtomicU64,
    redecided: AtomicU64,
}

/// What the booking desk has done since the process started (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeskStats {
    /// Batches decided (a batch decided again counts again).
    pub batches: u64,
    /// Booking requests in them: divided by `batches`, the mean batch size.
    pub bookings: u64,
    /// Times a batch was decided again because a stream moved under it.
    pub redecided: u64,
}

/// Streams the desk holds between batches, as the batches appended so far leave them (those
/// still on their way included). Bounded: when full, it starts again empty.
#[derive(Default)]
struct Held {
    slots: HashMap<Uuid, Loaded<Slot>>,
    lots: HashMap<Uuid, Loaded<ParkingLot>>,
}

/// How many streams of each kind the desk holds at most.
const HELD_STREAMS: usize = 4096;

impl Held {
    /// Copies of those of `ids` that are held.
    fn take_all<A: Aggregate + Clone>(
        held: &HashMap<Uuid, Loaded<A>>,
        ids: &[Uuid],
    ) -> HashMap<Uuid, Loaded<A>> {
        ids.iter()
            .filter_map(|id| Some((*id, copy(held.get(id)?))))
            .collect()
    }

    fn keep<A: Aggregate>(held: &mut HashMap<Uuid, Loaded<A>>, streams: HashMap<Uuid, Loaded<A>>) {
        if held.len() + streams.len() > HELD_STREAMS {
            held.clear();
        }
        held.extend(streams);
    }

    /// Keeps the streams a batch decided on, as its decisions leave them.
    fn hold(&mut self, streams: Streams) {
        Held::keep(&mut self.slots, streams.slots);
        Held::keep(&mut self.lots, streams.lots);
    }

    /// Lets go of the streams of a batch that was not recorded, so that they are read again.
    fn let_go(&mut self, touched: &Touched) {
        for id in &touched.slots {
            self.slots.remove(id);
        }
        for id in &touched.lots {
            self.lots.remove(id);
        }
    }
}

/// The streams a batch decides on, as loaded at the start of an attempt and then as its
/// earlier bookings leave them.
struct Streams {
    slots: HashMap<Uuid, Loaded<Slot>>,
    lots: HashMap<Uuid, Loaded<ParkingLot>>,
    /// For requests that may be retries: the booking their first attempt made, if any, or an
    /// earlier request of the batch with the same key.
    made: HashMap<Uuid, Booking>,
    /// Every slot and lot as loaded (read or held), for the append to check.
    seen: Vec<Seen>,
}

/// The slots and lots a batch decided on.
struct Touched {
    slots: Vec<Uuid>,
    lots: Vec<Uuid>,
}

/// How one job of a batch came out.
enum Decision {
    /// Its events, to append with the batch's.
    Record(Box<Recording>),
    /// Final without appending anything: refused, or made by the request's first attempt.
    Answer(Outcome),
}

/// A booking decided, with the events that record it.
struct Recording {
    reserved: Pending<Slot>,
    created: Pending<Booking>,
    booking: CreatedBooking,
}

impl Decision {
    fn events(&self) -> impl Iterator<Item = &NewEvent> {
        let (reserved, created): (&[_], &[_]) = match self {
            Decision::Record(recording) => (
                recording.reserved.serialized(),
                recording.created.serialized(),
            ),
            Decision::Answer(_) => (&[], &[]),
        };
        reserved.iter().chain(created)
    }
}

/// A batch decided, whose append is on its way.
struct InFlight {
    jobs: Vec<Job>,
    decisions: Vec<Decision>,
    touched: Touched,
    /// Its name, for the batch decided after it to follow (`Chain`).
    name: Uuid,
    outcome: Sent,
    sent_at: Instant,
}

/// Jobs to decide again, not before a pause.
struct Redo {
    jobs: Vec<Job>,
    not_before: Instant,
}

/// The desk's worker: it decides one batch at a time, in arrival order, and has up to
/// [`PIPELINE`] of them on their way to the log.
struct Worker {
    booker: Arc<Booker>,
    held: Held,
    /// The desk's own connection; without one, each batch is appended through the pool and
    /// answered before the next is decided.
    appender: Option<Appender>,
    in_flight: VecDeque<InFlight>,
    /// How long appends have recently taken to come back, from sent to settled.
    round_trip: Duration,
    /// Jobs of batches that lost a race, decided again (first) once nothing is in flight.
    redo: Option<Redo>,
}

impl Booker {
    /// The worker's loop: takes everything queued, up to a batch, whenever the pipeline has
    /// room; answers each batch as its append comes back, in order.
    async fn serve(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Job>) {
        let appender = self.log.append_target().cloned().map(Appender::new);
        let mut worker = Worker {
            booker: self,
            held: Held::default(),
            appender,
            in_flight: VecDeque::new(),
            round_trip: Duration::ZERO,
            redo: None,
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
            } else if let Some(mut redo) = worker.redo.take() {
                tokio::time::sleep_until(redo.not_before).await;
                // A batch at most; the rest, next (they still go before anything new).
                let mut jobs = if redo.jobs.len() > MAX_BATCH {
                    let rest = redo.jobs.split_off(MAX_BATCH);
                    let first = std::mem::replace(&mut redo.jobs, rest);
                    worker.redo = Some(redo);
                    first
                } else {
                    redo.jobs
                };
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
        self.redo.is_none() && self.in_flight.len() < depth
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
        // Even a batch that records nothing checks the streams it was refused on.
        let unwritten = only_read(&streams.seen, &events);
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
        let touched = Touched {
            slots: streams.slots.keys().copied().collect(),
            lots: streams.lots.keys().copied().collect(),
        };
        // The next batch decides on these states; its append follows this one's, and records
        // nothing unless this one was recorded.
        self.held.hold(streams);
        self.in_flight.push_back(InFlight {
            jobs,
            decisions,
            touched,
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
            touched,
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
                self.held.let_go(&touched);
                self.booker.stats.redecided.fetch_add(1, Ordering::Relaxed);
                self.decide_again(jobs);
            }
            Err(AppendError::Database(e)) => self.failed(jobs, e),
        }
    }

    /// The database failed a batch: whether it was recorded is unknown, so the desk forgets
    /// every stream it holds.
    fn failed(&mut self, jobs: Vec<Job>, error: BoxError) {
        self.held = Held::default();
        fail_all(jobs, error);
    }

    /// Queues `jobs` to be decided again, after those already waiting and before anything new,
    /// after a short pause (racing nodes spread out); or answers `409 contention` to those that
    /// have lost too many races.
    fn decide_again(&mut self, jobs: Vec<Job>) {
        let mut again = Vec::with_capacity(jobs.len());
        let mut attempt = 1;
        for mut job in jobs {
            job.attempt += 1;
            attempt = attempt.max(job.attempt);
            if job.attempt > MAX_ATTEMPTS {
                let contention = CommandError::Contention {
                    aggregate: Slot::TYPE,
                    id: job.request.slot_id.to_string(),
                };
                let _ = job.reply.send(Err(contention));
            } else {
                again.push(job);
            }
        }
        if again.is_empty() {
            return;
        }
        let not_before = Instant::now() + backoff(attempt - 1);
        match &mut self.redo {
            Some(redo) => {
                redo.jobs.extend(again);
                redo.not_before = redo.not_before.max(not_before);
            }
            None => {
                self.redo = Some(Redo {
                    jobs: again,
                    not_before,
                })
            }
        }
    }
}

impl Booker {
    /// Loads the batch's streams and decides each job in arrival order on them.
    async fn decide_all(
        &self,
        held: &Held,
        jobs: &[Job],
    ) -> Result<(Streams, Vec<Decision>), CommandError> {
        let mut streams = self.load(held, jobs).await?;
        let mut decisions = Vec::with_capacity(jobs.len());
        for job in jobs {
            decisions.push(self.decide(job, &mut streams).await);
        }
        Ok((streams, decisions))
    }

    /// The batch's slots, their lots, and the bookings its retried requests may have made
    /// already. Streams the desk holds are taken as it holds them, unread: the append checks
    /// that they have not moved (`Streams::seen`). The rest are read: the slots (with the
    /// retried requests' bookings), then the lots of those slots that the desk does not hold.
    async fn load(&self, held: &Held, jobs: &[Job]) -> Result<Streams, CommandError> {
        let slot_ids = distinct(jobs.iter().map(|job| job.request.slot_id));
        let booking_ids = distinct(
            jobs.iter()
                .filter(|job| job.ctx.may_be_retry())
                .map(|job| job.ctx.new_id("booking")),
        );
        let booking_keys = keys(&booking_ids);
        let mut slots = Held::take_all(&held.slots, &slot_ids);
        let lot_ids = distinct(slots.values().filter_map(lot_of));
        let mut lots = Held::take_all(&held.lots, &lot_ids);
        let unheld_slots: Vec<Uuid> = slot_ids
            .iter()
            .filter(|id| !slots.contains_key(id))
            .copied()
            .collect();
        // Held streams are not read: in the steady state no query is sent here at all.
        let slot_keys = keys(&unheld_slots);
        let (read_slots, made) = tokio::try_join!(
            self.slots.load_many(&slot_keys),
            self.bookings.load_many(&booking_keys),
        )?;
        slots.extend(unheld_slots.into_iter().zip(read_slots));
        let unheld_lots = unheld(&lots, slots.values().filter_map(lot_of));
        let read_lots = self.lots.load_many(&keys(&unheld_lots)).await?;
        lots.extend(unheld_lots.into_iter().zip(read_lots));
        let seen = slots
            .iter()
            .map(|(id, slot)| seen::<Slot>(id, slot))
            .chain(lots.iter().map(|(id, lot)| seen::<ParkingLot>(id, lot)))
            .collect();
        Ok(Streams {
            slots,
            lots,
            made: booking_ids
                .into_iter()
                .zip(made)
                .filter(|(_, made)| made.current_sequence > 0)
                .map(|(id, made)| (id, made.aggregate))
                .collect(),
            seen,
        })
    }

    /// Decides one job on `streams`, which then include its events.
    async fn decide(&self, job: &Job, streams: &mut Streams) -> Decision {
        match self.try_decide(job, streams).await {
            Ok(decision) => decision,
            Err(refused) => Decision::Answer(Err(refused)),
        }
    }

    async fn try_decide(&self, job: &Job, streams: &mut Streams) -> Result<Decision, CommandError> {
        let (ctx, request) = (&job.ctx, &job.request);
        let slot = streams
            .slots
            .get(&request.slot_id)
            .ok_or_else(slot_not_found)?;
        let info = slot.aggregate.info.clone().ok_or_else(slot_not_found)?;
        let lot = streams
            .lots
            .get(&info.lot_id)
            .and_then(|lot| lot.aggregate.registered.as_ref())
            .ok_or_else(lot_not_found)?;
        if !lot.slots.values().any(|s| s.slot_id == request.slot_id) {
            return Err(slot_not_found());
        }
        if !lot.active {
            return Err(CommandError::rejected(
                "lot_inactive",
                Violation::Conflict,
                "the lot is deactivated",
            ));
        }

        let booking_id = ctx.new_id("booking");
        if let Some(made) = streams.made.get(&booking_id) {
            return first_attempt(made, booking_id, job).map(|made| Decision::Answer(Ok(made)));
        }
        let price = price_for(&lot.details.hourly_rate, &request.range);
        // A booking whose reservation was recorded alone (by the two-step process of earlier
        // versions) keeps that reservation's hold while it runs.
        let hold_until = slot
            .aggregate
            .reservations
            .get(&booking_id)
            .filter(|r| r.is_live(ctx.now))
            .and_then(|r| r.hold_until)
            .unwrap_or_else(|| self.policy.hold_until(ctx.now));
        let reserve = SlotCommand::Reserve {
            booking_id,
            range: request.range,
            hold_until: Some(hold_until),
            now: ctx.now,
        };
        let reserved = self.slots.decide(copy(slot), reserve, ctx).await?;
        let step_ctx = reserved
            .envelopes()
            .last()
            .map_or_else(|| ctx.clone(), |e| ctx.caused_by(e));
        let create = BookingCommand::Create {
            user_id: job.driver.user_id,
            lot_id: info.lot_id,
            lot_owner_id: lot.owner_id,
            slot_id: request.slot_id,
            range: request.range,
            vehicle_number: request.vehicle_number.clone(),
            price,
            hold_until,
            now: ctx.now,
        };
        let created = self
            .bookings
            .decide(
                Bus::<Booking>::fresh(&booking_id.to_string()),
                create,
                &step_ctx,
            )
            .await?;
        streams.slots.insert(request.slot_id, reserved.after());
        // A twin of this request later in the batch (a retry that overtook the idempotency
        // layer) finds this booking made, as a retry after the batch would.
        let made = created.after().aggregate;
        let booking = CreatedBooking {
            booking_id,
            booking: made.state.clone().ok_or_else(|| {
                CommandError::Infrastructure("a booking decided without its creation".into())
            })?,
        };
        streams.made.insert(booking_id, made);
        Ok(Decision::Record(Box::new(Recording {
            reserved,
            created,
            booking,
        })))
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

/// A retried request whose first attempt made its booking: that booking, if the request is
/// the same. The answer must cover it, so the request's position is settled.
fn first_attempt(
    made: &Booking,
    booking_id: Uuid,
    job: &Job,
) -> Result<CreatedBooking, CommandError> {
    let Some(made) = &made.state else {
        return Err(CommandError::Infrastructure(
            "a booking stream without its creation".into(),
        ));
    };
    let request = &job.request;
    let same = made.user_id == job.driver.user_id
        && made.slot_id == request.slot_id
        && made.range == request.range
        && made.vehicle_number == request.vehicle_number;
    if !same {
        return Err(key_reused());
    }
    job.ctx.mark_unsettled();
    Ok(CreatedBooking {
        booking_id,
        booking: made.clone(),
    })
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

/// The lot a slot belongs to.
fn lot_of(slot: &Loaded<Slot>) -> Option<Uuid> {
    slot.aggregate.info.as_ref().map(|info| info.lot_id)
}

/// Those of `ids` not in `have`, once each.
fn unheld<A: Aggregate>(
    have: &HashMap<Uuid, Loaded<A>>,
    ids: impl Iterator<Item = Uuid>,
) -> Vec<Uuid> {
    distinct(ids.filter(|id| !have.contains_key(id)))
}

/// A stream as a batch decided on it.
fn seen<A: Aggregate>(id: &Uuid, loaded: &Loaded<A>) -> Seen {
    Seen {
        aggregate_type: A::TYPE,
        aggregate_id: id.to_string(),
        sequence: loaded.current_sequence as i64,
    }
}

fn keys(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

fn copy<A: Aggregate + Clone>(loaded: &Loaded<A>) -> Loaded<A> {
    Loaded {
        aggregate_id: loaded.aggregate_id.clone(),
        aggregate: loaded.aggregate.clone(),
        current_sequence: loaded.current_sequence,
        current_snapshot: loaded.current_snapshot,
    }
}
