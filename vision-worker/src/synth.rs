//! Synthetic slot crops for training and testing the classifier: no parking dataset can be
//! downloaded here, so the worker draws its own. Each crop is one slot as `crop::crop` gives it
//! (seen from above, the slot filling the square): asphalt, painted lines, a car or none, what
//! intrudes (a neighbour's car, a person, a shadow, a stain), under one of five conditions
//! (day, dusk, night, rain, haze), then blurred as a distant camera blurs and made blocky as a
//! JPEG stream is. The same seed draws the same crops.
//!
//! What it does not prove: a classifier that learns these crops learns what this generator
//! draws. Real cameras differ (lenses, angles the warp does not undo, snow, occlusion by
//! poles), which is why `train` also takes folders of real, labelled crops.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The light and weather a crop is drawn under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    Day,
    Dusk,
    Night,
    Rain,
    Haze,
}

impl Condition {
    pub const ALL: [Condition; 5] = [
        Condition::Day,
        Condition::Dusk,
        Condition::Night,
        Condition::Rain,
        Condition::Haze,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Condition::Day => "day",
            Condition::Dusk => "dusk",
            Condition::Night => "night",
            Condition::Rain => "rain",
            Condition::Haze => "haze",
        }
    }
}

/// One drawn slot: `size × size` RGB pixels, row by row, and what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crop {
    pub rgb: Vec<u8>,
    pub occupied: bool,
    pub condition: Condition,
}

/// Draws crops of `size × size` pixels from a seed.
pub struct Generator {
    rng: StdRng,
    size: usize,
}

/// Car paints, as linear RGB.
const PAINTS: [[f32; 3]; 9] = [
    [0.92, 0.92, 0.90], // white
    [0.06, 0.06, 0.07], // black
    [0.62, 0.63, 0.65], // silver
    [0.40, 0.41, 0.43], // grey
    [0.70, 0.08, 0.07], // red
    [0.10, 0.22, 0.55], // blue
    [0.12, 0.35, 0.18], // green
    [0.85, 0.70, 0.10], // yellow
    [0.45, 0.30, 0.18], // brown
];

impl Generator {
    pub fn new(seed: u64, size: usize) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            size,
        }
    }

    /// The next crop: occupied or not, under any condition, each as likely.
    pub fn next_crop(&mut self) -> Crop {
        let occupied = self.rng.random_bool(0.5);
        let condition = Condition::ALL[self.rng.random_range(0..Condition::ALL.len())];
        self.draw(occupied, condition)
    }

    /// A crop showing `occupied` under `condition`.
    pub fn draw(&mut self, occupied: bool, condition: Condition) -> Crop {
        let mut canvas = Canvas::new(self.size);
        let rng = &mut self.rng;
        asphalt(&mut canvas, rng);
        lines(&mut canvas, rng);
        if rng.random_bool(0.3) {
            neighbour(&mut canvas, rng);
        }
        if occupied {
            car(&mut canvas, rng);
        } else {
            if rng.random_bool(0.15) {
                person(&mut canvas, rng);
            }
            if rng.random_bool(0.2) {
                stain(&mut canvas, rng);
            }
        }
        if rng.random_bool(0.3) {
            shadow(&mut canvas, rng);
        }
        light(&mut canvas, rng, condition);
        let radius = rng.random_range(0..=(self.size / 24).max(1));
        canvas.blur(radius);
        if rng.random_bool(0.5) {
            canvas.blocky(rng.random_range(0.2..0.6));
        }
        Crop {
            rgb: canvas.into_rgb(),
            occupied,
            condition,
        }
    }
}

/// A camera's whole picture of a lot, for end-to-end tests and the benchmark: slots in rows
/// and columns on asphalt, each drawn from a free and an occupied synthetic crop, so that a
/// frame can show any slot in either state.
pub struct Scene {
    pub width: usize,
    pub height: usize,
    /// Each slot's polygon in normalised coordinates, row by row.
    pub polygons: Vec<Vec<[f64; 2]>>,
    /// Each slot's free and occupied crop.
    crops: Vec<[Crop; 2]>,
}

