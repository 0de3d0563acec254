//! Safety reviews: each driver's review of a lot as it stands (`rm_reviews`), every version of
//! them (`rm_review_history`), and each lot's sums over its standing reviews
//! (`rm_lot_ratings`), which give the lot's averages, its `average_rating` and its sort.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::EventEnvelope;
use parking_domain::personal::ERASED;
use parking_domain::review::{Ratings, Review, ReviewEvent};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::model::Projection;
use crate::page::{Page, PageRequest};
use crate::{aggregate_uuid, occurred_at};

pub struct ReviewsProjection;

/// A review's row before an event: its version, and what it added to its lot's sums.
#[derive(sqlx::FromRow)]
struct Standing {
    version: i64,
    lot_id: Uuid,
    user_id: Uuid,
    removed: bool,
    safety: i16,
    lighting: i16,
    security: i16,
    cleanliness: i16,
}

/// Adds `sign` times `ratings` (one review) to the lot's sums.
async fn count(
    db: &mut PgConnection,
    lot_id: Uuid,
    sign: i64,
    ratings: [i16; 4],
) -> Result<(), sqlx::Error> {
    let [safety, lighting, security, cleanliness] = ratings.map(|r| sign * i64::from(r));
    sqlx::query(
        "INSERT INTO rm_lot_ratings (lot_id, reviews, safety, lighting, security, cleanliness)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (lot_id) DO UPDATE SET
             reviews = rm_lot_ratings.reviews + EXCLUDED.reviews,
             safety = rm_lot_ratings.safety + EXCLUDED.safety,
             lighting = rm_lot_ratings.lighting + EXCLUDED.lighting,
             security = rm_lot_ratings.security + EXCLUDED.security,
             cleanliness = rm_lot_ratings.cleanliness + EXCLUDED.cleanliness",
    )
    .bind(lot_id)
    .bind(sign)
    .bind(safety)
    .bind(lighting)
    .bind(security)
    .bind(cleanliness)
    .execute(db)
    .await?;
    Ok(())
}

fn four(r: &Ratings) -> [i16; 4] {
    [r.safety, r.lighting, r.security, r.cleanliness].map(i16::from)
}

#[async_trait]
impl Projection<Review> for ReviewsProjection {
    fn name(&self) -> &'static str {
        "reviews"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_reviews", "rm_review_history", "rm_lot_ratings"]
    }

    fn holds_personal_data(&self) -> bool {
        true
    }

    /// The comments of the person's reviews, every version of them.
    async fn erase(&self, db: &mut PgConnection, person: Uuid) -> Result<(), sqlx::Error> {
        for table in ["rm_reviews", "rm_review_history"] {
            sqlx::query(&format!(
                "UPDATE {table} SET comment = $2 WHERE user_id = $1 AND comment IS NOT NULL"
            ))
            .bind(person)
            .bind(ERASED)
            .execute(&mut *db)
            .await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &EventEnvelope<Review>,
    ) -> Result<(), sqlx::Error> {
        let id = aggregate_uuid(event)?;
        let version = event.sequence as i64;
        let at = occurred_at(event)?;
        let before: Option<Standing> = sqlx::query_as(
            "SELECT version, lot_id, user_id, removed, safety, lighting, security, cleanliness
               FROM rm_reviews WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *db)
        .await?;
        if before.as_ref().is_some_and(|b| b.version >= version) {
            return Ok(()); // applied already
        }
        // Take the review's previous contribution off its lot's sums.
        if let Some(b) = before.as_ref().filter(|b| !b.removed) {
            let old = [b.safety, b.lighting, b.security, b.cleanliness];
            count(db, b.lot_id, -1, old).await?;
        }
        // What the review says after the event: (lot, driver) and its ratings and comment,
        // or nothing once removed.
        let (kind, said, reason) = match &event.payload {
            ReviewEvent::ReviewSubmitted {
                lot_id,
                user_id,
                ratings,
                comment,
                ..
            } => (
                "submitted",
                Some((*lot_id, *user_id, ratings, comment)),
                None,
            ),
            ReviewEvent::ReviewRevised {
                ratings, comment, ..
            } => {
                let Some(b) = &before else {
                    return Err(sqlx::Error::Decode(
                        format!("review {id} revised before it was submitted").into(),
                    ));
                };
                (
                    "revised",
                    Some((b.lot_id, b.user_id, ratings, comment)),
                    None,
                )
            }
            ReviewEvent::ReviewRemoved { reason, .. } => ("removed", None, Some(reason.clone())),
        };
        match said {
            Some((lot_id, user_id, ratings, comment)) => {
                let [s, l, se, c] = four(ratings);
                sqlx::query(
                    "INSERT INTO rm_reviews (id, lot_id, user_id, safety, lighting, security,
                        cleanliness, comment, removed, created_at, updated_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, $9, $9, $10)
                     ON CONFLICT (id) DO UPDATE SET
                        safety = EXCLUDED.safety, lighting = EXCLUDED.lighting,
                        security = EXCLUDED.security, cleanliness = EXCLUDED.cleanliness,
                        comment = EXCLUDED.comment, removed = false,
                        created_at = CASE WHEN $11 THEN EXCLUDED.created_at
                                          ELSE rm_reviews.created_at END,
                        updated_at = EXCLUDED.updated_at, version = EXCLUDED.version",
                )
                .bind(id)
                .bind(lot_id)
                .bind(user_id)
                .bind(s)
                .bind(l)
                .bind(se)
                .bind(c)
                .bind(comment)
                .bind(at)
                .bind(version)
                .bind(kind == "submitted")
                .execute(&mut *db)
                .await?;
                count(db, lot_id, 1, four(ratings)).await?;
            }
            None => {
                sqlx::query(
                    "UPDATE rm_reviews SET removed = true, updated_at = $2, version = $3
                      WHERE id = $1",
                )
                .bind(id)
                .bind(at)
                .bind(version)
                .execute(&mut *db)
                .await?;
            }
        }
        let (ratings, comment) = match said {
            Some((_, _, ratings, comment)) => (Some(ratings), comment.clone()),
            None => (None, None),
        };
        let [s, l, se, c] = ratings.map(four).map_or([None; 4], |r| r.map(Some));
        sqlx::query(
            "INSERT INTO rm_review_history (review_id, version, lot_id, user_id, kind, safety,
                lighting, security, cleanliness, comment, reason, at)
             SELECT $1, $2, r.lot_id, r.user_id, $3, $4, $5, $6, $7, $8, $9, $10
               FROM rm_reviews r WHERE r.id = $1
             ON CONFLICT (review_id, version) DO NOTHING",
        )
        .bind(id)
        .bind(version)
        .bind(kind)
        .bind(s)
        .bind(l)
        .bind(se)
        .bind(c)
        .bind(comment)
        .bind(reason)
        .bind(at)
        .execute(&mut *db)
        .await?;
        Ok(())
    }
}

