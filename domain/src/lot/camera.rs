//! Cameras of a lot: where each camera's stream is, and which part of its picture is which
//! slot. The vision worker crops each slot's polygon out of the frames and classifies it.
//!
//! A stream URL may carry credentials (`rtsp://user:pass@host/...`): they are secrets. The URL
//! is shown only to the lot's owner, admins and the vision service, and never appears in an
//! error or a log line ([`StreamUrl`]'s `Debug` hides them; [`StreamUrl::redacted`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a camera sees: its stream and the slots in its picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraConfig {
    pub stream_url: StreamUrl,
    pub slots: Vec<CameraSlot>,
}

/// One slot in a camera's picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraSlot {
    pub slot_id: Uuid,
    pub polygon: Polygon,
}

/// Why a camera configuration is refused. The stream URL is never part of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraError {
    #[error("stream_url must be an rtsp, rtsps, http, https or file URL of at most 2000 printable characters")]
    BadStreamUrl,
    #[error("the polygon of slot {slot_id}: {reason}")]
    BadPolygon { slot_id: Uuid, reason: &'static str },
    #[error("slot {0} appears twice in this camera")]
    DuplicateSlot(Uuid),
    #[error("a camera sees at most {0} slots")]
    TooManySlots(usize),
}

/// At most this many slots per camera, and points per polygon.
pub const MAX_SLOTS_PER_CAMERA: usize = 500;
pub const MAX_POLYGON_POINTS: usize = 64;

/// A camera stream's address: RTSP, HTTP (MJPEG or snapshots) or a local file or folder.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamUrl(String);

impl StreamUrl {
    const SCHEMES: [&'static str; 5] = ["rtsp://", "rtsps://", "http://", "https://", "file://"];

    pub fn parse(raw: &str) -> Result<Self, CameraError> {
        let url = raw.trim();
        let scheme_ok = Self::SCHEMES
            .iter()
            .any(|s| url.len() > s.len() && url[..s.len()].eq_ignore_ascii_case(s));
        let printable = url.chars().all(|c| !c.is_control() && !c.is_whitespace());
        if scheme_ok && printable && url.len() <= 2000 {
            Ok(Self(url.to_owned()))
        } else {
            Err(CameraError::BadStreamUrl)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with any credentials replaced by `***`: what may be shown to anyone else.
    pub fn redacted(&self) -> String {
        redact_credentials(&self.0)
    }
}

/// `scheme://user:pass@host/...` → `scheme://***@host/...`; other text unchanged.
pub fn redact_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for StreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StreamUrl").field(&self.redacted()).finish()
    }
}

impl TryFrom<String> for StreamUrl {
    type Error = CameraError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<StreamUrl> for String {
    fn from(url: StreamUrl) -> Self {
        url.0
    }
}

/// A simple polygon in normalised image coordinates (`[x, y]`, each 0..=1, origin top left):
/// at least 3 points, no two edges crossing, a non-zero area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<[f64; 2]>", into = "Vec<[f64; 2]>")]
pub struct Polygon(Vec<[f64; 2]>);

impl Polygon {
    pub fn new(points: Vec<[f64; 2]>) -> Result<Self, &'static str> {
        if points.len() < 3 {
            return Err("needs at least 3 points");
        }
        if points.len() > MAX_POLYGON_POINTS {
            return Err("has more than 64 points");
        }
        if !points.iter().flatten().all(|c| (0.0..=1.0).contains(c)) {
            return Err("coordinates must be between 0 and 1");
        }
        let polygon = Self(points);
        if polygon.crosses_itself() {
            return Err("crosses itself");
        }
        if polygon.area() < 1e-9 {
            return Err("has no area");
        }
        Ok(polygon)
    }

    /// The points, in order.
    pub fn points(&self) -> &[[f64; 2]] {
        &self.0
    }

    /// Shoelace formula.
    fn area(&self) -> f64 {
        let n = self.0.len();
        let twice: f64 = (0..n)
            .map(|i| {
                let ([x1, y1], [x2, y2]) = (self.0[i], self.0[(i + 1) % n]);
                x1 * y2 - x2 * y1
            })
            .sum();
        twice.abs() / 2.0
    }

