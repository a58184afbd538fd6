//! What lies on disk: the SQLite database and its WAL and shared-memory files are readable by
//! their owner only; a key file that others may read is refused; webhook signing secrets
//! are sealed in the database (no plain text in the row), still sign deliveries with the
//! original secret, and a sealed secret copied to another row does not decrypt — the
//! delivery fails closed and says so. Secrets stored in plain text before are sealed on start.

#[macro_use]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::receiver::*;
use support::*;

const SECRET: &str = "original-signing-secret-0123456789";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn beside(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_its_wal_and_shm_and_the_key_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = acme_on_sqlite(dir.path());
    assert_eq!(mode(&db), 0o600, "after init");
    // `init` signs and seals nothing: the key files are `serve`'s to create.
    for key in [beside(&db, ".signing-key"), beside(&db, ".secrets-key")] {
        assert!(!key.exists(), "{} after init", key.display());
    }
    let gw = Gateway::start(dir.path(), &db).await;
    for suffix in ["", "-wal", "-shm", ".signing-key", ".secrets-key"] {
        assert_eq!(mode(&beside(&db, suffix)), 0o600, "{suffix} while serving");
    }
    assert!(gw.terminate().success());

    // A database left readable by an older version is tightened on start, with a warning.
    for suffix in ["", "-wal", "-shm"] {
        if beside(&db, suffix).exists() {
            chmod(&beside(&db, suffix), 0o644);
        }
    }
    let gw = Gateway::start(dir.path(), &db).await;
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(mode(&beside(&db, suffix)), 0o600, "{suffix} after restart");
    }
    assert!(gw.log_text().contains("restricted it to mode 600"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_others_can_read_is_refused_with_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = acme_on_sqlite(dir.path());
    let db_arg = db.to_str().unwrap();
    // The first start generates the key files.
    assert!(Gateway::start(dir.path(), &db).await.terminate().success());
    for key in [beside(&db, ".signing-key"), beside(&db, ".secrets-key")] {
        chmod(&key, 0o644);
        let out = aegis(
            dir.path(),
            &["serve", "--db", db_arg, "--listen", "127.0.0.1:0"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "serve with a 0644 key: {stderr}");
        assert!(
            stderr.contains(&format!("chmod 600 {}", key.display())) && stderr.contains("mode 644"),
            "{stderr}"
        );
        chmod(&key, 0o600);
    }
    // Fixed as told, it starts.
    let gw = Gateway::start(dir.path(), &db).await;
    assert!(gw.terminate().success());
}

/// Subscribes the receiver's `/signed` with [`SECRET`] under a new tenant; returns its admin
/// key and the subscription id.
async fn subscribed(
    client: &reqwest::Client,
    gw: &Gateway,
    dir: &Path,
    db: &Db,
    tenant: &str,
    receiver: &Receiver,
) -> (String, String) {
    let admin = init_on(dir, db.arg(), tenant);
    let id = subscribe(client, gw, &admin, &receiver.url("/signed"), Some(SECRET)).await;
    (admin, id)
}

/// The stored secret columns of a subscription: (plain, sealed).
async fn stored(db: &Db, webhook: &str) -> (String, String) {
    let row = query_column(
        db.arg(),
        &format!(
            "SELECT COALESCE(secret, '') || ' ' || COALESCE(sealed_secret, '')
             FROM webhook_subscriptions WHERE id = '{webhook}'"
        ),
    )
    .await;
    let (plain, sealed) = row[0].split_once(' ').unwrap();
    (plain.to_owned(), sealed.to_owned())
}

e2e_test!(
    async fn webhook_secrets_are_sealed_at_rest_and_still_sign_deliveries(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        init_on(dir.path(), db.arg(), "acme");
        let receiver = Receiver::start(any_port(), Log::default()).await;
        receiver.expect_secret(SECRET);
        let gw = Gateway::start_on(
            dir.path(),
            db.arg(),
            &[("AEGIS_WEBHOOK_ALLOW_PRIVATE", "true")],
        )
        .await;
        let client = reqwest::Client::new();
        let (admin, webhook) = subscribed(&client, &gw, dir.path(), &db, "victim", &receiver).await;

        let (plain, sealed) = stored(&db, &webhook).await;
        assert_eq!(plain, "", "no plain secret column");
        assert!(sealed.starts_with("v1:"), "{sealed}");
        assert!(!sealed.contains(SECRET) && !sealed.contains(&hex::encode(SECRET)));

        let sent = send_test(&client, &gw, &admin, &webhook).await;
        eventually(10, "the delivery signed with the original secret", || async {
            receiver
                .received()
                .iter()
                .any(|r| r.delivery == sent)
                .then_some(())
        })
        .await;
        assert_eq!(receiver.rejected(), 0);
    }
);

e2e_test!(
    async fn a_sealed_secret_copied_to_another_row_does_not_decrypt_and_nothing_is_sent(
        backend
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let receiver = Receiver::start(any_port(), Log::default()).await;
        receiver.expect_secret(SECRET);
        init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(
            dir.path(),
            db.arg(),
            &[("AEGIS_WEBHOOK_ALLOW_PRIVATE", "true")],
        )
        .await;
        let client = reqwest::Client::new();
        let (_, victims) = subscribed(&client, &gw, dir.path(), &db, "victim", &receiver).await;
        let other = init_on(dir.path(), db.arg(), "other");
        let others = subscribe(&client, &gw, &other, &receiver.url("/signed"), None).await;

        // Someone with write access to the database moves the victim's sealed secret.
        execute(
            db.arg(),
            &format!(
                "UPDATE webhook_subscriptions SET sealed_secret =
                     (SELECT sealed_secret FROM webhook_subscriptions WHERE id = '{victims}')
                 WHERE id = '{others}'"
            ),
            &[],
        )
        .await;
        let sent = send_test(&client, &gw, &other, &others).await;
        let failed = eventually(10, "the delivery failed closed", || async {
            let d = delivery(&client, &gw, &other, &others, &sent).await;
            (d["status"] == "failed").then_some(d)
        })
        .await;
        let error = failed["last_error"].as_str().unwrap();
        assert!(error.contains("does not decrypt"), "{error}");
        assert!(receiver.received().is_empty() && receiver.rejected() == 0, "nothing sent");
    }
);

e2e_test!(
    async fn secrets_stored_in_plain_text_before_are_sealed_on_start_and_keep_signing(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let receiver = Receiver::start(any_port(), Log::default()).await;
        receiver.expect_secret(SECRET);
        init_on(dir.path(), db.arg(), "acme");
        let env = [("AEGIS_WEBHOOK_ALLOW_PRIVATE", "true")];
        let gw = Gateway::start_on(dir.path(), db.arg(), &env).await;
        let client = reqwest::Client::new();
        let (admin, webhook) = subscribed(&client, &gw, dir.path(), &db, "victim", &receiver).await;
        assert!(gw.terminate().success());
        // The row as a version that kept secrets in plain text left it.
        execute(
            db.arg(),
            &format!(
                "UPDATE webhook_subscriptions SET secret = '{SECRET}', sealed_secret = NULL
                 WHERE id = '{webhook}'"
            ),
            &[],
        )
        .await;

        let gw = Gateway::start_on(dir.path(), db.arg(), &env).await;
        let (plain, sealed) = stored(&db, &webhook).await;
        assert_eq!(plain, "", "sealed on start");
        assert!(sealed.starts_with("v1:"), "{sealed}");
        let sent = send_test(&client, &gw, &admin, &webhook).await;
        eventually(10, "the delivery signed with the original secret", || async {
            receiver
                .received()
                .iter()
                .any(|r| r.delivery == sent)
                .then_some(())
        })
        .await;
    }
);
