//! A fresh PostgreSQL database per test, for the tests that run the gateway on PostgreSQL.
//!
//! The server is the one every development and CI machine runs (`AEGIS_TEST_POSTGRES`,
//! default `postgres://postgres@127.0.0.1:5432/test`; `.ci/run` starts it when it is down).
//! Each [`FreshDatabase`] is created under a unique name and dropped, with whatever is
//! still connected to it, when the value is dropped. Tests fail, not skip, when the server
//! cannot be reached: a suite that silently skips its PostgreSQL half would prove nothing.

use tokio_postgres::NoTls;

/// The maintenance database tests connect to in order to create their own.
pub fn admin_url() -> String {
    std::env::var("AEGIS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database that exists for the lifetime of this value.
pub struct FreshDatabase {
    name: String,
    url: String,
}

impl FreshDatabase {
    /// Creates `aegis_test_<uuid>` on the test server.
    pub async fn create() -> FreshDatabase {
        let admin = admin_url();
        let name = format!("aegis_test_{}", uuid::Uuid::now_v7().simple());
        let client = connect(&admin).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let config: tokio_postgres::Config = admin.parse().expect("AEGIS_TEST_POSTGRES is a URL");
        let url = url_for(&config, &name);
        FreshDatabase { name, url }
    }

    /// The `postgres://` URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let (admin, name) = (admin_url(), self.name.clone());
        // Drop may run inside an async test's runtime, which must not be blocked on: clean
        // up on a thread with a runtime of its own. Best effort: a leftover database is
        // harmless and uniquely named.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            runtime.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the test PostgreSQL at {url} (is it running? .ci/run starts it): {e}"
            )
        });
    tokio::spawn(connection);
    client
}

/// The URL of database `name` on the server `config` points at.
fn url_for(config: &tokio_postgres::Config, name: &str) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    match config.get_password() {
        Some(password) => format!(
            "postgres://{user}:{}@{host}:{port}/{name}",
            String::from_utf8_lossy(password)
        ),
        None => format!("postgres://{user}@{host}:{port}/{name}"),
    }
}
