//! What a store's driver provides so that the roles of the storage contract are implemented
//! once, for both stores, above the drivers (`crate::admin`, ...): a rule run in the writer's
//! transaction ([`Backend::run_rule`], over [`WriteTx`]), a read run on a pooled read
//! connection ([`Backend::run_read`], over [`ReadRows`]), and the few spellings in which the
//! two schemas differ. A backend implements this once with its driver's plumbing; the roles
//! follow by blanket implementations, so a rule or read is never written per backend.
//!
//! Rules and reads are passed boxed because their futures must be `Send` (PostgreSQL's
//! writer is a task), which a bound on a generic async closure cannot state.

use crate::tx::{ReadRows, WriteTx};
use crate::{Delivery, DeliveryClaim, SecretsKey, StoreResult};
use futures_util::future::BoxFuture;

pub(crate) trait Backend: Send + Sync + 'static {
    /// The writer's transaction as a rule sees it.
    type Tx<'t>: WriteTx;
    /// A pooled read connection as a read sees it.
    type Read<'r>: ReadRows;

    /// The column agents and deliveries page by: SQLite's `rowid`, PostgreSQL's `ordinal`.
    const ORDINAL: &'static str;
    /// The columns of `crate::rows::agent`, ending in [`Backend::ORDINAL`]'s.
    const AGENT_COLUMNS: &'static str;
    /// The columns of `crate::rows::delivery`, ending in [`Backend::ORDINAL`]'s.
    const DELIVERY_COLUMNS: &'static str;

    /// Runs `rule` in the writer's next batch transaction, in a savepoint of its own, and
    /// answers once the batch is committed.
    fn run_rule<T, R>(&self, rule: R) -> impl Future<Output = StoreResult<T>> + Send
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut Self::Tx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static;

    /// [`Backend::run_rule`] for a log consumer's batch, which only the replica that leads
    /// may commit: one that lost the lead after reading commits nothing (PostgreSQL checks
    /// its leadership epoch in the transaction; a SQLite database has one process).
    fn run_leader_rule<T, R>(&self, rule: R) -> impl Future<Output = StoreResult<T>> + Send
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut Self::Tx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static;

    /// Runs `read` on a pooled read connection.
    fn run_read<T, R>(&self, read: R) -> impl Future<Output = StoreResult<T>> + Send
    where
        T: Send + 'static,
        R: for<'r> FnOnce(&'r mut Self::Read<'r>) -> BoxFuture<'r, StoreResult<T>> + Send + 'static;

    /// Claims due deliveries for sending, fairly across tenants (`records::fair_claim`).
    fn claim_deliveries(
        &self,
        claim: DeliveryClaim,
    ) -> impl Future<Output = StoreResult<Vec<Delivery>>> + Send;

    /// The key that seals secrets at rest; `None` for a store opened without one.
    fn secrets(&self) -> Option<&SecretsKey>;
}
