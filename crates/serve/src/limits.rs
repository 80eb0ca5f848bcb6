//! Per-client limits: concurrent requests and a token-bucket request rate, per access token (or
//! per IP address when no tokens are configured).
//!
//! Memory stays bounded: a client whose bucket is full and who has nothing in flight is the same
//! as an unknown client, so such entries are swept when the table grows past [`SWEEP_AT`]; while
//! more than [`MAX_CLIENTS`] clients are active at once, new ones are refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Table size that triggers a sweep of idle clients.
pub const SWEEP_AT: usize = 4096;
/// Most clients tracked at once.
pub const MAX_CLIENTS: usize = 65_536;

/// Who a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// The n-th configured access token.
    Token(usize),
    /// A peer address (no tokens configured, or no valid token presented).
    Ip(IpAddr),
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientId::Token(i) => write!(f, "token #{}", i + 1),
            ClientId::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// The client already has its maximum of requests in flight.
    Concurrency,
    /// The client's request rate is exceeded; a request is allowed again after this many seconds.
    Rate(u64),
    /// Too many distinct clients are active.
    TooManyClients,
}

impl Refusal {
    /// Seconds to put in Retry-After.
    pub fn retry_after(self) -> u64 {
        match self {
            Refusal::Rate(s) => s.max(1),
            _ => 1,
        }
    }
}

struct Client {
    inflight: usize,
    tokens: f64,
    last: Instant,
}

/// The limiter shared by all requests.
pub struct ClientLimiter {
    clients: Mutex<HashMap<ClientId, Client>>,
    concurrency: usize,
    rps: f64,
    burst: f64,
}

/// Holds one in-flight slot of a client until dropped.
pub struct ClientGuard {
    limiter: Arc<ClientLimiter>,
    id: ClientId,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut map = self.limiter.lock();
        if let Some(c) = map.get_mut(&self.id) {
            c.inflight = c.inflight.saturating_sub(1);
        }
    }
}

impl ClientLimiter {
    /// `concurrency` requests in flight and `rps` per second (0 = unlimited) with bucket size `burst`, per client.
    pub fn new(concurrency: usize, rps: f64, burst: f64) -> Arc<Self> {
        Arc::new(ClientLimiter { clients: Mutex::new(HashMap::new()), concurrency, rps, burst: burst.max(1.0) })
    }

