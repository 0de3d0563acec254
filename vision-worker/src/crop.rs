//! A slot's region of a camera frame, warped to a fixed square: what the classifier sees.
//!
//! A slot is a polygon in the frame's normalized coordinates (0 to 1 across and down, as a
//! lot's camera configuration gives it: `parking_domain::lot::Polygon`). A four-sided slot, the
//! usual case, is warped by the projective map of the square onto it, so that a slot seen at an
//! angle fills the crop as one seen from above would; any other polygon by its bounding box.

/// One RGB frame: `width × height` pixels, 3 bytes each, row by row.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub width: usize,
    pub height: usize,
    pub rgb: &'a [u8],
}

/// A projective map of the unit square onto a quadrilateral.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography {
    a: f64,
    b: f64,
    c: f64,
    d: f64,
    e: f64,
    f: f64,
    g: f64,
    h: f64,
}

impl Homography {
    /// The map sending (0, 0), (1, 0), (1, 1) and (0, 1) to `quad`'s corners, in that order
    /// (Heckbert's closed form); `None` if three corners are in a line.
    pub fn square_to_quad(quad: [[f64; 2]; 4]) -> Option<Self> {
        let [[x0, y0], [x1, y1], [x2, y2], [x3, y3]] = quad;
        let (sx, sy) = (x0 - x1 + x2 - x3, y0 - y1 + y2 - y3);
        let (g, h) = if sx.abs() < 1e-12 && sy.abs() < 1e-12 {
            (0.0, 0.0)
        } else {
            let (dx1, dx2, dy1, dy2) = (x1 - x2, x3 - x2, y1 - y2, y3 - y2);
            let den = dx1 * dy2 - dx2 * dy1;
            if den.abs() < 1e-12 {
                return None;
            }
            ((sx * dy2 - dx2 * sy) / den, (dx1 * sy - sx * dy1) / den)
        };
        let map = Self {
            a: x1 - x0 + g * x1,
            b: x3 - x0 + h * x3,
            c: x0,
            d: y1 - y0 + g * y1,
            e: y3 - y0 + h * y3,
            f: y0,
            g,
            h,
        };
        // Degenerate if the square's area does not map to any.
        let [p0, p1, p2] = [
            map.apply(0.0, 0.0),
            map.apply(1.0, 0.0),
            map.apply(1.0, 1.0),
        ];
        let twice_area = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p2[0] - p0[0]) * (p1[1] - p0[1]);
        (twice_area.abs() > 1e-12 && twice_area.is_finite()).then_some(map)
    }

    /// Where the square's point `(u, v)` lands.
    pub fn apply(&self, u: f64, v: f64) -> [f64; 2] {
        let w = self.g * u + self.h * v + 1.0;
        [
            (self.a * u + self.b * v + self.c) / w,
            (self.d * u + self.e * v + self.f) / w,
        ]
    }
}

/// The quadrilateral a slot is warped from, clockwise on the screen from its corner nearest
/// the frame's top left: the polygon itself if it has four points, otherwise its bounding box.
pub fn corners(points: &[[f64; 2]]) -> [[f64; 2]; 4] {
    if let Ok(mut quad) = <[[f64; 2]; 4]>::try_from(points) {
        // Clockwise with y pointing down: a positive shoelace sum.
        let shoelace: f64 = (0..4)
            .map(|i| {
                let (p, q) = (quad[i], quad[(i + 1) % 4]);
                p[0] * q[1] - q[0] * p[1]
            })
            .sum();
        if shoelace < 0.0 {
            quad.reverse();
        }
        let first = (0..4)
            .min_by(|i, j| {
                let key = |p: [f64; 2]| p[0] + p[1];
                key(quad[*i]).total_cmp(&key(quad[*j]))
            })
            .unwrap_or(0);
        quad.rotate_left(first);
        return quad;
    }
    let (mut min, mut max) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in points {
        for axis in 0..2 {
            min[axis] = min[axis].min(p[axis]);
            max[axis] = max[axis].max(p[axis]);
        }
    }
    [
        [min[0], min[1]],
        [max[0], min[1]],
        [max[0], max[1]],
        [min[0], max[1]],
    ]
}

