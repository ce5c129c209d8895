//! Deploying npm artifacts on anvil from an unlocked account, linking their libraries on the way.

use crate::chain::{self, Rpc};
use crate::contracts::artifacts::NpmArtifact;
use alloy::{
    primitives::{Address, Bytes},
    sol_types::{SolCall, SolConstructor},
};
use eyre::WrapErr;
use std::{collections::BTreeMap, path::PathBuf};

/// Deploys contracts from one npm package tree, remembering the libraries it deployed so each is
/// deployed once and linked everywhere it is used.
pub struct Deployer {
    /// The node.
    pub rpc: Rpc,
    /// The unlocked account that deploys and administers.
    pub from: Address,
    node_modules: PathBuf,
    libraries: BTreeMap<String, Address>,
    /// Contracts deployed so far, by name, for the summary.
    pub deployed: Vec<(String, Address)>,
}

impl Deployer {
    /// A deployer over the project's `anvil/node_modules`.
    pub fn new(rpc: Rpc, from: Address, node_modules: PathBuf) -> Self {
        Self {
            rpc,
            from,
            node_modules,
            libraries: BTreeMap::new(),
            deployed: Vec::new(),
        }
    }

    /// Loads `<package>/<path>`.
    pub fn artifact(&self, package_path: &str) -> eyre::Result<NpmArtifact> {
        Ok(NpmArtifact::load(&self.node_modules.join(package_path))?)
    }

    /// Deploys the artifact at `package_path` (under node_modules) with ABI-encoded constructor
    /// arguments, deploying any library it links first. `name` is for errors and the summary.
    pub async fn deploy(
        &mut self,
        name: &str,
        package_path: &str,
        args: Vec<u8>,
    ) -> eyre::Result<Address> {
        let artifact = self.artifact(package_path)?;
        let artifacts_root = artifacts_root(package_path);
        for library in artifact.libraries() {
            Box::pin(self.ensure_library(&artifacts_root, &library)).await?;
        }
        let mut code: Vec<u8> = artifact.link(&self.libraries)?.into();
        code.extend_from_slice(&args);
        let address = chain::deploy_unlocked(&self.rpc, self.from, Bytes::from(code), name).await?;
        self.deployed.push((name.to_owned(), address));
        Ok(address)
    }

    /// Deploys creation code compiled here (foundry-compilers), linking the libraries known so far
    /// ([`Self::add_library`]), with ABI-encoded constructor arguments.
    pub async fn deploy_linked(
        &mut self,
        name: &str,
        artifact: &NpmArtifact,
        args: Vec<u8>,
    ) -> eyre::Result<Address> {
        let mut code: Vec<u8> = artifact.link(&self.libraries)?.into();
        code.extend_from_slice(&args);
        let address = chain::deploy_unlocked(&self.rpc, self.from, Bytes::from(code), name).await?;
        self.deployed.push((name.to_owned(), address));
        Ok(address)
    }

    /// Records library `key` (`"<source path>:<Name>"`) at `address`, deployed elsewhere, for linking.
    pub fn add_library(&mut self, key: String, name: &str, address: Address) {
        self.libraries.insert(key, address);
        self.deployed.push((name.to_owned(), address));
    }

    /// The libraries known so far, for linking creation code by hand.
    pub fn libraries(&self) -> &BTreeMap<String, Address> {
        &self.libraries
    }

    /// Deploys with constructor arguments from a `sol!` constructor type.
    pub async fn deploy_with<C: SolConstructor>(
        &mut self,
        name: &str,
        package_path: &str,
        constructor: C,
    ) -> eyre::Result<Address> {
        self.deploy(name, package_path, constructor.abi_encode())
            .await
    }

    /// Sends a call from the deploying account.
    pub async fn send<C: SolCall>(&self, to: Address, call: C, context: &str) -> eyre::Result<()> {
        chain::send_call(&self.rpc, self.from, to, call, context)
            .await
            .wrap_err_with(|| context.to_owned())?;
        Ok(())
    }

    async fn ensure_library(&mut self, artifacts_root: &str, library: &str) -> eyre::Result<()> {
        if self.libraries.contains_key(library) {
            return Ok(());
        }
        let (source, name) = library
            .rsplit_once(':')
            .ok_or_else(|| eyre::eyre!("malformed library reference {library}"))?;
        let path = format!("{artifacts_root}/{source}/{name}.json");
        let address = self.deploy(name, &path, Vec::new()).await?;
        self.libraries.insert(library.to_owned(), address);
        Ok(())
    }
}

/// `@aave/core-v3/artifacts/contracts/x/Y.sol/Y.json` → `@aave/core-v3/artifacts`: Hardhat lays out
/// artifacts by source path under this root, which is where a linked library's artifact is found.
fn artifacts_root(package_path: &str) -> String {
    match package_path.find("/artifacts/") {
        Some(i) => package_path[..i + "/artifacts".len()].to_owned(),
        None => package_path
            .rsplit_once('/')
            .map(|(d, _)| d.to_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn artifacts_root_is_the_hardhat_artifacts_dir() {
        assert_eq!(
            super::artifacts_root(
                "@aave/core-v3/artifacts/contracts/protocol/pool/Pool.sol/Pool.json"
            ),
            "@aave/core-v3/artifacts"
        );
    }
}
