//! Webhook signing secrets at rest: sealed with ChaCha20-Poly1305 under the deployment's
//! secrets key, a random nonce per secret, and the tenant and webhook id as associated data,
//! so a sealed secret decrypts only in the row it was written for. Stored as
//! `v1:<nonce hex>:<ciphertext hex>`. Both stores seal on write and open on read; the key
//! never reaches the database.

use crate::{NewWebhook, StoreError, StoreResult, TenantId};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const VERSION: &str = "v1";

/// The 32-byte key that seals webhook secrets. Every replica of a deployment needs the same.
#[derive(Clone)]
pub struct SecretsKey(ChaCha20Poly1305);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(…)")
    }
}

/// Binds a sealed secret to its row.
fn associated_data(tenant: &TenantId, webhook_id: &str) -> Vec<u8> {
    format!("aegis webhook secret {VERSION}\0{tenant}\0{webhook_id}").into_bytes()
}

impl SecretsKey {
    pub fn from_bytes(key: &[u8; 32]) -> Self {
        SecretsKey(ChaCha20Poly1305::new(Key::from_slice(key)))
    }

    /// Seals `secret` for the webhook `webhook_id` of `tenant`.
    pub(crate) fn seal(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
        secret: &str,
    ) -> StoreResult<String> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| {
            StoreError::Unavailable(format!("the system random source failed: {e}"))
        })?;
        let aad = associated_data(tenant, webhook_id);
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Unavailable("cannot seal a webhook secret".into()))?;
        Ok(format!(
            "{VERSION}:{}:{}",
            hex::encode(nonce),
            hex::encode(sealed)
        ))
    }

    /// Opens what [`SecretsKey::seal`] sealed for this very row; `Corrupt` if it was sealed
    /// for another row, under another key, or altered.
    pub(crate) fn open(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
        sealed: &str,
    ) -> StoreResult<String> {
        let unreadable = || {
            StoreError::Corrupt(format!(
                "the signing secret of webhook {webhook_id} does not decrypt: altered, moved \
                 from another row, or sealed under another secrets key"
            ))
        };
        let mut parts = sealed.split(':');
        let (Some(VERSION), Some(nonce), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unreadable());
        };
        let nonce = hex::decode(nonce)
            .ok()
            .filter(|n| n.len() == 12)
            .ok_or_else(unreadable)?;
        let ciphertext = hex::decode(ciphertext).map_err(|_| unreadable())?;
        let aad = associated_data(tenant, webhook_id);
        let plain = self
            .0
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }
}

/// A new subscription's secret, sealed for its row.
pub(crate) fn seal_new(
    key: Option<&SecretsKey>,
    tenant: &TenantId,
    webhook: &NewWebhook,
) -> StoreResult<Option<String>> {
    let key =
        key.ok_or_else(|| StoreError::Unavailable("the database was opened read-only".into()))?;
    webhook
        .secret
        .as_deref()
        .map(|secret| key.seal(tenant, &webhook.id, secret))
        .transpose()
}

/// A subscription's signing secret from its stored columns: the sealed one, opened for this
/// row; or a plain one written before secrets were sealed (sealed when a store next opens).
pub(crate) fn stored_secret(
    key: Option<&SecretsKey>,
    tenant: &TenantId,
    webhook_id: &str,
    sealed: Option<String>,
    plain: Option<String>,
) -> StoreResult<Option<String>> {
    match (sealed, key) {
        (Some(sealed), Some(key)) => key.open(tenant, webhook_id, &sealed).map(Some),
        (Some(_), None) => Err(StoreError::Unavailable(
            "no secrets key: the database was opened read-only".into(),
        )),
        (None, _) => Ok(plain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn a_sealed_secret_opens_only_in_its_own_row_under_its_own_key() {
        let acme = TenantId::new("acme");
        let sealed = key(1).seal(&acme, "whk_a", "whsec_original").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("whsec_original"));
        assert_eq!(
            key(1).open(&acme, "whk_a", &sealed).unwrap(),
            "whsec_original"
        );
        // Moved to another webhook, another tenant, or opened under another key.
        assert!(key(1).open(&acme, "whk_b", &sealed).is_err());
        assert!(
            key(1)
                .open(&TenantId::new("other"), "whk_a", &sealed)
                .is_err()
        );
        assert!(key(2).open(&acme, "whk_a", &sealed).is_err());
        // Altered.
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == '0' { '1' } else { '0' });
        assert!(key(1).open(&acme, "whk_a", &altered).is_err());
        assert!(key(1).open(&acme, "whk_a", "whsec_plain").is_err());
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let acme = TenantId::new("acme");
        let a = key(1).seal(&acme, "whk_a", "same").unwrap();
        let b = key(1).seal(&acme, "whk_a", "same").unwrap();
        assert_ne!(a, b);
    }
}
