//! Sign-up, sign-in and tokens.

use jwt_simple::prelude::*;
use parking_tests::{spawn_app, JWT_SECRET, PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_registered_user_signs_in_and_reads_their_profile() {
    let app = spawn_app().await;
    let registered = app.register("Ada@Example.com", "parking_owner").await;
    assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
    assert_eq!(registered.body["email"], "ada@example.com");
    assert_eq!(registered.body["role"], "parking_owner");
    assert_eq!(registered.body["full_name"], "Test Person");
    assert!(registered.body.get("password_hash").is_none());

    let login = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 3600);
    let token = login.body["access_token"].as_str().unwrap();

    let me = app.get("/api/v1/auth/me", Some(token)).await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.body["id"], registered.body["id"]);
    assert_eq!(me.body["email"], "ada@example.com");
}

#[tokio::test]
async fn role_defaults_to_user() {
    let app = spawn_app().await;
    let body = json!({"email": "bob@example.com", "password": PASSWORD, "full_name": "Bob"});
    let registered = app.post("/api/v1/auth/register", None, body).await;
    assert_eq!(registered.status, StatusCode::CREATED);
    assert_eq!(registered.body["role"], "user");
}

#[tokio::test]
async fn a_taken_email_is_a_conflict_whatever_its_case() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("ada@example.com", "user").await.status,
        StatusCode::CREATED
    );
    app.register("ada@example.com", "user")
        .await
        .assert_problem(409, "email_taken");
    app.register("ADA@example.COM", "parking_owner")
        .await
        .assert_problem(409, "email_taken");
}

#[tokio::test]
async fn a_malformed_email_is_refused() {
    let app = spawn_app().await;
    app.register("not-an-email", "user")
        .await
        .assert_problem(422, "invalid_email");
    app.register("a@b", "user")
        .await
        .assert_problem(422, "invalid_email");
}

