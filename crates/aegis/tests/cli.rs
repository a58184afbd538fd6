//! `aegis init`, `aegis keys create` and `aegis receipts export|verify` as a user runs them.

#[macro_use]
mod support;

use serde_json::Value;
use support::*;

#[test]
fn init_adds_tenants_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/dir/aegis.db");
    let first = init(dir.path(), &db, "acme");
    let second = init(dir.path(), &db, "globex");
    assert_ne!(first, second);
    assert!(
        first.starts_with("aok_") && first.len() > 64,
        "≥128 random bits"
    );

    let again = aegis(
        dir.path(),
        &["init", "--tenant", "acme", "--db", db.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let bad = aegis(
        dir.path(),
        &[
            "init",
            "--tenant",
            "no spaces",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert!(!bad.status.success());

    // Keys are stored only as hashes.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: Vec<Vec<u8>> = conn
        .prepare("SELECT secret_hash FROM operator_keys")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && !first.as_bytes().windows(32).any(|w| w == h.as_slice()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_chains_verify_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    for source in [
        "trusted_internal_signed",
        "untrusted_external",
        "semi_trusted_customer",
        "unknown",
    ] {
        let resp = client
            .post(gw.url("/v1/authorize"))
            .bearer_auth(&token)
            .json(&merge_call(source))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(gw.terminate().code(), Some(0));
    let db_arg = db.to_str().unwrap();

    let export = aegis(dir.path(), &["receipts", "export", "--db", db_arg]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let file = dir.path().join("chain.jsonl");
    std::fs::write(&file, &export.stdout).unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&export.stdout)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(lines.len(), 4);
    let ok = aegis(dir.path(), &["receipts", "verify", file.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ok = aegis(dir.path(), &["receipts", "verify", "--db", db_arg]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // One flipped field in line 2 of the file: verify names line 2.
    let tampered: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| if i == 1 { l.replacen("\"deny\"", "\"allow\"", 1) } else { l.to_string() } + "\n")
        .collect();
    let bad_file = dir.path().join("tampered.jsonl");
    std::fs::write(&bad_file, tampered).unwrap();
    let bad = aegis(
        dir.path(),
        &["receipts", "verify", bad_file.to_str().unwrap()],
    );
    assert_eq!(bad.status.code(), Some(1));
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(why.contains("line 2") && why.contains("hash"), "{why}");

    // One tampered row in the database: verify --db names the receipt of the edited
    // decision (its body is rebuilt from that row).
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (id, decision_id): (String, String) = conn
        .query_row(
            "SELECT id, decision_id FROM receipts WHERE seq = 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let edited = conn
        .execute(
            "UPDATE decisions SET risk_score = risk_score + 1 WHERE id = ?1",
            [decision_id],
        )
        .unwrap();
    assert_eq!(edited, 1);
    drop(conn);
    let bad = aegis(dir.path(), &["receipts", "verify", "--db", db_arg]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains(&id));

    // Interop mode: the reference vectors verify under the generic rule.
    let vectors = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../aegis-core/vectors/reference_receipt_chain_vectors.json"
    );
    let interop = aegis(dir.path(), &["receipts", "verify", "--generic", vectors]);
    assert!(
        interop.status.success(),
        "{}",
        String::from_utf8_lossy(&interop.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_keeps_old_receipts_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let client = reqwest::Client::new();
    let first_key = "11".repeat(32);
    let second_key = "22".repeat(32);

    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_SIGNING_KEY", &first_key)]).await;
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    authorize(&client, &gw, &token, "trusted_internal_signed").await;
    gw.terminate();

    // Rotate: the next start signs with a new key id; the chain continues.
    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_SIGNING_KEY", &second_key)]).await;
    authorize(&client, &gw, &token, "untrusted_external").await;
    let keys = get_json(&client, gw.url("/v1/receipts/keys"), &admin).await;
    assert_eq!(
        keys.as_array().unwrap().len(),
        2,
        "both configured keys (init signs nothing and registers no key)"
    );
    gw.terminate();

    let out = aegis(
        dir.path(),
        &["receipts", "verify", "--db", db.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = aegis(
        dir.path(),
        &["receipts", "export", "--db", db.to_str().unwrap()],
    );
    let key_ids: std::collections::HashSet<String> = std::str::from_utf8(&export.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["checkpoint"]["key_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        key_ids.len(),
        2,
        "each receipt is covered by the key that signed its batch"
    );
}

e2e_test!(
    async fn the_last_admin_key_stays_and_access_is_recovered_from_the_database_host(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        // `init` signs and seals nothing, so it leaves no key file behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with("-key"))
            .collect();
        assert!(left.is_empty(), "key files after init: {left:?}");

        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let client = reqwest::Client::new();
        let keys = get_json(&client, gw.url("/v1/keys"), &admin).await;
        let admin_id = keys[0]["id"].as_str().unwrap().to_owned();
        let refused = client
            .delete(gw.url(&format!("/v1/keys/{admin_id}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 409);
        let refused: Value = refused.json().await.unwrap();
        assert_eq!(refused["error"]["code"], "last_admin_key");

        // The admin key is lost: a new one is made on the machine holding the database,
        // while the gateway runs.
        let out = aegis(
            dir.path(),
            &[
                "keys", "create", "--db", db.arg(), "--tenant", "acme", "--role", "admin",
                "--name", "recovery",
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let created: Value = serde_json::from_slice(&out.stdout).expect("keys create prints JSON");
        assert_eq!(created["tenant_id"], "acme");
        assert_eq!(created["role"], "admin");
        let recovered = created["key"].as_str().unwrap();
        assert!(recovered.starts_with("aok_"));

        // The new key manages the tenant, down to revoking the lost one.
        let revoked = client
            .delete(gw.url(&format!("/v1/keys/{admin_id}")))
            .bearer_auth(recovered)
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
        let keys = get_json(&client, gw.url("/v1/keys"), recovered).await;
        assert!(
            keys.as_array().unwrap().iter().any(|k| k["name"] == "recovery" && k["revoked_at"].is_null()),
            "{keys}"
        );

        // A tenant that does not exist is named, and nothing is created.
        let out = aegis(
            dir.path(),
            &["keys", "create", "--db", db.arg(), "--tenant", "globex", "--role", "admin"],
        );
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant globex"));
    }
);
