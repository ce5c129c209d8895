//! Chain access: providers, contract bindings, batched reads and transaction sending.

pub mod bindings;
pub mod failover;
pub mod metered;
pub mod multicall;
pub mod trouble;

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, Bytes},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::{TransactionReceipt, TransactionRequest},
    transports::{RpcError, TransportErrorKind},
};
use std::time::Duration;

/// The provider type used throughout: type-erased so components do not carry filler generics.
pub type Rpc = DynProvider;

/// An RPC URL with any credentials (user info, and path or query segments that look like API keys)
/// replaced, so it can be logged.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable url>".to_owned();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("***");
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("***"));
    }
    // Providers put keys in the last path segment (`/v2/<key>`, `/<key>`): keep only the host and the
    // first segments that are plainly not secrets.
    let redacted_path: Vec<String> = parsed
        .path_segments()
        .map(|segments| {
            segments
                .map(|s| {
                    if s.len() >= 16 {
                        "***".to_owned()
                    } else {
                        s.to_owned()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    parsed.set_path(&redacted_path.join("/"));
    parsed.to_string()
}

/// Connects to an HTTP JSON-RPC endpoint without fillers: callers set what they need explicitly.
pub fn connect_http(url: &str) -> Result<Rpc, ChainError> {
    let parsed = url
        .parse()
        .map_err(|_| ChainError::BadUrl(redact_url(url)))?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_http(parsed)
        .erased())
}

/// Connects over HTTP with every request counted by `meter`.
pub fn connect_http_metered(url: &str, meter: &metered::RpcMeter) -> Result<Rpc, ChainError> {
    let parsed: url::Url = url
        .parse()
        .map_err(|_| ChainError::BadUrl(redact_url(url)))?;
    let client = alloy::rpc::client::ClientBuilder::default()
        .layer(meter.clone())
        .http(parsed);
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_client(client)
        .erased())
}

/// Connects over HTTP to every URL in `urls` with failover between them in order ([`failover`]), every
/// request counted by `meter` and given `timeout` at each endpoint. `ws://` URLs are skipped here:
/// they serve the newHeads subscription.
pub fn connect_failover(
    urls: &[String],
    meter: &metered::RpcMeter,
    timeout: Duration,
) -> Result<Rpc, ChainError> {
    use alloy::transports::{IntoBoxTransport, http::Http};
    let endpoints = urls
        .iter()
        .filter(|u| !u.starts_with("ws://") && !u.starts_with("wss://"))
        .map(|url| {
            let parsed: url::Url = url
                .parse()
                .map_err(|_| ChainError::BadUrl(redact_url(url)))?;
            Ok(failover::Endpoint {
                transport: Http::new(parsed).into_box_transport(),
                shown: redact_url(url),
            })
        })
        .collect::<Result<Vec<_>, ChainError>>()?;
    if endpoints.is_empty() {
        return Err(ChainError::BadUrl(
            "no http(s) URL among chain.rpc_urls (a ws:// URL serves only the block subscription)"
                .into(),
        ));
    }
    let client = alloy::rpc::client::ClientBuilder::default()
        .layer(meter.clone())
        .transport(
            failover::Failover::new(endpoints).with_timeout(timeout),
            false,
        );
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_client(client)
        .erased())
}

/// Errors from talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The URL does not parse.
    #[error("RPC URL {0} does not parse")]
    BadUrl(String),
    /// The RPC failed (transport, server error, or an `eth_call` revert).
    #[error("{context}: {source}")]
    Rpc {
        /// What was being done.
        context: String,
        /// The RPC error.
        #[source]
        source: RpcError<TransportErrorKind>,
    },
    /// A transaction was mined but reverted.
    #[error("{context}: transaction {hash} reverted{reason}")]
    Reverted {
        /// What was being done.
        context: String,
        /// The transaction hash.
        hash: B256,
        /// The decoded reason, with a leading separator, or empty.
        reason: String,
    },
    /// No receipt arrived in time.
    #[error("{context}: no receipt for {hash} after {waited_secs} s")]
    NoReceipt {
        /// What was being done.
        context: String,
        /// The transaction hash.
        hash: B256,
        /// How long we waited.
        waited_secs: u64,
    },
}

impl ChainError {
    /// Wraps an RPC error with what was being done.
    pub fn rpc(context: impl Into<String>, source: RpcError<TransportErrorKind>) -> Self {
        Self::Rpc {
            context: context.into(),
            source,
        }
    }

    /// What kind of RPC trouble this is ([`trouble::Trouble`]); `None` for what is not an RPC failure
    /// (a mined revert, a missing receipt, a bad URL).
    pub fn trouble(&self) -> Option<trouble::Trouble> {
        match self {
            Self::Rpc { source, .. } => Some(trouble::Trouble::of(source)),
            _ => None,
        }
    }

    /// Whether trying again may succeed ([`trouble::Trouble::is_transient`]); a receipt that did not
    /// come yet may come.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Rpc { source, .. } => trouble::Trouble::of(source).is_transient(),
            Self::NoReceipt { .. } => true,
            Self::BadUrl(_) | Self::Reverted { .. } => false,
        }
    }
}

/// EIP-7825's per-transaction gas cap (Osaka).
pub const TX_GAS_CAP: u64 = 16_777_216;

