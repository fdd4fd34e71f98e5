//! The HTTP side: one pooled client, one request per command with its status and problem
//! type, queue creation, and the `/metrics` sampler for the target's peak memory.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::workload::Action;
use super::{BenchArgs, BenchError};

/// A request that takes longer than this is a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Queues created concurrently at start.
const CREATE_CONCURRENCY: usize = 8;
/// The Prometheus name of resident memory.
const RSS_METRIC: &str = "process_resident_memory_bytes";

/// What came back for one command.
#[derive(Debug)]
pub enum Answer {
    /// A 2xx, with its JSON body (null when empty or not JSON).
    Success { status: u16, body: Value },
    /// Any other status, with the last segment of its problem `type` (or `-`).
    Failure { status: u16, problem: String },
    /// No response: connection refused, reset or timed out.
    Transport,
}

impl Answer {
    /// `"<status> <problem>"`, `"transport"`, or `None` for a success.
    pub fn error_kind(&self) -> Option<String> {
        match self {
            Answer::Success { .. } => None,
            Answer::Failure { status, problem } => Some(format!("{status} {problem}")),
            Answer::Transport => Some("transport".to_owned()),
        }
    }
}

/// One client whose pool keeps a connection per worker (or per in-flight request), sending
/// `API_TOKEN` as its bearer token when set (the target then requires one).
pub fn client(args: &BenchArgs, api_token: Option<&str>) -> Result<reqwest::Client, BenchError> {
    let pool = match args.rate {
        Some(_) => args.max_in_flight.unwrap_or(args.connections * 4),
        None => args.connections,
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = api_token.filter(|t| !t.is_empty()) {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| BenchError::Http(format!("API_TOKEN: {e}")))?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(pool as usize)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| BenchError::Http(e.to_string()))
}

/// Fails with one line when nothing answers `GET /health` at `url`.
pub async fn check_reachable(http: &reqwest::Client, url: &str) -> Result<(), BenchError> {
    let unreachable = |reason: String| BenchError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let response = http
        .get(format!("{url}/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| unreachable(reason(&e)))?;
    if !response.status().is_success() {
        return Err(unreachable(format!(
            "GET /health answered {}",
            response.status()
        )));
    }
    Ok(())
}

/// The innermost cause of a reqwest error ("Connection refused"), not its URL-laden wrapper.
fn reason(error: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// Sends one command on `queue`.
pub async fn send(http: &reqwest::Client, url: &str, queue: &str, action: &Action) -> Answer {
    let (path, body) = action.request(queue);
    let mut request = http.post(format!("{url}{path}"));
    if let Some(body) = &body {
        request = request.json(body);
    }
    let Ok(response) = request.send().await else {
        return Answer::Transport;
    };
    let status = response.status().as_u16();
    let Ok(bytes) = response.bytes().await else {
        return Answer::Transport;
    };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        Answer::Success { status, body }
    } else {
        Answer::Failure {
            status,
            problem: problem_slug(&body),
        }
    }
}

/// `queue-full` from `{"type": "https://…/problems/queue-full"}`; `-` without a type.
fn problem_slug(body: &Value) -> String {
    body.get("type")
        .and_then(Value::as_str)
        .and_then(|t| t.rsplit('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("-")
        .to_owned()
}

/// Creates `queues` (capacity 10000, so a growing queue does not fill up in a run).
pub async fn create_queues(
    http: &reqwest::Client,
    url: &str,
    queues: &[String],
) -> Result<(), BenchError> {
    futures_util::stream::iter(queues)
        .map(|queue| async move {
            let failed = |reason: String| BenchError::QueueSetup {
                queue: queue.clone(),
                reason,
            };
            let response = http
                .post(format!("{url}/api/queues"))
                .json(&json!({"queueId": queue, "name": format!("Bench {queue}"), "maxCapacity": 10_000}))
                .send()
                .await
                .map_err(|e| failed(reason(&e)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            Err(failed(format!("{status} {}", problem_slug(&body))))
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Reads the target's `/metrics` periodically for its resident memory, keeping the peak.
pub struct MemorySampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Option<u64>>,
}

impl MemorySampler {
    /// Starts sampling now, every `every` (zero: never, the peak is then `None`).
    pub fn spawn(http: reqwest::Client, url: String, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak: Option<u64> = None;
            if every.is_zero() {
                return peak;
            }
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = token.cancelled() => break,
                }
                if let Some(rss) = sample(&http, &url).await {
                    peak = Some(peak.map_or(rss, |p| p.max(rss)));
                }
            }
            peak
        });
        Self { stop, task }
    }

    /// Stops sampling; the peak in bytes, or `None` when the target does not export it.
    pub async fn stop(self) -> Option<u64> {
        self.stop.cancel();
        self.task.await.ok().flatten()
    }
}

async fn sample(http: &reqwest::Client, url: &str) -> Option<u64> {
    let response = http
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    parse_rss(&response.text().await.ok()?)
}

/// The value of `process_resident_memory_bytes` in a Prometheus / OpenMetrics text.
fn parse_rss(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(RSS_METRIC)?.strip_prefix(' ')?;
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        // A byte count far below 2^53: the f64 is exact.
        Some(value as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_exposition_and_absent_when_missing() {
        let text = "# HELP process_resident_memory_bytes x\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 123904\nwaitroom_outbox_pending 0\n# EOF\n";
        assert_eq!(parse_rss(text), Some(123_904));
        assert_eq!(parse_rss("process_resident_memory_bytes_x 5\n# EOF"), None);
        assert_eq!(
            parse_rss("process_resident_memory_bytes 1.5e9\n"),
            Some(1_500_000_000)
        );
    }

    #[test]
    fn the_problem_slug_is_the_last_segment_of_the_type() {
        let body = json!({"type": "https://waitroom.dev/problems/queue-full"});
        assert_eq!(problem_slug(&body), "queue-full");
        assert_eq!(problem_slug(&Value::Null), "-");
    }
}
