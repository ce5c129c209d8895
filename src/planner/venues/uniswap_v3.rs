//! Uniswap V3 swaps simulated off-chain against a pool's on-chain state, step by step as the pool itself
//! does (`UniswapV3Pool.swap` with `TickMath`, `SqrtPriceMath`, `SwapMath`, `TickBitmap`, in
//! `@uniswap/v3-core`): the same steps, the same rounding, so the output equals QuoterV2's to the wei.

use super::Rate;
use crate::chain::{ChainError, Rpc, bindings::UniswapV3Pool, multicall};
use alloy::{
    eips::BlockId,
    primitives::{Address, Bytes, I256, U256, U512, aliases::I24},
    sol,
    sol_types::SolCall,
};
use std::{collections::BTreeMap, sync::Arc};

sol! {
    #[sol(rpc)]
    contract UniswapV3PoolState {
        function tickBitmap(int16 wordPosition) external view returns (uint256);
        function ticks(int24 tick) external view returns (
            uint128 liquidityGross,
            int128 liquidityNet,
            uint256 feeGrowthOutside0X128,
            uint256 feeGrowthOutside1X128,
            int56 tickCumulativeOutside,
            uint160 secondsPerLiquidityOutsideX128,
            uint32 secondsOutside,
            bool initialized
        );
    }
}

/// Lowest tick.
pub const MIN_TICK: i32 = -887_272;
/// Highest tick.
pub const MAX_TICK: i32 = 887_272;
/// `getSqrtRatioAtTick(MIN_TICK)`.
pub const MIN_SQRT_RATIO: U256 = U256::from_limbs([4_295_128_739, 0, 0, 0]);
/// `getSqrtRatioAtTick(MAX_TICK)`.
pub const MAX_SQRT_RATIO: U256 =
    U256::from_limbs([0x5d951d5263988d26, 0xefd1fc6a50648849, 0xfffd8963, 0]);
const Q96: U256 = U256::from_limbs([0, 1 << 32, 0, 0]);

/// `TickMath.getSqrtRatioAtTick`: √1.0001^tick as a Q64.96, from the library's constants.
pub fn sqrt_ratio_at_tick(tick: i32) -> U256 {
    const FACTORS: [u128; 19] = [
        0xfff97272373d413259a46990580e213a,
        0xfff2e50f5f656932ef12357cf3c7fdcc,
        0xffe5caca7e10e4e61c3624eaa0941cd0,
        0xffcb9843d60f6159c9db58835c926644,
        0xff973b41fa98c081472e6896dfb254c0,
        0xff2ea16466c96a3843ec78b326b52861,
        0xfe5dee046a99a2a811c461f1969c3053,
        0xfcbe86c7900a88aedcffc83b479aa3a4,
        0xf987a7253ac413176f2b074cf7815e54,
        0xf3392b0822b70005940c7a398e4b70f3,
        0xe7159475a2c29b7443b29c7fa6e889d9,
        0xd097f3bdfd2022b8845ad8f792aa5825,
        0xa9f746462d870fdf8a65dc1f90e061e5,
        0x70d869a156d2a1b890bb3df62baf32f7,
        0x31be135f97d08fd981231505542fcfa6,
        0x9aa508b5b7a84e1c677de54f3e99bc9,
        0x5d6af8dedb81196699c329225ee604,
        0x2216e584f5fa1ea926041bedfe98,
        0x48a170391f7dc42444e8fa2,
    ];
    let abs = tick.unsigned_abs();
    let mut ratio = if abs & 1 != 0 {
        U256::from(0xfffcb933bd6fad37aa2d162d1a594001u128)
    } else {
        U256::from(1u8) << 128
    };
    for (bit, factor) in FACTORS.iter().enumerate() {
        if abs & (2 << bit) != 0 {
            ratio = (ratio * U256::from(*factor)) >> 128;
        }
    }
    if tick > 0 {
        ratio = U256::MAX / ratio;
    }
    let remainder = ratio & U256::from(u32::MAX);
    (ratio >> 32)
        + if remainder.is_zero() {
            U256::ZERO
        } else {
            U256::from(1u8)
        }
}

/// `TickMath.getTickAtSqrtRatio`: the greatest tick whose sqrt ratio is ≤ `sqrt_price`. The
/// library's way: log₂ of the ratio to 14 fractional bits, scaled to log base √1.0001, which leaves
/// two candidate ticks and one [`sqrt_ratio_at_tick`] to choose between them.
pub fn tick_at_sqrt_ratio(sqrt_price: U256) -> i32 {
    let sqrt_price = sqrt_price.clamp(MIN_SQRT_RATIO, MAX_SQRT_RATIO - U256::from(1u8));
    let ratio: U256 = sqrt_price << 32usize;
    let msb = 255 - ratio.leading_zeros();
    let mut r = if msb >= 128 {
        ratio >> (msb - 127)
    } else {
        ratio << (127 - msb)
    };
    let mut log_2 = I256::try_from(msb as i64 - 128).expect("small") << 64;
    for bit in (50..=63).rev() {
        r = (r * r) >> 127usize;
        let f: U256 = r >> 128usize;
        if !f.is_zero() {
            log_2 |= I256::ONE << bit;
        }
        r >>= f.to::<usize>();
    }
    let log_sqrt10001 = log_2 * I256::from_raw(U256::from(255_738_958_999_603_826_347_141u128));
    let low_offset = I256::from_raw(U256::from(
        3_402_992_956_809_132_418_596_140_100_660_247_210u128,
    ));
    let high_offset = I256::from_raw(U256::from(
        291_339_464_771_989_622_907_027_621_153_398_088_495u128,
    ));
    let tick = |x: I256| (x.asr(128)).as_i32();
    let (low, high) = (
        tick(log_sqrt10001 - low_offset),
        tick(log_sqrt10001 + high_offset),
    );
    if low == high || sqrt_ratio_at_tick(high) > sqrt_price {
        low
    } else {
        high
    }
}

