//! The operator CLI (`aegis agents|incidents|approvals|decisions`) as an operator runs it:
//! the built binary against a running `aegis serve`, on SQLite and PostgreSQL. Tables show the
//! rows, `--json` is the API's answer, and failures are one line with their exit code.

#[macro_use]
mod support;

use serde_json::{Value, json};
use std::process::{Command, Output};
use support::*;

/// Exit codes of the operator CLI (README, "Operator CLI").
const NOT_FOUND: i32 = 3;
const REFUSED: i32 = 4;
const UNREACHABLE: i32 = 5;

/// The CLI run by one operator key against one gateway URL.
struct Operator {
    url: String,
    key: String,
}

impl Operator {
    fn new(url: &str, key: &str) -> Operator {
        Operator {
            url: url.to_owned(),
            key: key.to_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(AEGIS)
            .args(args)
            .env("AEGIS_URL", &self.url)
            .env("AEGIS_KEY", &self.key)
            // A panic would print its backtrace: failures must not.
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run aegis")
    }

    /// The table a successful command prints.
    fn table(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aegis {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// The JSON a successful command prints with `--json`.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(&[args, &["--json"]].concat());
        assert!(
            out.status.success(),
            "aegis {args:?} --json: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("--json prints JSON")
    }

    /// The one line a failing command prints, after checking its exit code.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8(out.stderr).expect("UTF-8 errors");
        assert_eq!(out.status.code(), Some(code), "aegis {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing on stdout: {args:?}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("aegis: "), "{stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
        stderr
    }
}

/// The table row (line) that mentions `needle`.
fn row_with<'t>(table: &'t str, needle: &str) -> &'t str {
    table
        .lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle}:\n{table}"))
}

async fn operator_key(client: &reqwest::Client, gw: &Gateway, admin: &str, role: &str) -> String {
    let created = post_json(
        client,
        gw.url("/v1/keys"),
        admin,
        &json!({"role": role, "name": format!("{role} on call")}),
    )
    .await;
    created["key"].as_str().unwrap().to_owned()
}

e2e_test!(
    async fn every_operator_command_works_against_a_running_gateway(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin_key = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let client = reqwest::Client::new();
        let (agent_id, token) = agent_with_github(&client, &gw, &admin_key).await;
        let responder_key = operator_key(&client, &gw, &admin_key, "responder").await;
        let viewer_key = operator_key(&client, &gw, &admin_key, "viewer").await;
        let admin = Operator::new(&gw.base, &admin_key);
        let responder = Operator::new(&gw.base, &responder_key);
        let viewer = Operator::new(&gw.base, &viewer_key);

        // Agents: a table row per agent, and the API's JSON with --json.
        let listed = viewer.table(&["agents", "list"]);
        assert!(row_with(&listed, &agent_id).contains("coding-agent"), "{listed}");
        assert!(row_with(&listed, &agent_id).contains("active"), "{listed}");
        assert_eq!(
            viewer.json(&["agents", "list"]),
            get_json(&client, gw.url("/v1/agents"), &viewer_key).await
        );
        let shown = viewer.table(&["agents", "get", &agent_id]);
        assert!(row_with(&shown, "STATUS ").ends_with("active"), "{shown}");
        assert_eq!(
            viewer.json(&["agents", "get", &agent_id]),
            get_json(&client, gw.url(&format!("/v1/agents/{agent_id}")), &viewer_key).await
        );

        // Approvals: one to approve, one (another call) to reject.
        let asked = post_json(&client, gw.url("/v1/authorize"), &token, &merge_call("semi_trusted_customer")).await;
        assert_eq!(asked["decision"], "require_approval", "{asked}");
        let first = asked["approval"]["id"].as_str().unwrap().to_owned();
        let mut other_call = merge_call("semi_trusted_customer");
        other_call["tool_call"]["resource"] = json!("payments#483");
        let asked = post_json(&client, gw.url("/v1/authorize"), &token, &other_call).await;
        let second = asked["approval"]["id"].as_str().unwrap().to_owned();
        let pending = viewer.table(&["approvals", "list", "--status", "pending"]);
        assert!(row_with(&pending, &first).contains("payments#482"), "{pending}");
        assert!(row_with(&pending, &second).contains("payments#483"), "{pending}");
        assert_eq!(
            viewer.json(&["approvals", "list", "--status", "pending"]),
            get_json(&client, gw.url("/v1/approvals?status=pending"), &viewer_key).await
        );
        let refused = viewer.fails(&["approvals", "approve", &first], REFUSED);
        assert!(refused.contains("403"), "{refused}");
        let approved = responder.table(&["approvals", "approve", &first, "--reason", "checked the diff"]);
        assert!(row_with(&approved, "STATUS ").ends_with("approved"), "{approved}");
        assert!(row_with(&approved, "APPROVED BY").ends_with("responder on call"), "{approved}");
        let rejected = responder.json(&["approvals", "reject", &second, "--reason", "wrong branch"]);
        assert_eq!(rejected["status"], "rejected");
        assert_eq!(rejected["rejected_by"]["reason"], "wrong branch");
        let twice = responder.fails(&["approvals", "reject", &second], REFUSED);
        assert!(twice.contains("409"), "{twice}");

        // A deny storm opens an incident.
        for _ in 0..5 {
            assert_eq!(authorize(&client, &gw, &token, "untrusted_external").await, "deny");
        }
        let incidents = eventually(10, "the deny-storm incident", || async {
            let open = viewer.json(&["incidents", "list", "--kind", "deny_storm", "--status", "open"]);
            (open.as_array().unwrap().len() == 1).then_some(open)
        })
        .await;
        let incident_id = incidents[0]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            incidents,
            get_json(&client, gw.url("/v1/incidents?kind=deny_storm&status=open"), &viewer_key).await
        );
        let listed = viewer.table(&["incidents", "list", "--agent-id", &agent_id]);
        let row = row_with(&listed, &incident_id);
        assert!(row.contains("deny_storm") && row.contains("open") && row.contains(&agent_id), "{listed}");
        let shown = viewer.table(&["incidents", "get", &incident_id]);
        assert!(row_with(&shown, "KIND ").ends_with("deny_storm"), "{shown}");
        assert_eq!(
            viewer.json(&["incidents", "get", &incident_id]),
            get_json(&client, gw.url(&format!("/v1/incidents/{incident_id}")), &viewer_key).await
        );

        // The denies behind it, with the API's filters.
        let denies = viewer.table(&["decisions", "list", "--agent-id", &agent_id, "--decision", "deny"]);
        assert_eq!(denies.lines().filter(|l| l.contains(" deny ")).count(), 5, "{denies}");
        let denies = viewer.json(&["decisions", "list", "--agent-id", &agent_id, "--decision", "deny"]);
        assert_eq!(denies.as_array().unwrap().len(), 5);
        assert_eq!(
            denies,
            get_json(&client, gw.url(&format!("/v1/decisions?agent_id={agent_id}&decision=deny")), &viewer_key).await
        );
        let invalid = viewer.fails(&["decisions", "list", "--decision", "maybe"], REFUSED);
        assert!(invalid.contains("422") && invalid.contains("decision"), "{invalid}");

        // The narrative: a responder's read stores it, and the API then serves the same one.
        let narrative = responder.table(&["incidents", "narrate", &incident_id]);
        assert!(narrative.contains(&incident_id) && narrative.contains("(generated by deterministic"), "{narrative}");
        assert_eq!(
            responder.json(&["incidents", "narrate", &incident_id]),
            get_json(&client, gw.url(&format!("/v1/incidents/{incident_id}/narrate")), &responder_key).await
        );
        let renewed = responder.json(&["incidents", "narrate", &incident_id, "--renew"]);
        assert_eq!(renewed["incident_id"], incident_id.as_str());

        let graph = viewer.table(&["incidents", "graph", &incident_id]);
        assert!(row_with(&graph, "made_by").ends_with(&format!("agent:{agent_id}")), "{graph}");
        assert_eq!(graph.lines().filter(|l| l.starts_with(&format!("incident:{incident_id}")) && l.contains("evidence")).count(), 5, "{graph}");
        assert_eq!(
            viewer.json(&["incidents", "graph", &incident_id, "--limit", "2"]),
            get_json(&client, gw.url(&format!("/v1/graph/incident/{incident_id}?limit=2")), &viewer_key).await
        );

        // The settings the runbook reads before it starts, and tunes.
        let autonomy = viewer.table(&["settings", "show", "soc-autonomy"]);
        assert!(row_with(&autonomy, "level").ends_with("L1"), "{autonomy}");
        assert!(row_with(&autonomy, "source").ends_with("default"), "{autonomy}");
        assert_eq!(
            viewer.json(&["settings", "show", "deny-storm"]),
            json!({"threshold": null, "window_secs": null})
        );
        let refused = responder.fails(&["settings", "set-deny-storm", "--threshold", "7"], REFUSED);
        assert!(refused.contains("403"), "{refused}");
        assert_eq!(
            admin.json(&["settings", "set-deny-storm", "--threshold", "7"]),
            json!({"threshold": 7, "window_secs": null})
        );
        assert_eq!(
            get_json(&client, gw.url("/v1/tenants/deny-storm"), &viewer_key).await,
            json!({"threshold": 7, "window_secs": null})
        );
        admin.json(&["settings", "set-deny-storm"]);
        assert_eq!(admin.json(&["settings", "set-soc-autonomy", "L2"])["level"], "L2");
        let cleared = admin.json(&["settings", "set-soc-autonomy", "default"]);
        assert_eq!((cleared["level"].as_str(), cleared["override"].as_str()), (Some("L1"), None));
        let escalation = admin.table(&["settings", "set-risk-escalation", "--denial-threshold", "6", "--window-minutes", "30"]);
        assert!(row_with(&escalation, "denial_threshold").ends_with('6'), "{escalation}");
        assert_eq!(
            viewer.json(&["settings", "show", "risk-escalation"]),
            json!({"denial_threshold": 6, "window_minutes": 30})
        );
        let invalid = admin.fails(&["settings", "set-soc-autonomy", "L9"], REFUSED);
        assert!(invalid.contains("422"), "{invalid}");
        // The action plane's rate limit and budget.
        assert_eq!(
            viewer.json(&["settings", "show", "rate-limits"]),
            json!({"per_agent_per_sec": null, "burst": null})
        );
        let refused = viewer.fails(&["settings", "set-rate-limits", "--per-agent-per-sec", "50"], REFUSED);
        assert!(refused.contains("403"), "{refused}");
        let limits = admin.table(&["settings", "set-rate-limits", "--per-agent-per-sec", "50", "--burst", "100"]);
        assert!(row_with(&limits, "per_agent_per_sec").ends_with("50"), "{limits}");
        assert_eq!(
            get_json(&client, gw.url("/v1/tenants/rate-limits"), &viewer_key).await,
            json!({"per_agent_per_sec": 50, "burst": 100})
        );
        let invalid = admin.fails(&["settings", "set-rate-limits", "--burst", "5"], REFUSED);
        assert!(invalid.contains("422") && invalid.contains("burst"), "{invalid}");
        admin.json(&["settings", "set-rate-limits"]);
        assert_eq!(
            admin.json(&["settings", "set-budgets", "--mutating-per-hour", "500"]),
            json!({"mutating_per_hour": 500})
        );
        assert_eq!(viewer.json(&["settings", "show", "budgets"]), json!({"mutating_per_hour": 500}));
        let invalid = admin.fails(&["settings", "set-budgets", "--mutating-per-hour", "0"], REFUSED);
        assert!(invalid.contains("422") && invalid.contains("mutating_per_hour"), "{invalid}");
        admin.json(&["settings", "set-budgets"]);

        // Contain: a viewer may not freeze; a responder does, once.
        let refused = viewer.fails(&["agents", "freeze", &agent_id, "--reason", "storm"], REFUSED);
        assert!(refused.contains("403") && refused.contains("forbidden"), "{refused}");
        let frozen = responder.table(&["agents", "freeze", &agent_id, "--reason", "deny storm — investigating"]);
        assert!(row_with(&frozen, "STATUS ").ends_with("frozen"), "{frozen}");
        assert!(row_with(&frozen, "STATUS REASON").ends_with("deny storm — investigating"), "{frozen}");
        let no_recommendation = responder.fails(&["incidents", "apply", &incident_id], REFUSED);
        assert!(no_recommendation.contains("409"), "at L1 there is nothing to apply: {no_recommendation}");

        // Close the incident, then let the agent work again.
        let acked = responder.table(&["incidents", "ack", &incident_id]);
        assert!(row_with(&acked, "STATUS ").ends_with("acknowledged"), "{acked}");
        assert!(row_with(&acked, "ACKNOWLEDGED BY").contains("key:"), "{acked}");
        let closed = responder.json(&["incidents", "close", &incident_id, "--reason", "retry loop fixed"]);
        assert_eq!((closed["status"].as_str(), closed["close_reason"].as_str()), (Some("closed"), Some("retry loop fixed")));
        let closed_again = responder.fails(&["incidents", "close", &incident_id], REFUSED);
        assert!(closed_again.contains("409"), "{closed_again}");
        let unfrozen = responder.json(&["agents", "unfreeze", &agent_id]);
        assert_eq!(unfrozen["status"], "active");

        // Admin: step the risk tier down, rotate the token, revoke.
        let stepped = admin.json(&["agents", "set-risk-tier", &agent_id, "low"]);
        assert_eq!(stepped["risk_tier"], "low");
        let refused = responder.fails(&["agents", "rotate-token", &agent_id], REFUSED);
        assert!(refused.contains("403"), "{refused}");
        let rotated = admin.table(&["agents", "rotate-token", &agent_id]);
        let new_token = row_with(&rotated, "NEW TOKEN").split_whitespace().last().unwrap().to_owned();
        assert!(new_token.starts_with("aat_"), "{rotated}");
        assert_eq!(authorize(&client, &gw, &new_token, "trusted_internal_signed").await, "allow");
        let revoked = admin.json(&["agents", "revoke", &agent_id, "--reason", "compromised"]);
        assert_eq!((revoked["status"].as_str(), revoked["status_reason"].as_str()), (Some("revoked"), Some("compromised")));
        let stays_revoked = responder.fails(&["agents", "unfreeze", &agent_id], REFUSED);
        assert!(stays_revoked.contains("409"), "{stays_revoked}");

        // Not found, each with its own exit code.
        for args in [
            &["agents", "get", "agt_nope"][..],
            &["agents", "freeze", "agt_nope", "--reason", "x"],
            &["incidents", "get", "inc_nope"],
            &["incidents", "narrate", "inc_nope"],
            &["approvals", "approve", "apr_nope"],
        ] {
            let missing = responder.fails(args, NOT_FOUND);
            assert!(missing.contains("404") && missing.contains("not found"), "{missing}");
        }
        // An id is one path segment: it cannot reach another route.
        let escaped = viewer.fails(&["agents", "get", "../keys"], NOT_FOUND);
        assert!(escaped.contains("/v1/agents/..%2Fkeys"), "{escaped}");

        // A bad key: one line, refused.
        let bad = Operator::new(&gw.base, "aok_not-a-key").fails(&["agents", "list"], REFUSED);
        assert!(bad.contains("401") && bad.contains("AEGIS_KEY"), "{bad}");
        assert!(!bad.contains("aok_not-a-key"), "the key is never printed: {bad}");
    }
);

