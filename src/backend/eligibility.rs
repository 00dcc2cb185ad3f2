//! Eligibility packed per snapshot: one bit per backend, read by picks
//! instead of the backend's own flags.
//!
//! At 10,000 backends the chosen backend's state is rarely in cache, and
//! reading its flags costs a cache miss, about as much as a whole pick among
//! three backends. The bits of 10,000 backends take 1.25 KB and stay in
//! cache, so a pick that finds its backend's bit set touches nothing of the
//! backend at all.
//!
//! A set bit means *plainly available*: in the set, not found unhealthy, not
//! ejected, at its full share (no slow start, no ramp-down). A clear bit
//! only means "ask the backend": the pick then reads its flags and share as
//! before, with the ejection deadline and the ramp's clock. So the bits are
//! a cache of the flags that may err only towards that slower, exact path,
//! and backends in any unusual state pay what they always paid.
//!
//! Keeping them right: each backend's state lists the bitmaps that mirror
//! it (weakly, with its index there); a snapshot registers when it is built
//! and then reads the flags, and every change of the flags refreshes every
//! listed bit before it returns. Each refresh writes the bit, then reads the
//! flags again and repeats if they changed meanwhile, so with concurrent
//! changes the last refresh leaves the bit matching the final flags. The
//! list sits behind a mutex that only flag changes (health events,
//! membership, the end of a ramp) and snapshot builds take, never a plain
//! request; a dropped snapshot's entries are pruned at the next of those.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// One bit per backend of a snapshot: set while it is plainly available.
pub(crate) struct Eligibility {
    words: Box<[AtomicU64]>,
}

impl Eligibility {
    /// Bits for `len` backends, all clear until their states register them.
    pub(crate) fn new(len: usize) -> Arc<Self> {
        Arc::new(Self {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Whether backend `index` is plainly available (see the module docs).
    /// A relaxed load: a flag change racing with a pick is seen a few
    /// nanoseconds late, as a load of the flags themselves would be.
    #[inline]
    pub(crate) fn is_plain(&self, index: usize) -> bool {
        self.words
            .get(index / 64)
            .is_some_and(|word| (word.load(Ordering::Relaxed) >> (index % 64)) & 1 != 0)
    }

    fn set(&self, index: usize, plain: bool) {
        let Some(word) = self.words.get(index / 64) else {
            return;
        };
        let bit = 1u64 << (index % 64);
        if plain {
            word.fetch_or(bit, Ordering::SeqCst);
        } else {
            word.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// Makes the bit of `index` follow `flags` (masked by `not_plain`): write
    /// it, then check that the flags did not change meanwhile.
    fn sync(&self, index: usize, flags: &AtomicU32, not_plain: u32) {
        let plain = |flags: &AtomicU32| flags.load(Ordering::SeqCst) & not_plain == 0;
        loop {
            let want = plain(flags);
            self.set(index, want);
            if plain(flags) == want {
                return;
            }
        }
    }
}

impl fmt::Debug for Eligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Eligibility")
            .field("words", &self.words.len())
            .finish()
    }
}

/// The bitmaps that mirror one backend's flags.
#[derive(Default)]
pub(crate) struct Mirrors {
    list: Mutex<Vec<Mirror>>,
}

struct Mirror {
    bits: Weak<Eligibility>,
    index: usize,
}

impl Mirrors {
    /// Lists `bits` (where this backend is `index`) and sets its bit from
    /// `flags`. Registering before reading means a change racing with this
    /// is either read here or refreshes the new entry itself.
    pub(crate) fn add(
        &self,
        bits: &Arc<Eligibility>,
        index: usize,
        flags: &AtomicU32,
        not_plain: u32,
    ) {
        {
            let mut list = self.lock();
            list.retain(|mirror| mirror.bits.strong_count() > 0);
            list.push(Mirror {
                bits: Arc::downgrade(bits),
                index,
            });
        }
        bits.sync(index, flags, not_plain);
    }

    /// Refreshes every listed bit after `flags` changed.
    pub(crate) fn refresh(&self, flags: &AtomicU32, not_plain: u32) {
        let mut list = self.lock();
        list.retain(|mirror| match mirror.bits.upgrade() {
            Some(bits) => {
                bits.sync(mirror.index, flags, not_plain);
                true
            }
            None => false,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Mirror>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Mirrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirrors").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    const NOT_PLAIN: u32 = 0b1;

    #[test]
    fn bits_follow_the_flags_they_mirror() {
        let flags = AtomicU32::new(0);
        let mirrors = Mirrors::default();
        let bits = Eligibility::new(130);
        assert!(!bits.is_plain(129), "clear until registered");
        mirrors.add(&bits, 129, &flags, NOT_PLAIN);
        assert!(bits.is_plain(129));
        assert!(!bits.is_plain(128) && !bits.is_plain(130));
        flags.store(NOT_PLAIN, Relaxed);
        mirrors.refresh(&flags, NOT_PLAIN);
        assert!(!bits.is_plain(129));
        // Bits that are not "plain" ones do not matter.
        flags.store(0b10, Relaxed);
        mirrors.refresh(&flags, NOT_PLAIN);
        assert!(bits.is_plain(129));
    }

    #[test]
    fn dropped_bitmaps_are_pruned() {
        let flags = AtomicU32::new(0);
        let mirrors = Mirrors::default();
        let kept = Eligibility::new(1);
        mirrors.add(&kept, 0, &flags, NOT_PLAIN);
        mirrors.add(&Eligibility::new(1), 0, &flags, NOT_PLAIN);
        assert_eq!(mirrors.lock().len(), 2);
        mirrors.refresh(&flags, NOT_PLAIN);
        assert_eq!(mirrors.lock().len(), 1);
    }

    #[test]
    fn racing_changes_leave_the_bit_matching_the_final_flags() {
        let flags = Arc::new(AtomicU32::new(0));
        let mirrors = Arc::new(Mirrors::default());
        let bits = Eligibility::new(64);
        mirrors.add(&bits, 7, &flags, NOT_PLAIN);
        for round in 0..200u32 {
            std::thread::scope(|scope| {
                for t in 0..2u32 {
                    let (flags, mirrors) = (&flags, &mirrors);
                    scope.spawn(move || {
                        for k in 0..50u32 {
                            flags.store((round + t + k) & 1, Ordering::SeqCst);
                            mirrors.refresh(flags, NOT_PLAIN);
                        }
                    });
                }
            });
            let plain = flags.load(Relaxed) & NOT_PLAIN == 0;
            assert_eq!(bits.is_plain(7), plain, "round {round}");
        }
    }
}
