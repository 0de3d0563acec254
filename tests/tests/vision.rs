//! The vision worker end to end: `ffmpeg`-made camera streams on 127.0.0.1 showing a rendered
//! lot whose slots change at known frames, the worker reading them, and what the platform
//! records; `POST /v1/detect` on rendered frames.

use std::time::{Duration, Instant};

use base64::Engine;
use chrono::Utc;
use parking_tests::vision::{
    camera_lot, camera_slots, free_port, logging_worker, render_video, schedule, CameraLot,
    MjpegServer, VisionWorker,
};
use parking_tests::{spawn_app, TestApp};
use parking_vision::synth::{Condition, Scene};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const FPS: u32 = 10;

async fn start_worker(app: &TestApp, lot: &CameraLot, scene: &Scene) -> VisionWorker {
    let lot_id = lot.lot_id.to_string();
    let (width, height) = (scene.width.to_string(), scene.height.to_string());
    let fps = FPS.to_string();
    VisionWorker::start(
        &[
            "--lot",
            &lot_id,
            "--api",
            &app.address,
            "--publish",
            "http",
            "--fps",
            &fps,
            "--frame-width",
            &width,
            "--frame-height",
            &height,
            "--heartbeat-seconds",
            "2",
            "--refresh-seconds",
            "3600",
        ],
        &[
            ("PARKING_VISION_EMAIL", &lot.email),
            ("PARKING_VISION_PASSWORD", lot.password),
        ],
    )
    .await
}

/// One recorded observation of a slot.
#[derive(Debug, Clone)]
struct Recorded {
    occupied: bool,
    camera_id: Option<Uuid>,
}

/// What the platform recorded of `slot`, in order.
async fn recorded(app: &TestApp, slot: Uuid) -> Vec<Recorded> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT payload -> 'SlotOccupancyObserved' FROM events
         WHERE aggregate_type = 'slot' AND aggregate_id = $1
           AND event_type = 'SlotOccupancyObserved' ORDER BY sequence",
    )
    .bind(slot.to_string())
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|row| Recorded {
            occupied: row["occupied"].as_bool().unwrap(),
            camera_id: row["camera_id"].as_str().map(|id| id.parse().unwrap()),
        })
        .collect()
}

