//! Stage 5: weight bits per layer for the chosen ratios. Two ways, chosen by
//! `search.bits_method`:
//!
//! - **sweep** (default): every layer is shared alone at every width, without retraining,
//!   and its validation loss measured (a few seconds, no noise from retraining). A
//!   rate–distortion rule turns one price λ into a width per layer — each layer takes the
//!   width that minimises `Δloss + λ · bytes` — so growing λ gives a chain of ever smaller
//!   candidate vectors. A binary search along that chain, each step one codebook
//!   retraining probe feasible at floor + `bits_margin`, picks the smallest that holds;
//! - **probe**: per layer, largest first, a binary search of the fewest bits that hold,
//!   one codebook retraining probe per step.
//!
//! Either way a probe that misses is tried again with another seed (`bits_retries`: the
//! clustering and codebook retraining differ, so it is another model), and the shared
//! model a feasible probe measured at the chosen widths comes back with them: the file is
//! made from that model, so the accuracy the probe saw is the file's.

use anyhow::Result;

use super::config::BitsMethod;
use super::estimate;
use super::oracle::Oracle;
use super::parallel;
use super::prober::{Prober, Widths};

/// Runs the configured bits search from the final model; returns the widths. It stops
/// probing at `until` seconds into the run (this candidate's share of the stage) or at the
/// stage's share of the budget, whichever comes first; the first candidate (`first`) gets
/// its first [`MIN_PROBES`] probes whatever the clock says: a file at the widest widths is
/// far worse than a late one.
pub fn run<O: Oracle>(
    p: &mut Prober<O>,
    ratios: &[f64],
    model: &O::Model,
    first: bool,
    until: f64,
) -> Result<Widths<O::Model>> {
    let limit = Limit { first, until };
    match p.cfg.bits_method {
        BitsMethod::Sweep => sweep(p, ratios, model, limit),
        BitsMethod::Probe => per_layer(p, ratios, model, limit),
    }
}

/// When a candidate's bits search stops probing.
#[derive(Clone, Copy)]
struct Limit {
    first: bool,
    /// Seconds into the run.
    until: f64,
}

/// Probes the first candidate makes whatever the clock says.
pub const MIN_PROBES: usize = 4;

fn out_of_time<O: Oracle>(p: &Prober<O>, limit: Limit, probes: usize) -> bool {
    if limit.first && probes < MIN_PROBES {
        return false;
    }
    if p.past(p.cfg.bits_share) {
        p.say("bits: time budget spent; keeping the widths found so far");
        return true;
    }
    if p.elapsed() > limit.until {
        p.say(
            "bits: this candidate's share of the stage is spent; keeping the widths found so far",
        );
        return true;
    }
    false
}

