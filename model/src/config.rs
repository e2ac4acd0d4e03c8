//! The inference settings file, in the shape of hallo2's `configs/inference/long.yaml`
//! @ `58a9aa6`, plus the architecture files that sit in the weights folder.
//!
//! `configs/inference/long.yaml` (the official values) and `configs/inference/long_tiny.yaml`
//! (the tiny official-format weights) both go through [`InferenceConfig::from_yaml_file`].

use std::path::{Path, PathBuf};

use candle_core::DType;

use crate::error::{ModelError, Result};
use crate::heads::ModelHeads;
use crate::pipeline::GenerationParams;
use crate::scheduler::{DDIMSchedulerConfig, PredictionType, TimestepSpacing};
use crate::unet_2d::UNet2DConditionConfig;
use crate::unet_3d::{UNet3DAdditionalKwargs, UNet3DConditionConfig};
use crate::vae::AutoencoderKLConfig;
use crate::wav2vec2::Wav2Vec2Config;

/// `weight_dtype` of the yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    Fp16,
    Bf16,
    Fp32,
}

impl WeightDtype {
    pub fn dtype(self) -> DType {
        match self {
            Self::Fp16 => DType::F16,
            Self::Bf16 => DType::BF16,
            Self::Fp32 => DType::F32,
        }
    }
}

/// `data:` of the yaml.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct DataConfig {
    pub n_motion_frames: usize,
    pub n_sample_frames: usize,
    pub source_image: ImageSize,
    pub driving_audio: DrivingAudio,
    pub export_video: ExportVideo,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
pub struct ImageSize {
    pub width: usize,
    pub height: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
pub struct DrivingAudio {
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
pub struct ExportVideo {
    pub fps: u32,
}

/// `wav2vec:` of the yaml (the model path is resolved from the weights folder instead).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Wav2VecSettings {
    /// `all` (every layer's output, what the released AudioProj expects) or `last`.
    pub features: String,
}

/// The inference yaml. Paths of the official file (`base_model_path`, `vae.model_path`, …) are
/// accepted and ignored: the weights folder decides where files are.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct InferenceConfig {
    pub weight_dtype: WeightDtype,
    pub data: DataConfig,
    pub inference_steps: usize,
    pub cfg_scale: f64,
    #[serde(default)]
    pub use_mask: bool,
    #[serde(default = "default_mask_rate")]
    pub mask_rate: f64,
    #[serde(default = "default_true")]
    pub use_cut: bool,
    pub wav2vec: Wav2VecSettings,
    #[serde(default = "default_face_expand_ratio")]
    pub face_expand_ratio: f64,
    pub pose_weight: f64,
    pub face_weight: f64,
    pub lip_weight: f64,
    pub unet_additional_kwargs: UNet3DAdditionalKwargs,
    #[serde(default)]
    pub enable_zero_snr: bool,
    pub noise_scheduler_kwargs: DDIMSchedulerConfig,
}

fn default_mask_rate() -> f64 {
    0.25
}
fn default_true() -> bool {
    true
}
fn default_face_expand_ratio() -> f64 {
    1.2
}

/// The official settings, as shipped in `configs/inference/long.yaml`.
const LONG_YAML: &str = include_str!("../../configs/inference/long.yaml");

impl InferenceConfig {
    /// The official `configs/inference/long.yaml` values.
    pub fn hallo2() -> Self {
        serde_yaml::from_str(LONG_YAML).expect("the bundled long.yaml parses (unit-tested)")
    }

    pub fn from_yaml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::io(format!("reading {}", path.display()), e))?;
        let config: Self = serde_yaml::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ModelError::Config {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let d = &self.data;
        if d.n_sample_frames == 0 || d.n_motion_frames == 0 || d.n_motion_frames > d.n_sample_frames
        {
            return Err(format!(
                "data.n_sample_frames ({}) and n_motion_frames ({}) must be positive, motion ≤ sample",
                d.n_sample_frames, d.n_motion_frames
            ));
        }
        if !d.source_image.width.is_multiple_of(64) || !d.source_image.height.is_multiple_of(64) {
            return Err("data.source_image width and height must be multiples of 64".into());
        }
        if d.driving_audio.sample_rate != 16000 {
            return Err("data.driving_audio.sample_rate must be 16000 (wav2vec2's rate)".into());
        }
        if self.wav2vec.features != "all" {
            return Err(
                "wav2vec.features must be `all` (the released AudioProj expects every layer)"
                    .into(),
            );
        }
        if self.inference_steps == 0 || self.cfg_scale < 1.0 {
            return Err("inference_steps must be positive and cfg_scale at least 1".into());
        }
        Ok(())
    }

    /// The scheduler as the script builds it: `enable_zero_snr` forces zero-SNR rescaling,
    /// trailing spacing and v-prediction.
    pub fn scheduler(&self) -> DDIMSchedulerConfig {
        let mut cfg = self.noise_scheduler_kwargs.clone();
        if self.enable_zero_snr {
            cfg.rescale_betas_zero_snr = true;
            cfg.timestep_spacing = TimestepSpacing::Trailing;
            cfg.prediction_type = PredictionType::VPrediction;
        }
        cfg
    }

    /// The yaml's generation defaults (the script's seed 42).
    pub fn generation_params(&self) -> GenerationParams {
        GenerationParams {
            steps: self.inference_steps,
            cfg_scale: self.cfg_scale,
            motion_scale: [self.pose_weight, self.face_weight, self.lip_weight],
            seed: 42,
            clip_frames: self.data.n_sample_frames,
            motion_frames: self.data.n_motion_frames,
            mask_rate: self.use_mask.then_some(self.mask_rate),
        }
    }
}

