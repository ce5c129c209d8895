//! What an RPC failure is, decided once for the whole keeper: trouble that passes (a timeout, a
//! dropped connection, a rate limit, a 5xx, a node's internal error, a body cut short, a head the
//! node has not indexed yet) is retried and failed over, never a reason to stop; a revert is the
//! chain's answer; a request the node rejects will not get better by asking again. Each kind is
//! counted (`cascade_rpc_errors_total{kind}`).

use alloy::transports::{RpcError, TransportErrorKind};

/// The kind of an RPC failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trouble {
    /// No answer in time.
    Timeout,
    /// The connection failed or was dropped.
    Connection,
    /// Rate-limited (HTTP 429, or a JSON-RPC error saying so).
    RateLimited,
    /// HTTP 5xx.
    ServerError,
    /// JSON-RPC `-32603`: the node failed internally.
    Internal,
    /// JSON-RPC `-32005`: a provider's limit (requests or results).
    LimitExceeded,
    /// An answer that does not parse: a body cut short, garbage, a missing batch member.
    Malformed,
    /// The node has not indexed the block asked about yet ("header not found", "unknown block").
    HeaderNotFound,
    /// The call reverted: the chain's answer, not trouble.
    Revert,
    /// The node rejected the request (bad parameters, an unauthorised key, a method it lacks).
    Rejected,
}

impl Trouble {
    /// Classifies `err`.
    pub fn of(err: &RpcError<TransportErrorKind>) -> Self {
        match err {
            RpcError::Transport(kind) => Self::of_transport(kind),
            RpcError::NullResp | RpcError::DeserError { .. } => Self::Malformed,
            RpcError::ErrorResp(payload) => Self::of_message(payload.code, &payload.message),
            RpcError::SerError(_)
            | RpcError::UnsupportedFeature(_)
            | RpcError::LocalUsageError(_) => Self::Rejected,
        }
    }

    fn of_transport(kind: &TransportErrorKind) -> Self {
        let http = |status: u16| match status {
            429 => Self::RateLimited,
            408 | 504 => Self::Timeout,
            500..=599 => Self::ServerError,
            _ => Self::Rejected,
        };
        match kind {
            TransportErrorKind::HttpError(e) => http(e.status),
            TransportErrorKind::HttpErrorWithRetryAfter { error, .. } => http(error.status),
            TransportErrorKind::MissingBatchResponse(_) => Self::Malformed,
            TransportErrorKind::BackendGone | TransportErrorKind::PubsubUnavailable => {
                Self::Connection
            }
            TransportErrorKind::NonRetryable(_) => Self::Rejected,
            TransportErrorKind::Custom(e) => {
                let text = error_chain(e.as_ref()).to_lowercase();
                if text.contains("timed out") || text.contains("timeout") {
                    Self::Timeout
                } else if has_number(&text, "429") || text.contains("too many requests") {
                    Self::RateLimited
                } else if text.contains("decod") || text.contains("body") || text.contains("eof") {
                    Self::Malformed
                } else {
                    Self::Connection
                }
            }
            _ => Self::Connection,
        }
    }

    /// A JSON-RPC error's kind, from its code and message (providers word the same trouble many
    /// ways).
    pub fn of_message(code: i64, message: &str) -> Self {
        let m = message.to_lowercase();
        if code == 3 || m.contains("revert") {
            return Self::Revert;
        }
        match code {
            -32603 => return Self::Internal,
            -32005 => return Self::LimitExceeded,
            429 => return Self::RateLimited,
            _ => {}
        }
        if m.contains("header not found") || m.contains("unknown block") {
            Self::HeaderNotFound
        } else if m.contains("timeout") || m.contains("timed out") {
            Self::Timeout
        } else if [
            "rate limit",
            "too many requests",
            "capacity",
            "busy",
            "overload",
            "try again",
        ]
        .iter()
        .any(|w| m.contains(w))
        {
            Self::RateLimited
        } else if m.contains("internal error") {
            Self::Internal
        } else {
            Self::Rejected
        }
    }

