//! `cascade demo`: the devnet, a price crash, and what it makes liquidatable.

use super::devnet::{oracle_prices, start_and_describe};
use crate::devnet::{
    DevnetOptions, report,
    shock::{self, PriceMoveBps},
};
use alloy::eips::BlockId;
use eyre::eyre;
use std::path::PathBuf;

/// Arguments of `cascade demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Borrowers to open.
    #[arg(long, default_value_t = 50)]
    pub borrowers: u64,
    /// The asset whose price crashes.
    #[arg(long, default_value = "WETH")]
    pub asset: String,
    /// The crash, in percent.
    #[arg(long, allow_hyphen_values = true, default_value = "-20")]
    pub pct: PriceMoveBps,
    /// Where to write the demo devnet's config (it lives only as long as the demo).
    #[arg(long, default_value = ".cascade/demo.toml")]
    pub write_config: PathBuf,
}

/// Runs `cascade demo`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let opts = DevnetOptions {
        borrowers: args.borrowers,
        ..Default::default()
    };
    let devnet = start_and_describe(&opts, &args.write_config).await?;
    let d = &devnet.deployment;
    let asset = d
        .config(&devnet.rpc_url, None, PathBuf::new())
        .devnet
        .and_then(|dv| {
            dv.assets
                .into_iter()
                .find(|a| a.symbol.eq_ignore_ascii_case(&args.asset))
        })
        .ok_or_else(|| eyre!("no asset {} on the devnet", args.asset))?;

    let before = report::account_health(
        &devnet.rpc,
        d.multicall,
        d.aave.pool,
        &d.borrowers,
        BlockId::latest(),
    )
    .await?;
    let change = shock::shock(&devnet.rpc, &asset, args.pct).await?;
    println!(
        "\n── price shock: {} {} → {} ──\n",
        asset.symbol, change.old, change.new
    );
    println!("{}\n", report::reserves(d, &oracle_prices(&devnet).await?));
    let after = report::account_health(
        &devnet.rpc,
        d.multicall,
        d.aave.pool,
        &d.borrowers,
        BlockId::latest(),
    )
    .await?;
    println!(
        "borrowers by health factor after the shock\n{}",
        report::health_bands(&after)
    );
    let newly = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a.health_factor.is_liquidatable() && !b.health_factor.is_liquidatable())
        .count();
    println!(
        "\n{newly} of {} positions became liquidatable:\n{}",
        after.len(),
        report::liquidatable(&after)
    );
    Ok(())
}
