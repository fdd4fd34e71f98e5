//! The live board without a browser: its pages and problems, the snapshot (names masked on
//! the server), and the event stream fed by the projector's NOTIFY: one per batch, only
//! while a page is open, `*` for a rebuild or a payload past NOTIFY's limit, `stale` and
//! `live` around a lost listener.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_postgres::{AsyncMessage, NoTls};
use waitroom::app::Roles;
use waitroom::config::BoardNames;

use crate::api_support::{SETTLE, assert_problem, assert_validation, header};
use crate::helpers::{TestApp, body, isolated_settings, wait_until};

/// A page's event stream, read frame by frame.
pub(crate) struct Sse {
    response: reqwest::Response,
    buffer: String,
}

/// One Server-Sent Event.
#[derive(Debug)]
pub(crate) struct Frame {
    pub event: String,
    pub data: String,
}

impl Sse {
    pub(crate) async fn open(app: &TestApp, query: &str) -> Self {
        let response = app
            .http
            .get(format!("{}/live/events{query}", app.address))
            .send()
            .await
            .expect("event stream opens");
        assert_eq!(response.status(), 200);
        assert!(
            header(&response, "content-type").starts_with("text/event-stream"),
            "{:?}",
            response.headers()
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (retry lines and keep-alive comments skipped), or `None` after `within`.
    pub(crate) async fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    event: "message".to_owned(),
                    data: String::new(),
                };
                let mut any = false;
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        frame.event = v.to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        frame.data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return Some(frame);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .expect("event stream reads")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Skips events until one named `event` arrives; panics after `within`.
    pub(crate) async fn expect(&mut self, event: &str, within: Duration) -> Frame {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(f) if f.event == event => return f,
                Some(_) => {}
                None => panic!("no `{event}` event within {within:?}"),
            }
        }
    }
}

/// A test's own LISTEN on the board channel, to see exactly what the projector sends.
struct Notifications {
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    _client: tokio_postgres::Client,
}

impl Notifications {
    async fn listen(app: &TestApp) -> Self {
        let (client, mut connection) = tokio_postgres::connect(&app.settings.database_url, NoTls)
            .await
            .expect("test listener connects");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notification(n) = m {
                    let _ = tx.send(n.payload().to_owned());
                }
            }
        });
        client
            .batch_execute("LISTEN waitroom_board")
            .await
            .expect("LISTEN");
        Self {
            rx,
            _client: client,
        }
    }

    /// Every notification that arrives within `quiet` of the last one.
    async fn drain(&mut self, quiet: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            out.push(p);
        }
        out
    }
}

async fn wait_queue_in_read_model(app: &TestApp, queue_id: &str) {
    wait_until(SETTLE, "queue in the read model", || async {
        app.get(&format!("/api/queues/{queue_id}")).await.status() == 200
    })
    .await;
}

