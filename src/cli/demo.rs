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
    let devnet_cfg = d
        .config(&devnet.rpc_url, None, PathBuf::new())
        .devnet
        .ok_or_else(|| eyre!("the devnet config has no [devnet] section"))?;
    let asset = devnet_cfg
        .assets
        .iter()
        .find(|a| a.symbol.eq_ignore_ascii_case(&args.asset))
        .cloned()
        .ok_or_else(|| eyre!("no asset {} on the devnet", args.asset))?;

    let before = report::account_health(
        &devnet.rpc,
        d.multicall,
        d.aave.pool,
        &d.borrowers,
        BlockId::latest(),
    )
    .await?;
    let change = shock::shock_market(&devnet.rpc, &devnet_cfg, &asset, args.pct).await?;
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
    plan_all(&devnet, &args.write_config).await?;
    Ok(())
}

/// Plans every liquidatable position with the watcher and planner, as the keeper will, and prints
/// what each would earn (or why it would not be liquidated).
async fn plan_all(
    devnet: &crate::devnet::Devnet,
    config_path: &std::path::Path,
) -> eyre::Result<()> {
    use crate::{
        config::Config,
        planner::{PlanError, Planner, PlannerSettings},
        protocol::aave_v3::AaveV3,
        store::Store,
        watcher::{Watcher, WatcherOptions},
    };
    use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

    let config = Config::load(config_path)?;
    let settings = PlannerSettings::from_config(&config).map_err(|e| eyre!(e))?;
    let d = &devnet.deployment;
    // A fresh store for each demo: its devnet is new every time.
    let store = Store::open(std::path::Path::new(".cascade/demo-store"), true)?;
    let aave = AaveV3::connect(&devnet.rpc, d.aave.addresses_provider, d.multicall).await?;
    let opts = WatcherOptions {
        deployment_block: d.deployment_block,
        ..Default::default()
    };
    let mut watcher = Watcher::open(
        aave,
        devnet.rpc.clone(),
        store.market(d.aave.addresses_provider)?,
        opts,
    )?;
    watcher.sync().await?;
    let planner = Planner::new(devnet.rpc.clone(), watcher.protocol(), settings).await?;
    let symbol = |a: alloy::primitives::Address| {
        d.assets
            .iter()
            .find(|x| x.address == a)
            .map(|x| x.symbol.clone())
            .unwrap_or_default()
    };

    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "borrower",
        "sells → repays",
        "venue",
        "repay (USD)",
        "impact",
        "net profit (USD)",
    ]);
    let mut total = 0i128;
    let mut users = watcher.liquidatable();
    users.sort();
    for user in users {
        let Some(position) = watcher.position(user).cloned() else {
            continue;
        };
        match planner.plan(watcher.protocol(), user, &position).await {
            Ok(plan) => {
                let debt = watcher.protocol().reserve_of(plan.debt);
                let repay_usd = debt.map_or(0.0, |r| {
                    crate::planner::base_value(plan.amounts.debt_repaid, r.price, r.config.decimals)
                        .to_usd_f64()
                });
                total += plan.net_profit_base;
                table.add_row(vec![
                    Cell::new(user),
                    Cell::new(format!(
                        "{} → {}",
                        symbol(plan.collateral),
                        symbol(plan.debt)
                    )),
                    Cell::new(format!(
                        "{:?} {}%",
                        plan.venue,
                        plan.swap_fee as f64 / 10_000.0
                    )),
                    Cell::new(format!("{repay_usd:.2}")).set_alignment(CellAlignment::Right),
                    Cell::new(format!("{} bps", plan.price_impact_bps))
                        .set_alignment(CellAlignment::Right),
                    Cell::new(format!("{:.2}", plan.net_profit_base as f64 / 1e8))
                        .set_alignment(CellAlignment::Right),
                ]);
            }
            Err(PlanError::Refused(reason)) => {
                table.add_row(vec![
                    Cell::new(user),
                    Cell::new(format!("no plan: {reason}")),
                    Cell::new(""),
                    Cell::new(""),
                    Cell::new(""),
                    Cell::new(""),
                ]);
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "\nwhat the keeper would do: each plan sized for profit, sold on the best pool, simulated on the chain\n{table}"
    );
    println!(
        "total expected net profit: ${:.2} (after flash-loan premiums and gas)",
        total as f64 / 1e8
    );
    Ok(())
}
