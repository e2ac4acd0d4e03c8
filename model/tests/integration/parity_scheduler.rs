//! Parity of `DDIMScheduler` with diffusers 0.32.2 as Hallo2 configures it.

use crate::common::{self, FixtureSet, for_each_set};

use candle_core::{DType, Device, Tensor};
use model::scheduler::DDIMScheduler;

/// The scheduler as the set's yaml configures it (what the official run built).
fn scheduler_of(set: &FixtureSet) -> DDIMScheduler {
    DDIMScheduler::new(&set.inference().scheduler()).expect("building scheduler")
}

fn fixture_i64(case: &std::collections::HashMap<String, Tensor>, name: &str) -> Vec<i64> {
    common::get(case, name)
        .to_vec1::<i64>()
        .expect("i64 vector")
}

fn f32_tensor(values: &[f32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).expect("tensor")
}

/// Every `timesteps*` table of the case (`timesteps` for the run's step count, `timesteps_nK`
/// for K steps) is the schedule of its own length.
#[test]
fn timesteps_match_fixture() {
    for_each_set(|set| {
        let case = set.case("scheduler");
        let tables: Vec<&String> = case.keys().filter(|k| k.starts_with("timesteps")).collect();
        assert!(tables.len() > 1, "the case has several step counts");
        for name in tables {
            let expected = fixture_i64(&case, name);
            let mut s = scheduler_of(set);
            s.set_timesteps(expected.len()).expect("set_timesteps");
            let ours: Vec<i64> = s.timesteps().iter().map(|&t| t as i64).collect();
            assert_eq!(ours, expected, "{name}");
        }
        assert_eq!(
            fixture_i64(&case, "timesteps").len(),
            set.inference().inference_steps
        );
    });
}

#[test]
fn schedule_tables_match_fixture() {
    for_each_set(schedule_tables_match);
}

fn schedule_tables_match(set: &FixtureSet) {
    let case = set.case("scheduler");
    let s = scheduler_of(set);
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
    for_each_set(steps_match);
}

fn steps_match(set: &FixtureSet) {
    let case = set.case("scheduler");
    let steps = set.inference().inference_steps;
    for j in 0..steps {
        let mut s = scheduler_of(set);
        s.set_timesteps(steps).expect("set_timesteps");
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