fn mul_div(a: U256, b: U256, denominator: U256) -> U256 {
    let r = U512::from(a) * U512::from(b) / U512::from(denominator);
    U256::from_limbs(r.as_limbs()[..4].try_into().expect("4 limbs"))
}

fn mul_div_rounding_up(a: U256, b: U256, denominator: U256) -> U256 {
    let product = U512::from(a) * U512::from(b);
    let d = U512::from(denominator);
    let mut r = product / d;
    if !(product % d).is_zero() {
        r += U512::from(1u8);
    }
    U256::from_limbs(r.as_limbs()[..4].try_into().expect("4 limbs"))
}

fn div_rounding_up(a: U256, b: U256) -> U256 {
    a / b
        + if (a % b).is_zero() {
            U256::ZERO
        } else {
            U256::from(1u8)
        }
}

/// `SqrtPriceMath.getAmount0Delta`.
pub fn amount0_delta(a: U256, b: U256, liquidity: u128, round_up: bool) -> U256 {
    let (a, b) = if a > b { (b, a) } else { (a, b) };
    let numerator1: U256 = U256::from(liquidity) << 96usize;
    let numerator2 = b - a;
    if round_up {
        div_rounding_up(mul_div_rounding_up(numerator1, numerator2, b), a)
    } else {
        mul_div(numerator1, numerator2, b) / a
    }
}

/// `SqrtPriceMath.getAmount1Delta`.
pub fn amount1_delta(a: U256, b: U256, liquidity: u128, round_up: bool) -> U256 {
    let (a, b) = if a > b { (b, a) } else { (a, b) };
    if round_up {
        mul_div_rounding_up(U256::from(liquidity), b - a, Q96)
    } else {
        mul_div(U256::from(liquidity), b - a, Q96)
    }
}

/// `SqrtPriceMath.getNextSqrtPriceFromInput`.
fn next_sqrt_price_from_input(
    sqrt_price: U256,
    liquidity: u128,
    amount_in: U256,
    zero_for_one: bool,
) -> U256 {
    if amount_in.is_zero() {
        return sqrt_price;
    }
    if zero_for_one {
        // getNextSqrtPriceFromAmount0RoundingUp(add = true)
        let numerator1: U256 = U256::from(liquidity) << 96usize;
        let (product, overflow) = amount_in.overflowing_mul(sqrt_price);
        if !overflow {
            let (denominator, overflow) = numerator1.overflowing_add(product);
            if !overflow && denominator >= numerator1 {
                return mul_div_rounding_up(numerator1, sqrt_price, denominator);
            }
        }
        div_rounding_up(numerator1, numerator1 / sqrt_price + amount_in)
    } else {
        // getNextSqrtPriceFromAmount1RoundingDown(add = true)
        let quotient = if amount_in <= (U256::from(1u8) << 160) - U256::from(1u8) {
            (amount_in << 96usize) / U256::from(liquidity)
        } else {
            mul_div(amount_in, Q96, U256::from(liquidity))
        };
        sqrt_price + quotient
    }
}

/// One `SwapMath.computeSwapStep` for exact input: (next sqrt price, amount in, amount out, fee).
fn swap_step(
    current: U256,
    target: U256,
    liquidity: u128,
    remaining: U256,
    fee_pips: u32,
) -> (U256, U256, U256, U256) {
    let zero_for_one = current >= target;
    let million = U256::from(1_000_000u32);
    let fee = U256::from(fee_pips);
    let remaining_less_fee = mul_div(remaining, million - fee, million);
    let full_in = if zero_for_one {
        amount0_delta(target, current, liquidity, true)
    } else {
        amount1_delta(current, target, liquidity, true)
    };
    let next = if remaining_less_fee >= full_in {
        target
    } else {
        next_sqrt_price_from_input(current, liquidity, remaining_less_fee, zero_for_one)
    };
    let reached = next == target;
    let (amount_in, amount_out) = if zero_for_one {
        (
            if reached {
                full_in
            } else {
                amount0_delta(next, current, liquidity, true)
            },
            amount1_delta(next, current, liquidity, false),
        )
    } else {
        (
            if reached {
                full_in
            } else {
                amount1_delta(current, next, liquidity, true)
            },
            amount0_delta(current, next, liquidity, false),
        )
    };
    let fee_amount = if !reached {
        remaining - amount_in
    } else {
        mul_div_rounding_up(amount_in, fee, million - fee)
    };
    (next, amount_in, amount_out, fee_amount)
}

/// A pool's fixed identity: what never changes after it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolKey {
    /// The pool.
    pub address: Address,
    /// token0.
    pub token0: Address,
    /// token1.
    pub token1: Address,
    /// Fee in hundredths of a bip.
    pub fee: u32,
    /// Tick spacing.
    pub tick_spacing: i32,
}

/// A pool's initialized ticks, as far as they were read. Only adding or removing liquidity (`Mint`,
/// `Burn`) changes them; a swap moves the price and the in-range liquidity, never `liquidityNet`. So
/// they are read once and kept across blocks, shared by every simulation of the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickMap {
    /// Bitmap words loaded, by word position.
    pub bitmap: BTreeMap<i16, U256>,
    /// `liquidityNet` of each initialized tick in the loaded words.
    pub liquidity_net: BTreeMap<i32, i128>,
}

