//! The sled store: per market, the positions, the discovery and block cursors, and the users found but
//! not yet loaded. Values are JSON (readable with any sled tool, and small: a position is a few hundred
//! bytes). A schema version in the `meta` tree refuses a store written by an incompatible cascade.
//!
//! ## Writes go key by key
//!
//! sled 0.34 applies a `sled::Batch` (and a transaction) by rolling its IO buffer before and after it:
//! each roll is a write of the log and a synchronous `sync_file_range`. A keeper that wrote each
//! block, and each journal entry, as a batch waited on two synced writes every time: in a cascade,
//! where the journal writes each liquidation twice, hundreds of them, most of the keeper's CPU time
//! and over 100 MB of writeback per block on this machine. A plain insert goes into the IO buffer and
//! reaches the disk with the next flush (sled's own, every 500 ms, or the journal's before anything is
//! sent), and sled recovers a prefix of its log, in order: writes ordered so that every prefix is
//! consistent need no batch. Both the store and the journal order theirs that way.

use alloy::primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};

use crate::protocol::aave_v3::math::UserReserve;

/// Bumped whenever a stored type changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

/// How many recent block hashes the cursor keeps for reorg detection. Ethereum finalises in 64 blocks;
/// a deeper reorg than this is handled by rebuilding the store (`--rebuild-store`).
pub const RECENT_BLOCKS: usize = 128;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("store {path}: {source}")]
    Sled {
        /// The store's directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The store was written by another schema version.
    #[error(
        "store {path} has schema version {found}, this cascade uses {expected}: rebuild it from the chain \
         with --rebuild-store (or point store.path elsewhere)"
    )]
    Schema {
        /// The store's directory.
        path: PathBuf,
        /// Found.
        found: u32,
        /// Expected.
        expected: u32,
    },
    /// A value does not decode.
    #[error("store {path}: corrupt value under {key}: {reason}; rebuild it with --rebuild-store")]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// The key.
        key: String,
        /// The decoder's message.
        reason: String,
    },
}

/// A position as stored: the user's scaled holdings (valid across blocks) and the last health computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPosition {
    /// Holdings per reserve the user supplies or borrows.
    pub holdings: Vec<UserReserve>,
    /// The user's eMode category (0 for none).
    pub emode: u8,
    /// Health factor at `block` (WAD).
    pub health_factor: U256,
    /// Collateral in base currency at `block`.
    pub collateral_base: U256,
    /// Debt in base currency at `block`.
    pub debt_base: U256,
    /// The block the holdings were read at.
    pub loaded_block: u64,
    /// The block the health was computed at.
    pub block: u64,
}

/// Where the watcher is on the chain, with recent hashes for reorg detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    /// Last block fully processed.
    pub block: u64,
    /// Its hash.
    pub hash: B256,
    /// (number, hash) of recent processed blocks, oldest first, the cursor's block last.
    pub recent: Vec<(u64, B256)>,
}

impl Cursor {
    /// Records `number`/`hash` as the new head, keeping [`RECENT_BLOCKS`].
    pub fn advance(&mut self, number: u64, hash: B256) {
        self.recent.retain(|(n, _)| *n < number);
        self.recent.push((number, hash));
        if self.recent.len() > RECENT_BLOCKS {
            let excess = self.recent.len() - RECENT_BLOCKS;
            self.recent.drain(..excess);
        }
        self.block = number;
        self.hash = hash;
    }

    /// The hash recorded for `number`, if it is recent.
    pub fn hash_at(&self, number: u64) -> Option<B256> {
        self.recent
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, h)| *h)
    }

    /// Forgets everything after `number` (a reorg's common ancestor).
    pub fn rewind_to(&mut self, number: u64) {
        self.recent.retain(|(n, _)| *n <= number);
        let (block, hash) = self.recent.last().copied().unwrap_or((number, B256::ZERO));
        self.block = block;
        self.hash = hash;
    }
}

