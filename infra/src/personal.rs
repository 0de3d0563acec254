//! Personal data in events, sealed with a key per person so that it can be erased without
//! rewriting history (crypto-shredding; docs/audit.md, "Erasure").
//!
//! The fields listed in [`PERSONAL`] (e-mail addresses, full names, vehicle numbers, review
//! comments) are stored encrypted with AES-256-GCM under their person's data key:
//! `{"sealed": "<person's id>:<base64url(nonce ‖ ciphertext ‖ tag)>"}`, the field's name and
//! the person's id bound in as associated data. Data keys live in `data_keys`, each wrapped
//! (AES-256-GCM again) by a key derived from the master key (`DATA_KEY_FILE`). Everything
//! that reads events reveals them first ([`DataKeys::reveal`]): a sealed field becomes its text
//! again, or [`ERASED`] once its person's key is destroyed ([`DataKeys::erase`]). The stored
//! rows never change, so the hash chain still verifies after an erasure.
//!
//! Without `DATA_KEY_FILE` the master key is kept in the database (`data_master_key`), with a
//! warning: fine for development, where nobody steals the database, wrong in production. A
//! database whose keys were wrapped by a key file refuses to be used with another key, or with
//! none.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, Generate, Key, KeyInit, Nonce, Payload};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_domain::personal::ERASED;
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::append::NewEvent;
use crate::keys::MasterKey;
use crate::LoggedEvent;

/// The channel an erasure notifies (payload: the person's id), so every node forgets the key.
const CHANNEL: &str = "parking_data_keys";
/// Data keys kept unwrapped in memory; past this many the cache starts over.
const CACHE_LIMIT: usize = 100_000;
const NONCE_BYTES: usize = 12;

/// Whose field an event's personal fields are: the stream's own id, or a field of the payload.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    Stream,
    Field(&'static str),
}

/// The personal fields of one event type.
#[derive(Debug, Clone, Copy)]
pub struct PersonalFields {
    pub aggregate_type: &'static str,
    pub event_type: &'static str,
    pub fields: &'static [&'static str],
    pub subject: Subject,
}

/// Every event type that carries personal data, and where. An event type not listed here is
/// stored as it is: adding a personal field to an event means adding it here.
pub const PERSONAL: &[PersonalFields] = &[
    PersonalFields {
        aggregate_type: "user",
        event_type: "UserRegistered",
        fields: &["email", "full_name"],
        subject: Subject::Stream,
    },
    PersonalFields {
        aggregate_type: "email_claim",
        event_type: "EmailClaimed",
        fields: &["email"],
        subject: Subject::Field("user_id"),
    },
    PersonalFields {
        aggregate_type: "booking",
        event_type: "BookingCreated",
        fields: &["vehicle_number"],
        subject: Subject::Field("user_id"),
    },
    PersonalFields {
        aggregate_type: "review",
        event_type: "ReviewSubmitted",
        fields: &["comment"],
        subject: Subject::Field("user_id"),
    },
    PersonalFields {
        aggregate_type: "review",
        event_type: "ReviewRevised",
        fields: &["comment"],
        subject: Subject::Field("user_id"),
    },
];

/// Whether any event of `aggregate_type` may carry personal data.
pub fn may_be_sealed(aggregate_type: &str) -> bool {
    PERSONAL.iter().any(|p| p.aggregate_type == aggregate_type)
}

fn personal_fields(aggregate_type: &str, event_type: &str) -> Option<&'static PersonalFields> {
    PERSONAL
        .iter()
        .find(|p| p.aggregate_type == aggregate_type && p.event_type == event_type)
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The person was erased: nothing personal of theirs may be recorded again.
    #[error("the person {0} was erased")]
    Erased(Uuid),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The master key is not the one this database's data keys were wrapped with, or a stored
    /// value was altered: nothing can be read safely.
    #[error("{0}")]
    Integrity(String),
}

impl From<KeyError> for sqlx::Error {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Database(e) => e,
            integrity => sqlx::Error::Decode(Box::new(integrity)),
        }
    }
}

/// A person's data key, or the fact that it was destroyed.
#[derive(Clone)]
enum Entry {
    Live(Box<Aes256Gcm>),
    Erased,
}

