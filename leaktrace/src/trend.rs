//! How a count moves over time: the one slope both the aggregator and the waiter analysis use.

/// Least-squares slope, per second, of `(monotonic ns, count)` samples in time order; 0.0 with
/// fewer than two samples or no time between them.
pub fn slope_per_s<'a>(samples: impl Iterator<Item = &'a (u64, u64)> + Clone) -> f64 {
    let mut first = samples.clone();
    let Some(&(t0, _)) = first.next() else {
        return 0.0;
    };
    let points = samples.map(move |&(t, y)| (t.saturating_sub(t0) as f64 / 1e9, y as f64));
    let (n, sum_x, sum_y) = points.clone().fold((0.0, 0.0, 0.0), |(n, sx, sy), (x, y)| {
        (n + 1.0, sx + x, sy + y)
    });
    if n < 2.0 {
        return 0.0;
    }
    let (mean_x, mean_y) = (sum_x / n, sum_y / n);
    let (sxx, sxy) = points.fold((0.0, 0.0), |(sxx, sxy), (x, y)| {
        let dx = x - mean_x;
        (sxx + dx * dx, sxy + dx * (y - mean_y))
    });
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn steady_growth_has_its_rate_and_flat_has_none() {
        let growing: Vec<(u64, u64)> = (0..5).map(|k| (k * SEC, 3 * k)).collect();
        assert_eq!(slope_per_s(growing.iter()), 3.0);
        let flat: Vec<(u64, u64)> = (0..5).map(|k| (k * SEC, 7)).collect();
        assert_eq!(slope_per_s(flat.iter()), 0.0);
    }

    #[test]
    fn too_few_samples_or_no_time_is_no_slope() {
        assert_eq!(slope_per_s([].iter()), 0.0);
        assert_eq!(slope_per_s([(SEC, 4)].iter()), 0.0);
        assert_eq!(slope_per_s([(SEC, 4), (SEC, 9)].iter()), 0.0);
    }
}
