//! Counter-based randomness: every random stream is a pure function of
//! (seed, epoch, sample index, purpose), so results never depend on thread scheduling,
//! batch composition or how many samples were drawn before.

/// Purpose tags separating independent streams derived from the same seed.
pub(crate) const STREAM_AUGMENT: u64 = 0x6175_676d; // "augm"
pub(crate) const STREAM_SHUFFLE: u64 = 0x7368_7566; // "shuf"

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic generator (SplitMix64 stream) keyed by (seed, epoch, index, purpose).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The generator for one (seed, epoch, index, purpose) key.
    pub fn keyed(seed: u64, epoch: u64, index: u64, purpose: u64) -> Self {
        let k = mix(mix(mix(mix(seed) ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ index) ^ purpose);
        Rng { state: k }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in [0, n) (n > 0), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let lo = m as u64;
            if lo >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The visiting order of `n` samples in one epoch: a pure function of (seed, epoch).
/// Without `shuffle` it is `0..n`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = Rng::keyed(seed, epoch, 0, STREAM_SHUFFLE);
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_pure_permutation_of_seed_and_epoch() {
        let a = epoch_order(1000, 7, 3, true);
        assert_eq!(a, epoch_order(1000, 7, 3, true));
        assert_ne!(a, epoch_order(1000, 7, 4, true));
        assert_ne!(a, epoch_order(1000, 8, 3, true));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_eq!(epoch_order(5, 7, 3, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn uniform_moments() {
        let mut r = Rng::keyed(1, 2, 3, 4);
        let n = 100_000;
        let mean = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }
}
