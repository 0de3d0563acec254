//! The history's tamper evidence (docs/audit.md): the hash chain over the global log that the
//! append writes (migration 0018), and its verification.
//!
//! Each event row's `hash` is SHA-256 over the hash of the row before it and the row's own
//! canonical encoding ([`chain_hash`]); the head row keeps the last one. [`verify`] walks the
//! log in order recomputing the chain, and reports the first link that does not hold: a row
//! whose content or hash was altered, a position with no row (a deleted event), or a head that
//! does not end the chain. A verification that finds the chain intact leaves a checkpoint,
//! signed with a key derived from the master key, where the next one may resume.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::keys::MasterKey;

/// 2000-01-01T00:00:00Z in microseconds since the Unix epoch: where PostgreSQL counts from.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The hash before the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// Rows read per query while verifying.
const CHUNK: i64 = 5_000;

/// What [`MasterKey::derive`] is asked for to sign checkpoints.
const CHECKPOINT_PURPOSE: &str = "parking audit checkpoint v1";

/// The columns of a [`ChainRow`].
macro_rules! select_chain_rows {
    () => {
        "SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload::text AS payload, metadata::text AS metadata, recorded_at, hash
           FROM events"
    };
}
/// One event row as the chain covers it: the stored JSON texts exactly as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainRow {
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    pub hash: Option<Vec<u8>>,
}

/// The chain's next hash: SHA-256 of `previous`, then the row's position, aggregate type and
/// id, sequence, event type and version, payload and metadata, and recording time, integers as
/// 8-byte big-endian, texts as their 4-byte big-endian UTF-8 length then their bytes, the time
/// as microseconds since 2000-01-01 UTC (PostgreSQL's binary form of a `timestamptz`).
/// `parking_event_hash` (migration 0018) is the same in SQL.
pub fn chain_hash(previous: &[u8; 32], row: &ChainRow) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let text = |hasher: &mut Sha256, text: &str| {
        hasher.update((text.len() as u32).to_be_bytes());
        hasher.update(text.as_bytes());
    };
    hasher.update(previous);
    hasher.update(row.global_position.to_be_bytes());
    text(&mut hasher, &row.aggregate_type);
    text(&mut hasher, &row.aggregate_id);
    hasher.update(row.sequence.to_be_bytes());
    text(&mut hasher, &row.event_type);
    text(&mut hasher, &row.event_version);
    text(&mut hasher, &row.payload);
    text(&mut hasher, &row.metadata);
    hasher.update((row.recorded_at.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes());
    hasher.finalize().into()
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Every link checked holds.
    pub intact: bool,
    /// The walk began after this position: 0, or the checkpoint it resumed from.
    pub from_position: i64,
    /// Whether a checkpoint was used, and if not, why.
    pub checkpoint: CheckpointUse,
    /// Rows hashed.
    pub checked: i64,
    /// The log's head when the walk began: its position and the chain's hash there (hex).
    /// Publishing it elsewhere is what makes a rewrite of the whole chain detectable.
    pub head: ChainHead,
    /// The first link that does not hold.
    pub broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainHead {
    pub position: i64,
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointUse {
    /// Resumed from the latest signed checkpoint.
    Resumed,
    /// Walked from the first event, as asked (`full`).
    Full,
    /// No checkpoint yet: walked from the first event.
    None,
    /// `DATA_KEY_FILE` is not set, so checkpoints cannot be trusted: walked from the first
    /// event.
    Unsigned,
    /// The latest checkpoint's signature does not hold (it was forged or the master key
    /// changed): walked from the first event.
    Invalid,
}

/// The first link of the chain that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BrokenLink {
    pub position: i64,
    pub problem: Problem,
    /// The event at `position`, when there is one.
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub sequence: Option<i64>,
    /// The hash the row carries, and the hash the chain computes for it (hex).
    pub recorded_hash: Option<String>,
    pub computed_hash: Option<String>,
    /// What differs, in words.
    pub detail: String,
}

impl BrokenLink {
    /// A link with no event to name (a position without one, the head), nor hashes.
    fn without_event(position: i64, problem: Problem, detail: String) -> Self {
        Self {
            position,
            problem,
            aggregate_type: None,
            aggregate_id: None,
            sequence: None,
            recorded_hash: None,
            computed_hash: None,
            detail,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The row's content was changed after it was recorded (the next row still chains from
    /// the hash the row carries).
    ContentAltered,
    /// The hash the row carries was changed (the next row chains from the computed one).
    HashAltered,
    /// The row does not hash to its recorded hash, and what follows it (the next row, or the
    /// head) chains from neither: more than one thing changed here.
    Altered,
    /// No event has this position: a row was deleted.
    Missing,
    /// The head does not end the chain: its hash or position differs from the last row's.
    HeadMismatch,
    /// The row a checkpoint verified no longer carries the hash it had then.
    CheckpointMismatch,
}

/// A verified position, signed.
#[derive(Debug, Clone)]
struct Checkpoint {
    position: i64,
    hash: [u8; 32],
}

impl Checkpoint {
    fn signature(&self, key: &MasterKey) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.derive(CHECKPOINT_PURPOSE))
            .expect("HMAC takes a key of any length");
        mac.update(&self.position.to_be_bytes());
        mac.update(&self.hash);
        mac.finalize().into_bytes().to_vec()
    }

    fn verifies(&self, key: &MasterKey, signature: &[u8]) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.derive(CHECKPOINT_PURPOSE))
            .expect("HMAC takes a key of any length");
        mac.update(&self.position.to_be_bytes());
        mac.update(&self.hash);
        mac.verify_slice(signature).is_ok()
    }
}

