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
    map::{self, MapParams, Observed},
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

/// The whole fall after `k` steps of `step` each, bps: each step moves the price from where the
/// last one left it.
fn cumulative_drop_bps(step: PriceMoveBps, k: u32) -> u32 {
    let kept = (1.0 + step.0 as f64 / 10_000.0).powi(k as i32);
    ((1.0 - kept) * 10_000.0).round().clamp(0.0, 10_000.0) as u32
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

    // The map of the crash to come, read before it from a store of its own (the keeper rebuilds its
    // own). The devnet's oracle is set by the crash, not by its pools: the prediction to compare with
    // is pass-through 0; a line says what an oracle following the pools would add.
    let drops: Vec<u32> = (1..=args.steps)
        .map(|k| cumulative_drop_bps(args.step, k))
        .collect();
    let mut map_config = config.clone();
    map_config.store.path = PathBuf::from(".cascade/demo-map-store");
    let read = super::map::read_market(&map_config, &args.write_config, true, None).await?;
    let map_params = |pass_through_bps| MapParams {
        assets: vec![asset.address],
        to_bps: drops.last().copied().unwrap_or(0),
        step_bps: drops.first().copied().unwrap_or(1).max(1),
        pass_through_bps,
        max_rounds: 20,
    };
    let names = [asset.symbol.clone()];
    let predicted = map::compute_at(&read.snapshot, &map_params(0), &drops, &names);
    let following = map::compute_at(&read.snapshot, &map_params(10_000), &drops, &names);
    println!(
        "\n── the cascade map of the crash to come: {} falling in {} steps of {}%, at block {} ──\n{}",
        asset.symbol,
        args.steps,
        args.step.0 as f64 / 100.0,
        predicted.block,
        map::table(&predicted)
    );
    if let (Some(deaf), Some(follows)) = (predicted.steps.last(), following.steps.last()) {
        println!(
            "were the oracle to follow its pools, {:.1}% would make ${:.0} of debt liquidatable ({} round{}), against ${:.0} with the oracle set by the crash alone",
            deaf.drop_pct,
            follows.cascade_debt_usd,
            follows.rounds,
            if follows.rounds == 1 { "" } else { "s" },
            deaf.cascade_debt_usd
        );
    }

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

    // Each step's block, and every borrower below 1 at a step's block so far.
    let mut step_blocks = Vec::new();
    let mut fallen: std::collections::HashSet<alloy::primitives::Address> = Default::default();
    let mut fallen_by_step = Vec::new();
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
        fallen.extend(
            health
                .iter()
                .filter(|h| h.health_factor.is_liquidatable())
                .map(|h| h.borrower),
        );
        step_blocks.push(block);
        fallen_by_step.push(fallen.len());
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
    // What the map predicted beside what happened, by the end of each step (the next step's block).
    let observed: Vec<Observed> = fallen_by_step
        .iter()
        .enumerate()
        .map(|(i, &fallen)| {
            let by = step_blocks.get(i + 1).copied().unwrap_or(u64::MAX);
            let won: Vec<_> = outcomes
                .iter()
                .filter(|o| o.kind == OutcomeKind::Won && o.included_block.is_some_and(|b| b < by))
                .collect();
            Observed {
                fallen,
                liquidations: won.len(),
                repaid_usd: won.iter().map(|o| o.debt_repaid_base as f64).sum::<f64>() / 1e8,
            }
        })
        .collect();
    println!(
        "what the map predicted before the crash, beside what the chain and the keeper did (the map sizes\n\
         each fall at once; the crash came in steps, each liquidated before the next):\n{}",
        map::prediction_table(&predicted, &observed)
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