impl Scene {
    /// `columns × rows` slots filling a `width × height` picture with a margin between
    /// them, their crops drawn from `seed` under `condition`.
    pub fn new(
        seed: u64,
        width: usize,
        height: usize,
        columns: usize,
        rows: usize,
        condition: Condition,
    ) -> Self {
        let mut generator = Generator::new(seed, crate::model::INPUT);
        let (cell_w, cell_h) = (1.0 / columns as f64, 1.0 / rows as f64);
        let mut polygons = Vec::new();
        let mut crops = Vec::new();
        for row in 0..rows {
            for column in 0..columns {
                let (x0, y0) = (column as f64 * cell_w, row as f64 * cell_h);
                let (x1, y1) = (x0 + cell_w * 0.92, y0 + cell_h * 0.92);
                let (x0, y0) = (x0 + cell_w * 0.04, y0 + cell_h * 0.04);
                polygons.push(vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]]);
                crops.push([
                    generator.draw(false, condition),
                    generator.draw(true, condition),
                ]);
            }
        }
        Self {
            width,
            height,
            polygons,
            crops,
        }
    }

    /// The picture with each slot occupied or not: `width × height` RGB, row by row.
    pub fn render(&self, occupied: &[bool]) -> Vec<u8> {
        assert_eq!(occupied.len(), self.polygons.len(), "a state per slot");
        let mut rgb: Vec<u8> = [70u8, 70, 72].repeat(self.width * self.height);
        let size = crate::model::INPUT;
        for ((polygon, crops), &occupied) in self.polygons.iter().zip(&self.crops).zip(occupied) {
            let crop = &crops[usize::from(occupied)];
            let source = crate::crop::Frame {
                width: size,
                height: size,
                rgb: &crop.rgb,
            };
            let [x0, y0] = polygon[0];
            let [x1, y1] = polygon[2];
            let (px0, px1) = (
                (x0 * self.width as f64) as usize,
                (x1 * self.width as f64) as usize,
            );
            let (py0, py1) = (
                (y0 * self.height as f64) as usize,
                (y1 * self.height as f64) as usize,
            );
            for y in py0..py1.min(self.height) {
                for x in px0..px1.min(self.width) {
                    let u = ((x as f64 + 0.5) / self.width as f64 - x0) / (x1 - x0);
                    let v = ((y as f64 + 0.5) / self.height as f64 - y0) / (y1 - y0);
                    let last = (size - 1) as f64;
                    let pixel = crate::crop::sample(
                        &source,
                        (u * size as f64 - 0.5).clamp(0.0, last),
                        (v * size as f64 - 0.5).clamp(0.0, last),
                    );
                    rgb[(y * self.width + x) * 3..][..3].copy_from_slice(&pixel);
                }
            }
        }
        rgb
    }
}

/// Linear RGB in 0..1, row by row.
struct Canvas {
    size: usize,
    px: Vec<[f32; 3]>,
}

impl Canvas {
    fn new(size: usize) -> Self {
        Self {
            size,
            px: vec![[0.0; 3]; size * size],
        }
    }

    /// Calls `paint` with each pixel's centre in the crop's unit square.
    fn each(&mut self, mut paint: impl FnMut(f32, f32, &mut [f32; 3])) {
        let size = self.size as f32;
        for (i, px) in self.px.iter_mut().enumerate() {
            let (x, y) = ((i % self.size) as f32 + 0.5, (i / self.size) as f32 + 0.5);
            paint(x / size, y / size, px);
        }
    }

    fn blur(&mut self, radius: usize) {
        if radius == 0 {
            return;
        }
        let n = self.size as isize;
        let r = radius as isize;
        for horizontal in [true, false] {
            let source = self.px.clone();
            for y in 0..n {
                for x in 0..n {
                    let mut sum = [0.0f32; 3];
                    let mut count = 0.0;
                    for k in -r..=r {
                        let (sx, sy) = if horizontal { (x + k, y) } else { (x, y + k) };
                        if (0..n).contains(&sx) && (0..n).contains(&sy) {
                            let p = source[(sy * n + sx) as usize];
                            (0..3).for_each(|c| sum[c] += p[c]);
                            count += 1.0;
                        }
                    }
                    self.px[(y * n + x) as usize] = sum.map(|s| s / count);
                }
            }
        }
    }

