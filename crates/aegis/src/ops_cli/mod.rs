//! The operator CLI: `aegis agents|incidents|approvals|decisions|settings …`, thin clients of a
//! running gateway's HTTP API. Each command becomes one [`Call`], sent with the operator key
//! from `AEGIS_KEY`; the answer is printed as a table, or with `--json` as the gateway's JSON
//! (the same JSON value, with the characters a terminal acts on as `\u` escapes). Failures
//! print one line on stderr and exit with a [`Failure`] code.

pub mod agents;
pub mod approvals;
mod client;
pub mod decisions;
pub mod incidents;
pub mod settings;
mod table;

use clap::{Args, Subcommand};
use client::{Failure, Gateway};
use serde_json::{Value, json};
use std::io::Write;
use table::Column;

/// A resource's commands with the options every one of them takes.
#[derive(Args)]
pub struct Resource<C: Subcommand> {
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(subcommand)]
    command: C,
}

#[derive(Args)]
struct GatewayArgs {
    /// The gateway's base URL. The operator key is read from AEGIS_KEY only, never from the
    /// command line (where other users of the machine could read it).
    #[arg(long, env = "AEGIS_URL", default_value = "http://127.0.0.1:8080",
          value_parser = crate::parse_public_url, global = true)]
    url: String,
    /// Print the gateway's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `limit` and `cursor` of the list commands: one page per run, as the API serves it.
#[derive(Args)]
pub struct PageArgs {
    /// Rows in the page, 1 to 1000 (default 50; a graph's decisions, default 200).
    #[arg(long)]
    limit: Option<u32>,
    /// Where the next page starts: the cursor printed (on stderr) under the previous page.
    #[arg(long)]
    cursor: Option<String>,
}

/// The time filters and page of the lists that take both (`since`, `until`, `limit`,
/// `cursor`).
#[derive(Args)]
pub struct TimedPageArgs {
    /// RFC 3339: only those at or after this time (opened, decided).
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339: only those before this time.
    #[arg(long)]
    until: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

/// A command that is one API call.
pub trait ToCall {
    fn into_call(self) -> Call;
}

/// One request to the gateway and how its answer is shown as text.
pub struct Call {
    method: reqwest::Method,
    /// Path segments after `/v1`, each percent-encoded on its own (an id cannot add any).
    path: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    view: View,
}

/// How a successful answer is printed without `--json`.
pub enum View {
    /// A JSON array: one table row per element.
    Rows(&'static [Column]),
    /// The JSON array at this pointer in the answer, as [`View::Rows`].
    RowsAt(&'static str, &'static [Column]),
    /// A JSON object: one `FIELD  value` line per column, section after section.
    Record(&'static [&'static [Column]]),
    /// A JSON object: one `field  value` line per field, whatever its fields.
    Fields,
    /// An incident narrative: its Markdown text as is, then who wrote it and when.
    Narrative,
}

impl Call {
    fn new(method: reqwest::Method, path: &[&str], view: View) -> Call {
        Call {
            method,
            path: path.iter().map(|segment| (*segment).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            view,
        }
    }

    pub fn get(path: &[&str], view: View) -> Call {
        Call::new(reqwest::Method::GET, path, view)
    }

    pub fn post(path: &[&str], view: View) -> Call {
        Call::new(reqwest::Method::POST, path, view)
    }

    pub fn patch(path: &[&str], body: Value, view: View) -> Call {
        Call::new(reqwest::Method::PATCH, path, view).body(body)
    }

    pub fn put(path: &[&str], body: Value, view: View) -> Call {
        Call::new(reqwest::Method::PUT, path, view).body(body)
    }

    fn body(self, body: Value) -> Call {
        Call {
            body: Some(body),
            ..self
        }
    }

    /// Adds a query filter when it is given.
    pub fn filter(mut self, name: &'static str, value: Option<impl ToString>) -> Call {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    pub fn page(self, page: PageArgs) -> Call {
        self.filter("limit", page.limit)
            .filter("cursor", page.cursor)
    }

    pub fn timed_page(self, timed: TimedPageArgs) -> Call {
        self.filter("since", timed.since)
            .filter("until", timed.until)
            .page(timed.page)
    }

    /// The `{"reason"}` body of freeze, revoke, close, approve and reject (none without one:
    /// the gateway reads an empty body as `{}`).
    pub fn reason(self, reason: Option<String>) -> Call {
        match reason {
            Some(reason) => self.body(json!({ "reason": reason })),
            None => self,
        }
    }
}

/// Runs one operator command. On failure it prints one line on stderr and exits the process
/// with the failure's code, which scripts rely on, so it never returns an error.
pub async fn run<C: Subcommand + ToCall>(resource: Resource<C>) -> anyhow::Result<()> {
    if let Err(failure) = send_and_print(resource).await {
        eprintln!("aegis: {failure}");
        std::process::exit(failure.exit_code());
    }
    Ok(())
}

async fn send_and_print<C: Subcommand + ToCall>(resource: Resource<C>) -> Result<(), Failure> {
    let call = resource.command.into_call();
    let gateway = Gateway::from_env(&resource.gateway.url)?;
    let answer = gateway.send(&call).await?;
    let text = match resource.gateway.json {
        true => format!("{}\n", table::inert_json(&answer.body)),
        false => table::render(&call.view, &answer.json),
    };
    print(&text)?;
    if let Some(cursor) = answer.next_cursor {
        eprintln!("more: run again with --cursor {cursor} for the next page");
    }
    Ok(())
}

/// Writes to stdout; a reader that went away (`aegis … | head`) is no failure.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Local(
            format!("cannot write to standard output: {error}"),
        )),
        _ => Ok(()),
    }
}
