-- Console sign-ins: one row per browser session. Only the SHA-256 of the session id the
-- browser holds is kept; the operator key's role and revocation are read through key_id on
-- every request, so revoking the key ends its sessions.
CREATE TABLE console_sessions (
    id_hash     BYTEA PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    key_id      TEXT NOT NULL REFERENCES operator_keys (id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