e2e_test!(
    async fn lists_page_with_the_api_cursor_and_agent_strings_stay_inert(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin_key = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let client = reqwest::Client::new();
        let (_, token) = agent_with_github(&client, &gw, &admin_key).await;
        let hostile = "evil\u{1b}]0;owned\u{7}\u{1b}[2J\r\nFAKE ROW\u{9b}m";
        let second = post_json(&client, gw.url("/v1/agents"), &admin_key, &json!({"name": hostile})).await;
        let second_id = second["id"].as_str().unwrap();
        let admin = Operator::new(&gw.base, &admin_key);

        // One page at a time: the next page's cursor is printed on stderr.
        let out = admin.run(&["agents", "list", "--limit", "1"]);
        assert!(out.status.success());
        let page = String::from_utf8(out.stdout).unwrap();
        assert_eq!(page.lines().count(), 2, "a header and the newest agent: {page}");
        assert!(page.contains(second_id), "{page}");
        let more = String::from_utf8(out.stderr).unwrap();
        let cursor = more
            .split_whitespace()
            .skip_while(|word| *word != "--cursor")
            .nth(1)
            .unwrap_or_else(|| panic!("a cursor: {more}"));
        let next = admin.json(&["agents", "list", "--limit", "1", "--cursor", cursor]);
        assert_eq!(next.as_array().unwrap().len(), 1);
        assert_eq!(next[0]["name"], "coding-agent");
        let out = admin.run(&["agents", "list", "--limit", "1", "--cursor", cursor]);
        assert!(out.stderr.is_empty(), "the last page names no cursor");

        // What agents write reaches the terminal escaped; --json keeps it exact.
        let mut call = merge_call("untrusted_external");
        call["tool_call"]["resource"] = json!(hostile);
        post_json(&client, gw.url("/v1/authorize"), &token, &call).await;
        for table in [
            admin.table(&["agents", "list"]),
            admin.table(&["agents", "get", second_id]),
            admin.table(&["decisions", "list"]),
        ] {
            assert!(
                !table.chars().any(|c| c.is_control() && c != '\n'),
                "no control character: {table:?}"
            );
            assert!(table.contains("evil\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\r\\nFAKE ROW\\u{9b}m"), "{table}");
            assert!(!table.lines().any(|line| line.starts_with("FAKE ROW")), "{table}");
        }
        let exact = admin.run(&["agents", "get", second_id, "--json"]);
        let exact = String::from_utf8(exact.stdout).unwrap();
        assert!(!exact.chars().any(|c| c.is_control() && c != '\n'), "{exact:?}");
        assert_eq!(serde_json::from_str::<Value>(&exact).unwrap()["name"], hostile);
    }
);

