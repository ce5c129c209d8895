//! The transaction journal: every liquidation is written (with its signed transaction) before it is
//! sent, and updated at every step, so a crash at any point leaves enough to finish the job without
//! ever sending a second liquidation for the same borrower.

use alloy::primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

/// One signed transaction for a liquidation; replacements share the nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Transaction hash.
    pub hash: B256,
    /// The signed EIP-2718 bytes, to rebroadcast exactly this transaction after a crash.
    pub raw: Bytes,
    /// maxFeePerGas.
    pub max_fee_per_gas: u128,
    /// maxPriorityFeePerGas.
    pub max_priority_fee_per_gas: u128,
    /// Unix milliseconds when it was signed.
    pub signed_at_ms: u64,
    /// A cancellation: a 0-value transfer to ourselves that takes the nonce instead.
    #[serde(default)]
    pub cancel: bool,
}

/// Where a liquidation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxState {
    /// Signed and journaled; maybe not yet sent (a crash here is resolved by rebroadcasting).
    Prepared,
    /// Sent at least once.
    Sent,
    /// Mined.
    Included {
        /// The hash that was mined.
        hash: B256,
        /// Its block.
        block: u64,
        /// Whether it succeeded.
        success: bool,
        /// The Liquidator's profit from its `Liquidated` event (debt asset).
        profit: Option<U256>,
        /// Gas paid (wei).
        fee_paid_wei: U256,
    },
    /// Cancelled: our 0-value transfer took the nonce (the position was gone before it was mined).
    Cancelled {
        /// The cancellation's hash.
        hash: B256,
        /// Its block.
        block: u64,
        /// Gas paid for it (wei).
        fee_paid_wei: U256,
    },
    /// Will never be mined: the nonce went to another transaction.
    Dropped {
        /// Why.
        reason: String,
    },
}

impl TxState {
    /// Nothing more will happen to it.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Included { .. } | Self::Cancelled { .. } | Self::Dropped { .. }
        )
    }
}

/// A liquidation in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The borrower: one open liquidation per borrower at a time.
    pub borrower: Address,
    /// Collateral and debt assets.
    pub pair: (Address, Address),
    /// The nonce every attempt uses.
    pub nonce: u64,
    /// Attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// State.
    pub state: TxState,
    /// The most the fees may reach (wei): the plan's expected profit in ETH terms.
    pub fee_cap_wei: U256,
    /// Gas limit.
    pub gas_limit: u64,
    /// The block the plan was made at.
    #[serde(default)]
    pub planned_block: u64,
    /// The plan's expected net profit, USD × 1e8.
    #[serde(default)]
    pub expected_profit_base: i128,
    /// Debt the plan repays (debt asset units).
    #[serde(default)]
    pub debt_repaid: U256,
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// sled failed.
    #[error("journal: {0}")]
    Sled(#[from] sled::Error),
    /// An entry does not decode.
    #[error("journal entry {key} is corrupt: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// The decoder's message.
        reason: String,
    },
}

/// The journal tree.
#[derive(Clone)]
pub struct Journal {
    tree: sled::Tree,
}

impl Journal {
    /// Over a sled tree (`Store::journal_tree`).
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    fn key(entry_borrower: Address, nonce: u64) -> Vec<u8> {
        let mut key = nonce.to_be_bytes().to_vec();
        key.extend_from_slice(entry_borrower.as_slice());
        key
    }

    /// Writes an entry and waits until it is on disk: called before anything is sent.
    pub fn put(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        let value = serde_json::to_vec(entry).expect("journal entries serialize");
        self.tree
            .insert(Self::key(entry.borrower, entry.nonce), value)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Every entry, by nonce.
    pub fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        self.tree
            .iter()
            .map(|item| {
                let (k, v) = item?;
                serde_json::from_slice(&v).map_err(|e| JournalError::Corrupt {
                    key: alloy::hex::encode(&k),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Entries not yet final.
    pub fn open(&self) -> Result<Vec<JournalEntry>, JournalError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| !e.state.is_final())
            .collect())
    }

    /// The open entry for `borrower`, if any.
    pub fn open_for(&self, borrower: Address) -> Result<Option<JournalEntry>, JournalError> {
        Ok(self.open()?.into_iter().find(|e| e.borrower == borrower))
    }
}
