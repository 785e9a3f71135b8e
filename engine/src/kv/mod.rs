//! The paged KV cache's bookkeeping: which physical blocks each request
//! holds ([`KvCacheManager`]), shared through a prefix cache of full blocks
//! ([`BlockPool`]). The device memory itself is a [`hal::KvCache`] per layer,
//! owned by the model runner; sizing lives in [`sizing`].

pub mod block_pool;
pub mod manager;
pub mod sizing;

pub use block_pool::{BlockId, BlockKey, BlockPool, PrefixCacheStats};
pub use manager::{CachedPrefix, KvCacheManager, RequestId};
pub use sizing::{CacheConfig, CacheDtype};
