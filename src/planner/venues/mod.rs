//! Where seized collateral is sold: swaps simulated against the pools' on-chain state.

pub mod book;
pub mod uniswap_v2;
pub mod uniswap_v3;

use alloy::primitives::{Address, U256, U512};

/// A place to sell collateral.
#[derive(Debug, Clone)]
pub enum Venue {
    /// A Uniswap V3 pool.
    V3(uniswap_v3::PoolState),
    /// A Uniswap V2 pair.
    V2(uniswap_v2::PairState),
}

/// A price at the margin: `out` of the token bought for `paid` of the token sold (raw units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Of the token bought.
    pub out: U256,
    /// For this much of the token sold.
    pub paid: U256,
}

/// A place to sell the seized collateral, as sizing sees it (a Uniswap pool or pair, for one token).
pub trait Sale {
    /// What selling exactly `amount` returns; `None` when it cannot take all of it.
    fn sell(&self, amount: U256) -> Option<U256>;
    /// Sells at most `max_in` while one more unit sold still returns at least `floor`:
    /// (sold, returned).
    fn sell_down_to(&self, max_in: U256, floor: Rate) -> Option<(U256, U256)>;
}

/// A venue selling one of its tokens, as sizing asks for it.
pub struct VenueSale<'a> {
    /// The pool or pair.
    pub venue: &'a Venue,
    /// The token sold (the seized collateral).
    pub token_in: Address,
}

impl Sale for VenueSale<'_> {
    fn sell(&self, amount: U256) -> Option<U256> {
        self.venue.sell(self.token_in, amount)
    }

    fn sell_down_to(&self, max_in: U256, floor: Rate) -> Option<(U256, U256)> {
        self.venue.sell_down_to(self.token_in, max_in, floor)
    }
}

/// Which kind of venue, as the Liquidator names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum VenueKind {
    /// Uniswap V3.
    UniswapV3,
    /// Uniswap V2.
    UniswapV2,
}

impl Venue {
    /// What selling exactly `amount` of `token_in` returns; `None` when the venue cannot take all of it.
    pub fn sell(&self, token_in: Address, amount: U256) -> Option<U256> {
        match self {
            Self::V3(pool) => pool
                .swap_exact_in(token_in, amount)
                .ok()
                .filter(|o| o.amount_in == amount)
                .map(|o| o.amount_out),
            Self::V2(pair) => pair.swap_exact_in(token_in, amount),
        }
    }

    /// Sells `token_in`, at most `max_in`, while one more unit sold still returns at least `floor`:
    /// (sold, returned). A sale's price falls the more it sells, so this is the sale that makes the
    /// most of a supply bought at `floor` ([`Rate`]: what a liquidation pays per unit of collateral).
    /// `None` when the venue does not trade `token_in`.
    pub fn sell_down_to(
        &self,
        token_in: Address,
        max_in: U256,
        floor: Rate,
    ) -> Option<(U256, U256)> {
        match self {
            Self::V3(pool) => pool
                .swap_down_to(token_in, max_in, floor)
                .ok()
                .map(|o| (o.amount_in, o.amount_out)),
            Self::V2(pair) => pair.sell_down_to(token_in, max_in, floor),
        }
    }

    /// What selling exactly `amount` of `token_in` returns, and the venue after the sale; `None`
    /// when the venue cannot take all of it.
    pub fn after_sale(&self, token_in: Address, amount: U256) -> Option<(U256, Venue)> {
        match self {
            Self::V3(pool) => {
                let o = pool
                    .swap_exact_in(token_in, amount)
                    .ok()
                    .filter(|o| o.amount_in == amount)?;
                Some((o.amount_out, Self::V3(pool.after(&o))))
            }
            Self::V2(pair) => {
                let out = pair.swap_exact_in(token_in, amount)?;
                Some((out, Self::V2(pair.after(token_in, amount, out))))
            }
        }
    }

    /// Its two tokens, token0 first.
    pub fn tokens(&self) -> (Address, Address) {
        match self {
            Self::V3(pool) => (pool.token0, pool.token1),
            Self::V2(pair) => (pair.token0, pair.token1),
        }
    }

    /// What it holds of each token near its price: a V3 pool's in-range virtual reserves, a V2
    /// pair's reserves (raw units, token0 first).
    pub fn holdings(&self) -> (U256, U256) {
        match self {
            Self::V3(pool) => pool.in_range_reserves(),
            Self::V2(pair) => (pair.reserve0, pair.reserve1),
        }
    }

    /// token1 raw units per token0 raw unit, WAD-scaled; `None` for an empty pair.
    pub fn price_of_token0(&self) -> Option<U256> {
        match self {
            Self::V3(pool) => Some(pool.price_of_token0()),
            Self::V2(pair) => (!pair.reserve0.is_zero())
                .then(|| pair.reserve1 * crate::units::WAD / pair.reserve0),
        }
    }

    /// The exact state a swap leaves: √P (Q64.96) of a V3 pool, the reserves of a V2 pair.
    pub fn state(&self) -> Vec<U256> {
        match self {
            Self::V3(pool) => vec![pool.sqrt_price],
            Self::V2(pair) => vec![pair.reserve0, pair.reserve1],
        }
    }

