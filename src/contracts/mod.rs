//! Solidity compiled by foundry-compilers with the pinned npm solc: the project's own (`contracts/`)
//! and protocol sources installed from npm (Aave V3.6 for the devnet).
//!
//! Compilation is cached under `target/cascade-contracts/`: a second call with unchanged sources reads
//! the artifacts instead of running solc. A lock file serialises compilations of one tree across
//! processes (test binaries start side by side), so it is compiled once and the others read it.

pub mod artifacts;

use crate::toolchain;
use alloy::{json_abi::JsonAbi, primitives::Bytes};
use artifacts::NpmArtifact;
use foundry_compilers::{
    Artifact, Project, ProjectPathsConfig,
    artifacts::{BytecodeObject, EvmVersion, Remapping, Settings},
    compilers::multi::{MultiCompiler, MultiCompilerSettings},
    solc::{Solc, SolcCompiler, SolcSettings},
};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// A compiled contract, ready to deploy.
#[derive(Debug, Clone)]
pub struct CompiledContract {
    /// Its ABI.
    pub abi: JsonAbi,
    /// Creation bytecode (constructor arguments are appended to it); empty when it calls libraries
    /// that must be linked first ([`Self::creation`]).
    pub bytecode: Bytes,
    /// Runtime bytecode (empty when unlinked).
    pub deployed_bytecode: Bytes,
    /// The creation bytecode with its library call sites, to link.
    pub creation: NpmArtifact,
}

/// Errors compiling Solidity.
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
    /// solc reported errors in the sources.
    #[error("solc reported errors in {dir}:\n{errors}")]
    Solidity {
        /// The sources directory.
        dir: String,
        /// The formatted diagnostics.
        errors: String,
    },
    /// The sources are not installed (an npm package missing).
    #[error("{0} not found: install the pinned packages with `make toolchain`")]
    NotInstalled(String),
    /// A contract the caller asked for is not among the artifacts.
    #[error("contract {0} not found among the compiled contracts")]
    Missing(String),
}

/// What to compile and how.
#[derive(Debug, Clone)]
pub struct SolProject {
    /// The project root: source unit names (and library placeholders) are relative to it.
    pub root: PathBuf,
    /// The sources directory under it.
    pub sources: PathBuf,
    /// Compile only these files and what they import (all of `sources` when empty).
    pub targets: Vec<PathBuf>,
    /// `prefix=path` import remappings.
    pub remappings: Vec<(String, PathBuf)>,
    /// Artifacts and cache.
    pub build_dir: PathBuf,
    /// The EVM version compiled for.
    pub evm_version: EvmVersion,
}

/// Compiled contracts, by name.
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

    /// Compiles the sources in `sources` with artifacts and the cache under `build_dir`, for Cancun
    /// (the Liquidator keeps its per-call bookkeeping in transient storage).
    pub fn compile_dir(sources: &Path, build_dir: &Path) -> Result<Self, CompileError> {
        Self::compile_project(&SolProject {
            root: sources.to_path_buf(),
            sources: sources.to_path_buf(),
            targets: Vec::new(),
            remappings: Vec::new(),
            build_dir: build_dir.to_path_buf(),
            evm_version: EvmVersion::Cancun,
        })
    }

    /// Compiles `project` with optimizer 200 runs and no via-IR, holding its build directory's lock.
    pub fn compile_project(project: &SolProject) -> Result<Self, CompileError> {
        let dir = project.sources.display().to_string();
        let compiler_error = |source| CompileError::Compiler {
            dir: dir.clone(),
            source: Box::new(source),
        };
        let io_error = |e: std::io::Error| {
            compiler_error(foundry_compilers::error::SolcError::Io(
                foundry_compilers::error::SolcIoError::new(e, &project.build_dir),
            ))
        };
        if !project.sources.is_dir() {
            return Err(CompileError::NotInstalled(dir));
        }
        let solc = Solc::new(toolchain::solc()?).map_err(compiler_error)?;
        std::fs::create_dir_all(&project.build_dir).map_err(io_error)?;
        let lock = std::fs::File::create(project.build_dir.join(".lock")).map_err(io_error)?;
        lock.lock().map_err(io_error)?;

        let mut paths = ProjectPathsConfig::builder()
            .root(&project.root)
            .sources(&project.sources)
            .artifacts(project.build_dir.join("out"))
            .cache(
                project
                    .build_dir
                    .join("cache")
                    .join("solidity-files-cache.json"),
            )
            .build_infos(project.build_dir.join("out").join("build-info"))
            .remappings(project.remappings.iter().map(|(name, path)| Remapping {
                context: None,
                name: name.clone(),
                path: format!("{}/", path.display()),
            }));
        for (_, path) in &project.remappings {
            paths = paths.allowed_path(path).include_path(path);
        }
        let paths = paths
            .build()
            .map_err(|source| compiler_error(foundry_compilers::error::SolcError::Io(source)))?;
        let settings = Settings {
            evm_version: Some(project.evm_version),
            optimizer: foundry_compilers::artifacts::Optimizer {
                enabled: Some(true),
                runs: Some(200),
                details: None,
            },
            ..Default::default()
        };
        let built = Project::builder()
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
            .map_err(compiler_error)?;
        let output = if project.targets.is_empty() {
            built.compile()
        } else {
            built.compile_files(project.targets.iter().map(|t| project.sources.join(t)))
        }
        .map_err(compiler_error)?;
        if output.has_compiler_errors() {
            return Err(CompileError::Solidity {
                dir,
                errors: output.to_string(),
            });
        }
        let from_cache = output.is_unchanged();
        let mut by_name = BTreeMap::new();
        for (id, artifact) in output.into_artifacts() {
            let (Some(abi), Some(bytecode)) = (artifact.abi.clone(), artifact.bytecode.clone())
            else {
                continue;
            };
            let hex = match &bytecode.object {
                BytecodeObject::Bytecode(bytes) => alloy::hex::encode(bytes),
                BytecodeObject::Unlinked(hex) => hex.trim_start_matches("0x").to_owned(),
            };
            if hex.is_empty() {
                continue;
            }
            let creation = NpmArtifact {
                contract_name: id.name.clone(),
                // As solc names the source unit (and library placeholders): relative to the root.
                source_name: id
                    .source
                    .strip_prefix(&project.root)
                    .unwrap_or(&id.source)
                    .display()
                    .to_string(),
                bytecode: hex,
                link_references: bytecode
                    .link_references
                    .iter()
                    .map(|(file, libs)| {
                        let libs = libs
                            .iter()
                            .map(|(name, offsets)| {
                                let offsets = offsets
                                    .iter()
                                    .map(|o| artifacts::LinkOffset {
                                        start: o.start as usize,
                                        length: o.length as usize,
                                    })
                                    .collect();
                                (name.clone(), offsets)
                            })
                            .collect();
                        (file.clone(), libs)
                    })
                    .collect(),
            };
            by_name.insert(
                id.name.clone(),
                CompiledContract {
                    abi,
                    bytecode: artifact
                        .get_bytecode_bytes()
                        .map(|b| b.into_owned())
                        .unwrap_or_default(),
                    deployed_bytecode: artifact
                        .get_deployed_bytecode_bytes()
                        .map(|b| b.into_owned())
                        .unwrap_or_default(),
                    creation,
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
