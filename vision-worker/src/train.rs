//! Training and evaluating the classifier (`parking-vision train`, `parking-vision eval`).
//!
//! Crops come from the synthetic generator (`synth`) and from folders of labelled crops in the
//! PKLot / CNRPark layout: any image under a folder named `Empty` (or `free`) is a free slot,
//! under `Occupied` (or `busy`) an occupied one, at any depth, so a camera's own crops can be
//! added to fine-tune the shipped weights. Everything random (the synthetic crops, the
//! starting weights, the order of the crops, their flips) comes from one seed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::model::{Classifier, ModelError, Trainable, INPUT};
use crate::synth::Generator;

/// One labelled crop, `INPUT × INPUT` RGB, and the group it is reported under (a synthetic
/// crop's condition; a folder crop's `folder`).
#[derive(Debug, Clone)]
pub struct Sample {
    pub rgb: Vec<u8>,
    pub occupied: bool,
    pub group: &'static str,
}

/// Why crops cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an image that can be read: {source}")]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{0} holds no images under Empty/ or Occupied/ folders")]
    NoImages(PathBuf),
}

/// `count` synthetic crops drawn from `seed`.
pub fn synthetic(seed: u64, count: usize) -> Vec<Sample> {
    let mut generator = Generator::new(seed, INPUT);
    (0..count)
        .map(|_| {
            let crop = generator.next_crop();
            Sample {
                rgb: crop.rgb,
                occupied: crop.occupied,
                group: crop.condition.name(),
            }
        })
        .collect()
}

/// Every labelled image under `root`, resized to the classifier's square, in path order.
pub fn folder(root: &Path) -> Result<Vec<Sample>, DataError> {
    let mut found = Vec::new();
    walk(root, None, &mut found)?;
    found.sort();
    if found.is_empty() {
        return Err(DataError::NoImages(root.to_owned()));
    }
    found
        .into_iter()
        .map(|(path, occupied)| {
            let image = image::open(&path).map_err(|source| DataError::Image {
                path: path.clone(),
                source,
            })?;
            Ok(Sample {
                rgb: square(&image.to_rgb8()),
                occupied,
                group: "folder",
            })
        })
        .collect()
}

/// An image resized to `INPUT × INPUT` RGB bytes.
pub fn square(image: &image::RgbImage) -> Vec<u8> {
    if image.dimensions() == (INPUT as u32, INPUT as u32) {
        return image.as_raw().clone();
    }
    image::imageops::resize(
        image,
        INPUT as u32,
        INPUT as u32,
        image::imageops::FilterType::Triangle,
    )
    .into_raw()
}

/// The label a folder's name gives what is under it.
fn label(name: &str) -> Option<bool> {
    match name.to_ascii_lowercase().as_str() {
        "empty" | "free" => Some(false),
        "occupied" | "busy" => Some(true),
        _ => None,
    }
}

fn walk(
    dir: &Path,
    occupied: Option<bool>,
    found: &mut Vec<(PathBuf, bool)>,
) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            walk(&path, label(name).or(occupied), found)?;
        } else if let Some(occupied) = occupied.filter(|_| crate::stream::is_image(&path)) {
            found.push((path, occupied));
        }
    }
    Ok(())
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub seed: u64,
    pub epochs: usize,
    pub batch: usize,
    /// The first step's learning rate; it falls linearly to a twentieth of it by the last.
    pub learning_rate: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            epochs: 6,
            batch: 64,
            learning_rate: 2e-3,
        }
    }
}

/// What an epoch did, for the progress lines.
#[derive(Debug, Clone)]
pub struct Epoch {
    pub number: usize,
    pub mean_loss: f32,
    pub seconds: f64,
    /// Accuracy on the validation crops after this epoch.
    pub validation: Confusion,
}

