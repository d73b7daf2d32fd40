//! Finding a name's slot, or claiming one, without a lock held across processes.
//!
//! Slots are an open-addressed table: name `n` probes slots `h(n) % S`, `+1`, `+2`, …
//! (wrapping), where `h` is FNV-1a. Along that sequence a claimer looks at each slot:
//!
//! | slot (tag state, tag hash) | action |
//! | --- | --- |
//! | Ready, same hash | compare names; equal: this is the name's slot (kinds must match) |
//! | Empty | CAS `Empty → Claiming|h(n)`; won: write kind and name, CAS `Claiming → Ready` (Release) |
//! | Claiming, same hash | someone is claiming (probably) this name: wait for it to finish |
//! | anything else | next slot |
//!
//! **Rule (deterministic, no duplicates):** a name's slot is the first slot of its
//! probe sequence that became Ready with that name. Every claimer of one name walks
//! the same sequence and never passes a slot that is Empty (it tries to claim it) or
//! Claiming with its hash (it waits), and slots never become Empty again, so all
//! claimers meet at the first slot any of them claims: one wins the CAS, the others
//! wait and then find the name there.
//!
//! **A claimer that dies** between its two CASes (SIGKILL in a window of a few stores)
//! would make waiters wait forever, so a waiter gives up after [`STUCK_CLAIM_TIMEOUT`]
//! and tombstones the slot (CAS `Claiming → Tombstone`). A claimer that was merely
//! slow then loses its `Claiming → Ready` CAS and starts over, so it too ends at the
//! one slot of the name: correctness never depends on the timeout; only a slot is
//! wasted.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use super::error::StatsError;
use super::layout::{self, EncodedName, Kind, SlotState};
use super::mapping::Mapping;

/// How long a claimer waits for another claim of (probably) the same name.
pub const STUCK_CLAIM_TIMEOUT: Duration = Duration::from_millis(20);

/// The slot of `name` with kind `kind`, claiming one if the name has none.
pub(crate) fn find_or_claim(map: &Mapping, name: &str, kind: Kind) -> Result<u32, StatsError> {
    let encoded = layout::encode_name(name).map_err(|reason| StatsError::InvalidName {
        name: name.to_string(),
        reason,
    })?;
    loop {
        match probe(map, &encoded, kind) {
            Probe::Found(index) => return Ok(index),
            Probe::Exists(existing) => {
                return Err(StatsError::KindMismatch {
                    name: name.to_string(),
                    existing,
                    requested: kind,
                })
            }
            Probe::Full => {
                map.full_errors().fetch_add(1, Relaxed);
                return Err(StatsError::Full {
                    name: name.to_string(),
                    slots: map.slots(),
                });
            }
            Probe::Tombstoned => continue,
        }
    }
}

enum Probe {
    Found(u32),
    Exists(Kind),
    Full,
    /// Our claim was given up on by a waiter: start over.
    Tombstoned,
}

fn probe(map: &Mapping, name: &EncodedName, kind: Kind) -> Probe {
    let slots = map.slots();
    let start = (name.hash % u64::from(slots)) as u32;
    for step in 0..slots {
        let index = ((u64::from(start) + u64::from(step)) % u64::from(slots)) as u32;
        match visit(map, index, name, kind) {
            Visit::Next => continue,
            Visit::Done(result) => return result,
        }
    }
    Probe::Full
}

enum Visit {
    Next,
    Done(Probe),
}

fn visit(map: &Mapping, index: u32, name: &EncodedName, kind: Kind) -> Visit {
    let tag = map.tag(index);
    let mut deadline = None;
    let mut spins = 0u32;
    loop {
        let current = tag.load(Acquire);
        let ours = layout::same_hash(current, name.hash);
        match SlotState::of(current) {
            SlotState::Empty => {
                let claiming = layout::tag(name.hash, SlotState::Claiming);
                if tag
                    .compare_exchange(current, claiming, AcqRel, Acquire)
                    .is_ok()
                {
                    return Visit::Done(publish(map, index, name, kind, claiming));
                }
                // Lost the race for this slot: look at it again.
            }
            SlotState::Ready if ours => {
                if map.name_words(index) != name.words {
                    return Visit::Next;
                }
                return Visit::Done(
                    match layout::Kind::from_word(map.kind(index).load(Relaxed)) {
                        Some(k) if k == kind => Probe::Found(index),
                        Some(other) => Probe::Exists(other),
                        // A Ready slot with no valid kind was not written by this code:
                        // treat it as someone else's and go on.
                        None => return Visit::Next,
                    },
                );
            }
            SlotState::Claiming if ours => {
                let deadline =
                    *deadline.get_or_insert_with(|| Instant::now() + STUCK_CLAIM_TIMEOUT);
                if Instant::now() >= deadline {
                    let dead = layout::tag(name.hash, SlotState::Tombstone);
                    // Fails only if the claim finished meanwhile: look again.
                    let _ = tag.compare_exchange(current, dead, AcqRel, Acquire);
                } else {
                    backoff(&mut spins);
                }
            }
            _ => return Visit::Next,
        }
    }
}

