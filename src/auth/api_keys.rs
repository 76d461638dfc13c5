//! API keys: stored only as `sha256:<hex>` hashes, loaded from `[server.auth]`, from
//! `api_keys_file` and from the files of `api_keys_dir` (a mounted Secret), and matched in
//! constant time.
//!
//! Keys are meant to be long random strings (`mcpgate hash-key --generate` makes one), so an
//! unsalted SHA-256 is enough to keep a leaked configuration from revealing them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Principal;
use crate::config::auth::{ApiKeyEntry, ApiKeysDocument, AuthConfig};

/// The prefix of a stored hash.
const HASH_PREFIX: &str = "sha256:";

/// Why the configured API keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeysError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid API key file")]
    ParseToml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path} is not a valid API key file")]
    ParseJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("API key entry in {path}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: crate::config::ConfigError,
    },
    #[error("API key hash {hash} is configured twice (second time for principal {principal:?})")]
    Duplicate { hash: String, principal: String },
    #[error("the API key hash of principal {principal:?} is not sha256:<64 hex digits>")]
    BadHash { principal: String },
}

/// The hash mcpgate stores for `key`: `sha256:<64 lowercase hex digits>`.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("{HASH_PREFIX}{}", hex::encode(digest))
}

/// A new random key: `mcpgate_` and 256 random bits in base64url.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("mcpgate_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// One known key.
struct Known {
    digest: [u8; 32],
    principal: Principal,
}

/// Every configured key.
pub struct ApiKeys {
    known: Vec<Known>,
}

impl ApiKeys {
    /// Loads the inline entries and the files the configuration names.
    pub fn load(config: &AuthConfig) -> Result<Self, ApiKeysError> {
        let mut entries = config.api_keys.clone();
        if let Some(path) = &config.api_keys_file {
            entries.extend(read_file(path)?);
        }
        if let Some(dir) = &config.api_keys_dir {
            for path in key_files(dir)? {
                entries.extend(read_file(&path)?);
            }
        }
        Self::from_entries(entries)
    }

    fn from_entries(entries: Vec<ApiKeyEntry>) -> Result<Self, ApiKeysError> {
        let mut seen = HashSet::new();
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries {
            let digest = parse_hash(&entry.hash).ok_or_else(|| ApiKeysError::BadHash {
                principal: entry.principal.clone(),
            })?;
            if !seen.insert(digest) {
                return Err(ApiKeysError::Duplicate {
                    hash: entry.hash,
                    principal: entry.principal,
                });
            }
            known.push(Known {
                digest,
                principal: Principal::new(entry.principal, entry.team),
            });
        }
        Ok(Self { known })
    }

    /// How many keys are known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The principal `key` belongs to. Every stored hash is compared, in constant time, so the
    /// time taken says nothing about which (or whether one) matched.
    pub fn find(&self, key: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for known in &self.known {
            if bool::from(known.digest.ct_eq(&digest)) {
                found = Some(&known.principal);
            }
        }
        found.cloned()
    }
}

/// The digest in a `sha256:<64 hex digits>` hash.
fn parse_hash(hash: &str) -> Option<[u8; 32]> {
    let hex = hash.strip_prefix(HASH_PREFIX)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(digest)
}

/// The regular files of a key directory, by name, skipping hidden ones (a mounted Secret's
/// `..data` and its timestamped directories).
fn key_files(dir: &Path) -> Result<Vec<PathBuf>, ApiKeysError> {
    let read_error = |source| ApiKeysError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The validated entries of one file: JSON when its name ends in `.json`, TOML otherwise.
fn read_file(path: &Path) -> Result<Vec<ApiKeyEntry>, ApiKeysError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApiKeysError::Read {
        path: path.to_owned(),
        source,
    })?;
    let document: ApiKeysDocument = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|source| ApiKeysError::ParseJson {
            path: path.to_owned(),
            source,
        })?
    } else {
        toml::from_str(&text).map_err(|source| ApiKeysError::ParseToml {
            path: path.to_owned(),
            source,
        })?
    };
    for (index, entry) in document.api_keys.iter().enumerate() {
        entry
            .validate(&format!("api_keys[{index}]"))
            .map_err(|source| ApiKeysError::Invalid {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(document.api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, principal: &str, team: Option<&str>) -> ApiKeyEntry {
        ApiKeyEntry {
            hash: hash_key(key),
            principal: principal.into(),
            team: team.map(str::to_owned),
        }
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key("hello"),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn finds_the_owner_of_a_key_and_nobody_else() {
        let keys = ApiKeys::from_entries(vec![
            entry("key-a", "alice", Some("red")),
            entry("key-b", "bob", None),
        ])
        .unwrap();
        assert_eq!(
            keys.find("key-a"),
            Some(Principal::new("alice", Some("red".into())))
        );
        assert_eq!(keys.find("key-b"), Some(Principal::new("bob", None)));
        assert_eq!(keys.find("key-c"), None);
        assert_eq!(keys.find(""), None);
    }

    #[test]
    fn duplicate_hashes_are_refused() {
        let error = ApiKeys::from_entries(vec![entry("k", "a", None), entry("k", "b", None)])
            .err()
            .expect("a duplicate must be refused");
        assert!(error.to_string().contains("\"b\""), "{error}");
    }

    #[test]
    fn loads_files_and_secret_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.json");
        let json =
            serde_json::json!({"api_keys": [{"hash": hash_key("from-file"), "principal": "f"}]});
        std::fs::write(&file, json.to_string()).unwrap();
        let secret = dir.path().join("secret");
        std::fs::create_dir_all(secret.join("..data")).unwrap();
        let toml = format!(
            "[[api_keys]]\nhash = \"{}\"\nprincipal = \"d\"\nteam = \"t\"\n",
            hash_key("from-dir")
        );
        std::fs::write(secret.join("team-t"), toml).unwrap();
        std::fs::write(secret.join(".hidden"), "not toml at all [").unwrap();
        let config = AuthConfig {
            api_keys_file: Some(file),
            api_keys_dir: Some(secret),
            ..AuthConfig::default()
        };
        let keys = ApiKeys::load(&config).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.find("from-file").unwrap().id(), "f");
        assert_eq!(keys.find("from-dir").unwrap().team(), Some("t"));
    }

    #[test]
    fn a_bad_entry_in_a_file_names_the_file_and_entry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.toml");
        std::fs::write(&file, "[[api_keys]]\nhash = \"nope\"\nprincipal = \"x\"\n").unwrap();
        let config = AuthConfig {
            api_keys_file: Some(file),
            ..AuthConfig::default()
        };
        let error = ApiKeys::load(&config).err().expect("must fail");
        let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
        assert!(
            chain.contains("keys.toml") && chain.contains("api_keys[0].hash"),
            "{chain}"
        );
    }
}
