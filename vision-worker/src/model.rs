//! The slot classifier: a small convolutional net in the spirit of mAlexNet (Amato et al.
//! 2017, trained on CNRPark+EXT): three convolutions and two linear layers, 32,732 parameters,
//! ~4.6 MFLOP per crop, on candle's CPU backend.
//!
//! Input: one slot's crop, `INPUT × INPUT` RGB (`crop::crop`), standardized by its own mean
//! and spread. Output: the probability that the slot is occupied. The first convolution strides by 2: the measured
//! cost of a crop fell sixfold against a stride-1 net, for the same accuracy on these crops.
//!
//! The shipped weights (`vision-worker/model/occupancy.safetensors`, made by
//! `parking-vision train`, docs/vision.md) are compiled into the binary: nothing is read or
//! downloaded at run time unless `--weights` names another file.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{conv2d, linear, Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The side of the square a slot is warped to.
pub const INPUT: usize = 64;

/// The weights shipped with the worker.
pub const SHIPPED: &[u8] = include_bytes!("../model/occupancy.safetensors");

/// Why weights cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the weights do not fit the classifier: {0}")]
    Weights(#[source] candle_core::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The net's layers.
#[derive(Debug, Clone)]
struct Net {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl Net {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let stride2 = Conv2dConfig {
            padding: 2,
            stride: 2,
            ..Default::default()
        };
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv1: conv2d(3, 16, 5, stride2, vb.pp("conv1"))?,
            conv2: conv2d(16, 20, 3, same, vb.pp("conv2"))?,
            conv3: conv2d(20, 30, 3, same, vb.pp("conv3"))?,
            fc1: linear(30 * 4 * 4, 48, vb.pp("fc1"))?,
            fc2: linear(48, 2, vb.pp("fc2"))?,
        })
    }

    /// `(n, 3, 64, 64)` to the logits of free and occupied, `(n, 2)`.
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(x)?.relu()?.max_pool2d(2)?; // 16 × 16
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?; // 8 × 8
        let x = self.conv3.forward(&x)?.relu()?.max_pool2d(2)?; // 4 × 4
        let x = self.fc1.forward(&x.flatten_from(1)?)?.relu()?;
        self.fc2.forward(&x)
    }
}

/// A classifier with fixed weights: what the worker runs.
#[derive(Debug, Clone)]
pub struct Classifier {
    net: Net,
}

impl Classifier {
    /// The shipped weights.
    pub fn shipped() -> Self {
        Self::from_safetensors(SHIPPED).expect("the shipped weights fit the classifier")
    }

    /// Weights from a safetensors file's bytes.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ModelError> {
        let vb = VarBuilder::from_buffered_safetensors(bytes.to_vec(), DType::F32, &Device::Cpu)
            .map_err(ModelError::Weights)?;
        Ok(Self {
            net: Net::new(vb).map_err(ModelError::Weights)?,
        })
    }

    /// Weights from a safetensors file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_safetensors(&bytes)
    }

    /// Each crop's probability of showing an occupied slot. Every crop is `INPUT × INPUT` RGB.
    pub fn classify(&self, crops: &[&[u8]]) -> Result<Vec<f32>, ModelError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self.net.logits(&batch(crops)?)?;
        let p = candle_nn::ops::softmax(&logits, D::Minus1)?;
        Ok(p.narrow(1, 1, 1)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// A classifier being trained: its variables, from a seeded start or from given weights.
pub struct Trainable {
    vars: VarMap,
    net: Net,
}

impl Trainable {
    /// Fresh weights drawn from `seed` (Kaiming-uniform, biases zero): the same seed gives the
    /// same start. candle's own initialisers cannot be seeded on the CPU.
    pub fn fresh(seed: u64) -> Result<Self, ModelError> {
        let trainable = Self::empty()?;
        let mut rng = StdRng::seed_from_u64(seed);
        {
            let vars = trainable.vars.data().lock().expect("vars lock");
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for name in names {
                let var = &vars[name];
                let dims = var.dims().to_vec();
                let values: Vec<f32> = if name.ends_with(".bias") {
                    vec![0.0; var.elem_count()]
                } else {
                    let fan_in: usize = dims[1..].iter().product();
                    let bound = (6.0 / fan_in as f32).sqrt();
                    (0..var.elem_count())
                        .map(|_| rng.random_range(-bound..bound))
                        .collect()
                };
                var.set(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
            }
        }
        Ok(trainable)
    }

    /// Starts from the weights in a safetensors file's bytes (fine-tuning).
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ModelError> {
        let trainable = Self::empty()?;
        let loaded = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(ModelError::Weights)?;
        for (name, var) in trainable.vars.data().lock().expect("vars lock").iter() {
            let tensor = loaded.get(name).ok_or_else(|| {
                ModelError::Weights(candle_core::Error::Msg(format!("no tensor {name}")))
            })?;
            var.set(tensor).map_err(ModelError::Weights)?;
        }
        Ok(trainable)
    }

    fn empty() -> Result<Self, ModelError> {
        let vars = VarMap::new();
        let net = Net::new(VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
        Ok(Self { vars, net })
    }

    /// The variables the optimizer moves.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.all_vars()
    }

    /// The mean cross-entropy of `crops` against their labels (true: occupied).
    pub fn loss(&self, crops: &[&[u8]], occupied: &[bool]) -> Result<Tensor, ModelError> {
        let labels: Vec<u32> = occupied.iter().map(|&o| u32::from(o)).collect();
        let labels = Tensor::from_vec(labels, occupied.len(), &Device::Cpu)?;
        let logits = self.net.logits(&batch(crops)?)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &labels)?)
    }

    /// The classifier with the weights as they are now.
    pub fn classifier(&self) -> Classifier {
        Classifier {
            net: self.net.clone(),
        }
    }

    /// Writes the weights as safetensors.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        Ok(self.vars.save(path)?)
    }
}

