//! The keeper's TOML configuration, validated when it is loaded.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a misspelt key silently ignored is how a keeper ends
//! up pointed at the wrong market. Secrets are never written into the file; a value `env:NAME` is read
//! from the environment variable `NAME` when it is needed.

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The chain and how to reach it.
    pub chain: ChainConfig,
    /// The Aave V3 market to watch.
    pub aave: AaveConfig,
    /// Batched reads.
    #[serde(default)]
    pub multicall: MulticallConfig,
    /// Uniswap V3 venues for selling seized collateral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniswap_v3: Option<UniswapV3Config>,
    /// Uniswap V2 pairs as a further venue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniswap_v2: Option<UniswapV2Config>,
    /// Where the store lives.
    #[serde(default)]
    pub store: StoreConfig,
    /// Where the signing key comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<SignerConfig>,
    /// The Liquidator contract and the account that calls it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorConfig>,
    /// Planning knobs.
    #[serde(default)]
    pub planner: PlannerConfig,
    /// Prometheus metrics and the health endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Present only in configs written by `cascade devnet`: what `cascade shock` needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devnet: Option<DevnetConfig>,
}

/// `[chain]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// The chain id the RPC must report.
    pub chain_id: u64,
    /// RPC URLs, in order of preference; each may be `env:NAME`.
    pub rpc_urls: Vec<String>,
    /// The expected block time, for polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_time_secs: Option<u64>,
    /// How long one request may take before the next endpoint is asked (default: two block times,
    /// between 2 and 10 seconds). A node that answers in 6 s has cost the keeper a block already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// How long start-up retries what fails transiently (an endpoint down or rate-limiting) before it
    /// gives up and names what failed (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_retry_secs: Option<u64>,
}

impl ChainConfig {
    /// The block time (12 s when not set).
    pub fn block_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.block_time_secs.unwrap_or(12))
    }

    /// [`Self::request_timeout_ms`], or its default.
    pub fn request_timeout(&self) -> std::time::Duration {
        use std::time::Duration;
        self.request_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| {
                (self.block_time() * 2).clamp(Duration::from_secs(2), Duration::from_secs(10))
            })
    }

    /// [`Self::startup_retry_secs`], or its default.
    pub fn startup_retry(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.startup_retry_secs.unwrap_or(120))
    }
}

/// `[aave]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AaveConfig {
    /// The market's PoolAddressesProvider; the Pool, oracle and data provider are looked up through it.
    pub addresses_provider: Address,
    /// The block the market was deployed in: event discovery starts here.
    pub deployment_block: u64,
    /// The Aave release whose rules the market follows (`"3.6"`); unset, it is told from the getters
    /// the Pool answers. Set it only for a fork whose getters mislead that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<crate::protocol::aave_v3::release::Release>,
}

/// `[multicall]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MulticallConfig {
    /// Multicall3's address; the canonical one unless the chain has it elsewhere.
    pub address: Address,
}

impl Default for MulticallConfig {
    fn default() -> Self {
        Self {
            address: crate::chain::multicall::MULTICALL3,
        }
    }
}

/// `[uniswap_v3]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniswapV3Config {
    /// The factory, for pool addresses.
    pub factory: Address,
    /// QuoterV2, to cross-check simulated swaps.
    pub quoter: Address,
    /// The fee tiers to consider.
    #[serde(default = "default_fee_tiers")]
    pub fee_tiers: Vec<u32>,
}

fn default_fee_tiers() -> Vec<u32> {
    vec![100, 500, 3000, 10000]
}

/// `[uniswap_v2]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniswapV2Config {
    /// The factory, for pair addresses.
    pub factory: Address,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The sled directory.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(".cascade/store"),
        }
    }
}

/// Where the key comes from (`[signer]` in the config).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    /// `env:NAME`: the private key is in that environment variable. Literal keys are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// An encrypted JSON keystore (Web3 Secret Storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystore: Option<PathBuf>,
}

impl std::fmt::Debug for SignerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerConfig")
            .field(
                "private_key",
                &self.private_key.as_ref().map(|k| {
                    if k.starts_with("env:") {
                        k.as_str()
                    } else {
                        "<redacted>"
                    }
                }),
            )
            .field("keystore", &self.keystore)
            .finish()
    }
}

