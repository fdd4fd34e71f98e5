//! The HTTP API's refusals: domain rejections as problem types (409 conflicts, 404 unknown
//! queues and patients) and 400 validation problems naming the invalid field.

use serde_json::{Value, json};

use crate::api_support::{
    SETTLE, assert_problem, assert_validation, call_next, check_in_body, event_count,
    patient_command, queue_view, total_events,
};
use crate::helpers::{TestApp, body};

/// POSTs each request to `path`, asserting a 400 validation problem naming its field.
async fn assert_each_invalid(app: &TestApp, path: &str, cases: &[(Value, &str)]) {
    for (request, field) in cases {
        let r = app.post(path, request.clone()).await;
        assert_eq!(r.status(), 400, "{request}");
        assert_validation(r, field).await;
    }
}

// ------------------------------------------------------------------ rejections

#[tokio::test]
async fn creating_an_existing_queue_is_a_409_queue_exists_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("cardio", 5).await;
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": "cardio", "name": "Other", "maxCapacity": 9}),
        )
        .await;
    let p = assert_problem(r, 409, "queue-exists").await;
    assert!(p["detail"].as_str().unwrap().contains("cardio"), "{p}");
    assert_eq!(event_count(&app, "cardio").await, 1, "nothing appended");
}

#[tokio::test]
async fn commands_on_a_missing_queue_are_404_queue_not_found_problems() {
    let app = TestApp::spawn().await;
    assert_problem(
        app.check_in("ghost", "p1", "Low").await,
        404,
        "queue-not-found",
    )
    .await;
    assert_problem(
        call_next(&app, "ghost", "Room 1").await,
        404,
        "queue-not-found",
    )
    .await;
    for command in ["complete", "no-show", "cancel"] {
        let r = patient_command(&app, "ghost", "p1", command).await;
        assert_problem(r, 404, "queue-not-found").await;
    }
    assert_problem(app.get("/api/queues/ghost").await, 404, "queue-not-found").await;
    assert_problem(
        app.get("/api/queues/ghost/events").await,
        404,
        "queue-not-found",
    )
    .await;
    assert_eq!(total_events(&app).await, 0, "nothing appended");
}

#[tokio::test]
async fn checking_in_a_waiting_or_called_patient_again_is_a_409_already_checked_in_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("derm", 5).await;
    assert_eq!(app.check_in("derm", "ann", "Low").await.status(), 201);
    let p = assert_problem(
        app.check_in("derm", "ann", "Urgent").await,
        409,
        "already-checked-in",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("WAITING"), "{p}");

    assert_eq!(call_next(&app, "derm", "Room 1").await.status(), 200);
    let p = assert_problem(
        app.check_in("derm", "ann", "Low").await,
        409,
        "already-checked-in",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("CALLED"), "{p}");
    assert_eq!(event_count(&app, "derm").await, 3, "create, check-in, call");
}

#[tokio::test]
async fn checking_in_to_a_full_queue_is_a_409_queue_full_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("small", 2).await;
    assert_eq!(app.check_in("small", "a", "Low").await.status(), 201);
    assert_eq!(app.check_in("small", "b", "Low").await.status(), 201);
    assert_problem(
        app.check_in("small", "c", "Urgent").await,
        409,
        "queue-full",
    )
    .await;
    // A called patient still holds a place.
    assert_eq!(call_next(&app, "small", "Room 1").await.status(), 200);
    assert_problem(app.check_in("small", "c", "Low").await, 409, "queue-full").await;
    // A finished visit frees it.
    assert_eq!(
        patient_command(&app, "small", "a", "complete")
            .await
            .status(),
        200
    );
    assert_eq!(app.check_in("small", "c", "Low").await.status(), 201);
}

#[tokio::test]
async fn calling_next_on_an_empty_queue_is_a_409_queue_empty_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("empty", 3).await;
    assert_problem(call_next(&app, "empty", "Room 1").await, 409, "queue-empty").await;
    // Only called patients left is still empty for call-next.
    assert_eq!(app.check_in("empty", "a", "Low").await.status(), 201);
    assert_eq!(call_next(&app, "empty", "Room 1").await.status(), 200);
    assert_problem(call_next(&app, "empty", "Room 2").await, 409, "queue-empty").await;
    assert_eq!(event_count(&app, "empty").await, 3);
}

#[tokio::test]
async fn commands_for_a_patient_without_an_active_visit_are_404_patient_not_found_problems() {
    let app = TestApp::spawn().await;
    app.create_queue("ortho", 3).await;
    for command in ["complete", "no-show", "cancel"] {
        let r = patient_command(&app, "ortho", "nobody", command).await;
        let p = assert_problem(r, 404, "patient-not-found").await;
        assert!(p["detail"].as_str().unwrap().contains("nobody"), "{p}");
    }
    assert_eq!(event_count(&app, "ortho").await, 1);
}

