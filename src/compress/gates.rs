//! L0 gates (Louizos, Welling & Kingma, ICLR 2018): a learned choice of *which* weights a
//! layer keeps, as an alternative to keeping the largest ones. Every weight of a named
//! layer gets a hard-concrete gate z ∈ [0, 1] with its own log α; training minimises the
//! loss plus λ / N × the expected number of open gates (N training images, so λ is what a
//! kept weight must be worth to the whole training set's loss, in nats). After training
//! each gate takes its deterministic value, the weights become θ ⊙ z, and a gate at 0 is
//! an exact zero: the net leaves as an ordinary sparse net, which the search then prunes
//! by magnitude, shares and codes as any other.
//!
//! Training runs through [`crate::train::train_range`] with an [`Update`] that holds θ
//! and log α outside the net and writes θ ⊙ z into the net's weights before each forward
//! pass, so any model (a zoo net or a TorchScript module) trains gated without a gated
//! forward of its own: the net's weight receives g = ∂L/∂(θ ⊙ z), from which
//! ∂L/∂θ = g ⊙ z and ∂L/∂log α = ∂(g · θ ⊙ z)/∂log α follow by the chain rule. θ, log α and
//! the biases step with Adam; both learning rates anneal linearly to zero.
//!
//! The scalar functions ([`test_gate`], [`open_probability`], [`sample_gate`]) are the
//! definitions, unit-tested; the tensor code computes the same expressions.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::check::need;
use crate::data::Split;
use crate::models::Net;
use crate::train::{self, LrPolicy, Recipe, Update};

/// The hard-concrete distribution's temperature β and stretch interval (γ, ζ) (the
/// paper's values).
pub const BETA: f64 = 2.0 / 3.0;
pub const GAMMA: f64 = -0.1;
pub const ZETA: f64 = 1.1;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A gate's deterministic value after training: the stretched sigmoid of log α, clipped
/// to [0, 1]. Exactly 0 for log α ≤ ln(−γ/ζ) ≈ −2.40.
pub fn test_gate(log_a: f64) -> f64 {
    (sigmoid(log_a) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
}

/// The probability that a sampled gate is open (non-zero): the expected L0 norm's term.
pub fn open_probability(log_a: f64) -> f64 {
    sigmoid(log_a - BETA * (-GAMMA / ZETA).ln())
}

/// A hard-concrete sample from uniform noise `u` ∈ (0, 1).
pub fn sample_gate(log_a: f64, u: f64) -> f64 {
    let s = sigmoid(((u / (1.0 - u)).ln() + log_a) / BETA);
    (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
}

/// How the gates train (`[search]`'s `l0_*` settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateConfig {
    /// Epochs of gated training from the dense model.
    pub epochs: f64,
    /// The price of an open gate, in nats of the whole training set's loss.
    pub lambda: f64,
    /// Adam's learning rate of the weights and biases (annealed linearly to 0).
    pub lr: f64,
    /// Adam's learning rate of log α (annealed with it).
    pub gate_lr: f64,
    /// log α of every gate at the start (2: open with probability 0.97).
    pub init_log_a: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            epochs: 20.0,
            lambda: 5.0,
            lr: 3e-4,
            gate_lr: 0.01,
            init_log_a: 2.0,
        }
    }
}

impl GateConfig {
    pub fn check(&self) -> Result<()> {
        let c = self;
        need(
            c.epochs > 0.0 && c.epochs <= 1e4,
            "search.l0_epochs",
            c.epochs,
            "(0, 10000] epochs",
        )?;
        need(
            c.lambda > 0.0 && c.lambda <= 1e6,
            "search.l0_lambda",
            c.lambda,
            "(0, 1000000] nats per kept weight",
        )?;
        need(
            c.lr > 0.0 && c.lr <= 1.0,
            "search.l0_lr",
            c.lr,
            "(0, 1] (Adam's learning rate)",
        )?;
        need(
            c.gate_lr > 0.0 && c.gate_lr <= 10.0,
            "search.l0_gate_lr",
            c.gate_lr,
            "(0, 10] (Adam's learning rate of log α)",
        )?;
        need(
            c.init_log_a.is_finite() && c.init_log_a.abs() <= 20.0,
            "search.l0_init_log_a",
            c.init_log_a,
            "[-20, 20]",
        )
    }
}

