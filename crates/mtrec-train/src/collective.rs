//! What data-parallel training needs from the processes it runs on: their number, this process's
//! rank, and a few collective operations (sum, gather, broadcast, barrier) over host buffers.
//!
//! One process is [`SingleProcess`] (every operation is the identity). Across processes and
//! machines it is MPI ([`MpiCollective`](crate::MpiCollective), feature `mpi`); within one process,
//! [`ThreadGroup`] connects threads, which lets the data-parallel path be tested exactly without
//! MPI. Every rank must call the same operations in the same order with buffers of the same length
//! (gathers excepted); the trainer guarantees it by running the same steps on every rank.

use std::sync::{Arc, Barrier, Mutex};

/// Collective operations over the ranks of a data-parallel run. Every rank receives the same
/// result, bit for bit.
pub trait Collective {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn size(&self) -> usize;

    /// Element-wise sum over the ranks, in place.
    fn sum_f32(&self, values: &mut [f32]);

    /// Element-wise sum over the ranks, in place.
    fn sum_f64(&self, values: &mut [f64]);

    /// Every rank's `values` (lengths may differ), concatenated in rank order.
    fn gather_f32(&self, values: &[f32]) -> Vec<f32>;

    /// Every rank's `values` (lengths may differ), concatenated in rank order.
    fn gather_i64(&self, values: &[i64]) -> Vec<i64>;

    /// Rank `root`'s `values` on every rank.
    fn broadcast_f32(&self, values: &mut [f32], root: usize);

    /// Returns once every rank has called it.
    fn barrier(&self);
}

/// The number of ranks when this process was started by an MPI launcher (`mpirun`, `srun`) as one
/// of several: reads the launcher's environment (Open MPI's, or PMI's), without MPI.
pub fn launcher_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
        .filter(|&n| n > 1)
}

/// A shared collective (one MPI world for several runs of a process).
impl<C: Collective + ?Sized> Collective for std::rc::Rc<C> {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn sum_f32(&self, values: &mut [f32]) {
        (**self).sum_f32(values)
    }
    fn sum_f64(&self, values: &mut [f64]) {
        (**self).sum_f64(values)
    }
    fn gather_f32(&self, values: &[f32]) -> Vec<f32> {
        (**self).gather_f32(values)
    }
    fn gather_i64(&self, values: &[i64]) -> Vec<i64> {
        (**self).gather_i64(values)
    }
    fn broadcast_f32(&self, values: &mut [f32], root: usize) {
        (**self).broadcast_f32(values, root)
    }
    fn barrier(&self) {
        (**self).barrier()
    }
}

/// One process: every collective operation is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _values: &mut [f32]) {}
    fn sum_f64(&self, _values: &mut [f64]) {}
    fn gather_f32(&self, values: &[f32]) -> Vec<f32> {
        values.to_vec()
    }
    fn gather_i64(&self, values: &[i64]) -> Vec<i64> {
        values.to_vec()
    }
    fn broadcast_f32(&self, _values: &mut [f32], _root: usize) {}
    fn barrier(&self) {}
}

/// What one operation's ranks deposit.
#[derive(Default)]
struct Slots {
    f64s: Vec<Vec<f64>>,
    i64s: Vec<Vec<i64>>,
}

/// Ranks that are threads of one process (tests, and trying data parallelism without MPI). Each
/// operation deposits every rank's buffer, waits for all, reads them in rank order (so every rank
/// sums in the same order and gets the same bits) and waits again before the next operation.
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    barrier: Arc<Barrier>,
    slots: Arc<Mutex<Slots>>,
}

impl ThreadGroup {
    /// `size` connected ranks, one for each thread.
    pub fn new(size: usize) -> Vec<ThreadGroup> {
        assert!(size > 0, "a group has at least one rank");
        let barrier = Arc::new(Barrier::new(size));
        let slots = Arc::new(Mutex::new(Slots { f64s: vec![Vec::new(); size], i64s: vec![Vec::new(); size] }));
        (0..size).map(|rank| ThreadGroup { rank, size, barrier: barrier.clone(), slots: slots.clone() }).collect()
    }