/// Progress of a verification: rows checked, and how many there are to check.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub checked: i64,
    pub total: i64,
}

/// Walks the chain from the latest signed checkpoint (or from the first event if `full`, or if
/// there is no usable checkpoint) to the head as it is when the walk begins, and reports the
/// first broken link. An intact walk leaves a checkpoint at the head (with a master key).
pub async fn verify(
    pool: &PgPool,
    key: Option<&MasterKey>,
    full: bool,
    mut progress: impl FnMut(Progress),
) -> Result<Verification, sqlx::Error> {
    let (head_position, head_hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT position, hash FROM event_log_head")
            .fetch_one(pool)
            .await?;
    let head = ChainHead {
        position: head_position,
        hash: hex::encode(&head_hash),
    };
    let (checkpoint, use_) = latest_checkpoint(pool, key, full, head_position).await?;
    let from = checkpoint.as_ref().map_or(0, |c| c.position);
    let mut report = Verification {
        intact: true,
        from_position: from,
        checkpoint: use_,
        checked: 0,
        head,
        broken: None,
    };
    let mut previous = GENESIS;
    if let Some(checkpoint) = &checkpoint {
        let anchor: Option<ChainRow> =
            sqlx::query_as(concat!(select_chain_rows!(), " WHERE global_position = $1"))
                .bind(checkpoint.position)
                .fetch_optional(pool)
                .await?;
        if let Some(broken) = anchor_breaks(checkpoint, anchor.as_ref()) {
            report.broken = Some(broken);
            report.intact = false;
            return Ok(report);
        }
        previous = checkpoint.hash;
    }

    let mut chunks = read_chunks(pool.clone(), from, head_position);
    let mut walk = Walk {
        previous,
        expected: from + 1,
        suspect: None,
    };
    let total = head_position - from;
    while let Some(chunk) = chunks.recv().await {
        for row in chunk? {
            report.checked += 1;
            if let Some(broken) = walk.step(row) {
                report.broken = Some(broken);
                report.intact = false;
                return Ok(report);
            }
        }
        progress(Progress {
            checked: report.checked,
            total,
        });
    }
    if let Some(broken) = walk.finish(head_position, &head_hash) {
        report.broken = Some(broken);
        report.intact = false;
        return Ok(report);
    }
    if let Some(key) = key.filter(|_| head_position > from) {
        let checkpoint = Checkpoint {
            position: head_position,
            hash: walk.previous,
        };
        sqlx::query(
            "INSERT INTO audit_checkpoints (position, hash, signature) VALUES ($1, $2, $3)
             ON CONFLICT (position) DO NOTHING",
        )
        .bind(checkpoint.position)
        .bind(checkpoint.hash.as_slice())
        .bind(checkpoint.signature(key))
        .execute(pool)
        .await?;
    }
    tracing::info!(
        position = report.head.position,
        hash = %report.head.hash,
        checked = report.checked,
        "the event log's hash chain is intact up to its head"
    );
    Ok(report)
}

/// The rows after `from` up to `to`, in order, in chunks read ahead of the walk (the next
/// chunk is read while this one is hashed).
fn read_chunks(
    pool: PgPool,
    from: i64,
    to: i64,
) -> mpsc::Receiver<Result<Vec<ChainRow>, sqlx::Error>> {
    let (sender, receiver) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut after = from;
        while after < to {
            let chunk: Result<Vec<ChainRow>, sqlx::Error> = sqlx::query_as(concat!(
                select_chain_rows!(),
                " WHERE global_position > $1 AND global_position <= $2
                  ORDER BY global_position LIMIT $3"
            ))
            .bind(after)
            .bind(to)
            .bind(CHUNK)
            .fetch_all(&pool)
            .await;
            let last = match &chunk {
                Ok(rows) => rows.last().map(|row| row.global_position),
                Err(_) => None,
            };
            let failed = chunk.is_err();
            if sender.send(chunk).await.is_err() || failed {
                return;
            }
            match last {
                Some(last) => after = last,
                None => return,
            }
        }
    });
    receiver
}

