//! [`Collective`] on MPI (rsmpi over the system's Open MPI): the ranks `mpirun` started, on one
//! machine or many. Built with the `mpi` feature.
//!
//! MPI is initialised once per process ([`MpiCollective::init`]) and finalised when the value is
//! dropped. A rank that dies makes `mpirun` end the whole job (Open MPI's default): the others stop
//! within a couple of seconds with mpirun's message naming the rank, never hang in an all-reduce.

use mpi::{
    collective::SystemOperation,
    datatype::PartitionMut,
    environment::Universe,
    topology::SimpleCommunicator,
    traits::{Communicator, CommunicatorCollectives, Equivalence, Root},
};

use crate::Collective;

/// The world communicator of an MPI job.
pub struct MpiCollective {
    // finalises MPI when dropped; declared last-used so the communicator goes first
    world: SimpleCommunicator,
    _universe: Universe,
}

impl MpiCollective {
    /// Initialises MPI (once per process). An error when it was initialised before.
    pub fn init() -> Result<Self, String> {
        let universe = mpi::initialize().ok_or_else(|| "MPI was already initialised in this process".to_string())?;
        Ok(Self { world: universe.world(), _universe: universe })
    }

    /// Ends every rank of the job with `code` (`MPI_Abort`): what a rank does on an error, so that
    /// the others do not wait for it in their next collective operation.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Every rank's values, in rank order. MPI's counts and offsets are 32-bit, so a gather whose
    /// total passes 2³¹ values goes in rounds ([`crate::collective::gather_rounds`]).
    fn gather<T: Equivalence + Copy + Default>(&self, values: &[T]) -> Vec<T> {
        let size = self.world.size() as usize;
        let count = values.len() as u64;
        let mut counts = vec![0u64; size];
        self.world.all_gather_into(&count, &mut counts[..]);
        let first: Vec<usize> =
            counts.iter().scan(0usize, |at, &c| Some(std::mem::replace(at, *at + c as usize))).collect();
        let mut all = vec![T::default(); counts.iter().sum::<u64>() as usize];
        let rank = self.world.rank() as usize;
        for round in crate::collective::gather_rounds(&counts, i32::MAX as u64) {
            let lens: Vec<i32> = round.iter().map(|&(_, n)| n as i32).collect();
            let displs: Vec<i32> = lens.iter().scan(0i32, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
            let mut buffer = vec![T::default(); round.iter().map(|&(_, n)| n).sum()];
            {
                let (start, n) = round[rank];
                let mut partition = PartitionMut::new(&mut buffer[..], &lens[..], &displs[..]);
                self.world.all_gather_varcount_into(&values[start..start + n], &mut partition);
            }
            for (r, &(start, n)) in round.iter().enumerate() {
                let at = displs[r] as usize;
                all[first[r] + start..first[r] + start + n].copy_from_slice(&buffer[at..at + n]);
            }
        }
        all
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f32(&self, values: &mut [f32]) {
        let local = values.to_vec();
        self.world.all_reduce_into(&local[..], values, SystemOperation::sum());
    }

    fn sum_f64(&self, values: &mut [f64]) {
        let local = values.to_vec();
        self.world.all_reduce_into(&local[..], values, SystemOperation::sum());
    }

    fn gather_f32(&self, values: &[f32]) -> Vec<f32> {
        self.gather(values)
    }

    fn gather_i64(&self, values: &[i64]) -> Vec<i64> {
        self.gather(values)
    }

    fn broadcast_f32(&self, values: &mut [f32], root: usize) {
        self.world.process_at_rank(root as i32).broadcast_into(values);
    }

    fn barrier(&self) {
        self.world.barrier();
    }
}
