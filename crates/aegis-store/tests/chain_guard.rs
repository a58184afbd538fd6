//! The writer signs only chain heads it appended itself — on both stores. A receipt slipped
//! into the database behind its back (while it was stopped, or while it runs) is never
//! signed over: opening the store signs nothing, and the tenant's next decision is refused
//! (`ChainBroken`, 503 at the API) while other tenants' decisions, even in the same batch,
//! are recorded.

#[path = "support/database.rs"]
mod database;
mod support;

use aegis_core::canonical::canonical_json;
use aegis_core::receipt::{BreakKind, ReceiptBody};
use aegis_store::chain::{ChainWalk, keyring};
use aegis_store::postgres::PgStore;
use aegis_store::sqlite::SqliteStore;
use aegis_store::*;
use database::{Database, on_both_databases};
use support::allowed_read_of;

impl Database {
    async fn count(&self, sql: &str, tenant: &str) -> u64 {
        self.run(sql, &[tenant]).await.unwrap().parse().unwrap()
    }

    async fn checkpoints(&self, tenant: &str) -> u64 {
        self.count(
            "SELECT CAST(COUNT(*) AS TEXT) FROM receipt_checkpoints WHERE tenant_id = $1",
            tenant,
        )
        .await
    }

    async fn receipts(&self, tenant: &str) -> u64 {
        self.count(
            "SELECT CAST(COUNT(*) AS TEXT) FROM receipts WHERE tenant_id = $1",
            tenant,
        )
        .await
    }

    /// Appends a well-formed receipt to the tenant's chain, linked to its head with a
    /// recomputed hash, but without a checkpoint: what a forger can write.
    async fn append_forged_receipt(&self, tenant: &str) {
        let head = |column: &'static str| async move {
            let sql = format!(
                "SELECT CAST({column} AS TEXT) FROM receipts WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1"
            );
            self.run(&sql, &[tenant]).await.unwrap()
        };
        let seq = head("seq").await.parse::<u64>().unwrap() + 1;
        // A whole body in the row, which reads take as stored.
        let forged = ReceiptBody {
            v: 1,
            id: format!("rcpt_forged_{seq}"),
            tenant_id: tenant.to_owned(),
            seq,
            decision_id: format!("dec_forged_{seq}"),
            agent_id: "agt_forger".into(),
            tool: "github".into(),
            action: "merge_pull_request".into(),
            decision: "allow".into(),
            risk_score: 0,
            matched_policies: Vec::new(),
            action_hash: "00".repeat(32),
            created_at: "2026-11-29T00:00:00.000Z".into(),
            prev_hash: head("hash").await,
            approval: None,
            tool_definition_hash: None,
        };
        let body = canonical_json(&forged).unwrap();
        let sql = match self {
            Database::Sqlite(_) => {
                "INSERT INTO receipts (id, tenant_id, seq, decision_id, body, hash)
                 VALUES ($1, $2, CAST($3 AS INTEGER), $4, $5, $6) RETURNING id"
            }
            Database::Postgres(_) => {
                "INSERT INTO receipts (id, tenant_id, seq, decision_id, body, hash)
                 VALUES ($1, $2, CAST($3::text AS BIGINT), $4, $5, $6) RETURNING id"
            }
        };
        let seq = forged.seq.to_string();
        let hash = forged.hash().unwrap();
        self.run(
            sql,
            &[&forged.id, tenant, &seq, &forged.decision_id, &body, &hash],
        )
        .await;
    }
}

async fn the_writer_signs_only_heads_it_wrote(db: Database) {
    let store = db.open().await;
    for n in 1..=2 {
        store
            .record_decision(allowed_read_of("acme", n))
            .await
            .unwrap();
    }
    store
        .record_decision(allowed_read_of("globex", 1))
        .await
        .unwrap();
    store.flush().await.unwrap();
    drop(store);

    // Stopped: a receipt appended to acme's chain, as a forger would (no key, no checkpoint).
    db.append_forged_receipt("acme").await;
    let store = db.open().await;
    assert_eq!(db.checkpoints("acme").await, 2, "opening signs nothing");
    let keys = keyring(store.as_ref()).await.unwrap();
    let audit = store
        .audit_chain(&TenantId::new("acme"), ChainWalk::head(), &keys)
        .await
        .unwrap();
    let brk = audit.outcome.unwrap_err();
    assert_eq!((brk.kind, brk.seq), (BreakKind::Unsigned, 3));

    // Two decisions queued together (one batch): acme's is refused, globex's recorded.
    let (refused, recorded) = tokio::join!(
        store.record_decision(allowed_read_of("acme", 3)),
        store.record_decision(allowed_read_of("globex", 2)),
    );
    assert!(
        matches!(refused, Err(StoreError::ChainBroken(_))),
        "{refused:?}"
    );
    assert_eq!(recorded.unwrap().receipt_seq, 2);
    assert_eq!(db.receipts("acme").await, 3, "nothing appended to acme");
    assert_eq!(db.checkpoints("acme").await, 2, "nothing signed over acme");
    let whole = store
        .audit_chain(&TenantId::new("globex"), ChainWalk::whole(), &keys)
        .await
        .unwrap();
    assert_eq!((whole.outcome, whole.checked), (Ok(()), 2));
    // The refused decision left no hole in the event log.
    let seqs: Vec<i64> = store
        .events_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=4).collect::<Vec<_>>());

    // While the writer runs: a receipt slipped into initech's chain is never signed over.
    store
        .record_decision(allowed_read_of("initech", 1))
        .await
        .unwrap();
    db.append_forged_receipt("initech").await;
    let refused = store.record_decision(allowed_read_of("initech", 2)).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(db.checkpoints("initech").await, 1);
    assert_eq!(db.receipts("initech").await, 2);

    // A chain closed (found broken at start) takes nothing until the next start.
    store.close_chain(&TenantId::new("globex")).await.unwrap();
    let closed = store.record_decision(allowed_read_of("globex", 3)).await;
    assert!(
        matches!(closed, Err(StoreError::ChainBroken(_))),
        "{closed:?}"
    );
    // What this process signed: the anchors it would keep outside the database.
    let mut signed: Vec<(String, u64)> = store
        .signed_heads()
        .into_iter()
        .map(|c| (c.body.tenant_id, c.body.seq))
        .collect();
    signed.sort();
    assert_eq!(signed, [("globex".into(), 2), ("initech".into(), 1)]);
}

