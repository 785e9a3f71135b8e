//! The physical block pool: reference counts, an LRU free queue and the
//! prefix-cache index of full blocks.
//!
//! A block is in one of three states:
//! - **in use**: `ref_count > 0`, owned by one or more requests;
//! - **free and cached**: `ref_count == 0` but it still holds a full block
//!   of KV whose hash is indexed, so a later request with the same prefix can
//!   take it back without recomputing it;
//! - **free**: `ref_count == 0`, no hash.
//!
//! Free blocks (cached or not) sit in one queue; allocation takes from the
//! front (least recently freed first) and evicts the block's hash if it had
//! one. Freed blocks that hold nothing worth keeping go to the front, cached
//! ones to the back, so eviction is LRU among cached blocks.

use std::collections::HashMap;

/// Index of a physical KV-cache block.
pub type BlockId = u32;

/// The identity of a full block's contents: a hash of its token ids chained
/// with its parent block's hash, plus the tokens themselves so a hash
/// collision can never hand out the wrong KV.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// Hash of the previous full block in the sequence (0 for the first).
    pub parent: u64,
    /// The block's token ids (`block_size` of them).
    pub tokens: Box<[u32]>,
}

impl BlockKey {
    /// The chained hash of this block, used as its parent hash by the next one.
    pub fn hash(&self) -> u64 {
        // FNV-1a over (parent, tokens): stable across runs and platforms,
        // which keeps prefix-cache behaviour reproducible.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |x: u64| {
            for b in x.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(self.parent);
        for &t in self.tokens.iter() {
            eat(u64::from(t));
        }
        h
    }
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct BlockMeta {
    ref_count: u32,
    key: Option<BlockKey>,
    // Doubly linked free queue (indices), NIL when not queued.
    prev: u32,
    next: u32,
    queued: bool,
}

/// Counters for the prefix cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Full prompt blocks looked up.
    pub queried_blocks: u64,
    /// Of those, found in the cache.
    pub hit_blocks: u64,
    /// Cached blocks evicted to make room.
    pub evicted_blocks: u64,
}

/// A pool of `num_blocks` KV blocks.
#[derive(Debug)]
pub struct BlockPool {
    meta: Vec<BlockMeta>,
    head: u32,
    tail: u32,
    num_free: usize,
    cached: HashMap<BlockKey, BlockId>,
    stats: PrefixCacheStats,
}

impl BlockPool {
    /// A pool whose blocks are all free.
    pub fn new(num_blocks: usize) -> Self {
        let n = u32::try_from(num_blocks)
            .unwrap_or(u32::MAX - 1)
            .min(u32::MAX - 1);
        let mut pool = BlockPool {
            meta: vec![
                BlockMeta {
                    ref_count: 0,
                    key: None,
                    prev: NIL,
                    next: NIL,
                    queued: false,
                };
                n as usize
            ],
            head: NIL,
            tail: NIL,
            num_free: 0,
            cached: HashMap::new(),
            stats: PrefixCacheStats::default(),
        };
        for id in 0..n {
            pool.push_back(id);
        }
        pool
    }

    /// Total blocks.
    pub fn num_blocks(&self) -> usize {
        self.meta.len()
    }