async fn check_in_named(app: &TestApp, queue_id: &str, id: &str, name: &str, priority: &str) {
    let r = app
        .post(
            &format!("/api/queues/{queue_id}/check-ins"),
            json!({"patientId": id, "patientName": name, "priority": priority, "consultationType": "General"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test]
async fn board_pages_are_html_outside_the_api_spec_and_bad_ids_are_problems() {
    let app = TestApp::spawn().await;
    let r = app.get("/").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/html"));
    assert!(header(&r, "content-security-policy").contains("default-src 'self'"));
    assert!(!header(&r, "x-correlation-id").is_empty());
    let text = r.text().await.unwrap();
    assert!(text.contains("/assets/index.js"), "{text}");

    for (path, content_type) in [
        ("/assets/board.css", "text/css"),
        ("/assets/board.js", "text/javascript"),
        ("/assets/index.js", "text/javascript"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header(&r, "content-type").starts_with(content_type),
            "{path}"
        );
    }

    app.create_queue("cardio", 10).await;
    wait_queue_in_read_model(&app, "cardio").await;
    let r = app.get("/board/cardio").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("/assets/board.js"));

    assert_problem(app.get("/board/ghost").await, 404, "queue-not-found").await;
    assert_validation(app.get("/board/-bad").await, "queueId").await;
    assert_validation(app.get("/board/a%20b").await, "queueId").await;
    assert_problem(app.get("/board/a/b").await, 404, "not-found").await;
    assert_problem(app.get("/live/queues/ghost").await, 404, "queue-not-found").await;
    assert_validation(app.get("/live/queues/no%21").await, "queueId").await;
    assert_validation(app.get("/live/events?queue=-x").await, "queueId").await;

    let spec = body(app.get("/openapi.json").await).await;
    let paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/api/") || p.starts_with("/health") || p == &"/metrics"),
        "board routes stay out of the API spec: {paths:?}"
    );
}

#[tokio::test]
async fn the_event_stream_announces_a_projected_command_and_the_snapshot_has_it() {
    let app = TestApp::spawn().await;
    app.create_queue("er", 10).await;
    app.create_queue("other", 10).await;
    wait_queue_in_read_model(&app, "er").await;
    wait_queue_in_read_model(&app, "other").await;

    let mut page = Sse::open(&app, "?queue=er").await;
    page.expect("live", Duration::from_secs(10)).await;
    let mut picker = Sse::open(&app, "").await;
    picker.expect("live", Duration::from_secs(10)).await;

    // Another queue's change reaches the picker, not the page of `er`.
    check_in_named(&app, "other", "p0", "Zoe Other", "Low").await;
    let f = picker.expect("change", Duration::from_secs(5)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&f.data).unwrap(),
        json!({"queues": ["other"]})
    );

    let sent = Instant::now();
    check_in_named(&app, "er", "p1", "Ana Lima", "High").await;
    let f = page.expect("change", Duration::from_secs(5)).await;
    let latency = sent.elapsed();
    assert_eq!(
        serde_json::from_str::<Value>(&f.data).unwrap(),
        json!({"queues": ["er"]})
    );
    eprintln!("board: check-in to SSE change event in {latency:?}");

    let snapshot = body(app.get("/live/queues/er").await).await;
    assert_eq!(snapshot["queueId"], "er");
    assert_eq!(snapshot["names"], "full");
    assert_eq!(snapshot["waiting"][0]["name"], "Ana Lima");
    assert_eq!(snapshot["waiting"][0]["position"], 1);
    assert_eq!(snapshot["waiting"][0]["priority"], "High");
    assert!(
        snapshot["waiting"][0].get("patientId").is_none(),
        "{snapshot}"
    );

    let r = app
        .post(
            "/api/queues/er/call-next",
            json!({"consultingRoom": "Room 3"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    page.expect("change", Duration::from_secs(5)).await;
    let snapshot = body(app.get("/live/queues/er").await).await;
    assert_eq!(snapshot["called"][0]["name"], "Ana Lima");
    assert_eq!(snapshot["called"][0]["consultingRoom"], "Room 3");
    assert_eq!(snapshot["waiting"], json!([]));

    let queues = body(app.get("/live/queues").await).await;
    assert_eq!(queues.as_array().map(Vec::len), Some(2), "{queues}");
}

#[tokio::test]
async fn initials_mode_masks_names_on_the_server() {
    let mut settings = isolated_settings();
    settings.board_names = BoardNames::Initials;
    let app = TestApp::spawn_with(settings, Roles::ALL).await;
    app.create_queue("peds", 10).await;
    check_in_named(&app, "peds", "p1", "Maria José García", "Low").await;
    check_in_named(&app, "peds", "p2", "Bruno Souza", "Urgent").await;
    app.wait_all_processed(SETTLE).await;
    let r = app
        .post("/api/queues/peds/call-next", json!({"consultingRoom": "2"}))
        .await;
    assert_eq!(r.status(), 200);
    app.wait_all_processed(SETTLE).await;

    let text = app.get("/live/queues/peds").await.text().await.unwrap();
    assert!(!text.contains("Maria") && !text.contains("Bruno"), "{text}");
    let snapshot: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(snapshot["names"], "initials");
    assert_eq!(snapshot["called"][0]["name"], "B. S.");
    assert_eq!(snapshot["waiting"][0]["name"], "M. J. G.");
    // The API itself is unchanged.
    let api = body(app.get("/api/queues/peds").await).await;
    assert!(api.to_string().contains("Maria José García"));
}

#[tokio::test]
async fn the_projector_notifies_once_per_batch_and_only_while_a_page_is_open() {
    let app = TestApp::spawn().await;
    let mut heard = Notifications::listen(&app).await;
    app.create_queue("quiet", 10).await;
    app.check_in("quiet", "p1", "Low").await;
    app.wait_all_processed(SETTLE).await;
    assert_eq!(
        heard.drain(Duration::from_millis(500)).await,
        Vec::<String>::new(),
        "no page open: no NOTIFY"
    );

    let mut page = Sse::open(&app, "").await;
    page.expect("live", Duration::from_secs(10)).await;
    app.check_in("quiet", "p2", "Low").await;
    page.expect("change", Duration::from_secs(5)).await;
    app.wait_all_processed(SETTLE).await;
    assert_eq!(
        heard.drain(Duration::from_millis(500)).await,
        vec![r#"["quiet"]"#.to_owned()]
    );

    // A rebuild announces every queue once, not once per slice or stream.
    app.create_queue("second", 10).await;
    let f = page.expect("change", Duration::from_secs(5)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&f.data).unwrap(),
        json!({"queues": ["second"]})
    );
    app.wait_all_processed(SETTLE).await;
    assert_eq!(
        heard.drain(Duration::from_millis(300)).await,
        vec![r#"["second"]"#.to_owned()]
    );
    let r = app
        .post_empty("/api/projections/waiting_room/rebuild")
        .await;
    assert_eq!(r.status(), 202);
    let f = page.expect("change", Duration::from_secs(10)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&f.data).unwrap(),
        json!({"all": true})
    );
    assert_eq!(
        heard.drain(Duration::from_millis(500)).await,
        vec!["*".to_owned()]
    );
}

#[tokio::test]
async fn a_batch_of_streams_past_the_payload_limit_notifies_everything() {
    // No projector here: the test projects one big batch itself.
    let app = TestApp::spawn_with(isolated_settings(), Roles::API).await;
    let ids: Vec<String> = (0..130)
        .map(|i| format!("{i:03}-{}", "q".repeat(58)))
        .collect();
    for id in &ids {
        app.create_queue(id, 5).await;
    }
    let mut page = Sse::open(&app, "").await;
    page.expect("live", Duration::from_secs(10)).await;
    let mut heard = Notifications::listen(&app).await;
    let client = app.pool.get().await.unwrap();
    let ups: Vec<Option<i32>> = vec![None; ids.len()];
    let rows = client
        .query(
            "SELECT applied FROM project_batch('waiting_room', $1, $2)",
            &[&ids, &ups],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), ids.len());
    assert_eq!(
        heard.drain(Duration::from_millis(500)).await,
        vec!["*".to_owned()]
    );
    let f = page.expect("change", Duration::from_secs(5)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&f.data).unwrap(),
        json!({"all": true})
    );
}

#[tokio::test]
async fn a_lost_listener_marks_pages_stale_and_they_resync_when_it_is_back() {
    let app = TestApp::spawn().await;
    app.create_queue("wall", 10).await;
    wait_queue_in_read_model(&app, "wall").await;
    let mut page = Sse::open(&app, "?queue=wall").await;
    page.expect("live", Duration::from_secs(10)).await;

    let killed: i64 = app
        .scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE application_name = 'waitroom-board' AND datname = current_database()",
        )
        .await;
    assert_eq!(killed, 1, "one listener for the process");
    page.expect("stale", Duration::from_secs(5)).await;
    // The API keeps working meanwhile.
    let r = app.check_in("wall", "p1", "Low").await;
    assert_eq!(r.status(), 201);
    // Reconnected: `live` tells the page to resync, which shows the check-in it missed.
    page.expect("live", Duration::from_secs(10)).await;
    app.wait_all_processed(SETTLE).await;
    let snapshot = body(app.get("/live/queues/wall").await).await;
    assert_eq!(snapshot["waiting"].as_array().map(Vec::len), Some(1));
    app.check_in("wall", "p2", "Low").await;
    page.expect("change", Duration::from_secs(5)).await;
}
