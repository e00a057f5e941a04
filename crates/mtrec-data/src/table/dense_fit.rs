//! Fitting a dense column's transform on its training values, and saying so when the fit would
//! distort the column.
//!
//! `DenseFit` accumulates the training values in file order — the same whether the rows are
//! held in memory or streamed — as sums (mean, variance), extremes, and a bounded sample for the
//! quantiles: every value up to [`SAMPLE_CAP`] training rows, a seeded uniform reservoir of that
//! many beyond (so quantiles are exact up to 2²⁰ training rows and estimates past it).
//!
//! What a user would not expect is never silent:
//! - a column constant in the training rows: `standard` uses scale 1 (as scikit-learn's
//!   `StandardScaler` does: later values are shifted by the mean, not multiplied by 10¹²), `minmax`
//!   maps every value to 0 or 1 — each with a warning naming the column;
//! - a range dominated by outliers (99 % of the training values inside 1 % of the fitted range —
//!   one 1e38 in a column of ratios flattens it to 0): a warning naming the column, the rows
//!   outside and the remedy, `clip_quantiles = [q_lo, q_hi]`, which clips every value to the
//!   training quantiles before min-max or standard scaling.

use crate::{DataError, DenseFill, DenseTransform, FittedColumn, splitmix64};

/// Training values kept for quantiles (and the outlier check) per dense column.
pub const SAMPLE_CAP: usize = 1 << 20;

/// What a dense transform is fitted from (see the module docs of `dense_fit.rs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct DenseFit {
    n: u64,
    sum: f64,
    sq: f64,
    lo: f64,
    hi: f64,
    sample: Vec<f32>,
}

impl DenseFit {
    /// Adds a training value.
    pub(crate) fn add(&mut self, v: f32) {
        let x = v as f64;
        if self.n == 0 {
            (self.lo, self.hi) = (x, x);
        }
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        self.sum += x;
        self.sq += x * x;
        if self.sample.len() < SAMPLE_CAP {
            self.sample.push(v);
        } else {
            let j = splitmix64(self.n) % (self.n + 1);
            if (j as usize) < SAMPLE_CAP {
                self.sample[j as usize] = v;
            }
        }
        self.n += 1;
    }

    /// The fitted column `name`: `(shift, spread)` of `transform` over the training values —
    /// clipped to their `clip_quantiles` when given — and the value of a missing cell (`fill`'s
    /// number, or the training values' mean or median), with warnings for a constant column and
    /// for a range dominated by outliers.
    pub(crate) fn finish(
        &self,
        name: &str,
        transform: DenseTransform,
        clip_quantiles: Option<[f64; 2]>,
        fill: Option<DenseFill>,
    ) -> Result<FittedColumn, DataError> {
        let mut sorted = self.sample.clone();
        sorted.sort_unstable_by(f32::total_cmp);
        if self.n == 0 && matches!(fill, Some(DenseFill::Mean | DenseFill::Median)) {
            return Err(DataError::Invalid(format!(
                "data.columns `{name}`: fill = {:?} needs training values, and every training value of the \
                 column is missing",
                if fill == Some(DenseFill::Mean) { "mean" } else { "median" }
            )));
        }
        let fill = fill.map(|f| match f {
            DenseFill::Value(v) => v,
            DenseFill::Mean => self.sum / self.n as f64,
            DenseFill::Median => quantile(&sorted, 0.5),
        });
        let clip = clip_quantiles
            .filter(|_| matches!(transform, DenseTransform::Minmax | DenseTransform::Standard))
            .map(|[a, b]| [quantile(&sorted, a) as f32, quantile(&sorted, b) as f32]);
        let (shift, spread) = match (transform, clip) {
            (DenseTransform::Minmax, None) => (self.lo, self.hi),
            (DenseTransform::Minmax, Some([a, b])) => (a as f64, b as f64),
            (DenseTransform::Standard, None) => {
                let n = self.n.max(1) as f64;
                let mean = self.sum / n;
                (mean, (self.sq / n - mean * mean).max(0.0).sqrt())
            }
            (DenseTransform::Standard, Some([a, b])) => {
                // the clipped values' statistics, from the sample (every value up to SAMPLE_CAP rows)
                let clipped = sorted.iter().map(|&v| v.clamp(a, b) as f64);
                let n = sorted.len().max(1) as f64;
                let mean = clipped.clone().sum::<f64>() / n;
                (mean, (clipped.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt())
            }
            (DenseTransform::Log1p | DenseTransform::None, _) => (0.0, 1.0),
        };
        let fitted = FittedColumn::Dense {
            name: name.to_string(),
            transform,
            shift: shift as f32,
            spread: spread as f32,
            fill,
            clip,
        };
        if self.n > 0 {
            self.warn(name, transform, clip, &sorted);
        }
        Ok(fitted)
    }

    fn warn(&self, name: &str, transform: DenseTransform, clip: Option<[f32; 2]>, sorted: &[f32]) {
        let (lo, hi) = clip.map_or((self.lo, self.hi), |[a, b]| (a as f64, b as f64));
        match transform {
            DenseTransform::Standard | DenseTransform::Minmax if hi <= lo => {
                let effect = if transform == DenseTransform::Standard {
                    "standard scaling uses scale 1 (later values are shifted by the mean, not divided by a zero \
                     deviation)"
                } else {
                    "min-max maps every value to 0 (values above it to 1)"
                };
                tracing::warn!(
                    "data.columns `{name}`: the column is constant ({lo}) in the {} training rows: {effect}",
                    self.n
                );
            }
            DenseTransform::Standard | DenseTransform::Minmax => {
                if let Some((a, b, outside)) = outlier_dominated(sorted, lo, hi) {
                    let outside = (outside as f64 * self.n as f64 / sorted.len() as f64).round() as u64;
                    tracing::warn!(
                        "data.columns `{name}`: 99% of the training values lie in [{a}, {b}], within 1% of the \
                         fitted range [{lo}, {hi}]: {outside} training rows outside it set the scale and flatten \
                         the rest; set clip_quantiles = [0.01, 0.99] (or transform = \"log1p\") for this column"
                    );
                }
            }
            _ => {}
        }
    }
}

/// The `q`-quantile of sorted values, interpolated linearly between the closest ranks (numpy's
/// default); `0` for no values.
pub(crate) fn quantile(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, frac) = (at.floor() as usize, at.fract());
    let next = sorted[(i + 1).min(sorted.len() - 1)] as f64;
    sorted[i] as f64 + frac * (next - sorted[i] as f64)
}

