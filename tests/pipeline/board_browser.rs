//! The board end to end in headless Chromium (Debian's `chromium` + `chromium-driver`),
//! driven over WebDriver with fantoccini: call order and rooms, a check-in appearing without
//! reload, call-next moving a patient to the called section, no console errors, recovery
//! after a server restart, and a screenshot under `target/`.
//!
//! `scripts/test.sh` installs the browser when missing and sets
//! `WAITROOM_BROWSER_TESTS=require`, so CI fails without it; a plain `cargo test` on a
//! machine without `chromedriver` skips this test with a note.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::api_support::SETTLE;
use crate::helpers::TestApp;

/// `POST /session/{id}/se/log` (chromedriver): the browser console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// chromedriver and its browser session; the driver is killed on drop.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    /// `None` when chromedriver is missing and the tests are not required.
    async fn start() -> Option<Self> {
        let required = std::env::var("WAITROOM_BROWSER_TESTS").is_ok_and(|v| v == "require");
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = crate::helpers::free_port();
        let driver = tokio::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let driver = match driver {
            Ok(d) => d,
            Err(e) if !required => {
                eprintln!(
                    "board browser test skipped: cannot start {driver_bin} ({e}); \
                     `apt-get install -y chromium chromium-driver` or run scripts/test.sh"
                );
                return None;
            }
            Err(e) => panic!("cannot start {driver_bin}: {e} (WAITROOM_BROWSER_TESTS=require)"),
        };
        let mut caps = Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1366,900",
                            "--force-device-scale-factor=1"]}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from {driver_bin}: {e}"),
            }
        };
        Some(Self {
            client,
            _driver: driver,
        })
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    /// Polls `script` every 20 ms until it returns something truthy; panics after `within`.
    async fn until(&self, what: &str, within: Duration, script: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Console entries since the last call, as (level, message).
    async fn console(&self) -> Vec<(String, String)> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("chromedriver returns the browser log");
        entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or_default().to_owned(),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/board");
        std::fs::create_dir_all(&dir).expect("target/board");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("screenshot written");
        path
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        * 1000.0
}

/// Names on the board: called (with rooms) and waiting (with positions and priorities).
const STATE: &str = r#"
const called = [...document.querySelectorAll('#called .called-item')].map(li =>
  [li.querySelector('.room').textContent, li.querySelector('.name').textContent, li.classList.contains('announce')]);
const waiting = [...document.querySelectorAll('#waiting tbody tr')].map(tr =>
  [...tr.children].slice(0, 3).map(td => td.textContent));
return {called, waiting, conn: document.body.dataset.conn,
        renderedAt: Number(document.body.dataset.renderedAt || 0)};
"#;

