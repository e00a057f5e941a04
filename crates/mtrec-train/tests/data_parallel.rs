//! Data-parallel training over ranks that are threads ([`ThreadGroup`]): the same parameters and
//! test metrics as one process with the same global batch, for every scenario. The MPI ranks are
//! checked by `tests/mpi.rs` (feature `mpi`).

mod scenarios;

use mtrec_train::{DataParallel, ThreadGroup};
use scenarios::{assert_same_metrics, largest_relative_difference, scenarios, train};

/// The backend's generator is one per process: tests that seed it take turns.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// 2 and 3 thread ranks end where one process does (≤ 1e-5 relative, every parameter tensor), and
/// every rank holds the same parameters bit for bit; the test metrics are gathered over all rows.
#[test]
fn thread_ranks_match_one_process() {
    let _turn = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    for (name, cfg) in scenarios() {
        let (one_summary, one) = train(&cfg, DataParallel::single());
        for ranks in [2, 3] {
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = ThreadGroup::new(ranks)
                    .into_iter()
                    .map(|g| {
                        let cfg = &cfg;
                        s.spawn(move || train(cfg, DataParallel::new(Box::new(g))))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a rank panicked")).collect()
            });
            let (summary, params) = &results[0];
            let diff = largest_relative_difference(params, &one);
            println!("{name}: {ranks} thread ranks vs one process: largest relative parameter difference {diff:.2e}");
            assert!(diff <= 1e-5, "{name}, {ranks} ranks: {diff:e}");
            for (rank, (_, other)) in results.iter().enumerate().skip(1) {
                assert!(other == params, "{name}: rank {rank}'s parameters differ from rank 0's");
            }
            assert_same_metrics(&name, summary, &one_summary, 1e-4);
            let dp = summary.data_parallel.as_ref().expect("a data-parallel summary");
            assert_eq!(dp.ranks, ranks);
            assert!(dp.communication_seconds > 0.0 && (0.0..1.0).contains(&dp.communication_share), "{dp:?}");
        }
    }
}

/// Batch normalisation is refused on several ranks (each would keep its own running statistics),
/// with the key to change — `model.batch_norm`, and HoME, whose experts always normalise; one
/// process trains them.
#[test]
fn batch_norm_is_refused_on_several_ranks() {
    let _turn = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let (_, base) = scenarios().remove(0);
    let mut batch_norm = base.clone();
    batch_norm.model.batch_norm = true;
    let mut home = base;
    home.model.architecture = mtrec_model::Architecture::Home;
    for (cfg, says) in [(batch_norm, "model.batch_norm = true"), (home, "\"home\"")] {
        let ds = cfg.data.load().unwrap();
        let errors: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadGroup::new(2)
                .into_iter()
                .map(|g| {
                    let (cfg, ds) = (&cfg, &ds);
                    s.spawn(move || {
                        let trainer = mtrec_train::Trainer::new(cfg, ds, burn::tensor::Device::flex()).verbose(false);
                        trainer.with_data_parallel(DataParallel::new(Box::new(g))).run().err().unwrap().to_string()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for e in errors {
            assert!(e.contains(says) && e.contains("data-parallel"), "{e}");
        }
        let trainer = mtrec_train::Trainer::new(&cfg, &ds, burn::tensor::Device::flex()).verbose(false);
        assert!(trainer.run().is_ok(), "{says}: one process trains it");
    }
}
