//! The `parking-vision` binary's commands that need no camera: the OpenAPI document, a
//! synthetic set written as a folder and measured from it, and a `run` missing its cameras.

use std::process::Command;

fn parking_vision() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parking-vision"))
}

#[test]
fn openapi_prints_the_committed_document() {
    let out = parking_vision().arg("openapi").output().unwrap();
    assert!(out.status.success());
    let committed = include_str!("../openapi.json");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn a_generated_folder_is_measured_with_the_shipped_weights() {
    let dir = std::env::temp_dir().join(format!("vision-cli-{}", std::process::id()));
    let generated = parking_vision()
        .args(["generate", "--count", "300", "--seed", "77", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let count = |folder: &str| std::fs::read_dir(dir.join(folder)).unwrap().count();
    assert_eq!(count("Empty") + count("Occupied"), 300);

    let eval = parking_vision()
        .args(["eval", "--data"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(eval.status.success(), "{eval:?}");
    let report = String::from_utf8(eval.stdout).unwrap();
    let overall = (report.lines())
        .find(|line| line.starts_with("overall"))
        .expect("an overall line");
    let fields: Vec<&str> = overall.split_whitespace().collect();
    assert_eq!(fields[1], "300", "{report}");
    let accuracy: f64 = fields[2].trim_end_matches('%').parse().unwrap();
    assert!(accuracy >= 95.0, "{report}");
    assert!(report.contains("confusion"), "{report}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_without_cameras_says_what_is_missing() {
    let out = parking_vision()
        .arg("run")
        .env_remove("VISION_LOTS")
        .env_remove("VISION_CAMERAS_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = String::from_utf8(out.stderr).unwrap();
    assert!(message.contains("--lot"), "{message}");
}
