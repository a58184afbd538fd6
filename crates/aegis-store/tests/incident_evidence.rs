//! Evidence joining an open incident moves the incident's `updated_at`, once per batch that
//! adds something, an event already behind it adds nothing, and evidence that names another
//! tenant's incident joins nothing — on both stores.

mod support;

use aegis_store::*;
use support::*;

fn evidence(seq: i64) -> EvidenceRef {
    EvidenceRef { event_seq: seq }
}

fn join(seq: i64) -> EvidenceAppend {
    EvidenceAppend {
        tenant_id: tenant(),
        incident_id: "inc_1".into(),
        evidence: evidence(seq),
        recontain: None,
    }
}

async fn incident(store: &dyn Store) -> IncidentRecord {
    store.incident(&tenant(), "inc_1").await.unwrap().incident
}

async fn joining_evidence_moves_updated_at(store: &dyn Store) {
    agent(store).await;
    let opened = storm_opened(1, vec![evidence(1)], 1);
    store.apply_soc_batch(opened).await.unwrap();
    assert_eq!(incident(store).await.updated_at_ms, 1);

    let batch = |after, cursor, evidence| SocBatch {
        consumer: "soc".into(),
        after,
        cursor,
        evidence,
        ..SocBatch::default()
    };
    store
        .apply_soc_batch(batch(1, 2, vec![join(2), join(2)]))
        .await
        .unwrap();
    let joined = incident(store).await;
    assert!(joined.updated_at_ms > 1, "{joined:?}");
    assert_eq!(joined.evidence_count, 2);

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .apply_soc_batch(batch(2, 2, vec![join(1), join(2)]))
        .await
        .unwrap();
    let again = incident(store).await;
    assert_eq!(
        again.updated_at_ms, joined.updated_at_ms,
        "nothing new joined"
    );
    assert_eq!(again.evidence_count, 2);

    // The same incident id under another tenant names no incident: nothing joins, whether
    // the batch names it before or after the tenant's own.
    let stranger = |seq| EvidenceAppend {
        tenant_id: TenantId::new("globex"),
        ..join(seq)
    };
    store
        .apply_soc_batch(batch(2, 3, vec![stranger(3), join(3), stranger(4)]))
        .await
        .unwrap();
    assert_eq!(
        incident(store).await.evidence_count,
        3,
        "only the tenant's own joined"
    );
}

on_both_stores!(joining_evidence_moves_updated_at);
