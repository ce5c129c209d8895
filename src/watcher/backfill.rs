//! Scanning block ranges for logs in ranges that adapt to what the RPC accepts: halve on "range too
//! large" / "too many results" / timeouts, double when a range comes back quickly with few logs, back
//! off and retry on transient errors. The scan never advances past a range that did not succeed, so no
//! block is skipped.

use crate::chain::{ChainError, Rpc, trouble::Trouble};
use alloy::{
    primitives::{Address, B256},
    providers::Provider,
    rpc::types::{Filter, Log},
    transports::RpcError,
};
use std::{
    future::Future,
    ops::RangeInclusive,
    time::{Duration, Instant},
};

/// Why a `getLogs` failed, as far as the scan is concerned.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The RPC refuses this range: too many blocks, too many results, or too large a response.
    #[error("range refused: {0}")]
    RangeTooLarge(String),
    /// Worth retrying as it is (timeouts, rate limits, connection trouble).
    #[error("transient: {0}")]
    Transient(String),
    /// Will not get better.
    #[error("{0}")]
    Fatal(String),
}

/// Where logs come from: the RPC in production, scripted failures in tests.
pub trait LogSource {
    /// Logs in `from..=to`.
    fn logs(&self, from: u64, to: u64) -> impl Future<Output = Result<Vec<Log>, LogsError>> + Send;
}

/// `eth_getLogs` for some addresses and topic0s.
#[derive(Debug, Clone)]
pub struct RpcLogs {
    /// The node.
    pub rpc: Rpc,
    /// Emitting contracts.
    pub addresses: Vec<Address>,
    /// Event signatures.
    pub topics: Vec<B256>,
}

