//! `cascade demo`: the devnet, the keeper, and a price crash in steps; the keeper liquidates through
//! its flash-swap contract as positions cross 1, and a table sums up what happened.

use super::devnet::{oracle_prices, start_and_describe};
use crate::{
    chain::{bindings::Liquidator, send_call},
    cli::run::run_keeper,
    devnet::{
        DevnetOptions, report,
        shock::{self, PriceMoveBps},
    },
    keeper::{
        OutcomeKind,
        startup::{self, RunOptions},
        summary,
    },
};
use alloy::{eips::BlockId, primitives::address, providers::Provider};
use eyre::{WrapErr, eyre};
use std::{path::PathBuf, time::Duration};
use tokio_util::sync::CancellationToken;

/// anvil's second dev account and its published key: the demo keeper's account, made an operator of
/// the Liquidator (the devnet admin owns it). Public test material, never a real key.
const DEMO_KEEPER: alloy::primitives::Address =
    address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
const DEMO_KEEPER_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// Arguments of `cascade demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Borrowers to open.
    #[arg(long, default_value_t = 50)]
    pub borrowers: u64,
    /// The Aave the devnet deploys: 3.6 (from its sources) or 3.0 (from its artifacts).
    #[arg(long, value_name = "VERSION", default_value = "3.6")]
    pub aave: crate::devnet::aave::DevnetAave,
    /// The asset whose price crashes.
    #[arg(long, default_value = "WETH")]
    pub asset: String,
    /// Each step of the crash, in percent.
    #[arg(long, allow_hyphen_values = true, default_value = "-7")]
    pub step: PriceMoveBps,
    /// Steps of the crash.
    #[arg(long, default_value_t = 4)]
    pub steps: u32,
    /// Seconds between steps (the devnet mines a block every second).
    #[arg(long, default_value_t = 4)]
    pub pause: u64,
    /// Where to write the demo devnet's config (it lives only as long as the demo).
    #[arg(long, default_value = ".cascade/demo.toml")]
    pub write_config: PathBuf,
}

/// Runs `cascade demo`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let opts = DevnetOptions {
        borrowers: args.borrowers,
        block_time_secs: Some(1),
        aave: args.aave,
        ..Default::default()
    };
    let devnet = start_and_describe(&opts, &args.write_config).await?;
    let d = &devnet.deployment;
    let mut config = d.config(
        &devnet.rpc_url,
        Some(1),
        PathBuf::from(".cascade/demo-store"),
    );
    config.metrics = None;
    config
        .executor
        .as_mut()
        .expect("devnet configs have [executor]")
        .account = DEMO_KEEPER;
    let devnet_cfg = config
        .devnet
        .clone()
        .ok_or_else(|| eyre!("the devnet config has no [devnet] section"))?;
    let asset = devnet_cfg
        .assets
        .iter()
        .find(|a| a.symbol.eq_ignore_ascii_case(&args.asset))
        .cloned()
        .ok_or_else(|| eyre!("no asset {} on the devnet", args.asset))?;
    send_call(
        &devnet.rpc,
        d.admin,
        d.liquidator,
        Liquidator::setOperatorCall {
            operator: DEMO_KEEPER,
            allowed: true,
        },
        "make the demo keeper an operator of the Liquidator",
    )
    .await?;

    println!("\n── starting the keeper ──\n");
    let running = startup::start(
        &config,
        &args.write_config,
        &RunOptions {
            rebuild_store: true,
            key: Some(DEMO_KEEPER_KEY.parse().wrap_err("the demo key")?),
            ..Default::default()
        },
    )
    .await?;
    let cancel = CancellationToken::new();
    let keeper = {
        let cancel = cancel.clone();
        tokio::spawn(async move { run_keeper(running, None, cancel).await })
    };
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let _ = crate::telemetry::shutdown_signal().await;
        on_signal.cancel();
    });
    // Let the keeper discover the borrowers before the market moves.
    tokio::time::sleep(Duration::from_secs(3)).await;

    for step in 1..=args.steps {
        if cancel.is_cancelled() {
            break;
        }
        let change = shock::shock_market(&devnet.rpc, &devnet_cfg, &asset, args.step).await?;
        let block = devnet.rpc.get_block_number().await?;
        let health = report::account_health(
            &devnet.rpc,
            d.multicall,
            d.aave.pool,
            &d.borrowers,
            BlockId::number(block),
        )
        .await?;
        let below = health
            .iter()
            .filter(|h| h.health_factor.is_liquidatable())
            .count();
        println!(
            "\n── crash step {step}/{}: {} {} → {} in block {block}; {below} positions below a health factor of 1 ──\n",
            args.steps, asset.symbol, change.old, change.new
        );
        tokio::time::sleep(Duration::from_secs(args.pause)).await;
    }
    cancel.cancel();
    let keeper = keeper.await.wrap_err("the keeper task")??;
    let outcomes = keeper.outcomes();

    let after = report::account_health(
        &devnet.rpc,
        d.multicall,
        d.aave.pool,
        &d.borrowers,
        BlockId::latest(),
    )
    .await?;
    println!(
        "\n{}\n",
        report::reserves(d, &oracle_prices(&devnet).await?)
    );
    println!(
        "borrowers by health factor at the end\n{}",
        report::health_bands(&after)
    );
    let won = outcomes
        .iter()
        .filter(|o| o.kind == OutcomeKind::Won)
        .count();
    println!(
        "\nthe keeper made {won} liquidations through its flash-swap Liquidator (each repays part of a\n\
         position's debt with what Uniswap pays for the collateral it will seize, and keeps the rest):\n{}",
        summary::table(outcomes)
    );
    let left = after
        .iter()
        .filter(|h| h.health_factor.is_liquidatable())
        .count();
    if left > 0 {
        println!(
            "{left} positions remain below 1: what is left of them is too small to pay for its gas (the keeper logged why)."
        );
    }
    Ok(())
}