/// The region of `frame` inside `polygon` (normalized coordinates), warped to `size × size`
/// RGB pixels, row by row, each sampled bilinearly at its centre. What lies outside the frame
/// is black.
pub fn crop(frame: &Frame<'_>, polygon: &[[f64; 2]], size: usize) -> Vec<u8> {
    let quad = corners(polygon);
    let map = Homography::square_to_quad(quad)
        .or_else(|| Homography::square_to_quad(corners(&[quad[0], quad[1], quad[2]])))
        .or_else(|| {
            // A slot with no area at all: a point, sampled everywhere.
            let [x, y] = quad[0];
            Homography::square_to_quad([[x, y], [x + 1e-6, y], [x + 1e-6, y + 1e-6], [x, y + 1e-6]])
        });
    let mut out = vec![0; size * size * 3];
    let Some(map) = map else {
        return out;
    };
    for row in 0..size {
        for column in 0..size {
            let (u, v) = (
                (column as f64 + 0.5) / size as f64,
                (row as f64 + 0.5) / size as f64,
            );
            let [x, y] = map.apply(u, v);
            let pixel = sample(
                frame,
                x * frame.width as f64 - 0.5,
                y * frame.height as f64 - 0.5,
            );
            out[(row * size + column) * 3..][..3].copy_from_slice(&pixel);
        }
    }
    out
}

