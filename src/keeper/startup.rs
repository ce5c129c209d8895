//! Building a keeper from a config, after checking everything a live run depends on: the config itself
//! (unknown and missing keys are rejected when it loads), the RPC and its chain id, the signing key and
//! the account it is for, the Liquidator (code, owner or operator, the market it serves) and the
//! account's balance for gas. Each failure names what is wrong and what to do.

use super::{Keeper, dry_run::DryRun};
use crate::{
    chain::{
        self, Rpc,
        bindings::{LIQUIDATOR_VERSION, Liquidator},
        metered::RpcMeter,
        view,
    },
    config::{Config, resolve_env},
    executor::{
        journal::Journal,
        signer,
        submit::{Executor, ExecutorOptions, Route},
    },
    planner::{Planner, PlannerSettings},
    protocol::aave_v3::AaveV3,
    store::Store,
    telemetry::metrics::Liveness,
    watcher::{Watcher, WatcherOptions, follow::Heads},
};
use alloy::{
    eips::BlockNumberOrTag,
    primitives::{Address, U256},
    providers::Provider,
};
use eyre::{WrapErr, eyre};
use std::{io::IsTerminal, path::Path, time::Duration};

/// A start-up check that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// No RPC URL answered.
    #[error(
        "cannot reach the RPC at {urls}: {reason}. Is the node running, and are chain.rpc_urls right?"
    )]
    Unreachable {
        /// The URLs tried (redacted).
        urls: String,
        /// The last error.
        reason: String,
    },
    /// The RPC serves another chain.
    #[error(
        "chain id mismatch: the RPC at {url} is chain {found}, the config says chain.chain_id = {expected}. Point chain.rpc_urls at the right network or fix chain.chain_id"
    )]
    ChainId {
        /// The URL (redacted).
        url: String,
        /// What the RPC said.
        found: u64,
        /// What the config says.
        expected: u64,
    },
    /// The key is not the configured account's.
    #[error(
        "the signing key is for {key}, but executor.account is {account}: configure the key of the account that calls the Liquidator"
    )]
    KeyMismatch {
        /// The key's address.
        key: Address,
        /// executor.account.
        account: Address,
    },
    /// Nothing deployed at the Liquidator address.
    #[error(
        "executor.liquidator {0} has no code on this chain: deploy one with `cascade deploy-liquidator --config PATH` and put the address it prints in the config"
    )]
    NoLiquidatorCode(Address),
    /// The Liquidator does not answer as ours does.
    #[error("executor.liquidator {0} is not a cascade Liquidator (owner() does not answer): {1}")]
    NotLiquidator(Address, String),
    /// A Liquidator of another interface: an older one of ours, or not ours.
    #[error(
        "executor.liquidator {liquidator} does not speak this keeper's Liquidator interface (VERSION() {found}, this keeper needs {needed}): an older cascade Liquidator, or another contract. Deploy a new one with `cascade deploy-liquidator --config PATH`, put its address in the config, and sweep the old one's funds to it"
    )]
    WrongVersion {
        /// The Liquidator.
        liquidator: Address,
        /// What it answered.
        found: String,
        /// What this keeper speaks.
        needed: u16,
    },
    /// The account may not call the Liquidator.
    #[error(
        "executor.account {account} may not call the Liquidator {liquidator}: its owner is {owner}. Use the owner's key, or have the owner call setOperator({account}, true)"
    )]
    NotAuthorised {
        /// The Liquidator.
        liquidator: Address,
        /// executor.account.
        account: Address,
        /// Its owner.
        owner: Address,
    },
    /// The Liquidator serves another Pool.
    #[error(
        "the Liquidator {liquidator} liquidates on Pool {its_pool}, but the configured market's Pool is {market_pool}: deploy a Liquidator for this market"
    )]
    WrongPool {
        /// The Liquidator.
        liquidator: Address,
        /// Its pool.
        its_pool: Address,
        /// The market's.
        market_pool: Address,
    },
    /// Not enough ETH for gas.
    #[error(
        "executor.account {account} has {balance} wei, less than one liquidation's gas at today's fees (about {needed} wei): fund it"
    )]
    NoBalance {
        /// The account.
        account: Address,
        /// Its balance.
        balance: U256,
        /// What one liquidation needs.
        needed: U256,
    },
}

/// How to run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Send to an anvil fork instead of the chain.
    pub dry_run: bool,
    /// Delete the store and rebuild it from the chain.
    pub rebuild_store: bool,
    /// Sign with this key instead of the one `[signer]` names (the demo's public dev key).
    pub key: Option<alloy::signers::local::PrivateKeySigner>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("dry_run", &self.dry_run)
            .field("rebuild_store", &self.rebuild_store)
            .field("key", &self.key.as_ref().map(|k| k.address()))
            .finish()
    }
}

