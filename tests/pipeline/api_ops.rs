//! The HTTP API's operations endpoints: processing lag, the outbox and projection health,
//! liveness and readiness, OpenMetrics and the OpenAPI document with its Swagger UI.

use serde_json::{Value, json};

use crate::api_support::{
    SETTLE, assert_client_problem, assert_problem, assert_validation, header,
};
use crate::helpers::{TestApp, body, wait_until};

#[tokio::test]
async fn lag_endpoints_validate_their_parameters_and_report_processed_events() {
    let app = TestApp::spawn().await;
    for query in [
        "windowSeconds=0",
        "windowSeconds=2592001",
        "windowSeconds=-3",
        "windowSeconds=NaN",
        "windowSeconds=inf",
    ] {
        assert_validation(
            app.get(&format!("/api/metrics/lag?{query}")).await,
            "windowSeconds",
        )
        .await;
    }
    assert_client_problem(
        app.get("/api/metrics/lag?windowSeconds=abc").await,
        &[400],
        "abc",
    )
    .await;
    for query in ["limit=0", "limit=1001"] {
        assert_validation(
            app.get(&format!("/api/metrics/lag/slowest?{query}")).await,
            "limit",
        )
        .await;
    }
    assert_validation(app.get("/api/metrics/lag/not-a-uuid").await, "eventId").await;
    let unknown = uuid::Uuid::new_v4();
    let p = assert_problem(
        app.get(&format!("/api/metrics/lag/{unknown}")).await,
        404,
        "event-not-found",
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains(&unknown.to_string()),
        "{p}"
    );

    app.create_queue("lag", 5).await;
    let r = app.check_in("lag", "p1", "Low").await;
    assert_eq!(r.status(), 201);
    let event_id = body(r).await["eventId"].as_str().unwrap().to_owned();
    app.wait_all_processed(SETTLE).await;

    let r = app.get(&format!("/api/metrics/lag/{event_id}")).await;
    assert_eq!(r.status(), 200);
    let lifecycle = body(r).await;
    assert_eq!(lifecycle["eventId"], event_id.as_str());
    assert_eq!(lifecycle["eventType"], "PatientCheckedIn");
    assert_eq!(lifecycle["streamId"], "lag");
    assert_eq!(lifecycle["version"], 2);
    assert_eq!(lifecycle["status"], "PROCESSED");
    for stage in ["publishedAt", "processedAt", "totalLagMs"] {
        assert!(!lifecycle[stage].is_null(), "{stage} is set: {lifecycle}");
    }

    let r = app.get("/api/metrics/lag").await;
    assert_eq!(r.status(), 200);
    let report = body(r).await;
    assert_eq!(report["overall"]["count"], 2, "{report}");
    assert!(report["overall"]["p99Ms"].is_number(), "{report}");
    assert!(report["overall"]["eventsPerSecond"].is_number(), "{report}");
    let mut types: Vec<&str> = report["byEvent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["PatientCheckedIn", "WaitingQueueCreated"]);

    let r = app.get("/api/metrics/lag/slowest?limit=1").await;
    assert_eq!(r.status(), 200);
    let slowest = body(r).await;
    assert_eq!(slowest.as_array().map(Vec::len), Some(1), "{slowest}");
    assert_eq!(slowest[0]["status"], "PROCESSED");
}

#[tokio::test]
async fn outbox_and_projection_endpoints_report_a_drained_healthy_pipeline() {
    let app = TestApp::spawn().await;
    app.create_queue("ops", 5).await;
    assert_eq!(app.check_in("ops", "p1", "Low").await.status(), 201);
    app.wait_all_processed(SETTLE).await;

    // The relay marks rows published shortly after the projector may have processed them.
    wait_until(SETTLE, "outbox drained", || async {
        body(app.get("/api/outbox/pending").await).await["count"] == 0
    })
    .await;
    let r = app.get("/api/outbox/pending").await;
    assert_eq!(r.status(), 200);
    let outbox = body(r).await;
    assert_eq!(outbox["count"], 0, "{outbox}");
    assert_eq!(outbox["failed"], 0, "{outbox}");
    assert!(
        outbox.as_object().unwrap().contains_key("oldestAgeMs"),
        "{outbox}"
    );
    assert!(outbox["oldestAgeMs"].is_null(), "no pending row: {outbox}");

    let r = app.get("/api/projections/health").await;
    assert_eq!(r.status(), 200);
    let health = body(r).await;
    assert_eq!(health["status"], "healthy", "{health}");
    let projections = health["projections"].as_array().unwrap();
    let waiting_room = projections
        .iter()
        .find(|p| p["name"] == "waiting_room")
        .unwrap_or_else(|| panic!("waiting_room projection listed: {health}"));
    assert_eq!(waiting_room["streams"], 1, "{health}");
    assert_eq!(waiting_room["eventsBehind"], 0, "{health}");
    assert_eq!(waiting_room["parkedStreams"], 0, "{health}");
    assert_eq!(waiting_room["rebuilding"], false, "{health}");

    let p = assert_problem(
        app.post_empty("/api/projections/nope/rebuild").await,
        404,
        "projection-not-found",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("nope"), "{p}");
}

#[tokio::test]
async fn liveness_and_readiness_report_every_dependency_up() {
    let app = TestApp::spawn().await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["status"], "ok");

    // Relay leadership and the projector's consumer come up asynchronously.
    wait_until(SETTLE, "readiness 200", || async {
        app.get("/health/ready").await.status() == 200
    })
    .await;
    let r = app.get("/health/ready").await;
    assert_eq!(r.status(), 200);
    let ready = body(r).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let checks: Vec<(&str, &str)> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        checks[..4],
        [
            ("postgres", "up"),
            ("rabbitmq", "up"),
            ("relay", "up"),
            ("projector", "up")
        ],
        "{ready}"
    );
    // Cluster-wide: another session's long transaction may make it a warning (still 200).
    assert_eq!(checks[4].0, "transactions", "{ready}");
    assert_ne!(checks[4].1, "down", "{ready}");
}

