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
    /// The signed EIP-2718 bytes, to rebroadcast exactly this transaction after a crash. The journal
    /// keeps them once per transaction, by hash, not in each entry ([`Journal::signed`]): read back,
    /// this is empty (journals written before kept them here, and are still read).
    #[serde(default, skip_serializing)]
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
    /// The borrower: one liquidation in flight per borrower at a time (an earlier one may be open
    /// still, mined and its outcome not yet read: `Executor::in_flight`).
    pub borrower: Address,
    /// Collateral and debt assets.
    pub pair: (Address, Address),
    /// The nonce every attempt uses.
    pub nonce: u64,
    /// Attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// State.
    pub state: TxState,
    /// The most its transaction's fees may reach (wei): the expected profit, in ETH terms, of the
    /// liquidations it carries (every entry of one transaction holds the same).
    pub fee_cap_wei: U256,
    /// Gas limit of its transaction.
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
    /// The sale it makes: after a restart, what it will do to its pool is counted into the pools of
    /// later plans until it is mined, as before the restart.
    #[serde(default)]
    pub sale: Option<crate::planner::SaleInFlight>,
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

/// The journal tree. Open entries and final ones live under their own key prefixes, so what every
/// block reads (the open ones) does not grow with the keeper's history.
#[derive(Clone)]
pub struct Journal {
    tree: sled::Tree,
}

/// Key prefix of entries not yet final.
const OPEN: u8 = b'o';
/// Key prefix of final entries.
const FINAL: u8 = b'f';
/// Key prefix of signed transactions, by hash: a transaction of sixteen liquidations is sixteen
/// entries, and its ~10 kB are written once, as bytes, instead of in each entry as hex.
const SIGNED: u8 = b's';
/// Keys before the prefixes existed: nonce and borrower, 28 bytes.
const UNPREFIXED_KEY_LEN: usize = 28;

impl Journal {
    /// Over a sled tree (`Store::journal_tree`). Entries written before open and final entries were
    /// kept apart are moved to their place, and an open entry whose final one was written too (a crash
    /// in between) is dropped.
    pub fn new(tree: sled::Tree) -> Result<Self, JournalError> {
        let journal = Self { tree };
        let old: Vec<(sled::IVec, sled::IVec)> = journal
            .tree
            .iter()
            .filter(|item| {
                item.as_ref()
                    .is_ok_and(|(k, _)| k.len() == UNPREFIXED_KEY_LEN)
            })
            .collect::<Result<_, _>>()?;
        if !old.is_empty() {
            let mut batch = sled::Batch::default();
            for (k, v) in old {
                let entry = decode(&k, &v)?;
                batch.remove(k);
                batch.insert(Self::key(&entry), v);
            }
            journal.tree.apply_batch(batch)?;
            journal.tree.flush()?;
        }
        // A crash between writing a final entry and removing its open one leaves both: final wins.
        for (nonce, borrower) in journal.open_keys()? {
            if journal
                .tree
                .contains_key(Self::key_with(FINAL, borrower, nonce))?
            {
                journal.tree.remove(Self::key_with(OPEN, borrower, nonce))?;
            }
        }
        Ok(journal)
    }

    fn key(entry: &JournalEntry) -> Vec<u8> {
        Self::key_with(
            if entry.state.is_final() { FINAL } else { OPEN },
            entry.borrower,
            entry.nonce,
        )
    }

    fn key_with(prefix: u8, borrower: Address, nonce: u64) -> Vec<u8> {
        let mut key = vec![prefix];
        key.extend_from_slice(&nonce.to_be_bytes());
        key.extend_from_slice(borrower.as_slice());
        key
    }

    /// Writes an entry and waits until it is on disk: called before anything is sent.
    pub fn put(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        self.write(entry)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Writes an entry without waiting for the disk (sled flushes within half a second): for a change
    /// that recovery redoes by itself if it is lost. That a prepared transaction was sent is one: after
    /// a crash it is sent again, and the node answers that it already has it.
    pub fn note(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        self.write(entry)
    }

    /// Waits until everything written is on disk.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.tree.flush()?;
        Ok(())
    }

    /// [`Self::flush`] on sled's own threads: the caller's task waits for the disk, the runtime's
    /// worker does not (an fsync took 5–15 ms in a busy cascade, while sizing and simulations could
    /// have used that core).
    pub async fn flush_async(&self) -> Result<(), JournalError> {
        self.tree.flush_async().await?;
        Ok(())
    }

    /// The signed bytes of `attempt`, to send it again.
    pub fn signed(&self, attempt: &Attempt) -> Result<Option<Bytes>, JournalError> {
        if !attempt.raw.is_empty() {
            return Ok(Some(attempt.raw.clone()));
        }
        Ok(self
            .tree
            .get(Self::signed_key(attempt.hash))?
            .map(|raw| Bytes::copy_from_slice(&raw)))
    }