    /// Whether two edges that do not share a corner touch or cross, or two neighbours fold
    /// back onto each other.
    fn crosses_itself(&self) -> bool {
        let n = self.0.len();
        let edge = |i: usize| (self.0[i], self.0[(i + 1) % n]);
        for i in 0..n {
            for j in (i + 1)..n {
                let neighbours = j == i + 1 || (i == 0 && j == n - 1);
                let (a, b) = edge(i);
                let (c, d) = edge(j);
                if neighbours {
                    // Sharing a corner is fine; lying along each other is not.
                    let shared = if j == i + 1 { b } else { a };
                    let (p, q) = if j == i + 1 { (a, d) } else { (b, c) };
                    if orientation(p, shared, q) == 0.0 && same_direction(shared, p, q) {
                        return true;
                    }
                } else if segments_touch(a, b, c, d) {
                    return true;
                }
            }
        }
        false
    }
}

fn orientation(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

/// `p` and `q` lie on the same side of `from` along one line.
fn same_direction(from: [f64; 2], p: [f64; 2], q: [f64; 2]) -> bool {
    (p[0] - from[0]) * (q[0] - from[0]) + (p[1] - from[1]) * (q[1] - from[1]) > 0.0
}

fn on_segment(a: [f64; 2], b: [f64; 2], p: [f64; 2]) -> bool {
    p[0] >= a[0].min(b[0])
        && p[0] <= a[0].max(b[0])
        && p[1] >= a[1].min(b[1])
        && p[1] <= a[1].max(b[1])
}

fn segments_touch(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let (o1, o2) = (orientation(a, b, c), orientation(a, b, d));
    let (o3, o4) = (orientation(c, d, a), orientation(c, d, b));
    if o1 * o2 < 0.0 && o3 * o4 < 0.0 {
        return true;
    }
    (o1 == 0.0 && on_segment(a, b, c))
        || (o2 == 0.0 && on_segment(a, b, d))
        || (o3 == 0.0 && on_segment(c, d, a))
        || (o4 == 0.0 && on_segment(c, d, b))
}

impl TryFrom<Vec<[f64; 2]>> for Polygon {
    type Error = &'static str;
    fn try_from(points: Vec<[f64; 2]>) -> Result<Self, Self::Error> {
        Self::new(points)
    }
}

impl From<Polygon> for Vec<[f64; 2]> {
    fn from(polygon: Polygon) -> Self {
        polygon.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_square_is_a_polygon() {
        assert!(Polygon::new(vec![[0.1, 0.1], [0.4, 0.1], [0.4, 0.5], [0.1, 0.5]]).is_ok());
    }

    #[test]
    fn two_points_are_not_a_polygon() {
        assert_eq!(
            Polygon::new(vec![[0.1, 0.1], [0.4, 0.1]]),
            Err("needs at least 3 points")
        );
    }

    #[test]
    fn a_bow_tie_crosses_itself() {
        let bow_tie = vec![[0.1, 0.1], [0.4, 0.4], [0.4, 0.1], [0.1, 0.4]];
        assert_eq!(Polygon::new(bow_tie), Err("crosses itself"));
    }

    #[test]
    fn an_edge_folding_back_crosses_itself() {
        let folded = vec![[0.1, 0.1], [0.5, 0.1], [0.3, 0.1], [0.3, 0.5]];
        assert!(Polygon::new(folded).is_err());
    }

    #[test]
    fn points_outside_the_picture_or_on_a_line_are_refused() {
        assert!(Polygon::new(vec![[0.1, 0.1], [1.4, 0.1], [0.4, 0.5]]).is_err());
        assert!(Polygon::new(vec![[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]).is_err());
    }

    #[test]
    fn credentials_never_leave_a_stream_url_unless_asked_for() {
        let url = StreamUrl::parse("rtsp://admin:hunter2@10.0.0.5:554/stream1").unwrap();
        assert_eq!(url.redacted(), "rtsp://***@10.0.0.5:554/stream1");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.as_str(), "rtsp://admin:hunter2@10.0.0.5:554/stream1");
        assert_eq!(redact_credentials("http://cam/a@b"), "http://cam/a@b");
    }

    #[test]
    fn a_stream_url_needs_a_known_scheme() {
        assert_eq!(
            StreamUrl::parse("ftp://cam/x"),
            Err(CameraError::BadStreamUrl)
        );
        assert_eq!(StreamUrl::parse("rtsp://"), Err(CameraError::BadStreamUrl));
        assert!(StreamUrl::parse("file:///var/cameras/lot7/").is_ok());
    }
}
