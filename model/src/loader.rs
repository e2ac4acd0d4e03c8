//! Loading the whole model from an official `pretrained_models/` folder, stage by stage.
//!
//! 1. `verify`: `net.pth` is converted once into a cached safetensors file in the requested dtype
//!    (progress in bytes), then the model is built against the key sets of `net.pth` and the VAE
//!    without reading any weight: a missing, unused or mis-shaped key fails here, by name, before
//!    gigabytes are read.
//! 2. `vae`, `reference_unet`, `denoising_unet`, `heads`: each component gets its tensors in the
//!    requested dtype, never held twice. The VAE (the user's file) is read with positioned reads
//!    into owned buffers. The `net.pth` cache (our file) is mapped when the program installs
//!    [`crate::weights::MappedWeightsAllocator`]: its tensors then share the page cache's pages
//!    (no copy, no zeroed fresh memory); otherwise it is read like the VAE.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::config::{InferenceConfig, ModelConfig, WeightsLayout};
use crate::error::{ModelError, Result};
use crate::net::{Net, NetPart};
use crate::pipeline::Pipeline;
use crate::vae::AutoencoderKL;
use crate::weights::{KeyAudit, SafetensorsFile, WeightBackend, pth_cache};

/// Load stages in order; names are stable (they appear in the studio and its API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadStage {
    Verify,
    /// InsightFace's SCRFD + ArcFace ([`crate::hallo2::Hallo2::load`] only).
    FaceAnalysis,
    /// wav2vec2 ([`crate::hallo2::Hallo2::load`] only).
    AudioEncoder,
    /// The MDX vocal separator ([`crate::hallo2::Hallo2::load`] with
    /// [`LoadOptions::vocal_separator`] only).
    VocalSeparator,
    Vae,
    ReferenceUnet,
    DenoisingUnet,
    Heads,
}

impl LoadStage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::FaceAnalysis => "face_analysis",
            Self::AudioEncoder => "audio_encoder",
            Self::VocalSeparator => "vocal_separator",
            Self::Vae => "vae",
            Self::ReferenceUnet => "reference_unet",
            Self::DenoisingUnet => "denoising_unet",
            Self::Heads => "heads",
        }
    }
}

/// What the loader reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadEvent {
    Started(LoadStage),
    /// Bytes processed within a stage (the `.pth` conversion in `verify`).
    Progress {
        stage: LoadStage,
        done: u64,
        total: u64,
    },
    Done {
        stage: LoadStage,
        elapsed: Duration,
    },
}

/// Where and how to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The dtype of the model's weights and activations (f32 on CPU, f16 on GPU).
    pub dtype: DType,
    pub device: Device,
    /// Folder for the safetensors copy of `net.pth`.
    pub cache_dir: PathBuf,
    /// Load the vocal separator too (`audio_separator/`; [`crate::hallo2::Hallo2::load`] only).
    pub vocal_separator: bool,
}

/// The loaded pipeline and facts about what was loaded.
pub struct LoadedModel {
    pub pipeline: Pipeline,
    /// Content fingerprint of `net.pth` (see [`pth_cache::fingerprint`]).
    pub net_fingerprint: String,
    /// Bytes of weight data read from disk.
    pub weight_bytes: u64,
    /// Whether the `net.pth` cache was mapped rather than read (see the module docs).
    pub weights_mapped: bool,
}

