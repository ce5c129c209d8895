//! What became of each liquidation, and the table a run ends with.

use crate::{
    executor::journal::{JournalEntry, TxState},
    planner::base_value,
    protocol::MarketLiquidation,
};
use alloy::primitives::{Address, U256};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

/// How a liquidation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum OutcomeKind {
    /// Ours, included and successful.
    Won,
    /// Ours, included and reverted (gas lost).
    Reverted,
    /// Ours, replaced by a cancellation because the position was gone.
    Cancelled,
    /// Ours, its nonce taken by another transaction.
    Dropped,
    /// Someone else liquidated a position we had seen liquidatable.
    Lost,
}

impl OutcomeKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Won => "won",
            Self::Reverted => "reverted",
            Self::Cancelled => "cancelled",
            Self::Dropped => "dropped",
            Self::Lost => "lost",
        }
    }
}

/// One liquidation's outcome. Amounts in base units (USD × 1e8) are integers; floats only in display.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The borrower.
    pub borrower: Address,
    /// Collateral and debt assets.
    pub pair: (Address, Address),
    /// How it ended.
    pub kind: OutcomeKind,
    /// Debt repaid (debt asset units).
    pub debt_repaid: U256,
    /// Debt repaid, base units (0 when the price was unknown).
    pub debt_repaid_base: i128,
    /// The Liquidator's profit from its `Liquidated` event (debt asset units).
    pub liquidator_profit: U256,
    /// The same in base units.
    pub liquidator_profit_base: i128,
    /// Gas (and L1 fee) paid, wei.
    pub fee_paid_wei: U256,
    /// Gas paid, base units.
    pub fee_paid_base: i128,
    /// The plan's expected net profit, base units.
    pub expected_profit_base: i128,
    /// The block we first saw the position below 1.
    pub crossed_block: Option<u64>,
    /// The block it was planned at.
    pub planned_block: u64,
    /// The block it was mined in (ours), or the winner's block (lost).
    pub included_block: Option<u64>,
    /// For a lost one: who won, and how many blocks ahead of us.
    pub winner: Option<(Address, u64)>,
    /// Made on a dry-run fork, never sent upstream.
    pub dry_run: bool,
}

impl Outcome {
    /// From a final journal entry; `debt_price` is the debt reserve's (price, decimals).
    pub fn from_entry(
        entry: &JournalEntry,
        crossed_block: Option<u64>,
        debt_price: Option<(U256, u8)>,
    ) -> Self {
        let to_base = |amount: U256| {
            debt_price.map_or(0, |(p, d)| {
                base_value(amount, p, d).0.saturating_to::<i128>()
            })
        };
        let (kind, included_block, profit, fee) = match &entry.state {
            TxState::Included {
                block,
                success,
                profit,
                fee_paid_wei,
                ..
            } => (
                if *success {
                    OutcomeKind::Won
                } else {
                    OutcomeKind::Reverted
                },
                Some(*block),
                profit.unwrap_or_default(),
                *fee_paid_wei,
            ),
            TxState::Cancelled {
                block,
                fee_paid_wei,
                ..
            } => (
                OutcomeKind::Cancelled,
                Some(*block),
                U256::ZERO,
                *fee_paid_wei,
            ),
            TxState::Dropped { .. } | TxState::Prepared | TxState::Sent => {
                (OutcomeKind::Dropped, None, U256::ZERO, U256::ZERO)
            }
        };
        Self {
            borrower: entry.borrower,
            pair: entry.pair,
            kind,
            debt_repaid: if kind == OutcomeKind::Won {
                entry.debt_repaid
            } else {
                U256::ZERO
            },
            debt_repaid_base: if kind == OutcomeKind::Won {
                to_base(entry.debt_repaid)
            } else {
                0
            },
            liquidator_profit: profit,
            liquidator_profit_base: to_base(profit),
            fee_paid_wei: fee,
            fee_paid_base: 0,
            expected_profit_base: entry.expected_profit_base,
            crossed_block,
            planned_block: entry.planned_block,
            included_block,
            winner: None,
            dry_run: false,
        }
    }

    /// Someone else's liquidation of a position we pursued.
    pub fn lost(l: &MarketLiquidation, crossed_block: u64, blocks_ahead: u64) -> Self {
        Self {
            borrower: l.user,
            pair: (l.collateral, l.debt),
            kind: OutcomeKind::Lost,
            debt_repaid: U256::ZERO,
            debt_repaid_base: 0,
            liquidator_profit: U256::ZERO,
            liquidator_profit_base: 0,
            fee_paid_wei: U256::ZERO,
            fee_paid_base: 0,
            expected_profit_base: 0,
            crossed_block: Some(crossed_block),
            planned_block: crossed_block,
            included_block: Some(l.block),
            winner: Some((l.liquidator, blocks_ahead)),
            dry_run: false,
        }
    }

