//! `op_bench`: the CPU ops a Hallo2 pass spends its time in, one by one, at shapes the model runs
//! (3×3 convolutions of the UNets and the VAE decoder, a linear layer's matmul, an attention's
//! batched matmuls, group norm, the attention softmax), so `scripts/bench-official.sh` can say which op makes a
//! stage slower than PyTorch (`scripts/bench_ops.py` times the same ops there). Convolutions are
//! timed through the model's own [`model::nn::Conv2d`] and, as `candle_conv…`, through candle's
//! conv2d. Prints one JSON object: op name → median seconds of `--repeats` runs.

use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::Conv2dConfig;
use clap::Parser;
use model::nn::Conv2d;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

type Op = Box<dyn Fn() -> Result<Tensor>>;

/// The 3×3 convolutions (batch, channels, side): the same list is in scripts/bench_ops.py.
const CONVS: [(&str, usize, usize, usize); 3] = [
    ("unet_2x320x32x32", 2, 320, 32),
    ("vae_1x512x32x32", 1, 512, 32),
    ("vae_1x128x128x128", 1, 128, 128),
];

fn ops(dev: &Device) -> Result<Vec<(String, Op)>> {
    let mut ops: Vec<(String, Op)> = Vec::new();
    for (name, b, c, side) in CONVS {
        let x = Tensor::randn(0f32, 1.0, (b, c, side, side), dev)?;
        let w = Tensor::randn(0f32, 0.02, (c, c, 3, 3), dev)?;
        let config = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let ours = Conv2d::new(w.clone(), None, config);
        let x2 = x.clone();
        ops.push((
            format!("conv3x3_{name}"),
            Box::new(move || ours.forward(&x2)),
        ));
        ops.push((
            format!("candle_conv3x3_{name}"),
            Box::new(move || x.conv2d(&w, 1, 1, 1, 1)),
        ));
    }
    let x = Tensor::randn(0f32, 1.0, (2048, 320), dev)?;
    let w = Tensor::randn(0f32, 0.02, (320, 1280), dev)?;
    ops.push((
        "matmul_linear_2048x320x1280".into(),
        Box::new(move || x.matmul(&w)),
    ));
    // Temporal attention at 512²/8 = 64² latents, one of 32 batches of it: (b·h·w·heads, 16, 40).
    let q = Tensor::randn(0f32, 1.0, (4096, 16, 40), dev)?;
    let k = Tensor::randn(0f32, 1.0, (4096, 16, 40), dev)?;
    ops.push((
        "bmm_attention_scores_4096x16x40".into(),
        Box::new(move || q.matmul(&k.t()?)),
    ));
    let x = Tensor::randn(0f32, 1.0, (2, 320, 32, 32), dev)?;
    let gn = candle_nn::GroupNorm::new(
        Tensor::ones(320, DType::F32, dev)?,
        Tensor::zeros(320, DType::F32, dev)?,
        320,
        32,
        1e-5,
    )?;
    ops.push((
        "group_norm_32_2x320x32x32".into(),
        Box::new(move || gn.forward(&x)),
    ));
    let x = Tensor::randn(0f32, 1.0, (16, 1024, 1024), dev)?;
    ops.push((
        "softmax_16x1024x1024".into(),
        Box::new(move || candle_nn::ops::softmax_last_dim(&x)),
    ));
    Ok(ops)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut report = serde_json::Map::new();
    for (name, run) in ops(&Device::Cpu)? {
        run()?; // warm
        let mut times = Vec::with_capacity(args.repeats);
        for _ in 0..args.repeats {
            let t = Instant::now();
            std::hint::black_box(run()?);
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        report.insert(name, times[times.len() / 2].into());
    }
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}