    /// Blocks that can be allocated now (free, cached or not).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Blocks currently indexed by the prefix cache (in use or free).
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// Prefix-cache counters.
    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// The reference count of `id` (0 when free).
    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.meta.get(id as usize).map_or(0, |m| m.ref_count)
    }

    /// Look up a full block by contents.
    pub fn lookup(&self, key: &BlockKey) -> Option<BlockId> {
        self.cached.get(key).copied()
    }

    /// Count one prefix-cache query of `queried` full blocks, `hits` of
    /// which were found.
    pub fn record_query(&mut self, queried: usize, hits: usize) {
        self.stats.queried_blocks += queried as u64;
        self.stats.hit_blocks += hits as u64;
    }

    /// Take a reference on `id` (a cache hit), removing it from the free
    /// queue if nobody held it.
    pub fn touch(&mut self, id: BlockId) {
        let i = id as usize;
        if i >= self.meta.len() {
            return;
        }
        if self.meta[i].ref_count == 0 {
            self.unlink(id);
        }
        self.meta[i].ref_count += 1;
    }

    /// Allocate `n` blocks (each with reference count 1), evicting cached
    /// contents as needed; `None` (and nothing changed) when fewer than `n`
    /// are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.head;
            self.unlink(id);
            let m = &mut self.meta[id as usize];
            if let Some(key) = m.key.take() {
                self.cached.remove(&key);
                self.stats.evicted_blocks += 1;
            }
            self.meta[id as usize].ref_count = 1;
            out.push(id);
        }
        Some(out)
    }

    /// Drop one reference on each block, in the given order; blocks that
    /// reach zero are queued for reuse (uncached ones first in line, cached
    /// ones last so they survive longest).
    pub fn release(&mut self, blocks: &[BlockId]) {
        for &id in blocks {
            let i = id as usize;
            let Some(m) = self.meta.get_mut(i) else {
                continue;
            };
            if m.ref_count == 0 {
                continue;
            }
            m.ref_count -= 1;
            if m.ref_count == 0 {
                if m.key.is_some() {
                    self.push_back(id);
                } else {
                    self.push_front(id);
                }
            }
        }
    }

    /// Index a full, computed block under `key`. When another block already
    /// holds the same contents the index keeps the existing one.
    pub fn insert_cached(&mut self, id: BlockId, key: BlockKey) {
        let i = id as usize;
        if i >= self.meta.len() || self.meta[i].key.is_some() || self.cached.contains_key(&key) {
            return;
        }
        self.cached.insert(key.clone(), id);
        self.meta[i].key = Some(key);
    }

    /// Forget every cached block's contents (e.g. after the weights change).
    pub fn reset_prefix_cache(&mut self) {
        self.cached.clear();
        for m in &mut self.meta {
            m.key = None;
        }
    }

    fn push_back(&mut self, id: BlockId) {
        let m = &mut self.meta[id as usize];
        m.prev = self.tail;
        m.next = NIL;
        m.queued = true;
        if self.tail == NIL {
            self.head = id;
        } else {
            self.meta[self.tail as usize].next = id;
        }
        self.tail = id;
        self.num_free += 1;
    }

    fn push_front(&mut self, id: BlockId) {
        let m = &mut self.meta[id as usize];
        m.next = self.head;
        m.prev = NIL;
        m.queued = true;
        if self.head == NIL {
            self.tail = id;
        } else {
            self.meta[self.head as usize].prev = id;
        }
        self.head = id;
        self.num_free += 1;
    }

    fn unlink(&mut self, id: BlockId) {
        let (prev, next, queued) = {
            let m = &self.meta[id as usize];
            (m.prev, m.next, m.queued)
        };
        if !queued {
            return;
        }
        if prev == NIL {
            self.head = next;
        } else {
            self.meta[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.meta[next as usize].prev = prev;
        }
        let m = &mut self.meta[id as usize];
        m.prev = NIL;
        m.next = NIL;
        m.queued = false;
        self.num_free -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parent: u64, t: &[u32]) -> BlockKey {
        BlockKey {
            parent,
            tokens: t.into(),
        }
    }

    #[test]
    fn allocate_and_release_round_trip() {
        let mut p = BlockPool::new(4);
        let a = p.allocate(3).unwrap();
        assert_eq!(a, vec![0, 1, 2]);
        assert_eq!(p.num_free(), 1);
        assert!(p.allocate(2).is_none());
        assert_eq!(p.num_free(), 1, "failed allocation changes nothing");
        p.release(&a);
        assert_eq!(p.num_free(), 4);
        assert!(a.iter().all(|&b| p.ref_count(b) == 0));
    }

    #[test]
    fn cached_blocks_are_evicted_last_and_lru() {
        let mut p = BlockPool::new(3);
        let a = p.allocate(3).unwrap();
        p.insert_cached(a[0], key(0, &[1, 2]));
        p.insert_cached(a[1], key(7, &[3, 4]));
        // Release in order: a0 (cached), a1 (cached), a2 (plain).
        p.release(&a);
        // The plain block is handed out first, then the least recently freed cached one.
        assert_eq!(p.allocate(1).unwrap(), vec![a[2]]);
        assert_eq!(p.allocate(1).unwrap(), vec![a[0]]);
        assert_eq!(p.stats().evicted_blocks, 1);
        assert_eq!(p.lookup(&key(0, &[1, 2])), None);
        assert_eq!(p.lookup(&key(7, &[3, 4])), Some(a[1]));
    }

    #[test]
    fn touch_takes_a_free_cached_block_back() {
        let mut p = BlockPool::new(2);
        let a = p.allocate(1).unwrap();
        p.insert_cached(a[0], key(0, &[9]));
        p.release(&a);
        assert_eq!(p.num_free(), 2);
        let hit = p.lookup(&key(0, &[9])).unwrap();
        p.touch(hit);
        assert_eq!(p.ref_count(hit), 1);
        assert_eq!(p.num_free(), 1);
        // Shared by a second owner.
        p.touch(hit);
        p.release(&[hit]);
        assert_eq!(p.num_free(), 1);
        p.release(&[hit]);
        assert_eq!(p.num_free(), 2);
    }

    #[test]
    fn chained_hash_depends_on_parent_and_tokens() {
        assert_ne!(key(0, &[1, 2]).hash(), key(1, &[1, 2]).hash());
        assert_ne!(key(0, &[1, 2]).hash(), key(0, &[2, 1]).hash());
        assert_eq!(key(5, &[1, 2]).hash(), key(5, &[1, 2]).hash());
    }
}
