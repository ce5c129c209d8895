//! Finding the external tools cascade drives: anvil (the devnet and dry-run node) and solc (for
//! foundry-compilers).
//!
//! Both come from the pinned npm packages in `anvil/` (`make toolchain` installs them); the
//! `CASCADE_ANVIL` / `CASCADE_SOLC` environment variables name another binary on purpose. Nothing is
//! taken from `PATH`: another version found there would run the tests and the devnet on a toolchain
//! nobody pinned. When the tool is missing, the error says how to install it.

use std::{
    env,
    path::{Path, PathBuf},
};

/// A tool cascade needs and could not find.
#[derive(Debug, thiserror::Error)]
#[error(
    "{tool} not found: looked in {looked}. Install the pinned toolchain with `make toolchain` \
     (or `npm ci --prefix {anvil_dir}`), or point {env_var} at a {tool} binary"
)]
pub struct ToolNotFound {
    /// The tool's name.
    pub tool: &'static str,
    /// The places searched, for the message.
    pub looked: String,
    /// The environment variable that overrides the lookup.
    pub env_var: &'static str,
    /// The project's `anvil/` directory.
    pub anvil_dir: String,
}

/// The project root: `CASCADE_HOME` when set, else the source tree this binary was built from when it
/// still exists, else the current directory. The pinned toolchain, `contracts/` and the compiler
/// cache are found relative to it.
pub fn project_root() -> PathBuf {
    if let Some(home) = env::var_os("CASCADE_HOME") {
        return PathBuf::from(home);
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built_from.join("anvil").join("package.json").is_file() {
        return built_from.to_path_buf();
    }
    env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// The directory holding the pinned npm toolchain and protocol packages.
pub fn node_modules() -> PathBuf {
    project_root().join("anvil").join("node_modules")
}

/// The anvil binary: the pinned `@foundry-rs/anvil-linux-amd64`, or `CASCADE_ANVIL`.
pub fn anvil() -> Result<PathBuf, ToolNotFound> {
    let pinned = node_modules().join("@foundry-rs/anvil-linux-amd64/bin/anvil");
    find("anvil", "CASCADE_ANVIL", &pinned)
}

/// The solc front script over the pinned npm `solc` (current 0.8.x), or `CASCADE_SOLC`.
pub fn solc() -> Result<PathBuf, ToolNotFound> {
    solc_for_package("solc")
}

/// The solc front for a pinned npm solc package (`solc`, or the `solc-0.8.19` alias used for Morpho Blue).
pub fn solc_for_package(package: &str) -> Result<PathBuf, ToolNotFound> {
    let front = project_root().join("anvil").join(package);
    // The front script is in git; it only works once the package it drives is installed.
    let pinned = if node_modules().join(package).join("soljson.js").is_file() {
        front
    } else {
        node_modules().join(package).join("soljson.js")
    };
    find("solc", "CASCADE_SOLC", &pinned)
}

fn find(tool: &'static str, env_var: &'static str, pinned: &Path) -> Result<PathBuf, ToolNotFound> {
    if is_executable(pinned) {
        return Ok(pinned.to_path_buf());
    }
    let from_env = env::var_os(env_var).map(PathBuf::from);
    if let Some(path) = &from_env
        && is_executable(path)
    {
        return Ok(path.clone());
    }
    let env_note = match &from_env {
        Some(path) => format!("{env_var}={} (not an executable file)", path.display()),
        None => format!("${env_var} (unset)"),
    };
    Err(ToolNotFound {
        tool,
        looked: format!("{}, {env_note}", pinned.display()),
        env_var,
        anvil_dir: project_root().join("anvil").display().to_string(),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_says_how_to_install_and_is_never_taken_from_path() {
        // `sh` is on PATH, and is still not taken for a missing pinned tool.
        let err = find("sh", "CASCADE_TEST_UNSET_VAR", Path::new("/nonexistent/sh")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("make toolchain"), "{msg}");
        assert!(msg.contains("/nonexistent/sh"), "{msg}");
        assert!(msg.contains("CASCADE_TEST_UNSET_VAR"), "{msg}");
    }
}
