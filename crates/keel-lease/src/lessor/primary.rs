//! The primary's side of the lessor: deadlines, expiry reports and checkpoints. None of this
//! changes persisted state.

use super::{ceil_ms, floor_ms, Lessor};
use crate::lease::{Checkpoint, Due, Expired};
use std::time::Duration;

impl Lessor {
    /// Become the primary at `now`: every lease's deadline becomes
    /// `now + persisted remaining TTL + election timeout` (the grace).
    /// O(leases). Call it only after applying every entry committed before this term.
    ///
    /// etcd: server/lease/lessor.go `Promote(extend)`.
    pub fn promote(&mut self, now: Duration) {
        self.primary = true;
        let now_ms = ceil_ms(now);
        self.wheel.unschedule_all(floor_ms(now) / self.tick_ms);
        for index in 0..self.wheel.slab_len() {
            let Some(handle) = self.wheel.handle_at(index) else {
                continue;
            };
            let Some(remaining_ms) = self.wheel.get(handle).map(|s| s.remaining_ms) else {
                continue;
            };
            let expiry = now_ms
                .saturating_add(remaining_ms)
                .saturating_add(self.grace_ms);
            self.set_expiry(handle, expiry, now_ms);
        }
        self.debug_check();
    }

    /// Stop being the primary: forget every deadline; [`Lessor::tick`] reports nothing until
    /// the next [`Lessor::promote`]. O(leases).
    pub fn demote(&mut self) {
        self.primary = false;
        let elapsed = self.wheel.elapsed();
        self.wheel.unschedule_all(elapsed);
        self.debug_check();
    }

    /// Primary: advance to `now` and return at most `max` due events: leases past their
    /// deadline (reported again every `expired_retry` while they exist) and remaining-TTL
    /// checkpoints (for a lease whose persisted remaining TTL is at least one
    /// `checkpoint_interval` above its remaining TTL; then at most one per interval). A lease is reported no earlier than its deadline and,
    /// if `tick` is called every tick with room, at most one tick after it. Not primary: empty.
    pub fn tick(&mut self, now: Duration, max: usize) -> Due {
        let mut due = Due::default();
        if !self.primary || max == 0 {
            return due;
        }
        let now_ms = floor_ms(now);
        let mut popped = std::mem::take(&mut self.popped);
        popped.clear();
        self.wheel.advance(now_ms / self.tick_ms, max, &mut popped);
        for &handle in &popped {
            let Some(slot) = self.wheel.get(handle).copied() else {
                continue;
            };
            if now_ms >= slot.expiry_ms {
                due.expired.push(Expired {
                    id: slot.id,
                    renew_count: slot.renew_count,
                });
                let retry = now_ms.saturating_add(self.retry_ms);
                self.wheel.schedule(handle, retry.div_ceil(self.tick_ms));
                continue;
            }
            let remaining_ms = (slot.expiry_ms - now_ms).min(slot.ttl_ms());
            let stale_ms = slot.remaining_ms.saturating_sub(remaining_ms);
            match self.checkpoint_ms {
                Some(interval) if stale_ms >= interval => {
                    due.checkpoints.push(Checkpoint {
                        id: slot.id,
                        renew_count: slot.renew_count,
                        remaining: Duration::from_millis(remaining_ms),
                    });
                    // The next one an interval later, whether or not this one applied by then.
                    let next = slot.expiry_ms.min(now_ms.saturating_add(interval));
                    self.wheel.schedule(handle, next.div_ceil(self.tick_ms));
                }
                _ => self.set_expiry(handle, slot.expiry_ms, now_ms),
            }
        }
        self.popped = popped;
        self.debug_check();
        due
    }
}
