//! `cascade positions`: the positions closest to liquidation, from the store after catching up.

use crate::{
    chain,
    config::Config,
    protocol::aave_v3::AaveV3,
    store::Store,
    units::{BaseAmount, HealthFactor, u256_to_f64},
    watcher::Watcher,
};
use alloy::primitives::U256;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use eyre::{WrapErr, eyre};
use std::path::PathBuf;

/// Arguments of `cascade positions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// How many positions to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Delete the store and rebuild it from the chain.
    #[arg(long)]
    pub rebuild_store: bool,
}

/// Runs `cascade positions`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::load(&args.config)?;
    let (store, mut watcher, _) = open_watcher(&config, &args.config, args.rebuild_store).await?;
    let report = watcher.sync().await?;
    store.flush()?;

    let block = report.block.map(|b| b.number).unwrap_or_default();
    let mut rows: Vec<_> = watcher
        .positions()
        .map(|(user, position, _)| {
            (
                user,
                position,
                watcher.current_health(user).unwrap_or_default(),
            )
        })
        .collect();
    rows.sort_by_key(|(_, _, h)| h.health_factor);

    let market = watcher.protocol();
    let largest = |position: &crate::store::StoredPosition, collateral: bool| -> String {
        position
            .holdings
            .iter()
            .filter_map(|h| {
                let r = market.reserves.get(&h.reserve_id)?;
                let amount = if collateral {
                    if !h.collateral_enabled {
                        return None;
                    }
                    market.collateral_balance(h)
                } else {
                    market.debt_balance(h)
                };
                let value = BaseAmount::of_tokens(amount, BaseAmount(r.price), r.config.decimals);
                (value.0 > U256::ZERO).then_some((value, r.asset))
            })
            .max_by_key(|(v, _)| *v)
            .map(|(v, asset)| format!("{} ${:.0}", symbol_of(&config, asset), v.to_usd_f64()))
            .unwrap_or_else(|| "-".into())
    };

    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "borrower",
        "health factor",
        "collateral (USD)",
        "debt (USD)",
        "largest collateral",
        "largest debt",
    ]);
    for (user, position, health) in rows.iter().take(args.limit) {
        table.add_row(vec![
            Cell::new(user),
            Cell::new(HealthFactor(health.health_factor)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.2}", u256_to_f64(health.collateral_base) / 1e8))
                .set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.2}", u256_to_f64(health.debt_base) / 1e8))
                .set_alignment(CellAlignment::Right),
            Cell::new(largest(position, true)),
            Cell::new(largest(position, false)),
        ]);
    }
    println!("{table}");
    let below = rows
        .iter()
        .filter(|(_, _, h)| h.health_factor < crate::units::WAD)
        .count();
    println!(
        "{} positions at block {block}; {below} below a health factor of 1",
        rows.len()
    );
    Ok(())
}

/// The configured market's watcher over the configured store, after checking the RPC: what every
/// command that reads positions starts from. Returns the store (to flush), the watcher, and the URL.
pub async fn open_watcher(
    config: &Config,
    path: &std::path::Path,
    rebuild_store: bool,
) -> eyre::Result<(Store, Watcher<AaveV3>, String)> {
    let (rpc, url) = connect_checked(config, path).await?;
    let (store, watcher) = crate::keeper::startup::open_watcher(config, rpc, rebuild_store).await?;
    Ok((store, watcher, url))
}

/// Connects to the config's first RPC URL and checks it serves the configured chain.
pub async fn connect_checked(
    config: &Config,
    path: &std::path::Path,
) -> eyre::Result<(chain::Rpc, String)> {
    let url = config
        .rpc_urls(path)?
        .into_iter()
        .next()
        .ok_or_else(|| eyre!("no RPC URL in the config"))?;
    let rpc = chain::connect_http(&url)?;
    let shown_url = chain::redact_url(&url);
    let chain_id = alloy::providers::Provider::get_chain_id(&rpc)
        .await
        .wrap_err_with(|| format!("cannot reach the RPC at {shown_url}: is the node running?"))?;
    if chain_id != config.chain.chain_id {
        return Err(eyre!(
            "the RPC at {shown_url} is chain {chain_id}, the config says {}: check chain.rpc_urls and chain.chain_id",
            config.chain.chain_id
        ));
    }
    Ok((rpc, url))
}

/// A symbol for an asset: from the devnet section when there is one, else the address.
fn symbol_of(config: &Config, asset: alloy::primitives::Address) -> String {
    config
        .devnet
        .as_ref()
        .and_then(|d| d.assets.iter().find(|a| a.address == asset))
        .map(|a| a.symbol.clone())
        .unwrap_or_else(|| format!("{asset:#}"))
}
