//! Safety reviews: how safe a lot feels to the drivers who parked there.
//!
//! One stream per (lot, driver), named by [`review_id_for`]: a driver has one review of a lot,
//! which they may revise (each revision is an event, so the history keeps every version), and
//! which an admin may remove with a reason. Whether the driver may review the lot at all (a
//! booking there that was neither cancelled nor expired) is checked by the command layer on
//! the event store and arrives in the command.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{RuleError, Violation};

/// The longest comment, in characters.
pub const MAX_COMMENT: usize = 2000;
/// The longest removal reason, in characters.
pub const MAX_REASON: usize = 500;

/// The review stream of `user_id` about `lot_id`.
pub fn review_id_for(lot_id: Uuid, user_id: Uuid) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x0b7e_5a61_93c2_4f0d_8e14_c2a9_5d3b_7f60);
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(lot_id.as_bytes());
    name[16..].copy_from_slice(user_id.as_bytes());
    Uuid::new_v5(&NAMESPACE, &name)
}

/// Four ratings, each 1 (feels unsafe) to 5 (feels safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratings {
    pub safety: u8,
    pub lighting: u8,
    pub security: u8,
    pub cleanliness: u8,
}

impl Ratings {
    /// The ratings, if each is 1 to 5.
    pub fn new(
        safety: i64,
        lighting: i64,
        security: i64,
        cleanliness: i64,
    ) -> Result<Self, ReviewError> {
        let rating = |value: i64| {
            u8::try_from(value)
                .ok()
                .filter(|v| (1..=5).contains(v))
                .ok_or(ReviewError::InvalidRating)
        };
        Ok(Self {
            safety: rating(safety)?,
            lighting: rating(lighting)?,
            security: rating(security)?,
            cleanliness: rating(cleanliness)?,
        })
    }
}

