//! SQLite migrations keep what a database held. Migration 0021 rebuilds `incident_evidence`
//! without the `decision_id` column (the decision is read through the event): a database
//! written at schema 20 reads the same incident evidence after it. Migration 0022 gives
//! checkpoints their place in a signed batch: checkpoints signed alone before it still
//! verify, and the chain goes on under batch signatures. Migration 0023 drops the index of a
//! tenant's decisions: a database written at schema 22 lists the same decisions after it.
//! Migration 0024 rewrites the decisions table's CHECK as equalities, in place: a database
//! written at schema 23 reads and verifies before it, keeps its decisions and its chain, and
//! the check refuses what it refused.

mod support;

use aegis_core::canonical::canonical_json;
use aegis_core::receipt::{CheckpointBody, RECEIPT_SCHEMA_VERSION};
use aegis_store::chain::{ChainWalk, keyring};
use aegis_store::sqlite::SqliteStore;
use aegis_store::*;
use ed25519_dalek::{Signer, SigningKey};
use support::*;

/// The evidence table as schema 20 had it (migrations 0002 and 0005), filled from the
/// current one, and the schema version set back to 20; run after [`BACK_TO_SCHEMA_21`].
const BACK_TO_SCHEMA_20: &str = "
    CREATE TABLE evidence_at_schema_20 (
        incident_id  TEXT NOT NULL REFERENCES incidents (id),
        event_seq    INTEGER NOT NULL,
        decision_id  TEXT,
        PRIMARY KEY (incident_id, event_seq)
    );
    INSERT INTO evidence_at_schema_20 (incident_id, event_seq, decision_id)
        SELECT ev.incident_id, ev.event_seq, d.id
        FROM incident_evidence ev LEFT JOIN decisions d ON d.event_seq = ev.event_seq;
    DROP TABLE incident_evidence;
    ALTER TABLE evidence_at_schema_20 RENAME TO incident_evidence;
    CREATE INDEX incident_evidence_decision ON incident_evidence (decision_id);
    DELETE FROM schema_migrations WHERE version > 20;
";

/// The decisions table's CHECK as migration 0001 wrote it, and as migration 0024 writes it.
const CHECK_AS_LIST: &str = "CHECK (decision IN ('allow', 'deny', 'require_approval'))";
const CHECK_AS_EQUALITIES: &str =
    "CHECK (decision = 'allow' OR decision = 'deny' OR decision = 'require_approval')";

/// Migration 0024 undone: the decisions table's CHECK as migration 0001 wrote it, and the
/// schema version set back to 23.
fn back_to_schema_23() -> String {
    schema_23_with_check(CHECK_AS_LIST)
}

/// The schema version set back to 23 with `check` in place of the decisions table's CHECK:
/// the text edit SQLite's `ALTER TABLE` documentation allows. The connection is closed after
/// it, so the next one parses the schema from the file.
fn schema_23_with_check(check: &str) -> String {
    format!(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = replace(sql, '{equalities}', '{check}')
         WHERE type = 'table' AND name = 'decisions';
         PRAGMA writable_schema = OFF;
         DELETE FROM schema_migrations WHERE version > 23;",
        equalities = CHECK_AS_EQUALITIES.replace('\'', "''"),
        check = check.replace('\'', "''"),
    )
}

/// Migration 0023 undone: the index of a tenant's decisions (migration 0001) back, and the
/// schema version set back to 22; run after [`back_to_schema_23`].
const BACK_TO_SCHEMA_22: &str = "
    CREATE INDEX decisions_tenant ON decisions (tenant_id, event_seq);
    DELETE FROM schema_migrations WHERE version > 22;
";

/// Migration 0022 undone: the batch columns dropped and the schema version set back to 21;
/// run after [`BACK_TO_SCHEMA_22`].
const BACK_TO_SCHEMA_21: &str = "
    ALTER TABLE receipt_checkpoints DROP COLUMN batch_index;
    ALTER TABLE receipt_checkpoints DROP COLUMN batch_size;
    ALTER TABLE receipt_checkpoints DROP COLUMN batch_path;
    DELETE FROM schema_migrations WHERE version > 21;
";

fn open(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path, signer(), secrets()).unwrap()
}

/// A database in a fresh directory with the agent `agt_1` and `decisions` recorded, closed.
async fn database_with(
    decisions: impl IntoIterator<Item = NewDecision>,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aegis.db");
    let store = open(&path);
    agent(&store).await;
    for decision in decisions {
        store.record_decision(decision).await.unwrap();
    }
    (dir, path)
}

