//! The HTTP API's call order and read model: patients listed and called by priority, then
//! earliest check-in; no-shows requeued until their limit; completed and cancelled visits.

use crate::api_support::{
    SETTLE, assert_problem, call_next, listed, patient_command, queue_view, row,
};
use crate::helpers::{TestApp, body};

async fn checked_in_position(r: reqwest::Response) -> i64 {
    assert_eq!(r.status(), 201, "check-in");
    let b = body(r).await;
    assert!(
        b["eventId"].as_str().is_some(),
        "check-in returns eventId: {b}"
    );
    assert!(
        b["version"].as_i64().is_some(),
        "check-in returns version: {b}"
    );
    b["position"].as_i64().expect("position")
}

#[tokio::test]
async fn patients_are_listed_and_called_by_priority_then_earliest_check_in() {
    let app = TestApp::spawn().await;
    app.create_queue("triage", 10).await;

    // Input priorities are case-insensitive; positions are the place in call order at check-in.
    for (id, priority, position) in [
        ("low-1", "Low", 1),
        ("urgent", "urgent", 1),
        ("medium", "Medium", 2),
        ("high", "HIGH", 2),
        ("low-2", "low", 5),
    ] {
        assert_eq!(
            checked_in_position(app.check_in("triage", id, priority).await).await,
            position
        );
    }
    app.wait_all_processed(SETTLE).await;

    let view = queue_view(&app, "triage").await;
    assert_eq!(
        listed(&view),
        vec![
            row("urgent", "WAITING", Some(1)),
            row("high", "WAITING", Some(2)),
            row("medium", "WAITING", Some(3)),
            row("low-1", "WAITING", Some(4)),
            row("low-2", "WAITING", Some(5)),
        ]
    );
    let priorities: Vec<&str> = view["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["priority"].as_str().unwrap())
        .collect();
    assert_eq!(
        priorities,
        ["Urgent", "High", "Medium", "Low", "Low"],
        "stored capitalised"
    );
    assert_eq!(view["currentPatientCount"], 5);
    assert_eq!(view["waitingCount"], 5);
    assert_eq!(view["maxCapacity"], 10);

    // The first two calls take Urgent, then High.
    for (expected, room) in [("urgent", "Room 1"), ("high", "Room 2")] {
        let r = call_next(&app, "triage", room).await;
        assert_eq!(r.status(), 200);
        let called = body(r).await;
        assert_eq!(called["patientId"], expected, "{called}");
        assert_eq!(called["consultingRoom"], room);
        assert_eq!(called["patientName"], format!("Patient {expected}"));
        assert!(
            called["calledAt"].is_string() && called["eventId"].is_string(),
            "{called}"
        );
    }
    app.wait_all_processed(SETTLE).await;

    // Called patients come first (earliest call first) with no position.
    let view = queue_view(&app, "triage").await;
    assert_eq!(
        listed(&view),
        vec![
            row("urgent", "CALLED", None),
            row("high", "CALLED", None),
            row("medium", "WAITING", Some(1)),
            row("low-1", "WAITING", Some(2)),
            row("low-2", "WAITING", Some(3)),
        ]
    );
    assert_eq!(view["patients"][0]["consultingRoom"], "Room 1");
    assert_eq!(view["patients"][1]["consultingRoom"], "Room 2");
    assert_eq!(view["currentPatientCount"], 5);
    assert_eq!(view["calledCount"], 2);
    assert_eq!(view["waitingCount"], 3);
    assert_eq!(view["version"], 8, "read model applied every event");

    // The rest in call order: Medium, then the two Low ones, earliest first.
    for expected in ["medium", "low-1", "low-2"] {
        let r = call_next(&app, "triage", "Room 3").await;
        assert_eq!(r.status(), 200);
        assert_eq!(body(r).await["patientId"], expected);
    }
    assert_problem(
        call_next(&app, "triage", "Room 3").await,
        409,
        "queue-empty",
    )
    .await;

    // The queue list shows it too.
    app.wait_all_processed(SETTLE).await;
    let r = app.get("/api/queues").await;
    assert_eq!(r.status(), 200);
    let queues = body(r).await;
    assert_eq!(queues.as_array().map(Vec::len), Some(1), "{queues}");
    assert_eq!(queues[0]["queueId"], "triage");
    assert_eq!(queues[0]["name"], "Queue triage");
    assert_eq!(queues[0]["calledCount"], 5);
}

#[tokio::test]
async fn a_no_show_requeues_the_patient_behind_its_priority_until_the_limit_ends_the_visit() {
    let app = TestApp::spawn().await;
    app.create_queue("ns", 5).await; // default maxNoShows 2
    for (id, priority) in [("p1", "Medium"), ("p2", "Medium"), ("p3", "Low")] {
        assert_eq!(app.check_in("ns", id, priority).await.status(), 201);
    }
    let r = call_next(&app, "ns", "Room 1").await;
    assert_eq!(body(r).await["patientId"], "p1");

    let r = patient_command(&app, "ns", "p1", "no-show").await;
    assert_eq!(r.status(), 200);
    let b = body(r).await;
    assert_eq!(b["status"], "WAITING", "{b}");
    assert_eq!(b["noShowCount"], 1, "{b}");
    assert!(b["version"].is_number() && b["eventId"].is_string(), "{b}");
    app.wait_all_processed(SETTLE).await;

    // Back at the end of the Medium group, still ahead of Low.
    let view = queue_view(&app, "ns").await;
    assert_eq!(
        listed(&view),
        vec![
            row("p2", "WAITING", Some(1)),
            row("p1", "WAITING", Some(2)),
            row("p3", "WAITING", Some(3)),
        ]
    );
    assert_eq!(view["patients"][1]["noShowCount"], 1);
    assert!(view["patients"][1]["consultingRoom"].is_null());

    let r = call_next(&app, "ns", "Room 1").await;
    assert_eq!(body(r).await["patientId"], "p2");
    let r = call_next(&app, "ns", "Room 2").await;
    assert_eq!(body(r).await["patientId"], "p1");

    // The second no-show reaches the limit: the visit ends.
    let r = patient_command(&app, "ns", "p1", "no-show").await;
    assert_eq!(r.status(), 200);
    let b = body(r).await;
    assert_eq!(b["status"], "NO_SHOW", "{b}");
    assert_eq!(b["noShowCount"], 2, "{b}");
    app.wait_all_processed(SETTLE).await;

    let view = queue_view(&app, "ns").await;
    assert_eq!(
        listed(&view),
        vec![row("p2", "CALLED", None), row("p3", "WAITING", Some(1))]
    );
    assert_eq!(view["currentPatientCount"], 2);
    let status: String = app
        .scalar(
            "SELECT status FROM waiting_patients_view WHERE queue_id = 'ns' AND patient_id = 'p1'",
        )
        .await;
    assert_eq!(status, "NO_SHOW");
    let position: Option<i32> = app
        .scalar("SELECT position_in_queue FROM waiting_patients_view WHERE queue_id = 'ns' AND patient_id = 'p1'")
        .await;
    assert_eq!(position, None);
    let count: i32 = app
        .scalar("SELECT current_patient_count FROM waiting_queue_view WHERE queue_id = 'ns'")
        .await;
    assert_eq!(count, 2);

    // The visit is over: no more commands for it, but a new visit may start.
    assert_problem(
        patient_command(&app, "ns", "p1", "no-show").await,
        404,
        "patient-not-found",
    )
    .await;
    assert_eq!(app.check_in("ns", "p1", "High").await.status(), 201);
    app.wait_all_processed(SETTLE).await;
    let view = queue_view(&app, "ns").await;
    assert_eq!(
        listed(&view),
        vec![
            row("p2", "CALLED", None),
            row("p1", "WAITING", Some(1)),
            row("p3", "WAITING", Some(2)),
        ]
    );
    assert_eq!(
        view["patients"][1]["noShowCount"], 0,
        "a new visit starts afresh"
    );
}

#[tokio::test]
async fn completing_and_cancelling_end_visits_in_the_read_model_and_patients_may_return() {
    let app = TestApp::spawn().await;
    app.create_queue("gp", 3).await;
    for id in ["done", "waiting-cancel", "called-cancel"] {
        assert_eq!(app.check_in("gp", id, "Medium").await.status(), 201);
    }
    app.wait_all_processed(SETTLE).await;
    assert_eq!(queue_view(&app, "gp").await["currentPatientCount"], 3);

    assert_eq!(
        body(call_next(&app, "gp", "Room 1").await).await["patientId"],
        "done"
    );
    let r = patient_command(&app, "gp", "done", "complete").await;
    assert_eq!(r.status(), 200);
    let b = body(r).await;
    assert_eq!(b["version"], 6, "{b}");
    assert!(b["eventId"].is_string(), "{b}");

    let r = patient_command(&app, "gp", "waiting-cancel", "cancel").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["version"], 7);
    assert_eq!(
        body(call_next(&app, "gp", "Room 2").await).await["patientId"],
        "called-cancel"
    );
    assert_eq!(
        patient_command(&app, "gp", "called-cancel", "cancel")
            .await
            .status(),
        200
    );
    app.wait_all_processed(SETTLE).await;

    let view = queue_view(&app, "gp").await;
    assert_eq!(listed(&view), vec![], "no active patients");
    assert_eq!(view["currentPatientCount"], 0);
    assert_eq!(view["waitingCount"], 0);
    assert_eq!(view["calledCount"], 0);
    let client = app.pool.get().await.expect("pool connection");
    let rows = client
        .query(
            "SELECT patient_id, status, completed_at IS NOT NULL, position_in_queue, \
                    updated_by_event_version \
               FROM waiting_patients_view WHERE queue_id = 'gp' ORDER BY patient_id",
            &[],
        )
        .await
        .expect("query runs");
    let rows: Vec<(String, String, bool, Option<i32>, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("called-cancel".into(), "CANCELLED".into(), false, None, 9),
            ("done".into(), "COMPLETED".into(), true, None, 6),
            ("waiting-cancel".into(), "CANCELLED".into(), false, None, 7),
        ]
    );

    // Finished visits accept no more commands.
    assert_problem(
        patient_command(&app, "gp", "done", "complete").await,
        404,
        "patient-not-found",
    )
    .await;
    assert_problem(
        patient_command(&app, "gp", "done", "cancel").await,
        404,
        "patient-not-found",
    )
    .await;

    // And the patients may check in again.
    assert_eq!(app.check_in("gp", "done", "Low").await.status(), 201);
    assert_eq!(
        app.check_in("gp", "waiting-cancel", "Low").await.status(),
        201
    );
    app.wait_all_processed(SETTLE).await;
    let view = queue_view(&app, "gp").await;
    assert_eq!(
        listed(&view),
        vec![
            row("done", "WAITING", Some(1)),
            row("waiting-cancel", "WAITING", Some(2))
        ]
    );
    assert_eq!(view["currentPatientCount"], 2);
    let completed_at_cleared: bool = app
        .scalar("SELECT completed_at IS NULL FROM waiting_patients_view WHERE queue_id = 'gp' AND patient_id = 'done'")
        .await;
    assert!(completed_at_cleared, "a new visit has no completion time");
}