/// A comment as given: at most [`MAX_COMMENT`] characters, no control characters (line
/// breaks and tabs included), surrounding spaces trimmed; blank means none.
pub fn comment(raw: Option<&str>) -> Result<Option<String>, ReviewError> {
    match raw.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(text) => crate::text::single_line(text, MAX_COMMENT)
            .map(Some)
            .ok_or(ReviewError::InvalidComment),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReviewCommand {
    /// The driver's review of the lot: the first, or a revision.
    Submit {
        lot_id: Uuid,
        user_id: Uuid,
        ratings: Ratings,
        comment: Option<String>,
        /// The driver has a booking at the lot that was neither cancelled nor expired.
        has_booked: bool,
        at: DateTime<Utc>,
    },
    /// An admin takes the review down.
    Remove {
        by: Uuid,
        reason: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReviewEvent {
    ReviewSubmitted {
        lot_id: Uuid,
        user_id: Uuid,
        ratings: Ratings,
        comment: Option<String>,
        at: DateTime<Utc>,
    },
    ReviewRevised {
        ratings: Ratings,
        comment: Option<String>,
        at: DateTime<Utc>,
        /// The reviewer, whose key seals the comment (absent from revisions recorded before
        /// personal data was sealed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<Uuid>,
    },
    ReviewRemoved {
        by: Uuid,
        reason: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ReviewEvent {
    fn event_type(&self) -> String {
        match self {
            ReviewEvent::ReviewSubmitted { .. } => "ReviewSubmitted",
            ReviewEvent::ReviewRevised { .. } => "ReviewRevised",
            ReviewEvent::ReviewRemoved { .. } => "ReviewRemoved",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("each rating is a whole number from 1 to 5")]
    InvalidRating,
    #[error("a comment is at most 2000 characters, without control characters")]
    InvalidComment,
    #[error("only a driver with a booking at this lot (not cancelled nor expired) may review it")]
    NoBookingAtLot,
    #[error("there is no such review")]
    NotFound,
    #[error("a removal needs a reason of 1 to 500 characters, without control characters")]
    InvalidReason,
}

impl RuleError for ReviewError {
    fn code(&self) -> &'static str {
        match self {
            ReviewError::InvalidRating => "invalid_rating",
            ReviewError::InvalidComment => "invalid_comment",
            ReviewError::NoBookingAtLot => "no_booking_at_lot",
            ReviewError::NotFound => "review_not_found",
            ReviewError::InvalidReason => "invalid_reason",
        }
    }

    fn violation(&self) -> Violation {
        match self {
            ReviewError::InvalidRating
            | ReviewError::InvalidComment
            | ReviewError::InvalidReason => Violation::Invalid,
            ReviewError::NoBookingAtLot => Violation::Forbidden,
            ReviewError::NotFound => Violation::NotFound,
        }
    }
}

/// A review as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewState {
    pub lot_id: Uuid,
    pub user_id: Uuid,
    pub ratings: Ratings,
    pub comment: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Taken down by an admin: it no longer counts.
    pub removed: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub state: Option<ReviewState>,
}

impl Aggregate for Review {
    const TYPE: &'static str = "review";
    type Command = ReviewCommand;
    type Event = ReviewEvent;
    type Error = ReviewError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            ReviewCommand::Submit {
                lot_id,
                user_id,
                ratings,
                comment,
                has_booked,
                at,
            } => {
                if !has_booked {
                    return Err(ReviewError::NoBookingAtLot);
                }
                match &self.state {
                    // A review that stands is revised; a removed one is replaced by a new one.
                    Some(review) if !review.removed => ReviewEvent::ReviewRevised {
                        ratings,
                        comment,
                        at,
                        user_id: Some(review.user_id),
                    },
                    _ => ReviewEvent::ReviewSubmitted {
                        lot_id,
                        user_id,
                        ratings,
                        comment,
                        at,
                    },
                }
            }
            ReviewCommand::Remove { by, reason, at } => {
                if self.state.as_ref().is_none_or(|r| r.removed) {
                    return Err(ReviewError::NotFound);
                }
                let reason = crate::text::single_line(&reason, MAX_REASON)
                    .ok_or(ReviewError::InvalidReason)?;
                ReviewEvent::ReviewRemoved { by, reason, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ReviewEvent::ReviewSubmitted {
                lot_id,
                user_id,
                ratings,
                comment,
                at,
            } => {
                self.state = Some(ReviewState {
                    lot_id,
                    user_id,
                    ratings,
                    comment,
                    submitted_at: at,
                    updated_at: at,
                    removed: false,
                });
            }
            ReviewEvent::ReviewRevised {
                ratings,
                comment,
                at,
                ..
            } => {
                if let Some(review) = &mut self.state {
                    review.ratings = ratings;
                    review.comment = comment;
                    review.updated_at = at;
                }
            }
            ReviewEvent::ReviewRemoved { at, .. } => {
                if let Some(review) = &mut self.state {
                    review.removed = true;
                    review.updated_at = at;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type ReviewTest = TestFramework<Review>;

    fn at() -> DateTime<Utc> {
        "2030-01-01T10:00:00Z".parse().unwrap()
    }

    fn ratings(all: i64) -> Ratings {
        Ratings::new(all, all, all, all).unwrap()
    }

    fn submit(all: i64, has_booked: bool) -> ReviewCommand {
        ReviewCommand::Submit {
            lot_id: Uuid::nil(),
            user_id: Uuid::max(),
            ratings: ratings(all),
            comment: Some("well lit".to_owned()),
            has_booked,
            at: at(),
        }
    }

    fn submitted(all: i64) -> ReviewEvent {
        ReviewEvent::ReviewSubmitted {
            lot_id: Uuid::nil(),
            user_id: Uuid::max(),
            ratings: ratings(all),
            comment: Some("well lit".to_owned()),
            at: at(),
        }
    }

    #[test]
    fn ratings_are_one_to_five_and_comments_plain_text() {
        assert!(Ratings::new(1, 5, 3, 2).is_ok());
        assert_eq!(Ratings::new(0, 5, 3, 2), Err(ReviewError::InvalidRating));
        assert_eq!(Ratings::new(1, 6, 3, 2), Err(ReviewError::InvalidRating));
        assert_eq!(comment(Some("  ")), Ok(None));
        assert_eq!(
            comment(Some(" <b>\"safe\"</b> ")),
            Ok(Some("<b>\"safe\"</b>".into()))
        );
        assert_eq!(comment(Some("a\u{7}b")), Err(ReviewError::InvalidComment));
        assert_eq!(
            comment(Some("two\nlines")),
            Err(ReviewError::InvalidComment)
        );
        assert!(comment(Some(&"x".repeat(MAX_COMMENT))).is_ok());
        assert_eq!(
            comment(Some(&"x".repeat(MAX_COMMENT + 1))),
            Err(ReviewError::InvalidComment)
        );
    }

    #[test]
    fn a_driver_reviews_once_then_revises() {
        ReviewTest::with(())
            .given_no_previous_events()
            .when(submit(4, true))
            .then_expect_events(vec![submitted(4)]);
        ReviewTest::with(())
            .given(vec![submitted(4)])
            .when(submit(2, true))
            .then_expect_events(vec![ReviewEvent::ReviewRevised {
                ratings: ratings(2),
                comment: Some("well lit".to_owned()),
                at: at(),
                user_id: Some(Uuid::max()),
            }]);
    }

    #[test]
    fn only_a_driver_who_booked_there_may_review() {
        ReviewTest::with(())
            .given_no_previous_events()
            .when(submit(4, false))
            .then_expect_error(ReviewError::NoBookingAtLot);
    }

    #[test]
    fn a_removal_needs_a_standing_review_and_a_reason() {
        let remove = |reason: &str| ReviewCommand::Remove {
            by: Uuid::nil(),
            reason: reason.to_owned(),
            at: at(),
        };
        ReviewTest::with(())
            .given_no_previous_events()
            .when(remove("spam"))
            .then_expect_error(ReviewError::NotFound);
        ReviewTest::with(())
            .given(vec![submitted(4)])
            .when(remove("  "))
            .then_expect_error(ReviewError::InvalidReason);
        let removed = ReviewEvent::ReviewRemoved {
            by: Uuid::nil(),
            reason: "spam".to_owned(),
            at: at(),
        };
        ReviewTest::with(())
            .given(vec![submitted(4)])
            .when(remove(" spam "))
            .then_expect_events(vec![removed.clone()]);
        // Removed, a new review starts over.
        ReviewTest::with(())
            .given(vec![submitted(4), removed])
            .when(submit(5, true))
            .then_expect_events(vec![submitted(5)]);
    }

    #[test]
    fn review_ids_name_one_lot_and_one_driver() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(review_id_for(a, b), review_id_for(a, b));
        assert_ne!(review_id_for(a, b), review_id_for(b, a));
    }
}