/// Crops to the net's input: `(n, 3, INPUT, INPUT)`, channels first, each crop standardized
/// by its own mean and spread (over all three channels, so colours keep their relations): a
/// slot at night or in haze reaches the net with the contrast it has by day.
fn batch(crops: &[&[u8]]) -> Result<Tensor, ModelError> {
    let plane = INPUT * INPUT;
    let mut values = vec![0f32; crops.len() * 3 * plane];
    for (crop, out) in crops.iter().zip(values.chunks_exact_mut(3 * plane)) {
        assert_eq!(crop.len(), 3 * plane, "a crop is INPUT × INPUT RGB");
        let n = crop.len() as f32;
        let mean = crop.iter().map(|&v| f32::from(v)).sum::<f32>() / n;
        let variance = crop
            .iter()
            .map(|&v| (f32::from(v) - mean).powi(2))
            .sum::<f32>()
            / n;
        // A flat crop is not blown up into noise: at least 4 levels of spread.
        let scale = 1.0 / variance.sqrt().max(4.0);
        for (i, pixel) in crop.chunks_exact(3).enumerate() {
            for (c, &v) in pixel.iter().enumerate() {
                out[c * plane + i] = (f32::from(v) - mean) * scale;
            }
        }
    }
    Ok(Tensor::from_vec(
        values,
        (crops.len(), 3, INPUT, INPUT),
        &Device::Cpu,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_weights_load_into_a_classifier_that_answers_the_same() {
        let trainable = Trainable::fresh(7).unwrap();
        let dir = std::env::temp_dir().join(format!("vision-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        trainable.save(&path).unwrap();
        let crop: Vec<u8> = (0..INPUT * INPUT * 3)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let before = trainable.classifier().classify(&[&crop]).unwrap();
        let after = Classifier::load(&path).unwrap().classify(&[&crop]).unwrap();
        assert_eq!(before, after);
        assert!((0.0..=1.0).contains(&before[0]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_same_seed_starts_from_the_same_weights() {
        let crop: Vec<u8> = (0..INPUT * INPUT * 3)
            .map(|i| (i * 13 % 256) as u8)
            .collect();
        let p = |seed| {
            Trainable::fresh(seed)
                .unwrap()
                .classifier()
                .classify(&[&crop])
                .unwrap()
        };
        assert_eq!(p(1), p(1));
        assert_ne!(p(1), p(2));
    }

    #[test]
    fn weights_of_another_shape_are_refused() {
        assert!(matches!(
            Classifier::from_safetensors(b"not safetensors"),
            Err(ModelError::Weights(_))
        ));
    }
}
