//! The blob base fee of the next L1 block, from the head's header: EIP-4844's `fake_exponential`, the
//! per-fork blob schedule (EIP-7691 Prague, EIP-7892 BPO forks) chosen by timestamp, and EIP-7918's
//! reserve price from Osaka on. Follows go-ethereum's `consensus/misc/eip4844` (the reference client).
//!
//! `eth_blobBaseFee` answers for the head, not the next block, so the keeper computes it itself.

use alloy::primitives::U256;

/// Blob gas per blob (2^17).
pub const GAS_PER_BLOB: u64 = 131_072;
/// EIP-7918's `BLOB_BASE_COST` (2^13): a blob's execution-gas floor.
pub const BLOB_BASE_COST: u64 = 8_192;

/// One entry of a chain's blob schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobParams {
    /// The fork's name, for logs.
    pub fork: &'static str,
    /// Activation timestamp.
    pub activation: u64,
    /// Target blobs per block.
    pub target: u64,
    /// Max blobs per block.
    pub max: u64,
    /// Base fee update fraction.
    pub update_fraction: u64,
    /// EIP-7918 applies (Osaka and every fork after it).
    pub reserve_price: bool,
}

/// Ethereum mainnet's schedule (activation times from EIP-7607 and the fork meta-EIPs, values from
/// go-ethereum's mainnet `BlobScheduleConfig`), oldest first.
pub const MAINNET: [BlobParams; 5] = [
    BlobParams {
        fork: "cancun",
        activation: 1_710_338_135,
        target: 3,
        max: 6,
        update_fraction: 3_338_477,
        reserve_price: false,
    },
    BlobParams {
        fork: "prague",
        activation: 1_746_612_311,
        target: 6,
        max: 9,
        update_fraction: 5_007_716,
        reserve_price: false,
    },
    BlobParams {
        fork: "osaka",
        activation: 1_764_798_551,
        target: 6,
        max: 9,
        update_fraction: 5_007_716,
        reserve_price: true,
    },
    BlobParams {
        fork: "bpo1",
        activation: 1_765_290_071,
        target: 10,
        max: 15,
        update_fraction: 8_346_193,
        reserve_price: true,
    },
    BlobParams {
        fork: "bpo2",
        activation: 1_767_747_671,
        target: 14,
        max: 21,
        update_fraction: 11_684_671,
        reserve_price: true,
    },
];

/// The parameters in force at `timestamp` (`None` before the schedule's first fork).
pub fn params_at(schedule: &[BlobParams], timestamp: u64) -> Option<BlobParams> {
    schedule
        .iter()
        .rev()
        .find(|p| timestamp >= p.activation)
        .copied()
}

/// `factor · e^(numerator / denominator)` by the EIP-4844 Taylor series, in integers.
pub fn fake_exponential(factor: U256, numerator: U256, denominator: U256) -> U256 {
    let mut output = U256::ZERO;
    let mut accum = factor * denominator;
    let mut i = U256::from(1u8);
    while !accum.is_zero() {
        output += accum;
        accum = accum * numerator / (denominator * i);
        i += U256::from(1u8);
    }
    output / denominator
}

/// The blob base fee for a block with `excess_blob_gas` under `params`.
pub fn blob_base_fee(excess_blob_gas: u64, params: &BlobParams) -> U256 {
    fake_exponential(
        U256::from(1u8),
        U256::from(excess_blob_gas),
        U256::from(params.update_fraction),
    )
}

/// What the next block's blob fee depends on, read from the head's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentBlobHeader {
    /// `excessBlobGas`.
    pub excess_blob_gas: u64,
    /// `blobGasUsed`.
    pub blob_gas_used: u64,
    /// `baseFeePerGas` (EIP-7918 compares against it).
    pub base_fee_per_gas: u64,
}

/// The next block's excess blob gas, under the schedule in force at its timestamp.
pub fn next_excess_blob_gas(parent: &ParentBlobHeader, next: &BlobParams) -> u64 {
    let total = parent.excess_blob_gas + parent.blob_gas_used;
    let target_gas = next.target * GAS_PER_BLOB;
    if total < target_gas {
        return 0;
    }
    if next.reserve_price {
        // EIP-7918: while blobs are cheaper than their execution-gas floor, excess only grows (by the
        // share of used gas above target), so the price cannot fall further.
        let reserve = U256::from(BLOB_BASE_COST) * U256::from(parent.base_fee_per_gas);
        let blob_price = blob_base_fee(parent.excess_blob_gas, next) * U256::from(GAS_PER_BLOB);
        if reserve > blob_price {
            return parent.excess_blob_gas
                + parent.blob_gas_used * (next.max - next.target) / next.max;
        }
    }
    total - target_gas
}