/// When 99 % of the sorted values fit in a window of at most 1 % of `[lo, hi]`: the window and the
/// number of values outside it.
fn outlier_dominated(sorted: &[f32], lo: f64, hi: f64) -> Option<(f32, f32, usize)> {
    let n = sorted.len();
    let k = ((0.99 * n as f64).ceil() as usize).max(1);
    if n < 100 || hi <= lo || k > n {
        return None;
    }
    let (start, width) = (0..=n - k)
        .map(|i| (i, sorted[i + k - 1] as f64 - sorted[i] as f64))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("n ≥ k");
    (width <= 0.01 * (hi - lo)).then(|| (sorted[start], sorted[start + k - 1], n - k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(values: &[f32], transform: DenseTransform, clip: Option<[f64; 2]>) -> FittedColumn {
        let mut f = DenseFit::default();
        values.iter().for_each(|&v| f.add(v));
        f.finish("x", transform, clip, None).unwrap()
    }

    /// A column constant in training: standard scaling keeps scale 1, so a later 5 is 5 − mean, not
    /// 5·10¹² (what dividing by `max(spread, 1e-12)` gave).
    #[test]
    fn a_constant_column_standardises_with_scale_one() {
        let standard = fit(&[0.0; 10], DenseTransform::Standard, None);
        assert_eq!(standard.apply_dense(5.0), 5.0);
        assert_eq!(standard.apply_dense(0.0), 0.0);
        let shifted = fit(&[2.0; 10], DenseTransform::Standard, None);
        assert_eq!(shifted.apply_dense(5.0), 3.0);
        let minmax = fit(&[2.0; 10], DenseTransform::Minmax, None);
        assert_eq!((minmax.apply_dense(2.0), minmax.apply_dense(5.0), minmax.apply_dense(1.0)), (0.0, 1.0, 0.0));
    }

    /// One extreme value in training: plain min-max flattens the column (0.1 and 0.9 both map to
    /// about 0); `clip_quantiles` keeps it spread; a range wider than f32 does not overflow.
    #[test]
    fn clip_quantiles_keep_an_outlier_from_flattening_the_column() {
        let mut values: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        values.push(1e38);
        let plain = fit(&values, DenseTransform::Minmax, None);
        assert!(plain.apply_dense(0.9) < 1e-30, "flattened: {}", plain.apply_dense(0.9));
        assert!(outlier_dominated(&sorted(&values), 0.0, 1e38).is_some(), "the warning's condition holds");
        let clipped = fit(&values, DenseTransform::Minmax, Some([0.0, 0.99]));
        let FittedColumn::Dense { clip: Some([a, b]), .. } = clipped else { panic!("clipped") };
        assert_eq!(a, 0.0);
        assert!((b as f64 - quantile(&sorted(&values), 0.99)).abs() < 1e-6 && b < 1.0);
        assert!((clipped.apply_dense(0.5) - 0.5 / b).abs() < 1e-6);
        assert_eq!(clipped.apply_dense(1e38), 1.0, "the outlier is clipped");
        let standard = fit(&values, DenseTransform::Standard, Some([0.0, 0.99]));
        let v = standard.apply_dense(0.9);
        assert!(v.is_finite() && v > 1.0 && v < 2.0, "standardised inside the clipped range: {v}");
        let wide = fit(&[-3e38, 0.0, 3e38], DenseTransform::Minmax, None);
        assert_eq!(wide.apply_dense(0.0), 0.5, "a range beyond f32 is computed in f64");
        assert!(outlier_dominated(&sorted(&(0..1000).map(|i| i as f32).collect::<Vec<_>>()), 0.0, 999.0).is_none());
    }

    fn sorted(v: &[f32]) -> Vec<f32> {
        let mut s = v.to_vec();
        s.sort_unstable_by(f32::total_cmp);
        s
    }

    /// Quantiles interpolate as numpy's default; the reservoir keeps the cap and stays seeded.
    #[test]
    fn quantiles_and_the_sample() {
        let s = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!((quantile(&s, 0.0), quantile(&s, 0.5), quantile(&s, 1.0)), (1.0, 2.5, 4.0));
        assert!((quantile(&s, 0.1) - 1.3).abs() < 1e-9);
        let mut a = DenseFit::default();
        let mut b = DenseFit::default();
        for i in 0..(SAMPLE_CAP + 5000) {
            a.add(i as f32);
            b.add(i as f32);
        }
        assert_eq!(a.sample.len(), SAMPLE_CAP);
        assert_eq!(a.sample, b.sample, "the same values give the same sample");
        assert!(a.sample.iter().any(|&v| v >= SAMPLE_CAP as f32), "later values enter the reservoir");
    }
}
