//! Liveness, readiness (Postgres, RabbitMQ, relay, projector) and the Prometheus endpoint.

use std::time::Duration;

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OpenApi};

use super::models::{DependencyCheck, Liveness, Readiness};
use super::types::{DependencyStatus, LivenessStatus, ReadinessStatus};
use super::{ApiTags, AppState};
use crate::broker;
use crate::relay::LEADER_LOCK;
use crate::state::{ProjectorRole, RelayRole};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

const RELAY_LEADER_EXISTS: &str = "SELECT advisory_lock_held($1, $2)";

/// The oldest transaction that holds an xid anywhere on the cluster (this session aside):
/// pg_current_snapshot() lists it in flight, so an idle relay waits it out before it sleeps
/// (src/relay/listener.rs). Other users' sessions show only to superusers and members of
/// pg_read_all_stats.
const OLDEST_TRANSACTION_AGE: &str = "SELECT coalesce(extract(epoch FROM clock_timestamp() \
     - min(xact_start)), 0)::float8 FROM pg_stat_activity \
     WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()";

/// The OpenMetrics text of `/metrics`, after refreshing the gauges read from Postgres.
pub async fn scrape(state: &AppState) -> String {
    refresh(state).await;
    state.metrics.encode()
}

/// Refreshes the gauges read from Postgres (outbox backlog, parked streams, relay leader,
/// oldest transaction). A gauge whose query fails or takes longer than 2 s keeps its last
/// value; the scrape still answers.
pub async fn refresh(state: &AppState) {
    let m = &state.metrics;
    let pool = state.store.pool();
    let backlog = timed(crate::lag::outbox_backlog(pool));
    let health = timed(crate::projector::views::projection_health(pool));
    let database = timed(async {
        let client = pool.get().await?;
        let leader = client
            .query_one(RELAY_LEADER_EXISTS, &[&LEADER_LOCK.0, &LEADER_LOCK.1])
            .await?;
        let oldest = client.query_one(OLDEST_TRANSACTION_AGE, &[]).await?;
        Ok::<_, crate::lag::LagError>((leader.get::<_, bool>(0), oldest.get::<_, f64>(0)))
    });
    let (backlog, health, database) = tokio::join!(backlog, health, database);
    if let Ok(b) = backlog {
        m.outbox_pending.set(b.count);
        m.outbox_oldest_pending_age
            .set(b.oldest_age_ms.unwrap_or(0.0) / 1000.0);
        m.outbox_failed.set(b.failed);
    }
    if let Ok(health) = health {
        for h in health {
            m.parked_streams
                .get_or_create(&crate::telemetry::ProjectionLabel::new(&h.name))
                .set(h.parked.len() as i64);
        }
    }
    if let Ok((leader, oldest)) = database {
        m.relay_leader_present.set(i64::from(leader));
        m.oldest_transaction_age.set(oldest);
    }
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Every dependency is up.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// At least one dependency is down (see `checks`).
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// OpenMetrics text (Prometheus scrapes it as is), ending in `# EOF`.
    #[oai(
        status = 200,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )]
    Ok(PlainText<String>),
}

/// Health and metrics.
pub struct HealthApi;

fn check(name: &str, result: Result<String, String>) -> DependencyCheck {
    // The details quote what Postgres and RabbitMQ answered; no secret may pass.
    let result = result
        .map(|d| crate::telemetry::redact::scrub(&d).into_owned())
        .map_err(|d| crate::telemetry::redact::scrub(&d).into_owned());
    match result {
        Ok(detail) => DependencyCheck {
            name: name.to_owned(),
            status: DependencyStatus::Up,
            detail,
        },
        Err(detail) => DependencyCheck {
            name: name.to_owned(),
            status: DependencyStatus::Down,
            detail,
        },
    }
}

async fn timed<T, E: std::fmt::Display>(
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

/// The readiness probes, on the shared state.
struct Probes<'a>(&'a AppState);

