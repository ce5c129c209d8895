//! `cascade watch`: follow the chain and report positions as they become liquidatable.

use crate::{
    chain,
    cli::positions::connect_checked,
    config::Config,
    protocol::aave_v3::AaveV3,
    store::Store,
    units::u256_to_f64,
    watcher::{
        Watcher, WatcherOptions,
        follow::{Heads, follow},
    },
};
use eyre::WrapErr;
use std::{collections::BTreeSet, io::IsTerminal, path::PathBuf, time::Duration};
use tokio_util::sync::CancellationToken;

/// Arguments of `cascade watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Delete the store and rebuild it from the chain.
    #[arg(long)]
    pub rebuild_store: bool,
}

/// Runs `cascade watch` until SIGINT / SIGTERM.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::load(&args.config)?;
    let (rpc, url) = connect_checked(&config, &args.config).await?;
    let store = Store::open(&config.store.path, args.rebuild_store)?;
    let aave = AaveV3::connect(
        &rpc,
        config.aave.addresses_provider,
        config.multicall.address,
    )
    .await
    .wrap_err("reading the Aave market behind aave.addresses_provider")?;
    let opts = WatcherOptions {
        deployment_block: config.aave.deployment_block,
        progress: std::io::stderr().is_terminal(),
        ..Default::default()
    };
    let mut watcher = Watcher::open(
        aave,
        rpc,
        store.market(config.aave.addresses_provider)?,
        opts,
    )?;
    let block_time = Duration::from_secs(config.chain.block_time_secs.unwrap_or(12));
    let heads = Heads::for_url(&url, block_time);
    tracing::info!(rpc = %chain::redact_url(&url), ?heads, "following the chain");

    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let _ = crate::telemetry::shutdown_signal().await;
        on_signal.cancel();
    });
    let mut known = BTreeSet::new();
    follow(&mut watcher, heads, cancel, |report| {
        let Some(block) = report.block else { return };
        tracing::info!(
            block = block.number,
            loaded = report.loaded,
            repriced = report.repriced,
            reprice_us = report.reprice_time.as_micros() as u64,
            liquidatable = report.liquidatable.len(),
            reorg_depth = report.reorg_depth,
            "block"
        );
        let now: BTreeSet<_> = report.liquidatable.iter().map(|c| c.user).collect();
        for c in report.liquidatable.iter().filter(|c| !known.contains(&c.user)) {
            tracing::warn!(
                borrower = %c.user,
                hf = %c.health_factor,
                onchain_hf = %c.onchain_health_factor.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
                debt_usd = u256_to_f64(c.debt_base) / 1e8,
                "liquidatable"
            );
        }
        known = now;
    })
    .await?;
    store.flush()?;
    Ok(())
}