    /// Pulls each 8 × 8 block towards its mean by `strength`: the blockiness of a strongly
    /// compressed JPEG stream.
    fn blocky(&mut self, strength: f32) {
        let n = self.size;
        for by in (0..n).step_by(8) {
            for bx in (0..n).step_by(8) {
                let cells: Vec<usize> = (by..(by + 8).min(n))
                    .flat_map(|y| (bx..(bx + 8).min(n)).map(move |x| y * n + x))
                    .collect();
                let mut mean = [0.0f32; 3];
                for i in &cells {
                    (0..3).for_each(|c| mean[c] += self.px[*i][c] / cells.len() as f32);
                }
                for i in cells {
                    (0..3).for_each(|c| {
                        self.px[i][c] += (mean[c] - self.px[i][c]) * strength;
                    });
                }
            }
        }
    }

    fn into_rgb(self) -> Vec<u8> {
        self.px
            .iter()
            .flat_map(|p| p.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8))
            .collect()
    }
}

fn mix(px: &mut [f32; 3], colour: [f32; 3], alpha: f32) {
    (0..3).for_each(|c| px[c] += (colour[c] - px[c]) * alpha);
}

fn scale(px: &mut [f32; 3], by: [f32; 3]) {
    (0..3).for_each(|c| px[c] *= by[c]);
}

/// Inside a rounded rectangle centred on `(cx, cy)`, half-sized `(hw, hh)`, corners of
/// radius `r`.
fn in_rounded(x: f32, y: f32, (cx, cy, hw, hh, r): (f32, f32, f32, f32, f32)) -> bool {
    let (dx, dy) = ((x - cx).abs() - (hw - r), (y - cy).abs() - (hh - r));
    dx.max(0.0).hypot(dy.max(0.0)) <= r
}

fn asphalt(canvas: &mut Canvas, rng: &mut StdRng) {
    let grey: f32 = rng.random_range(0.22..0.45);
    let tint = [
        rng.random_range(0.97..1.03),
        1.0,
        rng.random_range(0.97..1.05),
    ];
    let patch = (
        rng.random_range(0.0..1.0f32),
        rng.random_range(0.0..1.0f32),
        rng.random_range(0.1..0.4f32),
        rng.random_range(-0.06..0.06f32),
    );
    canvas.each(|x, y, px| {
        let grain = rng.random_range(-0.035..0.035);
        let repaired = if (x - patch.0).hypot(y - patch.1) < patch.2 {
            patch.3
        } else {
            0.0
        };
        *px = [0, 1, 2].map(|c| (grey + grain + repaired) * tint[c]);
    });
}

/// The slot's painted borders: left and right, sometimes the back line, worn.
fn lines(canvas: &mut Canvas, rng: &mut StdRng) {
    let paint = if rng.random_bool(0.75) {
        [0.9, 0.9, 0.88]
    } else {
        [0.88, 0.75, 0.15]
    };
    let width = rng.random_range(0.03..0.07f32);
    let (left, right) = (
        rng.random_range(0.0..0.06f32),
        rng.random_range(0.94..1.0f32),
    );
    let back = rng.random_bool(0.5).then(|| rng.random_range(0.0..0.05f32));
    let wear = rng.random_range(0.5..1.0f32);
    canvas.each(|x, y, px| {
        let on = (x >= left && x < left + width)
            || (x <= right && x > right - width)
            || back.is_some_and(|b| y >= b && y < b + width);
        if on {
            let alpha = wear * rng.random_range(0.6..1.0);
            mix(px, paint, alpha);
        }
    });
}

