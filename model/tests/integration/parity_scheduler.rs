//! Parity of `DDIMScheduler` with diffusers 0.32.2 as Hallo2 configures it.

use crate::common;

use candle_core::{DType, Device, Tensor};
use model::scheduler::{DDIMScheduler, DDIMSchedulerConfig};

fn hallo2_scheduler() -> DDIMScheduler {
    DDIMScheduler::new(&DDIMSchedulerConfig::hallo2()).expect("building scheduler")
}

fn fixture_i64(case: &std::collections::HashMap<String, Tensor>, name: &str) -> Vec<i64> {
    common::get(case, name)
        .to_vec1::<i64>()
        .expect("i64 vector")
}

fn f32_tensor(values: &[f32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).expect("tensor")
}

#[test]
fn timesteps_match_fixture() {
    let case = common::case("scheduler");
    for (n, name) in [
        (3, "timesteps"),
        (2, "timesteps_n2"),
        (4, "timesteps_n4"),
        (40, "timesteps_n40"),
    ] {
        let mut s = hallo2_scheduler();
        s.set_timesteps(n).expect("set_timesteps");
        let ours: Vec<i64> = s.timesteps().iter().map(|&t| t as i64).collect();
        assert_eq!(ours, fixture_i64(&case, name), "{name}");
    }
}

#[test]
fn schedule_tables_match_fixture() {
    let case = common::case("scheduler");
    let s = hallo2_scheduler();
    // torch's CPU sqrt (MKL VML) is faithfully, not correctly, rounded: about 30 % of the
    // √ᾱ entries in the zero-SNR rescale sit one ulp from ours. The ratio ᾱ_t/ᾱ_{t−1} magnifies
    // that to ~4e-6 on the last betas (where ᾱ → 0); ᾱ itself stays within ~4e-7.
    common::assert_close(
        "betas",
        &f32_tensor(s.betas()),
        common::get(&case, "betas"),
        1e-5,
        0.0,
    );
    common::assert_close(
        "alphas_cumprod",
        &f32_tensor(s.alphas_cumprod()),
        common::get(&case, "alphas_cumprod"),
        1e-6,
        0.0,
    );
    common::assert_close(
        "final_alpha_cumprod",
        &f32_tensor(&[s.final_alpha_cumprod()]),
        common::get(&case, "final_alpha_cumprod"),
        0.0,
        0.0,
    );
    common::assert_close(
        "init_noise_sigma",
        &f32_tensor(&[s.init_noise_sigma() as f32]),
        common::get(&case, "init_noise_sigma"),
        0.0,
        0.0,
    );
}

#[test]
fn steps_match_fixture() {
    let case = common::case("scheduler");
    for j in 0..3 {
        let mut s = hallo2_scheduler();
        s.set_timesteps(3).expect("set_timesteps");
        let get = |what: &str| common::get(&case, &format!("step{j}.{what}"));
        let timestep = get("timestep").to_vec1::<i64>().expect("timestep")[0];
        let out = s
            .step(get("model_output"), timestep as usize, get("sample"))
            .expect("step");
        assert_eq!(out.prev_sample.dtype(), DType::F32);
        common::assert_close(
            &format!("step{j} (t={timestep}) prev_sample"),
            &out.prev_sample,
            get("prev_sample"),
            1e-6,
            0.0,
        );
        common::assert_close(
            &format!("step{j} (t={timestep}) pred_original_sample"),
            &out.pred_original_sample,
            get("pred_original_sample"),
            1e-6,
            0.0,
        );
    }
}