/// A lot's safety as its drivers rate it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Safety {
    pub lot_id: Uuid,
    /// Reviews that stand (not removed).
    pub review_count: i64,
    /// Means of each category over those reviews, 1 to 5; `null` without reviews.
    pub safety_rating: Option<f64>,
    pub lighting_rating: Option<f64>,
    pub security_rating: Option<f64>,
    pub cleanliness_rating: Option<f64>,
    /// The mean of the four, 1 to 5: the lot's `average_rating`; `null` without reviews.
    pub overall: Option<f64>,
    /// 0 to 100: the mean of the lot's cameras' latest lighting scores, as the vision worker
    /// measures them, one decimal; `null` until a camera has reported one.
    pub ai_safety_score: Option<f64>,
}

pub async fn safety(pool: &PgPool, lot_id: Uuid) -> Result<Safety, sqlx::Error> {
    sqlx::query_as(
        "SELECT $1::uuid AS lot_id, COALESCE(r.reviews, 0) AS review_count,
                r.safety::float8 / NULLIF(r.reviews, 0) AS safety_rating,
                r.lighting::float8 / NULLIF(r.reviews, 0) AS lighting_rating,
                r.security::float8 / NULLIF(r.reviews, 0) AS security_rating,
                r.cleanliness::float8 / NULLIF(r.reviews, 0) AS cleanliness_rating,
                (r.safety + r.lighting + r.security + r.cleanliness)::float8
                    / NULLIF(4 * r.reviews, 0) AS overall,
                (SELECT round(avg(score)::numeric, 1)::float8 FROM rm_camera_lighting
                  WHERE lot_id = $1) AS ai_safety_score
           FROM (SELECT 1) one
           LEFT JOIN rm_lot_ratings r ON r.lot_id = $1",
    )
    .bind(lot_id)
    .fetch_one(pool)
    .await
}

/// One version of a review, as the public history shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReviewVersion {
    /// The review (one per driver and lot); its versions share it.
    #[serde(skip)]
    pub review_id: Uuid,
    /// The event's sequence in the review's stream: it grows with each revision.
    pub version: i64,
    /// `submitted` or `revised`.
    pub kind: String,
    pub safety_rating: i16,
    pub lighting_rating: i16,
    pub security_rating: i16,
    pub cleanliness_rating: i16,
    /// As the driver wrote it.
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub user_id: Uuid,
}

/// The versions of the lot's reviews that stand, newest first. A removed review is taken out
/// of the history with all its versions, and stays out should its driver review the lot again
/// (the events keep them, for audit).
pub async fn history(
    pool: &PgPool,
    lot_id: Uuid,
    page: PageRequest,
) -> Result<Page<ReviewVersion>, sqlx::Error> {
    let items = sqlx::query_as(
        "SELECT h.review_id, h.version, h.kind, h.safety AS safety_rating,
                h.lighting AS lighting_rating, h.security AS security_rating,
                h.cleanliness AS cleanliness_rating, h.comment, h.at, h.user_id
           FROM rm_review_history h
           JOIN rm_reviews r ON r.id = h.review_id AND NOT r.removed
          WHERE h.lot_id = $1 AND h.kind <> 'removed'
            AND NOT EXISTS (SELECT 1 FROM rm_review_history x
                             WHERE x.review_id = h.review_id AND x.kind = 'removed'
                               AND x.version > h.version)
          ORDER BY h.at DESC, h.review_id, h.version DESC
          LIMIT $2 OFFSET $3",
    )
    .bind(lot_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(
        "SELECT count(*) FROM rm_review_history h
           JOIN rm_reviews r ON r.id = h.review_id AND NOT r.removed
          WHERE h.lot_id = $1 AND h.kind <> 'removed'
            AND NOT EXISTS (SELECT 1 FROM rm_review_history x
                             WHERE x.review_id = h.review_id AND x.kind = 'removed'
                               AND x.version > h.version)",
    )
    .bind(lot_id)
    .fetch_one(pool)
    .await?;
    Ok(Page::new(items, page, total))
}