/// Loads everything the denoising pipeline needs from `layout`.
///
/// `on_event` may answer `ControlFlow::Break(())` (e.g. when work the caller does between stages
/// failed): the load then stops before the next component is read and returns
/// [`ModelError::Cancelled`].
pub fn load(
    layout: &WeightsLayout,
    inference: &InferenceConfig,
    options: &LoadOptions,
    on_event: &mut dyn FnMut(LoadEvent) -> ControlFlow<()>,
) -> Result<LoadedModel> {
    let mut clock = StageClock {
        on_event,
        current: None,
        stopped: false,
    };
    clock.start(LoadStage::Verify);
    for file in WeightsLayout::required_files() {
        let path = layout.root.join(file);
        if !path.is_file() {
            return Err(ModelError::Weights {
                path,
                message: "file not found".into(),
            });
        }
    }
    let converted = pth_cache::cached_safetensors(
        &layout.net_pth(),
        &options.cache_dir,
        options.dtype,
        &mut |done, total| clock.progress(done, total),
    )?;
    let mut net_file = SafetensorsFile::open(&converted.safetensors)?;
    let weights_mapped = net_file.serve_from_mapping();
    let vae_file = SafetensorsFile::open(&layout.vae_weights())?;
    let config = ModelConfig::from_files(layout, inference, &|key| {
        net_file.entries().get(key).map(|e| e.shape.clone())
    })?;
    audit(&layout.net_pth(), &net_file, |vb| {
        Net::new(&config, vb).map(drop)
    })?;
    audit(&layout.vae_weights(), &vae_file, |vb| {
        AutoencoderKL::new(&config.vae, vb).map(drop)
    })?;
    let weight_bytes = net_file.data_bytes() + vae_file.data_bytes();

    clock.start(LoadStage::Vae);
    clock.check()?;
    let (backend, _) = WeightBackend::new(vec![vae_file]);
    let vb = VarBuilder::from_backend(Box::new(backend), options.dtype, options.device.clone());
    let vae = AutoencoderKL::new(&config.vae, vb)?;
    clock.check()?;

    let (backend, unused) = WeightBackend::new(vec![net_file]);
    let vb = VarBuilder::from_backend(Box::new(backend), options.dtype, options.device.clone());
    let net = Net::new_observed(&config, vb, &mut |part| {
        clock.start(match part {
            NetPart::ReferenceUnet => LoadStage::ReferenceUnet,
            NetPart::DenoisingUnet => LoadStage::DenoisingUnet,
            NetPart::Heads => LoadStage::Heads,
        });
        if clock.stopped {
            candle_core::bail!("load stopped by the caller")
        }
        Ok(())
    });
    clock.check()?;
    let net = net?;
    clock.finish();
    clock.check()?;
    let unused = unused.unused();
    if !unused.is_empty() {
        return Err(ModelError::Weights {
            path: layout.net_pth(),
            message: format!(
                "{} tensors were never used: {}",
                unused.len(),
                unused.join(", ")
            ),
        });
    }
    let pipeline = Pipeline {
        net,
        vae,
        scheduler: inference.scheduler(),
        dtype: options.dtype,
        device: options.device.clone(),
    };
    Ok(LoadedModel {
        pipeline,
        net_fingerprint: converted.fingerprint,
        weight_bytes,
        weights_mapped,
    })
}

/// Builds modules against the key set of `file` without reading weights; fails naming the keys.
fn audit(
    source: &std::path::Path,
    file: &SafetensorsFile,
    build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<()>,
) -> Result<()> {
    let audit = KeyAudit::from_safetensors(file);
    build(audit.var_builder())?;
    let report = audit.report();
    if report.is_exact() {
        Ok(())
    } else {
        Err(ModelError::Weights {
            path: source.to_owned(),
            message: format!("key set does not match the model: {}", report.summary()),
        })
    }
}

/// Reports `Started` when a stage begins and `Done` with its duration when the next one begins
/// (or on `finish`).
/// Remembers whether the caller asked to stop.
struct StageClock<'a> {
    on_event: &'a mut dyn FnMut(LoadEvent) -> ControlFlow<()>,
    current: Option<(LoadStage, Instant)>,
    stopped: bool,
}

impl StageClock<'_> {
    fn emit(&mut self, event: LoadEvent) {
        if (self.on_event)(event).is_break() {
            self.stopped = true;
        }
    }

    fn check(&self) -> Result<()> {
        if self.stopped {
            Err(ModelError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn start(&mut self, stage: LoadStage) {
        self.finish();
        self.emit(LoadEvent::Started(stage));
        self.current = Some((stage, Instant::now()));
    }

    fn progress(&mut self, done: u64, total: u64) {
        if let Some((stage, _)) = self.current {
            self.emit(LoadEvent::Progress { stage, done, total });
        }
    }

    fn finish(&mut self) {
        if let Some((stage, started)) = self.current.take() {
            self.emit(LoadEvent::Done {
                stage,
                elapsed: started.elapsed(),
            });
        }
    }
}