impl TickMap {
    /// Whether a swap starting at `tick` can walk at least [`WORDS_EACH_SIDE`] / 2 words either way
    /// (or to the end of the tick range) inside the loaded words. A pool loaded whole always can; a
    /// 1-bp pool whose price drifted towards the edge of what was read needs reading again.
    pub fn covers(&self, tick: i32, spacing: i32) -> bool {
        let (Some((&lo, _)), Some((&hi, _))) =
            (self.bitmap.first_key_value(), self.bitmap.last_key_value())
        else {
            return false;
        };
        let (min_word, max_word) = word_range(spacing);
        let word = (tick.div_euclid(spacing) >> 8) as i16;
        let margin = WORDS_EACH_SIDE / 2;
        (lo == min_word || word.saturating_sub(margin) >= lo)
            && (hi == max_word || word.saturating_add(margin) <= hi)
    }
}

/// sqrtPriceX96 for a pool whose token0 is worth `price0` and token1 `price1` (same base currency),
/// with the tokens' decimals: √(token1 raw units per token0 raw unit) · 2^96, rounded down.
pub fn sqrt_price_x96(price0: U256, decimals0: u8, price1: U256, decimals1: u8) -> U256 {
    let ten = U512::from(10u64);
    let num: U512 = (U512::from(price0) * ten.pow(U512::from(decimals1))) << 192usize;
    let den: U512 = U512::from(price1) * ten.pow(U512::from(decimals0));
    let root: U512 = super::sqrt_floor(num / den);
    // The square root of a 512-bit number fits in 256 bits.
    let limbs = root.as_limbs();
    U256::from_limbs([limbs[0], limbs[1], limbs[2], limbs[3]])
}

/// A pool's state as far as a swap needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolState {
    /// The pool.
    pub address: Address,
    /// token0.
    pub token0: Address,
    /// token1.
    pub token1: Address,
    /// Fee in hundredths of a bip.
    pub fee: u32,
    /// Tick spacing.
    pub tick_spacing: i32,
    /// Current sqrt price (Q64.96).
    pub sqrt_price: U256,
    /// Current tick.
    pub tick: i32,
    /// In-range liquidity.
    pub liquidity: u128,
    /// The initialized ticks around the price.
    pub ticks: Arc<TickMap>,
}

/// The outcome of a simulated exact-input swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapOutcome {
    /// Tokens out.
    pub amount_out: U256,
    /// Tokens in that the pool took (less than asked when it ran out of liquidity).
    pub amount_in: U256,
    /// Price after the swap.
    pub sqrt_price_after: U256,
    /// Initialized ticks crossed.
    pub ticks_crossed: u32,
    /// The pool's tick after the swap, when its last step fixed it (at a tick's edge, or the price
    /// unmoved); `None` when the swap stopped inside a tick's range, where it is the tick of
    /// `sqrt_price_after`, worked out only when asked for ([`Self::tick_after`]): a quote never
    /// needs it, and working it out costs about as much as a short swap's steps.
    tick: Option<i32>,
    /// The pool's in-range liquidity after the swap.
    pub liquidity_after: u128,
}

impl SwapOutcome {
    /// The pool's tick after the swap.
    pub fn tick_after(&self) -> i32 {
        self.tick
            .unwrap_or_else(|| tick_at_sqrt_ratio(self.sqrt_price_after))
    }
}

/// Why a swap cannot be simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    /// The token is not in this pool.
    #[error("token not in pool")]
    WrongToken,
    /// The swap walks past the bitmap words that were loaded.
    #[error("swap leaves the loaded tick range (word {0})")]
    BeyondLoadedTicks(i16),
}

impl PoolState {
    fn word(&self, pos: i16) -> Result<U256, SwapError> {
        self.ticks
            .bitmap
            .get(&pos)
            .copied()
            .ok_or(SwapError::BeyondLoadedTicks(pos))
    }

    /// `TickBitmap.nextInitializedTickWithinOneWord`.
    fn next_tick_within_word(&self, tick: i32, lte: bool) -> Result<(i32, bool), SwapError> {
        let spacing = self.tick_spacing;
        let compressed = tick.div_euclid(spacing);
        if lte {
            let (word, bit) = ((compressed >> 8) as i16, (compressed & 0xff) as usize);
            let mask = (U256::from(1u8) << bit) - U256::from(1u8) + (U256::from(1u8) << bit);
            let masked = self.word(word)? & mask;
            Ok(if masked.is_zero() {
                ((compressed - bit as i32) * spacing, false)
            } else {
                let msb = 255 - masked.leading_zeros();
                ((compressed - (bit as i32 - msb as i32)) * spacing, true)
            })
        } else {
            let next = compressed + 1;
            let (word, bit) = ((next >> 8) as i16, (next & 0xff) as usize);
            let mask = !((U256::from(1u8) << bit) - U256::from(1u8));
            let masked = self.word(word)? & mask;
            Ok(if masked.is_zero() {
                ((next + (255 - bit as i32)) * spacing, false)
            } else {
                let lsb = masked.trailing_zeros();
                ((next + (lsb as i32 - bit as i32)) * spacing, true)
            })
        }
    }

    /// The pool after an arbitrage to √P `target` (what a swap of plenty with that price limit does,
    /// as the devnet's shocks swap through SwapRouter): `None` when it is there already.
    pub fn swapped_to(&self, target: U256) -> Option<Self> {
        if target == self.sqrt_price {
            return None;
        }
        let zero_for_one = target < self.sqrt_price;
        let plenty = U256::from(10u64).pow(U256::from(30u8));
        let limit = target.clamp(
            MIN_SQRT_RATIO + U256::from(1u8),
            MAX_SQRT_RATIO - U256::from(1u8),
        );
        let outcome = self.swap_exact_in_to(zero_for_one, plenty, limit).ok()?;
        Some(self.after(&outcome))
    }