/// The files of the official `pretrained_models/` tree that the pipeline reads.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsLayout {
    pub root: PathBuf,
}

impl WeightsLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn net_pth(&self) -> PathBuf {
        self.root.join("hallo2/net.pth")
    }
    pub fn unet_config(&self) -> PathBuf {
        self.root.join("stable-diffusion-v1-5/unet/config.json")
    }
    pub fn vae_config(&self) -> PathBuf {
        self.root.join("sd-vae-ft-mse/config.json")
    }
    pub fn vae_weights(&self) -> PathBuf {
        self.root
            .join("sd-vae-ft-mse/diffusion_pytorch_model.safetensors")
    }
    pub fn wav2vec_dir(&self) -> PathBuf {
        self.root.join("wav2vec/wav2vec2-base-960h")
    }
    pub fn wav2vec_config(&self) -> PathBuf {
        self.wav2vec_dir().join("config.json")
    }
    /// Kim_Vocal_2 (`config.audio_separator.model_path` of the official yaml).
    pub fn vocal_separator(&self) -> PathBuf {
        self.root.join(Self::VOCAL_SEPARATOR_FILES[0])
    }
    /// `audio-separator`'s MDX parameter table, keyed by model hash.
    pub fn vocal_separator_data(&self) -> PathBuf {
        self.root.join(Self::VOCAL_SEPARATOR_FILES[1])
    }

    /// The vocal separator's files, relative to the root.
    pub const VOCAL_SEPARATOR_FILES: [&'static str; 2] = [
        "audio_separator/Kim_Vocal_2.onnx",
        "audio_separator/mdx_model_data.json",
    ];

    /// Paths relative to the root (as in the HF repo under `pretrained_models/`) of every file
    /// the core pipeline needs. The SD-1.5 UNet weights and the motion-module checkpoint are
    /// not among them: `net.pth` holds every UNet weight. wav2vec2's config states the audio
    /// projection's input layout.
    pub fn required_files() -> &'static [&'static str] {
        &[
            "hallo2/net.pth",
            "stable-diffusion-v1-5/unet/config.json",
            "sd-vae-ft-mse/config.json",
            "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
            "wav2vec/wav2vec2-base-960h/config.json",
        ]
    }
}

/// Every architecture config of the model, read from the weights folder and the yaml.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub reference_unet: UNet2DConditionConfig,
    pub denoising_unet: UNet3DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub heads: ModelHeads,
}

impl ModelConfig {
    /// The official full-size architecture.
    pub fn hallo2() -> Self {
        Self {
            reference_unet: UNet2DConditionConfig::hallo2(),
            denoising_unet: UNet3DConditionConfig::hallo2(),
            vae: AutoencoderKLConfig::hallo2(),
            heads: ModelHeads::hallo2(),
        }
    }

    /// Reads the UNet, VAE and wav2vec2 `config.json` files of `layout`, the yaml's module
    /// settings and the heads' shapes in `net.pth` (`net_shape(key)`, see [`ModelHeads`]).
    pub fn from_files(
        layout: &WeightsLayout,
        inference: &InferenceConfig,
        net_shape: &dyn Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<Self> {
        let unet: UNet2DConditionConfig = read_json(&layout.unet_config())?;
        let vae: AutoencoderKLConfig = read_json(&layout.vae_config())?;
        let wav2vec = Wav2Vec2Config::from_file(&layout.wav2vec_config())?;
        let heads = ModelHeads::from_shapes(net_shape, &wav2vec).map_err(|message| {
            ModelError::Weights {
                path: layout.net_pth(),
                message,
            }
        })?;
        Ok(Self {
            reference_unet: unet.clone(),
            denoising_unet: UNet3DConditionConfig {
                unet,
                unet_additional_kwargs: inference.unet_additional_kwargs.clone(),
            },
            vae,
            heads,
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_long_yaml_is_the_official_configuration() {
        let cfg = InferenceConfig::hallo2();
        assert_eq!(cfg.weight_dtype, WeightDtype::Fp16);
        assert_eq!(
            (cfg.data.n_sample_frames, cfg.data.n_motion_frames),
            (16, 2)
        );
        assert_eq!(
            (cfg.data.source_image.width, cfg.data.source_image.height),
            (512, 512)
        );
        assert_eq!((cfg.inference_steps, cfg.cfg_scale), (40, 3.5));
        assert_eq!(cfg.unet_additional_kwargs, UNet3DAdditionalKwargs::hallo2());
        assert_eq!(cfg.scheduler(), DDIMSchedulerConfig::hallo2());
        assert_eq!(cfg.generation_params(), GenerationParams::hallo2());
    }

    #[test]
    fn the_official_tiny_yaml_and_ours_agree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ours =
            InferenceConfig::from_yaml_file(&root.join("../configs/inference/long_tiny.yaml"))
                .unwrap();
        let official = InferenceConfig::from_yaml_file(
            &root.join("tests/fixtures/hallo2-tiny/config/long_tiny.yaml"),
        )
        .unwrap();
        assert_eq!(official, ours);
    }

    #[test]
    fn invalid_settings_are_rejected_with_the_field_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        let text = LONG_YAML.replace("sample_rate: 16000", "sample_rate: 44100");
        std::fs::write(&path, text).unwrap();
        let err = InferenceConfig::from_yaml_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sample_rate"), "{err}");
        std::fs::write(&path, "weight_dtype: fp8\n").unwrap();
        let err = InferenceConfig::from_yaml_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.yaml"), "{err}");
    }
}
