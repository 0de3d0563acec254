//! Camera streams to frames: RTSP and video files through an `ffmpeg` child process, MJPEG
//! over HTTP (`multipart/x-mixed-replace`), HTTP snapshots polled, and a folder of images.
//!
//! A stream publishes its latest frame on a `watch` channel: a classifier slower than the
//! camera skips frames rather than falling behind. A stream that drops is opened again with a
//! growing backoff (`Backoff`); its state (`StreamState`) is what `/metrics` shows. A video
//! file ends: its stream is then `ended` and is not opened again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// A task that stops when this is dropped.
#[derive(Debug)]
pub struct CancelOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One decoded frame: `width × height` RGB pixels, row by row, and when it arrived.
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// When the worker had the frame (the classifier's latency is counted from here).
    pub arrived: Instant,
    /// The same moment on the wall clock: the observation's `observed_at`.
    pub observed_at: DateTime<Utc>,
    /// The frame's number since the stream was first opened (1, 2, ...).
    pub number: u64,
}

impl OwnedFrame {
    pub fn as_frame(&self) -> crate::crop::Frame<'_> {
        crate::crop::Frame {
            width: self.width,
            height: self.height,
            rgb: &self.rgb,
        }
    }
}

/// Where a camera's frames come from, by its stream URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `rtsp://`, `rtsps://`, or a video file: read by `ffmpeg`, scaled to `size`.
    Ffmpeg { input: String, is_file: bool },
    /// `http://`, `https://`: MJPEG if the answer is `multipart/x-mixed-replace`, otherwise
    /// one image per request, polled.
    Http { url: String },
    /// A folder (`file:///path/` naming a folder): its images in name order, then any new one.
    Folder { path: PathBuf },
}

/// Why a stream URL cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("a stream URL must be rtsp://, rtsps://, http://, https:// or file://")]
pub struct UnknownScheme;

impl Source {
    /// The source a camera's stream URL names.
    pub fn of(url: &str) -> Result<Self, UnknownScheme> {
        let (scheme, rest) = url.split_once("://").ok_or(UnknownScheme)?;
        match scheme.to_ascii_lowercase().as_str() {
            "rtsp" | "rtsps" => Ok(Self::Ffmpeg {
                input: url.to_owned(),
                is_file: false,
            }),
            "http" | "https" => Ok(Self::Http {
                url: url.to_owned(),
            }),
            "file" => {
                let path = PathBuf::from(rest);
                if path.is_dir() {
                    Ok(Self::Folder { path })
                } else {
                    Ok(Self::Ffmpeg {
                        input: rest.to_owned(),
                        is_file: true,
                    })
                }
            }
            _ => Err(UnknownScheme),
        }
    }
}

/// How a stream is read.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// At most this many frames a second are decoded and published.
    pub fps: f64,
    /// The size `ffmpeg` scales frames to. Polygons are in normalised coordinates, so any
    /// size maps them; it only sets the detail the crops are cut from.
    pub width: usize,
    pub height: usize,
    /// The `ffmpeg` program.
    pub ffmpeg: PathBuf,
    /// The first wait before opening a dropped stream again; it doubles up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// A stream that gives no frame for this long is dropped and opened again.
    pub stall: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            fps: 2.0,
            width: 1280,
            height: 720,
            ffmpeg: PathBuf::from("ffmpeg"),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            stall: Duration::from_secs(20),
        }
    }
}

/// What a stream is doing, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    Connecting,
    Up,
    /// Dropped; waiting to open it again.
    Down,
    /// A video file that has been read to its end.
    Ended,
}

/// A stream's state, and how many times it has been opened (its first frame after opening).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStatus {
    pub state: StreamState,
    pub opened: u64,
}

/// What a running stream tells its camera.
pub struct Stream {
    pub frames: watch::Receiver<Option<Arc<OwnedFrame>>>,
    pub status: watch::Receiver<StreamStatus>,
    _task: CancelOnDrop,
}