/// Trains `model` on `samples` (shuffled and randomly flipped every epoch), reporting each
/// epoch's loss and accuracy on `validation`.
pub fn train(
    model: &Trainable,
    samples: &[Sample],
    validation: &[Sample],
    options: &TrainOptions,
    mut progress: impl FnMut(&Epoch),
) -> Result<(), ModelError> {
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x5eed_7a1e);
    let params = ParamsAdamW {
        lr: options.learning_rate,
        weight_decay: 1e-4,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(model.vars(), params)?;
    let steps_per_epoch = samples.len().div_ceil(options.batch);
    let total_steps = (steps_per_epoch * options.epochs).max(1);
    let mut order: Vec<usize> = (0..samples.len()).collect();
    let mut step = 0;
    for number in 1..=options.epochs {
        let started = Instant::now();
        order.shuffle(&mut rng);
        let mut loss_sum = 0f32;
        for chunk in order.chunks(options.batch) {
            let flipped: Vec<Vec<u8>> = chunk
                .iter()
                .map(|&i| flip(&samples[i].rgb, rng.random_range(0..4)))
                .collect();
            let crops: Vec<&[u8]> = flipped.iter().map(Vec::as_slice).collect();
            let labels: Vec<bool> = chunk.iter().map(|&i| samples[i].occupied).collect();
            let progress_made = step as f64 / total_steps as f64;
            optimizer.set_learning_rate(options.learning_rate * (1.0 - 0.95 * progress_made));
            let loss = model.loss(&crops, &labels)?;
            optimizer.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? * chunk.len() as f32;
            step += 1;
        }
        let report = evaluate(&model.classifier(), validation)?;
        progress(&Epoch {
            number,
            mean_loss: loss_sum / samples.len().max(1) as f32,
            seconds: started.elapsed().as_secs_f64(),
            validation: report.overall,
        });
    }
    Ok(())
}

/// A crop as is (`0`), mirrored left to right (`1`), top to bottom (`2`) or turned half round
/// (`3`): a slot looks the same from either end or side.
fn flip(rgb: &[u8], how: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len());
    for y in 0..INPUT {
        let sy = if how & 2 != 0 { INPUT - 1 - y } else { y };
        for x in 0..INPUT {
            let sx = if how & 1 != 0 { INPUT - 1 - x } else { x };
            let at = (sy * INPUT + sx) * 3;
            out.extend_from_slice(&rgb[at..at + 3]);
        }
    }
    out
}

/// Counts of right and wrong answers, occupied being the positive class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    pub true_occupied: u64,
    pub false_occupied: u64,
    pub true_free: u64,
    pub false_free: u64,
}

impl Confusion {
    fn add(&mut self, occupied: bool, said_occupied: bool) {
        match (occupied, said_occupied) {
            (true, true) => self.true_occupied += 1,
            (false, true) => self.false_occupied += 1,
            (false, false) => self.true_free += 1,
            (true, false) => self.false_free += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.true_occupied + self.false_occupied + self.true_free + self.false_free
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.true_occupied + self.true_free, self.total())
    }

    /// Of the crops called occupied, how many were.
    pub fn precision(&self) -> f64 {
        ratio(self.true_occupied, self.true_occupied + self.false_occupied)
    }