/// `[executor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// The deployed Liquidator (`cascade deploy-liquidator` prints it).
    pub liquidator: Address,
    /// The account that sends liquidations (the Liquidator's owner or an operator).
    pub account: Address,
    /// Replace a liquidation not mined after this many blocks, with fees raised by `bump_bps`.
    #[serde(default = "default_bump_after_blocks")]
    pub bump_after_blocks: u64,
    /// Each replacement raises both fees by this much, in basis points (nodes require at least 1000).
    #[serde(default = "default_bump_bps")]
    pub bump_bps: u64,
    /// The most liquidations one transaction carries (`liquidateBatch`; 1 sends each alone). One
    /// transaction of several costs about half the gas of each alone, but one of them failing on
    /// chain (someone else liquidated that borrower first) reverts them all.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Send through a relay's `eth_sendBundle` instead of the public mempool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayConfig>,
}

fn default_bump_after_blocks() -> u64 {
    3
}

fn default_max_batch() -> usize {
    DEFAULT_MAX_BATCH
}

/// Liquidations per transaction unless configured: a few million gas, so a block still packs several
/// transactions and a batch waits on few plans.
pub const DEFAULT_MAX_BATCH: usize = 16;

fn default_bump_bps() -> u64 {
    1_250
}

/// `[executor.relay]`: a Flashbots-compatible relay or builder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The relay's URL (may be `env:NAME`).
    pub url: String,
    /// `env:NAME`: the key that signs `X-Flashbots-Signature`. Use a key that holds nothing.
    pub auth_key: String,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` and `/health` on.
    pub listen: std::net::SocketAddr,
    /// `/health` fails when no new block was processed for this long (default: three block times,
    /// at least a few seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_secs: Option<u64>,
    /// The cascade map's gauges (`cascade_liquidatable_debt_usd`) are recomputed at most this often,
    /// in blocks, on a block without liquidations to make; 0 turns them off.
    #[serde(default = "default_map_every_blocks")]
    pub map_every_blocks: u64,
}

fn default_map_every_blocks() -> u64 {
    10
}

/// `[planner]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerConfig {
    /// Priority fee offered, in wei per gas.
    #[serde(default = "default_priority_fee")]
    pub priority_fee_wei: u64,
    /// The reserve whose price stands for the chain's native currency, to value gas (WETH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_asset: Option<Address>,
    /// Transactions the node is asked to simulate at once. A node runs as many side by side as it has
    /// cores free, and more only share them, so that every one comes back late: about the node's free
    /// cores for a node on the keeper's machine, more for a remote one, where each waits on the
    /// network too.
    #[serde(default = "default_simulations_in_flight")]
    pub simulations_in_flight: usize,
    /// Contracts besides the market's oracle, its fallback and its sources whose pending transactions
    /// move prices, so that the keeper plans the block they will land in while they wait in the
    /// mempool (a Chainlink proxy's updates go to its current aggregator, not to the proxy). Read
    /// over the WebSocket URL in `chain.rpc_urls`; without one, nothing is watched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_pending_to: Vec<Address>,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            priority_fee_wei: default_priority_fee(),
            native_asset: None,
            simulations_in_flight: default_simulations_in_flight(),
            watch_pending_to: Vec::new(),
        }
    }
}

/// A remote node's share: enough that the network's round trip does not hold the simulations up.
fn default_simulations_in_flight() -> usize {
    8
}

/// 1 gwei.
fn default_priority_fee() -> u64 {
    1_000_000_000
}

/// `[devnet]`: facts about a devnet that only its own tools use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevnetConfig {
    /// The account that administers the market (anvil's first dev account).
    pub admin: Address,
    /// The market's assets and their price feeds.
    pub assets: Vec<DevnetAsset>,
    /// The AaveOracle.
    pub oracle: Address,
    /// Uniswap V3 SwapRouter, through which a shock's arbitrage moves the pools.
    pub router: Address,
    /// Every Uniswap pool (V3) and pair (V2) on the devnet.
    pub pools: Vec<DevnetPool>,
}

