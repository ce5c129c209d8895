//! The project's own Solidity (`contracts/`), compiled by foundry-compilers with the pinned npm solc.
//!
//! Compilation is cached under `target/cascade-contracts/`: a second call with unchanged sources reads
//! the artifacts instead of running solc.

use crate::toolchain;
use alloy::{json_abi::JsonAbi, primitives::Bytes};
use foundry_compilers::{
    Artifact, Project, ProjectPathsConfig,
    artifacts::{EvmVersion, Settings},
    compilers::multi::{MultiCompiler, MultiCompilerSettings},
    solc::{Solc, SolcCompiler, SolcSettings},
};
use std::{collections::BTreeMap, path::Path};

/// A compiled contract, ready to deploy.
#[derive(Debug, Clone)]
pub struct CompiledContract {
    /// Its ABI.
    pub abi: JsonAbi,
    /// Creation bytecode (constructor arguments are appended to it).
    pub bytecode: Bytes,
    /// Runtime bytecode.
    pub deployed_bytecode: Bytes,
}

/// Errors compiling `contracts/`.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// solc is not installed.
    #[error(transparent)]
    Toolchain(#[from] toolchain::ToolNotFound),
    /// foundry-compilers failed (solc did not run, paths, cache).
    #[error("compiling {dir}: {source}")]
    Compiler {
        /// The sources directory.
        dir: String,
        /// The underlying error.
        #[source]
        source: Box<foundry_compilers::error::SolcError>,
    },
    /// solc reported errors in our sources.
    #[error("solc reported errors in {dir}:\n{errors}")]
    Solidity {
        /// The sources directory.
        dir: String,
        /// The formatted diagnostics.
        errors: String,
    },
    /// A contract the caller asked for is not among the artifacts.
    #[error("contract {0} not found in the compiled contracts/")]
    Missing(String),
}

/// All contracts in `contracts/`, by name.
#[derive(Debug, Clone, Default)]
pub struct Contracts {
    by_name: BTreeMap<String, CompiledContract>,
    /// True when nothing changed since the last compilation and solc did not run.
    pub from_cache: bool,
}

impl Contracts {
    /// Compiles (or reads from the cache) the project's `contracts/` directory.
    pub fn compile() -> Result<Self, CompileError> {
        let root = toolchain::project_root();
        Self::compile_dir(
            &root.join("contracts"),
            &root.join("target").join("cascade-contracts"),
        )
    }

    /// Compiles the sources in `sources` with artifacts and the cache under `build_dir`.
    pub fn compile_dir(sources: &Path, build_dir: &Path) -> Result<Self, CompileError> {
        let dir = sources.display().to_string();
        let solc = Solc::new(toolchain::solc()?).map_err(|source| CompileError::Compiler {
            dir: dir.clone(),
            source: Box::new(source),
        })?;
        let paths = ProjectPathsConfig::builder()
            .root(sources)
            .sources(sources)
            .artifacts(build_dir.join("out"))
            .cache(build_dir.join("cache").join("solidity-files-cache.json"))
            .build_infos(build_dir.join("out").join("build-info"))
            .build()
            .map_err(|source| CompileError::Compiler {
                dir: dir.clone(),
                source: Box::new(foundry_compilers::error::SolcError::Io(source)),
            })?;
        // Shanghai keeps PUSH0 out of nothing we need and runs on every anvil hardfork from the default up.
        let settings = Settings {
            evm_version: Some(EvmVersion::Cancun),
            optimizer: foundry_compilers::artifacts::Optimizer {
                enabled: Some(true),
                runs: Some(200),
                details: None,
            },
            ..Default::default()
        };
        let project = Project::builder()
            .paths(paths)
            .settings(MultiCompilerSettings {
                solc: SolcSettings {
                    settings,
                    ..Default::default()
                },
                ..Default::default()
            })
            .build(MultiCompiler {
                solc: Some(SolcCompiler::Specific(solc)),
                vyper: None,
            })
            .map_err(|source| CompileError::Compiler {
                dir: dir.clone(),
                source: Box::new(source),
            })?;
        let output = project.compile().map_err(|source| CompileError::Compiler {
            dir: dir.clone(),
            source: Box::new(source),
        })?;
        if output.has_compiler_errors() {
            return Err(CompileError::Solidity {
                dir,
                errors: output.to_string(),
            });
        }
        let from_cache = output.is_unchanged();
        let mut by_name = BTreeMap::new();
        for (id, artifact) in output.into_artifacts() {
            let (Some(abi), Some(bytecode), Some(deployed)) = (
                artifact.abi.clone(),
                artifact.get_bytecode_bytes(),
                artifact.get_deployed_bytecode_bytes(),
            ) else {
                continue;
            };
            by_name.insert(
                id.name.clone(),
                CompiledContract {
                    abi,
                    bytecode: bytecode.into_owned(),
                    deployed_bytecode: deployed.into_owned(),
                },
            );
        }
        Ok(Self {
            by_name,
            from_cache,
        })
    }

    /// The contract named `name`.
    pub fn get(&self, name: &str) -> Result<&CompiledContract, CompileError> {
        self.by_name
            .get(name)
            .ok_or_else(|| CompileError::Missing(name.to_owned()))
    }

    /// The names of all compiled contracts.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
