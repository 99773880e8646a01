//! The hash chain and the signing key.
//!
//! A record's `hash` is BLAKE3 over the record's bytes exactly as written without its
//! `,"hash":"…"` suffix: the line up to and including `"prev":"…"`, closed with `}`.
//! The writer always puts `prev` last and `hash` after it, so the canonical form is
//! the bytes themselves: any edited byte changes the hash, no re-serialization needed.
//! Checkpoint records carry an Ed25519 signature over the hash of the record before
//! them (the chain head), with the gateway's key from `state_dir`.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use std::path::{Path, PathBuf};

/// `,"hash":"` + 64 hex digits + `"}`.
const SUFFIX_LEN: usize = 9 + 64 + 2;

/// Split a line into the bytes its hash covers (as an owned, closed JSON object) and
/// the hash it claims. None: the line does not end like a Menshen record.
pub fn split_hash(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    if line.len() < SUFFIX_LEN + 2 {
        return None;
    }
    let (body, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    if !suffix.starts_with(b",\"hash\":\"") || !suffix.ends_with(b"\"}") {
        return None;
    }
    let hash = std::str::from_utf8(&suffix[9..9 + 64]).ok()?;
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut covered = Vec::with_capacity(body.len() + 1);
    covered.extend_from_slice(body);
    covered.push(b'}');
    Some((covered, hash))
}

/// BLAKE3 of the covered bytes, in lowercase hex.
pub fn hash_hex(covered: &[u8]) -> String {
    blake3::hash(covered).to_hex().to_string()
}

/// The gateway's log signing key (Ed25519), kept in `state_dir`.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("log signing key {path}: {reason}")]
    Key { path: String, reason: String },
}

impl SigningKey {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("log-signing.key")
    }

    /// Load the key, creating it (mode 0600) on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, KeyError> {
        let path = Self::path(state_dir);
        let fail = |reason: String| KeyError::Key { path: path.display().to_string(), reason };
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                    .map_err(|_| fail("cannot generate a key".into()))?;
                std::fs::create_dir_all(state_dir).map_err(|e| fail(e.to_string()))?;
                write_private(&path, doc.as_ref()).map_err(|e| fail(e.to_string()))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| fail(format!("not an Ed25519 key: {e}")))?;
        Ok(SigningKey { pair })
    }

    /// The public key, hex: what `menshen check` shows and auditors pass to verify.
    pub fn public_hex(&self) -> String {
        crate::admin::auth::hex(self.pair.public_key().as_ref())
    }

    pub fn sign_hex(&self, msg: &[u8]) -> String {
        crate::admin::auth::hex(self.pair.sign(msg).as_ref())
    }
}

/// The public key of an existing key file, if there is one (for `menshen check`).
pub fn existing_public_key(state_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(SigningKey::path(state_dir)).ok()?;
    let pair = Ed25519KeyPair::from_pkcs8(&bytes).ok()?;
    Some(crate::admin::auth::hex(pair.public_key().as_ref()))
}

/// Check a hex signature over `msg` with a hex public key.
pub fn verify_hex(public_hex: &str, msg: &[u8], sig_hex: &str) -> bool {
    let (Some(pk), Some(sig)) = (unhex(public_hex), unhex(sig_hex)) else { return false };
    UnparsedPublicKey::new(&ED25519, pk).verify(msg, &sig).is_ok()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_hash() {
        let covered = br#"{"seq":1,"event":"x","prev":"00"}"#;
        let h = hash_hex(covered);
        let line = format!("{{\"seq\":1,\"event\":\"x\",\"prev\":\"00\",\"hash\":\"{h}\"}}");
        let (c, claimed) = split_hash(line.as_bytes()).unwrap();
        assert_eq!(c, covered);
        assert_eq!(claimed, h);
        assert!(split_hash(b"{\"seq\":1}").is_none());
        assert!(split_hash(&line.as_bytes()[..line.len() - 1]).is_none());
    }

    #[test]
    fn keys_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::load_or_create(dir.path()).unwrap();
        let again = SigningKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k.public_hex(), again.public_hex(), "the key is kept");
        assert_eq!(existing_public_key(dir.path()), Some(k.public_hex()));
        let sig = k.sign_hex(b"head");
        assert!(verify_hex(&k.public_hex(), b"head", &sig));
        assert!(!verify_hex(&k.public_hex(), b"other", &sig));
        let other = SigningKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(!verify_hex(&other.public_hex(), b"head", &sig));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(SigningKey::path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