/// Waits until every slot has recorded `expected[slot]` states (or more), then a moment more
/// for any extra to show; asserts the platform recorded exactly those states, and returns
/// what it recorded.
async fn wait_for_states(
    app: &TestApp,
    worker: &VisionWorker,
    slots: &[Uuid],
    expected: &[Vec<bool>],
    patience: Duration,
) -> Vec<Vec<Recorded>> {
    let deadline = Instant::now() + patience;
    loop {
        let mut all = Vec::new();
        for slot in slots {
            all.push(recorded(app, *slot).await);
        }
        if all
            .iter()
            .zip(expected)
            .all(|(got, want)| got.len() >= want.len())
        {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut settled = Vec::new();
            for slot in slots {
                settled.push(recorded(app, *slot).await);
            }
            assert_eq!(states(&settled), expected, "{}", worker.log());
            return settled;
        }
        assert!(
            Instant::now() < deadline,
            "the platform recorded {:?}, expected {expected:?}\n{}",
            all.iter()
                .map(|r| r.iter().map(|o| o.occupied).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn states(recorded: &[Vec<Recorded>]) -> Vec<Vec<bool>> {
    recorded
        .iter()
        .map(|r| r.iter().map(|o| o.occupied).collect())
        .collect()
}

#[tokio::test]
async fn a_video_file_camera_reports_exactly_the_changes_it_shows() {
    let app = spawn_app().await;
    let scene = Scene::new(11, 320, 240, 2, 2, Condition::Day);
    // Slot 0 fills at frame 20 and empties at 55; slot 2 fills at frame 40; 1 and 3 stay free.
    let frames = schedule(75, 4, &[(20, 0, true), (40, 2, true), (55, 0, false)]);
    let dir = std::env::temp_dir().join(format!("vision-file-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let video = dir.join("scene.avi");
    render_video(&scene, &frames, FPS, &video);
    let lot = camera_lot(
        &app,
        &scene.polygons,
        &format!("file://{}", video.display()),
    )
    .await;
    let worker = start_worker(&app, &lot, &scene).await;

    let expected = vec![
        vec![false, true, false],
        vec![false],
        vec![false, true],
        vec![false],
    ];
    let got = wait_for_states(
        &app,
        &worker,
        &lot.slots,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    assert!(got
        .iter()
        .flatten()
        .all(|o| o.camera_id == Some(lot.camera_id)));
    // Each change is reported within a bounded number of frames of the first frame showing
    // it: the third sure frame settles it (two frames after the first), give or take 3
    // frames the worker may skip when it falls behind. The worker logs each settled change
    // with the frame's number (1 for the first frame).
    let log = worker.log();
    let settled_at = |slot: Uuid, occupied: bool| -> Vec<i64> {
        (log.lines())
            .filter(|line| line.contains("slot changed"))
            .filter(|line| line.contains(&format!("slot={slot}")))
            .filter(|line| line.contains(&format!("occupied={occupied}")))
            .filter_map(|line| line.rsplit("frame=").next()?.trim().parse().ok())
            .collect()
    };
    for (slot, occupied, shown_from) in [(0, true, 20), (2, true, 40), (0, false, 55)] {
        let frames = settled_at(lot.slots[slot], occupied);
        let first_shown = shown_from + 1;
        assert!(
            frames.iter().any(|&f| (first_shown + 2..=first_shown + 5).contains(&f)),
            "slot {slot} settled {occupied} at frames {frames:?}, shown from frame {first_shown}\n{log}"
        );
    }

    let file_ended = format!(
        "parking_vision_stream_state{{camera=\"{}\",state=\"ended\"}}",
        lot.camera_id
    );
    worker
        .wait_for_metric(&file_ended, 1.0, Duration::from_secs(30))
        .await;
    let frames_seen = worker
        .metric(&format!(
            "parking_vision_frames_total{{camera=\"{}\"}}",
            lot.camera_id
        ))
        .await
        .unwrap();
    assert!(frames_seen >= 70.0, "{frames_seen} of 75 frames classified");
    // The camera's lighting, reported with the heartbeat, is the lot's ai_safety_score: once
    // the video has ended, the platform comes to within a step (5) of what the camera measured.
    let score = format!(
        "parking_vision_lighting_score{{camera=\"{}\"}}",
        lot.camera_id
    );
    let measured = worker.metric(&score).await.expect("a lighting score");
    assert!((0.0..=100.0).contains(&measured));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let safety = app
            .get(&format!("/api/v1/lots/{}/safety", lot.lot_id), None)
            .await;
        let ai = safety.body["ai_safety_score"].as_f64();
        if ai.is_some_and(|ai| (ai - measured).abs() < 5.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ai_safety_score {ai:?}, the camera measures {measured}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_mjpeg_camera_cut_mid_run_is_reconnected() {
    let app = spawn_app().await;
    let scene = Scene::new(12, 320, 240, 2, 1, Condition::Day);
    let dir = std::env::temp_dir().join(format!("vision-mjpeg-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (before, after) = (dir.join("before.avi"), dir.join("after.avi"));
    render_video(&scene, &schedule(200, 2, &[]), FPS, &before);
    render_video(&scene, &schedule(200, 2, &[(0, 1, true)]), FPS, &after);
    let port = free_port();
    let mut camera = MjpegServer::start(&before, port).await;
    // The camera's URL carries credentials: they must never reach a log line.
    let with_credentials = camera.url.replace("http://", "http://viewer:s3cret-pass@");
    let lot = camera_lot(&app, &scene.polygons, &with_credentials).await;
    let mut worker = start_worker(&app, &lot, &scene).await;

    let settled = vec![vec![false], vec![false]];
    wait_for_states(&app, &worker, &lot.slots, &settled, Duration::from_secs(60)).await;
    let up = format!(
        "parking_vision_stream_state{{camera=\"{}\",state=\"up\"}}",
        lot.camera_id
    );
    assert_eq!(worker.metric(&up).await, Some(1.0));

    // The camera dies mid-stream; it comes back showing a car in slot 1.
    camera.cut();
    let down = format!(
        "parking_vision_stream_state{{camera=\"{}\",state=\"down\"}}",
        lot.camera_id
    );
    worker
        .wait_for_metric(&down, 1.0, Duration::from_secs(30))
        .await;
    let _camera = MjpegServer::start(&after, port).await;
    let expected = vec![vec![false], vec![false, true]];
    wait_for_states(
        &app,
        &worker,
        &lot.slots,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    let reconnects = format!(
        "parking_vision_stream_reconnects_total{{camera=\"{}\"}}",
        lot.camera_id
    );
    assert_eq!(worker.metric(&reconnects).await, Some(1.0));
    assert_eq!(worker.metric(&up).await, Some(1.0));
    assert!(
        worker.terminate(Duration::from_secs(10)),
        "clean shutdown on SIGTERM"
    );
    let log = worker.log();
    assert!(log.contains("camera stream dropped"), "{log}");
    assert!(!log.contains("s3cret-pass"), "{log}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn detect_answers_each_slots_occupancy_in_a_frame() {
    let scene = Scene::new(13, 480, 320, 3, 2, Condition::Day);
    let occupied = [true, false, true, false, false, true];
    let picture = image::RgbImage::from_raw(480, 320, scene.render(&occupied)).unwrap();
    let encode = |format| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        picture.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    };
    let (png, jpeg) = (
        encode(image::ImageFormat::Png),
        encode(image::ImageFormat::Jpeg),
    );

    // A camera that watches a folder of frames, its observations written to the log.
    let dir = std::env::temp_dir().join(format!("vision-detect-{}", Uuid::new_v4()));
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for name in ["0001.png", "0002.png", "0003.png"] {
        std::fs::write(frames.join(name), &png).unwrap();
    }
    let camera_id = Uuid::new_v4();
    let slot_ids: Vec<Uuid> = (0..occupied.len()).map(|_| Uuid::new_v4()).collect();
    let slots = camera_slots(&slot_ids, &scene.polygons);
    let stream_url = format!("file://{}", frames.display());
    let worker = logging_worker(&dir, camera_id, &stream_url, &slot_ids, &scene.polygons, 10).await;
    let client = reqwest::Client::new();
    let detect = format!("{}/v1/detect", worker.address);
    let expect = |answer: &Value| {
        let got: Vec<(String, bool)> = (answer["slots"].as_array().unwrap().iter())
            .map(|s| {
                (
                    s["slot_id"].as_str().unwrap().to_owned(),
                    s["occupied"].as_bool().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, bool)> = (slot_ids.iter().zip(occupied))
            .map(|(id, o)| (id.to_string(), o))
            .collect();
        assert_eq!(got, want, "{answer}");
        for slot in answer["slots"].as_array().unwrap() {
            let confidence = slot["confidence"].as_f64().unwrap();
            assert!((0.5..=1.0).contains(&confidence), "{slot}");
        }
    };

    // JSON: the picture in base64 and the slots' polygons.
    let body = json!({
        "image": base64::engine::general_purpose::STANDARD.encode(&png),
        "slots": slots,
    });
    let answer = client.post(&detect).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(
        (answer["width"].as_u64(), answer["height"].as_u64()),
        (Some(480), Some(320))
    );
    expect(&answer);

    // The picture itself, naming a camera the worker runs.
    let answer = client
        .post(format!("{detect}?camera_id={camera_id}"))
        .header("content-type", "image/jpeg")
        .body(jpeg.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["camera_id"], json!(camera_id));
    expect(&answer);

    // Bad requests: each a problem, with its code.
    let raw = |url: String, content_type: &'static str, body: Vec<u8>| {
        let request = client.post(url).header("content-type", content_type);
        request.body(body).send()
    };
    let image = base64::engine::general_purpose::STANDARD.encode(&png);
    let crossing = json!({
        "image": image,
        "slots": [{"slot_id": Uuid::new_v4(), "polygon": [[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]]}],
    });
    let json_body = |value: Value| value.to_string().into_bytes();
    let with_camera = |id: Uuid| format!("{detect}?camera_id={id}");
    let cases = [
        (
            with_camera(camera_id),
            "image/png",
            b"not a picture".to_vec(),
            400,
            "invalid_image",
        ),
        (
            with_camera(Uuid::new_v4()),
            "image/jpeg",
            jpeg.clone(),
            404,
            "camera_not_found",
        ),
        (
            detect.clone(),
            "text/plain",
            b"hello".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            detect.clone(),
            "application/json",
            json_body(crossing),
            422,
            "invalid_polygon",
        ),
        (
            detect.clone(),
            "application/json",
            json_body(json!({"image": image})),
            400,
            "missing_slots",
        ),
        (
            detect.clone(),
            "application/json",
            b"{".to_vec(),
            400,
            "malformed_body",
        ),
    ];
    for (url, content_type, body, status, code) in cases {
        let answer = raw(url, content_type, body).await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{code}");
        let kind = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(kind, "application/problem+json", "{code}");
        let problem: Value = answer.json().await.unwrap();
        assert_eq!(problem["code"], code, "{problem}");
    }

    // Meanwhile the camera watched its folder: three frames settled every slot's state, and
    // each was reported (to the log).
    let frames_seen = format!("parking_vision_frames_total{{camera=\"{camera_id}\"}}");
    worker
        .wait_for_metric(&frames_seen, 3.0, Duration::from_secs(20))
        .await;
    let sent = "parking_vision_published_total{outcome=\"sent\"}";
    worker
        .wait_for_metric(sent, occupied.len() as f64, Duration::from_secs(20))
        .await;
    let log = worker.log();
    for (slot_id, occupied) in slot_ids.iter().zip(occupied) {
        let line = format!("observation slot={slot_id} occupied={occupied}");
        assert_eq!(log.matches(&line).count(), 1, "{line} in\n{log}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn lighting_scores_make_a_lots_ai_safety_score() {
    let app = spawn_app().await;
    let scene = Scene::new(14, 320, 240, 2, 1, Condition::Day);
    let lot = camera_lot(&app, &scene.polygons, "rtsp://camera.example/1").await;
    let lot_id = lot.lot_id;
    let (service, _) = app.service_account().await;
    let (admin, _) = app.admin().await;
    let path = |camera: Uuid| format!("/api/v1/lots/{lot_id}/cameras/{camera}/lighting");
    let report = |score: f64, minutes_ago: i64| json!({"score": score, "observed_at": Utc::now() - chrono::Duration::minutes(minutes_ago)});
    let safety = || async {
        let safety = app
            .get(&format!("/api/v1/lots/{lot_id}/safety"), None)
            .await;
        safety.body["ai_safety_score"].clone()
    };
    assert_eq!(safety().await, Value::Null, "no camera has reported");

    let first = app
        .post(&path(lot.camera_id), Some(&service), report(72.0, 10))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.body["recorded"], true);
    assert_eq!(safety().await, json!(72.0));
    // A small move, or an older report, records nothing; a move of 5 or more does.
    let small = app
        .post(&path(lot.camera_id), Some(&service), report(75.0, 5))
        .await;
    assert_eq!(small.body["recorded"], false);
    let older = app
        .post(&path(lot.camera_id), Some(&service), report(20.0, 20))
        .await;
    assert_eq!(older.body["recorded"], false);
    let darker = app
        .post(&path(lot.camera_id), Some(&admin), report(31.0, 1))
        .await;
    assert_eq!(darker.body["recorded"], true);
    assert_eq!(safety().await, json!(31.0));

    // Refusals change nothing.
    let (stranger, _) = app.signed_in("parking_owner").await;
    let second = Uuid::new_v4();
    (app.post(&path(lot.camera_id), Some(&stranger), report(90.0, 0))
        .await)
        .assert_problem(403, "forbidden");
    (app.post(
        &path(lot.camera_id),
        Some(&lot.owner_token),
        report(90.0, 0),
    )
    .await)
        .assert_problem(403, "forbidden");
    (app.post(&path(second), Some(&service), report(90.0, 0))
        .await)
        .assert_problem(404, "camera_not_found");
    (app.post(&path(lot.camera_id), Some(&service), report(100.5, 0))
        .await)
        .assert_problem(422, "invalid_lighting_score");
    let future = json!({"score": 90.0, "observed_at": Utc::now() + chrono::Duration::minutes(5)});
    (app.post(&path(lot.camera_id), Some(&service), future).await)
        .assert_problem(422, "observed_in_future");
    assert_eq!(safety().await, json!(31.0));

    // A second camera: the mean of both; removing one removes its score.
    let body = json!({"stream_url": "rtsp://camera.example/2", "slots": []});
    let camera_path = format!("/api/v1/lots/{lot_id}/cameras/{second}");
    let added = app
        .request(
            reqwest::Method::PUT,
            &camera_path,
            Some(&lot.owner_token),
            Some(body),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{added:?}");
    app.post(&path(second), Some(&service), report(50.0, 0))
        .await;
    assert_eq!(safety().await, json!(40.5));
    let removed = app
        .request(
            reqwest::Method::DELETE,
            &camera_path,
            Some(&lot.owner_token),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(safety().await, json!(31.0));
    parking_tests::assert_read_models_equal_a_rebuild(&app.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_camera_reports_through_kafka() {
    let broker = parking_tests::kafka::Broker::start().await;
    let app = parking_tests::spawn_app_with(&[("KAFKA_BROKERS", &broker.address())]).await;
    let scene = Scene::new(15, 320, 240, 2, 1, Condition::Day);
    let dir = std::env::temp_dir().join(format!("vision-kafka-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let picture = image::RgbImage::from_raw(320, 240, scene.render(&[true, false])).unwrap();
    for name in ["0001.png", "0002.png", "0003.png", "0004.png"] {
        picture.save(dir.join(name)).unwrap();
    }
    let lot = camera_lot(&app, &scene.polygons, &format!("file://{}", dir.display())).await;
    let lot_id = lot.lot_id.to_string();
    let brokers = broker.address();
    let worker = VisionWorker::start(
        &[
            "--lot",
            &lot_id,
            "--api",
            &app.address,
            "--publish",
            "kafka",
            "--fps",
            "10",
        ],
        &[
            ("PARKING_VISION_EMAIL", &lot.email),
            ("PARKING_VISION_PASSWORD", lot.password),
            ("KAFKA_BROKERS", &brokers),
        ],
    )
    .await;
    let expected = vec![vec![true], vec![false]];
    wait_for_states(
        &app,
        &worker,
        &lot.slots,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    // Recorded from the topic: as the `service` role, with the worker's observation id.
    let request_ids: Vec<String> = sqlx::query_scalar(
        "SELECT metadata ->> 'request_id' FROM events WHERE event_type = 'SlotOccupancyObserved'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(request_ids.len(), 2);
    assert!(
        request_ids.iter().all(|id| id.starts_with("vision-")),
        "{request_ids:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_snapshot_camera_is_polled_and_its_changes_reported() {
    let scene = Scene::new(16, 320, 240, 2, 1, Condition::Day);
    let dir = std::env::temp_dir().join(format!("vision-snapshot-{}", Uuid::new_v4()));
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    // Replaced whole (written aside, then renamed), as a camera's snapshot is.
    let show = |occupied: [bool; 2]| {
        let picture = image::RgbImage::from_raw(320, 240, scene.render(&occupied)).unwrap();
        let aside = dir.join("next.png");
        picture.save(&aside).unwrap();
        std::fs::rename(&aside, site.join("snapshot.png")).unwrap();
    };
    show([true, false]);
    let port = free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(&site)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 serves the snapshot");
    let (camera_id, slots) = (Uuid::new_v4(), [Uuid::new_v4(), Uuid::new_v4()]);
    let stream_url = format!("http://127.0.0.1:{port}/snapshot.png");
    let worker = logging_worker(&dir, camera_id, &stream_url, &slots, &scene.polygons, 5).await;
    let sent = "parking_vision_published_total{outcome=\"sent\"}";
    worker
        .wait_for_metric(sent, 2.0, Duration::from_secs(30))
        .await;
    show([false, true]);
    worker
        .wait_for_metric(sent, 4.0, Duration::from_secs(30))
        .await;
    let log = worker.log();
    let reported = |slot: Uuid| -> Vec<bool> {
        (log.lines())
            .filter(|line| line.contains(&format!("observation slot={slot} ")))
            .map(|line| line.contains("occupied=true"))
            .collect()
    };
    assert_eq!(reported(slots[0]), [true, false], "{log}");
    assert_eq!(reported(slots[1]), [false, true], "{log}");
    let _ = server.kill();
    let _ = server.wait();
    std::fs::remove_dir_all(dir).unwrap();
}