impl LogSource for RpcLogs {
    async fn logs(&self, from: u64, to: u64) -> Result<Vec<Log>, LogsError> {
        let filter = Filter::new()
            .address(self.addresses.clone())
            .event_signature(self.topics.clone())
            .from_block(from)
            .to_block(to);
        let call = self.rpc.get_logs(&filter);
        match tokio::time::timeout(Duration::from_secs(30), call).await {
            Err(_) => Err(LogsError::RangeTooLarge("no answer in 30 s".into())),
            Ok(Ok(logs)) => Ok(logs),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

/// Sorts a `getLogs` error into what the scan should do about it. Providers word range limits many
/// ways (geth: "query returned more than 10000 results"; Alchemy: "block range … exceeds"; Infura:
/// "-32005 limit exceeded"; others "range too large", "response size"), so match the words; what is
/// not a refused range is transient or not as [`Trouble`] has it.
pub fn classify(err: &RpcError<alloy::transports::TransportErrorKind>) -> LogsError {
    let text = err.to_string();
    let lower = text.to_lowercase();
    let range_words = [
        "range",
        "too many",
        "more than",
        "limit exceeded",
        "exceed",
        "response size",
        "too large",
    ];
    let trouble = Trouble::of(err);
    let refused_range = match err {
        RpcError::ErrorResp(_) => {
            trouble == Trouble::LimitExceeded || range_words.iter().any(|w| lower.contains(w))
        }
        _ => range_words.iter().any(|w| lower.contains(w)),
    };
    if refused_range && trouble != Trouble::RateLimited {
        LogsError::RangeTooLarge(text)
    } else if trouble.is_transient() {
        LogsError::Transient(text)
    } else {
        LogsError::Fatal(text)
    }
}

/// How ranges adapt.
#[derive(Debug, Clone, Copy)]
pub struct RangePolicy {
    /// First range, in blocks.
    pub initial: u64,
    /// Largest range.
    pub max: u64,
    /// Grow only when a range returned fewer logs than this…
    pub grow_below_logs: usize,
    /// …and took less than this.
    pub grow_below: Duration,
    /// Consecutive transient failures before giving up.
    pub max_retries: u32,
    /// First back-off; doubles up to 30 s.
    pub backoff: Duration,
}

impl Default for RangePolicy {
    fn default() -> Self {
        Self {
            initial: 2_000,
            max: 100_000,
            grow_below_logs: 2_000,
            grow_below: Duration::from_secs(2),
            max_retries: 10,
            backoff: Duration::from_millis(250),
        }
    }
}

/// What a scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Ranges that succeeded, in order.
    pub ranges: Vec<RangeInclusive<u64>>,
    /// Ranges the RPC refused.
    pub refused: u64,
    /// Transient failures retried.
    pub retried: u64,
    /// Logs returned.
    pub logs: u64,
}

/// Scans `from..=to`, handing each successful range's logs to `on_range` in block order. `on_range`
/// runs before the next range is asked for, so it can persist progress.
pub async fn scan<S: LogSource>(
    source: &S,
    range: RangeInclusive<u64>,
    policy: RangePolicy,
    mut on_range: impl FnMut(RangeInclusive<u64>, Vec<Log>) -> Result<(), ChainError>,
) -> Result<ScanStats, ChainError> {
    let (mut next, to) = (*range.start(), *range.end());
    let mut span = policy.initial.max(1);
    let mut failures = 0u32;
    let mut stats = ScanStats::default();
    while next <= to {
        let end = next.saturating_add(span - 1).min(to);
        let started = Instant::now();
        match source.logs(next, end).await {
            Ok(logs) => {
                failures = 0;
                stats.logs += logs.len() as u64;
                let few = logs.len() < policy.grow_below_logs;
                on_range(next..=end, logs)?;
                stats.ranges.push(next..=end);
                next = end + 1;
                if few && started.elapsed() < policy.grow_below {
                    span = (span * 2).min(policy.max);
                }
            }
            Err(LogsError::RangeTooLarge(reason)) if span > 1 => {
                stats.refused += 1;
                span = (span / 2).max(1);
                tracing::debug!(from = next, to = end, %reason, new_span = span, "getLogs range refused, shrinking");
            }
            Err(LogsError::RangeTooLarge(reason) | LogsError::Transient(reason)) => {
                failures += 1;
                stats.retried += 1;
                if failures > policy.max_retries {
                    // Still transient: whoever follows the chain tries again later, from this range
                    // (the ranges before it are stored).
                    return Err(ChainError::rpc(
                        format!("eth_getLogs {next}..={end} failed {failures} times"),
                        alloy::transports::TransportErrorKind::custom_str(&reason),
                    ));
                }
                let delay = (policy.backoff * 2u32.saturating_pow(failures - 1))
                    .min(Duration::from_secs(30));
                tracing::warn!(from = next, to = end, %reason, retry_in_ms = delay.as_millis() as u64, "getLogs failed, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(LogsError::Fatal(reason)) => {
                return Err(ChainError::rpc(
                    format!("eth_getLogs {next}..={end}"),
                    RpcError::LocalUsageError(reason.into()),
                ));
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A source that refuses ranges wider than `max_span`, fails every `fail_every`-th call, and
    /// returns one log per block, so a gap or an overlap shows in the logs received.
    struct Flaky {
        max_span: u64,
        fail_every: u64,
        calls: Mutex<u64>,
    }

    impl LogSource for Flaky {
        async fn logs(&self, from: u64, to: u64) -> Result<Vec<Log>, LogsError> {
            let call = {
                let mut c = self.calls.lock().unwrap();
                *c += 1;
                *c
            };
            if call % self.fail_every == 0 {
                return Err(if call % 2 == 0 {
                    LogsError::Transient("connection reset".into())
                } else {
                    LogsError::RangeTooLarge("timeout".into())
                });
            }
            if to - from + 1 > self.max_span {
                return Err(LogsError::RangeTooLarge(format!(
                    "block range {} exceeds {}",
                    to - from + 1,
                    self.max_span
                )));
            }
            Ok((from..=to)
                .map(|n| Log {
                    block_number: Some(n),
                    ..Default::default()
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn no_block_is_skipped_or_repeated() {
        let source = Flaky {
            max_span: 700,
            fail_every: 5,
            calls: Mutex::new(0),
        };
        let policy = RangePolicy {
            backoff: Duration::from_millis(1),
            initial: 5_000,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let stats = scan(&source, 100..=20_000, policy, |range, logs| {
            assert_eq!(logs.len() as u64, range.end() - range.start() + 1);
            seen.extend(logs.into_iter().map(|l| l.block_number.unwrap()));
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(seen, (100..=20_000).collect::<Vec<_>>());
        assert!(stats.refused > 0 && stats.retried > 0, "{stats:?}");
        // Contiguous ranges.
        for pair in stats.ranges.windows(2) {
            assert_eq!(*pair[0].end() + 1, *pair[1].start());
        }
        assert!(stats.ranges.iter().all(|r| r.end() - r.start() < 700));
    }

    #[tokio::test]
    async fn gives_up_after_persistent_failure() {
        let source = Flaky {
            max_span: 10,
            fail_every: 1,
            calls: Mutex::new(0),
        };
        let policy = RangePolicy {
            backoff: Duration::from_millis(1),
            max_retries: 3,
            ..Default::default()
        };
        let err = scan(&source, 0..=100, policy, |_, _| Ok(()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("eth_getLogs"), "{err}");
        // Transient trouble stays transient: the follower tries again.
        assert!(err.is_retryable(), "{err}");
    }

    #[test]
    fn classifies_provider_messages() {
        use alloy::rpc::json_rpc::ErrorPayload;
        let resp = |code: i64, msg: &str| {
            RpcError::ErrorResp(ErrorPayload {
                code,
                message: msg.to_owned().into(),
                data: None,
            })
        };
        assert!(matches!(
            classify(&resp(-32000, "query returned more than 10000 results")),
            LogsError::RangeTooLarge(_)
        ));
        assert!(matches!(
            classify(&resp(-32005, "limit exceeded")),
            LogsError::RangeTooLarge(_)
        ));
        assert!(matches!(
            classify(&resp(-32600, "eth_getLogs block range too large")),
            LogsError::RangeTooLarge(_)
        ));
        assert!(matches!(
            classify(&resp(429, "Too Many Requests")),
            LogsError::RangeTooLarge(_) | LogsError::Transient(_)
        ));
        assert!(matches!(
            classify(&resp(-32602, "invalid params")),
            LogsError::Fatal(_)
        ));
        // A node's internal error, a missing header, a body cut short: try again.
        assert!(matches!(
            classify(&resp(-32603, "internal error")),
            LogsError::Transient(_)
        ));
        assert!(matches!(
            classify(&resp(-32000, "header not found")),
            LogsError::Transient(_)
        ));
        assert!(matches!(
            classify(&RpcError::NullResp),
            LogsError::Transient(_)
        ));
    }
}