/// Everything a running keeper needs, checked.
pub struct Running {
    /// The store (flush on shutdown).
    pub store: Store,
    /// The watcher.
    pub watcher: Watcher<AaveV3>,
    /// The keeper.
    pub keeper: Keeper,
    /// Where new heads come from.
    pub heads: Heads,
    /// RPC request counts (upstream).
    pub meter: RpcMeter,
    /// For `/health`.
    pub liveness: Liveness,
}

/// Gas assumed for one liquidation when checking the balance.
const LIQUIDATION_GAS: u64 = 700_000;

/// Checks the config against the chain and builds the keeper.
pub async fn start(config: &Config, path: &Path, opts: &RunOptions) -> eyre::Result<Running> {
    let urls = config.rpc_urls(path)?;
    let meter = RpcMeter::default();
    let rpc = chain::connect_failover(&urls, &meter)?;
    check_chain(&rpc, &urls, config.chain.chain_id).await?;

    let settings = PlannerSettings::from_config(config)
        .map_err(|e| eyre!("config {}: {e}", path.display()))?;
    let executor_cfg = config
        .executor
        .as_ref()
        .ok_or_else(|| eyre!("config {}: no [executor] section", path.display()))?;
    let key = match &opts.key {
        Some(key) => key.clone(),
        None => signer::load(config.signer.as_ref())?,
    };
    if key.address() != executor_cfg.account {
        return Err(StartupError::KeyMismatch {
            key: key.address(),
            account: executor_cfg.account,
        }
        .into());
    }

    let (store, mut watcher) = open_watcher(config, rpc.clone(), opts.rebuild_store).await?;
    // The simulation of each liquidation checks health on-chain; no separate read first.
    watcher.set_verify_below_one(false);
    check_liquidator(
        &rpc,
        executor_cfg.liquidator,
        executor_cfg.account,
        watcher.protocol().pool,
    )
    .await?;
    check_balance(&rpc, executor_cfg.account, config.planner.priority_fee_wei).await?;

    let block_time = Duration::from_secs(config.chain.block_time_secs.unwrap_or(12));
    let route = match &executor_cfg.relay {
        None => Route::Public,
        Some(relay) => Route::Relay {
            url: resolve_env(&relay.url, "executor.relay.url", path)?,
            auth: signer::parse_key(
                &resolve_env(&relay.auth_key, "executor.relay.auth_key", path)?,
                "executor.relay.auth_key",
            )?,
        },
    };
    let exec_opts = ExecutorOptions {
        bump_after: block_time * executor_cfg.bump_after_blocks.max(1) as u32,
        bump_bps: executor_cfg.bump_bps,
        route,
        max_batch: executor_cfg.max_batch,
    };

    let (dry_run, act_rpc, journal) = if opts.dry_run {
        let upstream = urls
            .iter()
            .find(|u| u.starts_with("http"))
            .ok_or_else(|| eyre!("a dry run forks an http(s) URL; chain.rpc_urls has none"))?;
        let head = rpc.get_block_number().await.wrap_err("reading the head")?;
        let fork = DryRun::start(upstream, head)?;
        let fork_rpc = fork.rpc.clone();
        (
            Some(fork),
            fork_rpc,
            Journal::new(store.dry_run_journal_tree()?).wrap_err("opening the dry-run journal")?,
        )
    } else {
        (
            None,
            rpc.clone(),
            Journal::new(store.journal_tree()?).wrap_err("opening the journal")?,
        )
    };

    let planner = Planner::new(act_rpc.clone(), settings.clone())
        .await
        .wrap_err("starting the planner")?;
    // The pools' events come with the market's, in the watcher's one request per block.
    watcher.tap_logs(planner.log_tap());
    let executor = Executor::new(act_rpc, key, journal, exec_opts)
        .await
        .wrap_err("starting the executor")?;

    let stale_after = config
        .metrics
        .as_ref()
        .and_then(|m| m.stale_after_secs)
        .map(Duration::from_secs)
        .unwrap_or((block_time * 5).max(Duration::from_secs(30)));
    let liveness = Liveness::new(stale_after);
    let watch_mempool = dry_run.is_none();
    let mut keeper = Keeper::new(
        planner,
        executor,
        settings.liquidator,
        settings.native_asset,
        liveness.clone(),
        dry_run,
    );
    let ws_url = urls.iter().find(|u| u.starts_with("ws"));
    if ws_url.is_some() && watch_mempool {
        // Price updates waiting in the mempool are planned before their block (keeper::ahead).
        match super::ahead::price_setters(&rpc, watcher.protocol()).await {
            Ok(mut contracts) => {
                contracts.extend(&config.planner.watch_pending_to);
                contracts.sort();
                contracts.dedup();
                tracing::info!(
                    contracts = contracts.len(),
                    "watching the mempool for price updates"
                );
                keeper.watch_pending_to(contracts);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the market's price sources failed: price updates are planned when they are mined")
            }
        }
    }
    let heads_url = ws_url.unwrap_or(&urls[0]);
    Ok(Running {
        store,
        watcher,
        keeper,
        heads: Heads::for_url(heads_url, block_time),
        meter,
        liveness,
    })
}