    /// The virtual reserves of the in-range liquidity at the current price: L/√P of token0 and
    /// L·√P of token1 (raw units).
    pub fn in_range_reserves(&self) -> (U256, U256) {
        if self.sqrt_price.is_zero() {
            return (U256::ZERO, U256::ZERO);
        }
        let l = U256::from(self.liquidity);
        (
            (l << 96usize) / self.sqrt_price,
            (l * self.sqrt_price) >> 96usize,
        )
    }

    /// token1 raw units per token0 raw unit, WAD-scaled (from √P to nine digits).
    pub fn price_of_token0(&self) -> U256 {
        let root = (self.sqrt_price * U256::from(1_000_000_000u64)) >> 96usize;
        root * root
    }

    /// Simulates swapping exactly `amount_in` of `token_in` with no price limit (as QuoterV2 does with a
    /// zero limit: the pool's extreme ratio).
    pub fn swap_exact_in(
        &self,
        token_in: Address,
        amount_in: U256,
    ) -> Result<SwapOutcome, SwapError> {
        let zero_for_one = self.zero_for_one(token_in)?;
        let limit = if zero_for_one {
            MIN_SQRT_RATIO + U256::from(1u8)
        } else {
            MAX_SQRT_RATIO - U256::from(1u8)
        };
        self.swap_exact_in_to(zero_for_one, amount_in, limit)
    }

    /// Simulates selling up to `max_in` of `token_in`, no further than where one more unit sold would
    /// return less than `floor`: the pool's price after its fee (token out per token in, at the
    /// margin) falls as it sells, and the swap stops where it reaches `floor`, as the pool's own
    /// swap stops at a `sqrtPriceLimitX96`. Sells nothing when the price is there already.
    pub fn swap_down_to(
        &self,
        token_in: Address,
        max_in: U256,
        floor: Rate,
    ) -> Result<SwapOutcome, SwapError> {
        let zero_for_one = self.zero_for_one(token_in)?;
        let nothing = SwapOutcome {
            amount_out: U256::ZERO,
            amount_in: U256::ZERO,
            sqrt_price_after: self.sqrt_price,
            ticks_crossed: 0,
            tick: Some(self.tick),
            liquidity_after: self.liquidity,
        };
        if floor.out.is_zero() {
            return self.swap_exact_in(token_in, max_in);
        }
        let (million, fee) = (U512::from(1_000_000u32), U512::from(self.fee));
        // Selling token0, the price is token1 per token0, (√P / 2⁹⁶)², and one more unit sold returns
        // P·(1 − fee): stop at √P = √(floor / (1 − fee)) · 2⁹⁶. Selling token1 the price the seller gets
        // is 1/P: stop at √P = √((1 − fee) / floor) · 2⁹⁶.
        let (num, den) = if zero_for_one {
            (
                U512::from(floor.out) * million,
                U512::from(floor.paid) * (million - fee),
            )
        } else {
            (
                U512::from(floor.paid) * (million - fee),
                U512::from(floor.out) * million,
            )
        };
        if den.is_zero() {
            return Ok(nothing);
        }
        let root = super::sqrt_floor((num << 192usize) / den);
        let limit = U256::saturating_from(root).clamp(
            MIN_SQRT_RATIO + U256::from(1u8),
            MAX_SQRT_RATIO - U256::from(1u8),
        );
        // The pool refuses a limit on the wrong side of its price: the first unit would already lose.
        let past = if zero_for_one {
            limit >= self.sqrt_price
        } else {
            limit <= self.sqrt_price
        };
        if past {
            return Ok(nothing);
        }
        self.swap_exact_in_to(zero_for_one, max_in, limit)
    }

    fn zero_for_one(&self, token_in: Address) -> Result<bool, SwapError> {
        if token_in == self.token0 {
            Ok(true)
        } else if token_in == self.token1 {
            Ok(false)
        } else {
            Err(SwapError::WrongToken)
        }
    }

