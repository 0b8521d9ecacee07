//! The timer wheel for arbitrary delays: pure arithmetic over due times, no state.
//!
//! A message due at an arbitrary time `T` waits in a hierarchy of FIFO consume queues, the
//! *timer slots*: [`TIER_COUNT`] tiers of [`SLOTS_PER_TIER`] slots. Tier `t` has a granule of
//! `g = 32^t` ms. A message that enters the wheel at time `a` (its record's store time) with
//! `r = T - a >= 1` ms to go enters tier `t = floor(log32(r))` (so `g <= r < 32 g`), in slot
//! `floor(T / g) mod 32`, and is released at the start of its granule, `floor(T / g) * g`
//! (exactly `T` in tier 0). On release it hops, as a small index record that names the
//! original record (no payload copy), into the tier that fits what is left, or is delivered
//! when nothing is left.
//!
//! **Why each slot is FIFO in release order.** Entries enter a slot in log order, and store
//! times follow log order (they are stamped under the append lock), so `a` never decreases
//! along a slot. For an entry of tier `t` the granule index `n = floor(T / g)` lies in
//! `[floor(a / g) + 1, floor(a / g) + 32]`: 32 consecutive values, so the slot (`n mod 32`)
//! determines `n`, and a later `a` can only give the same or a later `n`. So a slot's queue is
//! sorted by release time and the delivery loop only ever looks at its head. (If the wall
//! clock goes back, a later entry may sort before an earlier one: it is then held behind the
//! head, late by at most the jump, and never released early.)
//!
//! A message hops at most once per tier below its entry tier, and in the last second before
//! it is due it passes tier 2 (1,024 ms granules), tier 1 (32 ms) and tier 0 (1 ms).
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

/// Bits of the due time each tier resolves.
pub const TIER_BITS: u32 = 5;
/// Slots per tier.
pub const SLOTS_PER_TIER: u32 = 1 << TIER_BITS;
/// Tiers: tier 7's granule is 32^7 ms (about 398 days), its horizon 32^8 ms (about 35 years).
pub const TIER_COUNT: u32 = 8;
/// Number of timer slot queues (`0..TIMER_SLOT_COUNT`): tier `slot / 32`, slot `slot % 32`.
pub const TIMER_SLOT_COUNT: u32 = SLOTS_PER_TIER * TIER_COUNT;
/// The longest delay the wheel can hold, in ms (32^8 - 1).
pub const TIMER_HORIZON_MS: u64 = (1u64 << (TIER_BITS * TIER_COUNT)) - 1;

/// The tier that holds a message with `remaining_ms` (>= 1) to go.
pub fn tier_for(remaining_ms: u64) -> u32 {
    let log2 = 63 - remaining_ms.max(1).leading_zeros();
    (log2 / TIER_BITS).min(TIER_COUNT - 1)
}

/// The slot a message due at `due_ms` enters at `now_ms`, or `None` when it is due already.
pub fn slot_for(due_ms: u64, now_ms: u64) -> Option<u8> {
    let remaining_ms = due_ms.checked_sub(now_ms).filter(|r| *r > 0)?;
    let tier = tier_for(remaining_ms);
    let granule_index = due_ms >> (tier * TIER_BITS);
    let slot = tier * SLOTS_PER_TIER + (granule_index as u32 & (SLOTS_PER_TIER - 1));
    u8::try_from(slot).ok()
}

/// The slot a hop at `now_ms` takes: [`slot_for`]; if the message fell due between the
/// decision to hop and the hop's store time (microseconds), its tier-0 slot, which releases it
/// at once (it may then wait behind that slot's head for up to 31 ms).
pub fn hop_slot(due_ms: u64, now_ms: u64) -> u8 {
    slot_for(due_ms, now_ms).unwrap_or((due_ms & u64::from(SLOTS_PER_TIER - 1)) as u8)
}

/// The tier of a slot.
pub fn slot_tier(slot: u8) -> u32 {
    u32::from(slot) / SLOTS_PER_TIER
}

/// When the entry of a message due at `due_ms` leaves `slot`: the start of its granule.
pub fn release_ms(due_ms: u64, slot: u8) -> u64 {
    let shift = slot_tier(slot) * TIER_BITS;
    (due_ms >> shift) << shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_cover_their_ranges() {
        assert_eq!(tier_for(1), 0);
        assert_eq!(tier_for(31), 0);
        assert_eq!(tier_for(32), 1);
        assert_eq!(tier_for(1023), 1);
        assert_eq!(tier_for(1024), 2);
        assert_eq!(tier_for(TIMER_HORIZON_MS), TIER_COUNT - 1);
        assert_eq!(tier_for(u64::MAX), TIER_COUNT - 1);
    }

    #[test]
    fn due_or_past_messages_take_no_slot() {
        assert_eq!(slot_for(100, 100), None);
        assert_eq!(slot_for(99, 100), None);
        assert_eq!(slot_for(101, 100), Some(101 % 32));
    }

    #[test]
    fn release_is_never_after_due_and_never_before_entry() {
        let mut seed = 7u64;
        for _ in 0..100_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let now = (seed >> 20) % 2_000_000_000_000;
            let delay = 1 + (seed >> 7) % 40_000_000_000;
            let due = now + delay;
            let slot = slot_for(due, now).unwrap_or(u8::MAX);
            let release = release_ms(due, slot);
            assert!(release <= due, "release {release} after due {due}");
            assert!(release > now, "release {release} not after entry {now}");
            let left = due - release;
            // What is left after the release fits a lower tier (or nothing).
            assert!(left == 0 || tier_for(left) < slot_tier(slot));
        }
    }

    #[test]
    fn a_slot_is_sorted_by_release_when_entry_times_grow() {
        // Entries of one slot, entering at growing times, leave in order.
        let mut last_release = [0u64; TIMER_SLOT_COUNT as usize];
        let mut seed = 11u64;
        let mut now = 1_000_000u64;
        for _ in 0..200_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            now += (seed >> 60) % 3;
            let due = now + 1 + (seed >> 9) % 5_000_000;
            let slot = slot_for(due, now).unwrap_or(0);
            let release = release_ms(due, slot);
            if let Some(last) = last_release.get_mut(usize::from(slot)) {
                assert!(release >= *last, "slot {slot} out of order");
                *last = release;
            }
        }
    }
}
