-- Notifications (SQLite): per-tenant webhook subscriptions, the durable delivery queue, and
-- the coalescing state of the notification consumer.

-- Webhook subscriptions made over the API. The secret is kept because HMAC signing needs it;
-- it is shown once on creation and never returned again.
CREATE TABLE webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    url         TEXT NOT NULL,
    -- json | slack
    format      TEXT NOT NULL CHECK (format IN ('json', 'slack')),
    -- JSON array of notification kinds, or NULL for every kind.
    events      TEXT,
    secret      TEXT,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
);
CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant_id, created_at);

-- One message to one sink. `id` is the X-Aegis-Delivery value, stable across retries; `body`
-- holds the exact bytes POSTed. `sink` is `env:json`, `env:slack` or `sub:<subscription id>`.
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    sink             TEXT NOT NULL,
    agent_id         TEXT,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_sink ON deliveries (tenant_id, sink, created_at);

-- Coalescing per (tenant, agent): when the last message left and what is gathered for the
-- next one (JSON array of items). Saved with the consumer cursor.
CREATE TABLE notify_coalesce (
    tenant_id     TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    last_sent_at  INTEGER NOT NULL,
    pending       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);