/// Discovery progress: the next block the backfill scans, and the block it scans to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillCursor {
    /// Next block to scan.
    pub next: u64,
    /// Last block of the backfill (the head when it started).
    pub to: u64,
}

/// sled's page cache.
const STORE_CACHE_BYTES: u64 = 32 << 20;

/// The store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`. With `rebuild`, whatever was there is removed
    /// first, so the watcher rebuilds it from the chain.
    pub fn open(path: &Path, rebuild: bool) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sled {
            path: path.to_owned(),
            source,
        };
        if rebuild && path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| err(sled::Error::Io(e)))?;
        }
        // sled caches up to 1 GiB by default; a keeper's store is written every block and read whole
        // only at start-up, so a small cache costs nothing and keeps the process small.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(STORE_CACHE_BYTES)
            .open()
            .map_err(err)?;
        let store = Self {
            db,
            path: path.to_owned(),
        };
        let meta = store.tree("meta")?;
        match meta.get("schema_version").map_err(err)? {
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4]));
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        path: path.to_owned(),
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(err)?;
            }
        }
        Ok(store)
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(|source| StoreError::Sled {
            path: self.path.clone(),
            source,
        })
    }

    /// The trees of one market, named by its root address (Aave: the PoolAddressesProvider).
    pub fn market(&self, id: Address) -> Result<MarketStore, StoreError> {
        Ok(MarketStore {
            positions: self.tree(&format!("{id:#x}/positions"))?,
            pending: self.tree(&format!("{id:#x}/pending"))?,
            cursors: self.tree(&format!("{id:#x}/cursors"))?,
            path: self.path.clone(),
        })
    }

    /// The executor's transaction journal.
    pub fn journal_tree(&self) -> Result<sled::Tree, StoreError> {
        self.tree("journal")
    }

    /// The journal of dry runs, apart from the real one: nothing in it was ever sent upstream.
    pub fn dry_run_journal_tree(&self) -> Result<sled::Tree, StoreError> {
        self.tree("dry-run-journal")
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                path: self.path.clone(),
                source,
            })
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One market's trees.
#[derive(Clone)]
pub struct MarketStore {
    positions: sled::Tree,
    pending: sled::Tree,
    cursors: sled::Tree,
    path: PathBuf,
}

