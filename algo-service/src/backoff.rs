//! Jitter for every retry schedule (callbacks, reconnects, claims), so a crowd
//! of workers does not retry in lockstep.

use std::{
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// "Equal jitter": half of `delay` plus a random part of the other half, so a
/// crowd of workers retrying after an api restart does not arrive in
/// lockstep, and no delay exceeds the schedule's.
pub fn jittered(delay: Duration) -> Duration {
    delay / 2 + delay.mul_f64(random_fraction() / 2.0)
}

/// A random number in `[0, 1)` for jitter; no RNG crate needed for that.
pub fn random_fraction() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_fractions_are_in_range_and_vary() {
        let xs: Vec<f64> = (0..100).map(|_| random_fraction()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }
}