/// Write kind and name into a slot we hold in Claiming state, then make it Ready.
fn publish(map: &Mapping, index: u32, name: &EncodedName, kind: Kind, claiming: u64) -> Probe {
    map.kind(index).store(kind as u32, Relaxed);
    for (w, word) in name.words.iter().enumerate() {
        map.name_word(index, w).store(*word, Relaxed);
    }
    let ready = layout::tag(name.hash, SlotState::Ready);
    // Release: whoever sees Ready (Acquire) sees the kind and the name.
    match map
        .tag(index)
        .compare_exchange(claiming, ready, Release, Relaxed)
    {
        Ok(_) => Probe::Found(index),
        Err(_) => Probe::Tombstoned,
    }
}

/// Wait a little for another claimer: spin first (a claim takes nanoseconds), then
/// yield the CPU (it may be descheduled).
fn backoff(spins: &mut u32) {
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    *spins = spins.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testutil::slots_named;
    use crate::stats::Segment;

    /// Leave `name`'s home slot as a claimer killed mid-claim would.
    fn stuck_claim(segment: &Segment, name: &str) -> (u32, u64) {
        let map = segment.mapping();
        let encoded = layout::encode_name(name).unwrap();
        let home = (encoded.hash % u64::from(map.slots())) as u32;
        let claiming = layout::tag(encoded.hash, SlotState::Claiming);
        map.tag(home).store(claiming, Release);
        (home, claiming)
    }

    #[test]
    fn claim_stuck_past_the_timeout_is_tombstoned_and_the_name_claimed_after_it() {
        let segment = Segment::create(8).unwrap();
        let (home, _) = stuck_claim(&segment, "stuck");
        let started = Instant::now();
        segment.counter("stuck").unwrap().inc();
        assert!(started.elapsed() >= STUCK_CLAIM_TIMEOUT);
        let map = segment.mapping();
        assert_eq!(
            SlotState::of(map.tag(home).load(Acquire)),
            SlotState::Tombstone
        );
        assert_eq!(slots_named(&segment, "stuck", SlotState::Ready).len(), 1);
        // Later lookups pass the tombstone (only Claiming slots are waited for).
        assert_eq!(segment.counter("stuck").unwrap().get(), 1);
    }

    #[test]
    fn slow_claimer_given_up_on_starts_over_and_ends_on_the_one_slot() {
        let segment = Segment::create(8).unwrap();
        let map = segment.mapping();
        let (home, claiming) = stuck_claim(&segment, "slow");
        segment.counter("slow").unwrap().add(5); // tombstones `home`, claims another
        let encoded = layout::encode_name("slow").unwrap();
        // The slow claimer now finishes its writes: its publish must fail...
        assert!(matches!(
            publish(map, home, &encoded, Kind::Counter, claiming),
            Probe::Tombstoned
        ));
        // ...and its retry finds the waiter's slot.
        let index = find_or_claim(map, "slow", Kind::Counter).unwrap();
        assert_ne!(index, home);
        assert_eq!(map.value(index, 0).load(Relaxed), 5);
        assert_eq!(slots_named(&segment, "slow", SlotState::Ready), vec![index]);
    }

    #[test]
    fn claiming_slot_of_another_name_is_passed_without_waiting() {
        let segment = Segment::create(1).unwrap();
        let (home, claiming) = stuck_claim(&segment, "other");
        // The only slot is being claimed for another hash: full, and the claim is left
        // alone (a waiter would have tombstoned it at its deadline).
        assert!(matches!(
            segment.counter("mine"),
            Err(StatsError::Full { .. })
        ));
        assert_eq!(segment.mapping().tag(home).load(Acquire), claiming);
    }
}
