//! Per-request block tables on top of the [`BlockPool`], with prefix caching.

use std::collections::HashMap;

use super::block_pool::{BlockId, BlockKey, BlockPool, PrefixCacheStats};

/// Identifies a request inside the engine.
pub type RequestId = u64;

#[derive(Debug, Default)]
struct RequestBlocks {
    blocks: Vec<BlockId>,
    /// Leading blocks already indexed in the prefix cache.
    num_cached: usize,
    /// Chained hash of the last indexed block (0 before the first).
    last_hash: u64,
}

/// A prefix-cache lookup result: blocks holding the first `num_tokens`
/// tokens of a prompt, to pass to [`KvCacheManager::allocate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedPrefix {
    /// Physical blocks, in sequence order.
    pub blocks: Vec<BlockId>,
    /// Tokens they hold (`blocks.len() · block_size`).
    pub num_tokens: usize,
    /// Full blocks of the prompt that were looked up.
    pub queried_blocks: usize,
    hashes: Vec<u64>,
}

/// Assigns KV blocks to requests: `allocate` grows a request's block table
/// (or says no, meaning someone must be preempted), `free` returns its blocks,
/// and full computed blocks are indexed so later prompts with the same prefix
/// reuse them.
#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
    requests: HashMap<RequestId, RequestBlocks>,
}

