//! Private submission: `eth_sendBundle` to a relay or builder (Flashbots' interface), signed with the
//! `X-Flashbots-Signature` header so the relay knows (and can rate and reputation-score) the sender.
//! A bundle that is not included costs nothing, which is why a keeper prefers this path where it exists.

use alloy::{
    primitives::{Address, Bytes, keccak256},
    signers::{SignerSync, local::PrivateKeySigner},
};
use serde_json::json;

/// Errors sending a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The request failed.
    #[error("eth_sendBundle to {url}: {reason}")]
    Http {
        /// The relay (credentials redacted).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The relay answered with an error.
    #[error("eth_sendBundle refused by {url}: {message}")]
    Refused {
        /// The relay.
        url: String,
        /// Its message.
        message: String,
    },
    /// Signing the header failed.
    #[error("signing the bundle header: {0}")]
    Sign(String),
}

/// The JSON-RPC body of an `eth_sendBundle` for `txs` (signed EIP-2718 bytes) in `block`.
pub fn bundle_body(txs: &[Bytes], block: u64) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_sendBundle",
        "params": [{ "txs": txs, "blockNumber": format!("{block:#x}") }],
    })
    .to_string()
}

/// `X-Flashbots-Signature`: `<address>:<EIP-191 signature of the hex string of keccak256(body)>`.
pub fn signature_header(auth: &PrivateKeySigner, body: &str) -> Result<String, BundleError> {
    let digest = format!("{:#x}", keccak256(body.as_bytes()));
    let signature = auth
        .sign_message_sync(digest.as_bytes())
        .map_err(|e| BundleError::Sign(e.to_string()))?;
    Ok(format!(
        "{:#x}:0x{}",
        auth.address(),
        alloy::hex::encode(signature.as_bytes())
    ))
}

/// Recovers the signer of an `X-Flashbots-Signature` header for `body` (what a relay does).
pub fn verify_header(header: &str, body: &str) -> Option<Address> {
    let (claimed, sig) = header.split_once(':')?;
    let claimed: Address = claimed.parse().ok()?;
    let sig: alloy::primitives::Signature = sig.parse().ok()?;
    let digest = format!("{:#x}", keccak256(body.as_bytes()));
    let recovered = sig.recover_address_from_msg(digest.as_bytes()).ok()?;
    (recovered == claimed).then_some(recovered)
}

/// Sends a bundle of `txs` for `block` to `url`; returns the relay's answer (usually a bundle hash).
pub async fn send_bundle(
    url: &str,
    auth: &PrivateKeySigner,
    txs: &[Bytes],
    block: u64,
) -> Result<serde_json::Value, BundleError> {
    let shown = crate::chain::redact_url(url);
    let body = bundle_body(txs, block);
    let header = signature_header(auth, &body)?;
    let response = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Flashbots-Signature", header)
        .body(body)
        .send()
        .await
        .map_err(|e| BundleError::Http {
            url: shown.clone(),
            reason: e.without_url().to_string(),
        })?;
    let text = response.text().await.map_err(|e| BundleError::Http {
        url: shown.clone(),
        reason: e.without_url().to_string(),
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| BundleError::Http {
        url: shown.clone(),
        reason: format!("not JSON ({e})"),
    })?;
    if let Some(error) = value.get("error") {
        return Err(BundleError::Refused {
            url: shown,
            message: error.to_string(),
        });
    }
    Ok(value
        .get("result")
        .cloned()
        .unwrap_or(serde_json::Value::Null))
}

/// A relay on loopback for tests: accepts one `eth_sendBundle`, answers with a bundle hash, and hands
/// back the body and the address the `X-Flashbots-Signature` header recovers to (as a relay checks it).
#[doc(hidden)]
pub async fn local_relay() -> (String, tokio::task::JoinHandle<(String, Option<Address>)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    let header = head
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .starts_with("x-flashbots-signature:")
                                .then(|| l.split_once(':').unwrap().1.trim().to_owned())
                        })
                        .unwrap_or_default();
                    let signer = verify_header(&header, body);
                    let answer = r#"{"jsonrpc":"2.0","id":1,"result":{"bundleHash":"0x1234"}}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    socket.write_all(reply.as_bytes()).await.unwrap();
                    return (body.to_owned(), signer);
                }
            }
        }
    });
    (url, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bundle_payload_and_signature_header() {
        let auth = PrivateKeySigner::random();
        let (url, relay) = local_relay().await;
        let txs = vec![
            Bytes::from(vec![0x02, 0xaa, 0xbb]),
            Bytes::from(vec![0x02, 0xcc]),
        ];
        let result = send_bundle(&url, &auth, &txs, 0x1234).await.unwrap();
        assert_eq!(result["bundleHash"], "0x1234");
        let (body, signer) = relay.await.unwrap();
        assert_eq!(
            signer,
            Some(auth.address()),
            "the relay recovers our signing address from the header"
        );
        let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(payload["method"], "eth_sendBundle");
        assert_eq!(payload["params"][0]["blockNumber"], "0x1234");
        assert_eq!(payload["params"][0]["txs"][0], "0x02aabb");
        assert_eq!(payload["params"][0]["txs"][1], "0x02cc");
    }

    #[test]
    fn a_tampered_body_fails_verification() {
        let auth = PrivateKeySigner::random();
        let body = bundle_body(&[Bytes::from(vec![1u8])], 7);
        let header = signature_header(&auth, &body).unwrap();
        assert_eq!(verify_header(&header, &body), Some(auth.address()));
        assert_eq!(verify_header(&header, &body.replace("0x7", "0x8")), None);
    }
}
