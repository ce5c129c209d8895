//! The signing key: a private key from the environment (`CASCADE_PRIVATE_KEY`, or the variable an
//! `env:NAME` reference in `[signer]` names), or an encrypted JSON keystore whose password comes from
//! `CASCADE_KEYSTORE_PASSWORD` or a prompt. A key or password never appears in an error, a log line or
//! a `Debug` output; errors say what was wrong with it (length, characters) and what to do.

use alloy::signers::local::PrivateKeySigner;
use std::path::{Path, PathBuf};

/// The default environment variable for the key.
pub const KEY_VAR: &str = "CASCADE_PRIVATE_KEY";
/// The environment variable for a keystore's password.
pub const PASSWORD_VAR: &str = "CASCADE_KEYSTORE_PASSWORD";

pub use crate::config::SignerConfig;

/// Why no signer could be made. None of these carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// No key configured and the default variable is unset.
    #[error(
        "no signing key: set {KEY_VAR} (a 0x-prefixed 32-byte hex key), or configure [signer] private_key = \"env:NAME\" or [signer] keystore = \"path\""
    )]
    Missing,
    /// The variable a reference names is unset.
    #[error("[signer] private_key refers to {0}, which is not set")]
    UnsetVar(String),
    /// A literal key in the config file.
    #[error(
        "[signer] private_key must be an env:NAME reference: keys do not belong in config files"
    )]
    LiteralKey,
    /// The key does not parse.
    #[error(
        "the private key in {var} does not parse: {what}. Expected 64 hex digits, with or without 0x"
    )]
    BadKey {
        /// The variable it came from.
        var: String,
        /// What is wrong (length or characters), never the key.
        what: String,
    },
    /// The keystore could not be read or decrypted.
    #[error("keystore {path}: {what}")]
    Keystore {
        /// The file.
        path: PathBuf,
        /// What went wrong (wrong password, not a keystore, unreadable).
        what: String,
    },
}

/// Parses a hex private key from `var`'s value, saying what is wrong without repeating it.
pub fn parse_key(value: &str, var: &str) -> Result<PrivateKeySigner, SignerError> {
    let hex = value.trim().trim_start_matches("0x");
    let what = if hex.len() != 64 {
        Some(format!("it has {} hex characters", hex.len()))
    } else if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some("it contains characters that are not hex digits".to_owned())
    } else {
        None
    };
    if let Some(what) = what {
        return Err(SignerError::BadKey {
            var: var.to_owned(),
            what,
        });
    }
    hex.parse::<PrivateKeySigner>()
        .map_err(|_| SignerError::BadKey {
            var: var.to_owned(),
            what: "it is not a valid secp256k1 secret (zero or above the curve order)".to_owned(),
        })
}

/// Decrypts a keystore with `password`.
pub fn from_keystore(path: &Path, password: &str) -> Result<PrivateKeySigner, SignerError> {
    PrivateKeySigner::decrypt_keystore(path, password).map_err(|e| SignerError::Keystore {
        path: path.to_owned(),
        what: match e {
            alloy::signers::local::LocalSignerError::EthKeystoreError(inner) => {
                match inner.to_string().as_str() {
                    m if m.to_lowercase().contains("mac") => {
                        "wrong password (the MAC does not match)".to_owned()
                    }
                    m => format!("not a readable keystore ({m})"),
                }
            }
            other => format!("not a readable keystore ({other})"),
        },
    })
}

/// The signer the config asks for.
pub fn load(config: Option<&SignerConfig>) -> Result<PrivateKeySigner, SignerError> {
    if let Some(path) = config.and_then(|c| c.keystore.as_ref()) {
        let password = match std::env::var(PASSWORD_VAR) {
            Ok(p) => p,
            Err(_) => {
                rpassword::prompt_password(format!("password for keystore {}: ", path.display()))
                    .map_err(|e| SignerError::Keystore {
                        path: path.clone(),
                        what: format!("cannot prompt for the password ({e}); set {PASSWORD_VAR}"),
                    })?
            }
        };
        return from_keystore(path, &password);
    }
    let var = match config.and_then(|c| c.private_key.as_deref()) {
        Some(reference) => reference
            .strip_prefix("env:")
            .ok_or(SignerError::LiteralKey)?
            .to_owned(),
        None => KEY_VAR.to_owned(),
    };
    let value = std::env::var(&var).map_err(|_| {
        if var == KEY_VAR {
            SignerError::Missing
        } else {
            SignerError::UnsetVar(var.clone())
        }
    })?;
    parse_key(&value, &var)
}

#[cfg(test)]
mod tests {
    use super::*;

    // anvil's well-known first dev key: public test material.
    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn parses_with_and_without_prefix() {
        let a = parse_key(KEY, "K").unwrap();
        let b = parse_key(KEY.trim_start_matches("0x"), "K").unwrap();
        assert_eq!(a.address(), b.address());
        assert_eq!(
            a.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }

    #[test]
    fn bad_keys_are_described_never_echoed() {
        for (bad, expect) in [
            (&KEY[..40], "hex characters"),
            (&KEY.replace('a', "z")[..], "not hex digits"),
            (
                "0x0000000000000000000000000000000000000000000000000000000000000000",
                "secp256k1",
            ),
        ] {
            let err = parse_key(bad, "CASCADE_PRIVATE_KEY").unwrap_err();
            let msg = format!("{err} {err:?}");
            assert!(msg.contains(expect), "{msg}");
            assert!(
                !msg.contains(bad.trim_start_matches("0x")),
                "the key leaked: {msg}"
            );
        }
    }

    #[test]
    fn literal_keys_in_config_are_refused_and_debug_redacts() {
        let cfg = SignerConfig {
            private_key: Some(KEY.to_owned()),
            keystore: None,
        };
        assert!(matches!(load(Some(&cfg)), Err(SignerError::LiteralKey)));
        assert!(!format!("{cfg:?}").contains(&KEY[2..]));
        let cfg = SignerConfig {
            private_key: Some("env:CASCADE_TEST_KEY_UNSET".into()),
            keystore: None,
        };
        assert!(
            load(Some(&cfg))
                .unwrap_err()
                .to_string()
                .contains("CASCADE_TEST_KEY_UNSET")
        );
    }

    #[test]
    fn keystore_round_trip_and_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand08::thread_rng();
        let (signer, name) =
            PrivateKeySigner::new_keystore(dir.path(), &mut rng, "correct horse", None).unwrap();
        let path = dir.path().join(name);
        assert_eq!(
            from_keystore(&path, "correct horse").unwrap().address(),
            signer.address()
        );
        let err = from_keystore(&path, "wrong").unwrap_err().to_string();
        assert!(
            err.contains("wrong password") && !err.contains("correct horse"),
            "{err}"
        );
    }
}
