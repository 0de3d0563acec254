//! From one classification per frame to a slot's state: hysteresis over frames, so that one bad
//! frame (a person walking by, a headlight's glare, a dropped frame) flips nothing.
//!
//! Each frame's probability that the slot is occupied is a vote: occupied at or above
//! `occupied_from`, free at or below `free_up_to`, no vote in between. The state changes only
//! after `frames` votes in a row for the other state; an unsure frame or a vote for the current
//! state starts the count over. The first state is taken the same way.

/// How sure, and for how long, a change must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    pub occupied_from: f32,
    pub free_up_to: f32,
    pub frames: u32,
}

impl Default for Hysteresis {
    /// Sure at 0.7 either way, for 3 frames in a row.
    fn default() -> Self {
        Self {
            occupied_from: 0.7,
            free_up_to: 0.3,
            frames: 3,
        }
    }
}

/// A slot's state as the frames have settled it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotState {
    occupied: Option<bool>,
    /// The state the latest votes call for, how many in a row, and their summed confidence.
    streak: Option<(bool, u32, f32)>,
}

/// A settled change of a slot's state: what to report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub occupied: bool,
    /// The mean confidence of the votes that settled it (of `occupied` being right), 0.5 to 1.
    pub confidence: f32,
}

impl SlotState {
    /// The state settled so far, if any.
    pub fn occupied(&self) -> Option<bool> {
        self.occupied
    }

    /// Takes one frame's probability that the slot is occupied; returns the change it settles,
    /// if it settles one.
    pub fn observe(&mut self, p_occupied: f32, rule: &Hysteresis) -> Option<Change> {
        let vote = if p_occupied >= rule.occupied_from {
            Some((true, p_occupied))
        } else if p_occupied <= rule.free_up_to {
            Some((false, 1.0 - p_occupied))
        } else {
            None
        };
        let Some((says, confidence)) = vote.filter(|(says, _)| Some(*says) != self.occupied) else {
            self.streak = None;
            return None;
        };
        let (count, sum) = match self.streak {
            Some((same, count, sum)) if same == says => (count + 1, sum + confidence),
            _ => (1, confidence),
        };
        if count >= rule.frames.max(1) {
            self.occupied = Some(says);
            self.streak = None;
            return Some(Change {
                occupied: says,
                confidence: sum / count as f32,
            });
        }
        self.streak = Some((says, count, sum));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changes `probabilities` settle, with the frame each settles at.
    fn changes(probabilities: &[f32], rule: &Hysteresis) -> Vec<(usize, bool)> {
        let mut slot = SlotState::default();
        probabilities
            .iter()
            .enumerate()
            .filter_map(|(frame, p)| slot.observe(*p, rule).map(|c| (frame, c.occupied)))
            .collect()
    }

    #[test]
    fn a_change_settles_after_enough_sure_frames_in_a_row() {
        let rule = Hysteresis::default();
        let frames = [0.1, 0.1, 0.1, 0.9, 0.95, 0.9, 0.9, 0.2, 0.1, 0.05];
        assert_eq!(changes(&frames, &rule), [(2, false), (5, true), (9, false)]);
    }

    #[test]
    fn one_bad_frame_flips_nothing() {
        let rule = Hysteresis::default();
        let frames = [0.9, 0.9, 0.9, 0.1, 0.9, 0.05, 0.9, 0.5, 0.9];
        assert_eq!(changes(&frames, &rule), [(2, true)]);
    }

    #[test]
    fn unsure_frames_start_the_count_over() {
        let rule = Hysteresis::default();
        let frames = [0.9, 0.9, 0.5, 0.9, 0.9, 0.9];
        assert_eq!(changes(&frames, &rule), [(5, true)]);
    }

    #[test]
    fn the_confidence_is_the_mean_of_the_settling_votes() {
        let rule = Hysteresis {
            frames: 2,
            ..Hysteresis::default()
        };
        let mut slot = SlotState::default();
        assert_eq!(slot.observe(0.2, &rule), None);
        let change = slot.observe(0.0, &rule).unwrap();
        assert!(!change.occupied);
        assert!((change.confidence - 0.9).abs() < 1e-6);
        assert_eq!(slot.occupied(), Some(false));
    }
}
