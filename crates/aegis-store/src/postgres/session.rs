//! What each of a replica's database sessions is allowed, and how it is named.
//!
//! One replica must not be able to stop the cluster. Every write transaction holds the
//! `log_head` row lock to COMMIT ([`super::writer`]), so a replica paused or cut off in the
//! middle of one would stall every replica's writes for as long as the server keeps its
//! session. The writer's and the leader's sessions are therefore bounded
//! ([`SessionBounds`]): the server ends a session idle inside a transaction, gives up a lock
//! wait or a statement after a bound (the job fails: 503, never a hang), and TCP keepalives
//! find a vanished peer within seconds, on both sides.
//!
//! Every session is named `aegis:<role>:<process id>` (`application_name`), so operators —
//! and the fault-injection tests — can find a given replica's writer, leader lock or
//! listener in `pg_stat_activity`.

use std::time::Duration;

/// Bounds of the writer's and the leader's sessions (`AEGIS_PG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionBounds {
    /// `idle_in_transaction_session_timeout`: how long the server lets a session sit inside
    /// a transaction without sending anything (a paused or partitioned replica holding
    /// `log_head`) before it ends the session and frees its locks.
    pub idle_in_transaction: Duration,
    /// `lock_timeout`: how long a write waits for a lock (`log_head`) before its batch
    /// fails.
    pub lock_wait: Duration,
    /// `statement_timeout`: the longest any one statement of a write may run.
    pub statement: Duration,
}

impl Default for SessionBounds {
    fn default() -> Self {
        SessionBounds {
            idle_in_transaction: Duration::from_secs(5),
            lock_wait: Duration::from_secs(5),
            statement: Duration::from_secs(30),
        }
    }
}

/// TCP keepalive of every session, set on both ends: idle time, probe interval, probes.
/// A peer that vanished is noticed after about 11 s instead of the system's hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_PROBES: u32 = 3;

/// The part a session plays in a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The writer's connection: holds `log_head` during each batch.
    Writer,
    /// The connection that holds the SOC leadership lock.
    Leader,
    /// LISTENs for other replicas' commits.
    Listener,
    /// The pooled read connections.
    Reader,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Leader => "leader",
            Role::Listener => "listener",
            Role::Reader => "reader",
        }
    }

    /// Whether the role's session is bounded by [`SessionBounds`]: those that take the
    /// cluster's write lock.
    fn bounded(self) -> bool {
        matches!(self, Role::Writer | Role::Leader)
    }
}

/// `base` configured for a session playing `role`.
pub(super) fn config_for(
    base: &tokio_postgres::Config,
    role: Role,
    bounds: &SessionBounds,
) -> tokio_postgres::Config {
    let mut config = base.clone();
    config
        .application_name(format!("aegis:{}:{}", role.name(), std::process::id()))
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_PROBES);
    let mut settings = vec![
        ("tcp_keepalives_idle", KEEPALIVE_IDLE.as_secs()),
        ("tcp_keepalives_interval", KEEPALIVE_INTERVAL.as_secs()),
        ("tcp_keepalives_count", u64::from(KEEPALIVE_PROBES)),
    ];
    if role.bounded() {
        let millis = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u64;
        settings.extend([
            (
                "idle_in_transaction_session_timeout",
                millis(bounds.idle_in_transaction),
            ),
            ("lock_timeout", millis(bounds.lock_wait)),
            ("statement_timeout", millis(bounds.statement)),
        ]);
    }
    // Appended to the URL's own `options`, which they override where they overlap.
    let mut options = base.get_options().unwrap_or_default().to_owned();
    for (name, value) in settings {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={value}"));
    }
    config.options(options);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_that_take_the_write_lock_are_bounded() {
        let base: tokio_postgres::Config =
            "postgres://aegis@db/aegis?options=-c%20search_path%3Daegis"
                .parse()
                .unwrap();
        let bounds = SessionBounds {
            idle_in_transaction: Duration::from_millis(1500),
            lock_wait: Duration::from_millis(700),
            statement: Duration::from_secs(9),
        };
        let writer = config_for(&base, Role::Writer, &bounds);
        let options = writer.get_options().unwrap();
        assert!(options.starts_with("-c search_path=aegis "), "{options}");
        for setting in [
            "-c idle_in_transaction_session_timeout=1500",
            "-c lock_timeout=700",
            "-c statement_timeout=9000",
            "-c tcp_keepalives_idle=5",
        ] {
            assert!(options.contains(setting), "{options}");
        }
        assert_eq!(
            writer.get_application_name(),
            Some(format!("aegis:writer:{}", std::process::id()).as_str())
        );
        let reader = config_for(&base, Role::Reader, &bounds);
        let options = reader.get_options().unwrap();
        assert!(options.contains("-c tcp_keepalives_count=3"), "{options}");
        assert!(!options.contains("lock_timeout"), "{options}");
    }
}
