//! Postgres connection-pool gauges, read from each registered pool when `/metrics` is
//! encoded: `waitroom_db_pool_connections{pool, state="idle"|"in_use"}`,
//! `waitroom_db_pool_max_connections{pool}` and `waitroom_db_pool_waiting{pool}` (tasks
//! waiting for a connection: the pool is too small for the load).
//!
//! A collector rather than gauges set from the code that uses the pools: deadpool keeps
//! these counts itself (`Pool::status`), so reading them at scrape time is exact and
//! costs nothing between scrapes.

use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

/// The process's pools by name (`store`: API, console and scrapes; `projector`: its batches).
#[derive(Debug, Clone, Default)]
pub struct Pools(Arc<Mutex<Vec<(&'static str, Pool)>>>);

impl Pools {
    /// Adds (or replaces) the pool exported as `pool="name"`.
    pub fn register(&self, name: &'static str, pool: Pool) {
        let mut pools = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|(n, _)| *n != name);
        pools.push((name, pool));
    }

    fn snapshot(&self) -> Vec<(&'static str, deadpool_postgres::Status)> {
        let pools = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pools.iter().map(|(n, p)| (*n, p.status())).collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    pool: &'static str,
    state: &'static str,
}

/// Encodes the gauges of every registered pool.
#[derive(Debug)]
pub struct PoolCollector(pub Pools);

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = self.0.snapshot();
        if pools.is_empty() {
            return Ok(());
        }
        let gauge = ConstGauge::new(0i64).metric_type();
        let mut family = encoder.encode_descriptor(
            "waitroom_db_pool_connections",
            "Open Postgres connections of a pool, idle or in use",
            None,
            gauge,
        )?;
        for (pool, s) in &pools {
            for (state, n) in [
                ("idle", s.available),
                ("in_use", s.size.saturating_sub(s.available)),
            ] {
                ConstGauge::new(as_i64(n))
                    .encode(family.encode_family(&PoolStateLabels { pool, state })?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "waitroom_db_pool_max_connections",
            "Most connections a pool opens (DATABASE_POOL_SIZE for the store pool)",
            None,
            gauge,
        )?;
        for (pool, s) in &pools {
            ConstGauge::new(as_i64(s.max_size))
                .encode(family.encode_family(&PoolLabel { pool })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "waitroom_db_pool_waiting",
            "Tasks waiting for a pooled connection",
            None,
            gauge,
        )?;
        for (pool, s) in &pools {
            ConstGauge::new(as_i64(s.waiting))
                .encode(family.encode_family(&PoolLabel { pool })?)?;
        }
        Ok(())
    }
}
