//! The servers the benchmark starts: `aegis init` for each tenant, then `--replicas` `aegis
//! serve` processes on one database, killed when dropped.

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The servers started by the benchmark: `aegis init` once, then `--replicas` `aegis serve`
/// processes on the same database; killed when dropped.
pub struct Deployment {
    replicas: Vec<Replica>,
    /// Each tenant's admin key, in the order the tenants were named.
    pub admin_keys: Vec<String>,
    /// The database the servers share: a PostgreSQL URL or the SQLite file.
    pub database: OsString,
    /// The database the servers share, as the report names it.
    pub backend: &'static str,
    // Dropped after the replicas have been killed (fields drop in declaration order).
    _dir: tempfile::TempDir,
}

impl Deployment {
    /// Creates `tenants` and starts the servers on `postgres_url`, or on a new SQLite file in
    /// the temporary directory.
    pub async fn start(
        aegis: &Path,
        postgres_url: Option<&str>,
        replica_count: u32,
        tenants: &[String],
        client: &Client,
    ) -> Result<Deployment> {
        if !aegis.is_file() {
            bail!(
                "aegis binary not found at `{}`: build it with `cargo build --release -p aegis` \
                 (run from the workspace root) or pass --aegis PATH",
                aegis.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("aegis-bench-")
            .tempdir()
            .context("creating temporary directory")?;
        let (database, backend): (OsString, _) = match postgres_url {
            Some(url) => (url.into(), "PostgreSQL"),
            None => (dir.path().join("bench.db").into(), "temporary SQLite"),
        };
        // Each replica keeps its log and its signing key in its own subdirectory: replicas of
        // a real deployment do not share a key file either.
        let replica_dirs = (0..replica_count)
            .map(|i| {
                let replica_dir = dir.path().join(format!("replica-{i}"));
                std::fs::create_dir(&replica_dir)
                    .with_context(|| format!("creating {}", replica_dir.display()))?;
                Ok(replica_dir)
            })
            .collect::<Result<Vec<_>>>()?;
        let admin_keys = tenants
            .iter()
            .map(|tenant| init_tenant(aegis, &database, tenant))
            .collect::<Result<Vec<_>>>()?;

        // One key sealing webhook secrets for the whole deployment, as its replicas need; its
        // default with PostgreSQL is the working directory, which is the user's.
        let secrets_key_file = dir.path().join("aegis.secrets-key");
        let ports = free_ports(replica_dirs.len())?;
        let mut deployment = Deployment {
            replicas: Vec::with_capacity(replica_dirs.len()),
            admin_keys,
            database,
            backend,
            _dir: dir,
        };
        for (replica_dir, port) in replica_dirs.iter().zip(ports) {
            let replica = Replica::spawn(
                aegis,
                &deployment.database,
                replica_dir,
                &secrets_key_file,
                port,
            )?;
            deployment.replicas.push(replica);
        }
        for replica in &mut deployment.replicas {
            if let Err(e) = replica.wait_ready(client).await {
                eprintln!("{}", replica.log_excerpt(usize::MAX));
                return Err(e);
            }
        }
        Ok(deployment)
    }

    pub fn base_urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.base_url.clone()).collect()
    }

    /// Each replica's resident set size now and at its peak (`VmRSS`, `VmHWM`), in KiB.
    pub fn memory_kib(&self) -> Result<Vec<Memory>> {
        self.replicas.iter().map(Replica::memory_kib).collect()
    }

    /// The largest resident set size of the replicas, now and at its peak, in KiB (the
    /// targets are per gateway process).
    pub fn largest_memory_kib(&self) -> Result<Memory> {
        let memory = self.memory_kib()?;
        Ok(Memory {
            rss_kib: memory.iter().map(|m| m.rss_kib).max().unwrap_or(0),
            peak_kib: memory.iter().map(|m| m.peak_kib).max().unwrap_or(0),
        })
    }

    /// The last `max_lines` lines of every replica's log, framed for printing.
    pub fn log_excerpts(&self, max_lines: usize) -> String {
        let excerpts: Vec<String> = self
            .replicas
            .iter()
            .map(|replica| replica.log_excerpt(max_lines))
            .collect();
        excerpts.join("\n")
    }
}

fn signing_key_file(replica_dir: &Path) -> PathBuf {
    replica_dir.join("aegis.signing-key")
}

/// Runs `aegis init` for `tenant` and returns its admin key.
fn init_tenant(aegis: &Path, database: &OsStr, tenant: &str) -> Result<String> {
    let init = Command::new(aegis)
        .args(["init", "--tenant", tenant, "--db"])
        .arg(database)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{} init`", aegis.display()))?;
    if !init.status.success() {
        bail!(
            "`aegis init` failed ({}):\n{}",
            init.status,
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&init.stdout);
    let parsed = serde_json::from_str::<Value>(stdout.trim())
        .ok()
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
        });
    let admin_key = parsed
        .as_ref()
        .and_then(|v| v.get("admin_key"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("`aegis init` printed no JSON with `admin_key`:\n{stdout}"))?;
    Ok(admin_key.to_owned())
}

/// `count` distinct free loopback ports. All listeners are held until every port is chosen, so
/// that the OS cannot hand out the same port twice.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")
}

/// One `aegis serve` process started by the benchmark; killed when dropped.
struct Replica {
    child: Child,
    base_url: String,
    log_path: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident set size, now and at its peak, in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl Replica {
    /// `VmRSS` and `VmHWM` of `/proc/PID/status`.
    fn memory_kib(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|kib| kib.trim().parse::<u64>().ok())
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    fn spawn(
        aegis: &Path,
        database: &OsStr,
        replica_dir: &Path,
        secrets_key_file: &Path,
        port: u16,
    ) -> Result<Replica> {
        let log_path = replica_dir.join("server.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(aegis)
            .arg("serve")
            .arg("--db")
            .arg(database)
            .arg("--signing-key-file")
            .arg(signing_key_file(replica_dir))
            .arg("--secrets-key-file")
            .arg(secrets_key_file)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            // The gateway's own default log filter, as operators run it: a quieter filter
            // would skip the per-request span and flatter the figures.
            .env_remove("AEGIS_LOG")
            .env_remove("RUST_LOG")
            // The `mcp-proxy` row's upstream is the benchmark's own server on loopback.
            .env("AEGIS_MCP_ALLOW_PRIVATE", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating log file handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning `{} serve`", aegis.display()))?;
        Ok(Replica {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
        })
    }

    async fn wait_ready(&mut self, client: &Client) -> Result<()> {
        let url = format!("{}/readyz", self.base_url);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("checking the server process")?
            {
                bail!("`aegis serve` exited before becoming ready ({status})");
            }
            let ready = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("`aegis serve` did not answer 200 on {url} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `max_lines` lines of the server log, framed for printing.
    fn log_excerpt(&self, max_lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path)
            .unwrap_or_else(|e| format!("(cannot read server log: {e})"));
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(max_lines)..].join("\n");
        format!(
            "--- server log ({}) ---\n{tail}\n--- end of server log ---",
            self.log_path.display()
        )
    }
}
