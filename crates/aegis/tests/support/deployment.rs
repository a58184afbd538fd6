//! Several `aegis serve` replicas on one fresh PostgreSQL database, as behind a load
//! balancer (`replicas.rs`, `faults.rs`).

use super::*;
use aegis_testdb::FreshDatabase;

/// A deployment: `n` replicas on one fresh database, each in its own directory (so each
/// signs with its own key), and the tenant's admin key.
pub struct Deployment {
    pub replicas: Vec<Gateway>,
    pub admin: String,
    pub database: FreshDatabase,
    pub dir: tempfile::TempDir,
}

impl Deployment {
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Deployment {
        let database = FreshDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let admin = init_on(dir.path(), database.url(), "acme");
        let mut replicas = Vec::new();
        for i in 0..n {
            replicas.push(start_replica(dir.path(), i, database.url(), env).await);
        }
        Deployment {
            replicas,
            admin,
            database,
            dir,
        }
    }
}

pub async fn start_replica(dir: &Path, i: usize, db: &str, env: &[(&str, &str)]) -> Gateway {
    let home = dir.join(format!("replica-{i}"));
    std::fs::create_dir_all(&home).unwrap();
    Gateway::start_on(&home, db, env).await
}

/// Waits until this replica leads the SOC (its log says so).
pub async fn wait_until_leading(gw: &Gateway) {
    eventually(10, "a replica to take the SOC leadership", || async {
        gw.log_text().contains("leading:").then_some(())
    })
    .await;
}
