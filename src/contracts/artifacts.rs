//! Creation bytecode with library call sites: the artifacts shipped in the protocols' npm packages
//! (Hardhat's format: `abi`, `bytecode`, `linkReferences`) and what foundry-compilers leaves unlinked
//! when it compiles a package's sources, and library linking.
//!
//! A Hardhat artifact's `bytecode` holds a 40-hex-digit placeholder for every library call site:
//! `__$` + the first 34 hex digits of `keccak256("<source path>:<Library>")` + `$__`. `linkReferences`
//! gives each site's byte offset; linking writes the library's address there. (`deployedLinkReferences`
//! has other offsets, for the runtime code, and is not used for deployment.)

use alloy::primitives::{Address, Bytes, keccak256};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// One call site of a library in the bytecode.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct LinkOffset {
    /// Byte offset into the bytecode.
    pub start: usize,
    /// Always 20 (an address).
    pub length: usize,
}

/// A contract artifact from an npm package.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NpmArtifact {
    /// The contract's name.
    #[serde(default)]
    pub contract_name: String,
    /// The source file it came from, as the package compiled it.
    #[serde(default)]
    pub source_name: String,
    /// Creation bytecode, hex, possibly with link placeholders.
    pub bytecode: String,
    /// Library call sites: source path → library name → offsets.
    #[serde(default)]
    pub link_references: BTreeMap<String, BTreeMap<String, Vec<LinkOffset>>>,
}