/// The walk's state between rows.
struct Walk {
    /// The chain's hash before the next row.
    previous: [u8; 32],
    /// The next row's position.
    expected: i64,
    /// A row that did not hash to its recorded hash, judged by the row after it.
    suspect: Option<Suspect>,
}

struct Suspect {
    row: ChainRow,
    computed: [u8; 32],
}

impl Walk {
    fn step(&mut self, row: ChainRow) -> Option<BrokenLink> {
        if let Some(suspect) = self.suspect.take() {
            let position = suspect.row.global_position;
            return Some(suspect.judged_by(|previous| {
                row.global_position == position + 1
                    && row.hash.as_deref() == Some(chain_hash(previous, &row).as_slice())
            }));
        }
        if row.global_position != self.expected {
            return Some(BrokenLink::without_event(
                self.expected,
                Problem::Missing,
                format!(
                    "no event has position {}; the next one is {} ({} {} #{})",
                    self.expected,
                    row.global_position,
                    row.aggregate_type,
                    row.aggregate_id,
                    row.sequence
                ),
            ));
        }
        let computed = chain_hash(&self.previous, &row);
        self.expected += 1;
        if row.hash.as_deref() != Some(computed.as_slice()) {
            self.suspect = Some(Suspect { row, computed });
            return None;
        }
        self.previous = computed;
        None
    }

    fn finish(&mut self, head_position: i64, head_hash: &[u8]) -> Option<BrokenLink> {
        if let Some(suspect) = self.suspect.take() {
            // The last row: the head carries the hash the chain had after it.
            let last = suspect.row.global_position == head_position;
            return Some(suspect.judged_by(|previous| last && previous.as_slice() == head_hash));
        }
        let last = self.expected - 1;
        if last != head_position {
            return Some(BrokenLink::without_event(
                self.expected,
                Problem::Missing,
                format!("the log's head is at position {head_position}, but its last event is at {last}"),
            ));
        }
        if self.previous.as_slice() != head_hash {
            return Some(BrokenLink {
                recorded_hash: Some(hex::encode(head_hash)),
                computed_hash: Some(hex::encode(self.previous)),
                ..BrokenLink::without_event(
                    head_position,
                    Problem::HeadMismatch,
                    "the head's hash is not the chain's hash at its last event".to_owned(),
                )
            });
        }
        None
    }
}