/// The bilinear mix of the four pixels around `(x, y)` (pixel centres at whole numbers); a
/// pixel outside the frame counts as black.
pub(crate) fn sample(frame: &Frame<'_>, x: f64, y: f64) -> [u8; 3] {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |px: f64, py: f64| -> [f64; 3] {
        if px < 0.0 || py < 0.0 || px >= frame.width as f64 || py >= frame.height as f64 {
            return [0.0; 3];
        }
        let i = (py as usize * frame.width + px as usize) * 3;
        match frame.rgb.get(i..i + 3) {
            Some(p) => [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])],
            None => [0.0; 3],
        }
    };
    let (p00, p10, p01, p11) = (
        at(x0, y0),
        at(x0 + 1.0, y0),
        at(x0, y0 + 1.0),
        at(x0 + 1.0, y0 + 1.0),
    );
    let mut mixed = [0u8; 3];
    for channel in 0..3 {
        let top = p00[channel] * (1.0 - fx) + p10[channel] * fx;
        let bottom = p01[channel] * (1.0 - fx) + p11[channel] * fx;
        mixed[channel] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    mixed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [f64; 2], b: [f64; 2]) -> bool {
        (a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9
    }

    #[test]
    fn the_square_lands_on_the_corners_of_any_quad() {
        for quad in [
            [[0.1, 0.2], [0.5, 0.2], [0.5, 0.6], [0.1, 0.6]],
            [[0.2, 0.1], [0.7, 0.15], [0.9, 0.8], [0.05, 0.7]],
        ] {
            let map = Homography::square_to_quad(quad).unwrap();
            for (corner, (u, v)) in
                quad.iter()
                    .zip([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])
            {
                assert!(close(map.apply(u, v), *corner), "{quad:?}");
            }
        }
        assert!(
            Homography::square_to_quad([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [0.2, 0.2]]).is_none()
        );
    }

    #[test]
    fn corners_start_top_left_and_turn_clockwise_whatever_the_order_given() {
        let expected = [[0.1, 0.2], [0.5, 0.2], [0.5, 0.6], [0.1, 0.6]];
        let mut given = expected;
        given.reverse();
        given.rotate_left(1);
        assert_eq!(corners(&given), expected);
        let pentagon = [[0.3, 0.1], [0.6, 0.3], [0.5, 0.6], [0.1, 0.6], [0.05, 0.3]];
        assert_eq!(
            corners(&pentagon),
            [[0.05, 0.1], [0.6, 0.1], [0.6, 0.6], [0.05, 0.6]]
        );
    }

    /// A frame whose red channel is the column, green the row.
    fn gradient(width: usize, height: usize) -> Vec<u8> {
        (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| [x as u8, y as u8, 7]))
            .collect()
    }

    #[test]
    fn an_upright_slot_is_its_pixels_resized() {
        let rgb = gradient(200, 100);
        let frame = Frame {
            width: 200,
            height: 100,
            rgb: &rgb,
        };
        // Columns 50..150, rows 20..60: 100 × 40 pixels into 10 × 10.
        let slot = [[0.25, 0.2], [0.75, 0.2], [0.75, 0.6], [0.25, 0.6]];
        let crop = crop(&frame, &slot, 10);
        // Crop pixel (r, c) samples the frame at column 50 + 10 × (c + 0.5) - 0.5 and row
        // 20 + 4 × (r + 0.5) - 0.5: halfway between two pixels, so within one of either.
        let near = |row: usize, column: usize, expected: [f64; 2]| {
            let pixel = &crop[(row * 10 + column) * 3..][..3];
            assert!(
                (f64::from(pixel[0]) - expected[0]).abs() <= 1.0,
                "{pixel:?}"
            );
            assert!(
                (f64::from(pixel[1]) - expected[1]).abs() <= 1.0,
                "{pixel:?}"
            );
            assert_eq!(pixel[2], 7);
        };
        near(0, 0, [54.5, 21.5]);
        near(9, 9, [144.5, 57.5]);
        near(4, 2, [74.5, 37.5]);
    }

    #[test]
    fn what_lies_outside_the_frame_is_black() {
        let rgb = vec![200; 20 * 10 * 3];
        let frame = Frame {
            width: 20,
            height: 10,
            rgb: &rgb,
        };
        let crop = crop(
            &frame,
            &[[-1.0, -1.0], [-0.5, -1.0], [-0.5, -0.5], [-1.0, -0.5]],
            4,
        );
        assert!(crop.iter().all(|b| *b == 0));
        let inside = super::crop(&frame, &[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], 4);
        assert!(inside.iter().all(|b| *b == 200), "{inside:?}");
    }

    #[test]
    fn a_slot_seen_at_an_angle_is_straightened() {
        // A trapezoid (a rectangle on the ground, seen from the front and above): its four
        // corners, marked in four colours, land in the crop's four corners.
        let (width, height) = (100, 100);
        let mut rgb = vec![0u8; width * height * 3];
        let quad = [[0.3, 0.2], [0.7, 0.2], [0.9, 0.8], [0.1, 0.8]];
        let marks = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]];
        for (corner, colour) in quad.iter().zip(marks) {
            // A 9 × 9 spot around each corner, inside the quad's side of it.
            let (cx, cy) = (
                (corner[0] * width as f64) as i64,
                (corner[1] * height as f64) as i64,
            );
            for y in cy - 4..=cy + 4 {
                for x in cx - 4..=cx + 4 {
                    let i = (y as usize * width + x as usize) * 3;
                    rgb[i..i + 3].copy_from_slice(&colour);
                }
            }
        }
        let frame = Frame {
            width,
            height,
            rgb: &rgb,
        };
        let crop = crop(&frame, &quad, 32);
        let pixel = |row: usize, column: usize| {
            [
                crop[(row * 32 + column) * 3],
                crop[(row * 32 + column) * 3 + 1],
                crop[(row * 32 + column) * 3 + 2],
            ]
        };
        assert_eq!(pixel(0, 0), marks[0]);
        assert_eq!(pixel(0, 31), marks[1]);
        assert_eq!(pixel(31, 31), marks[2]);
        assert_eq!(pixel(31, 0), marks[3]);
    }
}