/// Errors loading or linking an artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file could not be read (usually: the npm packages are not installed).
    #[error("reading artifact {path}: {source}. Install the devnet packages with `make toolchain`")]
    Read {
        /// The artifact's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a Hardhat or Waffle artifact.
    #[error("artifact {path} does not parse: {source}")]
    Parse {
        /// The artifact's path.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A library the bytecode calls was not given.
    #[error("{contract}: library {library} is not linked")]
    MissingLibrary {
        /// The contract being linked.
        contract: String,
        /// `source:Name` of the library.
        library: String,
    },
    /// A link reference does not point at the library's placeholder.
    #[error("{contract}: offset {offset} does not hold the placeholder for {library}")]
    BadPlaceholder {
        /// The contract being linked.
        contract: String,
        /// `source:Name` of the library.
        library: String,
        /// The byte offset.
        offset: usize,
    },
    /// After linking, the bytecode is still not valid hex.
    #[error("{contract}: bytecode is not hex after linking: {reason}")]
    NotHex {
        /// The contract.
        contract: String,
        /// What the decoder said.
        reason: String,
    },
}

/// The placeholder solc writes for `library` (`"<source path>:<Name>"`).
pub fn placeholder(library: &str) -> String {
    let hash = keccak256(library.as_bytes());
    format!("__${}$__", &alloy::hex::encode(hash)[..34])
}

impl NpmArtifact {
    /// Reads an artifact file. Both Hardhat (`bytecode` is a string) and Waffle (`evm.bytecode.object`)
    /// layouts are accepted; the Uniswap V2 package ships the latter.
    pub fn load(path: &Path) -> Result<Self, ArtifactError> {
        let text = std::fs::read_to_string(path).map_err(|source| ArtifactError::Read {
            path: path.to_owned(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ArtifactError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let mut artifact: Self = if value.get("bytecode").is_some_and(|b| b.is_string()) {
            serde_json::from_value(value)
        } else {
            #[derive(Deserialize)]
            struct Waffle {
                evm: WaffleEvm,
            }
            #[derive(Deserialize)]
            struct WaffleEvm {
                bytecode: WaffleBytecode,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct WaffleBytecode {
                object: String,
                #[serde(default)]
                link_references: BTreeMap<String, BTreeMap<String, Vec<LinkOffset>>>,
            }
            serde_json::from_value::<Waffle>(value).map(|w| Self {
                contract_name: String::new(),
                source_name: String::new(),
                bytecode: w.evm.bytecode.object,
                link_references: w.evm.bytecode.link_references,
            })
        }
        .map_err(|source| ArtifactError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if artifact.contract_name.is_empty() {
            artifact.contract_name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(artifact)
    }

    /// The libraries this bytecode needs, as `"<source path>:<Name>"`.
    pub fn libraries(&self) -> Vec<String> {
        self.link_references
            .iter()
            .flat_map(|(source, libs)| libs.keys().map(move |name| format!("{source}:{name}")))
            .collect()
    }

    /// The creation bytecode with every library address written in. `libraries` maps
    /// `"<source path>:<Name>"` to the deployed library.
    pub fn link(&self, libraries: &BTreeMap<String, Address>) -> Result<Bytes, ArtifactError> {
        let mut hex = self.bytecode.trim_start_matches("0x").to_owned();
        for (source, libs) in &self.link_references {
            for (name, offsets) in libs {
                let library = format!("{source}:{name}");
                let address =
                    libraries
                        .get(&library)
                        .ok_or_else(|| ArtifactError::MissingLibrary {
                            contract: self.contract_name.clone(),
                            library: library.clone(),
                        })?;
                let expected = placeholder(&library);
                let replacement = alloy::hex::encode(address);
                for offset in offsets {
                    let at = offset.start * 2;
                    let site = hex.get(at..at + 40);
                    // Older solc wrote `__<path:Name padded with _>__`; accept any `__`-framed
                    // placeholder at a listed offset, but check the hashed form when it is one.
                    let ok = match site {
                        Some(s) if s.starts_with("__$") => s == expected,
                        Some(s) => s.starts_with("__") && s.ends_with("__"),
                        None => false,
                    };
                    if !ok || offset.length != 20 {
                        return Err(ArtifactError::BadPlaceholder {
                            contract: self.contract_name.clone(),
                            library,
                            offset: offset.start,
                        });
                    }
                    hex.replace_range(at..at + 40, &replacement);
                }
            }
        }
        alloy::hex::decode(&hex)
            .map(Bytes::from)
            .map_err(|e| ArtifactError::NotHex {
                contract: self.contract_name.clone(),
                reason: e.to_string(),
            })
    }

    /// The creation bytecode of a contract that needs no libraries.
    pub fn bytecode(&self) -> Result<Bytes, ArtifactError> {
        self.link(&BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &str = "contracts/protocol/libraries/logic/BorrowLogic.sol:BorrowLogic";

    fn artifact_with_two_sites() -> NpmArtifact {
        let ph = placeholder(LIB);
        // 3 bytes of code, a call site, 2 bytes, another call site, 1 byte.
        let bytecode = format!("0x600160{ph}6002{ph}00");
        let refs = serde_json::json!({
            "contracts/protocol/libraries/logic/BorrowLogic.sol": {
                "BorrowLogic": [{"start": 3, "length": 20}, {"start": 25, "length": 20}]
            }
        });
        NpmArtifact {
            contract_name: "Pool".into(),
            source_name: String::new(),
            bytecode,
            link_references: serde_json::from_value(refs).unwrap(),
        }
    }

    #[test]
    fn placeholder_matches_the_solc_form() {
        // keccak256("contracts/protocol/libraries/logic/BorrowLogic.sol:BorrowLogic"), first 34 hex digits.
        let ph = placeholder(LIB);
        assert_eq!(ph.len(), 40);
        assert!(ph.starts_with("__$") && ph.ends_with("$__"));
        assert_eq!(&ph[3..37], &alloy::hex::encode(keccak256(LIB))[..34]);
    }

    #[test]
    fn links_every_site() {
        let art = artifact_with_two_sites();
        assert_eq!(art.libraries(), vec![LIB.to_owned()]);
        let lib = Address::repeat_byte(0xab);
        let linked = art.link(&BTreeMap::from([(LIB.to_owned(), lib)])).unwrap();
        assert_eq!(linked.len(), 3 + 20 + 2 + 20 + 1);
        assert_eq!(&linked[3..23], lib.as_slice());
        assert_eq!(&linked[25..45], lib.as_slice());
        assert_eq!(&linked[..3], &[0x60, 0x01, 0x60]);
        assert_eq!(linked[45], 0x00);
    }

    #[test]
    fn refuses_missing_library_and_wrong_offsets() {
        let art = artifact_with_two_sites();
        assert!(matches!(
            art.link(&BTreeMap::new()),
            Err(ArtifactError::MissingLibrary { .. })
        ));

        let mut shifted = art.clone();
        shifted.link_references.values_mut().for_each(|libs| {
            libs.values_mut().for_each(|offs| offs[0].start = 4);
        });
        let libs = BTreeMap::from([(LIB.to_owned(), Address::ZERO)]);
        assert!(matches!(
            shifted.link(&libs),
            Err(ArtifactError::BadPlaceholder { offset: 4, .. })
        ));
    }

    #[test]
    fn unlinked_bytecode_is_not_hex() {
        assert!(matches!(
            artifact_with_two_sites().bytecode(),
            Err(ArtifactError::MissingLibrary { .. })
        ));
    }
}
