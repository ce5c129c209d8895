//! Makes an anvil chain an OP-stack chain as far as fees go: the real GasPriceOracle and L1Block from
//! `@eth-optimism/contracts-bedrock` installed at their predeploy addresses, switched to Ecotone and
//! Fjord, and given L1 values by the depositor account, as the sequencer's L1-info deposit would.

use crate::{
    chain::{self, Rpc},
    planner::fees::op_stack::{GAS_PRICE_ORACLE, GasPriceOracle, L1_BLOCK, L1FeeParams},
    toolchain,
};
use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, Bytes, U256, address, keccak256},
    providers::ext::AnvilApi,
    rpc::types::TransactionRequest,
};
use eyre::WrapErr;

/// The account that sends L1-info deposits.
pub const DEPOSITOR: Address = address!("0xDeaDDEaDDeAdDeAdDEAdDEaddeAddEAdDEAd0001");

fn runtime_code(artifact: &str) -> eyre::Result<Bytes> {
    let path = toolchain::node_modules()
        .join("@eth-optimism/contracts-bedrock/forge-artifacts")
        .join(artifact);
    let text = std::fs::read_to_string(&path).wrap_err_with(|| {
        format!(
            "reading {} (install the toolchain with `make toolchain`)",
            path.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let hex = json["deployedBytecode"]["object"]
        .as_str()
        .ok_or_else(|| eyre::eyre!("{artifact}: no deployedBytecode"))?;
    Ok(alloy::hex::decode(hex)?.into())
}

/// Installs the predeploys, activates Ecotone and Fjord, and sets the L1 values.
pub async fn install(rpc: &Rpc, l1: &L1FeeParams) -> eyre::Result<()> {
    rpc.anvil_set_code(L1_BLOCK, runtime_code("L1Block.sol/L1Block.json")?)
        .await?;
    rpc.anvil_set_code(
        GAS_PRICE_ORACLE,
        runtime_code("GasPriceOracle.sol/GasPriceOracle.json")?,
    )
    .await?;
    rpc.anvil_set_balance(DEPOSITOR, U256::from(10u64).pow(U256::from(18)))
        .await?;
    rpc.anvil_impersonate_account(DEPOSITOR).await?;
    set_l1_values(rpc, l1).await?;
    chain::send_call(
        rpc,
        DEPOSITOR,
        GAS_PRICE_ORACLE,
        GasPriceOracle::setEcotoneCall {},
        "GasPriceOracle.setEcotone",
    )
    .await?;
    chain::send_call(
        rpc,
        DEPOSITOR,
        GAS_PRICE_ORACLE,
        GasPriceOracle::setFjordCall {},
        "GasPriceOracle.setFjord",
    )
    .await?;
    Ok(())
}

/// Sends `setL1BlockValuesEcotone` as the depositor: its arguments are packed, not ABI-encoded —
/// baseFeeScalar (4 bytes), blobBaseFeeScalar (4), sequenceNumber (8), L1 timestamp (8), L1 number (8),
/// basefee (32), blobBaseFee (32), L1 hash (32), batcher hash (32).
pub async fn set_l1_values(rpc: &Rpc, l1: &L1FeeParams) -> eyre::Result<()> {
    let mut data = keccak256("setL1BlockValuesEcotone()")[..4].to_vec();
    data.extend_from_slice(&l1.base_fee_scalar.to_be_bytes());
    data.extend_from_slice(&l1.blob_base_fee_scalar.to_be_bytes());
    data.extend_from_slice(&1u64.to_be_bytes()); // sequence number
    data.extend_from_slice(&1_764_000_000u64.to_be_bytes()); // L1 timestamp
    data.extend_from_slice(&21_000_000u64.to_be_bytes()); // L1 block number
    data.extend_from_slice(&l1.l1_base_fee.to_be_bytes::<32>());
    data.extend_from_slice(&l1.blob_base_fee.to_be_bytes::<32>());
    data.extend_from_slice(B256::repeat_byte(0x11).as_slice());
    data.extend_from_slice(B256::ZERO.as_slice());
    let tx = TransactionRequest::default()
        .from(DEPOSITOR)
        .to(L1_BLOCK)
        .with_input(data);
    chain::send_unlocked(rpc, tx, "L1Block.setL1BlockValuesEcotone").await?;
    Ok(())
}

/// L1 values like Base's in late 2025: 0.5 gwei L1 base fee, blobs near their floor, Base's scalars.
pub fn typical_l1_values() -> L1FeeParams {
    L1FeeParams {
        l1_base_fee: U256::from(500_000_000u64),
        blob_base_fee: U256::from(3_000_000u64),
        base_fee_scalar: 2_269,
        blob_base_fee_scalar: 1_055_762,
    }
}
