//! Counting RPC requests at the transport, by method: the figure the watcher's "constant cost per block"
//! promise is measured with, and the source of the per-method request metrics.

use alloy::{
    rpc::json_rpc::{RequestPacket, ResponsePacket},
    transports::{TransportError, TransportFut},
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};
use tower::{Layer, Service};

use super::trouble::Trouble;

/// The trouble of an answer that carries a JSON-RPC error (the first, in a batch).
pub(crate) fn response_trouble(response: &ResponsePacket) -> Option<Trouble> {
    let payload = match response {
        ResponsePacket::Single(r) => r.payload.as_error(),
        ResponsePacket::Batch(rs) => rs.iter().find_map(|r| r.payload.as_error()),
    }?;
    Some(Trouble::of_message(payload.code, &payload.message))
}

/// Shared request counts. Cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub struct RpcMeter {
    inner: Arc<Mutex<MeterCounts>>,
}

/// A snapshot of the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterCounts {
    /// HTTP requests (a JSON-RPC batch is one).
    pub requests: u64,
    /// JSON-RPC calls by method.
    pub by_method: BTreeMap<String, u64>,
    /// Calls that failed, by method.
    pub errors_by_method: BTreeMap<String, u64>,
    /// Calls that failed, by method and kind of trouble ([`Trouble::label`]).
    pub errors: BTreeMap<(String, &'static str), u64>,
}

impl MeterCounts {
    /// Calls of `method`.
    pub fn calls(&self, method: &str) -> u64 {
        self.by_method.get(method).copied().unwrap_or(0)
    }

    /// All JSON-RPC calls.
    pub fn total_calls(&self) -> u64 {
        self.by_method.values().sum()
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &MeterCounts) -> MeterCounts {
        let diff = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(m, n)| (m.clone(), n - then.get(m).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        MeterCounts {
            requests: self.requests - earlier.requests,
            by_method: diff(&self.by_method, &earlier.by_method),
            errors_by_method: diff(&self.errors_by_method, &earlier.errors_by_method),
            errors: self
                .errors
                .iter()
                .map(|(k, n)| (k.clone(), n - earlier.errors.get(k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

impl RpcMeter {
    /// The counts so far.
    pub fn snapshot(&self) -> MeterCounts {
        self.inner.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl<S> Layer<S> for RpcMeter {
    type Service = MeteredService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MeteredService {
            inner,
            meter: self.clone(),
        }
    }
}

/// The transport wrapped by [`RpcMeter`].
#[derive(Debug, Clone)]
pub struct MeteredService<S> {
    inner: S,
    meter: RpcMeter,
}

impl<S> Service<RequestPacket> for MeteredService<S>
where
    S: Service<RequestPacket, Future = TransportFut<'static>, Error = TransportError>
        + Send
        + 'static
        + Clone,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        let methods: Vec<String> = request.method_names().map(str::to_owned).collect();
        if let Ok(mut counts) = self.meter.inner.lock() {
            counts.requests += 1;
            for m in &methods {
                *counts.by_method.entry(m.clone()).or_default() += 1;
            }
        }
        let meter = self.meter.clone();
        let fut = self.inner.call(request);
        let started = std::time::Instant::now();
        Box::pin(async move {
            let result = fut.await;
            tracing::trace!(
                ?methods,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "rpc request answered"
            );
            let trouble = match &result {
                Err(e) => Some(Trouble::of(e)),
                Ok(response) => response_trouble(response),
            };
            if let Some(trouble) = trouble
                && let Ok(mut counts) = meter.inner.lock()
            {
                for m in &methods {
                    *counts.errors_by_method.entry(m.clone()).or_default() += 1;
                    *counts
                        .errors
                        .entry((m.clone(), trouble.label()))
                        .or_default() += 1;
                }
            }
            result
        })
    }
}
