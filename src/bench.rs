//! `dc-search bench train <model>`: what one training step costs against what this machine
//! can do. It measures two fp32 peaks, a large libtorch matrix product (MKL) and a large
//! convolution (oneDNN, faster on AVX-512 machines where MKL runs its AVX2 kernels), then
//! times a dense step, a masked step (as probes run it), a codebook-retraining step, the
//! augmentation alone and evaluation, and prints images/s, s/epoch, GFLOP/s and % of each
//! peak, with the FLOP count per image per layer so the percentages can be checked by hand.

use std::time::Instant;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::compress::gates::{GateConfig, Gated};
use crate::compress::mask::{CompressedSgd, Masked};
use crate::compress::prune::PruneRule;
use crate::config::Config;
use crate::data;
use crate::dense;
use crate::models::{Arch, Op};
use crate::runtime::Runtime;
use crate::train::{self, Sgd};

/// Forward multiply–adds ×2 of each compressible layer for one input, from the arch's ops
/// (stride-1 unpadded convolutions, 2×2 pooling).
pub fn layer_flops(arch: &Arch) -> Result<Vec<(String, f64)>> {
    let (mut c, mut h, mut w) = match arch.input_shape.as_slice() {
        [c, h, w] => (*c, *h, *w),
        [n] => (*n, 1, 1),
        _ => bail!("cannot count FLOPs for input shape {:?}", arch.input_shape),
    };
    let mut out = Vec::new();
    for op in &arch.ops {
        match *op {
            Op::Conv(i) => {
                let l = &arch.layers[i];
                let (k_h, k_w) = (l.weight_shape[2], l.weight_shape[3]);
                let (oh, ow) = (h - k_h + 1, w - k_w + 1);
                let macs = l.weight_numel() * oh * ow;
                out.push((l.name.clone(), 2.0 * macs as f64));
                (c, h, w) = (l.outputs(), oh, ow);
            }
            Op::Linear(i) => {
                let l = &arch.layers[i];
                out.push((l.name.clone(), 2.0 * l.weight_numel() as f64));
                (c, h, w) = (l.outputs(), 1, 1);
            }
            Op::MaxPool2 => (h, w) = (h / 2, w / 2),
            Op::Flatten => (c, h, w) = (c * h * w, 1, 1),
            Op::Relu => {}
            Op::Script => {
                bail!("bench train needs a zoo model (a TorchScript module's FLOPs are not known)")
            }
        }
    }
    Ok(out)
}

/// This machine's fp32 peaks as libtorch reaches them, in GFLOP/s, each the best of 5: a
/// 2048² matrix product (MKL) and a large channels-last 3×3 convolution (oneDNN, which on
/// AVX-512 machines outruns MKL's kernels); returns (matmul, convolution).
pub fn peak_gflops(device: tch::Device) -> (f64, f64) {
    // `f` reads one element of its result, so the time includes the whole computation
    let best_of_5 = |flop: f64, f: &dyn Fn() -> f64| {
        let _ = f();
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let _ = f();
                flop / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0f64, f64::max)
    };
    let opts = (Kind::Float, device);
    let n = 2048i64;
    let (a, b) = (Tensor::randn([n, n], opts), Tensor::randn([n, n], opts));
    let matmul = best_of_5(2.0 * (n * n * n) as f64, &|| {
        a.matmul(&b).double_value(&[0, 0])
    });
    // [16, 256, 32, 32] in, 256 filters of 3×3, no padding: 30×30 outputs
    let (batch, c, side, k) = (16i64, 256i64, 32i64, 3i64);
    let x = Tensor::randn([batch, side, side, c], opts).permute([0, 3, 1, 2]);
    let w = Tensor::randn([c, c, k, k], opts);
    let out = side - k + 1;
    let conv = best_of_5(2.0 * (batch * c * c * k * k * out * out) as f64, &|| {
        x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
            .double_value(&[0, 0, 0, 0])
    });
    (matmul, conv)
}

/// Seconds per call of `f`, over `steps` calls after a short warm-up (on a GPU, until its
/// queued work is done).
fn time(rt: &Runtime, steps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..steps.min(10) {
        f();
    }
    rt.synchronize();
    let t = Instant::now();
    for _ in 0..steps {
        f();
    }
    rt.synchronize();
    t.elapsed().as_secs_f64() / steps as f64
}

