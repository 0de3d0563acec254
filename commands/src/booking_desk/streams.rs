//! The streams a batch decides on, and those the desk holds between batches.
//!
//! Every stream a booking decision reads is in [`Streams`], and nowhere else: a batch takes
//! copies of the streams the desk holds and reads the others, so each entry knows the sequence
//! it was decided on, and the batch's append checks every one of them ([`Streams::seen`]). A
//! held copy that another node or command has moved meanwhile therefore fails the append, and
//! the batch is decided again on the streams as they are now.
//!
//! Adding a kind of stream is adding a field to [`Streams`]: each method below takes the
//! struct apart field by field, so the compiler points at every place the new kind must be
//! handled (checked, held, let go), and at the desk's `load`, which must read it.

use std::collections::HashMap;

use cqrs_es::Aggregate;
use parking_domain::lot::ParkingLot;
use parking_domain::slot::Slot;
use parking_infra::append::Seen;
use uuid::Uuid;

use crate::bus::Loaded;

/// How many streams of each kind the desk holds at most; when full, it starts again empty.
const HELD_STREAMS: usize = 4096;

/// Streams of one aggregate type, each as a batch found it and as its decisions leave it.
pub(super) struct StreamSet<A: Aggregate> {
    streams: HashMap<Uuid, Tracked<A>>,
}

struct Tracked<A: Aggregate> {
    /// The sequence the stream had when the batch took it: what its append checks.
    found_at: usize,
    /// The stream as the batch's decisions so far leave it.
    now: Loaded<A>,
}

impl<A: Aggregate> Default for StreamSet<A> {
    fn default() -> Self {
        Self {
            streams: HashMap::new(),
        }
    }
}

impl<A: Aggregate + Clone> StreamSet<A> {
    /// Copies of those of `ids` that `held` has.
    pub(super) fn copies(held: &StreamSet<A>, ids: &[Uuid]) -> Self {
        let streams = ids
            .iter()
            .filter_map(|id| Some((*id, held.streams.get(id)?)))
            .map(|(id, tracked)| (id, Tracked::found(copy(&tracked.now))))
            .collect();
        Self { streams }
    }

    /// Those of `ids` that are not here, once each, in order.
    pub(super) fn missing(&self, ids: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
        let mut missing = Vec::new();
        for id in ids {
            if !self.streams.contains_key(&id) && !missing.contains(&id) {
                missing.push(id);
            }
        }
        missing
    }

    /// Adds streams just read from the store.
    pub(super) fn add(&mut self, ids: Vec<Uuid>, loaded: Vec<Loaded<A>>) {
        let read = ids.into_iter().zip(loaded);
        self.streams
            .extend(read.map(|(id, loaded)| (id, Tracked::found(loaded))));
    }

    pub(super) fn get(&self, id: &Uuid) -> Option<&Loaded<A>> {
        self.streams.get(id).map(|tracked| &tracked.now)
    }

    /// The stream `id` as a decision leaves it (it must be here).
    pub(super) fn set(&mut self, id: Uuid, now: Loaded<A>) {
        if let Some(tracked) = self.streams.get_mut(&id) {
            tracked.now = now;
        }
    }

    pub(super) fn states(&self) -> impl Iterator<Item = &A> {
        self.streams.values().map(|tracked| &tracked.now.aggregate)
    }

    fn seen(&self) -> impl Iterator<Item = Seen> + '_ {
        self.streams.iter().map(|(id, tracked)| Seen {
            aggregate_type: A::TYPE,
            aggregate_id: id.to_string(),
            sequence: tracked.found_at as i64,
        })
    }

    /// Holds `batch`'s streams as its decisions leave them.
    fn keep(&mut self, batch: StreamSet<A>) {
        if self.streams.len() + batch.streams.len() > HELD_STREAMS {
            self.streams.clear();
        }
        let kept =
            (batch.streams.into_iter()).map(|(id, tracked)| (id, Tracked::found(tracked.now)));
        self.streams.extend(kept);
    }

    /// Forgets those of `seen` that are of this kind.
    fn forget(&mut self, seen: &[Seen]) {
        for stream in seen.iter().filter(|s| s.aggregate_type == A::TYPE) {
            if let Ok(id) = stream.aggregate_id.parse() {
                self.streams.remove(&id);
            }
        }
    }
}

impl<A: Aggregate> Tracked<A> {
    fn found(now: Loaded<A>) -> Self {
        Self {
            found_at: now.current_sequence,
            now,
        }
    }
}

/// Every kind of stream a booking decision reads: for one batch, or held by the desk.
#[derive(Default)]
pub(super) struct Streams {
    pub slots: StreamSet<Slot>,
    pub lots: StreamSet<ParkingLot>,
}

impl Streams {
    /// Every stream, at the sequence the batch found it: the append records nothing if any has
    /// moved since.
    pub(super) fn seen(&self) -> Vec<Seen> {
        let Streams { slots, lots } = self;
        slots.seen().chain(lots.seen()).collect()
    }

    /// Holds `batch`'s streams as its decisions leave them, for the next batch to decide on.
    pub(super) fn hold(&mut self, batch: Streams) {
        let Streams { slots, lots } = batch;
        self.slots.keep(slots);
        self.lots.keep(lots);
    }

    /// Lets go of the streams of a batch that was not recorded (`seen`), so they are read again.
    pub(super) fn let_go(&mut self, seen: &[Seen]) {
        let Streams { slots, lots } = self;
        slots.forget(seen);
        lots.forget(seen);
    }
}

/// A copy of a loaded stream (`Loaded` is not `Clone`).
pub(super) fn copy<A: Aggregate + Clone>(loaded: &Loaded<A>) -> Loaded<A> {
    Loaded {
        aggregate_id: loaded.aggregate_id.clone(),
        aggregate: loaded.aggregate.clone(),
        current_sequence: loaded.current_sequence,
        current_snapshot: loaded.current_snapshot,
    }
}
