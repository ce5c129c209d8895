//! EIP-1559: the next block's base fee from its parent, and what a transaction pays.

/// The London rules: elasticity 2, the base fee moves at most 1/8 per block.
pub const ELASTICITY: u64 = 2;
/// `BASE_FEE_MAX_CHANGE_DENOMINATOR`.
pub const MAX_CHANGE_DENOMINATOR: u128 = 8;

/// The base fee of the block after `block` (the latest when `None`): from the gas figures the block
/// carries, or read from its header; 1 gwei on a chain without a base fee.
pub async fn next_base_fee_after(
    rpc: &crate::chain::Rpc,
    block: Option<crate::protocol::BlockRef>,
) -> Result<u128, crate::chain::ChainError> {
    use alloy::{eips::BlockNumberOrTag, providers::Provider};
    if let Some(gas) = block.and_then(|b| b.gas) {
        return Ok(gas.next_base_fee());
    }
    let at = block.map_or(BlockNumberOrTag::Latest, |b| {
        BlockNumberOrTag::Number(b.number)
    });
    let header = rpc
        .get_block_by_number(at)
        .await
        .map_err(|e| crate::chain::ChainError::rpc(format!("block {at}"), e))?
        .map(|b| b.header);
    Ok(header
        .and_then(|h| crate::protocol::BlockGas::of(&h.inner))
        .map_or(1_000_000_000, |gas| gas.next_base_fee()))
}

/// The base fee of the block after one with `gas_used` of `gas_limit` at `base_fee`.
pub fn next_base_fee(base_fee: u128, gas_used: u64, gas_limit: u64) -> u128 {
    let target = u128::from(gas_limit / ELASTICITY);
    let used = u128::from(gas_used);
    if target == 0 || used == target {
        return base_fee;
    }
    if used > target {
        let delta = (base_fee * (used - target) / target / MAX_CHANGE_DENOMINATOR).max(1);
        base_fee + delta
    } else {
        let delta = base_fee * (target - used) / target / MAX_CHANGE_DENOMINATOR;
        base_fee.saturating_sub(delta)
    }
}

/// The price per gas a transaction pays: base fee plus min(tip, max fee − base fee); `None` when the max
/// fee does not cover the base fee (it cannot be included).
pub fn effective_gas_price(base_fee: u128, max_fee: u128, max_priority_fee: u128) -> Option<u128> {
    (max_fee >= base_fee).then(|| base_fee + max_priority_fee.min(max_fee - base_fee))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_fee_moves_by_at_most_an_eighth() {
        let gwei = 1_000_000_000u128;
        assert_eq!(next_base_fee(10 * gwei, 15_000_000, 30_000_000), 10 * gwei);
        assert_eq!(
            next_base_fee(10 * gwei, 30_000_000, 30_000_000),
            11_250_000_000
        );
        assert_eq!(next_base_fee(10 * gwei, 0, 30_000_000), 8_750_000_000);
        // A tiny overshoot still raises the fee by at least 1 wei.
        assert_eq!(next_base_fee(7, 15_000_001, 30_000_000), 8);
    }

    #[test]
    fn effective_price_caps_the_tip() {
        assert_eq!(effective_gas_price(100, 150, 10), Some(110));
        assert_eq!(effective_gas_price(100, 105, 10), Some(105));
        assert_eq!(effective_gas_price(100, 99, 10), None);
    }
}