    /// The venue after arbitrage brings it to the price of token0 in token1 that oracle prices
    /// `price0`, `price1` (with the tokens' decimals) give, as the devnet's shocks do it: a V3 swap
    /// to that √P, a V2 sale found by bisection. `None` when it is there already.
    pub fn aligned_to(
        &self,
        price0: U256,
        decimals0: u8,
        price1: U256,
        decimals1: u8,
    ) -> Option<Self> {
        match self {
            Self::V3(pool) => pool
                .swapped_to(uniswap_v3::sqrt_price_x96(
                    price0, decimals0, price1, decimals1,
                ))
                .map(Self::V3),
            Self::V2(pair) => {
                let ten = |d: u8| U256::from(10u64).pow(U256::from(d));
                let (token_in, amount_in, amount_out) =
                    pair.arbitrage_to(price0 * ten(decimals1), price1 * ten(decimals0))?;
                Some(Self::V2(pair.after(token_in, amount_in, amount_out)))
            }
        }
    }

    /// What selling `amount` of `token_in` would return at the venue's current price less its fee,
    /// with no price impact: at least what any sale of it returns (the price only falls as it sells,
    /// and every unit sold pays the fee), rounded up.
    pub fn spot_out(&self, token_in: Address, amount: U256) -> U256 {
        let million = U256::from(1_000_000u32);
        self.price_out(token_in, amount)
            .saturating_mul(million - U256::from(self.fee()))
            .div_ceil(million)
    }

    /// `amount` of `token_in` at the venue's current price, with no fee and no impact.
    fn price_out(&self, token_in: Address, amount: U256) -> U256 {
        let (t0, _) = self.tokens();
        match self {
            Self::V3(pool) => {
                let p = U512::from(pool.sqrt_price) * U512::from(pool.sqrt_price);
                let out = if token_in == t0 {
                    (U512::from(amount) * p) >> 192usize
                } else if p.is_zero() {
                    U512::ZERO
                } else {
                    (U512::from(amount) << 192usize) / p
                };
                U256::saturating_from(out)
            }
            Self::V2(pair) => {
                let (r_in, r_out) = if token_in == t0 {
                    (pair.reserve0, pair.reserve1)
                } else {
                    (pair.reserve1, pair.reserve0)
                };
                if r_in.is_zero() {
                    U256::ZERO
                } else {
                    amount * r_out / r_in
                }
            }
        }
    }

    /// The pool or pair.
    pub fn address(&self) -> Address {
        match self {
            Self::V3(pool) => pool.address,
            Self::V2(pair) => pair.address,
        }
    }

    /// Fee in hundredths of a bip.
    pub fn fee(&self) -> u32 {
        match self {
            Self::V3(pool) => pool.fee,
            Self::V2(_) => 3000,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> VenueKind {
        match self {
            Self::V3(_) => VenueKind::UniswapV3,
            Self::V2(_) => VenueKind::UniswapV2,
        }
    }

    /// How much worse than the price before it a sale of `amount` fills, bps.
    pub fn price_impact_bps(&self, token_in: Address, amount: U256) -> u64 {
        match self {
            Self::V3(pool) => pool
                .swap_exact_in(token_in, amount)
                .map(|o| uniswap_v3::price_impact_bps(pool, token_in, &o))
                .unwrap_or(10_000),
            Self::V2(pair) => {
                let (r_in, r_out) = if token_in == pair.token0 {
                    (pair.reserve0, pair.reserve1)
                } else {
                    (pair.reserve1, pair.reserve0)
                };
                let spot = if r_in.is_zero() {
                    U256::ZERO
                } else {
                    amount * r_out / r_in
                };
                let out = pair.swap_exact_in(token_in, amount).unwrap_or_default();
                if spot.is_zero() || out >= spot {
                    0
                } else {
                    ((spot - out) * U256::from(10_000u64) / spot).to::<u64>()
                }
            }
        }
    }
}

/// ⌊√x⌋, by Newton's iteration from a floating-point root of `x`'s top bits set a little high, so it
/// falls to the answer in a few steps of one division each (ruint's general `root` divides twice a
/// step): the price limits of the pools' sales are such roots.
pub(crate) fn sqrt_floor(x: U512) -> U512 {
    let bits = 512 - x.leading_zeros();
    if bits <= 1 {
        return x;
    }
    // An even shift keeps the root's shift whole; what is left is 64 or 65 bits.
    let shift = bits.saturating_sub(64) & !1;
    let top = (x >> shift).to::<u128>() as f64;
    let estimate = (top.sqrt() * (1.0 + 1e-9)) as u128 + 1;
    // From above, each step stays at or above ⌊√x⌋ and falls until it would not.
    let mut root = U512::from(estimate) << (shift / 2);
    loop {
        let next = (root + x / root) >> 1usize;
        if next >= root {
            return root;
        }
        root = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqrt_floor_is_the_floor_of_the_root_at_every_size() {
        let mut cases: Vec<U512> = (0u64..300).map(U512::from).collect();
        // Squares, one either side of them, and every size up to 512 bits, from a fixed generator.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for bits in (2..=512).step_by(3) {
            let limbs: [u64; 8] = std::array::from_fn(|_| next());
            let x: U512 = U512::from_limbs(limbs) >> (512 - bits as usize);
            let r = x.root(2);
            cases.extend([x, r * r, r * r - U512::from(1u8), r * r + U512::from(1u8)]);
        }
        cases.push(U512::MAX);
        for x in cases {
            let r = sqrt_floor(x);
            assert!(r * r <= x, "{x}: {r}");
            assert!(
                (r + U512::from(1u8))
                    .checked_mul(r + U512::from(1u8))
                    .is_none_or(|s| s > x),
                "{x}: {r}"
            );
            assert_eq!(r, x.root(2), "{x}");
        }
    }
}