#[tokio::test]
async fn nobody_makes_themselves_admin() {
    let app = spawn_app().await;
    app.register("eve@example.com", "admin")
        .await
        .assert_problem(403, "role_not_allowed");
    app.register("eve@example.com", "auditor")
        .await
        .assert_problem(403, "role_not_allowed");
    app.register("eve@example.com", "emperor")
        .await
        .assert_problem(422, "invalid_role");
    // Nothing was recorded: the address is still free.
    assert_eq!(
        app.register("eve@example.com", "user").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_short_password_is_refused() {
    let app = spawn_app().await;
    let body = json!({"email": "c@example.com", "password": "short", "full_name": "C"});
    app.post("/api/v1/auth/register", None, body)
        .await
        .assert_problem(422, "weak_password");
}

#[tokio::test]
async fn wrong_credentials_are_401_and_do_not_say_which_part_was_wrong() {
    let app = spawn_app().await;
    app.register("ada@example.com", "user").await;
    let wrong_password = app.login("ada@example.com", "not the password").await;
    wrong_password.assert_problem(401, "invalid_credentials");
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    unknown.assert_problem(401, "invalid_credentials");
    assert_eq!(wrong_password.body["detail"], unknown.body["detail"]);
}

#[tokio::test]
async fn a_missing_token_is_401() {
    let app = spawn_app().await;
    app.get("/api/v1/auth/me", None)
        .await
        .assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn a_tampered_token_is_401() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("user").await;
    // Flip one character of the signature.
    let mut tampered = token.into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    app.get("/api/v1/auth/me", Some(&tampered))
        .await
        .assert_problem(401, "invalid_token");
    app.get("/api/v1/auth/me", Some("not.a.jwt"))
        .await
        .assert_problem(401, "invalid_token");
}

#[derive(Serialize, Deserialize)]
struct RoleClaim {
    role: String,
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let app = spawn_app().await;
    let (_, user_id) = app.signed_in("user").await;
    let key = HS256Key::from_bytes(JWT_SECRET.as_bytes());
    let mut claims = Claims::with_custom_claims(
        RoleClaim {
            role: "user".into(),
        },
        Duration::from_secs(60),
    )
    .with_subject(user_id);
    let an_hour_ago = Clock::now_since_epoch() - Duration::from_secs(3600);
    claims.issued_at = Some(an_hour_ago - Duration::from_secs(60));
    claims.expires_at = Some(an_hour_ago);
    claims.invalid_before = Some(an_hour_ago - Duration::from_secs(60));
    let expired = key.authenticate(claims).unwrap();
    app.get("/api/v1/auth/me", Some(&expired))
        .await
        .assert_problem(401, "token_expired");

    // The same token shape with a live expiry works: the rejection above was the expiry.
    let live = Claims::with_custom_claims(
        RoleClaim {
            role: "user".into(),
        },
        Duration::from_secs(60),
    )
    .with_subject(user_id);
    let live = key.authenticate(live).unwrap();
    assert_eq!(
        app.get("/api/v1/auth/me", Some(&live)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_401() {
    let app = spawn_app().await;
    let (_, user_id) = app.signed_in("user").await;
    let forged_key = HS256Key::from_bytes(b"some-other-secret-entirely-0123456789");
    let claims = Claims::with_custom_claims(
        RoleClaim {
            role: "admin".into(),
        },
        Duration::from_secs(60),
    )
    .with_subject(user_id);
    let forged = forged_key.authenticate(claims).unwrap();
    app.get("/api/v1/auth/me", Some(&forged))
        .await
        .assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn twenty_concurrent_sign_ups_with_one_email_make_exactly_one_user() {
    let app = spawn_app().await;
    let attempts = (0..20).map(|i| {
        let app = &app;
        async move {
            let role = if i % 2 == 0 { "user" } else { "parking_owner" };
            app.register("race@example.com", role).await
        }
    });
    let replies = futures::future::join_all(attempts).await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    let conflicts = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!(created, 1, "{replies:?}");
    assert_eq!(conflicts, 19, "{replies:?}");
    for conflict in replies.iter().filter(|r| r.status == StatusCode::CONFLICT) {
        conflict.assert_problem(409, "email_taken");
    }
    let users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(users, 1);
    assert_eq!(
        app.login("race@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_admin_may_grant_any_role_at_sign_up() {
    let app = spawn_app().await;
    let (admin, _) = app.admin().await;
    let body = json!({"email": "audit@example.com", "password": PASSWORD, "full_name": "Auditor", "role": "auditor"});
    let created = app.post("/api/v1/auth/register", Some(&admin), body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.body["role"], "auditor");
    let (owner, _) = app.signed_in("parking_owner").await;
    let body = json!({"email": "boss@example.com", "password": PASSWORD, "full_name": "Boss", "role": "admin"});
    app.post("/api/v1/auth/register", Some(&owner), body)
        .await
        .assert_problem(403, "role_not_allowed");
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_throttled_per_account() {
    let app = spawn_app().await;
    app.register("target@example.com", "user").await;
    app.register("bystander@example.com", "user").await;
    for _ in 0..10 {
        app.login("target@example.com", "guess guess guess")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    // Even the right password is refused until the window ends.
    let throttled = app.login("TARGET@example.com", PASSWORD).await;
    throttled.assert_problem(429, "too_many_attempts");
    let retry_after: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    // Other accounts are not affected.
    assert_eq!(
        app.login("bystander@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_successful_sign_in_clears_the_failures() {
    let app = spawn_app().await;
    app.register("ada@example.com", "user").await;
    for _ in 0..9 {
        app.login("ada@example.com", "wrong wrong wrong").await;
    }
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    for _ in 0..9 {
        app.login("ada@example.com", "wrong wrong wrong").await;
    }
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status,
        StatusCode::OK,
        "the count started again"
    );
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_is_capped_too() {
    let app = spawn_app().await;
    app.register("burst@example.com", "user").await;
    let guesses = (0..30).map(|i| {
        let app = &app;
        async move {
            app.login("burst@example.com", &format!("guess number {i}"))
                .await
        }
    });
    let replies = futures::future::join_all(guesses).await;
    let checked = replies
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (10, 20), "{replies:?}");
}

#[tokio::test]
async fn sign_in_reads_the_write_side_not_the_read_models() {
    let app = spawn_app().await;
    // An event the users projection cannot apply stops it there.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('user', 'not-a-uuid', 1, 'UserRegistered', '1', '{\"UserRegistered\": {\"bogus\": 1}}', '{}')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    parking_tests::event_log(&app.db).sequence().await.unwrap();

    // A user made through the command layer can sign in although no read model has them.
    let (token, id) = app.admin().await;
    assert!(!token.is_empty());
    let me = app.get("/api/v1/auth/me", Some(&token)).await;
    assert_eq!(
        me.status,
        StatusCode::UNAUTHORIZED,
        "the read model is behind: {me:?}"
    );
    let in_read_model: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_users WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(in_read_model, 0);
}
