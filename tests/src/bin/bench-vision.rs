//! Benchmark of the vision worker on this machine kind, for a camera that sees 100 slots:
//!
//! 1. **CPU per frame.** A rendered 1280 × 720 picture of 100 slots (20 × 5), as a camera
//!    sends it (JPEG), `BENCH_FRAMES` times (default 40), on one thread (`RAYON_NUM_THREADS=1`
//!    is set for candle): the CPU time (user + system, from `/proc`) of decoding the JPEG,
//!    warping the 100 slots to crops, and classifying the crops. The figure: crops classified
//!    per CPU-second (a core's capacity), and each step's share of a frame.
//! 2. **Frame → recorded.** The real server (in this process, on a fresh database) and the
//!    real worker (`target/release/parking-vision`, a process of its own) with that camera
//!    served as MJPEG over HTTP by `ffmpeg` at 5 frames a second, and the worker at 5 frames
//!    a second: all 100 slots free, then 50 fill at once, then one empties. For every
//!    observation the platform recorded, the time from the frame's arrival at the worker
//!    (the observation's `observed_at`) to the event's `recorded_at`: p50, p95 and max, for the
//!    burst of 100 first states, the 50 at once, and the single change.
//!
//! Run: `cargo build --release --locked -p parking-vision &&
//! cargo run --release --locked --bin bench-vision` (`ffmpeg` installed, as scripts/test.sh
//! does).

use std::time::{Duration, Instant};

use parking_tests::load::{bench_main, env};
use parking_tests::spawn_app;
use parking_tests::vision::{
    camera_lot, free_port, render_video, schedule, MjpegServer, VisionWorker,
};
use parking_vision::camera::{classify_frame, SlotSpec};
use parking_vision::crop::{crop, Frame};
use parking_vision::model::{Classifier, INPUT};
use parking_vision::synth::{Condition, Scene};
use uuid::Uuid;

const WIDTH: usize = 1280;
const HEIGHT: usize = 720;
const FPS: u32 = 5;

/// This process's CPU time so far (user + system).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let after = &stat[stat.rfind(')').expect("a command") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn main() -> anyhow::Result<()> {
    // One thread for candle's matrix products, set before any thread exists.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    bench_main(run)
}

async fn run() -> anyhow::Result<()> {
    let scene = Scene::new(21, WIDTH, HEIGHT, 20, 5, Condition::Day);
    cpu_per_frame(&scene)?;
    frame_to_recorded(&scene).await
}

fn cpu_per_frame(scene: &Scene) -> anyhow::Result<()> {
    let frames = env("BENCH_FRAMES", 40) as usize;
    let classifier = Classifier::shipped();
    let occupied: Vec<bool> = (0..100).map(|i| i % 3 == 0).collect();
    let picture = image::RgbImage::from_raw(WIDTH as u32, HEIGHT as u32, scene.render(&occupied))
        .expect("a frame");
    let mut jpeg = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut jpeg, image::ImageFormat::Jpeg)?;
    let jpeg = jpeg.into_inner();
    let slots: Vec<SlotSpec> = scene
        .polygons
        .iter()
        .map(|p| SlotSpec {
            slot_id: Uuid::new_v4(),
            polygon: parking_domain::lot::Polygon::new(p.clone()).expect("a slot"),
        })
        .collect();

    let (mut decode, mut warp, mut classify) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let wall = Instant::now();
    for _ in 0..frames {
        let start = cpu();
        let rgb = image::load_from_memory(&jpeg)?.into_rgb8();
        let decoded = cpu();
        let frame = Frame {
            width: WIDTH,
            height: HEIGHT,
            rgb: rgb.as_raw(),
        };
        let crops: Vec<Vec<u8>> = (slots.iter())
            .map(|s| crop(&frame, s.polygon.points(), INPUT))
            .collect();
        let warped = cpu();
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let p = classifier.classify(&refs)?;
        let classified = cpu();
        assert_eq!(p.len(), 100);
        decode += decoded - start;
        warp += warped - decoded;
        classify += classified - warped;
    }
    let wall = wall.elapsed();
    // The worker's own path, once, to check it agrees with the steps timed apart.
    let rgb = image::load_from_memory(&jpeg)?.into_rgb8();
    let frame = Frame {
        width: WIDTH,
        height: HEIGHT,
        rgb: rgb.as_raw(),
    };
    let p = classify_frame(&classifier, &frame, &slots)?;
    let right = (p.iter().zip(&occupied))
        .filter(|(p, o)| (**p >= 0.5) == **o)
        .count();

    let n = frames as f64;
    let total = decode + warp + classify;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / n;
    println!("CPU per frame of a 100-slot 1280x720 camera ({frames} frames, one thread):");
    for (step, time) in [
        ("JPEG decode", decode),
        ("warp 100 crops", warp),
        ("classify 100 crops", classify),
    ] {
        println!(
            "  {step:<19} {:>7.2} ms  ({:>4.1} % of the frame)",
            ms(time),
            100.0 * time.as_secs_f64() / total.as_secs_f64()
        );
    }
    println!(
        "  {:<19} {:>7.2} ms  (wall {:.2} ms)",
        "frame",
        ms(total),
        wall.as_secs_f64() * 1000.0 / n
    );
    println!(
        "  classifier: {:.0} crops per CPU-second; whole frames: {:.1} per CPU-second ({:.0} crops)",
        100.0 * n / classify.as_secs_f64(),
        n / total.as_secs_f64(),
        100.0 * n / total.as_secs_f64()
    );
    println!("  (this rendered frame: {right} of 100 slots judged right)");
    Ok(())
}