    /// `UniswapV3Pool.swap`'s loop for exact input, stopping at `limit` (a sqrt price on the side the
    /// swap moves the price to).
    fn swap_exact_in_to(
        &self,
        zero_for_one: bool,
        amount_in: U256,
        limit: U256,
    ) -> Result<SwapOutcome, SwapError> {
        let (mut sqrt_price, mut tick, mut liquidity) =
            (self.sqrt_price, self.tick, self.liquidity);
        let mut remaining = amount_in;
        let mut out = U256::ZERO;
        let mut crossed = 0u32;
        // Where the limit lies, once the swap meets a stretch without liquidity (below).
        let mut limit_tick: Option<i32> = None;
        // The tick whose price the swap stands at after such a walk, computed when next needed.
        let mut price_at: Option<i32> = None;
        // The swap ended inside a tick's range: its tick is the price's, left to `tick_after`.
        let mut inside = false;
        while !remaining.is_zero() && sqrt_price != limit {
            let (mut next_tick, initialized) = self.next_tick_within_word(tick, zero_for_one)?;
            next_tick = next_tick.clamp(MIN_TICK, MAX_TICK);
            // Without liquidity a step to a word's uninitialized edge moves nothing: the pool's loop
            // only walks the price there. Walking the words by their bits alone ends in the same
            // state, without the square roots, as long as the edge lies before the limit.
            if liquidity == 0 && !initialized {
                let limit_at = *limit_tick.get_or_insert_with(|| tick_at_sqrt_ratio(limit));
                let before_limit = if zero_for_one {
                    next_tick > limit_at
                } else {
                    next_tick < limit_at
                };
                if before_limit && next_tick != MIN_TICK && next_tick != MAX_TICK {
                    tick = if zero_for_one {
                        next_tick - 1
                    } else {
                        next_tick
                    };
                    price_at = Some(next_tick);
                    continue;
                }
            }
            if let Some(at) = price_at.take() {
                sqrt_price = sqrt_ratio_at_tick(at);
            }
            let start = sqrt_price;
            let next_price = sqrt_ratio_at_tick(next_tick);
            let target = if zero_for_one {
                next_price.max(limit)
            } else {
                next_price.min(limit)
            };
            let (new_price, step_in, step_out, fee) =
                swap_step(sqrt_price, target, liquidity, remaining, self.fee);
            sqrt_price = new_price;
            remaining -= step_in + fee;
            out += step_out;
            if sqrt_price == next_price {
                if initialized {
                    let net = self
                        .ticks
                        .liquidity_net
                        .get(&next_tick)
                        .copied()
                        .unwrap_or_default();
                    let net = if zero_for_one { -net } else { net };
                    liquidity = liquidity.checked_add_signed(net).unwrap_or(0);
                    crossed += 1;
                }
                tick = if zero_for_one {
                    next_tick - 1
                } else {
                    next_tick
                };
            } else if sqrt_price != start {
                // A step that stops short of its tick's edge spends the input or meets the limit:
                // the swap is over.
                if remaining.is_zero() || sqrt_price == limit {
                    inside = true;
                } else {
                    tick = tick_at_sqrt_ratio(sqrt_price);
                }
            }
        }
        Ok(SwapOutcome {
            amount_out: out,
            amount_in: amount_in - remaining,
            sqrt_price_after: sqrt_price,
            ticks_crossed: crossed,
            tick: (!inside).then_some(tick),
            liquidity_after: liquidity,
        })
    }

    /// The pool after `outcome`, a swap simulated on it: price, tick and in-range liquidity moved,
    /// ticks unchanged.
    pub fn after(&self, outcome: &SwapOutcome) -> Self {
        Self {
            sqrt_price: outcome.sqrt_price_after,
            tick: outcome.tick_after(),
            liquidity: outcome.liquidity_after,
            ..self.clone()
        }
    }
}

/// Pools with at most this many bitmap words (every tick spacing from 10 up: the 0.05%, 0.3% and 1%
/// tiers) are loaded whole, so a simulated swap can walk as far as the real one.
pub const MAX_WORDS_LOADED_WHOLE: usize = 700;
/// Otherwise (1-bp pools), the words on each side of the current one: 64 words at spacing 1 span
/// 16,384 ticks, a factor of 5 in price.
pub const WORDS_EACH_SIDE: i16 = 64;

/// The bitmap words a pool with this spacing can use.
pub fn word_range(spacing: i32) -> (i16, i16) {
    (
        ((MIN_TICK / spacing) >> 8) as i16,
        ((MAX_TICK / spacing) >> 8) as i16,
    )
}

/// The calls that read a pool's price and in-range liquidity, for a batch: `slot0()`, `liquidity()`.
pub fn state_calls(pool: Address) -> [(Address, Vec<u8>); 2] {
    [
        (pool, UniswapV3Pool::slot0Call {}.abi_encode()),
        (pool, UniswapV3Pool::liquidityCall {}.abi_encode()),
    ]
}

fn call_failed(what: &str, pool: Address, e: multicall::CallFailure) -> ChainError {
    ChainError::rpc(
        format!("{what} of pool {pool}"),
        alloy::transports::RpcError::LocalUsageError(Box::new(e)),
    )
}

/// Decodes what [`state_calls`] returned: (sqrt price, tick, liquidity).
pub fn decode_state(
    pool: Address,
    results: &[Result<Bytes, multicall::CallFailure>],
) -> Result<(U256, i32, u128), ChainError> {
    let failed = |what: &str, e| call_failed(what, pool, e);
    let slot0 = multicall::decode::<UniswapV3Pool::slot0Call>(&results[0])
        .map_err(|e| failed("slot0", e))?;
    let liquidity = multicall::decode::<UniswapV3Pool::liquidityCall>(&results[1])
        .map_err(|e| failed("liquidity", e))?;
    Ok((
        U256::from(slot0.sqrtPriceX96),
        slot0.tick.as_i32(),
        liquidity,
    ))
}

/// The calls that read a pool's identity, for a batch: `token0`, `token1`, `fee`, `tickSpacing`.
pub fn key_calls(pool: Address) -> [(Address, Vec<u8>); 4] {
    [
        (pool, UniswapV3Pool::token0Call {}.abi_encode()),
        (pool, UniswapV3Pool::token1Call {}.abi_encode()),
        (pool, UniswapV3Pool::feeCall {}.abi_encode()),
        (pool, UniswapV3Pool::tickSpacingCall {}.abi_encode()),
    ]
}

/// Decodes what [`key_calls`] returned.
pub fn decode_key(
    pool: Address,
    r: &[Result<Bytes, multicall::CallFailure>],
) -> Result<PoolKey, ChainError> {
    let failed = |what: &str, e| call_failed(what, pool, e);
    Ok(PoolKey {
        address: pool,
        token0: multicall::decode::<UniswapV3Pool::token0Call>(&r[0])
            .map_err(|e| failed("token0", e))?,
        token1: multicall::decode::<UniswapV3Pool::token1Call>(&r[1])
            .map_err(|e| failed("token1", e))?,
        fee: multicall::decode::<UniswapV3Pool::feeCall>(&r[2])
            .map_err(|e| failed("fee", e))?
            .to::<u32>(),
        tick_spacing: multicall::decode::<UniswapV3Pool::tickSpacingCall>(&r[3])
            .map_err(|e| failed("tickSpacing", e))?
            .as_i32(),
    })
}