/// Why one connection of a stream ended.
#[derive(Debug, thiserror::Error)]
enum Dropped {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Without its URL (`From` strips it): a camera's URL may carry credentials.
    #[error("{0}")]
    Http(reqwest::Error),
    #[error("HTTP status {0}")]
    Status(reqwest::StatusCode),
    #[error("no frame for {0:?}")]
    Stalled(Duration),
    #[error("the stream ended")]
    Ended,
    #[error("ffmpeg could not read the stream ({0})")]
    Ffmpeg(std::process::ExitStatus),
    #[error("a frame could not be decoded: {0}")]
    Decode(#[from] image::ImageError),
    #[error("{0}")]
    Malformed(&'static str),
}

impl From<reqwest::Error> for Dropped {
    fn from(error: reqwest::Error) -> Self {
        Dropped::Http(error.without_url())
    }
}

/// Starts reading `source`; `name` labels its log lines (never the URL, which may carry
/// credentials). Reading stops when the `Stream` is dropped.
pub fn open(name: String, source: Source, options: StreamOptions) -> Stream {
    let (frames_tx, frames) = watch::channel(None);
    let (status_tx, status) = watch::channel(StreamStatus {
        state: StreamState::Connecting,
        opened: 0,
    });
    let task = tokio::spawn(async move {
        let mut publisher = Publisher {
            frames: frames_tx,
            status: status_tx,
            number: 0,
            last: None,
            min_gap: Duration::from_secs_f64(1.0 / options.fps.max(0.001)),
            folder_done: None,
        };
        let mut backoff = options.backoff;
        loop {
            publisher.set_state(StreamState::Connecting);
            let before = publisher.number;
            let outcome = match &source {
                Source::Ffmpeg { input, is_file } => {
                    read_ffmpeg(input, *is_file, &options, &mut publisher).await
                }
                Source::Http { url } => read_http(url, &options, &mut publisher).await,
                Source::Folder { path } => read_folder(path, &options, &mut publisher).await,
            };
            let ended_file = matches!(source, Source::Ffmpeg { is_file: true, .. })
                && matches!(outcome, Err(Dropped::Ended));
            if ended_file {
                tracing::info!(camera = %name, "the video file has ended");
                publisher.set_state(StreamState::Ended);
                return;
            }
            if publisher.number > before {
                backoff = options.backoff;
            }
            let reason = outcome.err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(camera = %name, %reason, retry_in = ?backoff, "camera stream dropped");
            publisher.set_state(StreamState::Down);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(options.backoff_max);
        }
    });
    Stream {
        frames,
        status,
        _task: CancelOnDrop(task),
    }
}

/// Hands frames on, at most `fps` a second.
struct Publisher {
    frames: watch::Sender<Option<Arc<OwnedFrame>>>,
    status: watch::Sender<StreamStatus>,
    number: u64,
    last: Option<Instant>,
    min_gap: Duration,
    /// A folder's last image shown.
    folder_done: Option<PathBuf>,
}

impl Publisher {
    fn set_state(&self, state: StreamState) {
        self.status.send_if_modified(|status| {
            let opening = state == StreamState::Up && status.state != StreamState::Up;
            status.opened += u64::from(opening);
            std::mem::replace(&mut status.state, state) != state
        });
    }

    /// Whether a frame arriving now would be published (decode it only then).
    fn wants(&self) -> bool {
        // A little slack, so that a stream at exactly `fps` loses no frame to jitter.
        self.last
            .is_none_or(|last| last.elapsed() >= self.min_gap.mul_f64(0.8))
    }

    fn publish(&mut self, width: usize, height: usize, rgb: Vec<u8>) {
        self.set_state(StreamState::Up);
        let now = Instant::now();
        self.last = Some(now);
        self.number += 1;
        self.frames.send_replace(Some(Arc::new(OwnedFrame {
            width,
            height,
            rgb,
            arrived: now,
            observed_at: Utc::now(),
            number: self.number,
        })));
    }

    fn publish_image(&mut self, bytes: &[u8]) -> Result<(), Dropped> {
        let image = image::load_from_memory(bytes)?.into_rgb8();
        let (width, height) = (image.width() as usize, image.height() as usize);
        self.publish(width, height, image.into_raw());
        Ok(())
    }
}

/// `ffmpeg -i INPUT -vf fps=F,scale=W:H -f rawvideo -pix_fmt rgb24 -`: raw frames of a known
/// size on its standard output. Files are read at their own frame rate (`-re`), as a camera
/// would send them.
async fn read_ffmpeg(
    input: &str,
    is_file: bool,
    options: &StreamOptions,
    publisher: &mut Publisher,
) -> Result<(), Dropped> {
    let mut command = tokio::process::Command::new(&options.ffmpeg);
    command.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
    if is_file {
        command.arg("-re");
    } else {
        command.args(["-rtsp_transport", "tcp"]);
    }
    command
        .args(["-i", input, "-an", "-vf"])
        .arg(format!(
            "fps={},scale={}:{}",
            options.fps, options.width, options.height
        ))
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let size = options.width * options.height * 3;
    loop {
        let mut rgb = vec![0u8; size];
        match tokio::time::timeout(options.stall, stdout.read_exact(&mut rgb)).await {
            Err(_) => return Err(Dropped::Stalled(options.stall)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                // A clean exit is the end of the input; any other is a failure to read it.
                let status = child.wait().await?;
                return Err(if status.success() {
                    Dropped::Ended
                } else {
                    Dropped::Ffmpeg(status)
                });
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => publisher.publish(options.width, options.height, rgb),
        }
    }
}

/// An HTTP camera: MJPEG (`multipart/x-mixed-replace`, or a body that starts with a
/// multipart boundary whatever its declared type, as some servers send it) read part by part,
/// or snapshots, one image per request, polled at `fps`.
async fn read_http(
    url: &str,
    options: &StreamOptions,
    publisher: &mut Publisher,
) -> Result<(), Dropped> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let mut response = get(&client, url).await?;
    let declared = (response.headers().get(reqwest::header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .and_then(multipart_boundary);
    let first = next_chunk(&mut response, options.stall).await?;
    match declared.or_else(|| sniffed_boundary(&first)) {
        Some(boundary) => {
            let mut parts = Multipart::new(&boundary);
            let mut chunk = first;
            loop {
                parts.push(&chunk);
                while let Some(part) = parts.next_part()? {
                    if publisher.wants() {
                        publisher.publish_image(&part)?;
                    }
                }
                chunk = next_chunk(&mut response, options.stall).await?;
            }
        }
        None => {
            // Snapshots: this answer is the first image.
            let mut next = tokio::time::Instant::now();
            let mut image = first.to_vec();
            loop {
                while let Some(chunk) = (tokio::time::timeout(options.stall, response.chunk()))
                    .await
                    .map_err(|_| Dropped::Stalled(options.stall))??
                {
                    if image.len() + chunk.len() > MAX_PART {
                        return Err(Dropped::Malformed("a snapshot is too large"));
                    }
                    image.extend_from_slice(&chunk);
                }
                publisher.publish_image(&image)?;
                next += publisher.min_gap;
                tokio::time::sleep_until(next).await;
                response = get(&client, url).await?;
                image = next_chunk(&mut response, options.stall).await?.to_vec();
            }
        }
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<reqwest::Response, Dropped> {
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        return Err(Dropped::Status(response.status()));
    }
    Ok(response)
}

/// The next piece of a body; its end is the stream's.
async fn next_chunk(
    response: &mut reqwest::Response,
    stall: Duration,
) -> Result<bytes::Bytes, Dropped> {
    tokio::time::timeout(stall, response.chunk())
        .await
        .map_err(|_| Dropped::Stalled(stall))??
        .ok_or(Dropped::Ended)
}

/// The boundary a body starts with (`--boundary\r\n`), if it starts with one.
fn sniffed_boundary(start: &[u8]) -> Option<String> {
    let line = start.strip_prefix(b"--")?;
    let end = find(line, b"\r\n")?;
    let boundary = std::str::from_utf8(&line[..end]).ok()?.trim();
    (!boundary.is_empty() && boundary.len() <= 70).then(|| boundary.to_owned())
}

/// The boundary of a `multipart/x-mixed-replace; boundary=...` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind
        .trim()
        .eq_ignore_ascii_case("multipart/x-mixed-replace")
    {
        return None;
    }
    params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The parts of a multipart body as its bytes arrive: each part's headers, then its body,
/// whose end is given by `Content-Length` or, without one, by the next boundary.
struct Multipart {
    delimiter: Vec<u8>,
    buffer: BytesMut,
}

/// Parts larger than this are not images from a camera.
const MAX_PART: usize = 32 << 20;

impl Multipart {
    fn new(boundary: &str) -> Self {
        let boundary = boundary.strip_prefix("--").unwrap_or(boundary);
        Self {
            delimiter: format!("--{boundary}").into_bytes(),
            buffer: BytesMut::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole part's body, if it has all arrived.
    fn next_part(&mut self) -> Result<Option<Vec<u8>>, Dropped> {
        let Some(start) = find(&self.buffer, &self.delimiter) else {
            if self.buffer.len() > MAX_PART {
                return Err(Dropped::Malformed("no multipart boundary"));
            }
            return Ok(None);
        };
        let headers_at = start + self.delimiter.len();
        let Some(headers_len) = find(&self.buffer[headers_at..], b"\r\n\r\n") else {
            return Ok(None);
        };
        let headers = String::from_utf8_lossy(&self.buffer[headers_at..headers_at + headers_len]);
        let length = headers.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        });
        let body_at = headers_at + headers_len + 4;
        let body_len = match length {
            Some(length) if length > MAX_PART => {
                return Err(Dropped::Malformed("a part is too large"))
            }
            Some(length) if self.buffer.len() >= body_at + length => length,
            Some(_) => return Ok(None),
            None => match find(&self.buffer[body_at..], &self.delimiter) {
                Some(next) => trim_crlf(&self.buffer[body_at..body_at + next]).len(),
                None if self.buffer.len() > MAX_PART => {
                    return Err(Dropped::Malformed("a part is too large"))
                }
                None => return Ok(None),
            },
        };
        let body = self.buffer[body_at..body_at + body_len].to_vec();
        self.buffer.advance(body_at + body_len);
        Ok(Some(body))
    }
}

fn trim_crlf(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\r\n").unwrap_or(bytes)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether a file is a JPEG or PNG picture, by its name.
pub(crate) fn is_image(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    ["jpg", "jpeg", "png"].contains(&extension.to_ascii_lowercase().as_str())
}

/// A folder of images: each in name order, at `fps`, then each new one as it appears. A folder
/// that gets no new image for `stall` shows as `down` until one comes; images already shown
/// are never shown again, across reopenings too.
async fn read_folder(
    path: &Path,
    options: &StreamOptions,
    publisher: &mut Publisher,
) -> Result<(), Dropped> {
    let mut idle = Instant::now();
    loop {
        let mut images: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .filter(|p| publisher.folder_done.as_ref().is_none_or(|done| p > done))
            .collect();
        images.sort();
        if images.is_empty() && idle.elapsed() > options.stall {
            publisher.set_state(StreamState::Down);
        }
        for image in images {
            let bytes = tokio::fs::read(&image).await?;
            publisher.folder_done = Some(image);
            publisher.publish_image(&bytes)?;
            idle = Instant::now();
            tokio::time::sleep(publisher.min_gap).await;
        }
        tokio::time::sleep(publisher.min_gap).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_by_scheme() {
        assert_eq!(
            Source::of("rtsp://u:p@cam/1").unwrap(),
            Source::Ffmpeg {
                input: "rtsp://u:p@cam/1".into(),
                is_file: false
            }
        );
        assert_eq!(
            Source::of("file:///no/such/video.mp4").unwrap(),
            Source::Ffmpeg {
                input: "/no/such/video.mp4".into(),
                is_file: true
            }
        );
        let dir = std::env::temp_dir();
        let folder = Source::of(&format!("file://{}", dir.display())).unwrap();
        assert_eq!(folder, Source::Folder { path: dir });
        assert!(matches!(
            Source::of("http://cam/x.mjpg"),
            Ok(Source::Http { .. })
        ));
        assert_eq!(Source::of("ftp://cam"), Err(UnknownScheme));
        assert_eq!(Source::of("cam"), Err(UnknownScheme));
    }

    #[test]
    fn the_boundary_of_a_multipart_stream() {
        assert_eq!(
            multipart_boundary("multipart/x-mixed-replace;boundary=ffmpeg").as_deref(),
            Some("ffmpeg")
        );
        assert_eq!(
            multipart_boundary("Multipart/X-Mixed-Replace; charset=x; boundary=\"--frame\"")
                .as_deref(),
            Some("--frame")
        );
        assert_eq!(multipart_boundary("image/jpeg"), None);
        assert_eq!(
            sniffed_boundary(b"--ffmpeg\r\nContent-type: image/jpeg\r\n").as_deref(),
            Some("ffmpeg")
        );
        assert_eq!(sniffed_boundary(b"\xff\xd8\xff\xe0"), None);
    }

    #[test]
    fn parts_split_with_and_without_lengths_across_chunks() {
        let body = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n\r\nAB\r\nC\r\n\
                     --frame\r\nContent-Type: image/jpeg\r\n\r\nDEFG\r\n--frame\r\n\r\nHI\r\n--frame";
        for chunk_size in [1, 3, 7, body.len()] {
            let mut parts = Multipart::new("--frame");
            let mut got = Vec::new();
            for chunk in body.chunks(chunk_size) {
                parts.push(chunk);
                while let Some(part) = parts.next_part().unwrap() {
                    got.push(part);
                }
            }
            assert_eq!(
                got,
                vec![b"AB\r\nC".to_vec(), b"DEFG".to_vec(), b"HI".to_vec()],
                "chunks of {chunk_size}"
            );
        }
    }

    #[test]
    fn an_endless_part_is_refused() {
        let mut parts = Multipart::new("b");
        parts.push(b"--b\r\nContent-Length: 999999999999\r\n\r\n");
        assert!(parts.next_part().is_err());
    }
}