/// What gated training gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateStats {
    /// Weights kept (gate > 0) per layer, and each layer's weights.
    pub kept: Vec<usize>,
    pub weights: Vec<usize>,
    /// The price of a kept weight it trained with.
    pub lambda: f64,
    /// The gated model's validation accuracy.
    pub valid_accuracy: f64,
    pub epochs: f64,
    /// Epochs of retraining with the gated model's zeros fixed, when it missed the floor
    /// without (its accuracy is then the retrained model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_retraining: Option<f64>,
    /// Seconds of the gated training and of the mask's retraining.
    pub seconds: f64,
    pub seconds_per_epoch: f64,
}

impl GateStats {
    /// Weights kept in all.
    pub fn kept_total(&self) -> usize {
        self.kept.iter().sum()
    }

    /// The fraction of all weights kept.
    pub fn kept_fraction(&self) -> f64 {
        self.kept_total() as f64 / self.weights.iter().sum::<usize>().max(1) as f64
    }

    /// One line: kept per layer, in all, accuracy and time.
    pub fn describe(&self, names: &[String]) -> String {
        let per: Vec<String> = names
            .iter()
            .zip(self.kept.iter().zip(&self.weights))
            .map(|(n, (&k, &w))| format!("{n} {:.2} %", 100.0 * k as f64 / w.max(1) as f64))
            .collect();
        format!(
            "L0 gates at λ {}: kept {} ({:.2} % of the weights, {}), validation {:.4}, {:.1} epochs in {:.0} s",
            self.lambda,
            self.kept_total(),
            100.0 * self.kept_fraction(),
            per.join(", "),
            self.valid_accuracy,
            self.epochs,
            self.seconds
        ) + &self
            .mask_retraining
            .map_or(String::new(), |e| format!(" (its zeros fixed, retrained {e} epochs)"))
    }
}

/// One Adam moment pair.
struct Moments {
    m: Tensor,
    v: Tensor,
}

impl Moments {
    fn like(t: &Tensor) -> Moments {
        Moments {
            m: t.zeros_like(),
            v: t.zeros_like(),
        }
    }

    /// Adam's step of `w` (in place, without autograd) by gradient `g` at step `t`, in
    /// few passes over the memory: the step is mostly elementwise work on every weight.
    fn step(&mut self, w: &Tensor, g: &Tensor, lr: f64, t: i32) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        let _ = self.m.lerp_(g, 1.0 - B1);
        let _ = self.v.lerp_(&(g * g), 1.0 - B2);
        let c1 = 1.0 - B1.powi(t);
        let c2 = 1.0 - B2.powi(t);
        // m̂ / (√v̂ + ε) with both bias corrections moved onto scalars.
        let mut denom = self.v.sqrt();
        let _ = denom.g_add_scalar_(EPS * c2.sqrt());
        let _ = w
            .shallow_clone()
            .addcdiv_(&(&self.m * (-lr * c2.sqrt() / c1)), &denom);
    }
}

/// The gated training's state: θ and log α per layer (outside the net), the gates sampled
/// for the coming forward pass, Adam's moments. An [`Update`] for
/// [`crate::train::train`]; `bench train` times its step.
pub struct Gated {
    theta: Vec<Tensor>,
    log_a: Vec<Tensor>,
    z: Vec<Tensor>,
    theta_m: Vec<Moments>,
    log_a_m: Vec<Moments>,
    bias_m: Vec<Moments>,
    /// λ / N: the penalty per open gate in units of the per-image loss.
    penalty: f64,
    gate_lr_ratio: f64,
    t: i32,
}

impl Gated {
    /// Gates for every layer of `net` at `cfg.init_log_a`, the first sample written into
    /// the net; `n_train` images make λ a price per image.
    pub fn new(net: &Net, cfg: &GateConfig, n_train: usize) -> Gated {
        let theta: Vec<Tensor> = net
            .params
            .iter()
            .map(|p| p.weight.detach().copy())
            .collect();
        let log_a: Vec<Tensor> = theta.iter().map(|t| t.full_like(cfg.init_log_a)).collect();
        let mut g = Gated {
            theta_m: theta.iter().map(Moments::like).collect(),
            log_a_m: log_a.iter().map(Moments::like).collect(),
            bias_m: net.params.iter().map(|p| Moments::like(&p.bias)).collect(),
            z: Vec::new(),
            theta,
            log_a,
            penalty: cfg.lambda / n_train.max(1) as f64,
            gate_lr_ratio: cfg.gate_lr / cfg.lr,
            t: 0,
        };
        g.sample(net);
        g
    }