/// A car: a body of some shape and paint, its glass, and its shadow on the ground.
fn car(canvas: &mut Canvas, rng: &mut StdRng) {
    // Sedan, van (long and boxy) or small car: half-width, half-length, corner radius.
    let (hw, hh, r) = match rng.random_range(0..3) {
        0 => (
            rng.random_range(0.28..0.40),
            rng.random_range(0.36..0.46),
            0.08,
        ),
        1 => (
            rng.random_range(0.32..0.44),
            rng.random_range(0.40..0.49),
            0.03,
        ),
        _ => (
            rng.random_range(0.24..0.33),
            rng.random_range(0.26..0.36),
            0.10,
        ),
    };
    let (cx, cy) = (
        0.5 + rng.random_range(-0.08..0.08),
        0.5 + rng.random_range(-0.06..0.06),
    );
    let paint = PAINTS[rng.random_range(0..PAINTS.len())];
    let paint = paint.map(|c| (c * rng.random_range(0.85..1.1f32)).min(1.0));
    let glass = [0.08, 0.10, 0.13];
    let facing_up = rng.random_bool(0.5);
    let shadow = (
        rng.random_range(-0.04..0.04f32),
        rng.random_range(0.0..0.06f32),
    );
    canvas.each(|x, y, px| {
        let body = (cx, cy, hw, hh, r);
        if in_rounded(x, y, body) {
            // The windscreen and rear window: bands across the body.
            let along = (y - cy) / hh * if facing_up { 1.0 } else { -1.0 };
            let windscreen = (-0.55..-0.2).contains(&along);
            let rear = (0.45..0.65).contains(&along);
            let roof = (-0.2..0.45).contains(&along) && (x - cx).abs() < hw * 0.8;
            *px = if windscreen || rear {
                glass
            } else if roof {
                paint.map(|c| c * 0.9 + 0.04)
            } else {
                paint
            };
        } else if in_rounded(
            x - shadow.0,
            y - shadow.1,
            (cx, cy, hw + 0.03, hh + 0.03, r),
        ) {
            scale(px, [0.55; 3]);
        }
    });
}

/// A neighbour's car over one of the side lines.
fn neighbour(canvas: &mut Canvas, rng: &mut StdRng) {
    let from_left = rng.random_bool(0.5);
    let reach = rng.random_range(0.05..0.22f32);
    let paint = PAINTS[rng.random_range(0..PAINTS.len())];
    let (top, bottom) = (rng.random_range(0.0..0.2f32), rng.random_range(0.8..1.0f32));
    canvas.each(|x, y, px| {
        let inside = if from_left {
            x < reach
        } else {
            x > 1.0 - reach
        };
        if inside && (top..bottom).contains(&y) {
            *px = paint;
        }
    });
}

/// Someone walking across the empty slot, seen from above: shoulders and a head.
fn person(canvas: &mut Canvas, rng: &mut StdRng) {
    let (cx, cy) = (rng.random_range(0.2..0.8f32), rng.random_range(0.2..0.8f32));
    let clothes = PAINTS[rng.random_range(0..PAINTS.len())];
    let hair = [0.1, 0.07, 0.05];
    canvas.each(|x, y, px| {
        let (dx, dy) = (x - cx, y - cy);
        if dx.hypot(dy) < 0.035 {
            *px = hair;
        } else if (dx / 0.09).hypot(dy / 0.05) < 1.0 {
            *px = clothes;
        }
    });
}

/// An oil stain or a puddle mark.
fn stain(canvas: &mut Canvas, rng: &mut StdRng) {
    let (cx, cy, radius) = (
        rng.random_range(0.2..0.8f32),
        rng.random_range(0.2..0.8f32),
        rng.random_range(0.05..0.18f32),
    );
    canvas.each(|x, y, px| {
        if (x - cx).hypot(y - cy) < radius {
            scale(px, [0.7; 3]);
        }
    });
}

/// A shadow cast from outside the slot (a tree, a building, a tall neighbour): everything on
/// one side of a line darker.
fn shadow(canvas: &mut Canvas, rng: &mut StdRng) {
    let angle = rng.random_range(0.0..std::f32::consts::TAU);
    let (nx, ny) = (angle.cos(), angle.sin());
    let offset = rng.random_range(-0.4..0.4f32);
    let depth = rng.random_range(0.45..0.75f32);
    canvas.each(|x, y, px| {
        if (x - 0.5) * nx + (y - 0.5) * ny > offset {
            scale(px, [depth; 3]);
        }
    });
}