/// Reads the bitmap words a swap from `tick` can reach, and the `liquidityNet` of every initialized
/// tick in them: two batched reads (their batches run side by side).
pub async fn read_ticks(
    rpc: &Rpc,
    multicall_address: Address,
    key: &PoolKey,
    tick: i32,
    block: BlockId,
) -> Result<TickMap, ChainError> {
    let (pool, spacing) = (key.address, key.tick_spacing);
    let center = (tick.div_euclid(spacing) >> 8) as i16;
    let (min_word, max_word) = word_range(spacing);
    let words: Vec<i16> = if ((max_word - min_word) as usize) < MAX_WORDS_LOADED_WHOLE {
        (min_word..=max_word).collect()
    } else {
        (center.saturating_sub(WORDS_EACH_SIDE).max(min_word)
            ..=center.saturating_add(WORDS_EACH_SIDE).min(max_word))
            .collect()
    };
    let calls: Vec<_> = words
        .iter()
        .map(|&w| (pool, UniswapV3PoolState::tickBitmapCall { wordPosition: w }))
        .collect();
    let results = multicall::aggregate3(rpc, multicall_address, &calls, block).await?;
    let mut bitmap = BTreeMap::new();
    let mut initialized = Vec::new();
    for (&w, r) in words.iter().zip(results) {
        let bits = r.map_err(|e| {
            ChainError::rpc(
                "tickBitmap",
                alloy::transports::RpcError::LocalUsageError(Box::new(e)),
            )
        })?;
        bitmap.insert(w, bits);
        for bit in 0..256 {
            if bits.bit(bit) {
                initialized.push(((i32::from(w) << 8) + bit as i32) * spacing);
            }
        }
    }
    let calls: Vec<_> = initialized
        .iter()
        .map(|&t| {
            (
                pool,
                UniswapV3PoolState::ticksCall {
                    tick: I24::try_from(t).expect("tick in range"),
                },
            )
        })
        .collect();
    let results = multicall::aggregate3(rpc, multicall_address, &calls, block).await?;
    let mut liquidity_net = BTreeMap::new();
    for (&t, r) in initialized.iter().zip(results) {
        let info = r.map_err(|e| {
            ChainError::rpc(
                "ticks",
                alloy::transports::RpcError::LocalUsageError(Box::new(e)),
            )
        })?;
        liquidity_net.insert(t, info.liquidityNet);
    }
    Ok(TickMap {
        bitmap,
        liquidity_net,
    })
}

impl PoolState {
    /// The pool at a price, over ticks already read.
    pub fn new(
        key: &PoolKey,
        (sqrt_price, tick, liquidity): (U256, i32, u128),
        ticks: Arc<TickMap>,
    ) -> Self {
        Self {
            address: key.address,
            token0: key.token0,
            token1: key.token1,
            fee: key.fee,
            tick_spacing: key.tick_spacing,
            sqrt_price,
            tick,
            liquidity,
            ticks,
        }
    }
}

/// Reads a pool's whole state at `block` from nothing: identity, price and liquidity, ticks. The
/// planner keeps the identity and ticks across blocks instead (`super::book`); this is for one-off
/// reads.
pub async fn load_pool(
    rpc: &Rpc,
    multicall_address: Address,
    pool: Address,
    block: BlockId,
) -> Result<PoolState, ChainError> {
    // Identity, price and liquidity in one batch.
    let calls = key_calls(pool)
        .into_iter()
        .chain(state_calls(pool))
        .collect();
    let results =
        multicall::aggregate3_raw(rpc, multicall_address, calls, block, multicall::BATCH).await?;
    let key = decode_key(pool, &results[..4])?;
    let state = decode_state(pool, &results[4..])?;
    let ticks = read_ticks(rpc, multicall_address, &key, state.1, block).await?;
    Ok(PoolState::new(&key, state, Arc::new(ticks)))
}

/// Price impact of a swap in bps: how much worse than the pool's price before it the swap filled.
pub fn price_impact_bps(pool: &PoolState, token_in: Address, outcome: &SwapOutcome) -> u64 {
    if outcome.amount_in.is_zero() {
        return 0;
    }
    // Spot output for the same input at the starting price, before fees: in·P (0→1) or in/P (1→0).
    let p = pool.sqrt_price;
    let spot = if token_in == pool.token0 {
        mul_div(mul_div(outcome.amount_in, p, Q96), p, Q96)
    } else {
        mul_div(mul_div(outcome.amount_in, Q96, p), Q96, p)
    };
    if spot.is_zero() || outcome.amount_out >= spot {
        return 0;
    }
    ((spot - outcome.amount_out) * U256::from(10_000u64) / spot).to::<u64>()
}

