//! Password guessing: failed logins are counted per client address and per
//! account, and after a few free tries each further failure doubles the time
//! that key must wait (up to a cap) before it may try again — a refusal that
//! costs the server nothing (429 with `Retry-After`, no argon2 run). Password
//! checks run on the blocking pool behind a semaphore as wide as the
//! machine, so guessing clients queue among themselves and never take the
//! async workers every other request needs.
//!
//! The table is bounded: entries whose wait is over and that have been quiet
//! for a while are dropped when it grows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before waits begin.
const FREE_FAILURES: u32 = 5;
/// The longest wait a key is given.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// An account's wait is capped lower, so a stranger guessing its password
/// cannot lock its owner out for long.
const MAX_ACCOUNT_WAIT: Duration = Duration::from_secs(30);
/// How many keys are remembered before quiet ones are forgotten.
const MAX_KEYS: usize = 10_000;
/// How long a key must have been quiet to be forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    until: Instant,
    last: Instant,
}

/// The login guard of one server.
#[derive(Debug)]
pub struct Guard {
    strikes: Mutex<HashMap<Key, Strikes>>,
    /// Password verifications running at once.
    pub verify: tokio::sync::Semaphore,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    Account(String),
}

impl Key {
    fn cap(&self) -> Duration {
        match self {
            Key::Addr(_) => MAX_WAIT,
            Key::Account(_) => MAX_ACCOUNT_WAIT,
        }
    }
}

fn keys(addr: IpAddr, account: Option<&str>) -> Vec<Key> {
    let mut k = vec![Key::Addr(addr)];
    if let Some(a) = account {
        k.push(Key::Account(a.to_string()));
    }
    k
}

/// How long a key waits after `failures` failures.
fn wait_after(failures: u32, cap: Duration) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (failures - FREE_FAILURES).min(16);
    Duration::from_secs(1u64 << exp).min(cap)
}

impl Default for Guard {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Guard {
            strikes: Mutex::new(HashMap::new()),
            verify: tokio::sync::Semaphore::new(n),
        }
    }
}

impl Guard {
    /// How long `addr` (and `account`) must still wait before trying, if at all.
    pub fn wait(&self, addr: IpAddr, account: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let s = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        keys(addr, account)
            .iter()
            .filter_map(|k| s.get(k))
            .filter(|st| st.until > now)
            .map(|st| st.until - now)
            .max()
    }

    /// Records a failed login.
    pub fn failed(&self, addr: IpAddr, account: Option<&str>) {
        let now = Instant::now();
        let mut s = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() >= MAX_KEYS {
            s.retain(|_, st| st.until > now || now - st.last < FORGET_AFTER);
            if s.len() >= MAX_KEYS {
                // Still full of recent keys: the oldest half goes.
                let mut lasts: Vec<Instant> = s.values().map(|st| st.last).collect();
                lasts.sort();
                let cut = lasts[lasts.len() / 2];
                s.retain(|_, st| st.last > cut);
            }
        }
        for k in keys(addr, account) {
            let cap = k.cap();
            let st = s.entry(k).or_insert(Strikes {
                failures: 0,
                until: now,
                last: now,
            });
            st.failures = st.failures.saturating_add(1);
            st.last = now;
            st.until = now + wait_after(st.failures, cap);
        }
    }

    /// Records a successful login: its address and account start afresh.
    pub fn succeeded(&self, addr: IpAddr, account: Option<&str>) {
        let mut s = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys(addr, account) {
            s.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_the_free_tries_and_reset_on_success() {
        let g = Guard::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..FREE_FAILURES - 1 {
            g.failed(a, Some("alice"));
            assert!(g.wait(a, Some("alice")).is_none());
        }
        g.failed(a, Some("alice"));
        let w = g.wait(a, Some("alice")).expect("a wait now");
        assert!(w <= Duration::from_secs(1), "{w:?}");
        // The account waits from another address too; another account from
        // that address is not held by the account's strikes, but by the address's.
        assert!(g.wait(b, Some("alice")).is_some());
        assert!(g.wait(b, Some("bob")).is_none());
        assert!(g.wait(a, Some("bob")).is_some());
        for _ in 0..20 {
            g.failed(a, Some("alice"));
        }
        let w = g.wait(a, None).unwrap();
        assert!(w > Duration::from_secs(200) && w <= MAX_WAIT, "{w:?}");
        let w = g.wait(b, Some("alice")).unwrap();
        assert!(w <= MAX_ACCOUNT_WAIT, "{w:?}");
        g.succeeded(a, Some("alice"));
        assert!(g.wait(a, Some("alice")).is_none());
    }

    #[test]
    fn the_table_stays_bounded() {
        let g = Guard::default();
        for i in 0..(MAX_KEYS as u32 + 500) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            g.failed(ip, None);
        }
        assert!(g.strikes.lock().unwrap().len() <= MAX_KEYS);
    }
}
