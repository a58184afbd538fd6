-- Webhook signing secrets are kept sealed (ChaCha20-Poly1305 under the deployment's secrets
-- key, bound to tenant and webhook id): `v1:<nonce hex>:<ciphertext hex>`. The plain `secret`
-- column is emptied when a store opens with the key (older rows are sealed then).
ALTER TABLE webhook_subscriptions ADD COLUMN sealed_secret TEXT;