    /// Draws the next gates and writes θ ⊙ z into the net.
    fn sample(&mut self, net: &Net) {
        tch::no_grad(|| {
            self.z = self
                .log_a
                .iter()
                .map(|la| {
                    let mut s = (la.rand_like().logit(1e-6) + la) / BETA;
                    let _ = s
                        .sigmoid_()
                        .g_mul_scalar_(ZETA - GAMMA)
                        .g_add_scalar_(GAMMA)
                        .clamp_(0.0, 1.0);
                    s
                })
                .collect();
            for ((p, th), z) in net.params.iter().zip(&self.theta).zip(&self.z) {
                let _ = th.mul_out(&p.weight, z);
            }
        });
    }

    /// Writes θ ⊙ (each gate's deterministic value) into the net.
    fn finish(&self, net: &Net) {
        tch::no_grad(|| {
            for ((p, th), la) in net.params.iter().zip(&self.theta).zip(&self.log_a) {
                p.weight.shallow_clone().copy_(&(th * test_gates(la)));
            }
        });
    }
}

/// [`test_gate`] of every element.
fn test_gates(log_a: &Tensor) -> Tensor {
    (log_a.detach().sigmoid() * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
}

/// ∂L/∂log α of a layer: through its sampled gates `z` (their stretched sigmoid's slope,
/// zero where the sample was clipped to 0 or 1) from the net weight's gradient `g`, plus
/// `penalty` × the slope of the expected L0 norm's term. The chain rule written out, so
/// the step needs no autograd graph; the unit test holds it to autograd's.
fn log_a_grad(
    g: Option<&Tensor>,
    theta: &Tensor,
    z: &Tensor,
    log_a: &Tensor,
    penalty: f64,
) -> Tensor {
    // P(open) = σ(log α − β ln(−γ/ζ)); its slope p (1 − p).
    let mut p = (log_a - BETA * (-GAMMA / ZETA).ln()).sigmoid();
    let mut grad = (p.ones_like() - &p) * &p * penalty;
    if let Some(g) = g {
        // z = clip(s (ζ − γ) + γ) with s = σ((logit u + log α) / β): where unclipped,
        // dz/dlog α = s (1 − s) (ζ − γ) / β = (z − γ) (ζ − z) / ((ζ − γ) β).
        let inside = z.gt(0.0).logical_and_(&z.lt(1.0));
        p.copy_(z);
        let slope = (p.g_sub_scalar_(GAMMA) * (z.neg() + ZETA)) * inside;
        let _ = grad.addcmul_(&(g * theta * (1.0 / ((ZETA - GAMMA) * BETA))), &slope);
    }
    grad
}

impl Update for Gated {
    fn step(&mut self, net: &Net, lr: f64) {
        self.t += 1;
        let gate_lr = lr * self.gate_lr_ratio;
        let t = self.t;
        tch::no_grad(|| {
            for (i, p) in net.params.iter().enumerate() {
                let grad = p.weight.grad();
                let grad = grad.defined().then_some(grad);
                let ga = log_a_grad(
                    grad.as_ref(),
                    &self.theta[i],
                    &self.z[i],
                    &self.log_a[i],
                    self.penalty,
                );
                if let Some(g) = &grad {
                    self.theta_m[i].step(&self.theta[i], &(g * &self.z[i]), lr, t);
                }
                self.log_a_m[i].step(&self.log_a[i], &ga, gate_lr, t);
                let gb = p.bias.grad();
                if gb.defined() {
                    self.bias_m[i].step(&p.bias, &gb, lr, t);
                }
            }
        });
        self.sample(net);
    }
}

/// Trains `net` gated for `cfg.epochs` on `train` (batches and augmentation of `recipe`),
/// then leaves it at θ ⊙ (the gates' deterministic values), its closed gates exact zeros,
/// and scores it on `valid`. Seed torch's generator first: the batch order and the gates'
/// noise come from it.
pub fn train_gates(
    net: &Net,
    train_split: &Split,
    valid: &Split,
    recipe: &Recipe,
    cfg: &GateConfig,
    quiet: bool,
) -> Result<GateStats> {
    let n = train_split.len();
    let iterations = ((cfg.epochs * n as f64) / recipe.batch_size as f64)
        .ceil()
        .max(1.0) as i64;
    let schedule = Recipe {
        base_lr: cfg.lr,
        lr_policy: LrPolicy::Poly,
        power: 1.0,
        iterations,
        ..recipe.clone()
    };
    let mut gated = Gated::new(net, cfg, n);
    let stats = train::train(net, train_split, &schedule, &mut gated, "L0 gates", quiet);
    gated.finish(net);
    let stats = stats?;
    let kept = net
        .params
        .iter()
        .map(|p| p.weight.ne(0.0).sum(Kind::Int64).int64_value(&[]) as usize)
        .collect();
    let weights = net.params.iter().map(|p| p.weight.numel()).collect();
    Ok(GateStats {
        kept,
        weights,
        lambda: cfg.lambda,
        valid_accuracy: train::evaluate(net, valid).accuracy,
        epochs: stats.epochs,
        mask_retraining: None,
        seconds: stats.seconds,
        seconds_per_epoch: stats.seconds_per_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_closes_exactly_below_its_threshold() {
        let threshold = (-GAMMA / ZETA).ln();
        assert_eq!(test_gate(threshold - 1e-9), 0.0);
        assert!(test_gate(threshold + 1e-3) > 0.0);
        assert_eq!(test_gate(10.0), 1.0);
        assert!((test_gate(0.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn samples_are_open_as_often_as_the_l0_term_says() {
        // The fraction of non-zero samples over a fine grid of u is P(open).
        for log_a in [-3.0, -1.0, 0.0, 1.5, 4.0] {
            let n = 200_000;
            let open = (0..n)
                .filter(|&k| sample_gate(log_a, (k as f64 + 0.5) / n as f64) > 0.0)
                .count();
            let p = open as f64 / n as f64;
            assert!(
                (p - open_probability(log_a)).abs() < 1e-4,
                "log α {log_a}: {p} against {}",
                open_probability(log_a)
            );
        }
    }

    #[test]
    fn the_tensor_gates_are_the_scalar_ones() {
        let xs = [-5.0f32, -2.5, -2.3, 0.0, 0.7, 3.0];
        let t = Tensor::from_slice(&xs);
        let got = crate::models::tensor_to_vec(&test_gates(&t));
        for (x, g) in xs.iter().zip(got) {
            assert!((f64::from(g) - test_gate(f64::from(*x))).abs() < 1e-6);
        }
    }

    #[test]
    fn the_log_alpha_gradient_is_autograds() {
        tch::manual_seed(3);
        let opts = (Kind::Float, tch::Device::Cpu);
        let n = 4000;
        let log_a = Tensor::randn([n], opts) * 3.0;
        let theta = Tensor::randn([n], opts);
        let g = Tensor::randn([n], opts);
        let u = Tensor::rand([n], opts);
        let penalty = 0.3;
        let la = log_a.copy().set_requires_grad(true);
        let z = (((u.logit(1e-6) + &la) / BETA).sigmoid() * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0);
        let surrogate = (&g * &theta * &z).sum(Kind::Float)
            + (&la - BETA * (-GAMMA / ZETA).ln())
                .sigmoid()
                .sum(Kind::Float)
                * penalty;
        surrogate.backward();
        let want = la.grad();
        let z = z.detach();
        // Some samples clipped at each end, some inside.
        assert!(z.eq(0.0).any().int64_value(&[]) == 1 && z.eq(1.0).any().int64_value(&[]) == 1);
        let got = log_a_grad(Some(&g), &theta, &z, &log_a, penalty);
        let err = (&got - &want).abs().max().double_value(&[]);
        assert!(err < 1e-5, "largest difference {err}");
        let penalty_only = log_a_grad(None, &theta, &z, &log_a, penalty);
        let p = (&log_a - BETA * (-GAMMA / ZETA).ln()).sigmoid();
        let want = (&p * (p.ones_like() - &p)) * penalty;
        assert!((penalty_only - want).abs().max().double_value(&[]) < 1e-7);
    }

    #[test]
    fn the_settings_are_range_checked_with_their_key() {
        let bad = GateConfig {
            lambda: -1.0,
            ..GateConfig::default()
        };
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("search.l0_lambda"), "{e}");
        GateConfig::default().check().unwrap();
    }
}