#[tokio::test]
async fn metrics_are_openmetrics_text_counting_appended_events() {
    let app = TestApp::spawn().await;
    app.create_queue("metrics", 5).await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let content_type = header(&r, "content-type");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "content-type {content_type:?}"
    );
    let text = r.text().await.expect("metrics text");
    let appended = text
        .lines()
        .find(|l| {
            l.starts_with("waitroom_events_appended_total{") && l.contains("WaitingQueueCreated")
        })
        .unwrap_or_else(|| panic!("waitroom_events_appended_total for the create:\n{text}"));
    assert!(appended.ends_with(" 1"), "one queue created: {appended}");
    assert!(
        text.contains("# TYPE waitroom_events_appended counter"),
        "{text}"
    );
    #[cfg(target_os = "linux")]
    for (family, sample) in [
        (
            "process_resident_memory_bytes gauge",
            "process_resident_memory_bytes ",
        ),
        ("process_cpu_seconds counter", "process_cpu_seconds_total "),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "{family}: {text}"
        );
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(sample))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a {sample}sample: {text}"));
        assert!(value >= 0.0, "{sample}{value}");
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
}

#[tokio::test]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let app = TestApp::spawn().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    let spec = body(r).await;
    assert!(
        spec["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "openapi field"
    );
    assert_eq!(spec["info"]["title"], "waitroom");
    for path in [
        "/api/queues",
        "/api/queues/{queueId}/check-ins",
        "/health/ready",
        "/metrics",
    ] {
        assert!(spec["paths"].get(path).is_some(), "spec documents {path}");
    }
    // Served spec and `waitroom openapi` are the same document.
    let printed: Value = serde_json::from_str(&waitroom::api::spec()).expect("spec is JSON");
    assert_eq!(spec, printed);

    let r = app.get("/docs").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let html = r.text().await.expect("docs html");
    assert!(html.to_lowercase().contains("swagger"), "Swagger UI page");
    assert!(
        html.contains("\"links\""),
        "Swagger UI shows the finished document, links included"
    );
}

#[test]
fn the_openapi_document_states_enums_nullables_optional_headers_and_links() {
    let spec: Value = serde_json::from_str(&waitroom::api::spec()).expect("spec is JSON");
    let schemas = &spec["components"]["schemas"];
    let enum_of = |name: &str| schemas[name]["enum"].clone();
    assert_eq!(
        enum_of("Priority"),
        json!(["Low", "Medium", "High", "Urgent"])
    );
    assert_eq!(
        enum_of("PatientStatus"),
        json!(["WAITING", "CALLED", "COMPLETED", "CANCELLED", "NO_SHOW"])
    );
    assert_eq!(
        enum_of("LagStatus"),
        json!(["CREATED", "PUBLISHED", "PROCESSED", "FAILED"])
    );
    assert_eq!(enum_of("ReadinessStatus"), json!(["ready", "not_ready"]));
    assert_eq!(enum_of("EventType").as_array().map(Vec::len), Some(6));
    for (schema, field) in [
        ("LagStatsView", "avgMs"),
        ("OutboxPending", "oldestAgeMs"),
        ("ProjectionStatus", "lastAppliedAt"),
        ("PatientView", "position"),
        ("EventLag", "publishedAt"),
    ] {
        assert_eq!(
            schemas[schema]["properties"][field]["nullable"], true,
            "{schema}.{field} is nullable"
        );
    }
    let create = &spec["paths"]["/api/queues"]["post"];
    for p in create["parameters"].as_array().expect("parameters") {
        assert_ne!(p["required"], true, "{} is optional", p["name"]);
    }
    let links = &create["responses"]["201"]["links"];
    assert_eq!(links["CheckIn"]["operationId"], "checkIn");
    assert_eq!(
        links["CheckIn"]["parameters"]["queueId"],
        "$response.body#/queueId"
    );
    let check_in = &spec["paths"]["/api/queues/{queueId}/check-ins"]["post"];
    assert!(check_in["responses"]["201"]["headers"]["ETag"].is_object());
    assert!(check_in["responses"]["412"].is_object());
    assert!(schemas["CheckInRequest"]["example"].is_object());
    // One error body per operation, so generators (progenitor) can type the errors.
    let health = &spec["paths"]["/api/projections/health"]["get"]["responses"];
    assert_eq!(
        health["503"]["content"]["application/json; charset=utf-8"]["schema"]["$ref"],
        "#/components/schemas/ProjectionsHealth"
    );
    assert!(health.get("400").is_none());
    let metrics = &spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(
        metrics
            .get("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .is_some(),
        "/metrics documents what it serves: {metrics}"
    );
}