#[tokio::test]
async fn completing_or_no_showing_a_waiting_patient_is_a_409_invalid_patient_state_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("ent", 3).await;
    assert_eq!(app.check_in("ent", "bob", "Medium").await.status(), 201);
    for command in ["complete", "no-show"] {
        let r = patient_command(&app, "ent", "bob", command).await;
        let p = assert_problem(r, 409, "invalid-patient-state").await;
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("WAITING") && detail.contains("CALLED"),
            "{p}"
        );
    }
    assert_eq!(event_count(&app, "ent").await, 2, "nothing appended");
}

// ------------------------------------------------------------------ validation

#[tokio::test]
async fn invalid_queue_fields_are_400_validation_problems_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"queueId": "q", "name": "", "maxCapacity": 5}),
            "name",
        ),
        (
            json!({"queueId": "q", "name": "   \t ", "maxCapacity": 5}),
            "name",
        ),
        (
            json!({"queueId": "q", "name": "x".repeat(201), "maxCapacity": 5}),
            "name",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": 0}),
            "maxCapacity",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": -1}),
            "maxCapacity",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": 10001}),
            "maxCapacity",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": 5, "maxNoShows": 11}),
            "maxNoShows",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": 5, "maxNoShows": 0}),
            "maxNoShows",
        ),
        (
            json!({"queueId": "has space", "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "-leading", "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "a/b", "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "", "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "q".repeat(65), "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "q", "name": "bad\u{0}name", "maxCapacity": 5}),
            "name",
        ),
    ];
    assert_each_invalid(&app, "/api/queues", &cases).await;
    assert_eq!(total_events(&app).await, 0, "nothing appended");
}

#[tokio::test]
async fn invalid_check_in_fields_are_400_validation_problems_naming_the_field() {
    let app = TestApp::spawn().await;
    app.create_queue("val", 50).await;
    let with = |key: &str, value: Value| {
        let mut b = check_in_body("p1", "Low");
        b[key] = value;
        b
    };
    let cases = [
        (with("priority", json!("critical")), "priority"),
        (with("priority", json!("")), "priority"),
        (with("patientId", json!("p".repeat(65))), "patientId"),
        (with("patientId", json!("")), "patientId"),
        (with("patientId", json!("a/b")), "patientId"),
        (with("patientName", json!("")), "patientName"),
        (with("patientName", json!("   ")), "patientName"),
        (with("patientName", json!("Ann\u{0}Lee")), "patientName"),
        (with("patientName", json!("n".repeat(201))), "patientName"),
        (with("consultationType", json!("X")), "consultationType"),
        (with("consultationType", json!(" X ")), "consultationType"),
        (
            with("consultationType", json!("c".repeat(101))),
            "consultationType",
        ),
        (with("notes", json!("n".repeat(1001))), "notes"),
        (with("notes", json!("bad\u{0}note")), "notes"),
    ];
    assert_each_invalid(&app, "/api/queues/val/check-ins", &cases).await;
    // call-next validates its room.
    let r = app
        .post("/api/queues/val/call-next", json!({"consultingRoom": "  "}))
        .await;
    assert_validation(r, "consultingRoom").await;
    assert_eq!(event_count(&app, "val").await, 1, "nothing appended");
}

#[tokio::test]
async fn invalid_ids_in_the_path_are_400_validation_problems_naming_the_field() {
    let app = TestApp::spawn().await;
    app.create_queue("paths", 5).await;
    for queue in ["has%20space", "-leading", "bad%21id"] {
        let r = app
            .post(
                &format!("/api/queues/{queue}/check-ins"),
                check_in_body("p1", "Low"),
            )
            .await;
        assert_validation(r, "queueId").await;
        assert_validation(call_next(&app, queue, "Room 1").await, "queueId").await;
        assert_validation(
            patient_command(&app, queue, "p1", "complete").await,
            "queueId",
        )
        .await;
    }
    let long = "p".repeat(65);
    for command in ["complete", "no-show", "cancel"] {
        let r = patient_command(&app, "paths", &long, command).await;
        assert_validation(r, "patientId").await;
    }
    assert_eq!(event_count(&app, "paths").await, 1, "nothing appended");
}

#[tokio::test]
async fn values_at_the_limits_are_accepted() {
    let app = TestApp::spawn().await;
    let max_id = "q".repeat(64);
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": max_id, "name": "n".repeat(200), "maxCapacity": 10000, "maxNoShows": 10}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(body(r).await["queueId"], max_id.as_str());
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": "Q1.a_b-c", "name": "  Padded  ", "maxCapacity": 1, "maxNoShows": 1}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app
        .post(
            &format!("/api/queues/{max_id}/check-ins"),
            json!({
                "patientId": "p".repeat(64),
                "patientName": "n".repeat(200),
                "priority": "  uRgEnT ",
                "consultationType": "GP",
                "notes": format!("line one\nline two\t{}", "x".repeat(980)),
            }),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    app.wait_all_processed(SETTLE).await;
    let view = queue_view(&app, "Q1.a_b-c").await;
    assert_eq!(view["name"], "Padded", "names are stored trimmed");
    let view = queue_view(&app, &max_id).await;
    assert_eq!(view["patients"][0]["priority"], "Urgent");
    assert_eq!(view["maxCapacity"], 10000);
    assert_eq!(view["maxNoShows"], 10);
}