impl Probes<'_> {
    /// Checks Postgres by asking it whether any session holds the relay leader lock.
    async fn relay_leader_exists(&self) -> Result<bool, String> {
        let pool = self.0.store.pool();
        timed(async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            let row = client
                .query_one(RELAY_LEADER_EXISTS, &[&LEADER_LOCK.0, &LEADER_LOCK.1])
                .await
                .map_err(|e| e.to_string())?;
            Ok::<bool, String>(row.get(0))
        })
        .await
    }

    async fn projector_consumers(&self) -> Result<u32, String> {
        let state = self.0;
        let mut slot = state.broker.lock().await;
        if slot
            .as_ref()
            .is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected())
        {
            *slot = None;
            let connection = timed(broker::connect(&state.amqp_url, "waitroom-api")).await?;
            let channel = timed(connection.create_channel()).await?;
            timed(broker::declare_topology(&channel, &state.names)).await?;
            *slot = Some((connection, channel));
        }
        let (_, channel) = slot.as_ref().ok_or("not connected")?;
        let count = timed(broker::consumer_count(channel, &state.names)).await;
        if count.is_err() {
            // A failed passive declare closes the channel; reconnect next time.
            *slot = None;
        }
        count
    }
}

#[OpenApi]
impl HealthApi {
    /// Liveness: the process is up and serving.
    #[oai(
        path = "/health",
        method = "get",
        operation_id = "getLiveness",
        tag = "ApiTags::Health"
    )]
    async fn health(&self) -> Json<Liveness> {
        Json(Liveness {
            status: LivenessStatus::Ok,
        })
    }

    /// Readiness: Postgres and RabbitMQ answer, a relay leads, and a projector consumes.
    #[oai(
        path = "/health/ready",
        method = "get",
        operation_id = "getReadiness",
        tag = "ApiTags::Health"
    )]
    async fn ready(&self, state: Data<&AppState>) -> ReadyResponse {
        let probes = Probes(&state);
        let (pg, consumers) =
            tokio::join!(probes.relay_leader_exists(), probes.projector_consumers());
        let live = &state.live;
        let relay = live.relay();
        let projector = live.projector();
        let relay_check = match (&pg, relay.role) {
            (_, RelayRole::Leader) => Ok("leader in this process".to_owned()),
            (Ok(true), _) => Ok("a leader holds the relay lock".to_owned()),
            (Ok(false), RelayRole::Standby) => {
                Err("this process is waiting for the relay lock".to_owned())
            }
            (Ok(false), _) => {
                Err("no relay holds the leader lock; start `waitroom relay`".to_owned())
            }
            (Err(_), _) => Err("unknown: PostgreSQL is down".to_owned()),
        };
        let relay_check = relay_check.map_err(|e| match &relay.last_error {
            Some(last) => format!("{e} (last error: {last})"),
            None => e,
        });
        let projector_check = match (&consumers, projector.role) {
            (Ok(n), _) if *n > 0 => Ok(format!("{n} consumer(s) on {}", state.names.queue)),
            (Ok(_), ProjectorRole::Off) => {
                Err("no projector consumes; start `waitroom project`".to_owned())
            }
            (Ok(_), role) => Err(format!(
                "projector in this process is {role:?}{}",
                projector
                    .last_error
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )),
            (Err(_), _) => Err("unknown: RabbitMQ is down".to_owned()),
        };
        let checks = vec![
            check(
                "postgres",
                pg.as_ref()
                    .map(|_| "connected".to_owned())
                    .map_err(Clone::clone),
            ),
            check(
                "rabbitmq",
                consumers
                    .as_ref()
                    .map(|_| "connected".to_owned())
                    .map_err(Clone::clone),
            ),
            check("relay", relay_check),
            check("projector", projector_check),
        ];
        let ready = checks.iter().all(|c| c.status == DependencyStatus::Up);
        let body = Readiness {
            status: if ready {
                ReadinessStatus::Ready
            } else {
                ReadinessStatus::NotReady
            },
            checks,
        };
        if ready {
            ReadyResponse::Ready(Json(body))
        } else {
            ReadyResponse::NotReady(Json(body))
        }
    }

    /// Prometheus / OpenMetrics metrics. Outbox gauges are refreshed on each scrape.
    #[oai(
        path = "/metrics",
        method = "get",
        operation_id = "getMetrics",
        tag = "ApiTags::Health"
    )]
    async fn metrics(&self, state: Data<&AppState>) -> MetricsResponse {
        MetricsResponse::Ok(PlainText(scrape(&state).await))
    }
}
