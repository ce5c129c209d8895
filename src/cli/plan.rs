//! `cascade plan`: the plan the keeper would make for one borrower now, or why it would make none.

use crate::{
    cli::positions::connect_checked,
    config::Config,
    planner::{PlanError, Planner, PlannerSettings, describe},
    protocol::aave_v3::AaveV3,
    store::Store,
    watcher::{Watcher, WatcherOptions},
};
use alloy::primitives::Address;
use eyre::{WrapErr, eyre};
use std::path::PathBuf;

/// Arguments of `cascade plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// The borrower.
    #[arg(long)]
    pub borrower: Address,
}

/// Runs `cascade plan`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::load(&args.config)?;
    let settings = PlannerSettings::from_config(&config)
        .map_err(|e| eyre!("{}: {e}", args.config.display()))?;
    let (rpc, _) = connect_checked(&config, &args.config).await?;
    let store = Store::open(&config.store.path, false)?;
    let aave = AaveV3::connect(
        &rpc,
        config.aave.addresses_provider,
        config.multicall.address,
    )
    .await
    .wrap_err("reading the Aave market behind aave.addresses_provider")?;
    let opts = WatcherOptions {
        deployment_block: config.aave.deployment_block,
        ..Default::default()
    };
    let mut watcher = Watcher::open(
        aave,
        rpc.clone(),
        store.market(config.aave.addresses_provider)?,
        opts,
    )?;
    watcher.sync().await?;
    store.flush()?;
    let position = watcher
        .positions()
        .find(|(u, _, _)| *u == args.borrower)
        .map(|(_, p, _)| p.clone())
        .ok_or_else(|| eyre!("{} has no debt on this market", args.borrower))?;
    let planner = Planner::new(rpc, watcher.protocol(), settings).await?;
    let market = watcher.protocol();
    let symbol = |a: Address| {
        let decimals = market.reserve_of(a).map_or(18, |r| r.config.decimals);
        let name = config
            .devnet
            .as_ref()
            .and_then(|d| d.assets.iter().find(|x| x.address == a))
            .map_or_else(|| format!("{a:#}"), |x| x.symbol.clone());
        (name, decimals)
    };
    match planner.plan(market, args.borrower, &position).await {
        Ok(plan) => {
            println!("{}", describe(&plan, symbol));
            tracing::info!(borrower = %plan.borrower, net_profit_base = plan.net_profit_base, "plan");
            Ok(())
        }
        Err(PlanError::Refused(reason)) => {
            println!("no liquidation for {}: {reason}", args.borrower);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
