//! `cascade plan`: the plan the keeper would make for one borrower now, or why it would make none.

use crate::{
    cli::positions::open_watcher,
    config::Config,
    planner::{PlanError, Planner, PlannerSettings, describe},
};
use alloy::primitives::Address;
use eyre::eyre;
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
    let (store, mut watcher, _) = open_watcher(&config, &args.config, false).await?;
    watcher.sync().await?;
    store.flush()?;
    let position = watcher
        .position(args.borrower)
        .cloned()
        .ok_or_else(|| eyre!("{} has no debt on this market", args.borrower))?;
    let planner = Planner::new(watcher.rpc().clone(), settings).await?;
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