/// The audit walk names what was changed, from the snapshot it reads.
async fn audits_name_what_a_database_writer_changed(db: Database) {
    let store = db.open().await;
    for n in 1..=3 {
        store
            .record_decision(allowed_read_of("acme", n))
            .await
            .unwrap();
    }
    let acme = TenantId::new("acme");
    let keys = keyring(store.as_ref()).await.unwrap();
    let audit = |walk| {
        let (store, acme, keys) = (&store, &acme, &keys);
        async move { store.audit_chain(acme, walk, keys).await.unwrap() }
    };
    let whole = audit(ChainWalk::whole()).await;
    assert_eq!((whole.outcome, whole.checked), (Ok(()), 3));
    let head = whole.verified_through.unwrap();
    assert_eq!(head.seq, 3);
    assert_eq!(audit(ChainWalk::anchor(head.clone())).await.outcome, Ok(()));
    let mut other = head.clone();
    other.hash = "00".repeat(32);
    let brk = audit(ChainWalk::anchor(other)).await.outcome.unwrap_err();
    assert_eq!(brk.kind, BreakKind::AnchorMismatch { seq: 3 });

    // The newest receipt deleted, its checkpoint left behind.
    let deleted = db
        .run(
            "DELETE FROM receipts WHERE tenant_id = $1 AND seq = 3 RETURNING id",
            &["acme"],
        )
        .await;
    assert!(deleted.is_some());
    let beyond = BreakKind::CheckpointMismatch { seq: 3 };
    assert_eq!(
        audit(ChainWalk::whole()).await.outcome.unwrap_err().kind,
        beyond
    );
    assert_eq!(
        audit(ChainWalk::head()).await.outcome.unwrap_err().kind,
        beyond
    );
    let brk = audit(ChainWalk::anchor(head)).await.outcome.unwrap_err();
    assert_eq!(brk.kind, BreakKind::AnchorMismatch { seq: 3 });
    drop(store);
    let store = db.open().await;
    let refused = store.record_decision(allowed_read_of("acme", 4)).await;
    assert!(
        matches!(refused, Err(StoreError::ChainBroken(_))),
        "{refused:?}"
    );
}

