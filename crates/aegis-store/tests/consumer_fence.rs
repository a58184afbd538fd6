//! Only one consumer instance applies each stretch of the log: a batch computed from a
//! cursor that another instance (a deposed or a new leader) already moved past is refused,
//! and nothing of it is written — on both stores.

mod support;

use aegis_core::model::Severity;
use aegis_store::*;
use support::*;

fn soc_batch(after: i64, cursor: i64, alert_id: &str) -> SocBatch {
    SocBatch {
        consumer: "soc".into(),
        after,
        cursor,
        alerts: vec![NewAlert {
            id: alert_id.into(),
            tenant_id: TenantId::new("acme"),
            kind: "untrusted_write_denied".into(),
            severity: Severity::Medium,
            agent_id: Some("agt_1".into()),
            source_seq: cursor,
            summary: format!("alert {alert_id}"),
            created_at_ms: now_ms(),
            count: 1,
        }],
        ..SocBatch::default()
    }
}

async fn a_stale_batch_is_refused(store: &dyn Store) {
    store
        .apply_soc_batch(soc_batch(0, 5, "alr_new"))
        .await
        .unwrap();
    // A second instance that read the log from 0 as well comes too late.
    let stale = store.apply_soc_batch(soc_batch(0, 3, "alr_stale")).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(store.consumer_cursor("soc").await.unwrap(), 5);
    let alerts = store
        .list_alerts(&TenantId::new("acme"), AlertFilter::default())
        .await
        .unwrap();
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["alr_new"]);
    // The refused batch's event was rolled back with its seq: the log has no gap.
    let events = store.events_after(0, 100).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    // The instance that is current goes on from where it stands.
    store
        .apply_soc_batch(soc_batch(5, 9, "alr_next"))
        .await
        .unwrap();
    assert_eq!(store.consumer_cursor("soc").await.unwrap(), 9);

    let notify = |after, cursor| NotifyBatch {
        consumer: "notify".into(),
        after,
        cursor,
        ..NotifyBatch::default()
    };
    store.apply_notify_batch(notify(0, 4)).await.unwrap();
    let stale = store.apply_notify_batch(notify(0, 2)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(store.consumer_cursor("notify").await.unwrap(), 4);
}

on_both_stores!(a_stale_batch_is_refused);