    /// Of the occupied crops, how many were called occupied.
    pub fn recall(&self) -> f64 {
        ratio(self.true_occupied, self.true_occupied + self.false_free)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The classifier's answers on a set of crops: overall and per group.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub overall: Confusion,
    pub by_group: BTreeMap<&'static str, Confusion>,
}

/// Classifies `samples` (a probability of 0.5 or more says occupied) and counts the answers.
pub fn evaluate(classifier: &Classifier, samples: &[Sample]) -> Result<Report, ModelError> {
    let mut report = Report::default();
    for chunk in samples.chunks(256) {
        let crops: Vec<&[u8]> = chunk.iter().map(|s| s.rgb.as_slice()).collect();
        for (sample, p) in chunk.iter().zip(classifier.classify(&crops)?) {
            let said = p >= 0.5;
            report.overall.add(sample.occupied, said);
            report
                .by_group
                .entry(sample.group)
                .or_default()
                .add(sample.occupied, said);
        }
    }
    Ok(report)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:>7} {:>9} {:>10} {:>7}",
            "group", "crops", "accuracy", "precision", "recall"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, c: &Confusion| {
            writeln!(
                f,
                "{:<8} {:>7} {:>8.2}% {:>9.2}% {:>6.2}%",
                name,
                c.total(),
                100.0 * c.accuracy(),
                100.0 * c.precision(),
                100.0 * c.recall()
            )
        };
        if self.by_group.len() > 1 {
            for (name, confusion) in &self.by_group {
                row(f, name, confusion)?;
            }
        }
        row(f, "overall", &self.overall)?;
        let c = &self.overall;
        writeln!(f)?;
        writeln!(f, "confusion      said occupied  said free")?;
        writeln!(
            f,
            "occupied       {:>13}  {:>9}",
            c.true_occupied, c.false_free
        )?;
        write!(
            f,
            "free           {:>13}  {:>9}",
            c.false_occupied, c.true_free
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_is_the_same_for_the_same_seed() {
        let samples = synthetic(5, 96);
        let crops: Vec<&[u8]> = samples.iter().map(|s| s.rgb.as_slice()).collect();
        let trained = |seed| {
            let options = TrainOptions {
                seed,
                epochs: 1,
                batch: 32,
                learning_rate: 2e-3,
            };
            let model = Trainable::fresh(seed).unwrap();
            train(&model, &samples, &samples[..8], &options, |_| {}).unwrap();
            model.classifier().classify(&crops).unwrap()
        };
        assert_eq!(trained(5), trained(5));
        assert_ne!(trained(5), trained(6));
    }

    #[test]
    fn confusion_figures() {
        let mut c = Confusion::default();
        for (occupied, said) in [
            (true, true),
            (true, true),
            (true, false),
            (false, true),
            (false, false),
        ] {
            c.add(occupied, said);
        }
        assert_eq!(c.total(), 5);
        assert!((c.accuracy() - 0.6).abs() < 1e-12);
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn flips_move_pixels_and_twice_restore_them() {
        let rgb: Vec<u8> = (0..INPUT * INPUT * 3).map(|i| (i % 251) as u8).collect();
        for how in 0..4 {
            assert_eq!(flip(&flip(&rgb, how), how), rgb);
        }
        let mirrored = flip(&rgb, 1);
        assert_eq!(&mirrored[..3], &rgb[(INPUT - 1) * 3..INPUT * 3]);
    }

    #[test]
    fn a_folder_in_the_pklot_layout_is_labelled_by_its_folders() {
        let root = std::env::temp_dir().join(format!("vision-folder-{}", std::process::id()));
        let samples = synthetic(3, 4);
        for (i, sample) in samples.iter().enumerate() {
            let dir = root.join("camera1/2030-01-01").join(if sample.occupied {
                "Occupied"
            } else {
                "Empty"
            });
            std::fs::create_dir_all(&dir).unwrap();
            let image =
                image::RgbImage::from_raw(INPUT as u32, INPUT as u32, sample.rgb.clone()).unwrap();
            image.save(dir.join(format!("{i}.png"))).unwrap();
        }
        std::fs::write(root.join("camera1/notes.txt"), "not a crop").unwrap();
        let read = folder(&root).unwrap();
        assert_eq!(read.len(), 4);
        let mut expected: Vec<_> = samples
            .iter()
            .map(|s| (s.occupied, s.rgb.clone()))
            .collect();
        let mut got: Vec<_> = read.iter().map(|s| (s.occupied, s.rgb.clone())).collect();
        expected.sort();
        got.sort();
        assert_eq!(
            got, expected,
            "labels from the folders, pixels unchanged at this size"
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert!(matches!(
            folder(&std::env::temp_dir().join("no-such-folder-here")),
            Err(DataError::Io { .. })
        ));
    }
}