/// The data keys of a database, unwrapped on demand and kept in memory. Cheap to clone.
#[derive(Clone)]
pub struct DataKeys {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    master: Option<MasterKey>,
    /// Off only for a benchmark's baseline: events are recorded as they come.
    sealing: bool,
    /// Wraps and unwraps data keys; made on first use (it may need the database).
    wrapping: OnceCell<Aes256Gcm>,
    cache: Mutex<HashMap<Uuid, Entry>>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKeys(..)")
    }
}

impl DataKeys {
    /// The data keys of `pool`'s database under `master` (`DATA_KEY_FILE`), or under the key
    /// the database keeps itself if there is none.
    pub fn new(pool: PgPool, master: Option<MasterKey>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                master,
                sealing: true,
                wrapping: OnceCell::new(),
                cache: Mutex::default(),
            }),
        }
    }

    /// These keys, sealing nothing: only for a benchmark's baseline (what the booking path
    /// costs without sealing). What was sealed before is still revealed. Called on new keys,
    /// before they are shared.
    pub fn unsealed(mut self) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("keys are made unsealed before they are shared")
            .sealing = false;
        self
    }

    /// Checks the master key against the database (at start-up, to fail there rather than on
    /// the first read of personal data).
    pub async fn ready(&self) -> Result<(), KeyError> {
        self.wrapping().await.map(|_| ())
    }

    async fn wrapping(&self) -> Result<&Aes256Gcm, KeyError> {
        self.inner
            .wrapping
            .get_or_try_init(|| async {
                let master = master_key(&self.inner.pool, self.inner.master.as_ref()).await?;
                Ok(Aes256Gcm::new(
                    &master.derive("parking data key wrapping v1").into(),
                ))
            })
            .await
    }

    fn cached(&self, subject: &Uuid) -> Option<Entry> {
        let cache = self
            .inner
            .cache
            .lock()
            .expect("the key cache is never poisoned");
        cache.get(subject).cloned()
    }

    fn remember(&self, subject: Uuid, entry: Entry) {
        let mut cache = self
            .inner
            .cache
            .lock()
            .expect("the key cache is never poisoned");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(subject, entry);
    }

    /// The keys of `subjects`, from the cache or in one query. A person without a stored key
    /// never had personal data sealed, or had it erased with the key's row.
    async fn entries(&self, subjects: &HashSet<Uuid>) -> Result<HashMap<Uuid, Entry>, KeyError> {
        let mut found = HashMap::with_capacity(subjects.len());
        let mut missing = Vec::new();
        for subject in subjects {
            match self.cached(subject) {
                Some(entry) => {
                    found.insert(*subject, entry);
                }
                None => missing.push(*subject),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let rows: Vec<(Uuid, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT subject, wrapped FROM data_keys WHERE subject = ANY($1)")
                .bind(&missing)
                .fetch_all(&self.inner.pool)
                .await?;
        let wrapping = self.wrapping().await?;
        let mut stored: HashMap<Uuid, Option<Vec<u8>>> = rows.into_iter().collect();
        for subject in missing {
            let entry = match stored.remove(&subject).flatten() {
                Some(wrapped) => Entry::Live(Box::new(unwrap(wrapping, subject, &wrapped)?)),
                None => Entry::Erased,
            };
            self.remember(subject, entry.clone());
            found.insert(subject, entry);
        }
        Ok(found)
    }

    /// The keys to seal `subjects`' data with, made and stored on first use (an erased
    /// person's stays erased): resolved before deciding, so that sealing needs no I/O.
    pub async fn sealer(
        &self,
        subjects: impl IntoIterator<Item = Uuid>,
    ) -> Result<Sealer, KeyError> {
        if !self.inner.sealing {
            return Ok(Sealer {
                keys: HashMap::new(),
                off: true,
            });
        }
        let subjects: HashSet<Uuid> = subjects.into_iter().collect();
        let unknown: Vec<Uuid> = (subjects.iter())
            .filter(|s| self.cached(s).is_none())
            .copied()
            .collect();
        if !unknown.is_empty() {
            let wrapping = self.wrapping().await?;
            let wrapped: Vec<Vec<u8>> = unknown
                .iter()
                .map(|subject| wrap(wrapping, *subject, &Key::<Aes256Gcm>::generate()))
                .collect();
            // Made once: a concurrent first use keeps the key stored first; an erased
            // person's row stays without one.
            sqlx::query(
                "INSERT INTO data_keys (subject, wrapped)
                 SELECT * FROM UNNEST($1::uuid[], $2::bytea[]) ON CONFLICT DO NOTHING",
            )
            .bind(&unknown)
            .bind(&wrapped)
            .execute(&self.inner.pool)
            .await?;
        }
        Ok(Sealer {
            keys: self.entries(&subjects).await?,
            off: false,
        })
    }

    /// Seals the personal fields of `events` (those [`PERSONAL`] lists) before they are
    /// appended.
    pub async fn seal(&self, events: &mut [NewEvent]) -> Result<(), SealError> {
        if !self.inner.sealing {
            return Ok(());
        }
        let mut subjects = Vec::new();
        for event in events.iter() {
            if let Some((personal, payload)) = parsed(event)? {
                subjects.extend(subject_of(event, personal, &payload));
            }
        }
        if subjects.is_empty() {
            return Ok(());
        }
        self.sealer(subjects).await?.seal(events)
    }

    /// Reveals the sealed fields of logged events in place: each becomes its text, or
    /// [`ERASED`].
    pub async fn reveal(&self, events: &mut [LoggedEvent]) -> Result<(), KeyError> {
        let sealed: Vec<usize> = (0..events.len())
            .filter(|i| looks_sealed(events[*i].payload.get()))
            .collect();
        if sealed.is_empty() {
            return Ok(());
        }
        // The texts as `seal` wrote them are revealed in place, without parsing them; any
        // other (written otherwise) goes through the JSON tree.
        let (mut subjects, mut in_tree) = (HashSet::new(), Vec::new());
        for i in &sealed {
            match sealed_spans(events[*i].payload.get()) {
                Some(spans) => subjects.extend(spans.iter().map(|span| span.subject)),
                None => in_tree.push(*i),
            }
        }
        let entries = self.entries(&subjects).await?;
        for i in sealed.iter().filter(|i| !in_tree.contains(i)) {
            let revealed = reveal_text(events[*i].payload.get(), &entries)?;
            events[*i].payload =
                RawValue::from_string(revealed).map_err(|e| KeyError::Integrity(e.to_string()))?;
        }
        let mut payloads = Vec::with_capacity(in_tree.len());
        for i in &in_tree {
            let payload: Value = serde_json::from_str(events[*i].payload.get())
                .map_err(|e| KeyError::Integrity(e.to_string()))?;
            payloads.push(payload);
        }
        self.reveal_values(payloads.iter_mut().collect()).await?;
        for (i, payload) in in_tree.into_iter().zip(payloads) {
            events[i].payload =
                serde_json::value::to_raw_value(&payload).expect("a JSON value serializes");
        }
        Ok(())
    }

    /// Reveals the sealed fields anywhere inside `values`, in place.
    pub async fn reveal_values(&self, mut values: Vec<&mut Value>) -> Result<(), KeyError> {
        let mut subjects = HashSet::new();
        for value in &values {
            visit_sealed(value, &mut |subject| {
                subjects.insert(subject);
            });
        }
        if subjects.is_empty() {
            return Ok(());
        }
        let entries = self.entries(&subjects).await?;
        for value in values.iter_mut() {
            reveal_in(value, None, &entries)?;
        }
        Ok(())
    }

    /// Destroys `subject`'s data key: their sealed fields read [`ERASED`] from now on, on
    /// every node (the others are told through `NOTIFY`). Erasing twice is erasing once.
    pub async fn erase(&self, subject: Uuid) -> Result<(), sqlx::Error> {
        let mut tx = self.inner.pool.begin().await?;
        sqlx::query(
            "INSERT INTO data_keys (subject, wrapped, erased_at) VALUES ($1, NULL, now())
             ON CONFLICT (subject) DO UPDATE SET wrapped = NULL,
                    erased_at = COALESCE(data_keys.erased_at, now())",
        )
        .bind(subject)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(subject.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.remember(subject, Entry::Erased);
        Ok(())
    }

    /// Forgets the keys other nodes erase, for the life of the process (reconnecting after a
    /// database outage, and then forgetting every key, since a notice may have been missed).
    pub async fn watch(self) {
        loop {
            if let Err(e) = self.listen().await {
                tracing::warn!(error = %e, "data key listener failed; reconnecting");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }

    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.inner.pool).await?;
        listener.listen(CHANNEL).await?;
        self.inner.cache.lock().expect("not poisoned").clear();
        loop {
            let notification = listener.recv().await?;
            if let Ok(subject) = notification.payload().parse() {
                self.remember(subject, Entry::Erased);
            }
        }
    }
}

/// Data keys resolved for sealing: seals without I/O.
pub struct Sealer {
    keys: HashMap<Uuid, Entry>,
    /// Seals nothing ([`DataKeys::unsealed`]).
    off: bool,
}

impl Sealer {
    /// Keys made in memory for `subjects` and stored nowhere: for tests of what decides.
    pub fn ephemeral(subjects: impl IntoIterator<Item = Uuid>) -> Self {
        let keys = subjects
            .into_iter()
            .map(|s| {
                (
                    s,
                    Entry::Live(Box::new(Aes256Gcm::new(&Key::<Aes256Gcm>::generate()))),
                )
            })
            .collect();
        Self { keys, off: false }
    }

    /// Seals the personal fields of `events` (those [`PERSONAL`] lists) before they are
    /// appended. Each event's person must be among those the sealer was made for.
    pub fn seal(&self, events: &mut [NewEvent]) -> Result<(), SealError> {
        if self.off {
            return Ok(());
        }
        for event in events {
            let Some((personal, mut payload)) = parsed(event)? else {
                continue;
            };
            let Some(subject) = subject_of(event, personal, &payload) else {
                // No one to seal for (a revision recorded before reviews named their author).
                continue;
            };
            let key = match self.keys.get(&subject) {
                Some(Entry::Live(key)) => key,
                Some(Entry::Erased) => return Err(SealError::Erased(subject)),
                None => {
                    return Err(SealError::Keys(KeyError::Integrity(format!(
                        "no data key was resolved for {subject}"
                    ))))
                }
            };
            let fields = payload
                .get_mut(personal.event_type)
                .and_then(Value::as_object_mut)
                .expect("parsed checked the event's fields");
            for name in personal.fields {
                if let Some(value) = fields.get_mut(*name) {
                    if let Value::String(text) = value {
                        *value = seal(key, subject, name, text);
                    }
                }
            }
            event.payload = payload.to_string();
        }
        Ok(())
    }
}

/// The personal fields `event` has, with its payload parsed; `None` if it has none.
fn parsed(event: &NewEvent) -> Result<Option<(&'static PersonalFields, Value)>, KeyError> {
    let Some(personal) = personal_fields(event.aggregate_type, &event.event_type) else {
        return Ok(None);
    };
    let payload: Value = serde_json::from_str(&event.payload)
        .map_err(|e| KeyError::Integrity(format!("an event to seal is not JSON: {e}")))?;
    let has_fields = payload
        .get(personal.event_type)
        .is_some_and(Value::is_object);
    Ok(has_fields.then_some((personal, payload)))
}

/// Whose personal fields `event`'s are.
fn subject_of(event: &NewEvent, personal: &PersonalFields, payload: &Value) -> Option<Uuid> {
    match personal.subject {
        Subject::Stream => event.aggregate_id.parse().ok(),
        Subject::Field(name) => payload
            .get(personal.event_type)?
            .get(name)?
            .as_str()?
            .parse()
            .ok(),
    }
}

/// Whether a stored payload's text may hold a sealed field. A text value that merely
/// mentions the word is escaped (`\"sealed\":`), so it cannot match.
fn looks_sealed(payload: &str) -> bool {
    payload.contains("{\"sealed\":\"")
}

/// A sealed value inside a stored JSON text, as [`seal`] writes it (compact):
/// `"<field>":{"sealed":"<subject>:<blob>"}`, from the `{` to the `}`.
struct Span<'a> {
    start: usize,
    end: usize,
    field: &'a str,
    subject: Uuid,
    blob: &'a str,
}

/// The sealed values in `text`, in order; `None` if one of them is not in the form [`seal`]
/// writes. (A sealed string holds a UUID, a colon and base64url: no quote, no escape.)
fn sealed_spans(text: &str) -> Option<Vec<Span<'_>>> {
    const MARKER: &str = "{\"sealed\":\"";
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(MARKER) {
        let start = from + found;
        let named = text[..start].strip_suffix("\":")?;
        let field = &named[named.rfind('"')? + 1..];
        let inner = start + MARKER.len();
        let length = text[inner..].find("\"}")?;
        let (subject, blob) = text[inner..inner + length].split_once(':')?;
        let end = inner + length + 2;
        spans.push(Span {
            start,
            end,
            field,
            subject: subject.parse().ok()?,
            blob,
        });
        from = end;
    }
    Some(spans)
}

/// `text` with each sealed value (see [`sealed_spans`]) replaced by its text, or [`ERASED`].
fn reveal_text(text: &str, entries: &HashMap<Uuid, Entry>) -> Result<String, KeyError> {
    let spans = sealed_spans(text)
        .ok_or_else(|| KeyError::Integrity("a sealed value is not as written".into()))?;
    let mut revealed = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        revealed.push_str(&text[at..span.start]);
        let plain = match entries.get(&span.subject) {
            Some(Entry::Live(key)) => open(key, span.subject, span.field, span.blob)?,
            _ => ERASED.to_owned(),
        };
        revealed.push_str(&Value::String(plain).to_string());
        at = span.end;
    }
    revealed.push_str(&text[at..]);
    Ok(revealed)
}