async fn check_in(app: &TestApp, id: &str, name: &str, priority: &str) {
    let r = app
        .post(
            "/api/queues/cardiology/check-ins",
            json!({"patientId": id, "patientName": name, "priority": priority,
                   "consultationType": "Cardiology"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

async fn call_next(app: &TestApp, room: &str) {
    let r = app
        .post(
            "/api/queues/cardiology/call-next",
            json!({"consultingRoom": room}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// Errors in the console, leaving out `allowed` substrings.
fn errors(entries: &[(String, String)], allowed: &[&str]) -> Vec<String> {
    entries
        .iter()
        .filter(|(level, _)| level == "SEVERE")
        .filter(|(_, m)| !allowed.iter().any(|a| m.contains(a)))
        .map(|(_, m)| m.clone())
        .collect()
}

#[tokio::test]
async fn the_board_in_a_browser_follows_the_queue_live_and_survives_a_restart() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    // With API tokens on, as in production: the page holds no token, and everything it
    // reads (the staff line included) must still work. The test's own client sends it.
    let mut settings = crate::helpers::isolated_settings();
    settings.api_token = Some(waitroom::config::Secret::new(
        "board-browser-token-0123456789",
    ));
    let mut app = TestApp::spawn_with(settings, waitroom::app::Roles::ALL).await;
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": "cardiology", "name": "Cardiology", "maxCapacity": 50}),
        )
        .await;
    assert_eq!(r.status(), 201);
    check_in(&app, "p1", "Ana Lima", "Low").await;
    check_in(&app, "p2", "Bruno Souza", "Urgent").await;
    check_in(&app, "p3", "Carla Dias", "Medium").await;
    check_in(&app, "p4", "Rafael Costa", "High").await;
    call_next(&app, "Room 3").await;
    app.wait_all_processed(SETTLE).await;

    // The picker lists the queue; its link opens the board.
    browser.client.goto(&app.address).await.expect("open /");
    // The picker re-renders its list when its live feed (re)connects, which can replace the
    // link between finding it and using it (a stale element): find it again then.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let link = browser
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("a[href='/board/cardiology']"))
            .await
            .expect("the picker lists the queue");
        let opened = match link.text().await {
            Ok(text) => {
                assert!(text.contains("Cardiology"), "link text {text:?}");
                link.click().await
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("board: picker link replaced while in use ({e}); finding it again");
            }
            Err(e) => panic!("open the board: {e}"),
        }
    }

    let state = browser
        .until(
            "board rendered and live",
            Duration::from_secs(10),
            &format!("const r = (() => {{ {STATE} }})(); return r.conn === 'live' && r.renderedAt > 0 ? r : null;"),
        )
        .await;
    assert_eq!(state["called"], json!([["Room 3", "Bruno Souza", false]]));
    assert_eq!(
        state["waiting"],
        json!([
            ["1", "Rafael Costa", "High"],
            ["2", "Carla Dias", "Medium"],
            ["3", "Ana Lima", "Low"]
        ])
    );

    // A check-in through the API appears without a reload.
    let reloads_marker = browser
        .js("window.__sameDocument = true; return true;")
        .await;
    assert_eq!(reloads_marker, json!(true));
    let sent = now_ms();
    check_in(&app, "p5", "Diego Ramos", "High").await;
    let state = browser
        .until(
            "the check-in on the page",
            Duration::from_secs(5),
            &format!("const r = (() => {{ {STATE} }})(); return r.waiting.some(w => w[1] === 'Diego Ramos') ? r : null;"),
        )
        .await;
    let check_in_ms = state["renderedAt"].as_f64().unwrap() - sent;
    eprintln!(
        "board: check-in visible on the open page {check_in_ms:.0} ms after the request was sent"
    );
    assert_eq!(
        state["waiting"],
        json!([
            ["1", "Rafael Costa", "High"],
            ["2", "Diego Ramos", "High"],
            ["3", "Carla Dias", "Medium"],
            ["4", "Ana Lima", "Low"]
        ])
    );

    // Call-next moves the first waiting patient to the called section, announced.
    let sent = now_ms();
    call_next(&app, "Room 5").await;
    let state = browser
        .until(
            "the called patient on the page",
            Duration::from_secs(5),
            &format!("const r = (() => {{ {STATE} }})(); return r.called.length === 2 ? r : null;"),
        )
        .await;
    let call_ms = state["renderedAt"].as_f64().unwrap() - sent;
    eprintln!(
        "board: call-next visible on the open page {call_ms:.0} ms after the request was sent"
    );
    assert_eq!(
        state["called"],
        json!([
            ["Room 3", "Bruno Souza", false],
            ["Room 5", "Rafael Costa", true]
        ])
    );
    assert_eq!(state["waiting"][0], json!(["1", "Diego Ramos", "High"]));
    assert_eq!(
        browser.js("return window.__sameDocument === true;").await,
        json!(true),
        "the page was not reloaded"
    );
    // The staff panel filled in from /live/staff (the page has no API token).
    browser
        .until(
            "staff panel",
            Duration::from_secs(20),
            "return document.getElementById('projection').textContent.startsWith('healthy');",
        )
        .await;
    let shot = browser.screenshot("board.png").await;
    eprintln!("board: screenshot {}", shot.display());

    let console = browser.console().await;
    assert_eq!(
        errors(&console, &[]),
        Vec::<String>::new(),
        "console: {console:?}"
    );

    // Server restart: the page marks itself stale, then recovers and resyncs by itself.
    app.stop().await;
    browser
        .until(
            "reconnecting mark while the server is down",
            Duration::from_secs(10),
            "return document.body.dataset.conn === 'stale';",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.getElementById('conn').textContent;")
            .await,
        json!("reconnecting…")
    );
    let down = Instant::now();
    app.start(waitroom::app::Roles::ALL).await;
    check_in(&app, "p6", "Eva Costa", "Urgent").await;
    let state = browser
        .until(
            "the page back, live, with the check-in made after the restart",
            Duration::from_secs(20),
            &format!("const r = (() => {{ {STATE} }})(); return r.conn === 'live' && r.waiting.some(w => w[1] === 'Eva Costa') ? r : null;"),
        )
        .await;
    eprintln!(
        "board: recovered {:?} after the server came back",
        down.elapsed()
    );
    assert_eq!(state["waiting"][0], json!(["1", "Eva Costa", "Urgent"]));
    assert_eq!(
        browser.js("return window.__sameDocument === true;").await,
        json!(true),
        "recovered without a reload"
    );
    let console = browser.console().await;
    // While the server was down the browser logs the failed reconnection attempts.
    assert_eq!(
        errors(
            &console,
            &[
                "ERR_CONNECTION_REFUSED",
                "ERR_EMPTY_RESPONSE",
                "ERR_CONNECTION_RESET",
                "ERR_INCOMPLETE_CHUNKED_ENCODING"
            ]
        ),
        Vec::<String>::new(),
        "console: {console:?}"
    );

    let _ = browser.client.close().await;
}