/// A receipt's body is rebuilt from its decision row; one stored with its body (before
/// migration 0019) reads as stored, beside rebuilt ones, and the chain verifies across both.
/// A decision event stored with its payload (before migration 0020) reads as stored too.
/// An edited or vanished decision row is a hash break at its receipt, not a read error, and
/// the event of a vanished one still reads, without a payload.
async fn receipts_read_from_their_body_or_their_decision(db: Database) {
    let store = db.open().await;
    for n in 1..=3 {
        store
            .record_decision(allowed_read_of("acme", n))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let acme = TenantId::new("acme");
    let sealed = store.receipts(&acme, 0, 10).await.unwrap();
    assert_eq!(sealed.len(), 3);
    let keys = keyring(store.as_ref()).await.unwrap();
    let audit = || {
        let (store, acme, keys) = (&store, &acme, &keys);
        async move {
            store
                .audit_chain(acme, ChainWalk::whole(), keys)
                .await
                .unwrap()
        }
    };

    // Receipt 2 as a store before the migration wrote it: the canonical body, no prev_hash
    // (so only the stored body can give it its link to receipt 1).
    let old_form = canonical_json(&sealed[1].body).unwrap();
    let sql = "UPDATE receipts SET body = $1, prev_hash = NULL WHERE id = $2 RETURNING id";
    assert!(
        db.run(sql, &[&old_form, &sealed[1].body.id])
            .await
            .is_some()
    );
    assert_eq!(store.receipts(&acme, 0, 10).await.unwrap(), sealed);
    let whole = audit().await;
    assert_eq!((whole.outcome, whole.checked), (Ok(()), 3));

    // Decision 2's event as a store before migration 0020 wrote it, with its payload and
    // subject (the payload marked, so that only the stored one can read this way): it reads
    // as stored, and decision 1's beside it is rebuilt from its row.
    let stored_payload =
        serde_json::json!({"decision_id": sealed[1].body.decision_id, "tool": "as-stored"});
    let sql = "UPDATE events SET payload = $1, subject_id = $2
               WHERE seq = (SELECT event_seq FROM decisions WHERE id = $2) RETURNING kind";
    let decision_2 = &sealed[1].body.decision_id;
    assert!(
        db.run(sql, &[&stored_payload.to_string(), decision_2])
            .await
            .is_some()
    );
    let events = store.events(&acme, 0, 100).await.unwrap();
    let of = |id: &str| {
        events
            .iter()
            .find(|e| e.kind == event_kind::DECISION && e.payload.as_json()["decision_id"] == id)
            .unwrap_or_else(|| panic!("no event of {id}: {events:?}"))
            .clone()
    };
    let old_event = of(decision_2);
    assert_eq!(old_event.payload, EventPayload::Recorded(stored_payload));
    assert_eq!(old_event.subject_id.as_deref(), Some(decision_2.as_str()));
    let rebuilt = of(&sealed[0].body.decision_id);
    assert!(
        matches!(rebuilt.payload, EventPayload::Decision(_)),
        "{rebuilt:?}"
    );
    assert_eq!(rebuilt.payload.decision().unwrap().tool, "github");

    // The decision row of receipt 1 edited: the rebuilt body no longer hashes as sealed.
    let sql = "UPDATE decisions SET action = 'delete_repo' WHERE id = $1 RETURNING id";
    assert!(db.run(sql, &[&sealed[0].body.decision_id]).await.is_some());
    let brk = audit().await.outcome.unwrap_err();
    assert_eq!((brk.kind, brk.seq), (BreakKind::Hash, 1));
    let sql = "UPDATE decisions SET action = 'get_file' WHERE id = $1 RETURNING id";
    assert!(db.run(sql, &[&sealed[0].body.decision_id]).await.is_some());
    assert_eq!(audit().await.outcome, Ok(()));

    // The decision row of receipt 3 deleted: the receipt still reads, with no verdict, and
    // fails its hash check.
    let sql = "DELETE FROM decisions WHERE id = $1 RETURNING id";
    assert!(db.run(sql, &[&sealed[2].body.decision_id]).await.is_some());
    let orphan = store.receipt(&acme, &sealed[2].body.id).await.unwrap();
    assert_eq!(orphan.body.decision, "");
    let brk = audit().await.outcome.unwrap_err();
    assert_eq!((brk.kind, brk.seq), (BreakKind::Hash, 3));
    // Its event still reads, with nothing to rebuild a payload or subject from; the log read
    // does not fail for it, and every other decision's event reads whole.
    let events = store.events(&acme, 0, 100).await.unwrap();
    let decision_events: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == event_kind::DECISION)
        .collect();
    assert_eq!(decision_events.len(), sealed.len(), "{events:?}");
    for (event, receipt) in decision_events.iter().zip(&sealed) {
        if receipt.body.seq == 3 {
            assert_eq!(
                (&event.payload, &event.subject_id),
                (&EventPayload::UNREADABLE, &None)
            );
        } else {
            assert_eq!(
                event.payload.as_json()["decision_id"],
                receipt.body.decision_id.as_str()
            );
            assert_eq!(
                event.subject_id.as_deref(),
                Some(receipt.body.decision_id.as_str())
            );
        }
    }
}

/// A database of an older schema is refused by a reader (which never migrates) with what to
/// do, instead of failing on a column the old schema lacks.
async fn a_reader_refuses_an_older_schema_with_what_to_do(db: Database) {
    let store = db.open().await;
    store
        .record_decision(allowed_read_of("acme", 1))
        .await
        .unwrap();
    store.flush().await.unwrap();
    drop(store);
    // Schema 1: older than any read of either store runs on.
    let sql = "DELETE FROM schema_migrations WHERE version > 1 RETURNING CAST(version AS TEXT)";
    assert!(db.run(sql, &[]).await.is_some());
    let refused = match &db {
        Database::Sqlite(path) => SqliteStore::open_read_only(path).map(drop),
        Database::Postgres(pg) => PgStore::connect_read_only(pg.url()).await.map(drop),
    };
    let Err(StoreError::Unavailable(why)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert!(why.contains("older than this binary reads"), "{why}");
}

on_both_databases!(a_reader_refuses_an_older_schema_with_what_to_do);
on_both_databases!(receipts_read_from_their_body_or_their_decision);
on_both_databases!(audits_name_what_a_database_writer_changed);
on_both_databases!(the_writer_signs_only_heads_it_wrote);
