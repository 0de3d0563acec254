//! # parking-vision
//!
//! The vision worker's binary (docs/vision.md):
//!
//! - `train`: trains the classifier on synthetic crops and folders of labelled crops;
//! - `eval`: accuracy, precision, recall and a confusion matrix on a folder or a synthetic set;
//! - `generate`: writes synthetic crops as a folder in the PKLot layout;
//! - `run`: the worker: cameras to observations, and its HTTP port;
//! - `openapi`: prints the HTTP port's OpenAPI document.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use parking_infra::config::ClientProperties;
use parking_infra::telemetry::{self, LogFormat};
use parking_vision::camera::CameraOptions;
use parking_vision::model::{Classifier, Trainable, INPUT, SHIPPED};
use parking_vision::publish::{Platform, Sink};
use parking_vision::run::{Cameras, RunOptions};
use parking_vision::smooth::Hysteresis;
use parking_vision::stream::StreamOptions;
use parking_vision::train::{self, Sample, TrainOptions};
use secrecy::SecretString;
use uuid::Uuid;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "parking-vision", about = "Camera streams to slot occupancy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the worker: the cameras' streams to occupancy observations.
    Run(Box<RunArgs>),
    /// Trains the classifier and writes its weights (safetensors).
    Train(TrainArgs),
    /// Measures the classifier on labelled crops.
    Eval(EvalArgs),
    /// Writes synthetic crops as PNG files under OUT/Empty and OUT/Occupied.
    Generate(GenerateArgs),
    /// Prints the OpenAPI document of the worker's HTTP port.
    Openapi,
}