/// The configured market's watcher over the configured store, reading through `rpc`: what every
/// command that follows positions starts from. Returns the store too, to flush.
pub async fn open_watcher(
    config: &Config,
    rpc: Rpc,
    rebuild_store: bool,
) -> eyre::Result<(Store, Watcher<AaveV3>)> {
    let store = Store::open(&config.store.path, rebuild_store)
        .wrap_err_with(|| format!("opening the store at {}", config.store.path.display()))?;
    let aave = AaveV3::connect(
        &rpc,
        config.aave.addresses_provider,
        config.multicall.address,
        config.aave.release,
    )
    .await
    .wrap_err("reading the Aave market behind aave.addresses_provider")?;
    let watcher = Watcher::open(
        aave,
        rpc,
        store.market(config.aave.addresses_provider)?,
        WatcherOptions {
            deployment_block: config.aave.deployment_block,
            progress: std::io::stderr().is_terminal(),
            ..Default::default()
        },
    )?;
    Ok((store, watcher))
}

async fn check_chain(rpc: &Rpc, urls: &[String], expected: u64) -> Result<(), StartupError> {
    let shown = urls
        .iter()
        .map(|u| chain::redact_url(u))
        .collect::<Vec<_>>()
        .join(", ");
    let found = rpc
        .get_chain_id()
        .await
        .map_err(|e| StartupError::Unreachable {
            urls: shown.clone(),
            reason: e.to_string(),
        })?;
    if found != expected {
        return Err(StartupError::ChainId {
            url: shown,
            found,
            expected,
        });
    }
    Ok(())
}

async fn check_liquidator(
    rpc: &Rpc,
    liquidator: Address,
    account: Address,
    market_pool: Address,
) -> eyre::Result<()> {
    let code = rpc
        .get_code_at(liquidator)
        .await
        .wrap_err("reading the Liquidator's code")?;
    if code.is_empty() {
        return Err(StartupError::NoLiquidatorCode(liquidator).into());
    }
    let owner = view(rpc, liquidator, Liquidator::ownerCall {}, "owner")
        .await
        .map_err(|e| StartupError::NotLiquidator(liquidator, e.to_string()))?;
    let version = view(rpc, liquidator, Liquidator::VERSIONCall {}, "VERSION").await;
    if version.as_ref().ok() != Some(&LIQUIDATOR_VERSION) {
        return Err(StartupError::WrongVersion {
            liquidator,
            found: version.map_or_else(|_| "does not answer".to_owned(), |v| format!("is {v}")),
            needed: LIQUIDATOR_VERSION,
        }
        .into());
    }
    if owner != account {
        let operator = view(
            rpc,
            liquidator,
            Liquidator::operatorsCall { account },
            "operators",
        )
        .await
        .unwrap_or(false);
        if !operator {
            return Err(StartupError::NotAuthorised {
                liquidator,
                account,
                owner,
            }
            .into());
        }
    }
    let its_pool = view(rpc, liquidator, Liquidator::aavePoolCall {}, "aavePool").await?;
    if its_pool != market_pool {
        return Err(StartupError::WrongPool {
            liquidator,
            its_pool,
            market_pool,
        }
        .into());
    }
    Ok(())
}

async fn check_balance(rpc: &Rpc, account: Address, priority_fee: u64) -> eyre::Result<()> {
    let balance = rpc
        .get_balance(account)
        .await
        .wrap_err("reading executor.account's balance")?;
    let base_fee = rpc
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .wrap_err("reading the latest block")?
        .and_then(|b| b.header.base_fee_per_gas)
        .unwrap_or(0);
    let needed = U256::from(LIQUIDATION_GAS) * U256::from(base_fee * 2 + priority_fee);
    if balance < needed || balance.is_zero() {
        return Err(StartupError::NoBalance {
            account,
            balance,
            needed,
        }
        .into());
    }
    Ok(())
}