    /// Deposits `mine`, waits for every rank's and reads them all in rank order.
    fn exchange<T: Clone>(&self, mine: Vec<T>, slot: fn(&mut Slots) -> &mut Vec<Vec<T>>) -> Vec<Vec<T>> {
        slot(&mut self.slots.lock().expect("no rank panicked"))[self.rank] = mine;
        self.barrier.wait();
        let all = slot(&mut self.slots.lock().expect("no rank panicked")).clone();
        self.barrier.wait();
        all
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_f32(&self, values: &mut [f32]) {
        let all = self.exchange(values.iter().map(|&v| v as f64).collect(), |s| &mut s.f64s);
        for (i, v) in values.iter_mut().enumerate() {
            *v = all.iter().map(|r| r[i] as f32).reduce(|a, b| a + b).expect("one rank at least");
        }
    }

    fn sum_f64(&self, values: &mut [f64]) {
        let all = self.exchange(values.to_vec(), |s| &mut s.f64s);
        for (i, v) in values.iter_mut().enumerate() {
            *v = all.iter().map(|r| r[i]).reduce(|a, b| a + b).expect("one rank at least");
        }
    }

    fn gather_f32(&self, values: &[f32]) -> Vec<f32> {
        let all = self.exchange(values.iter().map(|&v| v as f64).collect(), |s| &mut s.f64s);
        all.into_iter().flatten().map(|v| v as f32).collect()
    }

    fn gather_i64(&self, values: &[i64]) -> Vec<i64> {
        self.exchange(values.to_vec(), |s| &mut s.i64s).into_iter().flatten().collect()
    }

    fn broadcast_f32(&self, values: &mut [f32], root: usize) {
        let all = self.exchange(values.iter().map(|&v| v as f64).collect(), |s| &mut s.f64s);
        values.iter_mut().zip(&all[root]).for_each(|(v, r)| *v = *r as f32);
    }

    fn barrier(&self) {
        self.barrier.wait();
    }
}

/// The rounds of a variable-count gather whose counts (`counts[r]` values from rank `r`) may add
/// up past what one MPI call can address (its counts and offsets are 32-bit: at most `limit`
/// values a call): per round, each rank's `(start, len)` in its own values, the round's lengths
/// adding up to at most `limit`. Every rank computes the same plan from the same counts.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn gather_rounds(counts: &[u64], limit: u64) -> Vec<Vec<(usize, usize)>> {
    let share = (limit / counts.len().max(1) as u64).max(1);
    let rounds = counts.iter().map(|c| c.div_ceil(share)).max().unwrap_or(0).max(1);
    (0..rounds)
        .map(|k| {
            (counts.iter())
                .map(|&c| {
                    let start = (k * share).min(c);
                    (start as usize, ((k + 1) * share).min(c).saturating_sub(start) as usize)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three threads: sums, gathers of different lengths and a broadcast give every rank the
    /// hand-computed result.
    #[test]
    fn thread_group_operations_by_hand() {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadGroup::new(3)
                .into_iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank() as f32;
                        let mut a = vec![r, 10.0 * r];
                        g.sum_f32(&mut a);
                        let mut b = vec![r as f64 + 0.5];
                        g.sum_f64(&mut b);
                        let c = g.gather_f32(&vec![r; g.rank()]);
                        let d = g.gather_i64(&[g.rank() as i64 * 7]);
                        let mut e = vec![r + 1.0; 2];
                        g.broadcast_f32(&mut e, 2);
                        g.barrier();
                        (a, b, c, d, e)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (a, b, c, d, e) in results {
            assert_eq!(a, vec![3.0, 30.0]);
            assert_eq!(b, vec![4.5]);
            assert_eq!(c, vec![1.0, 2.0, 2.0]);
            assert_eq!(d, vec![0, 7, 14]);
            assert_eq!(e, vec![3.0, 3.0]);
        }
    }

    /// A gather whose total passes 2³¹ goes in rounds that each stay under the limit and together
    /// cover every value of every rank once, in order (the 32-bit offsets overflowed before).
    #[test]
    fn gathers_past_the_32_bit_limit_go_in_rounds() {
        let counts = [3_000_000_000u64, 5, 0, 2_500_000_000];
        let limit = i32::MAX as u64;
        let rounds = gather_rounds(&counts, limit);
        assert!(rounds.len() > 1);
        let mut next = [0usize; 4];
        for round in &rounds {
            assert!(round.iter().map(|&(_, n)| n as u64).sum::<u64>() <= limit);
            for (r, &(start, n)) in round.iter().enumerate() {
                if n > 0 {
                    assert_eq!(start, next[r], "rank {r}'s values in order");
                }
                next[r] = start + n;
            }
        }
        assert_eq!(next.map(|n| n as u64), counts, "every value once");
        assert_eq!(gather_rounds(&[4, 2], 100), vec![vec![(0, 4), (0, 2)]], "one round when it fits");
        assert_eq!(gather_rounds(&[0, 0], 100), vec![vec![(0, 0), (0, 0)]]);
    }
}