#[derive(Args)]
struct RunArgs {
    /// A lot whose cameras to run, read from the platform (may be repeated, or a comma list).
    #[arg(long = "lot", env = "VISION_LOTS", value_delimiter = ',')]
    lots: Vec<Uuid>,
    /// A file of cameras in the shape of `GET /api/v1/lots/{lot_id}/cameras`, instead of lots.
    #[arg(long, env = "VISION_CAMERAS_FILE", conflicts_with = "lots")]
    cameras: Option<PathBuf>,
    /// The platform's base URL (the cameras of `--lot`, and `--publish http`).
    #[arg(long, env = "PARKING_API_URL")]
    api: Option<String>,
    /// Where observations go.
    #[arg(long, env = "VISION_PUBLISH", value_enum, default_value_t = PublishTo::Http)]
    publish: PublishTo,
    /// The HTTP port (`/metrics`, `/v1/detect`).
    #[arg(long, env = "VISION_LISTEN", default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Frames decoded per second and camera, at most.
    #[arg(long, env = "VISION_FPS", default_value_t = 2.0)]
    fps: f64,
    /// The size `ffmpeg` scales RTSP and video frames to.
    #[arg(long, env = "VISION_FRAME_WIDTH", default_value_t = 1280)]
    frame_width: usize,
    #[arg(long, env = "VISION_FRAME_HEIGHT", default_value_t = 720)]
    frame_height: usize,
    /// Sure frames in a row before a slot's state changes.
    #[arg(long, env = "VISION_HYSTERESIS_FRAMES", default_value_t = 3)]
    hysteresis_frames: u32,
    /// How often every settled state is reported again.
    #[arg(long, env = "VISION_HEARTBEAT_SECONDS", default_value_t = 60)]
    heartbeat_seconds: u64,
    /// How often the cameras' configuration is read again.
    #[arg(long, env = "VISION_REFRESH_SECONDS", default_value_t = 60)]
    refresh_seconds: u64,
    /// The longest wait before opening a dropped stream again.
    #[arg(long, env = "VISION_RECONNECT_MAX_SECONDS", default_value_t = 30)]
    reconnect_max_seconds: u64,
    /// A stream that gives no frame for this long is opened again.
    #[arg(long, env = "VISION_STALL_SECONDS", default_value_t = 20)]
    stall_seconds: u64,
    /// Weights to run instead of the shipped ones.
    #[arg(long, env = "VISION_WEIGHTS")]
    weights: Option<PathBuf>,
    /// The ffmpeg program.
    #[arg(long, env = "FFMPEG", default_value = "ffmpeg")]
    ffmpeg: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum PublishTo {
    /// `POST /api/v1/slots/{slot_id}/occupancy` on the platform.
    Http,
    /// The topic `parking.vision.observations` on `KAFKA_BROKERS`.
    Kafka,
    /// The log only.
    Log,
}

#[derive(Args)]
struct TrainArgs {
    /// Seed of everything random: the synthetic crops, the starting weights, the order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many synthetic crops to train on (0: folders only).
    #[arg(long, default_value_t = 40_000)]
    synthetic: usize,
    /// A folder of labelled crops (`Empty/`, `Occupied/` at any depth); may be repeated.
    #[arg(long = "data")]
    folders: Vec<PathBuf>,
    /// Start from these weights instead of fresh ones (fine-tuning); `shipped` for the
    /// weights compiled into this binary.
    #[arg(long)]
    from: Option<String>,
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    /// Where to write the weights.
    #[arg(long, default_value = "vision-worker/model/occupancy.safetensors")]
    out: PathBuf,
}

#[derive(Args)]
struct EvalArgs {
    /// A folder of labelled crops (`Empty/`, `Occupied/` at any depth). Without it, a
    /// synthetic set is drawn from `--seed`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seed of the synthetic set (choose one training did not use).
    #[arg(long, default_value_t = 1_000_001)]
    seed: u64,
    /// Size of the synthetic set.
    #[arg(long, default_value_t = 10_000)]
    synthetic: usize,
    /// Weights to measure (default: the shipped ones).
    #[arg(long)]
    weights: Option<PathBuf>,
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1_000)]
    count: usize,
    #[arg(long, default_value_t = 1_000_001)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Train(args) => train_command(args),
        Command::Eval(args) => eval_command(args),
        Command::Generate(args) => generate_command(args),
        Command::Run(args) => run_command(*args),
        Command::Openapi => {
            print!("{}", parking_vision::server::openapi_json());
            Ok(())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("parking-vision: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn train_command(args: TrainArgs) -> anyhow::Result<()> {
    let mut samples = train::synthetic(args.seed, args.synthetic);
    for folder in &args.folders {
        samples.extend(train::folder(folder)?);
    }
    anyhow::ensure!(!samples.is_empty(), "nothing to train on");
    let validation = train::synthetic(args.seed.wrapping_add(0x7a11d), 2_000);
    let model = match args.from.as_deref() {
        None => Trainable::fresh(args.seed)?,
        Some("shipped") => Trainable::from_safetensors(SHIPPED)?,
        Some(path) => Trainable::from_safetensors(&std::fs::read(path)?)?,
    };
    let options = TrainOptions {
        seed: args.seed,
        epochs: args.epochs,
        batch: args.batch,
        learning_rate: args.learning_rate,
    };
    eprintln!(
        "training on {} crops ({} synthetic) for {} epochs",
        samples.len(),
        args.synthetic,
        args.epochs
    );
    train::train(&model, &samples, &validation, &options, |epoch| {
        eprintln!(
            "epoch {:>2}: loss {:.4}, validation accuracy {:.2}% ({:.0} s)",
            epoch.number,
            epoch.mean_loss,
            100.0 * epoch.validation.accuracy(),
            epoch.seconds
        );
    })?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    model.save(&args.out)?;
    eprintln!("weights written to {}", args.out.display());
    Ok(())
}

fn eval_command(args: EvalArgs) -> anyhow::Result<()> {
    let classifier = match &args.weights {
        Some(path) => Classifier::load(path)?,
        None => Classifier::shipped(),
    };
    let samples: Vec<Sample> = match &args.data {
        Some(folder) => train::folder(folder)?,
        None => train::synthetic(args.seed, args.synthetic),
    };
    println!("{}", train::evaluate(&classifier, &samples)?);
    Ok(())
}

fn generate_command(args: GenerateArgs) -> anyhow::Result<()> {
    for name in ["Empty", "Occupied"] {
        std::fs::create_dir_all(args.out.join(name))?;
    }
    for (i, sample) in train::synthetic(args.seed, args.count)
        .into_iter()
        .enumerate()
    {
        let folder = if sample.occupied { "Occupied" } else { "Empty" };
        let path = (args.out.join(folder)).join(format!("{}-{i:06}.png", sample.group));
        image::RgbImage::from_raw(INPUT as u32, INPUT as u32, sample.rgb)
            .expect("a crop is INPUT × INPUT RGB")
            .save(&path)?;
    }
    println!("{} crops written under {}", args.count, args.out.display());
    Ok(())
}

fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let format = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Pretty,
    };
    telemetry::init(format);
    let classifier = match &args.weights {
        Some(path) => Classifier::load(path)?,
        None => Classifier::shipped(),
    };
    let platform = || -> anyhow::Result<Arc<Platform>> {
        let api = (args.api.as_deref())
            .ok_or_else(|| anyhow::anyhow!("PARKING_API_URL (--api) is not set"))?;
        let email = std::env::var("PARKING_VISION_EMAIL")
            .map_err(|_| anyhow::anyhow!("PARKING_VISION_EMAIL is not set"))?;
        let password = std::env::var("PARKING_VISION_PASSWORD")
            .map_err(|_| anyhow::anyhow!("PARKING_VISION_PASSWORD is not set"))?;
        Ok(Arc::new(Platform::new(
            api,
            email,
            SecretString::from(password),
        )?))
    };
    let cameras = match (&args.cameras, args.lots.is_empty()) {
        (Some(file), _) => Cameras::File(file.clone()),
        (None, false) => Cameras::Platform {
            platform: platform()?,
            lots: args.lots.clone(),
        },
        (None, true) => anyhow::bail!("name the lots (--lot, VISION_LOTS) or a cameras file"),
    };
    let sink = match args.publish {
        PublishTo::Http => Sink::Http(match &cameras {
            Cameras::Platform { platform, .. } => platform.clone(),
            Cameras::File(_) => platform()?,
        }),
        PublishTo::Kafka => {
            let brokers = std::env::var("KAFKA_BROKERS")
                .map_err(|_| anyhow::anyhow!("KAFKA_BROKERS is not set"))?;
            let properties = match std::env::var("KAFKA_CLIENT_PROPERTIES_FILE") {
                Ok(path) if !path.trim().is_empty() => ClientProperties::read(&path)?,
                _ => ClientProperties::default(),
            };
            let config = parking_infra::kafka::brokers_config(&brokers, &properties);
            let platform = match &cameras {
                Cameras::Platform { platform, .. } => Some(platform.clone()),
                Cameras::File(_) => platform().ok(),
            };
            Sink::kafka(config, platform)?
        }
        PublishTo::Log => Sink::Log,
    };
    let options = RunOptions {
        cameras,
        refresh: Duration::from_secs(args.refresh_seconds.max(1)),
        camera: CameraOptions {
            stream: StreamOptions {
                fps: args.fps,
                width: args.frame_width,
                height: args.frame_height,
                ffmpeg: args.ffmpeg,
                backoff: Duration::from_secs(1),
                backoff_max: Duration::from_secs(args.reconnect_max_seconds.max(1)),
                stall: Duration::from_secs(args.stall_seconds.max(1)),
            },
            hysteresis: Hysteresis {
                frames: args.hysteresis_frames.max(1),
                ..Hysteresis::default()
            },
            heartbeat: Duration::from_secs(args.heartbeat_seconds.max(1)),
        },
        listen: args.listen,
        flush: Duration::from_secs(5),
    };
    actix_web::rt::System::new().block_on(async move {
        parking_vision::run::run(options, classifier, sink, shutdown_signal()).await
    })
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