/// The sealed form of `text`.
fn seal(key: &Aes256Gcm, subject: Uuid, field: &str, text: &str) -> Value {
    let nonce = Nonce::<Aes256Gcm>::generate();
    let aad = associated(subject, field);
    let ciphertext = key
        .encrypt(
            &nonce,
            Payload {
                msg: text.as_bytes(),
                aad: &aad,
            },
        )
        .expect("AES-GCM encrypts any field of an event");
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&ciphertext);
    serde_json::json!({ "sealed": format!("{subject}:{}", URL_SAFE_NO_PAD.encode(blob)) })
}

/// What binds a sealed value to its person and field.
fn associated(subject: Uuid, field: &str) -> Vec<u8> {
    let mut aad = subject.as_bytes().to_vec();
    aad.extend_from_slice(field.as_bytes());
    aad
}

/// The person and sealed bytes of a sealed value (`{"sealed": "<uuid>:<base64>"}`).
fn sealed_parts(value: &Value) -> Option<(Uuid, &str)> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    let (subject, blob) = object.get("sealed")?.as_str()?.split_once(':')?;
    Some((subject.parse().ok()?, blob))
}

/// Calls `found` with the person of every sealed value inside `value`.
fn visit_sealed(value: &Value, found: &mut impl FnMut(Uuid)) {
    if let Some((subject, _)) = sealed_parts(value) {
        found(subject);
        return;
    }
    match value {
        Value::Object(fields) => fields.values().for_each(|v| visit_sealed(v, found)),
        Value::Array(items) => items.iter().for_each(|v| visit_sealed(v, found)),
        _ => {}
    }
}

