//! The platform's master key (`DATA_KEY_FILE`): the root of what protects the history. Keys
//! derived from it, one per purpose, wrap the per-person data keys (`personal`) and sign the
//! audit's chain checkpoints (`audit`), so that whoever can read or write the database still
//! cannot read erased data nor forge a checkpoint.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::ConfigError;

/// 32 secret bytes, read from a file holding them as 64 hexadecimal digits (`openssl rand -hex
/// 32 > data.key`). Never printed.
#[derive(Clone)]
pub struct MasterKey(Arc<[u8; 32]>);

impl MasterKey {
    /// The key in the file at `path` (surrounding whitespace ignored).
    pub fn read(path: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError {
            name: "DATA_KEY_FILE",
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("{path}: {e}")))?;
        Self::from_hex(text.trim()).ok_or_else(|| {
            invalid(format!(
                "{path} must hold 32 bytes as 64 hexadecimal digits (openssl rand -hex 32)"
            ))
        })
    }

    pub fn from_hex(hex_digits: &str) -> Option<Self> {
        Self::from_bytes(&hex::decode(hex_digits).ok()?)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Arc::new(bytes)))
    }

    /// A new random key.
    pub fn generate() -> Self {
        use aes_gcm::aead::{Generate, Key};
        let random = Key::<aes_gcm::Aes256Gcm>::generate();
        Self::from_bytes(random.as_slice()).expect("an AES-256 key is 32 bytes")
    }

    /// The key as 64 hexadecimal digits, as a key file holds it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_slice())
    }

    /// A key for one `purpose` only (HMAC-SHA256 of the purpose's name under the master key),
    /// so that no two uses of the master key share a key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_slice())
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_64_hex_digits() {
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_some());
        assert!(MasterKey::from_hex(&"ab".repeat(31)).is_none());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn purposes_get_different_keys() {
        let key = MasterKey::from_hex(&"01".repeat(32)).unwrap();
        assert_ne!(key.derive("a"), key.derive("b"));
        assert_eq!(key.derive("a"), key.derive("a"));
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
    }
}