async fn frame_to_recorded(scene: &Scene) -> anyhow::Result<()> {
    let app = spawn_app().await;
    // Free for 15 frames; every other slot fills at frame 15; slot 0 empties at frame 40.
    let mut changes: Vec<(usize, usize, bool)> =
        (0..100).step_by(2).map(|s| (15, s, true)).collect();
    changes.push((40, 0, false));
    let frames = schedule(60, 100, &changes);
    let dir = std::env::temp_dir().join(format!("bench-vision-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let video = dir.join("camera.avi");
    render_video(scene, &frames, FPS, &video);
    let port = free_port();
    let camera = MjpegServer::start(&video, port).await;
    let lot = camera_lot(&app, &scene.polygons, &camera.url).await;
    let camera_id = lot.camera_id;
    let (email, password) = (lot.email.clone(), lot.password);
    let lot = lot.lot_id.to_string();
    let fps = FPS.to_string();
    let worker = VisionWorker::start(
        &[
            "--lot",
            &lot,
            "--api",
            &app.address,
            "--fps",
            &fps,
            "--heartbeat-seconds",
            "3600",
            "--refresh-seconds",
            "3600",
        ],
        &[
            ("PARKING_VISION_EMAIL", &email),
            ("PARKING_VISION_PASSWORD", password),
        ],
    )
    .await;
    let ended = format!("parking_vision_stream_state{{camera=\"{camera_id}\",state=\"down\"}}");
    worker
        .wait_for_metric(&ended, 1.0, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // (sequence of the slot's observation, latency in ms)
    let rows: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT row_number() OVER (PARTITION BY aggregate_id ORDER BY sequence),
                (extract(epoch FROM recorded_at - (payload -> 'SlotOccupancyObserved' ->> 'observed_at')::timestamptz) * 1000)::float8
         FROM events WHERE event_type = 'SlotOccupancyObserved'",
    )
    .fetch_all(&app.db)
    .await?;
    let mut first: Vec<f64> = rows.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
    let mut second: Vec<f64> = rows.iter().filter(|r| r.0 == 2).map(|r| r.1).collect();
    let mut third: Vec<f64> = rows.iter().filter(|r| r.0 == 3).map(|r| r.1).collect();
    println!();
    println!("Frame arrival -> observation recorded, 100-slot camera, MJPEG at {FPS} fps:");
    for (what, latencies, expected) in [
        ("first states (all at once)", &mut first, 100),
        ("50 slots filling at once", &mut second, 50),
        ("one slot emptying", &mut third, 1),
    ] {
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        if latencies.is_empty() {
            println!("  {what:<27} none recorded (expected {expected})");
            continue;
        }
        println!(
            "  {what:<27} {:>3} of {expected:>3}: p50 {:>6.1} ms  p95 {:>6.1} ms  max {:>6.1} ms",
            latencies.len(),
            at(0.5),
            at(0.95),
            at(1.0)
        );
    }
    drop(camera);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
