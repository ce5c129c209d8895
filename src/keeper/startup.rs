//! Building a keeper from a config, after checking everything a live run depends on: the config itself
//! (unknown and missing keys are rejected when it loads), the RPC and its chain id (every URL's), the
//! signing key and the account it is for, the Liquidator (code, owner or operator, the market it
//! serves) and the account's balance for gas. Each failure names what is wrong and what to do.
//!
//! A read that fails transiently (an endpoint down, rate-limiting, timing out) is retried for
//! `chain.startup_retry_secs` (two minutes by default) before start-up gives up and names it: a
//! keeper restarted in the middle of an outage comes up when the endpoint does, and an endpoint's
//! trouble is never taken for a wrong contract.

use super::{Keeper, dry_run::DryRun};
use crate::{
    chain::{
        self, ChainError, Rpc,
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
    /// The chain's block time: the longest wait between retries of a failed sync.
    pub block_time: Duration,
}

/// Gas assumed for one liquidation when checking the balance.
const LIQUIDATION_GAS: u64 = 700_000;

/// Start-up's patience with transient RPC trouble: reads are retried until a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    deadline: std::time::Instant,
    window: Duration,
}

impl Patience {
    /// Retrying for `window` from now.
    pub fn new(window: Duration) -> Self {
        Self {
            deadline: std::time::Instant::now() + window,
            window,
        }
    }