impl KvCacheManager {
    /// A manager over `num_blocks` blocks of `block_size` tokens.
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        KvCacheManager {
            pool: BlockPool::new(num_blocks),
            block_size: block_size.max(1),
            prefix_caching,
            requests: HashMap::new(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Total blocks.
    pub fn num_blocks(&self) -> usize {
        self.pool.num_blocks()
    }

    /// Blocks that could be allocated now.
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    /// Fraction of blocks held by requests, `0.0..=1.0`.
    pub fn usage(&self) -> f64 {
        let n = self.pool.num_blocks();
        if n == 0 {
            return 0.0;
        }
        (n - self.pool.num_free()) as f64 / n as f64
    }

    /// Prefix-cache counters.
    pub fn prefix_stats(&self) -> PrefixCacheStats {
        self.pool.stats()
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// The longest run of full leading blocks of `tokens` already in the
    /// cache. At least one token is always left to compute (its logits are
    /// needed), so a fully cached prompt reuses all but its last block.
    pub fn cached_prefix(&self, tokens: &[u32]) -> CachedPrefix {
        let mut out = CachedPrefix::default();
        if !self.prefix_caching || tokens.is_empty() {
            return out;
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        out.queried_blocks = max_blocks;
        let mut parent = 0u64;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let key = BlockKey {
                parent,
                tokens: chunk.into(),
            };
            let Some(id) = self.pool.lookup(&key) else {
                break;
            };
            parent = key.hash();
            out.blocks.push(id);
            out.hashes.push(parent);
        }
        out.num_tokens = out.blocks.len() * self.block_size;
        out
    }

    /// Make `request` hold enough blocks for `total_tokens` tokens. For a
    /// request not seen before, `prefix` (from [`Self::cached_prefix`]) gives
    /// its first blocks. Returns `false`, changing nothing, when there are
    /// not enough free blocks.
    pub fn allocate(
        &mut self,
        request: RequestId,
        prefix: Option<&CachedPrefix>,
        total_tokens: usize,
    ) -> bool {
        let needed_total = self.blocks_for(total_tokens);
        let have = self.requests.get(&request).map_or(0, |r| r.blocks.len());
        let (prefix_blocks, prefix_hashes): (&[BlockId], &[u64]) = match prefix {
            Some(p) if have == 0 => (&p.blocks, &p.hashes),
            _ => (&[], &[]),
        };
        let reuse = prefix_blocks.len().min(needed_total);
        let new = needed_total.saturating_sub(have + reuse);
        // Cached prefix blocks nobody holds sit in the free queue: taking
        // them back uses up free capacity too.
        let revived = prefix_blocks[..reuse]
            .iter()
            .filter(|&&b| self.pool.ref_count(b) == 0)
            .count();
        if new + revived > self.pool.num_free() {
            return false;
        }
        for &b in &prefix_blocks[..reuse] {
            self.pool.touch(b);
        }
        let Some(fresh) = self.pool.allocate(new) else {
            // Unreachable given the check above; undo the touches.
            self.pool.release(&prefix_blocks[..reuse]);
            return false;
        };
        if let Some(p) = prefix {
            if have == 0 {
                self.pool.record_query(p.queried_blocks, reuse);
            }
        }
        let entry = self.requests.entry(request).or_default();
        if reuse > 0 {
            entry.blocks.extend_from_slice(&prefix_blocks[..reuse]);
            entry.num_cached = reuse;
            entry.last_hash = prefix_hashes[reuse - 1];
        }
        entry.blocks.extend(fresh);
        true
    }

    /// Index the blocks of `request` that became full and computed: `tokens`
    /// are all its tokens so far, of which the first `num_computed` have their
    /// KV written.
    pub fn cache_computed(&mut self, request: RequestId, tokens: &[u32], num_computed: usize) {
        if !self.prefix_caching {
            return;
        }
        let bs = self.block_size;
        let Some(entry) = self.requests.get_mut(&request) else {
            return;
        };
        let full = (num_computed.min(tokens.len()) / bs).min(entry.blocks.len());
        while entry.num_cached < full {
            let i = entry.num_cached;
            let key = BlockKey {
                parent: entry.last_hash,
                tokens: tokens[i * bs..(i + 1) * bs].into(),
            };
            entry.last_hash = key.hash();
            self.pool.insert_cached(entry.blocks[i], key);
            entry.num_cached += 1;
        }
    }

    /// The block table of `request` (empty when it holds none).
    pub fn block_table(&self, request: RequestId) -> &[BlockId] {
        self.requests
            .get(&request)
            .map_or(&[][..], |r| r.blocks.as_slice())
    }

    /// Return every block of `request`; the last blocks are queued for
    /// eviction first, so a shared prefix outlives its tails.
    pub fn free(&mut self, request: RequestId) {
        if let Some(r) = self.requests.remove(&request) {
            let rev: Vec<BlockId> = r.blocks.iter().rev().copied().collect();
            self.pool.release(&rev);
        }
    }

    /// Requests holding blocks.
    pub fn num_requests(&self) -> usize {
        self.requests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_comes_back() {
        let mut m = KvCacheManager::new(10, 4, true);
        assert!(m.allocate(1, None, 9));
        assert_eq!(m.block_table(1).len(), 3);
        assert!(m.allocate(2, None, 16));
        assert!(m.allocate(1, None, 12), "growing within the same blocks");
        assert_eq!(m.block_table(1).len(), 3);
        assert!(m.allocate(1, None, 13));
        assert_eq!(m.num_free_blocks(), 2);
        assert!(!m.allocate(3, None, 12), "3 blocks do not fit in 2");
        assert_eq!(
            m.num_free_blocks(),
            2,
            "a refused allocation changes nothing"
        );
        m.free(1);
        m.free(2);
        m.free(3);
        assert_eq!(m.num_free_blocks(), 10);
        assert_eq!(m.num_requests(), 0);
        assert_eq!(m.usage(), 0.0);
    }

    #[test]
    fn second_request_reuses_the_shared_full_blocks() {
        let mut m = KvCacheManager::new(16, 4, true);
        let a: Vec<u32> = (0..11).collect();
        assert!(m.cached_prefix(&a).blocks.is_empty());
        assert!(m.allocate(1, None, a.len()));
        m.cache_computed(1, &a, a.len());
        // Same 8-token prefix, different tail.
        let b: Vec<u32> = (0..8).chain([100, 101, 102]).collect();
        let p = m.cached_prefix(&b);
        assert_eq!(p.num_tokens, 8);
        assert_eq!(p.blocks, m.block_table(1)[..2].to_vec());
        assert!(m.allocate(2, Some(&p), b.len()));
        assert_eq!(m.block_table(2)[..2], m.block_table(1)[..2]);
        assert_ne!(m.block_table(2)[2], m.block_table(1)[2]);
        // Shared blocks survive the first request's end.
        m.free(1);
        assert_eq!(m.cached_prefix(&b).num_tokens, 8);
        m.free(2);
        assert_eq!(m.num_free_blocks(), 16);
        // Even unreferenced, they are still found, and revived on allocation.
        let p = m.cached_prefix(&a);
        assert_eq!(p.num_tokens, 8);
        assert!(m.allocate(3, Some(&p), a.len()));
        assert_eq!(m.num_free_blocks(), 13);
        m.free(3);
        assert_eq!(m.num_free_blocks(), 16);
    }

    #[test]
    fn a_fully_cached_prompt_still_computes_its_last_token() {
        let mut m = KvCacheManager::new(8, 4, true);
        let a: Vec<u32> = (0..8).collect();
        assert!(m.allocate(1, None, 8));
        m.cache_computed(1, &a, 8);
        let p = m.cached_prefix(&a);
        assert_eq!(
            p.num_tokens, 4,
            "the last block is recomputed for its logits"
        );
    }

    #[test]
    fn prefix_caching_off_finds_nothing() {
        let mut m = KvCacheManager::new(8, 4, false);
        let a: Vec<u32> = (0..8).collect();
        assert!(m.allocate(1, None, 8));
        m.cache_computed(1, &a, 8);
        assert_eq!(m.cached_prefix(&a).num_tokens, 0);
    }

    #[test]
    fn eviction_under_pressure_drops_cached_blocks() {
        let mut m = KvCacheManager::new(4, 4, true);
        let a: Vec<u32> = (0..16).collect();
        assert!(m.allocate(1, None, 16));
        m.cache_computed(1, &a, 16);
        m.free(1);
        // A different prompt needs all 4 blocks: every cached one is evicted.
        let b: Vec<u32> = (100..116).collect();
        assert!(m.allocate(2, None, 16));
        assert_eq!(m.prefix_stats().evicted_blocks, 4);
        m.free(2);
        assert_eq!(m.cached_prefix(&a).num_tokens, 0);
        let _ = b;
    }
}
