//! Reservations: participants of rooms placed recently, counted on the bridge that takes them.
//!
//! A bridge's stats lag behind the rooms sent to it, so each room placed adds its expected
//! participants to the bridge Jicofo would pick, for a window (20 s by default), as Jicofo's
//! own burst correction does. The [`Ledger`] is kept by the API; selection reads its
//! [`Load`] as plain data. Time is passed in, never read here.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::catalog::BridgeId;

/// Participants reserved per bridge; what selection reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    by_bridge: HashMap<BridgeId, u32>,
}

impl Load {
    /// Participants reserved on `bridge`.
    pub fn get(&self, bridge: &BridgeId) -> u32 {
        self.by_bridge.get(bridge).copied().unwrap_or(0)
    }

    /// Every bridge holding reservations, with its participants.
    pub fn iter(&self) -> impl Iterator<Item = (&BridgeId, u32)> {
        self.by_bridge.iter().map(|(id, &n)| (id, n))
    }

    /// Adds `participants` on `bridge`; for tests and benchmarks.
    pub fn add(&mut self, bridge: BridgeId, participants: u32) {
        *self.by_bridge.entry(bridge).or_insert(0) += participants;
    }

    fn remove(&mut self, bridge: &BridgeId, participants: u32) {
        if let Some(n) = self.by_bridge.get_mut(bridge) {
            *n = n.saturating_sub(participants);
            if *n == 0 {
                self.by_bridge.remove(bridge);
            }
        }
    }
}

/// Reservations of the last window, oldest first, with their running totals.
#[derive(Debug)]
pub struct Ledger {
    window: Duration,
    entries: VecDeque<(Instant, BridgeId, u32)>,
    load: Load,
}

impl Ledger {
    /// An empty ledger keeping reservations for `window`.
    pub fn new(window: Duration) -> Ledger {
        Ledger {
            window,
            entries: VecDeque::new(),
            load: Load::default(),
        }
    }

    /// Forgets reservations made `window` or longer before `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.entries.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((_, bridge, n)) = self.entries.pop_front() {
                self.load.remove(&bridge, n);
            }
        }
    }

    /// Reserves `participants` on `bridge` at `now`.
    pub fn reserve(&mut self, bridge: BridgeId, participants: u32, now: Instant) {
        self.load.add(bridge.clone(), participants);
        self.entries.push_back((now, bridge, participants));
    }

    /// What is reserved now.
    pub fn load(&self) -> &Load {
        &self.load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reservations add up per bridge and leave exactly when the window has passed.
    #[test]
    fn reservations_expire_after_the_window() {
        let start = Instant::now();
        let (a, b) = (
            BridgeId::parse("a").expect("id"),
            BridgeId::parse("b").expect("id"),
        );
        let mut ledger = Ledger::new(Duration::from_secs(20));
        ledger.reserve(a.clone(), 5, start);
        ledger.reserve(a.clone(), 5, start + Duration::from_secs(10));
        ledger.reserve(b.clone(), 3, start + Duration::from_secs(10));
        ledger.expire(start + Duration::from_millis(19_999));
        assert_eq!((ledger.load().get(&a), ledger.load().get(&b)), (10, 3));
        ledger.expire(start + Duration::from_secs(20));
        assert_eq!((ledger.load().get(&a), ledger.load().get(&b)), (5, 3));
        ledger.expire(start + Duration::from_secs(30));
        assert_eq!(ledger.load(), &Load::default());
    }
}
