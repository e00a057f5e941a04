//! Successive halving (Jamieson & Talwalkar 2016; the synchronous form of ASHA, Li et al. 2020)
//! over epochs: every trial trains to the first budget, the best `1/η` of them go on to `η` times
//! more epochs, and so on up to the config's `train.epochs`. A promoted trial continues from its
//! checkpoint (a resumed run ends as the uninterrupted one), so the last rung costs what one full
//! run costs, and the whole study about `trials · min_epochs · rungs` epochs.

/// The epoch budgets of the rungs: `min, min·η, min·η², …` below `max`, then `max`.
pub fn rungs(min_epochs: usize, max_epochs: usize, eta: usize) -> Vec<usize> {
    let (min, eta) = (min_epochs.clamp(1, max_epochs.max(1)), eta.max(2));
    let mut out = Vec::new();
    let mut r = min;
    while r < max_epochs {
        out.push(r);
        r = r.saturating_mul(eta);
    }
    out.push(max_epochs.max(1));
    out
}

/// The trials that go on from a rung: the best `⌈n/η⌉` (at least one) of `(trial, value)` —
/// largest values first when `maximise`, else smallest; a failed trial (NaN) never goes on while
/// another has a value. Ties keep the lower trial number. Returned best first.
pub fn promote(results: &[(usize, f64)], eta: usize, maximise: bool) -> Vec<usize> {
    let keep = results.len().div_ceil(eta.max(2)).max(1).min(results.len());
    let mut ranked: Vec<(usize, f64)> = results.to_vec();
    ranked.sort_by(|a, b| {
        let key = |v: f64| {
            if v.is_nan() {
                f64::NEG_INFINITY
            } else if maximise {
                v
            } else {
                -v
            }
        };
        key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0))
    });
    ranked.into_iter().take(keep).filter(|(_, v)| !v.is_nan()).map(|(t, _)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_by_hand() {
        assert_eq!(rungs(1, 27, 3), vec![1, 3, 9, 27]);
        assert_eq!(rungs(2, 30, 3), vec![2, 6, 18, 30]);
        assert_eq!(rungs(5, 5, 3), vec![5]);
        assert_eq!(rungs(10, 4, 3), vec![4], "a first budget above the last is the last");
        assert_eq!(rungs(1, 8, 2), vec![1, 2, 4, 8]);
    }

    #[test]
    fn promotes_the_best_third_in_the_objective_direction() {
        let results = [(0, 0.91), (1, 0.95), (2, 0.90), (3, f64::NAN), (4, 0.93), (5, 0.94), (6, 0.92)];
        assert_eq!(promote(&results, 3, true), vec![1, 5, 4]); // ⌈7/3⌉ = 3
        assert_eq!(promote(&results, 3, false), vec![2, 0, 6]);
        assert_eq!(promote(&results, 2, true), vec![1, 5, 4, 6]);
        assert_eq!(promote(&[(4, 0.5)], 3, true), vec![4]);
        assert_eq!(promote(&[(0, f64::NAN), (1, f64::NAN)], 3, true), Vec::<usize>::new());
        assert_eq!(promote(&[(2, 0.5), (1, 0.5)], 3, true), vec![1], "ties keep the lower number");
    }
}
