//! Uniswap V2 constant-product pairs: `getAmountOut` with the 0.3% fee, on reserves read at a block.

use crate::chain::{ChainError, Rpc, multicall};
use alloy::{
    eips::BlockId,
    primitives::{Address, U256},
    sol,
};

sol! {
    #[sol(rpc)]
    contract UniswapV2Factory {
        constructor(address feeToSetter);
        function createPair(address tokenA, address tokenB) external returns (address pair);
        function getPair(address tokenA, address tokenB) external view returns (address pair);
    }

    #[sol(rpc)]
    contract UniswapV2Pair {
        function token0() external view returns (address);
        function token1() external view returns (address);
        function getReserves() external view returns (uint112 reserve0, uint112 reserve1, uint32 blockTimestampLast);
        function mint(address to) external returns (uint256 liquidity);
        function swap(uint256 amount0Out, uint256 amount1Out, address to, bytes data) external;
    }
}

/// A pair's reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairState {
    /// The pair.
    pub address: Address,
    /// token0.
    pub token0: Address,
    /// token1.
    pub token1: Address,
    /// Reserve of token0.
    pub reserve0: U256,
    /// Reserve of token1.
    pub reserve1: U256,
}

/// `UniswapV2Library.getAmountOut`: what `amount_in` buys against reserves, after the 0.3% fee.
pub fn amount_out(amount_in: U256, reserve_in: U256, reserve_out: U256) -> U256 {
    if amount_in.is_zero() || reserve_in.is_zero() || reserve_out.is_zero() {
        return U256::ZERO;
    }
    let with_fee = amount_in * U256::from(997u16);
    with_fee * reserve_out / (reserve_in * U256::from(1000u16) + with_fee)
}

impl PairState {
    /// The pair after selling `amount_in` of `token_in` for `amount_out`.
    pub fn after(&self, token_in: Address, amount_in: U256, amount_out: U256) -> Self {
        let mut next = *self;
        if token_in == self.token0 {
            next.reserve0 += amount_in;
            next.reserve1 -= amount_out.min(self.reserve1);
        } else {
            next.reserve1 += amount_in;
            next.reserve0 -= amount_out.min(self.reserve0);
        }
        next
    }

    /// Output of selling `amount_in` of `token_in`; `None` if the token is not in the pair.
    pub fn swap_exact_in(&self, token_in: Address, amount_in: U256) -> Option<U256> {
        if token_in == self.token0 {
            Some(amount_out(amount_in, self.reserve0, self.reserve1))
        } else if token_in == self.token1 {
            Some(amount_out(amount_in, self.reserve1, self.reserve0))
        } else {
            None
        }
    }
}

/// Reads a pair's tokens and reserves at `block`.
pub async fn load_pair(rpc: &Rpc, pair: Address, block: BlockId) -> Result<PairState, ChainError> {
    let contract = UniswapV2Pair::new(pair, rpc);
    let fail =
        |what: &'static str| move |e| ChainError::rpc(what, multicall::contract_rpc_error(e));
    let token0 = contract
        .token0()
        .block(block)
        .call()
        .await
        .map_err(fail("token0"))?;
    let token1 = contract
        .token1()
        .block(block)
        .call()
        .await
        .map_err(fail("token1"))?;
    let r = contract
        .getReserves()
        .block(block)
        .call()
        .await
        .map_err(fail("getReserves"))?;
    Ok(PairState {
        address: pair,
        token0,
        token1,
        reserve0: U256::from(r.reserve0),
        reserve1: U256::from(r.reserve1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_product_with_fee() {
        // 1 in against 1000/1000: 997·1000 / (1000·1000 + 997) = 0.996…, rounded down to 0 in whole units;
        // scaled up the classic figure appears.
        let e18 = U256::from(10u64).pow(U256::from(18));
        let out = amount_out(e18, U256::from(1000u64) * e18, U256::from(1000u64) * e18);
        assert_eq!(out, U256::from(996_006_981_039_903_216u64));
        assert_eq!(amount_out(U256::ZERO, e18, e18), U256::ZERO);
        // Selling the whole reserve gets just under half of the other side.
        let half = amount_out(e18, e18, e18);
        assert!(half < e18 / U256::from(2u8) && half > e18 * U256::from(49u8) / U256::from(100u8));
    }
}
