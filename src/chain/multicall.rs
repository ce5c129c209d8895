//! Batched reads through Multicall3's `aggregate3`.
//!
//! One `eth_call` carries up to [`BATCH`] calls; a call that fails inside the batch is reported per call
//! (`allowFailure = true`), never as a failure of the whole batch.

use super::{ChainError, Rpc, bindings::Multicall3};
use alloy::{
    eips::BlockId,
    primitives::{Address, Bytes, address},
    sol_types::SolCall,
};

/// Multicall3's address, the same on 250+ chains and installed there by `cascade devnet`.
pub const MULTICALL3: Address = address!("0xcA11bde05977b3631167028862bE2a173976CA11");

/// Calls per `aggregate3`. Geth caps an `eth_call` at 50M gas; a `getUserAccountData` costs up to
/// ~100k gas with several reserves, so 100 stays well inside.
pub const BATCH: usize = 100;

/// Why one call in a batch produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The call reverted; the revert data, hex.
    #[error("reverted: {0}")]
    Reverted(String),
    /// It returned data that does not decode as the declared return type.
    #[error("undecodable return data: {0}")]
    Undecodable(String),
}

/// Runs `calls` (target, call) in batches of [`BATCH`] at `block`, returning one result per call in order.
pub async fn aggregate3<C: SolCall>(
    rpc: &Rpc,
    multicall: Address,
    calls: &[(Address, C)],
    block: BlockId,
) -> Result<Vec<Result<C::Return, CallFailure>>, ChainError> {
    let raw: Vec<(Address, Vec<u8>)> = calls
        .iter()
        .map(|(target, call)| (*target, call.abi_encode()))
        .collect();
    let results = aggregate3_raw(rpc, multicall, raw, block, BATCH).await?;
    Ok(results.iter().map(decode::<C>).collect())
}

/// Decodes one raw batch result as `C`'s return type.
pub fn decode<C: SolCall>(result: &Result<Bytes, CallFailure>) -> Result<C::Return, CallFailure> {
    let bytes = result.as_ref().map_err(Clone::clone)?;
    C::abi_decode_returns(bytes).map_err(|e| CallFailure::Undecodable(e.to_string()))
}

/// Runs already-encoded calls, which may differ in type, in batches of `batch`; one raw result per call.
pub async fn aggregate3_raw(
    rpc: &Rpc,
    multicall: Address,
    calls: Vec<(Address, Vec<u8>)>,
    block: BlockId,
    batch: usize,
) -> Result<Vec<Result<Bytes, CallFailure>>, ChainError> {
    use futures::{StreamExt, TryStreamExt};
    let contract = Multicall3::new(multicall, rpc);
    let batches: Vec<Vec<Multicall3::Call3>> = calls
        .chunks(batch.max(1))
        .map(|chunk| {
            chunk
                .iter()
                .map(|(target, data)| Multicall3::Call3 {
                    target: *target,
                    allowFailure: true,
                    callData: data.clone().into(),
                })
                .collect()
        })
        .collect();
    // Batches go out a few at a time, in order: a large read (a pool's whole tick bitmap, thousands of
    // borrowers) takes a few round trips' time, without flooding the node.
    let results: Vec<Vec<Multicall3::Result>> = futures::stream::iter(batches)
        .map(|batch| run_batch(&contract, batch, block))
        .buffered(CONCURRENT_BATCHES)
        .try_collect()
        .await?;
    Ok(results
        .into_iter()
        .flatten()
        .map(|r| {
            if r.success {
                Ok(r.returnData)
            } else {
                Err(CallFailure::Reverted(r.returnData.to_string()))
            }
        })
        .collect())
}

async fn run_batch(
    contract: &Multicall3::Multicall3Instance<&Rpc>,
    batch: Vec<Multicall3::Call3>,
    block: BlockId,
) -> Result<Vec<Multicall3::Result>, ChainError> {
    contract
        .aggregate3(batch)
        .block(block)
        .call()
        .await
        .map_err(|e| ChainError::rpc("aggregate3", contract_rpc_error(e)))
}

/// Batches of one large read in flight at once.
const CONCURRENT_BATCHES: usize = 4;

/// alloy's contract errors wrap the transport error; unwrap it so callers see one error type.
pub(crate) fn contract_rpc_error(
    err: alloy::contract::Error,
) -> alloy::transports::RpcError<alloy::transports::TransportErrorKind> {
    match err {
        alloy::contract::Error::TransportError(e) => e,
        other => alloy::transports::RpcError::LocalUsageError(Box::new(other)),
    }
}
