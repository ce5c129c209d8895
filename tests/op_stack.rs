//! The L1 data fee computed off-chain equals the real GasPriceOracle's `getL1Fee` (from
//! `@eth-optimism/contracts-bedrock`, installed at its predeploy address on anvil with L1 values set by
//! the depositor account), for transactions of many sizes and shapes.

use alloy::primitives::{Bytes, U256, keccak256};
use cascade::{
    chain,
    devnet::{op_stack, spawn_anvil},
    planner::fees::op_stack::{
        GAS_PRICE_ORACLE, GasPriceOracle, L1FeeParams, fastlz_len, l1_fee_unsigned,
    },
};

/// Deterministic test payloads: calldata-like (selectors, addresses, zero-padded words), random bytes,
/// runs, and sizes from empty to 40 kB.
fn payloads() -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new(), vec![0u8; 1], vec![0xff; 13], vec![0u8; 5_000]];
    for (i, size) in [
        14usize, 31, 68, 100, 150, 300, 517, 1_000, 2_048, 4_999, 12_000, 40_000,
    ]
    .into_iter()
    .enumerate()
    {
        // Pseudo-random bytes (incompressible).
        let random: Vec<u8> = (0..size)
            .map(|j| keccak256((i * 100_003 + j).to_le_bytes())[0])
            .collect();
        out.push(random);
        // ABI-like: 4-byte selector then 32-byte words with small values and addresses (compressible).
        let mut abi = keccak256(i.to_le_bytes())[..4].to_vec();
        let mut w = 0;
        while abi.len() < size {
            let mut word = [0u8; 32];
            if w % 3 == 0 {
                word[12..].copy_from_slice(&keccak256((i, w).0.to_le_bytes())[..20]);
            } else {
                word[31] = (w * 7 + i) as u8;
                word[30] = (w % 5) as u8;
            }
            abi.extend_from_slice(&word);
            w += 1;
        }
        abi.truncate(size);
        out.push(abi);
    }
    out
}

#[tokio::test]
async fn l1_fee_equals_the_gas_price_oracle() {
    let anvil = spawn_anvil(None, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let rpc = chain::connect_http(&anvil.endpoint()).unwrap();
    op_stack::install(&rpc, &op_stack::typical_l1_values())
        .await
        .expect("install the OP predeploys");
    for l1 in [
        op_stack::typical_l1_values(),
        L1FeeParams {
            l1_base_fee: U256::from(40_000_000_000u64),
            blob_base_fee: U256::from(25_000_000_000u64),
            base_fee_scalar: 1_368,
            blob_base_fee_scalar: 810_949,
        },
    ] {
        op_stack::set_l1_values(&rpc, &l1)
            .await
            .expect("set L1 values as the depositor");
        assert_eq!(
            L1FeeParams::read(&rpc).await.unwrap(),
            l1,
            "L1Block holds what the depositor set"
        );
        assert!(
            chain::view(
                &rpc,
                GAS_PRICE_ORACLE,
                GasPriceOracle::isFjordCall {},
                "isFjord"
            )
            .await
            .unwrap()
        );

        let mut largest_diff = U256::ZERO;
        for data in payloads() {
            let ours = l1_fee_unsigned(&data, &l1);
            let theirs = chain::view(
                &rpc,
                GAS_PRICE_ORACLE,
                GasPriceOracle::getL1FeeCall {
                    data: Bytes::from(data.clone()),
                },
                "getL1Fee",
            )
            .await
            .unwrap();
            largest_diff = largest_diff.max(ours.abs_diff(theirs));
            assert_eq!(
                ours,
                theirs,
                "{} bytes (fastlz {})",
                data.len(),
                fastlz_len(&data)
            );
        }
        eprintln!(
            "L1 fee vs GasPriceOracle.getL1Fee over {} payloads: largest difference {largest_diff} wei",
            payloads().len()
        );
    }
}
