//! The connection limiter both front ends share: a bound on all connections and one per
//! client address, so that one client (or a slow-loris from it) cannot take every slot and
//! lock out the others. Past either bound a connection is refused before it is served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is taken.
    Total,
    /// This client holds its share already.
    PerClient,
}

#[derive(Debug)]
pub struct Limiter {
    total: usize,
    per_client: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
    client: IpAddr,
}

impl Limiter {
    pub fn new(total: usize, per_client: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            total,
            per_client,
            open: Mutex::new(Open::default()),
        })
    }

    pub fn acquire(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.total {
            return Err(Refused::Total);
        }
        let mine = open.by_client.entry(client).or_insert(0);
        if *mine >= self.per_client {
            return Err(Refused::PerClient);
        }
        *mine += 1;
        open.total += 1;
        Ok(Slot {
            limiter: self.clone(),
            client,
        })
    }

    /// A slot against the total only: for a front end whose one client is the MTA (the
    /// milter), where a per-client share means nothing.
    pub fn acquire_any(self: &Arc<Self>) -> Result<Slot, Refused> {
        self.acquire(IpAddr::from([0, 0, 0, 0]))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_and_total_bounds_hold_and_free_on_drop() {
        let l = Limiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).unwrap_err(), Refused::PerClient);
        let _b1 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(l.open(), 2);
        assert!(l.acquire(a).is_ok());
    }
}