    /// The limiter of the per-client limits in effect (off: no limit).
    pub fn from_limits(p: &crate::config::PerClient) -> Arc<Self> {
        Self::new(p.concurrency.unwrap_or(usize::MAX), p.rps.unwrap_or(0.0), p.burst.unwrap_or(1.0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Client>> {
        // The table holds plain counters: a panic elsewhere cannot leave it inconsistent.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one request of `id`, or says why not.
    pub fn admit(self: &Arc<Self>, id: ClientId) -> Result<ClientGuard, Refusal> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= SWEEP_AT && !map.contains_key(&id) {
            self.sweep(&mut map, now);
            if map.len() >= MAX_CLIENTS {
                return Err(Refusal::TooManyClients);
            }
        }
        let c = map.entry(id).or_insert(Client { inflight: 0, tokens: self.burst, last: now });
        if self.rps > 0.0 {
            c.tokens = (c.tokens + now.duration_since(c.last).as_secs_f64() * self.rps).min(self.burst);
            c.last = now;
        }
        if c.inflight >= self.concurrency {
            return Err(Refusal::Concurrency);
        }
        if self.rps > 0.0 {
            if c.tokens < 1.0 {
                return Err(Refusal::Rate(((1.0 - c.tokens) / self.rps).ceil() as u64));
            }
            c.tokens -= 1.0;
        }
        c.inflight += 1;
        Ok(ClientGuard { limiter: self.clone(), id })
    }

    /// Drops clients that are indistinguishable from new ones (nothing in flight, bucket full).
    fn sweep(&self, map: &mut HashMap<ClientId, Client>, now: Instant) {
        let (rps, burst) = (self.rps, self.burst);
        map.retain(|_, c| c.inflight > 0 || (rps > 0.0 && c.tokens + now.duration_since(c.last).as_secs_f64() * rps < burst));
    }

    /// Number of clients tracked.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn concurrency_is_per_client_and_released_on_drop() {
        let l = ClientLimiter::new(2, 0.0, 0.0);
        let (a, b) = (ClientId::Token(0), ClientId::Token(1));
        let g1 = l.admit(a).expect("first");
        let _g2 = l.admit(a).expect("second");
        assert_eq!(l.admit(a).err(), Some(Refusal::Concurrency));
        let _h = l.admit(b).expect("another client is not affected");
        drop(g1);
        assert!(l.admit(a).is_ok(), "a slot frees when a request ends");
    }

    #[test]
    fn rate_allows_the_burst_then_refuses_with_retry_after() {
        // 0.01 requests/s: the bucket does not refill measurably during the test.
        let l = ClientLimiter::new(100, 0.01, 3.0);
        let ip = ClientId::Ip("127.0.0.1".parse().expect("ip"));
        for _ in 0..3 {
            drop(l.admit(ip).expect("within the burst"));
        }
        match l.admit(ip) {
            Err(Refusal::Rate(s)) => assert!((90..=100).contains(&s), "retry after {s}"),
            other => panic!("expected a rate refusal, got {:?}", other.err()),
        }
        assert!(l.admit(ClientId::Ip("127.0.0.2".parse().expect("ip"))).is_ok());
    }

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_the_burst() {
        // 5 requests/s, a bucket of 1: the second request at once is refused for a second at
        // most; 300 ms later (1.5 tokens' worth, capped at the bucket's 1) one more is admitted,
        // and the one right after it is refused again (a token takes 200 ms).
        let l = ClientLimiter::new(100, 5.0, 1.0);
        let ip = ClientId::Ip("127.0.0.1".parse().expect("ip"));
        drop(l.admit(ip).expect("the bucket starts full"));
        assert_eq!(l.admit(ip).err(), Some(Refusal::Rate(1)), "no token left");
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(l.admit(ip).expect("refilled"));
        assert_eq!(l.admit(ip).err(), Some(Refusal::Rate(1)), "the refill is capped at the bucket");
        assert_eq!(Refusal::Rate(0).retry_after(), 1, "never Retry-After: 0");
        assert_eq!((Refusal::Rate(7).retry_after(), Refusal::Concurrency.retry_after()), (7, 1));
    }

    #[test]
    fn a_sweep_keeps_clients_that_differ_from_new_ones() {
        let ids = |n: u32| (0..n).map(|i| ClientId::Ip(std::net::Ipv4Addr::from(i).into()));
        // A bucket that refills too slowly to be full again: every client is remembered, or a new
        // request would get a fresh, full bucket.
        let slow = ClientLimiter::new(1, 1e-9, 2.0);
        ids(SWEEP_AT as u32 + 10).for_each(|id| drop(slow.admit(id).expect("admit")));
        assert_eq!(slow.tracked(), SWEEP_AT + 10, "partly spent buckets are kept");
        // One that refills at once: spent buckets are full again, and those clients go.
        let fast = ClientLimiter::new(1, 1e12, 2.0);
        ids(SWEEP_AT as u32 + 10).for_each(|id| drop(fast.admit(id).expect("admit")));
        assert!(fast.tracked() < SWEEP_AT, "table of {} entries", fast.tracked());
        // Clients with a request in flight are kept whatever their bucket.
        let busy = ClientLimiter::new(1, 1e12, 2.0);
        let guards: Vec<ClientGuard> = ids(SWEEP_AT as u32 + 10).map(|id| busy.admit(id).expect("admit")).collect();
        assert_eq!(busy.tracked(), SWEEP_AT + 10);
        drop(guards);
    }

    /// The sweep's rule on clients built by hand, at a chosen instant: a client goes exactly when
    /// nothing is in flight and its bucket, refilled up to `now`, is full again (no timing involved).
    #[test]
    fn the_sweep_drops_exactly_the_clients_a_new_one_would_equal() {
        let t0 = Instant::now();
        let ip = |i: u32| ClientId::Ip(std::net::Ipv4Addr::from(i).into());
        let idle = |tokens: f64| Client { inflight: 0, tokens, last: t0 };
        let swept = |l: &ClientLimiter, clients: Vec<(u32, Client)>, after: Duration| -> Vec<u32> {
            let mut map: HashMap<ClientId, Client> = clients.into_iter().map(|(i, c)| (ip(i), c)).collect();
            l.sweep(&mut map, t0 + after);
            let mut kept: Vec<u32> = (0..8).filter(|i| map.contains_key(&ip(*i))).collect();
            kept.sort_unstable();
            kept
        };
        // 1 token a second, a burst of 2: from 1 token, full again after exactly 1 s.
        let l = ClientLimiter::new(4, 1.0, 2.0);
        let clients = || vec![(0, idle(1.0)), (1, idle(0.0)), (2, Client { inflight: 1, tokens: 2.0, last: t0 }), (3, idle(2.0))];
        assert_eq!(swept(&l, clients(), Duration::from_millis(500)), vec![0, 1, 2], "half a second: 1.5 and 0.5 tokens are kept");
        assert_eq!(swept(&l, clients(), Duration::from_secs(1)), vec![1, 2], "1 + 1 s × 1/s = 2: full, so it goes");
        assert_eq!(swept(&l, clients(), Duration::from_millis(1500)), vec![1, 2], "0 + 1.5 tokens is not full");
        assert_eq!(swept(&l, clients(), Duration::from_secs(3)), vec![2], "only the request in flight keeps its client");
        // Without a rate the bucket means nothing: every idle client goes, whatever its tokens.
        let unlimited = ClientLimiter::new(4, 0.0, 2.0);
        assert_eq!(swept(&unlimited, clients(), Duration::ZERO), vec![2]);
    }

    #[test]
    fn clients_are_named_by_token_number_or_address() {
        assert_eq!(ClientId::Token(0).to_string(), "token #1");
        assert_eq!(ClientId::Ip(std::net::Ipv4Addr::new(10, 0, 0, 7).into()).to_string(), "10.0.0.7");
    }

    #[test]
    fn idle_clients_are_swept() {
        let l = ClientLimiter::new(1, 0.0, 0.0);
        for i in 0..(SWEEP_AT as u32 + 10) {
            drop(l.admit(ClientId::Ip(std::net::Ipv4Addr::from(i).into())).expect("admit"));
        }
        assert!(l.tracked() < SWEEP_AT, "table of {} entries", l.tracked());
    }
}