fn light(canvas: &mut Canvas, rng: &mut StdRng, condition: Condition) {
    match condition {
        Condition::Day => {
            let sun = rng.random_range(0.9..1.25f32);
            canvas.each(|_, _, px| scale(px, [sun; 3]));
        }
        Condition::Dusk => {
            let dim = rng.random_range(0.4..0.7f32);
            canvas.each(|_, _, px| scale(px, [dim * 1.1, dim, dim * 0.82]));
        }
        Condition::Night => {
            let dim = rng.random_range(0.1..0.28f32);
            let (lx, ly, reach) = (
                rng.random_range(-0.3..1.3f32),
                rng.random_range(-0.3..1.3f32),
                rng.random_range(0.5..1.2f32),
            );
            canvas.each(|x, y, px| {
                let lamp = (1.0 - (x - lx).hypot(y - ly) / reach).max(0.0) * 0.6;
                let gain = dim + lamp;
                scale(px, [gain * 1.08, gain, gain * 0.8]);
                let noise = rng.random_range(-0.05..0.05);
                px.iter_mut().for_each(|c| *c += noise);
            });
        }
        Condition::Rain => {
            let dim = rng.random_range(0.45..0.75f32);
            let slant = rng.random_range(-0.4..0.4f32);
            canvas.each(|x, y, px| {
                scale(px, [dim; 3]);
                // Wet ground is flatter; streaks of falling drops are lighter.
                px.iter_mut().for_each(|c| *c = *c * 0.85 + 0.04);
                let streak = ((x + y * slant) * 60.0).fract() < 0.06;
                if streak && rng.random_bool(0.3) {
                    mix(px, [0.8; 3], 0.35);
                }
            });
        }
        Condition::Haze => {
            let thickness = rng.random_range(0.3..0.6f32);
            let veil = rng.random_range(0.6..0.85f32);
            canvas.each(|_, _, px| mix(px, [veil; 3], thickness));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mean luminance of a crop, and the spread of its central half (what a car adds).
    fn figures(crop: &Crop, size: usize) -> (f32, f32) {
        let luminance = |i: usize| {
            let p = &crop.rgb[i * 3..i * 3 + 3];
            (0.3 * f32::from(p[0]) + 0.59 * f32::from(p[1]) + 0.11 * f32::from(p[2])) / 255.0
        };
        let all: Vec<f32> = (0..size * size).map(luminance).collect();
        let mean = all.iter().sum::<f32>() / all.len() as f32;
        let centre: Vec<f32> = (0..size * size)
            .filter(|i| {
                let (x, y) = (i % size, i / size);
                (size / 4..3 * size / 4).contains(&x) && (size / 4..3 * size / 4).contains(&y)
            })
            .map(luminance)
            .collect();
        let centre_mean = centre.iter().sum::<f32>() / centre.len() as f32;
        let spread = (centre
            .iter()
            .map(|l| (l - centre_mean).powi(2))
            .sum::<f32>()
            / centre.len() as f32)
            .sqrt();
        (mean, spread)
    }

    #[test]
    fn a_seed_draws_the_same_crops_and_another_seed_others() {
        let draw = |seed| {
            let mut generator = Generator::new(seed, 32);
            (0..20).map(|_| generator.next_crop()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(draw(7).iter().all(|c| c.rgb.len() == 32 * 32 * 3));
    }

    #[test]
    fn every_condition_and_both_classes_come_up() {
        let mut generator = Generator::new(1, 16);
        let crops: Vec<Crop> = (0..200).map(|_| generator.next_crop()).collect();
        for condition in Condition::ALL {
            for occupied in [false, true] {
                assert!(
                    crops
                        .iter()
                        .any(|c| c.condition == condition && c.occupied == occupied),
                    "{condition:?} {occupied}"
                );
            }
        }
    }

    #[test]
    fn cars_add_structure_and_night_is_dark() {
        let size = 48;
        let mut generator = Generator::new(3, size);
        let average = |generator: &mut Generator, occupied, condition| {
            let (mut mean, mut spread) = (0.0, 0.0);
            for _ in 0..100 {
                let (m, s) = figures(&generator.draw(occupied, condition), size);
                mean += m / 100.0;
                spread += s / 100.0;
            }
            (mean, spread)
        };
        let (_, empty) = average(&mut generator, false, Condition::Day);
        let (day, occupied) = average(&mut generator, true, Condition::Day);
        let (night, _) = average(&mut generator, true, Condition::Night);
        assert!(occupied > empty * 1.5, "spread {occupied} vs {empty}");
        assert!(night < day * 0.6, "luminance {night} vs {day}");
    }
}
