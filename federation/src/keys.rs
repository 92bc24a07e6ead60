//! The server's ed25519 signing key: generated once, stored as PKCS#8 DER
//! (base64) in a file readable only by the server's user.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use ruma::signatures::{Ed25519KeyPair, KeyPair, Signature};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write signing key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key file {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// The key this server signs events and requests with.
pub struct ServerSigningKey {
    pair: Ed25519KeyPair,
    public_base64: String,
}

impl ServerSigningKey {
    /// Loads the key at `path`, generating and storing a fresh one (mode
    /// 0600) when the file does not exist yet.
    ///
    /// File format: one line `ed25519 <version> <base64 pkcs8 der>`, the
    /// same shape Synapse uses, so keys can be moved between servers.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|reason| KeyError::Malformed {
                path: path.to_owned(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let version = random_key_version();
                let der = Ed25519KeyPair::generate();
                let line = format!("ed25519 {version} {}\n", encode_b64(&der));
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, line.as_bytes()).map_err(io)?;
                Self::parse(&line).map_err(|reason| KeyError::Malformed {
                    path: path.to_owned(),
                    reason,
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err("expected `ed25519 <version> <base64>`".into());
        };
        let der = decode_b64(b64).ok_or("key is not valid base64")?;
        let pair = Ed25519KeyPair::from_der(&der, version.to_owned()).map_err(|e| e.to_string())?;
        let public_base64 = encode_b64(&pair.public_key());
        Ok(Self {
            pair,
            public_base64,
        })
    }

    /// The key id, `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// The public key, unpadded standard base64, as published in `/_matrix/key/v2/server`.
    pub fn public_key_base64(&self) -> &str {
        &self.public_base64
    }

    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        self.pair.sign(message)
    }
}

impl std::fmt::Debug for ServerSigningKey {
    // Never print the private half.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSigningKey")
            .field("key_id", &self.key_id())
            .finish()
    }
}

fn random_key_version() -> String {
    let id = ruma::TransactionId::new();
    id.as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn encode_b64(bytes: &[u8]) -> String {
    ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(bytes.to_vec()).encode()
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(text)
        .ok()
        .map(|b| b.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("corvid-key-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("signing.key");
        let first = ServerSigningKey::load_or_generate(&path).unwrap();
        let second = ServerSigningKey::load_or_generate(&path).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.public_key_base64(), second.public_key_base64());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_key_file_is_an_error_not_a_new_key() {
        let dir = std::env::temp_dir().join(format!("corvid-badkey-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signing.key");
        fs::write(&path, "rsa 1 abc").unwrap();
        assert!(matches!(
            ServerSigningKey::load_or_generate(&path),
            Err(KeyError::Malformed { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