impl Suspect {
    /// The suspect row's break, told apart by whether what follows it (the next row, or the
    /// head) `chains_from` the hash the suspect carries (its content changed) or from the hash
    /// computed for it (its hash changed).
    fn judged_by(self, chains_from: impl Fn(&[u8; 32]) -> bool) -> BrokenLink {
        let Suspect { row, computed } = self;
        let recorded: Option<[u8; 32]> = row.hash.as_deref().and_then(|h| h.try_into().ok());
        let (problem, detail) = if recorded.is_some_and(|recorded| chains_from(&recorded)) {
            (
                Problem::ContentAltered,
                "the event's content (type, stream, payload, metadata or time) no longer hashes \
                 to the hash recorded with it, which what follows still chains from",
            )
        } else if chains_from(&computed) {
            (
                Problem::HashAltered,
                "the hash recorded with the event was changed: the event itself hashes to the \
                 value what follows chains from",
            )
        } else {
            (
                Problem::Altered,
                "the event does not hash to the hash recorded with it",
            )
        };
        BrokenLink {
            position: row.global_position,
            problem,
            recorded_hash: row.hash.as_deref().map(hex::encode),
            computed_hash: Some(hex::encode(computed)),
            aggregate_type: Some(row.aggregate_type),
            aggregate_id: Some(row.aggregate_id),
            sequence: Some(row.sequence),
            detail: detail.to_owned(),
        }
    }
}

/// Whether the row a checkpoint verified still carries the checkpoint's hash.
fn anchor_breaks(checkpoint: &Checkpoint, anchor: Option<&ChainRow>) -> Option<BrokenLink> {
    match anchor {
        Some(row) if row.hash.as_deref() == Some(checkpoint.hash.as_slice()) => None,
        Some(row) => Some(BrokenLink {
            position: checkpoint.position,
            problem: Problem::CheckpointMismatch,
            recorded_hash: row.hash.as_deref().map(hex::encode),
            computed_hash: Some(hex::encode(checkpoint.hash)),
            aggregate_type: Some(row.aggregate_type.clone()),
            aggregate_id: Some(row.aggregate_id.clone()),
            sequence: Some(row.sequence),
            detail: "the event a signed checkpoint verified carries another hash now: the \
                     history before it was rewritten (verify with full=true to find where)"
                .to_owned(),
        }),
        None => Some(BrokenLink {
            computed_hash: Some(hex::encode(checkpoint.hash)),
            ..BrokenLink::without_event(
                checkpoint.position,
                Problem::Missing,
                "the event a signed checkpoint verified is gone".to_owned(),
            )
        }),
    }
}

