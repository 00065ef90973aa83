//! Who holds the lock a blocked waiter waits for, read from the waiting process's memory:
//! a PI futex word holds its owner's tid; a locked glibc `pthread_mutex_t` keeps its owner's tid
//! in `__data.__owner`, 8 bytes after the futex word (x86_64 and aarch64 alike). Only these two
//! words are read, only for waits already older than the blocked-waiter threshold.

use leaktrace_common::futex;

use crate::{
    model::{Owner, OwnerSource},
    procmem::read_u32,
};

/// FUTEX_TID_MASK: the owner tid bits of a PI futex word.
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// Offset of `__owner` from the futex word `__lock` in glibc's `struct __pthread_mutex_s`.
const GLIBC_MUTEX_OWNER_OFFSET: u64 = 8;
/// glibc's `__lll_lock_wait` sleeps with the word set to 2 ("locked, with waiters").
const GLIBC_LOCKED_CONTENDED: u32 = 2;

/// The owner a wait's lock words name, if they name one. `owner_field` is the word 8 bytes
/// after the futex word; `is_thread` tells whether a tid is a live thread of the process, so
/// a condition variable's unrelated words are not mistaken for an owner.
pub fn owner_from_words(
    op: u32,
    val: u32,
    word: u32,
    owner_field: Option<u32>,
    is_thread: impl Fn(u32) -> bool,
) -> Option<Owner> {
    let (tid, source) = match op {
        futex::LOCK_PI | futex::LOCK_PI2 => (word & FUTEX_TID_MASK, OwnerSource::PiFutexWord),
        futex::WAIT | futex::WAIT_BITSET if val == GLIBC_LOCKED_CONTENDED && word != 0 => {
            (owner_field?, OwnerSource::GlibcMutexOwner)
        }
        _ => return None,
    };
    (tid != 0 && is_thread(tid)).then_some(Owner { tid, source })
}

/// The owner of the lock `pid` waits for at `uaddr`, read from its memory now.
pub fn resolve(pid: u32, uaddr: u64, op: u32, val: u32) -> Option<Owner> {
    let word = read_u32(pid, uaddr).ok()?;
    let needs_owner_field = matches!(op, futex::WAIT | futex::WAIT_BITSET);
    let owner_field = needs_owner_field
        .then(|| read_u32(pid, uaddr.checked_add(GLIBC_MUTEX_OWNER_OFFSET)?).ok())
        .flatten();
    owner_from_words(op, val, word, owner_field, |tid| {
        std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: [u32; 2] = [101, 102];

    fn live(tid: u32) -> bool {
        LIVE.contains(&tid)
    }

    #[test]
    fn pi_futex_word_names_its_owner_without_the_flag_bits() {
        let word = 102 | 0x8000_0000; // FUTEX_WAITERS
        assert_eq!(
            owner_from_words(futex::LOCK_PI, 0, word, None, live),
            Some(Owner {
                tid: 102,
                source: OwnerSource::PiFutexWord
            })
        );
        assert_eq!(
            owner_from_words(futex::LOCK_PI2, 0, 101, None, live).map(|o| o.tid),
            Some(101)
        );
    }

    #[test]
    fn contended_glibc_mutex_names_its_owner_field() {
        assert_eq!(
            owner_from_words(futex::WAIT, 2, 2, Some(101), live),
            Some(Owner {
                tid: 101,
                source: OwnerSource::GlibcMutexOwner
            })
        );
    }

    #[test]
    fn other_waits_name_no_owner() {
        // A condition variable or a plain futex wait: not val 2.
        assert_eq!(owner_from_words(futex::WAIT, 0, 0, Some(101), live), None);
        // An unlocked word.
        assert_eq!(owner_from_words(futex::WAIT, 2, 0, Some(101), live), None);
        // The owner field is not a thread of the process.
        assert_eq!(owner_from_words(futex::WAIT, 2, 2, Some(7), live), None);
        assert_eq!(owner_from_words(futex::WAIT, 2, 2, None, live), None);
        // An unowned PI futex.
        assert_eq!(owner_from_words(futex::LOCK_PI, 0, 0, None, live), None);
        assert_eq!(
            owner_from_words(futex::WAIT_REQUEUE_PI, 2, 101, Some(101), live),
            None
        );
    }
}
