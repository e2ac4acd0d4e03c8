//! diffusers 0.32.2 `DDIMScheduler` (`schedulers/scheduling_ddim.py`), deterministic (eta = 0),
//! with the zero-terminal-SNR rescale and trailing spacing Hallo2 switches on.
//!
//! The schedule is computed the way torch computes it on CPU so that the tables match the
//! reference bit for bit where possible: betas are a float32 `torch.linspace` (scalar kernel:
//! the first half counts up from `start`, the second half down from `end`), the rescale runs in
//! float32, and `torch.cumprod` accumulates in float64 and rounds each partial product to
//! float32. The step coefficients are float32 scalars, as upstream's 0-dim float32 tensors.
//! One difference remains: torch's CPU `sqrt` (MKL VML) is faithfully but not correctly rounded,
//! so about a third of the √ᾱ values of the rescale differ from ours by one ulp; the betas of
//! the last timesteps then differ by up to ~4e-6 and ᾱ by up to ~4e-7 (see
//! `tests/integration/parity_scheduler.rs`).

use candle_core::{Result, Tensor};

use super::{BetaSchedule, PredictionType, TimestepSpacing};

/// `DDIMScheduler.__init__` arguments (yaml `noise_scheduler_kwargs`); defaults are diffusers'.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct DDIMSchedulerConfig {
    #[serde(default = "default_num_train_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: BetaSchedule,
    #[serde(default = "default_true")]
    pub clip_sample: bool,
    #[serde(default = "default_clip_sample_range")]
    pub clip_sample_range: f64,
    /// Whether the step after the last timestep uses ᾱ = 1 (else ᾱ₀).
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    /// Added to `leading` timesteps (ignored by `trailing` and `linspace`).
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "default_prediction_type")]
    pub prediction_type: PredictionType,
    #[serde(default = "default_timestep_spacing")]
    pub timestep_spacing: TimestepSpacing,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

fn default_num_train_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> BetaSchedule {
    BetaSchedule::Linear
}
fn default_true() -> bool {
    true
}
fn default_clip_sample_range() -> f64 {
    1.0
}
fn default_prediction_type() -> PredictionType {
    PredictionType::Epsilon
}
fn default_timestep_spacing() -> TimestepSpacing {
    TimestepSpacing::Leading
}

impl Default for DDIMSchedulerConfig {
    /// diffusers' constructor defaults.
    fn default() -> Self {
        Self {
            num_train_timesteps: default_num_train_timesteps(),
            beta_start: default_beta_start(),
            beta_end: default_beta_end(),
            beta_schedule: default_beta_schedule(),
            clip_sample: true,
            clip_sample_range: default_clip_sample_range(),
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: default_prediction_type(),
            timestep_spacing: default_timestep_spacing(),
            rescale_betas_zero_snr: false,
        }
    }
}

impl DDIMSchedulerConfig {
    /// hallo2 `configs/inference/long.yaml` `noise_scheduler_kwargs` @ `58a9aa6` with
    /// `enable_zero_snr: true` applied (zero SNR, trailing, v-prediction). The beta schedule stays
    /// "linear": `inference_long.py` switches it to "scaled_linear" only after building the
    /// inference scheduler.
    pub fn hallo2() -> Self {
        Self {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::Linear,
            clip_sample: false,
            steps_offset: 1,
            prediction_type: PredictionType::VPrediction,
            rescale_betas_zero_snr: true,
            timestep_spacing: TimestepSpacing::Trailing,
            ..Self::default()
        }
    }
}

/// Result of one [`DDIMScheduler::step`].
#[derive(Debug, Clone)]
pub struct DdimStepOutput {
    /// x_{t−Δ}: the sample for the next (lower) timestep.
    pub prev_sample: Tensor,
    /// The model's estimate of x₀ at this step.
    pub pred_original_sample: Tensor,
}

/// Denoising-diffusion implicit-model sampler with eta = 0.
#[derive(Debug, Clone)]
pub struct DDIMScheduler {
    config: DDIMSchedulerConfig,
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    num_inference_steps: Option<usize>,
    timesteps: Vec<usize>,
}

