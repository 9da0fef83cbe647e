//! Reservations: participants of rooms placed recently, counted on the bridge that takes them.
//!
//! A bridge's stats lag behind the rooms sent to it, so each room placed adds its expected
//! participants to the bridge Jicofo would pick, for a window (20 s by default), as Jicofo's
//! own burst correction does. The [`Ledger`] is kept by the API; selection reads its
//! [`Load`] as plain data. Time is passed in, never read here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Survey;
use crate::catalog::{BridgeId, Catalog};

/// Participants reserved per bridge; what selection reads.
///
/// Besides the totals by bridge id it can keep them as catalog positions for one survey's
/// catalog ([`Load::place`]), updated by one lookup per change, so that a request reads them
/// without looking any bridge up.
#[derive(Debug, Clone, Default)]
pub struct Load {
    by_bridge: HashMap<BridgeId, u32>,
    /// (region, bridge, participants) by position in `placed_in`, sorted.
    placed: Vec<(usize, usize, u32)>,
    placed_in: Option<Arc<Catalog>>,
    /// Changes not yet applied to `placed`.
    pending: Vec<(BridgeId, i64)>,
}

impl PartialEq for Load {
    fn eq(&self, other: &Load) -> bool {
        self.by_bridge == other.by_bridge
    }
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

    /// Adds `participants` on `bridge`.
    pub fn add(&mut self, bridge: BridgeId, participants: u32) {
        *self.by_bridge.entry(bridge.clone()).or_insert(0) += participants;
        self.note(bridge, i64::from(participants));
    }

    fn remove(&mut self, bridge: &BridgeId, participants: u32) {
        if let Some(n) = self.by_bridge.get_mut(bridge) {
            *n = n.saturating_sub(participants);
            if *n == 0 {
                self.by_bridge.remove(bridge);
            }
            self.note(bridge.clone(), -i64::from(participants));
        }
    }

    fn note(&mut self, bridge: BridgeId, delta: i64) {
        if self.placed_in.is_some() {
            self.pending.push((bridge, delta));
        }
    }

    /// Brings the positions up to date for `survey`'s catalog: the changes since the last
    /// call, one lookup each, or everything again when the catalog is another one.
    pub fn place(&mut self, survey: &Survey) {
        let same = self
            .placed_in
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, survey.catalog()));
        if !same {
            self.placed = super::reserved_by_region(survey, self);
            self.placed_in = Some(survey.catalog().clone());
            self.pending.clear();
            return;
        }
        for (bridge, delta) in std::mem::take(&mut self.pending) {
            let Some(&(r, b)) = survey.bridges.get(&bridge) else {
                continue;
            };
            match self.placed.binary_search_by_key(&(r, b), |p| (p.0, p.1)) {
                Ok(i) => {
                    let n = (i64::from(self.placed[i].2) + delta).max(0);
                    self.placed[i].2 = u32::try_from(n).unwrap_or(u32::MAX);
                    if n == 0 {
                        self.placed.remove(i);
                    }
                }
                Err(i) if delta > 0 => {
                    let n = u32::try_from(delta).unwrap_or(u32::MAX);
                    self.placed.insert(i, (r, b, n));
                }
                Err(_) => {}
            }
        }
    }

    /// The positions, when they are current for `survey`.
    pub(super) fn placed_for(&self, survey: &Survey) -> Option<&[(usize, usize, u32)]> {
        let current = self.pending.is_empty()
            && self
                .placed_in
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, survey.catalog()));
        current.then_some(self.placed.as_slice())
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

    /// What is reserved now, with positions current for `survey`.
    pub fn load_for(&mut self, survey: &Survey) -> &Load {
        self.load.place(survey);
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