/// Runs `steps` (`BACK_TO_SCHEMA_*`, the newest first) on the closed database at `path`.
fn set_back(path: &std::path::Path, steps: &[&str]) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    for step in steps {
        conn.execute_batch(step).unwrap();
    }
    conn
}

async fn evidence_read(store: &SqliteStore) -> (IncidentDetail, Vec<EvidenceLink>) {
    let detail = store.incident(&tenant(), "inc_1").await.unwrap();
    let decisions: Vec<String> = (1..=4).map(|n| format!("dec_{n}")).collect();
    let links = store.evidence_links(&tenant(), &decisions).await.unwrap();
    (detail, links)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_evidence_reads_the_same_after_migration_0021() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aegis.db");
    let store = open(&path);
    agent(&store).await;
    let mut seqs = Vec::new();
    for n in 1..=4 {
        seqs.push(
            store
                .record_decision(denied_merge(n))
                .await
                .unwrap()
                .event_seq,
        );
    }
    // Three of the four denies are the incident's evidence, and one event that is no
    // decision.
    let note = store
        .record_event(
            &tenant(),
            "agent.note",
            Some("agt_1"),
            serde_json::json!({}),
        )
        .await
        .unwrap();
    let evidence = [seqs[0], seqs[1], seqs[3], note].map(|event_seq| EvidenceRef { event_seq });
    let opened = storm_opened(note, evidence.to_vec(), now_ms());
    store.apply_soc_batch(opened).await.unwrap();
    let before = evidence_read(&store).await;
    let decisions: Vec<_> = before
        .0
        .evidence
        .first
        .iter()
        .map(|item| item.decision_id.clone())
        .collect();
    assert_eq!(
        decisions,
        [
            Some("dec_1".into()),
            Some("dec_2".into()),
            Some("dec_4".into()),
            None
        ]
    );
    assert_eq!(before.1.len(), 3, "{:?}", before.1);
    drop(store);

    set_back(
        &path,
        &[
            &back_to_schema_23(),
            BACK_TO_SCHEMA_22,
            BACK_TO_SCHEMA_21,
            BACK_TO_SCHEMA_20,
        ],
    );

    let store = open(&path);
    assert_eq!(evidence_read(&store).await, before);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let table: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'incident_evidence'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(table.contains("WITHOUT ROWID"), "{table}");
    assert!(!table.contains("decision_id"), "{table}");
    assert_eq!(
        indexes_of(&path, "incident_evidence"),
        ["incident_evidence_event"]
    );
}

