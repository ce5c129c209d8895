//! `cascade devnet`: the real protocols on a local anvil, with borrowers, until Ctrl-C.

use crate::{
    chain::bindings::AaveOracle,
    devnet::{Devnet, DevnetOptions, aave::DevnetAave, report},
    units::BaseAmount,
};
use alloy::eips::BlockId;
use eyre::WrapErr;
use std::path::PathBuf;

/// Arguments of `cascade devnet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port for anvil.
    #[arg(long, default_value_t = 8545)]
    pub port: u16,
    /// Deploy on this anvil instead of starting one.
    #[arg(long)]
    pub rpc_url: Option<String>,
    /// Borrowers to open.
    #[arg(long, default_value_t = 50)]
    pub borrowers: u64,
    /// Mine a block every S seconds once deployed (default: a block per transaction).
    #[arg(long, value_name = "S")]
    pub block_time: Option<u64>,
    /// Gas a block holds once deployed (default: anvil's 30,000,000; Ethereum's is 60,000,000; at
    /// least 1,000,000, a batch of liquidations).
    #[arg(long, value_name = "GAS", value_parser = clap::value_parser!(u64).range(1_000_000..))]
    pub block_gas_limit: Option<u64>,
    /// Install the OP stack's GasPriceOracle and L1Block predeploys with L1 values, so every plan on
    /// this devnet carries an L1 data fee.
    #[arg(long)]
    pub op_stack: bool,
    /// Where to write the keeper config for this devnet.
    #[arg(long, value_name = "PATH", default_value = "config/devnet.toml")]
    pub write_config: PathBuf,
    /// The Aave to deploy: 3.6, compiled from its sources (as markets run it today), or 3.0, from
    /// its published artifacts.
    #[arg(long, value_name = "VERSION", default_value = "3.6")]
    pub aave: DevnetAave,
}

/// Runs `cascade devnet`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let opts = DevnetOptions {
        port: Some(args.port),
        rpc_url: args.rpc_url.clone(),
        borrowers: args.borrowers,
        block_time_secs: args.block_time,
        block_gas_limit: args.block_gas_limit,
        op_stack: args.op_stack,
        aave: args.aave,
    };
    let devnet = start_and_describe(&opts, &args.write_config).await?;
    println!("\ndevnet running at {}; Ctrl-C to stop.", devnet.rpc_url);
    // SIGTERM too (a service manager, `kill`): anvil is stopped with the devnet either way.
    crate::telemetry::shutdown_signal()
        .await
        .wrap_err("waiting for Ctrl-C")?;
    println!("stopping anvil");
    Ok(())
}

/// Starts the devnet, writes its config and prints the summary tables. Shared with the demo.
pub async fn start_and_describe(
    opts: &DevnetOptions,
    config_path: &std::path::Path,
) -> eyre::Result<Devnet> {
    println!(
        "deploying Aave {}, Uniswap V3 and Multicall3, opening {} borrowers…",
        opts.aave.release(),
        opts.borrowers
    );
    let devnet = Devnet::start(opts).await?;
    let d = &devnet.deployment;
    println!(
        "deployed and seeded in {:.1} s (chain id {})\n",
        devnet.setup_secs, d.chain_id
    );

    let store = PathBuf::from(".cascade/devnet");
    d.config(&devnet.rpc_url, opts.block_time_secs, store)
        .write(config_path, "cascade config for the local devnet, written by `cascade devnet`.\nThe addresses are deterministic: the same on every fresh devnet.")
        .wrap_err_with(|| format!("writing {}", config_path.display()))?;

    println!("{}\n", report::contracts(d));
    println!("{}\n", report::reserves(d, &oracle_prices(&devnet).await?));
    let health = report::account_health(
        &devnet.rpc,
        d.multicall,
        d.aave.pool,
        &d.borrowers,
        BlockId::latest(),
    )
    .await?;
    println!(
        "borrowers by health factor\n{}",
        report::health_bands(&health)
    );
    println!("\nconfig written to {}", config_path.display());
    Ok(devnet)
}

/// The AaveOracle's current price of every devnet asset.
pub async fn oracle_prices(devnet: &Devnet) -> eyre::Result<Vec<BaseAmount>> {
    let d = &devnet.deployment;
    let prices = crate::chain::view(
        &devnet.rpc,
        d.aave.oracle,
        AaveOracle::getAssetsPricesCall {
            assets: d.assets.iter().map(|a| a.address).collect(),
        },
        "getAssetsPrices",
    )
    .await?;
    Ok(prices.into_iter().map(BaseAmount).collect())
}
