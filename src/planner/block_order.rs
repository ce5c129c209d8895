//! The order a block's transactions are sent in (their nonces), for when the block cannot hold them
//! all: a fall that takes a few hundred positions below 1 at once outgrows a block (30M gas holds
//! about 160 liquidations), and what does not fit waits for the next. Our transactions are mined in
//! nonce order, so the order decides which wait: the most profit for the block's room goes first.

use super::Batch;
use alloy::primitives::Address;

/// What the order needs of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// Its net profit, base currency units (negative for a loss; a built plan has none).
    pub profit_base: i128,
    /// Its gas limit: what a block's room is counted against.
    pub gas_limit: u64,
    /// The pools its sales sell into.
    pub pools: Vec<Address>,
}

impl Load {
    /// A transaction's load.
    pub fn of(batch: &Batch) -> Self {
        Self {
            profit_base: batch.plans.iter().map(|p| p.net_profit_base).sum(),
            gas_limit: batch.gas_limit,
            pools: batch.plans.iter().map(|p| p.swap_pool).collect(),
        }
    }

    fn shares_a_pool_with(&self, other: &Self) -> bool {
        self.pools.iter().any(|p| other.pools.contains(p))
    }
}

/// The order to send `loads` in, as indices: the most profit per unit of gas limit first, except that
/// transactions selling into a common pool keep the order they are given in (each was checked
/// against its pools as the ones before it leave them). At each place goes the group that earns the
/// most per gas: a transaction with every earlier unplaced one it must follow, in their given order
/// (so a dense sale is not held back behind a thin one on its pool). Ties keep the given order.
pub fn by_profit_per_gas(loads: &[Load]) -> Vec<usize> {
    let n = loads.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        // Each unplaced transaction's group: the unplaced ones it must follow, and itself, ascending.
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); n];
        for k in (0..n).filter(|&k| !placed[k]) {
            let mut group = std::collections::BTreeSet::from([k]);
            for j in (0..k).filter(|&j| !placed[j] && loads[j].shares_a_pool_with(&loads[k])) {
                group.extend(groups[j].iter().copied());
            }
            groups[k] = group.into_iter().collect();
        }
        let sum = |group: &[usize]| -> (i128, i128) {
            group.iter().fold((0, 0), |(profit, gas), &i| {
                (
                    profit + loads[i].profit_base,
                    gas + i128::from(loads[i].gas_limit.max(1)),
                )
            })
        };
        let mut best: Option<(usize, (i128, i128))> = None;
        for k in (0..n).filter(|&k| !placed[k]) {
            let (profit, gas) = sum(&groups[k]);
            if best.is_none_or(|(_, (p, g))| profit * g > p * gas) {
                best = Some((k, (profit, gas)));
            }
        }
        let (best, _) = best.expect("an unplaced transaction is left");
        for &i in &groups[best] {
            placed[i] = true;
            order.push(i);
        }
    }
    order
}

/// `batches` in the order [`by_profit_per_gas`] gives.
pub fn order_batches(batches: Vec<Batch>) -> Vec<Batch> {
    let loads: Vec<Load> = batches.iter().map(Load::of).collect();
    let order = by_profit_per_gas(&loads);
    let mut slots: Vec<Option<Batch>> = batches.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| slots[i].take().expect("each index once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(profit_base: i128, gas_limit: u64, pools: &[u8]) -> Load {
        Load {
            profit_base,
            gas_limit,
            pools: pools.iter().map(|p| Address::repeat_byte(*p)).collect(),
        }
    }

    #[test]
    fn the_densest_goes_first_when_no_pool_is_shared() {
        let loads = [
            load(100, 1_000_000, &[1]), // 1e-4 a gas
            load(300, 1_000_000, &[2]), // 3e-4
            load(500, 2_000_000, &[3]), // 2.5e-4
        ];
        assert_eq!(by_profit_per_gas(&loads), vec![1, 2, 0]);
    }

    #[test]
    fn sales_into_one_pool_keep_their_order() {
        // 0 and 2 sell into pool 1, 2 far denser: it may not pass 0, so the two go first together,
        // ahead of 1, which is denser than 0 alone but not than the two.
        let loads = [
            load(10, 1_000_000, &[1]),
            load(200, 1_000_000, &[2]),
            load(900, 1_000_000, &[1, 3]),
        ];
        assert_eq!(by_profit_per_gas(&loads), vec![0, 2, 1]);
        // A transaction selling into two pools waits for the earlier sales in both.
        let loads = [
            load(10, 1_000_000, &[1]),
            load(20, 1_000_000, &[2]),
            load(900, 1_000_000, &[1, 2]),
            load(50, 1_000_000, &[4]),
        ];
        assert_eq!(by_profit_per_gas(&loads), vec![0, 1, 2, 3]);
        // A thin group goes after a denser one alone.
        let loads = [
            load(10, 1_000_000, &[1]),
            load(20, 1_000_000, &[1]),
            load(50, 1_000_000, &[4]),
        ];
        assert_eq!(by_profit_per_gas(&loads), vec![2, 0, 1]);
    }

    #[test]
    fn ties_and_losses_keep_the_given_order() {
        let loads = [
            load(100, 1_000_000, &[1]),
            load(200, 2_000_000, &[2]),
            load(-5, 1_000_000, &[3]),
            load(-5, 1_000_000, &[4]),
        ];
        assert_eq!(by_profit_per_gas(&loads), vec![0, 1, 2, 3]);
        assert!(by_profit_per_gas(&[]).is_empty());
    }
}
