//! Drains the kernel ring buffer without busy-waiting: tokio wakes us when it has records.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring buffer owns its fd, which stays open until the AsyncFd drops it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { ring })
    }

    /// Waits until records are available, then hands them to `f` until they add up to
    /// `max_bytes`.
    pub async fn wait_and_drain(
        &mut self,
        max_bytes: usize,
        f: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        let mut guard = self.ring.readable_mut().await?;
        let (n, more) = drain_ring(guard.get_inner_mut(), max_bytes, f);
        // Stay ready while records remain, so the next wait returns at once.
        if !more {
            guard.clear_ready();
        }
        Ok(n)
    }

    /// Hands the records available now to `f`, until they add up to `max_bytes`, without
    /// waiting; also says whether more remain.
    pub fn drain(&mut self, max_bytes: usize, f: impl FnMut(&[u8])) -> (usize, bool) {
        drain_ring(self.ring.get_mut(), max_bytes, f)
    }
}

/// Bounded in bytes, not records: a stack sample is a hundred times an fd record, and what a
/// drain hands over is held decoded until it is applied.
fn drain_ring(
    ring: &mut RingBuf<MapData>,
    max_bytes: usize,
    mut f: impl FnMut(&[u8]),
) -> (usize, bool) {
    let (mut n, mut bytes) = (0, 0);
    while bytes < max_bytes {
        let Some(item) = ring.next() else {
            return (n, false);
        };
        f(&item);
        n += 1;
        bytes += item.len();
    }
    (n, true)
}