/// Rewrites every checkpoint as the gateway signed them before migration 0022: each alone,
/// its signature over `JCS(body)` by the key of `support::signer`.
fn sign_checkpoints_alone(conn: &rusqlite::Connection) {
    let key = SigningKey::from_bytes(&[9; 32]);
    let bodies: Vec<CheckpointBody> = conn
        .prepare("SELECT tenant_id, seq, head_hash, key_id, signed_at FROM receipt_checkpoints")
        .unwrap()
        .query_map([], |row| {
            Ok(CheckpointBody {
                v: RECEIPT_SCHEMA_VERSION,
                tenant_id: row.get(0)?,
                seq: row.get::<_, i64>(1)? as u64,
                head_hash: row.get(2)?,
                key_id: row.get(3)?,
                signed_at: row.get(4)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!bodies.is_empty());
    for body in bodies {
        let signature = key.sign(canonical_json(&body).unwrap().as_bytes());
        conn.execute(
            "UPDATE receipt_checkpoints SET signature = ?1 WHERE tenant_id = ?2 AND seq = ?3",
            rusqlite::params![
                hex::encode(signature.to_bytes()),
                body.tenant_id,
                body.seq as i64
            ],
        )
        .unwrap();
    }
}

async fn whole_chain_verifies(store: &SqliteStore) -> u64 {
    let keys = keyring(store).await.unwrap();
    let audit = store
        .audit_chain(&tenant(), ChainWalk::whole(), &keys)
        .await
        .unwrap();
    assert_eq!(audit.outcome, Ok(()));
    audit.checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_signed_alone_before_migration_0022_verify_and_the_chain_goes_on() {
    let (_dir, path) = database_with((1..=3).map(allowed_read)).await;
    let conn = set_back(
        &path,
        &[&back_to_schema_23(), BACK_TO_SCHEMA_22, BACK_TO_SCHEMA_21],
    );
    sign_checkpoints_alone(&conn);
    drop(conn);

    let store = open(&path);
    assert_eq!(whole_chain_verifies(&store).await, 3);
    // The writer takes the head a lone checkpoint signed, and signs on in batches.
    for n in 4..=5 {
        store.record_decision(allowed_read(n)).await.unwrap();
    }
    assert_eq!(whole_chain_verifies(&store).await, 5);
    let checkpoints = store.checkpoints(&tenant()).await.unwrap();
    let batched: Vec<bool> = checkpoints.iter().map(|c| c.batch.is_some()).collect();
    assert_eq!(batched, [false, false, false, true, true]);
    drop(store);

    // A lone checkpoint cannot be passed off as part of a batch, nor the reverse.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE receipt_checkpoints SET batch_index = 0, batch_size = 1, batch_path = X'' WHERE seq = 3",
        [],
    )
    .unwrap();
    drop(conn);
    let store = open(&path);
    let keys = keyring(&store).await.unwrap();
    let audit = store
        .audit_chain(&tenant(), ChainWalk::whole(), &keys)
        .await
        .unwrap();
    assert!(
        matches!(&audit.outcome, Err(brk) if brk.seq == 3),
        "{:?}",
        audit.outcome
    );
}

/// The names of the indexes on `table` that a migration created.
fn indexes_of(path: &std::path::Path, table: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.prepare(
        "SELECT name FROM sqlite_schema
         WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY name",
    )
    .unwrap()
    .query_map([table], |row| row.get(0))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Three allows and three denies of `agt_1`, `dec_1` to `dec_6`.
fn six_decisions() -> impl Iterator<Item = NewDecision> {
    (1..=3).flat_map(|n| [allowed_read(n), denied_merge(n + 3)])
}

/// How the tenant's decisions list, newest first, after [`six_decisions`].
const SIX_LISTED: [&str; 6] = ["dec_6", "dec_3", "dec_5", "dec_2", "dec_4", "dec_1"];

async fn listed_ids(store: &SqliteStore) -> Vec<String> {
    let listed = store
        .list_decisions(&tenant(), DecisionFilter::default())
        .await
        .unwrap();
    listed.into_iter().map(|d| d.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_list_the_same_after_migration_0023_drops_their_tenant_index() {
    let (_dir, path) = database_with(six_decisions()).await;
    set_back(&path, &[&back_to_schema_23(), BACK_TO_SCHEMA_22]);
    assert!(indexes_of(&path, "decisions").contains(&"decisions_tenant".to_owned()));

    let store = open(&path);
    assert_eq!(listed_ids(&store).await, SIX_LISTED);
    drop(store);
    assert_eq!(
        indexes_of(&path, "decisions"),
        ["decisions_agent", "decisions_agent_denies", "decisions_run"]
    );
}

/// The decisions table's definition as stored.
fn decisions_table(conn: &rusqlite::Connection) -> String {
    conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'decisions'",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

fn schema_version(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
        row.get(0)
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0024_writes_the_decision_check_as_equalities_in_place() {
    let (_dir, path) = database_with(six_decisions()).await;
    let conn = set_back(&path, &[&back_to_schema_23()]);
    assert!(decisions_table(&conn).contains(CHECK_AS_LIST));
    drop(conn);

    // A reader (`aegis receipts verify --db`) needs no migration for it.
    let reader = SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(listed_ids(&reader).await, SIX_LISTED);
    assert_eq!(whole_chain_verifies(&reader).await, 6);
    drop(reader);

    let store = open(&path);
    assert_eq!(listed_ids(&store).await, SIX_LISTED);
    store.record_decision(allowed_read(7)).await.unwrap();
    assert_eq!(whole_chain_verifies(&store).await, 7);
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let table = decisions_table(&conn);
    assert!(table.contains(CHECK_AS_EQUALITIES), "{table}");
    assert!(!table.contains(" IN ("), "{table}");
    assert_eq!(schema_version(&conn), 24);
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let refused = conn
        .execute(
            "UPDATE decisions SET decision = 'maybe' WHERE id = 'dec_1'",
            [],
        )
        .unwrap_err();
    assert!(
        refused.to_string().contains("CHECK constraint failed"),
        "{refused}"
    );
}

/// A decisions table whose definition is not what the migrations wrote is not edited: the
/// gateway refuses to start on it, saying so, and the database stays at schema 23.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0024_refuses_a_decisions_table_changed_by_hand() {
    let (_dir, path) = database_with([allowed_read(1)]).await;
    let by_hand = schema_23_with_check("CHECK (decision <> 'maybe')");
    set_back(&path, &[&by_hand]);

    let refused = SqliteStore::open(&path, signer(), secrets()).map(drop);
    let Err(StoreError::Unavailable(why)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert!(why.contains("changed by hand"), "{why}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(schema_version(&conn), 23);
    assert!(decisions_table(&conn).contains("CHECK (decision <> 'maybe')"));
}
