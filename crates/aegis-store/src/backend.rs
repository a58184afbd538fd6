//! What a store's driver provides so that the roles of the storage contract are implemented
//! once, for both stores, above the drivers (`crate::admin`, ...): a rule run in the writer's
//! transaction ([`Backend::run_rule`], over [`WriteTx`]), a read run on a pooled read
//! connection ([`Backend::run_read`], over [`ReadRows`]), and the few spellings in which the
//! two schemas differ, and what only a driver can do (leadership, the commit feed, a chain
//! audit's snapshot, claiming deliveries). A backend implements this once with its driver's
//! plumbing; the roles follow by blanket implementations, so their rules and reads are
//! written once. (The decision write is still each driver's, and so is the archive's prune.)
//!
//! Rules and reads are passed boxed because their futures must be `Send` (PostgreSQL's
//! writer is a task), which a bound on a generic async closure cannot state.

use crate::chain::{ChainAudit, ChainGuard, ChainWalk};
use crate::schema::StoredRow;
use crate::schema::{DecisionListings, EventQueries, ReceiptQueries};
use crate::tx::{ReadRows, SqlValue, WriteTx};
use crate::{DeliveryClaim, Leadership, SecretsKey, StoreResult, TenantId};
use aegis_core::receipt::KeyRing;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub(crate) trait Backend: Send + Sync + 'static {
    /// The writer's transaction as a rule sees it.
    type Tx<'t>: WriteTx;
    /// A pooled read connection as a read sees it.
    type Read<'r>: ReadRows;

    /// The column agents and deliveries page by: SQLite's `rowid`, PostgreSQL's `ordinal`.
    const ORDINAL: &'static str;
    /// The columns of `crate::rows::agent`, ending in [`Backend::ORDINAL`]'s.
    const AGENT_COLUMNS: &'static str;
    /// Marks the pending delivery whose [`Backend::ORDINAL`] is `$1` failed with the error
    /// `$2`, for a row that does not read (`crate::records::UnreadableDelivery`). Spelled out
    /// per backend because a write's text is static (the drivers cache statements by it).
    const FAIL_DELIVERY_BY_ORDINAL: &'static str;

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

    /// The rows of the JSON array bound to `param`, as a `FROM` item named `elements` with one
    /// text column `value`: how a read binds a whole batch as one parameter.
    fn json_elements(param: &str) -> String;

    /// The event log's reads in this backend's spelling.
    fn event_queries() -> &'static EventQueries;
    /// The receipt chains' reads in this backend's spelling.
    fn receipt_queries() -> &'static ReceiptQueries;
    /// The listings of a tenant's decisions in this backend's spelling.
    fn decision_listings() -> &'static DecisionListings;

    /// Waits until this process may run the log consumers ([`crate::EventLog::lead`]).
    fn wait_for_lead(&self) -> impl Future<Output = StoreResult<Leadership>> + Send;
    /// The highest committed event seq, as this process learns of commits.
    fn commits(&self) -> watch::Receiver<i64>;

    /// [`crate::chain::audit`] of the tenant's chain over one consistent snapshot.
    fn audit_in_snapshot(
        &self,
        tenant: &TenantId,
        walk: ChainWalk,
        keys: &KeyRing,
    ) -> impl Future<Output = StoreResult<ChainAudit>> + Send;
    /// The writers' guard of the chain heads ([`ChainGuard`]).
    fn chain_guard(&self) -> &ChainGuard;
    /// Makes the writer read the tenant's chain head through the guard again before its
    /// next use (a writer that keeps heads between batches drops it).
    fn forget_chain_head(&self, tenant: &TenantId) -> impl Future<Output = StoreResult<()>> + Send;

    /// Claims due deliveries for sending, fairly across tenants (`records::fair_claim`),
    /// setting aside the due rows that do not read.
    fn claim_deliveries(
        &self,
        claim: DeliveryClaim,
    ) -> impl Future<Output = StoreResult<crate::records::ClaimedDeliveries>> + Send;

    /// Every row `sql` reads for the tenant (its one parameter, `$1`), read by `read`.
    fn tenant_rows<T: Send + 'static>(
        &self,
        sql: &'static str,
        tenant: &TenantId,
        read: fn(&dyn StoredRow) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                rows.query_rows(sql, &[SqlValue::text(tenant.as_str())], read)
                    .await
            })
        })
    }

    /// Every row `sql` reads for the tenant (`$1`) and a batch (`$2`, a JSON array), read by
    /// `read`.
    fn batch_rows<T: Send + 'static>(
        &self,
        sql: String,
        tenant: &TenantId,
        batch: String,
        read: fn(&dyn StoredRow) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                let params = [SqlValue::text(tenant.as_str()), SqlValue::text(&batch)];
                rows.query_rows(&sql, &params, read).await
            })
        })
    }

    /// The key that seals secrets at rest; `None` for a store opened without one.
    fn secrets(&self) -> Option<&SecretsKey>;
}
