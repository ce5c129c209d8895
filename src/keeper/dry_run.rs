//! Dry run: an anvil forking the configured chain receives every liquidation instead of the chain.
//!
//! The watcher reads the real chain; the planner and the executor talk only to the fork, which is
//! reset to the upstream head before each block's work, so every plan is simulated and every
//! transaction mined on exactly the state the keeper would have acted on. Nothing is sent upstream:
//! the executor has no connection to it.

use crate::chain::{self, ChainError, Rpc};
use alloy::{node_bindings::AnvilInstance, providers::ext::AnvilApi, rpc::types::anvil::Forking};
use eyre::WrapErr;

/// The fork.
pub struct DryRun {
    _anvil: AnvilInstance,
    upstream_url: String,
    /// A provider on the fork.
    pub rpc: Rpc,
    /// The fork's URL (loopback).
    pub url: String,
}

impl DryRun {
    /// Starts anvil forking `upstream_url` at `block`.
    pub fn start(upstream_url: &str, block: u64) -> eyre::Result<Self> {
        let block = block.to_string();
        let anvil = crate::devnet::spawn_anvil(
            None,
            &[
                "--fork-url",
                upstream_url,
                "--fork-block-number",
                &block,
                "--no-storage-caching",
            ],
        )
        .wrap_err_with(|| {
            format!(
                "starting the dry-run fork of {}",
                chain::redact_url(upstream_url)
            )
        })?;
        let url = anvil.endpoint();
        let rpc = chain::connect_http(&url)?;
        tracing::info!(fork = %url, at_block = %block, "dry run: liquidations go to a local fork, never upstream");
        Ok(Self {
            _anvil: anvil,
            upstream_url: upstream_url.to_owned(),
            rpc,
            url,
        })
    }

    /// Moves the fork to upstream `block`, dropping whatever was mined on it.
    pub async fn follow(&self, block: u64) -> Result<(), ChainError> {
        self.rpc
            .anvil_reset(Some(Forking {
                json_rpc_url: Some(self.upstream_url.clone()),
                block_number: Some(block),
            }))
            .await
            .map_err(|e| ChainError::rpc("anvil_reset on the dry-run fork", e))
    }
}
