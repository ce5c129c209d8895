//! The L1 data fee on OP-stack chains (Fjord and later): the FastLZ-compressed size of the transaction,
//! a linear regression to an estimated Brotli size, and the L1 base fee and blob base fee weighted by
//! the chain's scalars, all read from the L1Block predeploy. The operator fee (Isthmus) is added where
//! the chain sets one.
//!
//! The sequencer charges the fee of the *signed* transaction; `GasPriceOracle.getL1Fee(unsigned)`
//! approximates it by adding 68 bytes (a signature) to the compressed size of the unsigned one. Both
//! are here: [`l1_fee_signed`] for planning, [`l1_fee_unsigned`] to check against the predeploy.

use crate::chain::{ChainError, Rpc, view};
use alloy::{
    primitives::{Address, U256, address},
    sol,
};

/// The GasPriceOracle predeploy.
pub const GAS_PRICE_ORACLE: Address = address!("0x420000000000000000000000000000000000000F");
/// The L1Block predeploy.
pub const L1_BLOCK: Address = address!("0x4200000000000000000000000000000000000015");

sol! {
    #[sol(rpc)]
    contract L1Block {
        function basefee() external view returns (uint256);
        function blobBaseFee() external view returns (uint256);
        function baseFeeScalar() external view returns (uint32);
        function blobBaseFeeScalar() external view returns (uint32);
    }

    #[sol(rpc)]
    contract GasPriceOracle {
        function getL1Fee(bytes data) external view returns (uint256);
        function isFjord() external view returns (bool);
        function setEcotone() external;
        function setFjord() external;
    }
}

/// Fjord's regression: estimated size (×1e6) = intercept + coefficient × FastLZ size, at least 100 bytes.
const COST_INTERCEPT: i64 = -42_585_600;
const COST_FASTLZ_COEF: i64 = 836_500;
const MIN_TRANSACTION_SIZE: i64 = 100;

/// The L1 values the fee depends on (L1Block, updated by the sequencer every L2 block's deposit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct L1FeeParams {
    /// L1 base fee (wei).
    pub l1_base_fee: U256,
    /// L1 blob base fee (wei).
    pub blob_base_fee: U256,
    /// Scalar on the L1 base fee (6 decimals).
    pub base_fee_scalar: u32,
    /// Scalar on the blob base fee (6 decimals).
    pub blob_base_fee_scalar: u32,
}

impl L1FeeParams {
    /// Reads them from the L1Block predeploy.
    pub async fn read(rpc: &Rpc) -> Result<Self, ChainError> {
        Ok(Self {
            l1_base_fee: view(rpc, L1_BLOCK, L1Block::basefeeCall {}, "L1Block.basefee").await?,
            blob_base_fee: view(
                rpc,
                L1_BLOCK,
                L1Block::blobBaseFeeCall {},
                "L1Block.blobBaseFee",
            )
            .await?,
            base_fee_scalar: view(
                rpc,
                L1_BLOCK,
                L1Block::baseFeeScalarCall {},
                "L1Block.baseFeeScalar",
            )
            .await?,
            blob_base_fee_scalar: view(
                rpc,
                L1_BLOCK,
                L1Block::blobBaseFeeScalarCall {},
                "L1Block.blobBaseFeeScalar",
            )
            .await?,
        })
    }
}