/// Sends a transaction from an account the node signs for (anvil's dev accounts, or any account with
/// auto-impersonation on), and waits for its receipt. A revert is an error carrying the decoded
/// reason: `eth_sendTransaction` estimates gas first, so most reverts surface before anything is mined.
pub async fn send_unlocked(
    rpc: &Rpc,
    tx: TransactionRequest,
    context: &str,
) -> Result<TransactionReceipt, ChainError> {
    let mut tx = tx;
    if tx.gas.is_none() {
        // The node's own estimate is exact for the state it ran on, and calls that forward gas (the
        // 63/64 rule) or touch time-dependent state fail with it now and then: add headroom, within
        // the Osaka per-transaction cap.
        let estimate = rpc
            .estimate_gas(tx.clone())
            .await
            .map_err(|e| ChainError::rpc(context, e))?;
        tx.gas = Some((estimate * 13 / 10 + 50_000).min(TX_GAS_CAP));
    }
    let pending = rpc
        .send_transaction(tx.clone())
        .await
        .map_err(|e| ChainError::rpc(context, e))?;
    let hash = *pending.tx_hash();
    let receipt = wait_for_receipt(rpc, hash, context, Duration::from_secs(120)).await?;
    if !receipt.status() {
        let gas_limit = rpc
            .get_transaction_by_hash(hash)
            .await
            .ok()
            .flatten()
            .map(|t| {
                use alloy::consensus::Transaction;
                t.gas_limit()
            });
        let mut reason = replay_revert_reason(rpc, tx, receipt.block_number).await;
        if let Some(limit) = gas_limit {
            reason.push_str(&format!(" (gas used {} of {limit})", receipt.gas_used));
        }
        return Err(ChainError::Reverted {
            context: context.to_owned(),
            hash,
            reason,
        });
    }
    Ok(receipt)
}

/// Deploys `init_code` (creation bytecode with constructor arguments appended) from an unlocked account.
pub async fn deploy_unlocked(
    rpc: &Rpc,
    from: Address,
    init_code: Bytes,
    name: &str,
) -> Result<Address, ChainError> {
    let tx = TransactionRequest::default()
        .from(from)
        .with_deploy_code(init_code);
    let receipt = send_unlocked(rpc, tx, &format!("deploy {name}")).await?;
    receipt
        .contract_address
        .ok_or_else(|| ChainError::Reverted {
            context: format!("deploy {name}"),
            hash: receipt.transaction_hash,
            reason: ": no contract address in the receipt".to_owned(),
        })
}

/// Polls for a receipt. Automining nodes have it at once; with interval mining it takes a block.
pub async fn wait_for_receipt(
    rpc: &Rpc,
    hash: B256,
    context: &str,
    timeout: Duration,
) -> Result<TransactionReceipt, ChainError> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        if let Some(receipt) = rpc
            .get_transaction_receipt(hash)
            .await
            .map_err(|e| ChainError::rpc(context, e))?
        {
            return Ok(receipt);
        }
        if started.elapsed() > timeout {
            return Err(ChainError::NoReceipt {
                context: context.to_owned(),
                hash,
                waited_secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Re-runs a reverted transaction as a call on the state before its block to recover the reason.
async fn replay_revert_reason(rpc: &Rpc, tx: TransactionRequest, block: Option<u64>) -> String {
    let at = block.map(|b| b.saturating_sub(1)).unwrap_or_default();
    match rpc.call(tx).block(at.into()).await {
        Ok(_) => String::new(),
        Err(err) => format!(": {err}"),
    }
}

/// Sends `call` to `to` from an unlocked account and waits for it to be mined.
pub async fn send_call<C: alloy::sol_types::SolCall>(
    rpc: &Rpc,
    from: Address,
    to: Address,
    call: C,
    context: &str,
) -> Result<TransactionReceipt, ChainError> {
    let tx = TransactionRequest::default()
        .from(from)
        .to(to)
        .with_input(call.abi_encode());
    send_unlocked(rpc, tx, context).await
}

/// Reads `call` from `to` at the latest block.
pub async fn view<C: alloy::sol_types::SolCall>(
    rpc: &Rpc,
    to: Address,
    call: C,
    context: &str,
) -> Result<C::Return, ChainError> {
    view_at(rpc, to, call, alloy::eips::BlockId::latest(), context).await
}

/// Reads `call` from `to` at `block`.
pub async fn view_at<C: alloy::sol_types::SolCall>(
    rpc: &Rpc,
    to: Address,
    call: C,
    block: alloy::eips::BlockId,
    context: &str,
) -> Result<C::Return, ChainError> {
    let tx = TransactionRequest::default()
        .to(to)
        .with_input(call.abi_encode());
    let out = rpc
        .call(tx)
        .block(block)
        .await
        .map_err(|e| ChainError::rpc(context, e))?;
    C::abi_decode_returns(&out)
        .map_err(|e| ChainError::rpc(context, RpcError::LocalUsageError(Box::new(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://user:pass@eth.example.com/v2/abcdefghijklmnopqrstuvwxyz123456"),
            "https://***@eth.example.com/v2/***"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8545"),
            "http://127.0.0.1:8545/"
        );
        assert_eq!(
            redact_url("https://rpc.example.com/?apikey=secret"),
            "https://rpc.example.com/?***"
        );
        assert_eq!(redact_url("not a url"), "<unparseable url>");
    }
}
