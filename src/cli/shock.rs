//! `cascade shock`: move an asset's oracle price on a devnet.

use crate::{
    chain,
    config::Config,
    devnet::shock::{self, PriceMoveBps},
};
use eyre::{WrapErr, eyre};
use std::path::PathBuf;

/// Arguments of `cascade shock`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The devnet config written by `cascade devnet`.
    #[arg(long)]
    pub config: PathBuf,
    /// The asset's symbol (WETH, USDC, WBTC, ALT).
    #[arg(long)]
    pub asset: String,
    /// The move in percent, e.g. -20 or -12.5.
    #[arg(long, allow_hyphen_values = true)]
    pub pct: PriceMoveBps,
}

/// Runs `cascade shock`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::load(&args.config)?;
    let devnet = config.devnet.as_ref().ok_or_else(|| {
        eyre!("{} has no [devnet] section: `cascade shock` only moves prices on a devnet written by `cascade devnet`", args.config.display())
    })?;
    let asset = devnet
        .assets
        .iter()
        .find(|a| a.symbol.eq_ignore_ascii_case(&args.asset))
        .ok_or_else(|| {
            let known: Vec<_> = devnet.assets.iter().map(|a| a.symbol.as_str()).collect();
            eyre!(
                "no asset {} on this devnet; it has {}",
                args.asset,
                known.join(", ")
            )
        })?;
    let url = config
        .rpc_urls(&args.config)?
        .into_iter()
        .next()
        .ok_or_else(|| eyre!("no RPC URL"))?;
    let rpc = chain::connect_http(&url)?;
    let change = shock::shock_market(&rpc, devnet, asset, args.pct)
        .await
        .wrap_err_with(|| format!("moving {} at {}", asset.symbol, chain::redact_url(&url)))?;
    println!(
        "{}: {} → {} (oracle, and every Uniswap pool holding it)",
        asset.symbol, change.old, change.new
    );
    Ok(())
}
