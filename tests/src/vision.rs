//! The vision worker as a process, and camera streams made by `ffmpeg` on 127.0.0.1: videos
//! rendered from a synthetic scene, read as files or served as MJPEG over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_vision::synth::Scene;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

pub use crate::free_port;
use crate::TestApp;

/// A lot whose slots a camera sees, and a service account's credentials for the worker.
pub struct CameraLot {
    pub lot_id: Uuid,
    pub owner_token: String,
    pub camera_id: Uuid,
    /// In the order of the polygons given.
    pub slots: Vec<Uuid>,
    pub email: String,
    pub password: &'static str,
}

/// A lot with a slot per polygon, and a camera at `stream_url` that sees each slot at its
/// polygon.
pub async fn camera_lot(app: &TestApp, polygons: &[Vec<[f64; 2]>], stream_url: &str) -> CameraLot {
    let fx = app.lot_with_slot().await;
    let mut slots = vec![fx.slot_id];
    for i in 1..polygons.len() {
        let slot = app
            .post(
                &format!("/api/v1/lots/{}/slots", fx.lot_id),
                Some(&fx.owner_token),
                json!({"label": format!("B{i}"), "slot_type": "standard"}),
            )
            .await;
        assert_eq!(slot.status, StatusCode::CREATED, "{slot:?}");
        slots.push(slot.id());
    }
    let camera_id = Uuid::new_v4();
    let body = json!({"stream_url": stream_url, "slots": camera_slots(&slots, polygons)});
    let configured = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/lots/{}/cameras/{camera_id}", fx.lot_id),
            Some(&fx.owner_token),
            Some(body),
        )
        .await;
    assert_eq!(configured.status, StatusCode::OK, "{configured:?}");
    let (email, password) = app.service_credentials().await;
    CameraLot {
        lot_id: fx.lot_id,
        owner_token: fx.owner_token,
        camera_id,
        slots,
        email,
        password,
    }
}

/// Each slot at its polygon, as a camera's configuration lists them.
pub fn camera_slots(slots: &[Uuid], polygons: &[Vec<[f64; 2]>]) -> Vec<Value> {
    (slots.iter().zip(polygons))
        .map(|(slot_id, polygon)| json!({"slot_id": slot_id, "polygon": polygon}))
        .collect()
}

/// The worker on a cameras file (written into `dir`) holding one camera that sees `slots` at
/// `polygons`, at `fps`, its observations written to its log rather than sent.
pub async fn logging_worker(
    dir: &Path,
    camera_id: Uuid,
    stream_url: &str,
    slots: &[Uuid],
    polygons: &[Vec<[f64; 2]>],
    fps: u32,
) -> VisionWorker {
    let cameras = json!({"items": [{
        "camera_id": camera_id, "stream_url": stream_url,
        "slots": camera_slots(slots, polygons),
    }]});
    let file = dir.join("cameras.json");
    std::fs::write(&file, cameras.to_string()).expect("the cameras file");
    let file = file.to_str().expect("a UTF-8 path");
    let fps = fps.to_string();
    VisionWorker::start(&["--cameras", file, "--publish", "log", "--fps", &fps], &[]).await
}

/// `parking-vision run` with `args`, its HTTP port on a free port; stopped when dropped.
pub struct VisionWorker {
    process: Child,
    pub address: String,
    log: PathBuf,
    client: reqwest::Client,
}

impl VisionWorker {
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("parking-vision-{port}.log"));
        let file = std::fs::File::create(&log).expect("the worker's log");
        let exe = std::env::current_exe().expect("the running executable");
        let binary = (exe.ancestors().skip(1).take(2))
            .map(|dir| dir.join("parking-vision"))
            .find(|path| path.exists())
            .expect("parking-vision is built with the workspace's tests");
        let process = Command::new(binary)
            .arg("run")
            .args(["--listen", &listen])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,parking_vision=debug")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start parking-vision");
        let worker = Self {
            process,
            address: format!("http://{listen}"),
            log,
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while worker
            .client
            .get(format!("{}/health", worker.address))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "parking-vision did not start:\n{}",
                worker.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worker
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of the metric line starting with `prefix` (name and labels), if shown.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = (self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await)
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// Waits until the metric reaches `at_least`.
    pub async fn wait_for_metric(&self, prefix: &str, at_least: f64, patience: Duration) {
        let deadline = Instant::now() + patience;
        while self.metric(prefix).await.unwrap_or(0.0) < at_least {
            assert!(
                Instant::now() < deadline,
                "{prefix} did not reach {at_least}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM; whether it exited cleanly within `patience`.
    pub fn terminate(&mut self, patience: Duration) -> bool {
        crate::terminate(&mut self.process, patience).unwrap_or(false)
    }
}

impl Drop for VisionWorker {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if std::thread::panicking() {
            eprintln!("--- log of parking-vision:\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The `ffmpeg` program (Debian's, installed by scripts/test.sh).
fn ffmpeg() -> Command {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    command
}

/// Renders `scene` with each frame's slot states into an MJPEG video (AVI) at `fps`.
pub fn render_video(scene: &Scene, frames: &[Vec<bool>], fps: u32, path: &Path) {
    use std::io::Write;
    let mut child = ffmpeg()
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s"])
        .arg(format!("{}x{}", scene.width, scene.height))
        .args(["-r", &fps.to_string(), "-i", "-"])
        .args(["-c:v", "mjpeg", "-q:v", "3"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed (scripts/test.sh installs it)");
    {
        let mut stdin = child.stdin.take().expect("piped");
        for states in frames {
            stdin
                .write_all(&scene.render(states))
                .expect("ffmpeg reads frames");
        }
    }
    assert!(
        child.wait().expect("ffmpeg").success(),
        "ffmpeg made no video"
    );
}

/// A schedule: `total` frames of `slots` slots, all free, with the changes `(frame, slot,
/// occupied)` applied from their frame on.
pub fn schedule(total: usize, slots: usize, changes: &[(usize, usize, bool)]) -> Vec<Vec<bool>> {
    let mut states = vec![false; slots];
    (0..total)
        .map(|frame| {
            for &(at, slot, occupied) in changes {
                if at == frame {
                    states[slot] = occupied;
                }
            }
            states.clone()
        })
        .collect()
}

/// `ffmpeg` serving a video as MJPEG over HTTP at its own pace, to one client, on `port`.
pub struct MjpegServer {
    process: Child,
    pub url: String,
}

impl MjpegServer {
    pub async fn start(video: &Path, port: u16) -> Self {
        let url = format!("http://127.0.0.1:{port}/camera.mjpg");
        let process = ffmpeg()
            .arg("-re")
            .arg("-i")
            .arg(video)
            .args(["-c:v", "copy", "-f", "mpjpeg", "-listen", "1"])
            .arg(&url)
            .spawn()
            .expect("ffmpeg is installed (scripts/test.sh installs it)");
        // Not probed by connecting: ffmpeg serves the first connection only.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(port) {
            assert!(Instant::now() < deadline, "ffmpeg did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { process, url }
    }

    /// Cuts the stream: the server dies mid-video.
    pub fn cut(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for MjpegServer {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Whether something listens on the TCP `port` (IPv4), from /proc/net/tcp.
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "0A"
    })
}