fn sweep<O: Oracle>(
    p: &mut Prober<O>,
    ratios: &[f64],
    model: &O::Model,
    limit: Limit,
) -> Result<Widths<O::Model>> {
    let sc = p.cfg;
    let widths: Vec<u8> = (sc.bits_min..=sc.bits_max).rev().collect();
    let base = p.oracle.evaluate(model)?;
    p.count(base.seconds);
    // loss[l][i]: validation loss with layer l alone shared at widths[i].
    let mut loss = Vec::new();
    for l in 0..ratios.len() {
        let mut row = Vec::new();
        for &b in &widths {
            let m = p.oracle.quantize_one(model, l, b)?;
            p.count(m.seconds);
            // Rounded to 1e-5: a last-digit difference between two runs of the same model
            // (libtorch's kernels are not bit-reproducible across processes) must not change
            // the chain, or a resumed search would ask for other widths than it journaled.
            row.push(((m.loss - base.loss).max(0.0) * 1e5).round() / 1e5);
        }
        loss.push(row);
    }
    let bias_bytes = p.bias_bytes();
    let bytes: Vec<Vec<f64>> = ratios
        .iter()
        .zip(&p.layer_sizes)
        .map(|(r, (w, o))| {
            widths
                .iter()
                .map(|&b| estimate::layer_bytes(*w, *o, 1.0 - r, b, bias_bytes))
                .collect()
        })
        .collect();
    let chain = rate_distortion_chain(&loss, &bytes);
    let vectors: Vec<Vec<u8>> = chain
        .iter()
        .map(|c| c.iter().map(|&i| widths[i]).collect())
        .collect();
    p.say(&format!(
        "bits: solo sharing swept ({} widths × {} layers); {} candidate vectors from {:?} to {:?}",
        widths.len(),
        ratios.len(),
        vectors.len(),
        vectors.first().cloned().unwrap_or_default(),
        vectors.last().cloned().unwrap_or_default()
    ));
    // Binary search along the chain: `good` holds (the widest is assumed to: the file
    // stage checks and widens), `bad` does not.
    let (mut good, mut bad) = (0usize, vectors.len());
    let mut shared = None;
    let mut probes = 0;
    while bad - good > 1 && probes < sc.bits_probes {
        if out_of_time(p, limit, probes) {
            break;
        }
        let q = p.cfg.workers.min(sc.bits_probes - probes);
        if q > 1 {
            return chain_in_batches(p, model, ratios, &vectors, limit, probes);
        }
        // The first probe goes a third of the way: most chains end in widths that fail.
        let mid = if probes == 0 {
            good + (bad - good) / 3
        } else {
            (good + bad) / 2
        }
        .max(good + 1);
        let (acc, m) = probe_with_retries(p, model, ratios, &vectors[mid], &mut probes)?;
        if acc >= p.at.bits {
            good = mid;
            shared = m;
        } else {
            bad = mid;
        }
    }
    Ok(Widths {
        bits: vectors
            .get(good)
            .cloned()
            .unwrap_or_else(|| vec![sc.bits_max; ratios.len()]),
        shared,
    })
}

/// The sweep's search along the chain with `workers` probes a round ([`parallel::Chain`]):
/// a miss that bounds the search is probed again beside points spread over the open
/// stretch, and the narrowest feasible probe's widths and model are kept.
fn chain_in_batches<O: Oracle>(
    p: &mut Prober<O>,
    model: &O::Model,
    ratios: &[f64],
    vectors: &[Vec<u8>],
    limit: Limit,
    mut probes: usize,
) -> Result<Widths<O::Model>> {
    let sc = p.cfg;
    let mut chain = parallel::Chain::new(vectors.len());
    let mut shared = None;
    while probes < sc.bits_probes && !out_of_time(p, limit, probes) {
        let points = chain.next(p.cfg.workers.min(sc.bits_probes - probes), sc.bits_retries);
        if points.is_empty() {
            break;
        }
        let asks: Vec<Vec<u8>> = points.iter().map(|&i| vectors[i].clone()).collect();
        let answers = p.probe_bits_batch(model, ratios, &asks, p.plan.bits_epochs)?;
        probes += asks.len();
        for (&i, a) in points.iter().zip(answers) {
            let Some((acc, m)) = a else { continue };
            let before = chain.good;
            chain.answer(i, acc >= p.at.bits);
            if chain.good != before {
                shared = m;
            }
        }
    }
    Ok(Widths {
        bits: vectors
            .get(chain.good)
            .cloned()
            .unwrap_or_else(|| vec![sc.bits_max; ratios.len()]),
        shared,
    })
}

/// A bits probe, tried again up to `bits_retries` times (each another seed, so another
/// shared model) while it misses and `bits_probes` allows; counts into `probes`.
fn probe_with_retries<O: Oracle>(
    p: &mut Prober<O>,
    model: &O::Model,
    ratios: &[f64],
    bits: &[u8],
    probes: &mut usize,
) -> Result<(f64, Option<O::Model>)> {
    let sc = p.cfg;
    let mut tries = 0;
    loop {
        let (acc, m) = p.probe_bits(model, ratios, bits, p.plan.bits_epochs)?;
        *probes += 1;
        tries += 1;
        if acc >= p.at.bits || tries > sc.bits_retries || *probes >= sc.bits_probes {
            return Ok((acc, m));
        }
        p.say("  bits: missed; another seed for the same widths");
    }
}