    /// Runs `read` until it succeeds, fails for good (not [`ChainError::is_retryable`]), or the
    /// deadline passes; logs each retry with `what`.
    pub async fn read<T, F, Fut>(&self, what: &str, mut read: F) -> Result<T, ChainError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ChainError>>,
    {
        let mut backoff =
            chain::trouble::Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        loop {
            match read().await {
                Err(e) if e.is_retryable() && std::time::Instant::now() < self.deadline => {
                    let wait = backoff.next_wait();
                    tracing::warn!(%what, error = %e, retry_in_ms = wait.as_millis() as u64, "start-up read failed, retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// An error for `e`, which failed `what`: transient trouble that outlasted the window is named as
    /// such, with what to do.
    fn gave_up(&self, what: &str, e: ChainError) -> eyre::Report {
        if e.is_retryable() {
            eyre!(
                "{what}: the RPC kept failing for {} s ({e}). Is the endpoint up? Start-up retries for chain.startup_retry_secs",
                self.window.as_secs()
            )
        } else {
            eyre::Report::new(e).wrap_err(what.to_owned())
        }
    }
}

/// Checks the config against the chain and builds the keeper.
pub async fn start(config: &Config, path: &Path, opts: &RunOptions) -> eyre::Result<Running> {
    let urls = config.rpc_urls(path)?;
    let meter = RpcMeter::default();
    let patience = Patience::new(config.chain.startup_retry());
    let rpc = chain::connect_failover(&urls, &meter, config.chain.request_timeout())?;
    check_chain(&urls, config.chain.chain_id, &patience).await?;

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

    let (store, mut watcher) =
        open_watcher_patiently(config, rpc.clone(), opts.rebuild_store, &patience).await?;
    // The simulation of each liquidation checks health on-chain; no separate read first.
    watcher.set_verify_below_one(false);
    check_liquidator(
        &rpc,
        executor_cfg.liquidator,
        executor_cfg.account,
        watcher.protocol().pool,
        &patience,
    )
    .await?;
    check_balance(
        &rpc,
        executor_cfg.account,
        config.planner.priority_fee_wei,
        &patience,
    )
    .await?;

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
        let head = patience
            .read("reading the head", || async {
                rpc.get_block_number()
                    .await
                    .map_err(|e| ChainError::rpc("eth_blockNumber", e))
            })
            .await
            .map_err(|e| patience.gave_up("reading the head", e))?;
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

    let planner = patience
        .read("reading the chain's L1 fee parameters", || {
            Planner::new(act_rpc.clone(), settings.clone())
        })
        .await
        .map_err(|e| patience.gave_up("starting the planner", e))?;
    // The pools' events come with the market's, in the watcher's one request per block.
    watcher.tap_logs(planner.log_tap());
    let executor = patience
        .read("starting the executor", || {
            Executor::new(
                act_rpc.clone(),
                key.clone(),
                journal.clone(),
                exec_opts.clone(),
            )
        })
        .await
        .map_err(|e| patience.gave_up("starting the executor", e))?;

    let stale_after = config
        .metrics
        .as_ref()
        .and_then(|m| m.stale_after_secs)
        .map(Duration::from_secs)
        .unwrap_or_else(|| crate::telemetry::metrics::default_stale_after(block_time));
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
    keeper.map_every(config.metrics.as_ref().map_or(0, |m| m.map_every_blocks));
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
        block_time,
    })
}

/// The configured market's watcher over the configured store, reading through `rpc`: what every
/// command that follows positions starts from. Returns the store too, to flush.
pub async fn open_watcher(
    config: &Config,
    rpc: Rpc,
    rebuild_store: bool,
) -> eyre::Result<(Store, Watcher<AaveV3>)> {
    open_watcher_patiently(config, rpc, rebuild_store, &Patience::new(Duration::ZERO)).await
}

/// [`open_watcher`], reading the market with `patience`.
pub async fn open_watcher_patiently(
    config: &Config,
    rpc: Rpc,
    rebuild_store: bool,
    patience: &Patience,
) -> eyre::Result<(Store, Watcher<AaveV3>)> {
    let store = Store::open(&config.store.path, rebuild_store)
        .wrap_err_with(|| format!("opening the store at {}", config.store.path.display()))?;
    let what = "reading the Aave market behind aave.addresses_provider";
    let aave = patience
        .read(what, || {
            AaveV3::connect(
                &rpc,
                config.aave.addresses_provider,
                config.multicall.address,
                config.aave.release,
            )
        })
        .await
        .map_err(|e| patience.gave_up(what, e))?;
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

/// Every http(s) URL of `urls` that answers must serve chain `expected` (a fallback on another chain
/// would send liquidations there); at least one must answer within the patience's window.
async fn check_chain(
    urls: &[String],
    expected: u64,
    patience: &Patience,
) -> Result<(), StartupError> {
    let http: Vec<&String> = urls.iter().filter(|u| u.starts_with("http")).collect();
    let shown = |u: &str| chain::redact_url(u);
    let mut answered = 0;
    let mut last_error = String::new();
    for (i, url) in http.iter().enumerate() {
        let rpc = chain::connect_http(url).map_err(|e| StartupError::Unreachable {
            urls: shown(url),
            reason: e.to_string(),
        })?;
        let ask = || async {
            rpc.get_chain_id()
                .await
                .map_err(|e| ChainError::rpc("eth_chainId", e))
        };
        // The last URL is waited for; earlier ones (with fallbacks behind them) are asked once.
        let found = if i + 1 == http.len() && answered == 0 {
            patience.read("eth_chainId", ask).await
        } else {
            ask().await
        };
        match found {
            Ok(found) if found != expected => {
                return Err(StartupError::ChainId {
                    url: shown(url),
                    found,
                    expected,
                });
            }
            Ok(_) => answered += 1,
            Err(e) => {
                tracing::warn!(url = %shown(url), error = %e, "an RPC URL does not answer at start-up");
                last_error = e.to_string();
            }
        }
    }
    if answered == 0 {
        return Err(StartupError::Unreachable {
            urls: http.iter().map(|u| shown(u)).collect::<Vec<_>>().join(", "),
            reason: last_error,
        });
    }
    Ok(())
}

async fn check_liquidator(
    rpc: &Rpc,
    liquidator: Address,
    account: Address,
    market_pool: Address,
    patience: &Patience,
) -> eyre::Result<()> {
    let code = patience
        .read("reading the Liquidator's code", || async {
            rpc.get_code_at(liquidator)
                .await
                .map_err(|e| ChainError::rpc("eth_getCode", e))
        })
        .await
        .map_err(|e| patience.gave_up("reading the Liquidator's code", e))?;
    if code.is_empty() {
        return Err(StartupError::NoLiquidatorCode(liquidator).into());
    }
    // What the contract answers decides; trouble reaching it is retried, and named as trouble.
    let owner = match patience
        .read("owner()", || {
            view(rpc, liquidator, Liquidator::ownerCall {}, "owner")
        })
        .await
    {
        Ok(owner) => owner,
        Err(e) if e.is_retryable() => {
            return Err(patience.gave_up("reading the Liquidator's owner()", e));
        }
        Err(e) => return Err(StartupError::NotLiquidator(liquidator, e.to_string()).into()),
    };
    let version = match patience
        .read("VERSION()", || {
            view(rpc, liquidator, Liquidator::VERSIONCall {}, "VERSION")
        })
        .await
    {
        Err(e) if e.is_retryable() => {
            return Err(patience.gave_up("reading the Liquidator's VERSION()", e));
        }
        other => other,
    };
    if version.as_ref().ok() != Some(&LIQUIDATOR_VERSION) {
        return Err(StartupError::WrongVersion {
            liquidator,
            found: version.map_or_else(|_| "does not answer".to_owned(), |v| format!("is {v}")),
            needed: LIQUIDATOR_VERSION,
        }
        .into());
    }
    if owner != account {
        let operator = match patience
            .read("operators()", || {
                view(
                    rpc,
                    liquidator,
                    Liquidator::operatorsCall { account },
                    "operators",
                )
            })
            .await
        {
            Ok(operator) => operator,
            Err(e) if e.is_retryable() => {
                return Err(patience.gave_up("reading the Liquidator's operators()", e));
            }
            Err(_) => false,
        };
        if !operator {
            return Err(StartupError::NotAuthorised {
                liquidator,
                account,
                owner,
            }
            .into());
        }
    }
    let its_pool = patience
        .read("aavePool()", || {
            view(rpc, liquidator, Liquidator::aavePoolCall {}, "aavePool")
        })
        .await
        .map_err(|e| patience.gave_up("reading the Liquidator's aavePool()", e))?;
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

async fn check_balance(
    rpc: &Rpc,
    account: Address,
    priority_fee: u64,
    patience: &Patience,
) -> eyre::Result<()> {
    let what = "reading executor.account's balance";
    let balance = patience
        .read(what, || async {
            rpc.get_balance(account)
                .await
                .map_err(|e| ChainError::rpc("eth_getBalance", e))
        })
        .await
        .map_err(|e| patience.gave_up(what, e))?;
    let what = "reading the latest block";
    let base_fee = patience
        .read(what, || async {
            rpc.get_block_by_number(BlockNumberOrTag::Latest)
                .await
                .map_err(|e| ChainError::rpc("eth_getBlockByNumber", e))
        })
        .await
        .map_err(|e| patience.gave_up(what, e))?
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