/// The checkpoint to resume from, and why there is none.
async fn latest_checkpoint(
    pool: &PgPool,
    key: Option<&MasterKey>,
    full: bool,
    head: i64,
) -> Result<(Option<Checkpoint>, CheckpointUse), sqlx::Error> {
    if full {
        return Ok((None, CheckpointUse::Full));
    }
    let Some(key) = key else {
        return Ok((None, CheckpointUse::Unsigned));
    };
    let latest: Option<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT position, hash, signature FROM audit_checkpoints
          WHERE position <= $1 ORDER BY position DESC LIMIT 1",
    )
    .bind(head)
    .fetch_optional(pool)
    .await?;
    let Some((position, hash, signature)) = latest else {
        return Ok((None, CheckpointUse::None));
    };
    let checkpoint = hash
        .try_into()
        .ok()
        .map(|hash| Checkpoint { position, hash });
    Ok(match checkpoint {
        Some(checkpoint) if checkpoint.verifies(key, &signature) => {
            (Some(checkpoint), CheckpointUse::Resumed)
        }
        _ => (None, CheckpointUse::Invalid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(position: i64) -> ChainRow {
        ChainRow {
            global_position: position,
            aggregate_type: "lot".into(),
            aggregate_id: "a".into(),
            sequence: position,
            event_type: "X".into(),
            event_version: "1".into(),
            payload: "{\"X\":{}}".into(),
            metadata: "{}".into(),
            recorded_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            hash: None,
        }
    }

    fn chained(rows: usize) -> Vec<ChainRow> {
        let mut previous = GENESIS;
        (1..=rows as i64)
            .map(|p| {
                let mut row = row(p);
                previous = chain_hash(&previous, &row);
                row.hash = Some(previous.to_vec());
                row
            })
            .collect()
    }

    fn walk(rows: Vec<ChainRow>, head: i64) -> Option<BrokenLink> {
        let head_hash = rows
            .iter()
            .find(|r| r.global_position == head)
            .and_then(|r| r.hash.clone())
            .unwrap_or_default();
        let mut walk = Walk {
            previous: GENESIS,
            expected: 1,
            suspect: None,
        };
        for row in rows {
            if let Some(broken) = walk.step(row) {
                return Some(broken);
            }
        }
        walk.finish(head, &head_hash)
    }

    #[test]
    fn every_field_is_covered_and_texts_cannot_slide_into_each_other() {
        let base = row(1);
        let hash = chain_hash(&GENESIS, &base);
        let variants: [fn(&mut ChainRow); 10] = [
            |r| r.global_position = 2,
            |r| r.aggregate_type = "slot".into(),
            |r| r.aggregate_id = "b".into(),
            |r| r.sequence = 9,
            |r| r.event_type = "Y".into(),
            |r| r.event_version = "2".into(),
            |r| r.payload = "{\"X\":{ }}".into(),
            |r| r.metadata = "{ }".into(),
            |r| r.recorded_at += chrono::Duration::microseconds(1),
            // The same bytes split differently between two texts.
            |r| {
                r.aggregate_type = "lo".into();
                r.aggregate_id = "ta".into();
            },
        ];
        for change in variants {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(chain_hash(&GENESIS, &changed), hash, "{changed:?}");
        }
        assert_ne!(chain_hash(&[1; 32], &base), hash);
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(walk(chained(5), 5), None);
    }

    #[test]
    fn altered_content_is_told_from_an_altered_hash() {
        let mut rows = chained(5);
        rows[2].payload = "{\"X\":{\"y\":1}}".into();
        let broken = walk(rows, 5).unwrap();
        assert_eq!(
            (broken.position, broken.problem),
            (3, Problem::ContentAltered)
        );

        let mut rows = chained(5);
        rows[2].hash = Some(vec![7; 32]);
        let broken = walk(rows, 5).unwrap();
        assert_eq!((broken.position, broken.problem), (3, Problem::HashAltered));

        // The last row is judged by the head.
        let mut rows = chained(5);
        rows[4].metadata = "{\"a\":\"b\"}".into();
        let broken = walk(rows, 5).unwrap();
        assert_eq!(
            (broken.position, broken.problem),
            (5, Problem::ContentAltered)
        );

        // Two rows in a row changed: the first is named, without telling how.
        let mut rows = chained(5);
        rows[2].payload = "{}".into();
        rows[3].payload = "{}".into();
        let broken = walk(rows, 5).unwrap();
        assert_eq!((broken.position, broken.problem), (3, Problem::Altered));

        let mut rows = chained(5);
        rows[2].payload = "{}".into();
        rows[2].hash = Some(vec![7; 32]);
        let broken = walk(rows, 5).unwrap();
        assert_eq!((broken.position, broken.problem), (3, Problem::Altered));
    }

    #[test]
    fn a_deleted_row_is_missing() {
        let mut rows = chained(5);
        rows.remove(1);
        let broken = walk(rows, 5).unwrap();
        assert_eq!((broken.position, broken.problem), (2, Problem::Missing));

        let mut rows = chained(5);
        rows.pop();
        let broken = walk(rows, 5).unwrap();
        assert_eq!((broken.position, broken.problem), (5, Problem::Missing));
    }

    #[test]
    fn checkpoints_are_signed() {
        let key = MasterKey::from_hex(&"01".repeat(32)).unwrap();
        let other = MasterKey::from_hex(&"02".repeat(32)).unwrap();
        let checkpoint = Checkpoint {
            position: 10,
            hash: [3; 32],
        };
        let signature = checkpoint.signature(&key);
        assert!(checkpoint.verifies(&key, &signature));
        assert!(!checkpoint.verifies(&other, &signature));
        let moved = Checkpoint {
            position: 11,
            ..checkpoint
        };
        assert!(!moved.verifies(&key, &signature));
    }
}
