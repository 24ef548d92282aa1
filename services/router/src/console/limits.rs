//! What one client may hold of the console: connections per client address
//! and live streams (SSE) per principal. Both are counters behind a short
//! lock, handed out as guards that give the slot back when dropped, so a
//! connection or stream that ends for any reason (closed, timed out,
//! aborted) frees its slot.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Counts held per key, with a cap per key and one over all keys.
#[derive(Debug)]
struct Counts<K> {
    held: Mutex<(usize, HashMap<K, usize>)>,
    per_key_max: usize,
    total_max: usize,
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This key already holds its cap.
    PerKey(usize),
    /// Every key together holds the overall cap.
    Total(usize),
}

impl<K: std::hash::Hash + Eq + Clone> Counts<K> {
    fn new(per_key_max: usize, total_max: usize) -> Self {
        Self {
            held: Mutex::new((0, HashMap::new())),
            per_key_max,
            total_max,
        }
    }

    fn take(&self, key: &K) -> Result<(), Refused> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, per_key) = &mut *held;
        if *total >= self.total_max {
            return Err(Refused::Total(self.total_max));
        }
        let count = per_key.entry(key.clone()).or_default();
        if *count >= self.per_key_max {
            return Err(Refused::PerKey(self.per_key_max));
        }
        *count += 1;
        *total += 1;
        Ok(())
    }

    fn give_back(&self, key: &K) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, per_key) = &mut *held;
        if let Some(count) = per_key.get_mut(key) {
            *count = count.saturating_sub(1);
            *total = total.saturating_sub(1);
            if *count == 0 {
                per_key.remove(key);
            }
        }
    }
}

/// A held slot; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct Slot<K: std::hash::Hash + Eq + Clone> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        self.counts.give_back(&self.key);
    }
}

/// The key a client's connections are counted under: its IPv4 address, or
/// the /64 prefix of its IPv6 address (one host usually holds a whole /64,
/// so counting single IPv6 addresses would be no limit at all).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// Open connections per client address, and in all.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits(Arc<Counts<IpAddr>>);

impl ConnectionLimits {
    pub(crate) fn new(per_address_max: usize, total_max: usize) -> Self {
        Self(Arc::new(Counts::new(per_address_max, total_max)))
    }

    /// A slot for one more connection from `ip`, or why not.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Slot<IpAddr>, Refused> {
        let key = client_key(ip);
        self.0.take(&key)?;
        Ok(Slot {
            counts: self.0.clone(),
            key,
        })
    }
}

/// Live streams per principal.
#[derive(Debug, Clone)]
pub(crate) struct StreamLimits(Arc<Counts<String>>);

impl StreamLimits {
    pub(crate) fn new(per_principal_max: usize, total_max: usize) -> Self {
        Self(Arc::new(Counts::new(per_principal_max, total_max)))
    }

    /// A slot for one more stream of `principal`, or why not.
    pub(crate) fn open(&self, principal: &str) -> Result<Slot<String>, Refused> {
        let key = principal.to_owned();
        self.0.take(&key)?;
        Ok(Slot {
            counts: self.0.clone(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_cap_and_a_dropped_slot_comes_back() {
        let limits = ConnectionLimits::new(2, 3);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::PerKey(2));
        let _other = limits.admit(b).unwrap();
        assert_eq!(
            limits.admit(b).unwrap_err(),
            Refused::Total(3),
            "the overall cap holds too"
        );
        drop(first);
        assert!(
            limits.admit(a).is_ok(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_prefix_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.7"), key("10.0.0.7"));
        assert_ne!(key("10.0.0.7"), key("10.0.0.8"));
    }

    #[test]
    fn streams_are_capped_per_principal() {
        let limits = StreamLimits::new(2, 100);
        let held: Vec<_> = (0..2).map(|_| limits.open("ana").unwrap()).collect();
        assert_eq!(limits.open("ana").unwrap_err(), Refused::PerKey(2));
        assert!(limits.open("bo").is_ok(), "another user is not locked out");
        drop(held);
        assert!(limits.open("ana").is_ok());
    }
}