/// The FastLZ (level 1) compressed length of `data`, as Solady's `LibZip.flzCompress` (which the
/// GasPriceOracle runs) would produce it: literals cost one byte per run of up to 32 plus the bytes,
/// matches two or three bytes per 262 matched.
pub fn fastlz_len(data: &[u8]) -> u32 {
    let len = data.len();
    let mut n: usize = 0;
    let mut table = vec![0usize; 8192];
    let u24 =
        |i: usize| u32::from(data[i]) | u32::from(data[i + 1]) << 8 | u32::from(data[i + 2]) << 16;
    let hash = |v: u32| ((2_654_435_769u64 * u64::from(v)) >> 19) as usize & 0x1fff;
    let literals = |n: &mut usize, r: usize| {
        *n += 0x21 * (r / 0x20);
        if !r.is_multiple_of(0x20) {
            *n += r % 0x20 + 1;
        }
    };
    let ip_limit = len.saturating_sub(13);
    let mut anchor = 0usize;
    let mut ip = 2usize;
    while ip < ip_limit {
        // Find the next position whose 3 bytes were seen within the last 8 KiB.
        let mut reference: usize;
        let mut at_limit = false;
        loop {
            let seq = u24(ip);
            let h = hash(seq);
            reference = table[h];
            table[h] = ip;
            let distance = ip - reference;
            if ip >= ip_limit {
                at_limit = true;
                break;
            }
            ip += 1;
            if distance <= 0x1fff && seq == u24(reference) {
                break;
            }
        }
        if at_limit {
            break;
        }
        ip -= 1;
        if ip > anchor {
            literals(&mut n, ip - anchor);
        }
        // Match length: bytes equal after the first three, up to the limit; one past the first
        // difference, as the reference implementation counts it.
        let (p, q, end) = (reference + 3, ip + 3, ip_limit + 9);
        let mut l = 0usize;
        let mut e = end - q;
        while l < e {
            if data[p + l] != data[q + l] {
                e = 0;
            }
            l += 1;
        }
        let m = l - 1;
        n += 3 * (m / 262) + if m % 262 >= 6 { 3 } else { 2 };
        ip += l;
        for _ in 0..2 {
            table[hash(u24(ip))] = ip;
            ip += 1;
        }
        anchor = ip;
    }
    literals(&mut n, len - anchor);
    n as u32
}

/// The Fjord L1 fee for a FastLZ size.
pub fn fjord_l1_fee(fastlz_size: u32, params: &L1FeeParams) -> U256 {
    let estimated = (COST_INTERCEPT + COST_FASTLZ_COEF * i64::from(fastlz_size))
        .max(MIN_TRANSACTION_SIZE * 1_000_000);
    let fee_scaled = U256::from(params.base_fee_scalar) * U256::from(16u8) * params.l1_base_fee
        + U256::from(params.blob_base_fee_scalar) * params.blob_base_fee;
    U256::from(estimated as u64) * fee_scaled / U256::from(1_000_000_000_000u64)
}

/// The L1 fee the sequencer charges for a signed transaction (its EIP-2718 bytes).
pub fn l1_fee_signed(signed_tx: &[u8], params: &L1FeeParams) -> U256 {
    fjord_l1_fee(fastlz_len(signed_tx), params)
}

/// `GasPriceOracle.getL1Fee(unsigned_tx)`: the unsigned transaction's compressed size plus 68.
pub fn l1_fee_unsigned(unsigned_tx: &[u8], params: &L1FeeParams) -> U256 {
    fjord_l1_fee(fastlz_len(unsigned_tx) + 68, params)
}

/// Isthmus operator fee: `gas × scalar / 1e6 + constant` (charged on the gas limit, the unused part
/// refunded; a plan charges it on its gas estimate).
pub fn operator_fee(gas: u64, scalar: u32, constant: u64) -> U256 {
    U256::from(gas) * U256::from(scalar) / U256::from(1_000_000u64) + U256::from(constant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastlz_of_short_and_repetitive_data() {
        // Under 13 bytes nothing matches: one literal run.
        assert_eq!(fastlz_len(&[]), 0);
        assert_eq!(fastlz_len(&[7u8; 10]), 11);
        // 32 literal bytes take 33; 33 take 35.
        let distinct: Vec<u8> = (0..33u8).collect();
        assert_eq!(fastlz_len(&distinct[..32]), 33);
        assert_eq!(fastlz_len(&distinct), 35);
        // A long run of zeros compresses to a handful of bytes.
        let zeros = vec![0u8; 1000];
        assert!(fastlz_len(&zeros) < 30, "{}", fastlz_len(&zeros));
    }

    #[test]
    fn fjord_fee_has_a_floor_of_100_bytes() {
        let p = L1FeeParams {
            l1_base_fee: U256::from(20_000_000_000u64),
            blob_base_fee: U256::from(1u8),
            base_fee_scalar: 1368,
            blob_base_fee_scalar: 810_949,
        };
        // Tiny transactions pay for 100 bytes: 100e6 × (16·1368·20e9 + 810949) / 1e12.
        let floor = U256::from(100_000_000u64)
            * (U256::from(16u64 * 1368 * 20_000_000_000) + U256::from(810_949u64))
            / U256::from(1_000_000_000_000u64);
        assert_eq!(fjord_l1_fee(10, &p), floor);
        assert!(fjord_l1_fee(400, &p) > floor);
        assert_eq!(
            operator_fee(1_000_000, 2_000_000, 5),
            U256::from(2_000_005u64)
        );
    }
}
