//! Unpredictable numbers without a dependency: SipHash under the standard library's randomly
//! keyed `RandomState`, over a counter. Good for WebSocket keys and masks and for naming
//! temporary directories; not for secrets.
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) fn next_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    hasher.write_u128(nanos);
    hasher.finish()
}

pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&next_u64().to_le_bytes()[..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn does_not_repeat() {
        let drawn: std::collections::HashSet<[u8; 16]> = (0..1000).map(|_| super::bytes::<16>()).collect();
        assert_eq!(drawn.len(), 1000);
    }
}
