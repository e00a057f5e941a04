//! Early stopping on one validation metric, with patience.

/// Tracks the best value of the monitored validation metric.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStopping {
    higher_is_better: bool,
    patience: usize,
    min_delta: f64,
    best: Option<f64>,
    best_epoch: usize,
    epochs_since_best: usize,
}

impl EarlyStopping {
    /// Stop after `patience` epochs without an improvement larger than `min_delta`.
    pub fn new(higher_is_better: bool, patience: usize, min_delta: f64) -> Self {
        Self { higher_is_better, patience, min_delta, best: None, best_epoch: 0, epochs_since_best: 0 }
    }

    /// Records an epoch's value; returns whether it is the new best.
    pub fn update(&mut self, epoch: usize, value: f64) -> bool {
        let improved = match self.best {
            None => value.is_finite(),
            Some(best) if self.higher_is_better => value > best + self.min_delta,
            Some(best) => value < best - self.min_delta,
        };
        if improved {
            self.best = Some(value);
            self.best_epoch = epoch;
            self.epochs_since_best = 0;
        } else {
            self.epochs_since_best += 1;
        }
        improved
    }

    /// Whether patience has run out.
    pub fn should_stop(&self) -> bool {
        self.epochs_since_best >= self.patience
    }

    /// The best value so far and its epoch.
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best.map(|b| (b, self.best_epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        let mut es = EarlyStopping::new(true, 2, 0.0);
        assert!(es.update(1, 0.80));
        assert!(es.update(2, 0.85));
        assert!(!es.update(3, 0.85)); // equal is no improvement
        assert!(!es.should_stop());
        assert!(!es.update(4, 0.84));
        assert!(es.should_stop());
        assert_eq!(es.best(), Some((0.85, 2)));
    }

    #[test]
    fn lower_is_better_and_min_delta() {
        let mut es = EarlyStopping::new(false, 1, 0.01);
        assert!(es.update(1, 1.0));
        assert!(!es.update(2, 0.995)); // within min_delta
        assert!(es.should_stop());
        let mut es = EarlyStopping::new(false, 3, 0.0);
        assert!(!es.update(1, f64::NAN));
        assert!(es.update(2, 0.5));
    }
}
