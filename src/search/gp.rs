//! A small Gaussian-process regressor and the acquisition the search uses: pure
//! functions on slices (Cholesky on at most a few dozen points).
//!
//! Kernel: squared exponential with one length scale, plus observation noise; constant
//! mean (the data's mean). Hyperparameters are chosen by maximising the log marginal
//! likelihood over a small grid, which is robust for the handful of points a search has.
//!
//! ## Reference
//! C. E. Rasmussen, C. K. I. Williams, "Gaussian Processes for Machine Learning", 2006,
//! Algorithm 2.1; M. Gardner et al., "Bayesian Optimization with Inequality Constraints",
//! ICML 2014 (improvement × probability of feasibility).

/// A fitted GP.
#[derive(Debug, Clone)]
pub struct Gp {
    xs: Vec<Vec<f64>>,
    mean: f64,
    signal: f64,
    pub length: f64,
    pub noise: f64,
    /// Lower-triangular Cholesky factor of K + noise·I, row-major n×n.
    chol: Vec<f64>,
    /// (K + noise·I)⁻¹ (y − mean).
    alpha: Vec<f64>,
    pub log_likelihood: f64,
}

fn sqdist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Cholesky factor of a symmetric positive-definite n×n matrix; `None` if not SPD.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i * n + j] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves L·x = b (forward) for lower-triangular `l`.
fn forward(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * x[k]).sum();
        x[i] = (b[i] - s) / l[i * n + i];
    }
    x
}

/// Solves Lᵀ·x = b (backward) for lower-triangular `l`.
fn backward(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (b[i] - s) / l[i * n + i];
    }
    x
}

impl Gp {
    /// Fits with the given hyperparameters; `None` if the kernel matrix is singular.
    pub fn fit_with(xs: &[Vec<f64>], ys: &[f64], length: f64, noise: f64) -> Option<Gp> {
        let n = xs.len();
        if n == 0 || n != ys.len() {
            return None;
        }
        let mean = ys.iter().sum::<f64>() / n as f64;
        let var = ys.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n as f64;
        let signal = var.max(1e-8);
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] = signal * (-sqdist(&xs[i], &xs[j]) / (2.0 * length * length)).exp();
            }
            k[i * n + i] += noise + 1e-10;
        }
        let chol = cholesky(&k, n)?;
        let centred: Vec<f64> = ys.iter().map(|y| y - mean).collect();
        let alpha = backward(&chol, n, &forward(&chol, n, &centred));
        let fit: f64 = centred.iter().zip(&alpha).map(|(y, a)| y * a).sum();
        let logdet: f64 = (0..n).map(|i| chol[i * n + i].ln()).sum();
        let log_likelihood =
            -0.5 * fit - logdet - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        Some(Gp {
            xs: xs.to_vec(),
            mean,
            signal,
            length,
            noise,
            chol,
            alpha,
            log_likelihood,
        })
    }

    /// Fits, choosing length scale and noise (relative to the data's variance) by maximum
    /// marginal likelihood over a grid.
    pub fn fit(xs: &[Vec<f64>], ys: &[f64]) -> Option<Gp> {
        let n = ys.len().max(1) as f64;
        let mean = ys.iter().sum::<f64>() / n;
        let var = (ys.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n).max(1e-8);
        let mut best: Option<Gp> = None;
        for &length in &[0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0] {
            for &rel_noise in &[1e-4, 1e-3, 1e-2, 5e-2, 0.2] {
                if let Some(g) = Gp::fit_with(xs, ys, length, rel_noise * var) {
                    if best
                        .as_ref()
                        .is_none_or(|b| g.log_likelihood > b.log_likelihood)
                    {
                        best = Some(g);
                    }
                }
            }
        }
        best
    }

    /// Posterior mean and standard deviation at `x` (the latent function, without noise).
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let n = self.xs.len();
        let kx: Vec<f64> = self
            .xs
            .iter()
            .map(|xi| self.signal * (-sqdist(xi, x) / (2.0 * self.length * self.length)).exp())
            .collect();
        let mu = self.mean + kx.iter().zip(&self.alpha).map(|(k, a)| k * a).sum::<f64>();
        let v = forward(&self.chol, n, &kx);
        let var = (self.signal - v.iter().map(|x| x * x).sum::<f64>()).max(0.0);
        (mu, var.sqrt())
    }
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 on erf, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Probability that the GP's value at `x` is at least `target`.
pub fn prob_at_least(gp: &Gp, x: &[f64], target: f64) -> f64 {
    let (mu, sd) = gp.predict(x);
    if sd < 1e-12 {
        return if mu >= target { 1.0 } else { 0.0 };
    }
    normal_cdf((mu - target) / sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_of_a_hand_matrix() {
        // [[4, 2], [2, 3]] = L Lᵀ with L = [[2, 0], [1, √2]]
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        assert!(
            (l[0] - 2.0).abs() < 1e-12
                && (l[2] - 1.0).abs() < 1e-12
                && (l[3] - 2f64.sqrt()).abs() < 1e-12
        );
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        let x = backward(&l, 2, &forward(&l, 2, &[8.0, 7.0]));
        // [[4,2],[2,3]] x = [8,7] → x = [1.25, 1.5]
        assert!((x[0] - 1.25).abs() < 1e-12 && (x[1] - 1.5).abs() < 1e-12);
    }

    #[test]
    fn interpolates_and_is_unsure_far_away() {
        let xs: Vec<Vec<f64>> = (0..8).map(|i| vec![i as f64 / 7.0]).collect();
        let ys: Vec<f64> = xs.iter().map(|x| (3.0 * x[0]).sin()).collect();
        let gp = Gp::fit(&xs, &ys).unwrap();
        let (m, s) = gp.predict(&[0.5]);
        assert!((m - 1.5f64.sin()).abs() < 0.02, "{m}");
        assert!(s < 0.05);
        let (_, far) = gp.predict(&[5.0]);
        assert!(far > 5.0 * s);
    }

    #[test]
    fn cdf_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.0) - 0.158655).abs() < 1e-5);
    }
}
