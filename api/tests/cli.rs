//! The admin CLI, run as the operator runs it.

use std::process::Command;

use sqlx::{Connection, PgConnection};

/// A new, empty database (`parking_test_<uuid>`, dropped by `scripts/test.sh`): the CLI
/// migrates it itself.
async fn empty_database() -> String {
    let server = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db_name = format!("parking_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!(r#"CREATE DATABASE "{db_name}""#))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("{server}/{db_name}")
}

#[tokio::test]
async fn create_user_makes_an_admin_recorded_as_a_system_command() {
    let database_url = empty_database().await;

    let run = |email: &str| {
        Command::new(env!("CARGO_BIN_EXE_parking-api"))
            .args([
                "create-user",
                "--email",
                email,
                "--full-name",
                "First Admin",
            ])
            .env("DATABASE_URL", &database_url)
            .env("BCRYPT_COST", "4")
            .env("PARKING_NEW_PASSWORD", "a long enough password")
            .env("RUST_LOG", "error")
            .output()
            .expect("run parking-api")
    };
    let output = run("root@example.com");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id: uuid::Uuid = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("prints the new id");

    let mut db = PgConnection::connect(&database_url).await.unwrap();
    let (payload, metadata): (serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT payload::jsonb, metadata::jsonb FROM events WHERE event_type = 'UserRegistered' AND aggregate_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(payload["UserRegistered"]["role"], "admin");
    assert_eq!(metadata["role"], "system");

    let again = run("ROOT@example.com");
    assert!(!again.status.success(), "a taken address is refused");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("email_taken"),
        "{again:?}"
    );

    // No server ran: the users read model has not seen the admin. Status says so, a rebuild
    // fixes it.
    let projections = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_parking-api"))
            .arg("projections")
            .args(args)
            .env("DATABASE_URL", &database_url)
            .env("RUST_LOG", "error")
            .output()
            .expect("run parking-api")
    };
    let lag_of_users = |output: &std::process::Output| -> i64 {
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let line = stdout
            .lines()
            .find(|l| l.starts_with("projection:users"))
            .unwrap_or_else(|| panic!("no users line in {stdout}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let before = projections(&["status"]);
    assert!(before.status.success(), "{before:?}");
    assert!(lag_of_users(&before) > 0, "{before:?}");

    let rebuilt = projections(&["rebuild", "users"]);
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    assert!(String::from_utf8_lossy(&rebuilt.stdout).contains("users: rebuilt"));
    assert!(
        String::from_utf8_lossy(&rebuilt.stderr).contains("ev/s"),
        "a progress line"
    );
    assert_eq!(lag_of_users(&projections(&["status"])), 0);
    let email: String = sqlx::query_scalar("SELECT email FROM rm_users WHERE id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(email, "root@example.com");

    let unknown = projections(&["rebuild", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("known: users"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn set_password_rotates_a_service_accounts_secret() {
    let database_url = empty_database().await;
    let run = |args: &[&str], password: &str| {
        Command::new(env!("CARGO_BIN_EXE_parking-api"))
            .args(args)
            .env("DATABASE_URL", &database_url)
            .env("BCRYPT_COST", "4")
            .env("PARKING_NEW_PASSWORD", password)
            .env("RUST_LOG", "error")
            .output()
            .expect("run parking-api")
    };
    let email = "vision@example.com";
    let created = run(
        &[
            "create-user",
            "--email",
            email,
            "--full-name",
            "Vision",
            "--role",
            "service",
        ],
        "the first machine secret",
    );
    assert!(created.status.success(), "{created:?}");

    let rotated = run(
        &["set-password", "--email", email],
        "the second machine secret",
    );
    assert!(rotated.status.success(), "{rotated:?}");
    let weak = run(&["set-password", "--email", email], "short");
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("weak_password"),
        "{weak:?}"
    );
    let unknown = run(
        &["set-password", "--email", "nobody@example.com"],
        "a long enough one",
    );
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("user_not_found"),
        "{unknown:?}"
    );

    let mut db = PgConnection::connect(&database_url).await.unwrap();
    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT payload::jsonb -> 'UserCredentialsSet' ->> 'password_hash' FROM events
          WHERE event_type = 'UserCredentialsSet' ORDER BY sequence",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        hashes.len(),
        2,
        "set once at creation, once by the rotation"
    );
    assert!(bcrypt::verify("the second machine secret", &hashes[1]).unwrap());
    assert!(!bcrypt::verify("the first machine secret", &hashes[1]).unwrap());
}
