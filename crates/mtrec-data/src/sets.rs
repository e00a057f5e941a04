//! Datasets with a protocol of their own: UCI Census-Income (the `census-mmoe` protocol), the MMoE
//! paper's synthetic tasks, and the synthetic impression → click → purchase funnel.

pub(crate) mod census;
pub(crate) mod ctr_files;
pub(crate) mod synthetic;
pub(crate) mod synthetic_ctr;