/// Replaces every sealed value inside `value` (the field named `field`, if known) by its text.
fn reveal_in(
    value: &mut Value,
    field: Option<&str>,
    entries: &HashMap<Uuid, Entry>,
) -> Result<(), KeyError> {
    if let Some((subject, blob)) = sealed_parts(value) {
        let text = match entries.get(&subject) {
            Some(Entry::Live(key)) => open(key, subject, field.unwrap_or_default(), blob)?,
            _ => ERASED.to_owned(),
        };
        *value = Value::String(text);
        return Ok(());
    }
    match value {
        Value::Object(fields) => {
            for (name, inner) in fields.iter_mut() {
                reveal_in(inner, Some(name), entries)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                reveal_in(item, None, entries)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn open(key: &Aes256Gcm, subject: Uuid, field: &str, blob: &str) -> Result<String, KeyError> {
    let corrupt = || KeyError::Integrity(format!("a sealed {field} of {subject} does not open"));
    let bytes = URL_SAFE_NO_PAD.decode(blob).map_err(|_| corrupt())?;
    if bytes.len() < NONCE_BYTES {
        return Err(corrupt());
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| corrupt())?;
    let aad = associated(subject, field);
    let text = key
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| corrupt())?;
    String::from_utf8(text).map_err(|_| corrupt())
}

fn wrap(wrapping: &Aes256Gcm, subject: Uuid, key: &Key<Aes256Gcm>) -> Vec<u8> {
    let nonce = Nonce::<Aes256Gcm>::generate();
    let payload = Payload {
        msg: key.as_slice(),
        aad: subject.as_bytes(),
    };
    let mut wrapped = nonce.to_vec();
    wrapped.extend(wrapping.encrypt(&nonce, payload).expect("a key wraps"));
    wrapped
}

fn unwrap(wrapping: &Aes256Gcm, subject: Uuid, wrapped: &[u8]) -> Result<Aes256Gcm, KeyError> {
    let wrong = || {
        KeyError::Integrity(format!(
            "the data key of {subject} does not unwrap: the master key (DATA_KEY_FILE) is not the \
             one it was wrapped with, or the stored key was altered"
        ))
    };
    if wrapped.len() < NONCE_BYTES {
        return Err(wrong());
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_BYTES);
    let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| wrong())?;
    let payload = Payload {
        msg: sealed,
        aad: subject.as_bytes(),
    };
    let key = wrapping.decrypt(&nonce, payload).map_err(|_| wrong())?;
    Aes256Gcm::new_from_slice(&key).map_err(|_| wrong())
}

/// The master key: `configured` (checked against the fingerprint the database keeps of the key
/// its data keys are wrapped with), or the one the database keeps itself.
async fn master_key(pool: &PgPool, configured: Option<&MasterKey>) -> Result<MasterKey, KeyError> {
    const FINGERPRINT: &str = "parking master key fingerprint v1";
    let stored = || async {
        sqlx::query_as::<_, (Vec<u8>, Option<Vec<u8>>)>(
            "SELECT fingerprint, stored_key FROM data_master_key",
        )
        .fetch_optional(pool)
        .await
    };
    let candidate = match configured {
        Some(key) => key.clone(),
        None => MasterKey::generate(),
    };
    if stored().await?.is_none() {
        let kept = configured.is_none().then(|| candidate.to_hex());
        sqlx::query(
            "INSERT INTO data_master_key (fingerprint, stored_key)
             VALUES ($1, decode($2, 'hex')) ON CONFLICT DO NOTHING",
        )
        .bind(candidate.derive(FINGERPRINT).as_slice())
        .bind(kept)
        .execute(pool)
        .await?;
    }
    let (fingerprint, kept) = stored().await?.ok_or_else(|| {
        KeyError::Integrity("the master key's fingerprint could not be stored".into())
    })?;
    let master =
        match (configured, kept) {
            (Some(key), None) => key.clone(),
            (Some(_), Some(_)) => return Err(KeyError::Integrity(
                "this database keeps its own master key (it ran without DATA_KEY_FILE); its data \
                 keys must be re-wrapped before DATA_KEY_FILE can be used"
                    .into(),
            )),
            (None, Some(kept)) => {
                tracing::warn!(
                    "DATA_KEY_FILE unset: the master key of personal data is kept in the database \
                 itself (development only: set DATA_KEY_FILE in production)"
                );
                MasterKey::from_bytes(&kept).ok_or_else(|| {
                    KeyError::Integrity("the master key kept in the database is malformed".into())
                })?
            }
            (None, None) => {
                return Err(KeyError::Integrity(
                    "this database's data keys are wrapped by a key file: set DATA_KEY_FILE".into(),
                ))
            }
        };
    if master.derive(FINGERPRINT).as_slice() != fingerprint.as_slice() {
        return Err(KeyError::Integrity(
            "DATA_KEY_FILE is not the key this database's data keys were wrapped with".into(),
        ));
    }
    Ok(master)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::generate())
    }

    #[test]
    fn a_sealed_field_opens_with_its_key_person_and_field_only() {
        let (k, person) = (key(), Uuid::new_v4());
        let sealed = seal(&k, person, "email", "ada@example.com");
        let (subject, blob) = sealed_parts(&sealed).unwrap();
        assert_eq!(subject, person);
        // The whole address, not a fragment of it: three letters may come up in the random
        // ciphertext or the subject's hex digits.
        assert!(!sealed.to_string().contains("ada@example"));
        assert_eq!(open(&k, person, "email", blob).unwrap(), "ada@example.com");
        assert!(open(&k, person, "full_name", blob).is_err());
        assert!(open(&k, Uuid::new_v4(), "email", blob).is_err());
        assert!(open(&key(), person, "email", blob).is_err());
        // Two seals of one text differ (fresh nonces).
        assert_ne!(sealed, seal(&k, person, "email", "ada@example.com"));
    }

    #[test]
    fn revealing_gives_the_text_or_erased() {
        let (k, alive, gone) = (key(), Uuid::new_v4(), Uuid::new_v4());
        let mut payload = serde_json::json!({"BookingCreated": {
            "user_id": alive,
            "vehicle_number": seal(&k, alive, "vehicle_number", "AB-123"),
            "other": {"vehicle_number": seal(&k, gone, "vehicle_number", "XY-9")},
        }});
        assert!(looks_sealed(&payload.to_string()));
        let entries = HashMap::from([(alive, Entry::Live(Box::new(k))), (gone, Entry::Erased)]);
        reveal_in(&mut payload, None, &entries).unwrap();
        let fields = &payload["BookingCreated"];
        assert_eq!(fields["vehicle_number"], "AB-123");
        assert_eq!(fields["other"]["vehicle_number"], ERASED);
        assert!(!looks_sealed(&payload.to_string()));
    }

    #[test]
    fn a_stored_text_is_revealed_as_its_tree_would_be() {
        let (k, alive, gone) = (key(), Uuid::new_v4(), Uuid::new_v4());
        let payload = serde_json::json!({"ReviewSubmitted": {
            "user_id": alive,
            "comment": seal(&k, alive, "comment", "a \"quoted\" \\ word, and é"),
            "other": {"comment": seal(&k, gone, "comment", "gone")},
        }});
        let entries = HashMap::from([(alive, Entry::Live(Box::new(k))), (gone, Entry::Erased)]);
        let text = reveal_text(&payload.to_string(), &entries).unwrap();
        let mut tree = payload.clone();
        reveal_in(&mut tree, None, &entries).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), tree);
        assert_eq!(
            tree["ReviewSubmitted"]["comment"],
            "a \"quoted\" \\ word, and é"
        );
        // Not as `seal` writes it: left to the tree.
        assert!(sealed_spans("{\"comment\": {\"sealed\":\"x\"}}").is_none());
    }

    #[test]
    fn text_that_mentions_sealed_is_not_taken_for_a_sealed_field() {
        let comment = serde_json::json!({"comment": "{\"sealed\":\"x\"}"}).to_string();
        assert!(!looks_sealed(&comment));
    }

    #[test]
    fn a_wrapped_key_unwraps_only_under_its_master_and_person() {
        let (master, other) = (key(), key());
        let person = Uuid::new_v4();
        let data = Key::<Aes256Gcm>::generate();
        let wrapped = wrap(&master, person, &data);
        let unwrapped = unwrap(&master, person, &wrapped).unwrap();
        let sealed = seal(&unwrapped, person, "comment", "fine");
        let (_, blob) = sealed_parts(&sealed).unwrap();
        assert_eq!(
            open(&Aes256Gcm::new(&data), person, "comment", blob).unwrap(),
            "fine"
        );
        assert!(unwrap(&other, person, &wrapped).is_err());
        assert!(unwrap(&master, Uuid::new_v4(), &wrapped).is_err());
    }

    #[test]
    fn every_listed_event_names_its_fields_once() {
        for p in PERSONAL {
            assert!(!p.fields.is_empty());
            assert_eq!(
                PERSONAL
                    .iter()
                    .filter(|q| q.aggregate_type == p.aggregate_type && q.event_type == p.event_type)
                    .count(),
                1
            );
        }
        assert!(may_be_sealed("booking") && !may_be_sealed("slot"));
    }
}