pub fn train(cfg: &Config, rt: &Runtime, steps: usize) -> Result<()> {
    rt.apply();
    let data = data::load(&cfg.data)?;
    rt.announce();
    let d = dense::obtain(cfg, &data, rt, false)?;
    let net = d.net.copy();
    let split = data.train.to_device(rt.device);
    let recipe = &cfg.train;
    let batch = recipe.batch_size;
    let flops = layer_flops(&net.arch)?;
    let fwd: f64 = flops.iter().map(|(_, f)| f).sum();
    let (peak, conv) = peak_gflops(rt.device);
    println!(
        "bench train {} on {} ({} threads), batch {batch}, {steps} steps per row",
        cfg.model,
        rt.device_name(),
        tch::get_num_threads()
    );
    println!(
        "fp32 peaks (best of 5): 2048² matmul {peak:.1} GFLOP/s; channels-last 256-channel 3×3 \
         convolution {conv:.1} GFLOP/s (\"peak\" below is the matmul's, \"conv\" the convolution's)"
    );
    println!("forward FLOP per image (2 × multiply–adds):");
    for (name, f) in &flops {
        println!("  {name:<8} {:>12.0}", f);
    }
    println!(
        "  total    {fwd:>12.0}; a training step counts 3× forward (backward ≈ 2× forward): {:.0} per image",
        3.0 * fwd
    );
    let n_train = split.len() as f64;
    let row = |label: &str, secs_per_step: f64, images: f64, flop_per_image: f64| {
        let ips = images / secs_per_step;
        let gflops = ips * flop_per_image / 1e9;
        println!(
            "{label:<28} {:>9.0} img/s {:>7.2} s/epoch {:>7.1} GFLOP/s {:>5.1} % of peak {:>5.1} % of conv {:>8.2} ms/step",
            ips,
            n_train / ips,
            gflops,
            100.0 * gflops / peak,
            100.0 * gflops / conv,
            1e3 * secs_per_step
        );
        secs_per_step
    };
    rt.reseed(5);
    let perm = Tensor::randperm(split.len() as i64, (Kind::Int64, split.images.device()));
    let idx = perm.narrow(0, 0, batch);
    let xb = split.images.index_select(0, &idx);
    let yb = split.labels.index_select(0, &idx);
    let aug = time(rt, steps, || {
        let _ = recipe.augmentation().apply(&xb);
    });
    let dense_net = net.copy();
    let mut sgd = Sgd::new(&dense_net, recipe);
    let dense_step = time(rt, steps, || {
        let x = recipe.augmentation().apply(&xb);
        let _ = train::step(&dense_net, &x, &yb, &mut sgd, 1e-4);
    });
    row("dense step (+augment)", dense_step, batch as f64, 3.0 * fwd);
    // `sparsifier = "l0"`: the gated step (θ, log α and Adam's moments outside the net).
    let gated_net = net.copy();
    let mut gated = Gated::new(&gated_net, &GateConfig::default(), split.len());
    let gated_step = time(rt, steps, || {
        let x = recipe.augmentation().apply(&xb);
        let _ = train::step(&gated_net, &x, &yb, &mut gated, 1e-4);
    });
    row(
        "L0 gated step (+augment)",
        gated_step,
        batch as f64,
        3.0 * fwd,
    );
    println!(
        "{:<28} the gated step takes {:.2}× the dense step's time",
        "",
        gated_step / dense_step
    );
    let masked_net = net.copy();
    let mut state = Masked::dense(&masked_net);
    for (i, r) in [0.8, 0.95, 0.99, 0.85]
        .iter()
        .enumerate()
        .take(masked_net.params.len())
    {
        state.prune(&masked_net, i, PruneRule::SparseRatio(*r));
    }
    let masked_step = {
        let mut upd =
            CompressedSgd::new(&masked_net, recipe, &mut state, cfg.compress.centroid_grad);
        time(rt, steps, || {
            let x = recipe.augmentation().apply(&xb);
            let _ = train::step(&masked_net, &x, &yb, &mut upd, 1e-4);
        })
    };
    row(
        "masked step (+augment)",
        masked_step,
        batch as f64,
        3.0 * fwd,
    );
    // The same masked model through the training loop probes use (random batches from the
    // whole split, the loop's own bookkeeping).
    let loop_recipe = train::Recipe {
        iterations: steps as i64,
        base_lr: 1e-4,
        ..recipe.clone()
    };
    let loop_step = {
        let mut upd =
            CompressedSgd::new(&masked_net, recipe, &mut state, cfg.compress.centroid_grad);
        let t = Instant::now();
        train::train(&masked_net, &split, &loop_recipe, &mut upd, "bench", true)?;
        t.elapsed().as_secs_f64() / steps as f64
    };
    row("masked training loop", loop_step, batch as f64, 3.0 * fwd);
    let cb_net = masked_net.copy();
    let mut cb_state = state.copy();
    for i in 0..cb_net.params.len() {
        cb_state.quantize(&cb_net, i, 5, cfg.compress.kmeans_iters);
    }
    let cb_step = {
        let mut upd =
            CompressedSgd::new(&cb_net, recipe, &mut cb_state, cfg.compress.centroid_grad);
        time(rt, steps, || {
            let x = recipe.augmentation().apply(&xb);
            let _ = train::step(&cb_net, &x, &yb, &mut upd, 1e-4);
        })
    };
    row("codebook step (+augment)", cb_step, batch as f64, 3.0 * fwd);
    println!(
        "{:<28} {:>9.0} img/s {:>7.2} s/epoch {:>31} {:>8.2} ms/step ({:.1} % of a masked step)",
        "augmentation alone",
        batch as f64 / aug,
        n_train * aug / batch as f64,
        "",
        1e3 * aug,
        100.0 * aug / masked_step
    );
    let valid = data.valid.to_device(rt.device);
    let eval_rounds = (steps / 50).max(2);
    let eval = time(rt, eval_rounds, || {
        let _ = train::evaluate(&net, &valid);
    });
    let n_valid = valid.len() as f64;
    let ips = n_valid / eval;
    let gflops = ips * fwd / 1e9;
    println!(
        "{:<28} {:>9.0} img/s {:>7.2} s/pass  {:>7.1} GFLOP/s {:>5.1} % of peak {:>5.1} % of conv ({} images, batch {})",
        "evaluation",
        ips,
        eval,
        gflops,
        100.0 * gflops / peak,
        100.0 * gflops / conv,
        valid.len(),
        train::EVAL_BATCH
    );
    Ok(())
}