    /// Drops the signed bytes of a transaction that is final: they will not be sent again.
    pub fn forget_signed(&self, attempts: &[Attempt]) -> Result<(), JournalError> {
        for attempt in attempts {
            self.tree.remove(Self::signed_key(attempt.hash))?;
        }
        Ok(())
    }

    fn signed_key(hash: B256) -> Vec<u8> {
        let mut key = vec![SIGNED];
        key.extend_from_slice(hash.as_slice());
        key
    }

    /// Writes an entry key by key, in an order whose every prefix is consistent (sled recovers a
    /// prefix of its log after a crash; a batch would cost two synced writes of the log, [why](crate::store)):
    /// the transaction's signed bytes before the entry that needs them, and a final entry before the
    /// removal of its open one. A crash between those two leaves both, and opening the journal drops
    /// the open one.
    fn write(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        let value = serde_json::to_vec(entry).expect("journal entries serialize");
        for attempt in entry.attempts.iter().filter(|a| !a.raw.is_empty()) {
            let key = Self::signed_key(attempt.hash);
            if !self.tree.contains_key(&key)? {
                self.tree.insert(key, attempt.raw.as_ref())?;
            }
        }
        self.tree.insert(Self::key(entry), value)?;
        if entry.state.is_final() {
            self.tree
                .remove(Self::key_with(OPEN, entry.borrower, entry.nonce))?;
        }
        Ok(())
    }