/// A devnet pool, so a shock can bring it to the new price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevnetPool {
    /// The pool or pair.
    pub address: Address,
    /// token0.
    pub token0: Address,
    /// token1.
    pub token1: Address,
    /// Fee tier (hundredths of a bip).
    pub fee: u32,
    /// Uniswap V2 pair rather than a V3 pool.
    pub v2: bool,
}

/// One asset of a devnet market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevnetAsset {
    /// Its symbol, as `cascade shock --asset` names it.
    pub symbol: String,
    /// The token.
    pub address: Address,
    /// Its decimals.
    pub decimals: u8,
    /// The MockAggregator the AaveOracle reads for it (the AaveOracle's fallback prices it instead once
    /// its source is cleared: see `devnet::shock`).
    pub feed: Address,
}

/// Errors loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or lacks a required one.
    #[error("config {path} is invalid: {message}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What toml said, with the line and key.
        message: String,
    },
    /// An `env:NAME` reference names an unset variable.
    #[error("config {path}: {field} refers to environment variable {var}, which is not set")]
    MissingEnv {
        /// The path.
        path: PathBuf,
        /// The field.
        field: String,
        /// The variable.
        var: String,
    },
    /// A value is present but unusable.
    #[error("config {path}: {message}")]
    Value {
        /// The path.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if config.chain.rpc_urls.is_empty() {
            return Err(ConfigError::Value {
                path: path.to_owned(),
                message: "chain.rpc_urls is empty: give at least one RPC URL (or env:NAME)".into(),
            });
        }
        Ok(config)
    }

    /// The RPC URLs with `env:` references resolved.
    pub fn rpc_urls(&self, path: &Path) -> Result<Vec<String>, ConfigError> {
        self.chain
            .rpc_urls
            .iter()
            .enumerate()
            .map(|(i, url)| resolve_env(url, &format!("chain.rpc_urls[{i}]"), path))
            .collect()
    }

    /// Writes the config as TOML with a header comment.
    pub fn write(&self, path: &Path, header: &str) -> std::io::Result<()> {
        let body = toml::to_string_pretty(self).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let header: String = header.lines().map(|l| format!("# {l}\n")).collect();
        std::fs::write(path, format!("{header}\n{body}"))
    }
}

/// Resolves `env:NAME` to the variable's value; anything else is returned as it is.
pub fn resolve_env(value: &str, field: &str, path: &Path) -> Result<String, ConfigError> {
    match value.strip_prefix("env:") {
        Some(var) => std::env::var(var).map_err(|_| ConfigError::MissingEnv {
            path: path.to_owned(),
            field: field.to_owned(),
            var: var.to_owned(),
        }),
        None => Ok(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[chain]
name = "mainnet"
chain_id = 1
rpc_urls = ["env:CASCADE_TEST_RPC_UNSET"]

[aave]
addresses_provider = "0x2f39d218133AFaB8F2B819B1066c7E434Ad94E9e"
deployment_block = 16291127
"#;

    #[test]
    fn minimal_config_has_defaults() {
        let cfg = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.multicall.address, crate::chain::multicall::MULTICALL3);
        assert_eq!(cfg.store.path, PathBuf::from(".cascade/store"));
        assert!(cfg.devnet.is_none());
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("deployment_block", "deploy_block");
        let err = Config::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("deploy_block"), "{err}");
    }

    #[test]
    fn missing_env_is_named() {
        let cfg = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        let err = cfg.rpc_urls(Path::new("t.toml")).unwrap_err().to_string();
        assert!(
            err.contains("CASCADE_TEST_RPC_UNSET") && err.contains("chain.rpc_urls[0]"),
            "{err}"
        );
    }

    #[test]
    fn the_example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["mainnet.toml", "base.toml", "devnet.toml"] {
            let cfg = Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                cfg.executor.is_some() && cfg.planner.native_asset.is_some(),
                "{name}"
            );
        }
        let base = Config::load(&dir.join("base.toml")).unwrap();
        assert_eq!(base.chain.chain_id, 8453);
        let mainnet = Config::load(&dir.join("mainnet.toml")).unwrap();
        assert!(mainnet.executor.unwrap().relay.is_some());
    }

    #[test]
    fn round_trips_through_toml() {
        let cfg = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        cfg.write(&path, "written by a test").unwrap();
        assert_eq!(Config::load(&path).unwrap(), cfg);
    }
}