/// Candidate width vectors (indices into each layer's widths, widest first) from the
/// rate–distortion rule: for a price λ each layer takes the width minimising
/// `loss[l][i] + λ · bytes[l][i]`; λ sweeps from 0 (widest) up a geometric grid until
/// every layer is at its narrowest. Consecutive duplicates are dropped; bytes fall along
/// the chain.
pub fn rate_distortion_chain(loss: &[Vec<f64>], bytes: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let pick = |lambda: f64| -> Vec<usize> {
        loss.iter()
            .zip(bytes)
            .map(|(ls, bs)| {
                (0..ls.len())
                    .min_by(|&a, &b| {
                        let ca = ls[a] + lambda * bs[a];
                        let cb = ls[b] + lambda * bs[b];
                        // ties: the wider (lower index) first at λ = 0, else the smaller
                        ca.total_cmp(&cb)
                            .then(if lambda == 0.0 { a.cmp(&b) } else { b.cmp(&a) })
                    })
                    .unwrap_or(0)
            })
            .collect()
    };
    let widest: Vec<usize> = loss.iter().map(|_| 0).collect();
    let mut chain = vec![widest];
    let mut lambda = 1e-9;
    while lambda < 1e3 {
        let v = pick(lambda);
        let total = |v: &[usize]| -> f64 { v.iter().zip(bytes).map(|(&i, b)| b[i]).sum() };
        let last = chain.last().expect("chain starts non-empty");
        if v != *last && total(&v) < total(last) {
            chain.push(v);
        }
        lambda *= 1.25;
    }
    chain
}

fn per_layer<O: Oracle>(
    p: &mut Prober<O>,
    ratios: &[f64],
    model: &O::Model,
    limit: Limit,
) -> Result<Widths<O::Model>> {
    let sc = p.cfg;
    let mut bits = vec![sc.bits_max; ratios.len()];
    // The last feasible probe's widths and model: the final widths are its widths.
    let mut last: Option<(Vec<u8>, Option<O::Model>)> = None;
    let mut made = 0;
    let done = |bits: Vec<u8>, last: Option<(Vec<u8>, Option<O::Model>)>| {
        let shared = last.and_then(|(b, m)| if b == bits { m } else { None });
        Ok(Widths { bits, shared })
    };
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&a, &b| {
        let na = (1.0 - ratios[a]) * p.layer_sizes[a].0 as f64;
        let nb = (1.0 - ratios[b]) * p.layer_sizes[b].0 as f64;
        nb.total_cmp(&na)
    });
    for &layer in &order {
        let (mut lo, mut hi) = (sc.bits_min, bits[layer]);
        while lo < hi {
            if out_of_time(p, limit, made) {
                return done(bits, last);
            }
            let mid = (lo + hi) / 2;
            let mut trial_bits = bits.clone();
            trial_bits[layer] = mid;
            let mut probes = 0;
            let (acc, m) = probe_with_retries(p, model, ratios, &trial_bits, &mut probes)?;
            made += probes;
            if acc >= p.at.bits {
                hi = mid;
                last = Some((trial_bits, m));
            } else {
                lo = mid + 1;
            }
        }
        bits[layer] = hi;
    }
    done(bits, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_starts_widest_and_trades_cheap_loss_first() {
        // three widths, index 0 the widest
        // layer 0: big (bytes fall a lot per step), loss rises slowly
        // layer 1: tiny, loss rises fast
        let loss = vec![vec![0.0, 0.001, 0.01], vec![0.0, 0.05, 0.5]];
        let bytes = vec![vec![3000.0, 2000.0, 1000.0], vec![30.0, 20.0, 10.0]];
        let chain = rate_distortion_chain(&loss, &bytes);
        assert_eq!(chain[0], vec![0, 0]);
        // the big layer is narrowed before the tiny one
        assert_eq!(chain[1], vec![1, 0]);
        assert_eq!(chain[2], vec![2, 0]);
        assert_eq!(chain.last().unwrap(), &vec![2, 2]);
        // bytes fall strictly along the chain
        let total = |v: &Vec<usize>| v.iter().zip(&bytes).map(|(&i, b)| b[i]).sum::<f64>();
        assert!(chain.windows(2).all(|w| total(&w[1]) < total(&w[0])));
    }
}
