//! SQLite migrations that rebuild a table keep what it held. Migration 0021 rebuilds
//! `incident_evidence` without the `decision_id` column (the decision is read through the
//! event): a database written at schema 20 reads the same incident evidence after it.

mod support;

use aegis_store::sqlite::SqliteStore;
use aegis_store::*;
use support::*;

/// The evidence table as schema 20 had it (migrations 0002 and 0005), filled from the
/// current one, and the schema version set back to 20.
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

fn open(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path, signer(), secrets()).unwrap()
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

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(BACK_TO_SCHEMA_20).unwrap();
    drop(conn);

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
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'incident_evidence' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["incident_evidence_event"]);
}