impl MarketStore {
    fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }

    fn get<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match tree.get(key).map_err(|e| self.sled_err(e))? {
            Some(bytes) => self.decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, tree: &sled::Tree, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("store values serialize");
        tree.insert(key, bytes)
            .map(|_| ())
            .map_err(|e| self.sled_err(e))
    }

    /// The block cursor, once discovery has finished.
    pub fn cursor(&self) -> Result<Option<Cursor>, StoreError> {
        self.get(&self.cursors, "head")
    }

    /// Discovery progress, while it runs.
    pub fn backfill(&self) -> Result<Option<BackfillCursor>, StoreError> {
        self.get(&self.cursors, "backfill")
    }

    /// Records discovery progress and the users it found: the users first, then the progress, so that
    /// whatever a crash keeps of them (sled recovers its log in order, a prefix of the writes) never
    /// has progress past users it lost. Key by key, not as a batch ([why](crate::store)).
    pub fn record_backfill(
        &self,
        progress: BackfillCursor,
        found: &[Address],
    ) -> Result<(), StoreError> {
        for user in found {
            self.pending
                .insert(user.as_slice(), &[])
                .map_err(|e| self.sled_err(e))?;
        }
        self.put(&self.cursors, "backfill", &progress)
    }

    /// Users found by discovery and not yet loaded.
    pub fn pending_users(&self) -> Result<Vec<Address>, StoreError> {
        self.pending
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| Address::from_slice(&k))
                    .map_err(|e| self.sled_err(e))
            })
            .collect()
    }

    /// Ends discovery: the pending users are loaded (their positions written) and the cursor set.
    pub fn finish_backfill(&self, cursor: &Cursor) -> Result<(), StoreError> {
        self.pending.clear().map_err(|e| self.sled_err(e))?;
        self.cursors
            .remove("backfill")
            .map_err(|e| self.sled_err(e))?;
        self.put(&self.cursors, "head", cursor)
    }

    /// Writes a block's changes: updated and removed positions, then the new cursor. A crash keeps a
    /// prefix of these writes (sled recovers its log in order): at worst some positions of the block
    /// without its cursor, and the block is processed again from the old one, which reads them again.
    /// Key by key, not as a batch ([why](crate::store)).
    pub fn commit_block(
        &self,
        updated: &[(Address, StoredPosition)],
        removed: &[Address],
        cursor: &Cursor,
    ) -> Result<(), StoreError> {
        for (user, position) in updated {
            self.positions
                .insert(
                    user.as_slice(),
                    serde_json::to_vec(position).expect("positions serialize"),
                )
                .map_err(|e| self.sled_err(e))?;
        }
        for user in removed {
            self.positions
                .remove(user.as_slice())
                .map_err(|e| self.sled_err(e))?;
        }
        self.put(&self.cursors, "head", cursor)
    }

    /// Every stored position.
    pub fn positions(&self) -> Result<Vec<(Address, StoredPosition)>, StoreError> {
        self.positions
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| self.sled_err(e))?;
                let user = Address::from_slice(&k);
                Ok((user, self.decode(&format!("{user}"), &v)?))
            })
            .collect()
    }

    /// One position.
    pub fn position(&self, user: Address) -> Result<Option<StoredPosition>, StoreError> {
        match self
            .positions
            .get(user.as_slice())
            .map_err(|e| self.sled_err(e))?
        {
            Some(v) => self.decode(&format!("{user}"), &v).map(Some),
            None => Ok(None),
        }
    }

    /// How many positions are stored.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// No positions.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_mismatch_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path, false).unwrap();
            store
                .tree("meta")
                .unwrap()
                .insert("schema_version", &999u32.to_be_bytes())
                .unwrap();
            store.flush().unwrap();
        }
        let err = Store::open(&path, false).unwrap_err().to_string();
        assert!(
            err.contains("999") && err.contains("--rebuild-store"),
            "{err}"
        );
        // Rebuilding wipes it.
        let store = Store::open(&path, true).unwrap();
        assert!(store.market(Address::ZERO).unwrap().is_empty());
    }

    #[test]
    fn positions_and_cursor_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let market = store.market(Address::repeat_byte(1)).unwrap();
        let user = Address::repeat_byte(2);
        let position = StoredPosition {
            holdings: vec![UserReserve {
                reserve_id: 3,
                scaled_a_token: U256::from(5u8),
                collateral_enabled: true,
                ..Default::default()
            }],
            emode: 0,
            health_factor: U256::from(7u8),
            collateral_base: U256::from(1u8),
            debt_base: U256::from(1u8),
            loaded_block: 9,
            block: 10,
        };
        let mut cursor = Cursor::default();
        cursor.advance(10, B256::repeat_byte(10));
        market
            .commit_block(&[(user, position.clone())], &[], &cursor)
            .unwrap();
        assert_eq!(market.position(user).unwrap(), Some(position));
        assert_eq!(market.cursor().unwrap(), Some(cursor.clone()));
        market.commit_block(&[], &[user], &cursor).unwrap();
        assert!(market.is_empty());
    }

    #[test]
    fn cursor_ring_keeps_recent_and_rewinds() {
        let mut c = Cursor::default();
        for n in 1..=(RECENT_BLOCKS as u64 + 10) {
            c.advance(n, B256::with_last_byte(n as u8));
        }
        assert_eq!(c.recent.len(), RECENT_BLOCKS);
        assert_eq!(c.hash_at(11), Some(B256::with_last_byte(11)));
        assert_eq!(c.hash_at(10), None);
        c.rewind_to(100);
        assert_eq!((c.block, c.hash), (100, B256::with_last_byte(100)));
        c.advance(101, B256::repeat_byte(0xee));
        assert_eq!(c.hash_at(101), Some(B256::repeat_byte(0xee)));
    }
}