    /// Whether asking again (here or at another endpoint) may succeed.
    pub fn is_transient(self) -> bool {
        !matches!(self, Self::Revert | Self::Rejected)
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Internal => "internal",
            Self::LimitExceeded => "limit_exceeded",
            Self::Malformed => "malformed",
            Self::HeaderNotFound => "header_not_found",
            Self::Revert => "revert",
            Self::Rejected => "rejected",
        }
    }
}

/// An error and its sources, one line (reqwest puts "operation timed out" in a source).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A capped exponential back-off that starts over after a success: one bad minute does not slow
/// the keeper for the rest of its life.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: std::time::Duration,
    max: std::time::Duration,
    next: std::time::Duration,
}

impl Backoff {
    /// Starting at `first`, doubling to at most `max`.
    pub fn new(first: std::time::Duration, max: std::time::Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt, and doubles the one after.
    pub fn next_wait(&mut self) -> std::time::Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// A success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The wait the next failure would get.
    pub fn current(&self) -> std::time::Duration {
        self.next
    }
}

/// Whether `text` has `number` standing alone, not inside a longer number: "HTTP 429" does, a
/// request to port 42965 does not.
fn has_number(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + number.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_a_number_standing_alone_not_part_of_a_port() {
        assert!(has_number("http error 429 too many", "429"));
        assert!(has_number("status: 429", "429"));
        assert!(!has_number(
            "error sending request for url (http://127.0.0.1:42965/)",
            "429"
        ));
        assert!(!has_number("http://127.0.0.1:8429/", "429"));
    }
    use alloy::rpc::json_rpc::ErrorPayload;
    use std::time::Duration;

    fn answer(code: i64, message: &str) -> RpcError<TransportErrorKind> {
        RpcError::ErrorResp(ErrorPayload {
            code,
            message: message.to_owned().into(),
            data: None,
        })
    }

    fn http(status: u16) -> RpcError<TransportErrorKind> {
        RpcError::Transport(TransportErrorKind::HttpError(
            alloy::transports::HttpError {
                status,
                body: String::new(),
            },
        ))
    }

    #[test]
    fn transient_trouble_is_told_from_answers_and_rejections() {
        let cases = [
            (answer(-32603, "internal error"), Trouble::Internal),
            (answer(-32005, "limit exceeded"), Trouble::LimitExceeded),
            (answer(-32000, "header not found"), Trouble::HeaderNotFound),
            (answer(-32000, "request timed out"), Trouble::Timeout),
            (answer(-32016, "rate limit exceeded"), Trouble::RateLimited),
            (answer(429, "Too Many Requests"), Trouble::RateLimited),
            (http(429), Trouble::RateLimited),
            (http(502), Trouble::ServerError),
            (http(503), Trouble::ServerError),
            (http(504), Trouble::Timeout),
            (RpcError::NullResp, Trouble::Malformed),
            (
                RpcError::Transport(TransportErrorKind::BackendGone),
                Trouble::Connection,
            ),
            (
                TransportErrorKind::custom_str("error sending request: connection refused"),
                Trouble::Connection,
            ),
            (
                TransportErrorKind::custom_str("operation timed out"),
                Trouble::Timeout,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(Trouble::of(&err), kind, "{err}");
            assert!(kind.is_transient(), "{err}");
        }
        for (err, kind) in [
            (answer(3, "execution reverted"), Trouble::Revert),
            (answer(-32000, "execution reverted: 45"), Trouble::Revert),
            (answer(-32602, "invalid params"), Trouble::Rejected),
            (answer(-32601, "method not found"), Trouble::Rejected),
            (http(401), Trouble::Rejected),
        ] {
            assert_eq!(Trouble::of(&err), kind, "{err}");
            assert!(!kind.is_transient(), "{err}");
        }
        let garbled: Result<u64, _> = serde_json::from_str("{\"trunc");
        let deser = RpcError::<TransportErrorKind>::DeserError {
            err: garbled.unwrap_err(),
            text: "{\"trunc".into(),
        };
        assert_eq!(Trouble::of(&deser), Trouble::Malformed);
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let waits: Vec<u64> = (0..5).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
        assert_eq!(b.current(), Duration::from_millis(200));
    }
}
