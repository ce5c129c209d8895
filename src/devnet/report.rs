//! What the devnet shows a person: the contracts, the reserves, and the borrowers by health factor,
//! read from the chain (`getUserAccountData` for every borrower, batched through Multicall3).

use super::{Deployment, market::ASSETS};
use crate::{
    chain::{ChainError, Rpc, bindings::Pool, multicall},
    units::{BaseAmount, HealthFactor},
};
use alloy::{eips::BlockId, primitives::Address};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

/// One borrower's position as the Pool reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountHealth {
    /// The borrower.
    pub borrower: Address,
    /// Total collateral in base currency.
    pub collateral: BaseAmount,
    /// Total debt in base currency.
    pub debt: BaseAmount,
    /// Health factor.
    pub health_factor: HealthFactor,
}

/// `getUserAccountData` for each borrower at `block`, in batches through Multicall3.
pub async fn account_health(
    rpc: &Rpc,
    multicall: Address,
    pool: Address,
    borrowers: &[Address],
    block: BlockId,
) -> Result<Vec<AccountHealth>, ChainError> {
    let calls: Vec<_> = borrowers
        .iter()
        .map(|&user| (pool, Pool::getUserAccountDataCall { user }))
        .collect();
    let results = multicall::aggregate3(rpc, multicall, &calls, block).await?;
    Ok(borrowers
        .iter()
        .zip(results)
        .filter_map(|(&borrower, r)| {
            let data = r.ok()?;
            Some(AccountHealth {
                borrower,
                collateral: BaseAmount(data.totalCollateralBase),
                debt: BaseAmount(data.totalDebtBase),
                health_factor: HealthFactor(data.healthFactor),
            })
        })
        .collect())
}

/// Health-factor bands for the summary, as (label, upper bound in thousandths).
const BANDS: [(&str, u64); 8] = [
    ("< 1.00  liquidatable", 1_000),
    ("1.00 – 1.05", 1_050),
    ("1.05 – 1.10", 1_100),
    ("1.10 – 1.25", 1_250),
    ("1.25 – 1.50", 1_500),
    ("1.50 – 2.00", 2_000),
    ("2.00 – 3.00", 3_000),
    ("≥ 3.00", u64::MAX),
];

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// Borrowers counted by health-factor band, with their debt.
pub fn health_bands(accounts: &[AccountHealth]) -> Table {
    let mut t = table(&["health factor", "borrowers", "debt (USD)"]);
    let mut lower = HealthFactor(alloy::primitives::U256::ZERO);
    for (label, upper_milli) in BANDS {
        let upper = if upper_milli == u64::MAX {
            HealthFactor::INFINITE
        } else {
            HealthFactor::from_milli(upper_milli)
        };
        let in_band: Vec<_> = accounts
            .iter()
            .filter(|a| {
                a.health_factor >= lower
                    && (a.health_factor < upper || upper == HealthFactor::INFINITE)
            })
            .collect();
        let debt = in_band
            .iter()
            .fold(BaseAmount::default(), |acc, a| BaseAmount(acc.0 + a.debt.0));
        t.add_row(vec![
            Cell::new(label),
            Cell::new(in_band.len()).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.0}", debt.to_usd_f64())).set_alignment(CellAlignment::Right),
        ]);
        lower = upper;
    }
    t
}

/// Positions below a health factor of 1, worst first.
pub fn liquidatable(accounts: &[AccountHealth]) -> Table {
    let mut rows: Vec<_> = accounts
        .iter()
        .filter(|a| a.health_factor.is_liquidatable())
        .collect();
    rows.sort_by_key(|a| a.health_factor);
    let mut t = table(&[
        "borrower",
        "health factor",
        "collateral (USD)",
        "debt (USD)",
    ]);
    for a in rows {
        t.add_row(vec![
            Cell::new(a.borrower),
            Cell::new(a.health_factor).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.2}", a.collateral.to_usd_f64()))
                .set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.2}", a.debt.to_usd_f64())).set_alignment(CellAlignment::Right),
        ]);
    }
    t
}

/// Every deployed contract.
pub fn contracts(deployment: &Deployment) -> Table {
    let mut t = table(&["contract", "address"]);
    for (name, address) in &deployment.contracts {
        t.add_row(vec![Cell::new(name), Cell::new(address)]);
    }
    t
}

/// The reserves with their risk parameters and the oracle's current prices.
pub fn reserves(deployment: &Deployment, prices: &[BaseAmount]) -> Table {
    let mut t = table(&[
        "reserve",
        "decimals",
        "price (USD)",
        "LTV",
        "liq. threshold",
        "liq. bonus",
        "token",
    ]);
    for ((asset, spec), price) in deployment.assets.iter().zip(ASSETS.iter()).zip(prices) {
        t.add_row(vec![
            Cell::new(&asset.symbol),
            Cell::new(asset.decimals).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.4}", price.to_usd_f64())).set_alignment(CellAlignment::Right),
            Cell::new(spec.ltv).set_alignment(CellAlignment::Right),
            Cell::new(spec.liquidation_threshold).set_alignment(CellAlignment::Right),
            Cell::new(spec.liquidation_bonus).set_alignment(CellAlignment::Right),
            Cell::new(asset.address),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(hf_milli: u64) -> AccountHealth {
        AccountHealth {
            borrower: Address::ZERO,
            collateral: BaseAmount::from_usd(100),
            debt: BaseAmount::from_usd(50),
            health_factor: HealthFactor::from_milli(hf_milli),
        }
    }

    #[test]
    fn bands_count_every_account_once() {
        let accounts: Vec<_> = [990, 1_000, 1_049, 1_100, 2_999, 3_000, 9_000]
            .map(account)
            .into();
        let rendered = health_bands(&accounts).to_string();
        let counts: Vec<usize> = rendered
            .lines()
            .filter_map(|l| l.split('┆').nth(1).and_then(|c| c.trim().parse().ok()))
            .collect();
        assert_eq!(counts, vec![1, 2, 0, 1, 0, 0, 1, 2]);
        assert_eq!(liquidatable(&accounts).row_count(), 1);
    }
}