    /// Every entry, by nonce.
    pub fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        let mut all = self.scan(&[OPEN])?;
        all.extend(self.scan(&[FINAL])?);
        all.sort_by_key(|e| e.nonce);
        Ok(all)
    }

    /// Entries not yet final, by nonce.
    pub fn open(&self) -> Result<Vec<JournalEntry>, JournalError> {
        self.scan(&[OPEN])
    }

    /// The borrowers with a liquidation open (in flight, or mined and its outcome not yet read).
    pub fn open_borrowers(&self) -> Result<std::collections::HashSet<Address>, JournalError> {
        Ok(self.open_keys()?.into_iter().map(|(_, b)| b).collect())
    }

    /// Nonce and borrower of every open entry, read from the keys alone: every send asks who is in
    /// flight, and decoding the open entries (each with its signed transactions) would cost more, the
    /// more the keeper has in flight, just when it sends the most.
    pub fn open_keys(&self) -> Result<Vec<(u64, Address)>, JournalError> {
        self.tree
            .scan_prefix([OPEN])
            .keys()
            .map(|key| {
                let key = key?;
                let nonce = key.get(1..9).and_then(|n| <[u8; 8]>::try_from(n).ok());
                match (nonce, key.get(9..29)) {
                    (Some(nonce), Some(borrower)) if key.len() == 29 => {
                        Ok((u64::from_be_bytes(nonce), Address::from_slice(borrower)))
                    }
                    _ => Err(JournalError::Corrupt {
                        key: alloy::hex::encode(&key),
                        reason: "an open entry's key is not prefix, nonce and borrower".into(),
                    }),
                }
            })
            .collect()
    }

    /// The latest open entry for `borrower`, if any (an earlier one can be open too: mined, its
    /// outcome not yet read).
    pub fn open_for(&self, borrower: Address) -> Result<Option<JournalEntry>, JournalError> {
        let Some((nonce, _)) = self
            .open_keys()?
            .into_iter()
            .filter(|(_, b)| *b == borrower)
            .max_by_key(|(nonce, _)| *nonce)
        else {
            return Ok(None);
        };
        let key = Self::key_with(OPEN, borrower, nonce);
        self.tree
            .get(&key)?
            .map(|value| decode(&key, &value))
            .transpose()
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<JournalEntry>, JournalError> {
        self.tree
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<JournalEntry, JournalError> {
    serde_json::from_slice(value).map_err(|e| JournalError::Corrupt {
        key: alloy::hex::encode(key),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(nonce: u64, state: TxState) -> JournalEntry {
        JournalEntry {
            borrower: Address::repeat_byte(nonce as u8 + 1),
            pair: (Address::repeat_byte(0xc0), Address::repeat_byte(0xd0)),
            nonce,
            attempts: Vec::new(),
            state,
            fee_cap_wei: U256::from(1u8),
            gas_limit: 500_000,
            planned_block: 7,
            expected_profit_base: 1,
            debt_repaid: U256::from(2u8),
            sale: None,
        }
    }

    fn included() -> TxState {
        TxState::Included {
            hash: B256::ZERO,
            block: 8,
            success: true,
            profit: None,
            fee_paid_wei: U256::ZERO,
        }
    }

    #[test]
    fn an_entry_leaves_the_open_set_when_it_becomes_final() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let journal = Journal::new(db.open_tree("journal").unwrap()).unwrap();
        let (a, b) = (entry(0, TxState::Prepared), entry(1, TxState::Prepared));
        journal.put(&a).unwrap();
        journal.note(&b).unwrap();
        assert_eq!(journal.open().unwrap().len(), 2);
        journal
            .put(&JournalEntry {
                state: included(),
                ..a.clone()
            })
            .unwrap();
        assert_eq!(journal.open().unwrap(), vec![b.clone()]);
        assert_eq!(journal.open_keys().unwrap(), vec![(b.nonce, b.borrower)]);
        assert_eq!(journal.open_for(a.borrower).unwrap(), None);
        assert_eq!(journal.open_for(b.borrower).unwrap(), Some(b.clone()));
        assert_eq!(
            journal.open_borrowers().unwrap(),
            std::collections::HashSet::from([b.borrower])
        );
        let all = journal.entries().unwrap();
        assert_eq!(all.len(), 2, "one entry per liquidation, never two");
        assert_eq!(all[0].state, included());
        assert_eq!(all[1], b);
    }

    #[test]
    fn an_open_entry_left_beside_its_final_one_by_a_crash_is_dropped_on_open() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("journal").unwrap();
        let (a, b) = (entry(0, TxState::Prepared), entry(1, TxState::Prepared));
        let journal = Journal::new(tree.clone()).unwrap();
        journal.put(&a).unwrap();
        journal.put(&b).unwrap();
        // The final entry written, the crash before its open one was removed.
        let a_final = JournalEntry {
            state: included(),
            ..a.clone()
        };
        tree.insert(
            Journal::key(&a_final),
            serde_json::to_vec(&a_final).unwrap(),
        )
        .unwrap();
        assert_eq!(journal.open_keys().unwrap().len(), 2);
        let reopened = Journal::new(tree).unwrap();
        assert_eq!(reopened.open().unwrap(), vec![b.clone()]);
        assert_eq!(reopened.entries().unwrap(), vec![a_final, b]);
    }

    #[test]
    fn a_transactions_signed_bytes_are_kept_once_and_dropped_when_it_is_final() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("journal").unwrap();
        let journal = Journal::new(tree.clone()).unwrap();
        let attempt = Attempt {
            hash: B256::repeat_byte(0xab),
            raw: Bytes::from(vec![0x02; 10_000]),
            max_fee_per_gas: 2,
            max_priority_fee_per_gas: 1,
            signed_at_ms: 0,
            cancel: false,
        };
        // Three liquidations in one transaction: three entries, one copy of its bytes.
        let entries: Vec<JournalEntry> = (0..3u8)
            .map(|i| JournalEntry {
                borrower: Address::repeat_byte(i + 1),
                attempts: vec![attempt.clone()],
                ..entry(5, TxState::Prepared)
            })
            .collect();
        for e in &entries {
            journal.note(e).unwrap();
        }
        let signed_keys = || tree.scan_prefix([SIGNED]).count();
        assert_eq!(signed_keys(), 1);
        assert!(
            tree.scan_prefix([OPEN])
                .values()
                .all(|v| v.unwrap().len() < 2_000)
        );
        let read = journal.open().unwrap();
        assert_eq!(read.len(), 3);
        assert!(read[0].attempts[0].raw.is_empty());
        assert_eq!(
            journal.signed(&read[0].attempts[0]).unwrap(),
            Some(attempt.raw.clone())
        );
        journal.forget_signed(&read[0].attempts).unwrap();
        assert_eq!(signed_keys(), 0);
        assert_eq!(journal.signed(&read[0].attempts[0]).unwrap(), None);
        // An entry written with its bytes inside, as journals before kept them, still gives them.
        let old = serde_json::json!({
            "hash": attempt.hash, "raw": "0x0201", "max_fee_per_gas": 2,
            "max_priority_fee_per_gas": 1, "signed_at_ms": 0
        });
        let old: Attempt = serde_json::from_value(old).unwrap();
        assert_eq!(
            journal.signed(&old).unwrap(),
            Some(Bytes::from(vec![2u8, 1]))
        );
    }

    #[test]
    fn entries_written_before_the_split_are_moved_to_their_place() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("journal").unwrap();
        for e in [entry(0, included()), entry(1, TxState::Sent)] {
            let mut key = e.nonce.to_be_bytes().to_vec();
            key.extend_from_slice(e.borrower.as_slice());
            tree.insert(key, serde_json::to_vec(&e).unwrap()).unwrap();
        }
        let journal = Journal::new(tree.clone()).unwrap();
        assert_eq!(journal.open().unwrap(), vec![entry(1, TxState::Sent)]);
        assert_eq!(journal.entries().unwrap().len(), 2);
        assert!(
            tree.iter()
                .keys()
                .all(|k| k.unwrap().len() == UNPREFIXED_KEY_LEN + 1)
        );
    }
}
