//! Uniswap V2 constant-product pairs: `getAmountOut` with the 0.3% fee, on reserves read at a block.

use super::Rate;
use crate::chain::{ChainError, Rpc, multicall};
use alloy::{
    eips::BlockId,
    primitives::{Address, U256, U512},
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
        /// The reserves after every change of them (the venue book follows pairs by it).
        event Sync(uint112 reserve0, uint112 reserve1);
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
    /// What arbitrage sells into the pair to bring its price to `num / den` (token1 raw units per
    /// token0 raw unit: the oracle's): (token sold, amount in, amount out), the most that leaves the
    /// pair on the side it was, found by bisection; `None` when it is there already.
    pub fn arbitrage_to(&self, num: U256, den: U256) -> Option<(Address, U256, U256)> {
        let (r0, r1) = (self.reserve0, self.reserve1);
        let token0_overpriced = r1 * den > r0 * num;
        let (r_in, r_out) = if token0_overpriced {
            (r0, r1)
        } else {
            (r1, r0)
        };
        // After selling x: is the pair still on the overpriced side?
        let still_above = |x: U256| {
            let out = amount_out(x, r_in, r_out);
            let (new_in, new_out) = (r_in + x, r_out - out);
            if token0_overpriced {
                new_out * den > new_in * num
            } else {
                new_out * num > new_in * den
            }
        };
        let (mut lo, mut hi) = (U256::ZERO, r_in * U256::from(10u8));
        while hi > lo + U256::from(1u8) {
            let mid = (lo + hi) / U256::from(2u8);
            if still_above(mid) { lo = mid } else { hi = mid }
        }
        if lo.is_zero() {
            return None;
        }
        let token_in = if token0_overpriced {
            self.token0
        } else {
            self.token1
        };
        Some((token_in, lo, amount_out(lo, r_in, r_out)))
    }

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

    /// How much of `token_in` to sell, at most `max_in`, so that the last unit sold still returns at
    /// least `floor`, and what that returns; `None` if the token is not in the pair. One more unit
    /// after x sold returns 997·1000·R_in·R_out / (1000·R_in + 997·x)² (the derivative of
    /// [`amount_out`]), which falls to `floor` at x = (√(997000·R_in·R_out / floor) − 1000·R_in) / 997.
    pub fn sell_down_to(
        &self,
        token_in: Address,
        max_in: U256,
        floor: Rate,
    ) -> Option<(U256, U256)> {
        let (r_in, r_out) = if token_in == self.token0 {
            (self.reserve0, self.reserve1)
        } else if token_in == self.token1 {
            (self.reserve1, self.reserve0)
        } else {
            return None;
        };
        let sold = if floor.out.is_zero() {
            max_in
        } else {
            let square = U512::from(997_000u32)
                * U512::from(r_in)
                * U512::from(r_out)
                * U512::from(floor.paid)
                / U512::from(floor.out);
            let edge = super::sqrt_floor(square);
            let start = U512::from(r_in) * U512::from(1000u16);
            if edge <= start {
                U256::ZERO
            } else {
                let x = (edge - start) / U512::from(997u16);
                if x >= U512::from(max_in) {
                    max_in
                } else {
                    x.to::<U256>()
                }
            }
        };
        Some((sold, amount_out(sold, r_in, r_out)))
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

    #[test]
    fn a_sale_down_to_a_price_makes_the_most_of_a_supply_bought_at_it() {
        let e18 = U256::from(10u64).pow(U256::from(18));
        let pair = PairState {
            address: Address::ZERO,
            token0: Address::repeat_byte(1),
            token1: Address::repeat_byte(2),
            reserve0: U256::from(1_000u64) * e18,
            reserve1: U256::from(2_000u64) * e18,
        };
        let floor = Rate {
            out: U256::from(19u8),
            paid: U256::from(10u8),
        };
        let max_in = U256::from(100u64) * e18;
        let (sold, out) = pair.sell_down_to(pair.token0, max_in, floor).unwrap();
        assert!(sold > U256::ZERO && sold < max_in);
        assert_eq!(out, amount_out(sold, pair.reserve0, pair.reserve1));
        let margin = |x: U256| {
            let out = amount_out(x, pair.reserve0, pair.reserve1);
            i128::try_from(out).unwrap() - i128::try_from(x * floor.out / floor.paid).unwrap()
        };
        for k in 1..=1_000u64 {
            let x = max_in * U256::from(k) / U256::from(1_000u64);
            assert!(margin(x) <= margin(sold) + 2, "selling {x} beats {sold}");
        }
        // At a floor the first unit misses, nothing; at a floor far below, everything.
        let dear = Rate {
            out: U256::from(2u8),
            paid: U256::from(1u8),
        };
        assert_eq!(
            pair.sell_down_to(pair.token0, max_in, dear).unwrap().0,
            U256::ZERO
        );
        let cheap = Rate {
            out: U256::from(1u8),
            paid: U256::from(1u8),
        };
        assert_eq!(
            pair.sell_down_to(pair.token0, max_in, cheap).unwrap().0,
            max_in
        );
        assert_eq!(
            pair.sell_down_to(Address::repeat_byte(9), max_in, cheap),
            None
        );
    }
}