/// The words of a command line as a shell splits it (double quotes only, as the README uses).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => words.push(String::new()),
            c => words.last_mut().unwrap().push(c),
        }
    }
    words.retain(|word| !word.is_empty());
    words
}

#[test]
fn each_runbook_line_in_the_readme_is_a_command_the_cli_takes() {
    let readme = include_str!("../../../README.md");
    let table = readme
        .split("### The deny-storm runbook from the CLI")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README's runbook section");
    let commands: Vec<&str> = table
        .lines()
        .filter_map(|line| line.split("| `aegis ").nth(1))
        .filter_map(|rest| rest.split('`').next())
        // Run on the database host, not against the API (tested in cli.rs).
        .filter(|command| !command.starts_with("receipts "))
        .collect();
    assert!(commands.len() >= 20, "{commands:?}");
    // Nothing listens there: a command the CLI takes gets as far as trying to connect.
    let operator = Operator::new("http://127.0.0.1:1", "aok_whatever");
    for command in commands {
        let words = shell_words(command);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        operator.fails(&words, UNREACHABLE);
    }
}

#[test]
fn an_unreachable_gateway_or_a_missing_key_is_one_line() {
    // Nothing listens on port 1 of loopback.
    let operator = Operator::new("http://127.0.0.1:1", "aok_whatever");
    let down = operator.fails(&["agents", "list"], UNREACHABLE);
    assert!(
        down.contains("cannot reach the gateway at http://127.0.0.1:1"),
        "{down}"
    );
    let down = operator.fails(
        &["incidents", "close", "inc_1", "--reason", "x"],
        UNREACHABLE,
    );
    assert!(down.contains("cannot reach"), "{down}");

    let no_key = Command::new(AEGIS)
        .args(["decisions", "list", "--url", "http://127.0.0.1:1"])
        .env_remove("AEGIS_KEY")
        .output()
        .unwrap();
    assert_eq!(no_key.status.code(), Some(1));
    let stderr = String::from_utf8(no_key.stderr).unwrap();
    assert_eq!(
        stderr,
        "aegis: AEGIS_KEY is not set: export an operator key (aok_…) in it\n"
    );

    let with_password = Operator::new("http://ops:s3cret@127.0.0.1:1", "aok_whatever");
    let refused = with_password.fails(&["agents", "list"], 1);
    assert!(!refused.contains("s3cret"), "{refused}");

    // The key is never an argument.
    let out = operator.run(&["agents", "list", "--key", "aok_x"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}
