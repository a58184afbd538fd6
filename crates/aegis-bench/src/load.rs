//! The load generator: `wrk`, a separate process (an in-process client saturates before the
//! server does), driven by the script in `wrk/aegis.lua` and installed from Debian's packages
//! when it is missing.

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The script every row runs (kept in the repository, written next to the run's files).
const SCRIPT: &str = include_str!("../wrk/aegis.lua");

/// One HTTP request of a row's rotation.
pub struct Request {
    pub method: &'static str,
    pub path: &'static str,
    /// The `Authorization` header value, if any.
    pub authorization: Option<String>,
    /// A JSON body (sent with `Content-Type: application/json`).
    pub body: Option<String>,
    /// Further headers, each `Name: value`.
    pub headers: Vec<String>,
}

impl Request {
    pub fn get(path: &'static str) -> Self {
        Request {
            method: "GET",
            path,
            authorization: None,
            body: None,
            headers: Vec::new(),
        }
    }

    /// The script's line format: tab-separated fields, so none may hold a tab or a newline.
    fn line(&self) -> Result<String> {
        let authorization = self.authorization.as_deref().unwrap_or("");
        let body = self.body.as_deref().unwrap_or("");
        let fields = [authorization, body]
            .into_iter()
            .chain(self.headers.iter().map(String::as_str));
        let mut line = format!("{}\t{}", self.method, self.path);
        for field in fields {
            if field.contains(['\t', '\n', '\r']) {
                bail!("a request field holds a tab or a line break: {field}");
            }
            line.push('\t');
            line.push_str(field);
        }
        line.push('\n');
        Ok(line)
    }
}

/// How the load is shaped: `wrk -t THREADS -c CONNECTIONS`, closed loop.
#[derive(Clone, Debug)]
pub struct Shape {
    pub threads: u32,
    pub connections: u32,
}

/// The installed `wrk` and its version line.
pub struct Wrk {
    path: PathBuf,
    pub version: String,
    /// Where the script, the request files and the results go.
    dir: PathBuf,
}

impl Wrk {
    /// Finds `wrk` (the given path, else on `PATH`), installing Debian's package when it is
    /// missing, and writes the script into `dir`.
    pub fn locate(given: Option<&Path>, dir: &Path) -> Result<Wrk> {
        let path = match given {
            Some(path) => path.to_owned(),
            None => match on_path("wrk") {
                Some(path) => path,
                None => {
                    install_wrk()?;
                    on_path("wrk").context("wrk is still not on PATH after installing it")?
                }
            },
        };
        // `wrk -v` prints its version and exits with status 1.
        let output = std::process::Command::new(&path)
            .arg("-v")
            .output()
            .with_context(|| format!("running `{} -v`", path.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = text
            .lines()
            .next()
            .filter(|line| line.starts_with("wrk "))
            .with_context(|| format!("`{} -v` printed no wrk version: {text}", path.display()))?
            .split(" Copyright")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        std::fs::write(dir.join("aegis.lua"), SCRIPT).context("writing the wrk script")?;
        Ok(Wrk {
            path,
            version,
            dir: dir.to_owned(),
        })
    }

    /// Runs `requests` in turn against every base URL at once (the connections split between
    /// them) for `duration`, after an unrecorded warm-up run of `warmup`; returns the merged
    /// result of the recorded run.
    pub async fn run(
        &self,
        name: &str,
        base_urls: &[String],
        requests: &[Request],
        shape: &Shape,
        warmup: Duration,
        duration: Duration,
    ) -> Result<LoadResult> {
        let request_file = self.dir.join(format!("{name}.requests"));
        let lines = requests
            .iter()
            .map(Request::line)
            .collect::<Result<String>>()?;
        std::fs::write(&request_file, lines).context("writing the request file")?;
        if !warmup.is_zero() {
            self.run_all(name, "warmup", base_urls, &request_file, shape, warmup)
                .await?;
        }
        self.run_all(name, "run", base_urls, &request_file, shape, duration)
            .await
    }

    async fn run_all(
        &self,
        name: &str,
        phase: &str,
        base_urls: &[String],
        request_file: &Path,
        shape: &Shape,
        duration: Duration,
    ) -> Result<LoadResult> {
        let servers = base_urls.len() as u32;
        let runs = base_urls.iter().enumerate().map(|(i, base_url)| {
            // Connection i talks to server i mod N, as the connections would with one client.
            let connections =
                shape.connections / servers + u32::from((i as u32) < shape.connections % servers);
            let result_file = self.dir.join(format!("{name}.{phase}.{i}.json"));
            self.run_one(
                base_url,
                request_file,
                result_file,
                shape.threads.min(connections),
                connections,
                duration,
            )
        });
        let mut merged = LoadResult::empty()?;
        for result in futures_util::future::join_all(runs).await {
            merged.merge(result?)?;
        }
        Ok(merged)
    }

    async fn run_one(
        &self,
        base_url: &str,
        request_file: &Path,
        result_file: PathBuf,
        threads: u32,
        connections: u32,
        duration: Duration,
    ) -> Result<LoadResult> {
        let mut secs = OsString::from(duration.as_secs().max(1).to_string());
        secs.push("s");
        let output = tokio::process::Command::new(&self.path)
            .arg(format!("-t{}", threads.max(1)))
            .arg(format!("-c{}", connections.max(1)))
            .arg("-d")
            .arg(secs)
            // Far above any answer time: a timed-out request would leave the histogram.
            .args(["--timeout", "60s"])
            .arg("-s")
            .arg(self.dir.join("aegis.lua"))
            .arg(base_url)
            .env("AEGIS_BENCH_REQUESTS", request_file)
            .env("AEGIS_BENCH_RESULT", &result_file)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {}", self.path.display()))?;
        if !output.status.success() {
            bail!(
                "wrk failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = std::fs::read_to_string(&result_file)
            .with_context(|| format!("reading the wrk result {}", result_file.display()))?;
        let raw: RawResult = serde_json::from_str(&text).context("parsing the wrk result")?;
        LoadResult::from_raw(raw)
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// `apt-get install wrk` (Debian's package), refreshing the package lists once if the first
/// attempt fails.
fn install_wrk() -> Result<()> {
    eprintln!("wrk not found: installing Debian's wrk package with apt-get ...");
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
    };
    if install().is_ok_and(|status| status.success()) {
        return Ok(());
    }
    let update = std::process::Command::new("apt-get")
        .arg("update")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get update")?;
    if !update.success() || !install().context("running apt-get install wrk")?.success() {
        bail!("cannot install wrk with apt-get (run as root, or install it and pass --wrk PATH)");
    }
    Ok(())
}

/// What the script's `done()` writes.
#[derive(Deserialize)]
struct RawResult {
    duration_us: u64,
    requests: u64,
    errors: Errors,
    decisions: BTreeMap<String, u64>,
    /// Distinct latencies in microseconds with their counts.
    latency_us: Vec<(u64, u64)>,
}

/// wrk's error counts; `status` counts responses other than 2xx and 3xx.
#[derive(Deserialize, Default, Clone, Debug, serde::Serialize)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub status: u64,
    pub timeout: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }
}

/// One recorded run, merged over the servers.
pub struct LoadResult {
    /// The longest of the merged runs.
    pub duration: Duration,
    /// Responses, successful or not.
    pub responses: u64,
    pub errors: Errors,
    pub decisions: BTreeMap<String, u64>,
    /// Every response's latency (wrk's, including its coordinated-omission correction).
    pub latency_us: Histogram<u64>,
}

impl LoadResult {
    fn empty() -> Result<Self> {
        Ok(LoadResult {
            duration: Duration::ZERO,
            responses: 0,
            errors: Errors::default(),
            decisions: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)
                .context("creating the latency histogram")?,
        })
    }

    fn from_raw(raw: RawResult) -> Result<Self> {
        let mut result = LoadResult::empty()?;
        result.duration = Duration::from_micros(raw.duration_us);
        result.responses = raw.requests;
        result.errors = raw.errors;
        result.decisions = raw.decisions;
        for (value, count) in raw.latency_us {
            result.latency_us.saturating_record_n(value.max(1), count);
        }
        Ok(result)
    }

    fn merge(&mut self, other: LoadResult) -> Result<()> {
        self.duration = self.duration.max(other.duration);
        self.responses += other.responses;
        let e = &other.errors;
        self.errors.connect += e.connect;
        self.errors.read += e.read;
        self.errors.write += e.write;
        self.errors.status += e.status;
        self.errors.timeout += e.timeout;
        for (decision, count) in other.decisions {
            *self.decisions.entry(decision).or_default() += count;
        }
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")
    }

    /// Successful (2xx/3xx) responses.
    pub fn successes(&self) -> u64 {
        self.responses.saturating_sub(self.errors.status)
    }

    /// Successful responses per second.
    pub fn rate(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.successes() as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at `quantile` (0..=1) in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> LoadResult {
        LoadResult::from_raw(serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn results_of_two_servers_merge_into_one_histogram() {
        let mut merged = parsed(
            r#"{"duration_us":2000000,"requests":100,"bytes":1,
                "errors":{"connect":0,"read":0,"write":0,"status":2,"timeout":0},
                "decisions":{"allow":98},"latency_us":[[1000,99],[9000,1]]}"#,
        );
        merged
            .merge(parsed(
                r#"{"duration_us":2100000,"requests":100,"bytes":1,
                    "errors":{"connect":1,"read":0,"write":0,"status":0,"timeout":0},
                    "decisions":{"allow":99,"deny":1},"latency_us":[[3000,100]]}"#,
            ))
            .unwrap();
        assert_eq!(merged.duration, Duration::from_micros(2_100_000));
        assert_eq!(merged.successes(), 198);
        assert_eq!(merged.errors.total(), 3);
        assert_eq!(merged.decisions["allow"], 197);
        assert_eq!(merged.decisions["deny"], 1);
        assert!((merged.rate() - 198.0 / 2.1).abs() < 1e-9);
        // Three significant digits: 3000 µs is reported as the top of its bucket.
        assert!(
            (2.99..=3.01).contains(&merged.latency_ms(0.5)),
            "the median of both servers' answers"
        );
        assert!((8.9..=9.1).contains(&merged.latency_ms(1.0)));
    }

    #[test]
    fn a_field_with_a_tab_or_line_break_is_refused() {
        let mut request = Request::get("/healthz");
        assert_eq!(request.line().unwrap(), "GET\t/healthz\t\t\n");
        request.body = Some("{\"a\":\"x\ty\"}".into());
        assert!(request.line().is_err());
        request.body = None;
        request.authorization = Some("Bearer a\nb".into());
        assert!(request.line().is_err());
        request.authorization = None;
        request.headers = vec!["Accept: application/json".into()];
        assert_eq!(
            request.line().unwrap(),
            "GET\t/healthz\t\t\tAccept: application/json\n"
        );
        request.headers = vec!["X-A: a\tb".into()];
        assert!(request.line().is_err());
    }
}
