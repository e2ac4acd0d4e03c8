//! Noise schedulers (diffusers `schedulers/`). Hallo2 inference only uses [`DDIMScheduler`].
//!
//! The option enums below carry diffusers' string spellings, so a yaml `noise_scheduler_kwargs`
//! block deserialises directly.

pub mod ddim;

pub use ddim::{DDIMScheduler, DDIMSchedulerConfig, DdimStepOutput};

/// `beta_schedule`: how the training betas are laid out over `num_train_timesteps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end)`; what Hallo2's inference scheduler uses.
    Linear,
    /// `linspace(√beta_start, √beta_end)²` (Stable Diffusion's training schedule).
    ScaledLinear,
}

/// `prediction_type`: what the denoiser outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The added noise ε.
    Epsilon,
    /// v = √ᾱ·ε − √(1−ᾱ)·x₀ (Hallo2).
    VPrediction,
    /// The clean sample x₀.
    Sample,
}

/// `timestep_spacing`: how inference timesteps are picked (Table 2 of arXiv:2305.08891).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    /// Starts at the last training timestep (999 for 1000); Hallo2's choice.
    Trailing,
    Linspace,
}