/// A test pool: one position over ticks [-600, 600] (spacing 60, 0.3%), price 1, `liquidity` deep.
#[cfg(test)]
pub(crate) fn flat_pool(liquidity: u128) -> PoolState {
    let spacing = 60;
    let (min_word, max_word) = word_range(spacing);
    let bitmap: BTreeMap<i16, U256> = (min_word..=max_word).map(|w| (w, U256::ZERO)).collect();
    let mut pool = PoolState {
        address: Address::ZERO,
        token0: Address::repeat_byte(1),
        token1: Address::repeat_byte(2),
        fee: 3000,
        tick_spacing: spacing,
        sqrt_price: Q96,
        tick: 0,
        liquidity,
        ticks: Arc::default(),
    };
    let mut ticks = TickMap {
        bitmap,
        liquidity_net: BTreeMap::new(),
    };
    for (t, net) in [(-600, liquidity as i128), (600, -(liquidity as i128))] {
        let c = t / spacing;
        let (w, b) = ((c >> 8) as i16, (c & 0xff) as usize);
        let word = ticks.bitmap.get_mut(&w).unwrap();
        *word |= U256::from(1u8) << b;
        ticks.liquidity_net.insert(t, net);
    }
    pool.ticks = Arc::new(ticks);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_math_extremes_and_known_points() {
        assert_eq!(sqrt_ratio_at_tick(MIN_TICK), MIN_SQRT_RATIO);
        assert_eq!(sqrt_ratio_at_tick(MAX_TICK), MAX_SQRT_RATIO);
        assert_eq!(
            MAX_SQRT_RATIO.to_string(),
            "1461446703485210103287273052203988822378723970342"
        );
        assert_eq!(sqrt_ratio_at_tick(0), Q96);
        // WETH/USDC at 2,000 (devnet-notes): tick -200312 holds sqrtPriceX96 3543191142285914205922034.
        let p = U256::from(3_543_191_142_285_914_205_922_034u128);
        assert_eq!(tick_at_sqrt_ratio(p), -200_312);
        assert!(sqrt_ratio_at_tick(-200_312) <= p && sqrt_ratio_at_tick(-200_311) > p);
        for t in [-887_271, -1, 1, 50, 887_271] {
            assert_eq!(tick_at_sqrt_ratio(sqrt_ratio_at_tick(t)), t);
        }
    }

    #[test]
    fn small_swap_at_price_one_pays_the_fee() {
        let pool = flat_pool(10u128.pow(24));
        let out = pool
            .swap_exact_in(pool.token0, U256::from(1_000_000u64))
            .unwrap();
        // 0.3% fee, negligible impact at this depth.
        assert_eq!(out.amount_in, U256::from(1_000_000u64));
        assert!(
            out.amount_out <= U256::from(997_000u64) && out.amount_out >= U256::from(996_990u64),
            "{}",
            out.amount_out
        );
        assert_eq!(out.ticks_crossed, 0);
    }

    #[test]
    fn two_sales_in_a_row_equal_one_sale_of_both() {
        // The pool after a sale, sold into again, pays what one sale of both amounts would (to a few
        // wei of rounding per step): what a block's second liquidation into the same pool gets.
        let pool = flat_pool(10u128.pow(20));
        let (a, b) = (
            U256::from(3u64) * U256::from(10u64).pow(U256::from(18)),
            U256::from(5u64) * U256::from(10u64).pow(U256::from(18)),
        );
        let first = pool.swap_exact_in(pool.token0, a).unwrap();
        let second = pool.after(&first).swap_exact_in(pool.token0, b).unwrap();
        let both = pool.swap_exact_in(pool.token0, a + b).unwrap();
        let sum = first.amount_out + second.amount_out;
        assert!(sum <= both.amount_out && both.amount_out - sum < U256::from(10u8));
        assert!(
            second.amount_out < b * first.amount_out / a,
            "the second sale fills worse"
        );
        // Crossing the position's lower edge empties the range: the pool after it has no liquidity.
        let huge = pool
            .swap_exact_in(pool.token0, U256::from(10u128.pow(30)))
            .unwrap();
        assert_eq!(pool.after(&huge).liquidity, 0);
    }

    #[test]
    fn swap_beyond_the_liquidity_stops_at_the_edge_and_partially_fills() {
        let pool = flat_pool(10u128.pow(18));
        let huge = U256::from(10u128.pow(30));
        let out = pool.swap_exact_in(pool.token0, huge).unwrap();
        assert!(out.amount_in < huge, "the pool cannot take it all");
        assert_eq!(out.ticks_crossed, 1);
        // Everything token1 the position held came out.
        let max_out = amount1_delta(sqrt_ratio_at_tick(-600), Q96, 10u128.pow(18), false);
        assert!(out.amount_out <= max_out && out.amount_out + U256::from(2u8) >= max_out);
        assert_eq!(
            pool.swap_exact_in(Address::repeat_byte(9), huge),
            Err(SwapError::WrongToken)
        );
    }

    /// The profit of buying `x` at `floor` and selling it on the pool: out(x) − x·floor.
    fn margin(out: U256, x: U256, floor: Rate) -> i128 {
        i128::try_from(out).unwrap() - i128::try_from(x * floor.out / floor.paid).unwrap()
    }

    #[test]
    fn a_sale_down_to_a_price_makes_the_most_of_a_supply_bought_at_it() {
        let e18 = U256::from(10u64).pow(U256::from(18));
        let pool = flat_pool(10u128.pow(22));
        let max_in = U256::from(1_000u64) * e18;
        // Bought at 0.95 (a 5% bonus, roughly): sold while the pool, after its 0.3%, pays more.
        for (token_in, floor) in [
            (
                pool.token0,
                Rate {
                    out: U256::from(95u8),
                    paid: U256::from(100u8),
                },
            ),
            (
                pool.token1,
                Rate {
                    out: U256::from(96u8),
                    paid: U256::from(100u8),
                },
            ),
        ] {
            let sale = pool.swap_down_to(token_in, max_in, floor).unwrap();
            assert!(
                sale.amount_in > U256::ZERO && sale.amount_in < max_in,
                "{sale:?}"
            );
            let best = margin(sale.amount_out, sale.amount_in, floor);
            // Nothing on a fine grid around it does better (beyond rounding).
            for k in 1..=400u64 {
                let x = max_in * U256::from(k) / U256::from(400u64);
                let out = pool.swap_exact_in(token_in, x).unwrap().amount_out;
                assert!(
                    margin(out, x, floor) <= best + 2,
                    "selling {x} beats the stop at {}",
                    sale.amount_in
                );
            }
            // Selling exactly that much without a limit returns the same.
            let plain = pool.swap_exact_in(token_in, sale.amount_in).unwrap();
            assert!(plain.amount_out.abs_diff(sale.amount_out) <= U256::from(1u8));
        }
        // A floor above what the first unit returns: nothing sells.
        let dear = Rate {
            out: U256::from(1u8),
            paid: U256::from(1u8),
        };
        assert_eq!(
            pool.swap_down_to(pool.token0, max_in, dear)
                .unwrap()
                .amount_in,
            U256::ZERO
        );
        // A deep pool still pays more than the floor at the end: all of it sells.
        let deep = flat_pool(10u128.pow(26));
        let floor = Rate {
            out: U256::from(95u8),
            paid: U256::from(100u8),
        };
        let all = deep.swap_down_to(deep.token0, max_in, floor).unwrap();
        assert_eq!(all.amount_in, max_in);
        assert_eq!(all, deep.swap_exact_in(deep.token0, max_in).unwrap());
    }

    #[test]
    fn a_sale_across_a_gap_without_liquidity_lands_where_the_pools_loop_does() {
        // A second position far below the first, 23,400 ticks of nothing between them (91 words).
        let liquidity = 10u128.pow(18);
        let mut pool = flat_pool(liquidity);
        let mut ticks = (*pool.ticks).clone();
        for (t, net) in [
            (-30_000, liquidity as i128),
            (-24_000, -(liquidity as i128)),
        ] {
            let c = t / pool.tick_spacing;
            *ticks.bitmap.get_mut(&((c >> 8) as i16)).unwrap() |= U256::from(1u8) << (c & 0xff);
            ticks.liquidity_net.insert(t, net);
        }
        pool.ticks = Arc::new(ticks);
        let delta = |lo: i32, hi: i32| {
            amount1_delta(
                sqrt_ratio_at_tick(lo),
                sqrt_ratio_at_tick(hi),
                liquidity,
                false,
            )
        };
        let huge = U256::from(10u128.pow(30));
        let out = pool.swap_exact_in(pool.token0, huge).unwrap();
        // Both positions emptied of token1, the gap crossed for nothing: -600, -24,000, -30,000.
        assert_eq!(out.ticks_crossed, 3);
        let both = delta(-600, 0) + delta(-30_000, -24_000);
        assert!(out.amount_out <= both && out.amount_out + U256::from(4u8) >= both);
        assert_eq!(out.liquidity_after, 0);
        // A limit inside the gap: the price stops there, the tick is the limit's.
        let (zero_for_one, mid) = (true, sqrt_ratio_at_tick(-12_345) + U256::from(7u8));
        let stop = pool.swap_exact_in_to(zero_for_one, huge, mid).unwrap();
        assert_eq!((stop.sqrt_price_after, stop.tick_after()), (mid, -12_345));
        assert_eq!(
            stop.amount_out,
            pool.swap_exact_in_to(true, huge, sqrt_ratio_at_tick(-600))
                .unwrap()
                .amount_out
        );
        // A limit on a word's edge (tick -15,360 = word -1's lowest at spacing 60): the pool's loop
        // lands on the edge from above, one tick below it.
        let edge = sqrt_ratio_at_tick(-15_360);
        let at_edge = pool.swap_exact_in_to(true, huge, edge).unwrap();
        assert_eq!(
            (at_edge.sqrt_price_after, at_edge.tick_after()),
            (edge, -15_361)
        );
        let low = pool.after(&out);
        let back = low.swap_exact_in(low.token1, huge).unwrap();
        // Back up by token1: every tick crossed again, and 600 too.
        assert_eq!(back.ticks_crossed, 4);
        assert_eq!(back.liquidity_after, 0);
    }
    #[test]
    fn tick_at_sqrt_ratio_is_the_greatest_tick_at_or_below_the_price() {
        // The definition, by bisection over sqrt_ratio_at_tick.
        let by_bisection = |p: U256| {
            let (mut lo, mut hi) = (MIN_TICK, MAX_TICK);
            while lo < hi {
                let mid = lo + (hi - lo + 1) / 2;
                if sqrt_ratio_at_tick(mid) <= p {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            lo
        };
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut prices = vec![MIN_SQRT_RATIO, MAX_SQRT_RATIO - U256::from(1u8), Q96];
        for t in [MIN_TICK, -200_312, -1, 0, 1, 77_777, MAX_TICK - 1] {
            let at = sqrt_ratio_at_tick(t);
            prices.extend([at, at + U256::from(1u8), at - U256::from(1u8)]);
        }
        for _ in 0..2_000 {
            // xorshift: prices spread over every magnitude the range holds.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bits = 33 + (x % 128) as usize;
            let random: U256 = U256::from(x) | (U256::from(x.rotate_left(17)) << 64usize);
            let p = if bits <= 128 {
                random >> (128 - bits)
            } else {
                random << (bits - 128)
            };
            prices.push(p);
        }
        for p in prices {
            let p = p.clamp(MIN_SQRT_RATIO, MAX_SQRT_RATIO - U256::from(1u8));
            assert_eq!(tick_at_sqrt_ratio(p), by_bisection(p), "{p}");
        }
    }
}
