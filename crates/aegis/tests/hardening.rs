//! The gateway under clients and databases that misbehave: slow or partial requests are cut
//! off within the read timeouts while other clients are served, and `/readyz` reports a
//! replica that cannot commit, then recovers by itself.

#[macro_use]
mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The read timeouts the slow-client tests run with.
const READ_TIMEOUTS: [(&str, &str); 2] = [
    ("AEGIS_HEADER_READ_TIMEOUT_SECS", "1"),
    ("AEGIS_BODY_READ_TIMEOUT_SECS", "1"),
];

/// Sends `bytes` on a new connection, then reads until the server closes it (at most 10 s).
/// Returns what the server sent and how long it kept the connection after the write.
async fn send_and_wait_for_close(gw: &Gateway, bytes: &[u8]) -> (String, Duration) {
    let mut stream = TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    let sent = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    (
        String::from_utf8_lossy(&received).into_owned(),
        sent.elapsed(),
    )
}

/// Asserts that the gateway answers `/readyz` 200 while `slow` runs.
async fn served_meanwhile<F: std::future::Future>(gw: &Gateway, slow: F) -> F::Output {
    let client = reqwest::Client::new();
    let mut slow = std::pin::pin!(slow);
    let mut answered = 0;
    loop {
        tokio::select! {
            outcome = &mut slow => {
                assert!(answered > 0, "no request was answered while the slow client waited");
                return outcome;
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                let started = Instant::now();
                let health = client.get(gw.url("/healthz")).send().await.unwrap();
                assert_eq!(health.status(), 200);
                assert!(started.elapsed() < Duration::from_millis(500));
                answered += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_partial_clients_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start_with(dir.path(), &db, &READ_TIMEOUTS).await;
    let limit = Duration::from_secs(3);

    // Headers never finished (slowloris).
    let (answer, held) = served_meanwhile(
        &gw,
        send_and_wait_for_close(&gw, b"GET /healthz HTTP/1.1\r\nHost: aegis\r\nX-Slow: "),
    )
    .await;
    assert!(
        held >= Duration::from_millis(900) && held < limit,
        "partial head held for {held:?}"
    );
    assert!(!answer.contains("200 OK"), "{answer}");

    // A body shorter than its Content-Length: answered 408 (JSON), then closed.
    let partial_body = format!(
        "POST /v1/keys HTTP/1.1\r\nHost: aegis\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"role\": "
    );
    let (answer, held) =
        served_meanwhile(&gw, send_and_wait_for_close(&gw, partial_body.as_bytes())).await;
    assert!(
        held >= Duration::from_millis(900) && held < limit,
        "partial body held for {held:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");

    // An idle keep-alive connection is closed after one answered request.
    let (answer, held) =
        send_and_wait_for_close(&gw, b"GET /healthz HTTP/1.1\r\nHost: aegis\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(held < limit, "idle keep-alive connection held for {held:?}");

    // A complete request is served as before, keys and all.
    let client = reqwest::Client::new();
    let created = post_json(
        &client,
        gw.url("/v1/keys"),
        &admin,
        &json!({"role": "viewer"}),
    )
    .await;
    assert!(
        created["key"].as_str().unwrap().starts_with("aok_"),
        "{created}"
    );
}

/// `/readyz` until it answers `status` with `saying` in its body; returns its JSON.
async fn readyz_saying(gw: &Gateway, status: u16, saying: &str, what: &str) -> Value {
    let client = reqwest::Client::new();
    eventually(20, what, || {
        let request = client.get(gw.url("/readyz")).send();
        async move {
            let response = request.await.ok()?;
            (response.status() == status).then_some(())?;
            let body = response.json::<Value>().await.ok()?;
            body.to_string().contains(saying).then_some(body)
        }
    })
    .await
}

/// `/readyz` until it answers `status`; returns its JSON.
async fn readyz_until(gw: &Gateway, status: u16, what: &str) -> Value {
    readyz_saying(gw, status, "", what).await
}

e2e_test!(
    async fn readyz_fails_while_another_session_holds_the_write_lock_and_recovers(backend) {
        // The fault: another process holds the database's write lock (SQLite: `BEGIN
        // IMMEDIATE`; PostgreSQL: the `log_head` row every writer locks, as a replica paused
        // inside its transaction does). Commits wait, so the replica must not take traffic.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        readyz_until(&gw, 200, "ready before the fault").await;

        let lock = WriteLock::take(db.arg()).await;
        let refused = readyz_until(&gw, 503, "not ready while the write lock is held").await;
        assert_eq!(refused["error"]["code"], "not_ready", "{refused}");
        assert!(
            refused["error"]["message"].as_str().unwrap().contains("cannot commit"),
            "{refused}"
        );
        lock.release().await;
        readyz_until(&gw, 200, "ready again once the lock is released").await;
    }
);

/// A write lock held from outside the gateway.
enum WriteLock {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl WriteLock {
    async fn take(db: &str) -> WriteLock {
        if db.starts_with("postgres://") {
            let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
                .batch_execute("BEGIN; SELECT seq FROM log_head FOR UPDATE")
                .await
                .unwrap();
            return WriteLock::Postgres(client);
        }
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock::Sqlite(conn)
    }

    async fn release(self) {
        match self {
            WriteLock::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            WriteLock::Postgres(client) => client.batch_execute("ROLLBACK").await.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_postgres_refuses_writes_and_recovers() {
    // The fault: the database turns read-only (as a primary demoted to a standby does) and
    // the gateway's sessions are cut, so it reconnects to a database that refuses writes.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::fresh(Backend::Postgres, dir.path()).await;
    let admin = init_on(dir.path(), db.arg(), "acme");
    let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;

    set_read_only(db.arg(), true).await;
    // (The first answers may name the cut sessions instead.)
    let refused = readyz_saying(
        &gw,
        503,
        "read-only transaction",
        "not ready, naming the read-only database",
    )
    .await;
    assert_eq!(refused["error"]["code"], "not_ready", "{refused}");
    assert_eq!(
        authorize_status(&client, &gw, &token).await,
        503,
        "nothing can be recorded, so nothing is answered"
    );

    set_read_only(db.arg(), false).await;
    readyz_until(&gw, 200, "ready again once writes are accepted").await;
    assert_eq!(authorize_status(&client, &gw, &token).await, 200);
}

async fn authorize_status(client: &reqwest::Client, gw: &Gateway, token: &str) -> u16 {
    client
        .post(gw.url("/v1/authorize"))
        .bearer_auth(token)
        .json(&merge_call("trusted_internal_signed"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Makes the database read-only (or writable again) for new sessions, and ends the
/// gateway's sessions so that it reconnects under the new setting.
async fn set_read_only(url: &str, read_only: bool) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let setting = if read_only { "on" } else { "off" };
    // One statement per transaction: this session starts read-only when the database is.
    for statement in [
        "SET default_transaction_read_only = off".to_owned(),
        format!(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = {setting}', current_database()); END $$"
        ),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()"
            .to_owned(),
    ] {
        client.batch_execute(&statement).await.unwrap();
    }
}

/// A tmpfs of `size` mounted on `path` for the life of the value: a filesystem that fills up.
/// Mounting needs the right to (root, as in CI's container); without it the test fails
/// rather than passing untested.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            mounted.success(),
            "this test mounts a small tmpfs to fill it up: run it as root (as CI does)"
        );
        SmallDisk { path }
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_data())
            .is_ok()
        {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_disk_is_full_and_recovers() {
    // The fault: the filesystem of the SQLite database fills up.
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path().join("disk"), "16m");
    let db = disk.path.join("aegis.db");
    let admin = init(dir.path(), &db, "acme");
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    assert_eq!(authorize_status(&client, &gw, &token).await, 200);

    let filler = disk.fill();
    // Writes that still fit in space the database already holds may commit; the next ones
    // cannot.
    eventually(30, "an authorize refused for lack of space", || async {
        (authorize_status(&client, &gw, &token).await == 503).then_some(())
    })
    .await;
    let refused = readyz_until(&gw, 503, "not ready while the disk is full").await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot commit"),
        "{refused}"
    );

    // Once space returns, the first write that gets through clears the refusal (without
    // writes, it is let go 30 s after it was last seen).
    std::fs::remove_file(filler).unwrap();
    eventually(30, "an authorize answered once space returns", || async {
        (authorize_status(&client, &gw, &token).await == 200).then_some(())
    })
    .await;
    readyz_until(&gw, 200, "ready again once space returns").await;
    drop(gw);
}