/// The blob base fee of the block after `parent`, to be mined at `next_timestamp`.
pub fn next_blob_base_fee(
    schedule: &[BlobParams],
    parent: &ParentBlobHeader,
    next_timestamp: u64,
) -> Option<U256> {
    let next = params_at(schedule, next_timestamp)?;
    Some(blob_base_fee(next_excess_blob_gas(parent, &next), &next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(x: u64) -> U256 {
        U256::from(x)
    }

    /// go-ethereum's `TestFakeExponential` vectors.
    #[test]
    fn fake_exponential_vectors() {
        let cases: [(u64, u64, u64, u64); 15] = [
            (1, 0, 1, 1),
            (38493, 0, 1000, 38493),
            (0, 1234, 2345, 0),
            (1, 2, 1, 6),
            (1, 4, 2, 6),
            (1, 3, 1, 16),
            (1, 6, 2, 18),
            (1, 4, 1, 49),
            (1, 8, 2, 50),
            (10, 8, 2, 542),
            (11, 8, 2, 596),
            (1, 5, 1, 136),
            (1, 5, 2, 11),
            (2, 5, 2, 23),
            (1, 50_000_000, 2_225_652, 5_709_098_764),
        ];
        for (f, n, d, want) in cases {
            assert_eq!(
                fake_exponential(u(f), u(n), u(d)),
                u(want),
                "fake_exponential({f}, {n}, {d})"
            );
        }
    }

    /// go-ethereum's `TestCalcBlobFee` (Cancun's fraction).
    #[test]
    fn cancun_blob_fees() {
        let cancun = MAINNET[0];
        for (excess, fee) in [
            (0u64, 1u64),
            (2_314_057, 1),
            (2_314_058, 2),
            (10 * 1024 * 1024, 23),
        ] {
            assert_eq!(blob_base_fee(excess, &cancun), u(fee), "excess {excess}");
        }
    }

    /// A mainnet Cancun header (timestamp 1717439363): excessBlobGas 262144, blobGasUsed 393216 (three
    /// blobs, the target), base fee 13.73 gwei. The next block keeps the excess and a 1-wei blob fee.
    #[test]
    fn a_mainnet_cancun_header() {
        let parent = ParentBlobHeader {
            excess_blob_gas: 262_144,
            blob_gas_used: 393_216,
            base_fee_per_gas: 13_726_822_059,
        };
        assert_eq!(params_at(&MAINNET, 1_717_439_375).unwrap().fork, "cancun");
        assert_eq!(next_excess_blob_gas(&parent, &MAINNET[0]), 262_144);
        assert_eq!(
            next_blob_base_fee(&MAINNET, &parent, 1_717_439_375),
            Some(u(1))
        );
    }

    #[test]
    fn schedule_is_chosen_by_timestamp() {
        assert_eq!(params_at(&MAINNET, 1_710_338_134), None);
        assert_eq!(params_at(&MAINNET, 1_710_338_135).unwrap().fork, "cancun");
        assert_eq!(params_at(&MAINNET, 1_746_612_310).unwrap().fork, "cancun");
        assert_eq!(params_at(&MAINNET, 1_746_612_311).unwrap().fork, "prague");
        assert_eq!(params_at(&MAINNET, 1_765_290_071).unwrap().fork, "bpo1");
        assert_eq!(params_at(&MAINNET, 1_800_000_000).unwrap().fork, "bpo2");
    }

    /// go-ethereum's `TestCalcExcessBlobGas` cases, under Cancun (target 3) and Prague (target 6).
    #[test]
    fn excess_blob_gas_follows_target() {
        for params in [MAINNET[0], MAINNET[1]] {
            let t = params.target;
            let target_gas = t * GAS_PER_BLOB;
            let cases = [
                (0, 0, 0),
                (0, 1, 0),
                (0, t, 0),
                (0, t + 1, GAS_PER_BLOB),
                (1, t + 1, GAS_PER_BLOB + 1),
                (1, t + 2, 2 * GAS_PER_BLOB + 1),
                (target_gas, t, target_gas),
                (target_gas, t - 1, target_gas - GAS_PER_BLOB),
                (target_gas, t - 2, target_gas - 2 * GAS_PER_BLOB),
                (GAS_PER_BLOB - 1, t - 1, 0),
            ];
            for (excess, blobs, want) in cases {
                let parent = ParentBlobHeader {
                    excess_blob_gas: excess,
                    blob_gas_used: blobs * GAS_PER_BLOB,
                    base_fee_per_gas: 1,
                };
                assert_eq!(
                    next_excess_blob_gas(&parent, &params),
                    want,
                    "{} excess {excess} blobs {blobs}",
                    params.fork
                );
            }
        }
    }

    #[test]
    fn prague_fraction_moves_the_fee_slower_than_cancun() {
        // The same excess is cheaper under Prague's larger update fraction.
        let excess = 10 * 1024 * 1024;
        let cancun = blob_base_fee(excess, &MAINNET[0]);
        let prague = blob_base_fee(excess, &MAINNET[1]);
        assert_eq!(cancun, u(23));
        assert_eq!(prague, fake_exponential(u(1), u(excess), u(5_007_716)));
        assert_eq!(prague, u(8));
    }

    #[test]
    fn reserve_price_binds_after_osaka() {
        let osaka = MAINNET[2];
        // A full block (9 blobs) on a parent whose execution base fee is 10 gwei: the blob price at this
        // excess (1 wei per blob gas) is far below the 8192 × 10 gwei reserve, so excess grows by
        // used·(max−target)/max instead of used−target.
        let parent = ParentBlobHeader {
            excess_blob_gas: 1_000_000,
            blob_gas_used: 9 * GAS_PER_BLOB,
            base_fee_per_gas: 10_000_000_000,
        };
        assert_eq!(
            next_excess_blob_gas(&parent, &osaka),
            1_000_000 + 9 * GAS_PER_BLOB * 3 / 9
        );
        // Before Osaka (Prague, same target) the plain rule applies.
        assert_eq!(
            next_excess_blob_gas(&parent, &MAINNET[1]),
            1_000_000 + 3 * GAS_PER_BLOB
        );
        // With a negligible execution base fee the reserve does not bind.
        let cheap = ParentBlobHeader {
            base_fee_per_gas: 1,
            ..parent
        };
        assert_eq!(
            next_excess_blob_gas(&cheap, &osaka),
            1_000_000 + 3 * GAS_PER_BLOB
        );
        // The reserve binds only while blobs are cheap: at a high excess the blob price wins.
        let pricey = ParentBlobHeader {
            excess_blob_gas: 150_000_000,
            ..parent
        };
        assert!(
            blob_base_fee(pricey.excess_blob_gas, &osaka) * u(GAS_PER_BLOB)
                > u(BLOB_BASE_COST * 10_000_000_000)
        );
        assert_eq!(
            next_excess_blob_gas(&pricey, &osaka),
            150_000_000 + 3 * GAS_PER_BLOB
        );
    }

    /// A real post-BPO2 mainnet header (block 25,703,457, timestamp 1,786,110,119, built by Titan; the
    /// example block of ultrasound.money's block-stream README): excessBlobGas 0xbfaa41d, one blob
    /// used, base fee 0.478 gwei. Expected values from the EIP-4844 reference `fake_exponential` in
    /// Python on the same inputs. The reserve binds here, barely: 8192 × base fee = 3.918e12 against
    /// 131072 × blob fee = 3.867e12, the equilibrium EIP-7918 is designed to hold blobs at.
    #[test]
    fn a_real_post_bpo2_header_where_the_reserve_binds() {
        let parent = ParentBlobHeader {
            excess_blob_gas: 0xbfaa41d,
            blob_gas_used: 0x20000,
            base_fee_per_gas: 0x1c812c42,
        };
        let timestamp = 0x6a75e0a7;
        let bpo2 = params_at(&MAINNET, timestamp).unwrap();
        assert_eq!(bpo2.fork, "bpo2");
        assert_eq!(blob_base_fee(parent.excess_blob_gas, &bpo2), u(29_500_521));
        // Reserve binding: excess grows by used·(21−14)/21 = 43,690, although one blob is far below
        // the target of 14 (the plain rule would have it fall by 13 blobs' worth).
        assert_eq!(next_excess_blob_gas(&parent, &bpo2), 201_019_079);
        assert_eq!(
            next_blob_base_fee(&MAINNET, &parent, timestamp + 12),
            Some(u(29_611_033))
        );
    }

    #[test]
    fn bpo_boundary_uses_the_next_blocks_schedule() {
        // The parent is the last Osaka block; the next block is BPO1's first: target 10, fraction 8346193.
        let parent = ParentBlobHeader {
            excess_blob_gas: 20_000_000,
            blob_gas_used: 9 * GAS_PER_BLOB,
            base_fee_per_gas: 1,
        };
        let bpo1 = MAINNET[3];
        let at_boundary = next_blob_base_fee(&MAINNET, &parent, bpo1.activation).unwrap();
        let expected_excess = 20_000_000 + 9 * GAS_PER_BLOB - 10 * GAS_PER_BLOB;
        assert_eq!(
            at_boundary,
            fake_exponential(u(1), u(expected_excess), u(8_346_193))
        );
        // One second earlier it is still Osaka: target 6, fraction 5007716.
        let before = next_blob_base_fee(&MAINNET, &parent, bpo1.activation - 1).unwrap();
        assert_eq!(
            before,
            fake_exponential(u(1), u(20_000_000 + 3 * GAS_PER_BLOB), u(5_007_716))
        );
        assert!(at_boundary < before);
    }
}