impl DDIMScheduler {
    pub fn new(config: &DDIMSchedulerConfig) -> Result<Self> {
        let n = config.num_train_timesteps;
        if n < 2 {
            candle_core::bail!("ddim: num_train_timesteps must be at least 2, got {n}");
        }
        let mut betas = match config.beta_schedule {
            BetaSchedule::Linear => torch_linspace_f32(config.beta_start, config.beta_end, n),
            BetaSchedule::ScaledLinear => {
                torch_linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
        };
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod = torch_cumprod_f32(&alphas);
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            config: config.clone(),
            betas,
            alphas_cumprod,
            final_alpha_cumprod,
            num_inference_steps: None,
            // Before `set_timesteps`: every training timestep, descending.
            timesteps: (0..n).rev().collect(),
        })
    }

    pub fn config(&self) -> &DDIMSchedulerConfig {
        &self.config
    }

    /// The training betas after any rescale (float32, as upstream's `self.betas`).
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// ᾱ_t for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// ᾱ used after the last timestep.
    pub fn final_alpha_cumprod(&self) -> f32 {
        self.final_alpha_cumprod
    }

    /// Standard deviation of the initial noise (always 1 for DDIM).
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Identity: DDIM does not scale the model input.
    pub fn scale_model_input(&self, sample: Tensor, _timestep: usize) -> Tensor {
        sample
    }

    /// The inference timesteps, descending (after [`Self::set_timesteps`]).
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// Picks `num_inference_steps` timesteps according to `timestep_spacing`.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let train = self.config.num_train_timesteps;
        if num_inference_steps == 0 || num_inference_steps > train {
            candle_core::bail!(
                "ddim: num_inference_steps must be in 1..={train}, got {num_inference_steps}"
            );
        }
        let timesteps: Vec<i64> = match self.config.timestep_spacing {
            TimestepSpacing::Linspace => {
                numpy_linspace(0.0, (train - 1) as f64, num_inference_steps)
                    .into_iter()
                    .rev()
                    .map(|t| t.round_ties_even() as i64)
                    .collect()
            }
            TimestepSpacing::Leading => {
                let step_ratio = train / num_inference_steps;
                (0..num_inference_steps)
                    .rev()
                    .map(|i| (i * step_ratio + self.config.steps_offset) as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let step_ratio = train as f64 / num_inference_steps as f64;
                numpy_arange(train as f64, 0.0, -step_ratio)
                    .into_iter()
                    .map(|t| t.round_ties_even() as i64 - 1)
                    .collect()
            }
        };
        let mut checked = Vec::with_capacity(timesteps.len());
        for t in timesteps {
            match usize::try_from(t) {
                Ok(t) if t < train => checked.push(t),
                _ => candle_core::bail!(
                    "ddim: timestep {t} outside 0..{train} for {num_inference_steps} steps with {:?}",
                    self.config.timestep_spacing
                ),
            }
        }
        self.timesteps = checked;
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    /// One deterministic DDIM update (eta = 0) from `timestep` to the previous inference timestep.
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> Result<DdimStepOutput> {
        let Some(num_inference_steps) = self.num_inference_steps else {
            candle_core::bail!("ddim: call set_timesteps before step");
        };
        let train = self.config.num_train_timesteps;
        if timestep >= train {
            candle_core::bail!("ddim: timestep {timestep} outside 0..{train}");
        }
        // 1. previous step value: upstream uses the integer ratio whatever the spacing.
        let step_ratio = train / num_inference_steps;
        let alpha_prod_t = self.alphas_cumprod[timestep];
        let alpha_prod_t_prev = match timestep.checked_sub(step_ratio) {
            Some(prev_timestep) => self.alphas_cumprod[prev_timestep],
            None => self.final_alpha_cumprod,
        };
        // 2. coefficients, float32 like upstream's 0-dim tensors.
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (sqrt_alpha_t, sqrt_beta_t) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());
        let scaled = |xs: &Tensor, c: f32| xs.affine(f64::from(c), 0.0);
        // 3. predicted x₀ and ε.
        let (pred_original_sample, pred_epsilon) = match self.config.prediction_type {
            PredictionType::Epsilon => {
                let x0 = (sample - scaled(model_output, sqrt_beta_t)?)?
                    .affine(f64::from(1.0 / sqrt_alpha_t), 0.0)?;
                (x0, model_output.clone())
            }
            PredictionType::Sample => {
                let eps = (sample - scaled(model_output, sqrt_alpha_t)?)?
                    .affine(f64::from(1.0 / sqrt_beta_t), 0.0)?;
                (model_output.clone(), eps)
            }
            PredictionType::VPrediction => (
                (scaled(sample, sqrt_alpha_t)? - scaled(model_output, sqrt_beta_t)?)?,
                (scaled(model_output, sqrt_alpha_t)? + scaled(sample, sqrt_beta_t)?)?,
            ),
        };
        // 4. clip x₀ (thresholding is not supported: off in every Hallo2 config).
        let pred_original_sample = if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            pred_original_sample.clamp(-r, r)?
        } else {
            pred_original_sample
        };
        // 5.–7. eta = 0: no variance term; "direction pointing to x_t" plus the x₀ part.
        let pred_sample_direction = scaled(&pred_epsilon, (1.0 - alpha_prod_t_prev).sqrt())?;
        let prev_sample =
            (scaled(&pred_original_sample, alpha_prod_t_prev.sqrt())? + pred_sample_direction)?;
        Ok(DdimStepOutput {
            prev_sample,
            pred_original_sample,
        })
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)` as the CPU scalar kernel computes it.
fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// `torch.cumprod` of a float32 vector on CPU: float64 accumulator, float32 outputs.
fn torch_cumprod_f32(xs: &[f32]) -> Vec<f32> {
    let mut acc = 1f64;
    xs.iter()
        .map(|&x| {
            acc *= f64::from(x);
            acc as f32
        })
        .collect()
}

/// diffusers `rescale_zero_terminal_snr` (arXiv:2305.08891, Algorithm 1), in float32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let alphas_bar_sqrt: Vec<f32> = torch_cumprod_f32(&alphas)
        .iter()
        .map(|a| a.sqrt())
        .collect();
    let first = alphas_bar_sqrt[0];
    let last = alphas_bar_sqrt[alphas_bar_sqrt.len() - 1];
    // Shift so the last timestep is zero, then scale so the first is back to its old value.
    let scale = first / (first - last);
    let alphas_bar: Vec<f32> = alphas_bar_sqrt
        .iter()
        .map(|s| {
            let s = (s - last) * scale;
            s * s
        })
        .collect();
    // Undo the cumprod: α_0 = ᾱ_0, α_t = ᾱ_t / ᾱ_{t−1}.
    std::iter::once(alphas_bar[0])
        .chain(alphas_bar.windows(2).map(|w| w[1] / w[0]))
        .map(|a| 1.0 - a)
        .collect()
}

/// `np.arange(start, stop, step)` for floats: length `ceil((stop − start)/step)`, values
/// `start + i·delta` with `delta = (start + step) − start`.
fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// `np.linspace(start, stop, num)` (endpoint included, last value exactly `stop`).
fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut ys: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    ys[num - 1] = stop;
    ys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hallo2_config_matches_long_yaml() {
        let yaml = r#"
beta_start: 0.00085
beta_end: 0.012
beta_schedule: "linear"
clip_sample: false
steps_offset: 1
prediction_type: "v_prediction"
rescale_betas_zero_snr: True
timestep_spacing: "trailing"
"#;
        let cfg: DDIMSchedulerConfig = serde_yaml::from_str(yaml).expect("parsing kwargs");
        assert_eq!(cfg, DDIMSchedulerConfig::hallo2());
        assert_eq!(cfg.num_train_timesteps, 1000);
        assert!(cfg.set_alpha_to_one);
    }

    #[test]
    fn trailing_timesteps_for_40_steps() {
        let mut s = DDIMScheduler::new(&DDIMSchedulerConfig::hallo2()).expect("scheduler");
        s.set_timesteps(40).expect("set_timesteps");
        let expected: Vec<usize> = (0..40).map(|i| 999 - 25 * i).collect();
        assert_eq!(s.timesteps(), expected.as_slice());
        assert_eq!((s.timesteps()[0], s.timesteps()[39]), (999, 24));
    }

    #[test]
    fn leading_and_linspace_spacing() {
        let leading = DDIMSchedulerConfig {
            steps_offset: 1,
            ..DDIMSchedulerConfig::default()
        };
        let mut s = DDIMScheduler::new(&leading).expect("scheduler");
        s.set_timesteps(4).expect("set_timesteps");
        assert_eq!(s.timesteps(), &[751, 501, 251, 1]);
        let linspace = DDIMSchedulerConfig {
            timestep_spacing: TimestepSpacing::Linspace,
            ..DDIMSchedulerConfig::default()
        };
        let mut s = DDIMScheduler::new(&linspace).expect("scheduler");
        s.set_timesteps(4).expect("set_timesteps");
        assert_eq!(s.timesteps(), &[999, 666, 333, 0]);
    }

    #[test]
    fn zero_snr_schedule_matches_reference_values() {
        let s = DDIMScheduler::new(&DDIMSchedulerConfig::hallo2()).expect("scheduler");
        let ac = s.alphas_cumprod();
        assert_eq!(ac[999], 0.0);
        // float64 reference values (hallo2-spec §11.3); float32 differs in the last digits.
        for (t, v) in [
            (749, 0.013368),
            (499, 0.142529),
            (249, 0.555703),
            (24, 0.974725),
        ] {
            assert!(
                (f64::from(ac[t]) - v).abs() < 2e-6,
                "alphas_cumprod[{t}] = {}",
                ac[t]
            );
        }
        assert!((f64::from(ac[0]) - 0.99915).abs() < 1e-6);
    }

    #[test]
    fn step_requires_timesteps() {
        let s = DDIMScheduler::new(&DDIMSchedulerConfig::hallo2()).expect("scheduler");
        let x = Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).expect("x");
        assert!(s.step(&x, 999, &x).is_err());
    }
}