    /// The Liquidator's profit less the gas paid, base units.
    pub fn net_profit_base(&self) -> i128 {
        self.liquidator_profit_base - self.fee_paid_base
    }

    /// Blocks from the position crossing 1 to the liquidation's inclusion.
    pub fn blocks_from_crossing(&self) -> Option<u64> {
        Some(self.included_block?.saturating_sub(self.crossed_block?))
    }
}

/// The closing table: one row per outcome kind with counts, debt repaid, profit, gas, and blocks from
/// crossing to inclusion (median and worst).
pub fn table(outcomes: &[Outcome]) -> String {
    let usd = |b: i128| format!("{:.2}", b as f64 / 1e8);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "outcome",
        "liquidations",
        "positions",
        "debt repaid (USD)",
        "profit after gas (USD)",
        "gas and fees (USD)",
        "blocks crossing → inclusion (median / max)",
    ]);
    for kind in [
        OutcomeKind::Won,
        OutcomeKind::Reverted,
        OutcomeKind::Cancelled,
        OutcomeKind::Dropped,
        OutcomeKind::Lost,
    ] {
        let rows: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == kind).collect();
        if rows.is_empty() {
            continue;
        }
        let mut positions: Vec<Address> = rows.iter().map(|o| o.borrower).collect();
        positions.sort();
        positions.dedup();
        let mut blocks: Vec<u64> = rows
            .iter()
            .filter_map(|o| o.blocks_from_crossing())
            .collect();
        blocks.sort();
        let blocks = match (blocks.get(blocks.len() / 2), blocks.last()) {
            (Some(median), Some(max)) => format!("{median} / {max}"),
            _ => "–".into(),
        };
        let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
        t.add_row(vec![
            Cell::new(kind.label()),
            right(rows.len().to_string()),
            right(positions.len().to_string()),
            right(usd(rows.iter().map(|o| o.debt_repaid_base).sum())),
            right(usd(rows.iter().map(|o| o.net_profit_base()).sum())),
            right(usd(rows.iter().map(|o| o.fee_paid_base).sum())),
            right(blocks),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::journal::Attempt;
    use alloy::primitives::B256;

    fn entry(state: TxState) -> JournalEntry {
        JournalEntry {
            borrower: Address::repeat_byte(1),
            pair: (Address::repeat_byte(2), Address::repeat_byte(3)),
            nonce: 0,
            attempts: vec![Attempt {
                hash: B256::ZERO,
                raw: Default::default(),
                max_fee_per_gas: 1,
                max_priority_fee_per_gas: 1,
                signed_at_ms: 0,
                cancel: false,
            }],
            state,
            fee_cap_wei: U256::ZERO,
            gas_limit: 500_000,
            planned_block: 10,
            expected_profit_base: 5 * 100_000_000,
            debt_repaid: U256::from(1_000_000_000u64),
            sale: None,
        }
    }

    #[test]
    fn a_won_liquidation_counts_its_debt_profit_and_blocks() {
        let won = Outcome::from_entry(
            &entry(TxState::Included {
                hash: B256::ZERO,
                block: 11,
                success: true,
                profit: Some(U256::from(7_000_000u64)), // 7 USDC
                fee_paid_wei: U256::from(1u8),
            }),
            Some(10),
            Some((U256::from(100_000_000u64), 6)), // $1, 6 decimals
        );
        assert_eq!(won.kind, OutcomeKind::Won);
        assert_eq!(won.debt_repaid_base, 1_000 * 100_000_000); // 1,000 USDC
        assert_eq!(won.liquidator_profit_base, 7 * 100_000_000);
        assert_eq!(won.blocks_from_crossing(), Some(1));
        let t = table(&[won]);
        assert!(
            t.contains("won") && t.contains("1000.00") && t.contains("7.00") && t.contains("1 / 1"),
            "{t}"
        );
    }

    #[test]
    fn a_reverted_liquidation_repays_nothing() {
        let reverted = Outcome::from_entry(
            &entry(TxState::Included {
                hash: B256::ZERO,
                block: 11,
                success: false,
                profit: None,
                fee_paid_wei: U256::from(5u8),
            }),
            Some(10),
            Some((U256::from(100_000_000u64), 6)),
        );
        assert_eq!(reverted.kind, OutcomeKind::Reverted);
        assert_eq!(reverted.debt_repaid_base, 0);
        assert_eq!(reverted.fee_paid_wei, U256::from(5u8));
    }
}
