//! Liveness, readiness (Postgres, RabbitMQ, relay, projector) and the Prometheus endpoint.

use std::time::Duration;

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OpenApi};

use super::models::{DependencyCheck, Liveness, OldestTransaction, Readiness};
use super::types::{DependencyStatus, LivenessStatus, ReadinessStatus};
use super::{ApiTags, AppState};
use crate::broker;
use crate::relay::LEADER_LOCK;
use crate::state::{ProjectorRole, RelayRole};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

const RELAY_LEADER_EXISTS: &str = "SELECT advisory_lock_held($1, $2)";

/// The oldest transaction that holds an xid anywhere on the cluster (this session aside),
/// prepared transactions included: pg_current_snapshot() lists it in flight, so an idle
/// relay waits it out before it sleeps (src/relay/listener.rs). Transactions without an
/// xid (read-only ones) do not hold the relay back and are not counted. Other users'
/// sessions show only to superusers and members of pg_read_all_stats.
const OLDEST_TRANSACTION: &str = "\
SELECT extract(epoch FROM clock_timestamp() - t.started)::float8, t.pid, t.datname,
       t.application_name, t.state
  FROM (SELECT xact_start AS started, pid, datname::text, application_name, state
          FROM pg_stat_activity
         WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
        UNION ALL
        SELECT prepared, NULL, database::text, 'prepared transaction ' || gid, 'prepared'
          FROM pg_prepared_xacts) t
 ORDER BY t.started
 LIMIT 1";

/// From this age on, the oldest transaction holding an xid makes readiness report a
/// `warning` (still 200). The `WaitroomCommitSafeBarrierHeldBack` alert uses the same age.
pub const TRANSACTION_WARNING: Duration = Duration::from_secs(60);

/// The oldest transaction holding an xid on the cluster, if any.
async fn oldest_transaction(
    client: &tokio_postgres::Client,
) -> Result<Option<OldestTransaction>, tokio_postgres::Error> {
    Ok(client
        .query_opt(OLDEST_TRANSACTION, &[])
        .await?
        .map(|r| OldestTransaction {
            age_seconds: r.get::<_, Option<f64>>(0).unwrap_or(0.0),
            pid: r.get(1),
            database: r.get(2),
            application_name: r.get(3),
            state: r.get(4),
        }))
}

/// The readiness check for `oldest`: `warning` from `warn_after` on, `up` below it.
fn transaction_check(
    oldest: &Result<Option<OldestTransaction>, String>,
    warn_after: Duration,
) -> DependencyCheck {
    let (status, detail) = match oldest {
        Ok(None) => (
            DependencyStatus::Up,
            "no transaction holds a transaction id".to_owned(),
        ),
        Ok(Some(t)) => {
            let who = format!(
                "pid {}, database {}, application {}, {}",
                t.pid
                    .map_or("none (prepared)".to_owned(), |p| p.to_string()),
                t.database.as_deref().unwrap_or("?"),
                t.application_name.as_deref().unwrap_or("?"),
                t.state.as_deref().unwrap_or("?"),
            );
            if t.age_seconds >= warn_after.as_secs_f64() {
                (
                    DependencyStatus::Warning,
                    format!(
                        "a transaction has held a transaction id for {:.0} s ({who}): the relay \
                         cannot go idle (it polls until the transaction ends) and vacuum cannot \
                         clean up behind it; end it, e.g. SELECT pg_terminate_backend(pid)",
                        t.age_seconds
                    ),
                )
            } else {
                (
                    DependencyStatus::Up,
                    format!(
                        "oldest transaction holding an xid: {:.1} s ({who})",
                        t.age_seconds
                    ),
                )
            }
        }
        Err(e) => (DependencyStatus::Warning, format!("cannot tell: {e}")),
    };
    DependencyCheck {
        name: "transactions".to_owned(),
        status,
        detail,
    }
}

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
        let oldest = oldest_transaction(&client).await?;
        Ok::<_, crate::store::DbError>((
            leader.get::<_, bool>(0),
            oldest.map_or(0.0, |t| t.age_seconds),
        ))
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
                .set(h.parked_count);
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

    async fn oldest_transaction(&self) -> Result<Option<OldestTransaction>, String> {
        let pool = self.0.store.pool();
        timed(async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            oldest_transaction(&client)
                .await
                .map_err(|e| crate::store::describe(&e))
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
    ///
    /// Also reports the oldest transaction holding a transaction id (the relay's
    /// commit-safe barrier): a `warning` check from 60 s on, still 200.
    #[oai(
        path = "/health/ready",
        method = "get",
        operation_id = "getReadiness",
        tag = "ApiTags::Health"
    )]
    async fn ready(&self, state: Data<&AppState>) -> ReadyResponse {
        let probes = Probes(&state);
        let (pg, consumers, oldest) = tokio::join!(
            probes.relay_leader_exists(),
            probes.projector_consumers(),
            probes.oldest_transaction()
        );
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
            transaction_check(&oldest, TRANSACTION_WARNING),
        ];
        let ready = checks.iter().all(|c| c.status != DependencyStatus::Down);
        let body = Readiness {
            status: if ready {
                ReadinessStatus::Ready
            } else {
                ReadinessStatus::NotReady
            },
            checks,
            oldest_transaction: oldest.ok().flatten(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open_for(age_seconds: f64) -> Result<Option<OldestTransaction>, String> {
        Ok(Some(OldestTransaction {
            age_seconds,
            pid: Some(4242),
            database: Some("waitroom".into()),
            application_name: Some("psql".into()),
            state: Some("idle in transaction".into()),
        }))
    }

    #[test]
    fn a_transaction_past_the_threshold_is_a_warning_naming_its_age_and_pid() {
        let check = transaction_check(&open_for(75.4), TRANSACTION_WARNING);
        assert_eq!(check.name, "transactions");
        assert_eq!(check.status, DependencyStatus::Warning);
        assert!(check.detail.contains("75 s"), "{}", check.detail);
        assert!(check.detail.contains("pid 4242"), "{}", check.detail);
        assert!(
            check.detail.contains("idle in transaction"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_younger_transaction_or_none_is_up() {
        let check = transaction_check(&open_for(59.9), TRANSACTION_WARNING);
        assert_eq!(check.status, DependencyStatus::Up);
        assert!(check.detail.contains("pid 4242"), "{}", check.detail);
        assert_eq!(
            transaction_check(&Ok(None), TRANSACTION_WARNING).status,
            DependencyStatus::Up
        );
    }

    #[test]
    fn a_prepared_transaction_has_no_pid() {
        let prepared = Ok(Some(OldestTransaction {
            age_seconds: 120.0,
            pid: None,
            database: Some("waitroom".into()),
            application_name: Some("prepared transaction t1".into()),
            state: Some("prepared".into()),
        }));
        let check = transaction_check(&prepared, TRANSACTION_WARNING);
        assert_eq!(check.status, DependencyStatus::Warning);
        assert!(
            check.detail.contains("prepared transaction t1"),
            "{}",
            check.detail
        );
    }
}
