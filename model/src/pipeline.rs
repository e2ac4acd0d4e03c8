//! The long-video loop of hallo2 `scripts/inference_long.py` + `hallo/animate/face_animate.py`
//! @ `58a9aa6`: 16-frame clips, motion frames carried from the previous clip, classifier-free
//! guidance, DDIM, frame-by-frame VAE decoding, trimmed to the audio length.
//!
//! The pipeline takes prepared tensors ([`PreparedInputs`]); turning an image and an audio file
//! into them is the job of the face and audio modules.

use candle_core::{DType, Device, IndexOp, Module, Tensor};

use crate::error::{ModelError, Result};
use crate::mutual_self_attention::ReaderBank;
use crate::net::Net;
use crate::scheduler::{DDIMScheduler, DDIMSchedulerConfig};
use crate::torch_rng::TorchGenerator;
use crate::unet_3d::{AudioMasks, UNet3DConditions};
use crate::vae::AutoencoderKL;

/// `vae.config.scaling_factor` as the pipeline hard-codes it.
pub const VAE_SCALING_FACTOR: f64 = 0.18215;

/// Per-video conditioning, already preprocessed (shapes for an `H×W` image, `T` audio frames).
#[derive(Debug, Clone)]
pub struct PreparedInputs {
    /// `(3, H, W)` in [-1, 1].
    pub source_pixels: Tensor,
    /// `(3, H, W)` binary face box (the face locator's input).
    pub face_region: Tensor,
    /// `(D,)` raw identity embedding (zeros when no face was found for it).
    pub face_emb: Tensor,
    /// Pose (background), face and lip masks at 4 levels, each `(1, h·w)` for the latent sides
    /// `H/8, H/16, H/32, H/64`.
    pub full_mask: [Tensor; 4],
    pub face_mask: [Tensor; 4],
    pub lip_mask: [Tensor; 4],
    /// The audio features, one row (or window) per video frame, `T` frames.
    pub audio: AudioConditioning,
    /// Video frames to keep: the audio length in frames before padding.
    pub audio_length: usize,
}

/// The per-frame audio features a run reads, one clip at a time.
#[derive(Debug, Clone)]
pub enum AudioConditioning {
    /// `(T, 5, L, C)`: every frame's wav2vec2 window, as the official code keeps them.
    Windows(Tensor),
    /// `(T, L, C)`: the wav2vec2 outputs; a clip's windows are built when it runs, so a long
    /// audio holds one fifth of the windows' memory.
    Embedding(Tensor),
    /// The wav2vec2 outputs in a feature file, read a clip's rows at a time: memory does not
    /// grow with the audio's length.
    Rows(std::sync::Arc<crate::audio_io::FeatureRows>),
}

impl AudioConditioning {
    /// `T`, the frames the features cover (padded to whole clips by the audio path).
    pub fn frames(&self) -> Result<usize> {
        Ok(match self {
            Self::Windows(t) | Self::Embedding(t) => t.dim(0)?,
            Self::Rows(rows) => rows.frames(),
        })
    }

    /// The windows of frames `start .. start + len`, `(len, 5, L, C)`. Frames past `T` (the
    /// last clip of an audio whose features are not a whole number of clips) take the last
    /// frame's window.
    pub fn windows(&self, start: usize, len: usize) -> Result<Tensor> {
        Ok(match self {
            Self::Windows(w) => {
                let t = w.dim(0)?;
                if start + len <= t {
                    w.narrow(0, start, len)?
                } else {
                    let rows: Vec<u32> =
                        (start..start + len).map(|i| i.min(t - 1) as u32).collect();
                    w.index_select(&Tensor::new(rows, w.device())?, 0)?
                }
            }
            Self::Embedding(e) => crate::audio_features::audio_emb_windows(e, start, len)?,
            Self::Rows(rows) => rows.windows(start, len, &Device::Cpu)?,
        })
    }
}

/// Knobs of one generation (defaults: the official inference yaml).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub steps: usize,
    pub cfg_scale: f64,
    /// `(pose, face, lip)` weights of the audio branches.
    pub motion_scale: [f64; 3],
    pub seed: u64,
    /// Frames per clip (16) and motion frames carried over (2).
    pub clip_frames: usize,
    pub motion_frames: usize,
    /// Random pixel drop on the motion frames outside the face (`use_mask`, `mask_rate`).
    pub mask_rate: Option<f64>,
}

impl GenerationParams {
    /// `configs/inference/long.yaml` values and the script's seed.
    pub fn hallo2() -> Self {
        Self {
            steps: 40,
            cfg_scale: 3.5,
            motion_scale: [1.0; 3],
            seed: 42,
            clip_frames: 16,
            motion_frames: 2,
            mask_rate: Some(0.25),
        }
    }
}

/// A run's choices over a profile's parameters; `None` keeps the profile's value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ParamOverrides {
    pub steps: Option<usize>,
    pub cfg_scale: Option<f64>,
    pub pose_weight: Option<f64>,
    pub face_weight: Option<f64>,
    pub lip_weight: Option<f64>,
    pub seed: Option<u64>,
}

impl GenerationParams {
    /// These parameters with `o`'s choices applied.
    pub fn with_overrides(self, o: &ParamOverrides) -> Self {
        let [pose, face, lip] = self.motion_scale;
        Self {
            steps: o.steps.unwrap_or(self.steps),
            cfg_scale: o.cfg_scale.unwrap_or(self.cfg_scale),
            motion_scale: [
                o.pose_weight.unwrap_or(pose),
                o.face_weight.unwrap_or(face),
                o.lip_weight.unwrap_or(lip),
            ],
            seed: o.seed.unwrap_or(self.seed),
            ..self
        }
    }
}

/// Where the loop is, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// 0-based clip index and clip count.
    pub clip: usize,
    pub clips: usize,
    /// Denoising steps finished in this clip, out of `steps`; `step == steps` while decoding.
    pub step: usize,
    pub steps: usize,
    pub stage: Stage,
}

/// The part of a clip being computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Reference,
    Denoise,
    Decode,
}

/// Receives progress and decides about cancellation; called between steps.
pub trait Observer {
    fn progress(&mut self, _progress: Progress) {}
    /// Returning true stops the run with [`ModelError::Cancelled`] at the next check.
    fn cancelled(&self) -> bool {
        false
    }
    /// A finished clip: its frames `(3, F, H, W)` in [0, 1] (before trimming) and latents.
    fn clip_done(&mut self, _clip: usize, _output: &ClipOutput) {}
}

/// An observer that does nothing.
pub struct Silent;
impl Observer for Silent {}

/// Where the loop stands between two clips, or between two steps of a clip: all a later run
/// needs to continue it exactly.
#[derive(Debug, Clone)]
pub struct LoopState {
    /// The clip to run next (== the clip count when done).
    pub next_clip: usize,
    /// The last clip's last `motion_frames` frames `(3, M, H, W)` in [-1, 1] (None before clip 0).
    pub motion: Option<Tensor>,
    /// The generator, as the next clip's draws will find it.
    pub generator: TorchGenerator,
    /// `next_clip` stopped part-way: its denoising continues from here.
    pub partial: Option<PartialClip>,
}

/// A clip stopped between two denoising steps.
#[derive(Debug, Clone)]
pub struct PartialClip {
    /// Steps done (the next one to run; `steps` when only the decoding is left).
    pub step: usize,
    /// `(1, 4, F, h, w)` f32 latents after those steps.
    pub latents: Tensor,
}

impl LoopState {
    /// The state before clip 0 for `params`.
    pub fn start(params: &GenerationParams) -> Self {
        Self {
            next_clip: 0,
            motion: None,
            generator: TorchGenerator::seed(params.seed),
            partial: None,
        }
    }
}

/// How a clip's run ended.
enum ClipRun {
    Done(ClipOutput),
    /// The observer asked to stop; the clip can continue from here.
    Stopped(PartialClip),
}

/// Receives the video as it is made, clip by clip.
pub trait FrameSink {
    /// Clip `clip`'s frames `(3, n, H, W)` in [0, 1], already trimmed to the audio (`n` may be
    /// less than the clip length for the last clips, or 0), and the state the next clip starts
    /// from. An error stops the run.
    fn clip(&mut self, clip: usize, frames: &Tensor, next: &LoopState) -> Result<()>;

    /// The run stops between two steps (the observer asked): `state` continues it, part-way
    /// through its clip. The run then ends with [`ModelError::Cancelled`].
    fn stopped(&mut self, _state: &LoopState) -> Result<()> {
        Ok(())
    }
}

/// A sink that keeps every frame: for short videos and tests only (a long video would not fit).
#[derive(Default)]
pub struct CollectFrames {
    pub clips: Vec<Tensor>,
}

impl FrameSink for CollectFrames {
    fn clip(&mut self, _clip: usize, frames: &Tensor, _next: &LoopState) -> Result<()> {
        if frames.dim(1)? > 0 {
            self.clips.push(frames.clone());
        }
        Ok(())
    }
}

/// The loaded model: `Net` (both UNets, face locator, projections) plus the VAE.
pub struct Pipeline {
    pub net: Net,
    pub vae: AutoencoderKL,
    pub scheduler: DDIMSchedulerConfig,
    pub dtype: DType,
    pub device: Device,
}

/// What one clip computes, kept for parity tests and debugging.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// `(3, F, H, W)` in [0, 1].
    pub frames: Tensor,
    /// `(1, 4, F, h, w)` before decoding.
    pub latents: Tensor,
}

impl Pipeline {
    /// Runs every clip and returns the video `(3, frames, H, W)` in [0, 1], trimmed to the audio.
    /// Holds the whole video: long videos go through [`Self::generate_into`].
    pub fn generate(
        &self,
        inputs: &PreparedInputs,
        params: &GenerationParams,
        observer: &mut dyn Observer,
    ) -> Result<Tensor> {
        let mut frames = CollectFrames::default();
        self.generate_into(
            inputs,
            params,
            LoopState::start(params),
            observer,
            &mut frames,
        )?;
        Ok(Tensor::cat(&frames.clips, 1)?)
    }

    /// Number of clips a run over `inputs` makes.
    pub fn clip_count(inputs: &PreparedInputs, params: &GenerationParams) -> Result<usize> {
        Ok(inputs.audio.frames()?.div_ceil(params.clip_frames.max(1)))
    }

    /// Runs the clips from `state.next_clip` on, handing each clip's frames (trimmed to the
    /// audio) to `sink` as soon as it is decoded: memory does not grow with the video's length.
    /// A run started from a [`LoopState`] a sink was given produces the same frames as the
    /// uninterrupted run.
    pub fn generate_into(
        &self,
        inputs: &PreparedInputs,
        params: &GenerationParams,
        mut state: LoopState,
        observer: &mut dyn Observer,
        sink: &mut dyn FrameSink,
    ) -> Result<()> {
        let conditions = self.conditions(inputs, params)?;
        let f = params.clip_frames;
        while state.next_clip < conditions.clips {
            let clip = state.next_clip;
            let at_start = state.generator.clone();
            let partial = state.partial.take();
            let run = self.clip_from(
                &conditions,
                params,
                clip,
                state.motion.as_ref(),
                &mut state.generator,
                partial.as_ref(),
                observer,
            )?;
            let out = match run {
                ClipRun::Done(out) => out,
                ClipRun::Stopped(partial) => {
                    // The clip's draws are made again from its starting generator.
                    state.generator = at_start;
                    state.partial = Some(partial);
                    sink.stopped(&state)?;
                    return Err(ModelError::Cancelled);
                }
            };
            // The next clip's motion frames: the last ones of this clip, back in [-1, 1].
            state.motion = Some(
                out.frames
                    .narrow(1, f - params.motion_frames, params.motion_frames)?
                    .affine(2.0, -1.0)?,
            );
            state.next_clip += 1;
            observer.clip_done(clip, &out);
            let keep = inputs.audio_length.saturating_sub(clip * f).min(f);
            sink.clip(clip, &out.frames.narrow(1, 0, keep)?, &state)?;
        }
        Ok(())
    }

    /// Image- and audio-side conditioning shared by every clip.
    pub fn conditions(
        &self,
        inputs: &PreparedInputs,
        params: &GenerationParams,
    ) -> Result<Conditions> {
        let dev = &self.device;
        let dt = self.dtype;
        let (_, h, w) = inputs.source_pixels.dims3()?;
        if h % 64 != 0 || w % 64 != 0 {
            return Err(candle_core::Error::Msg(format!(
                "image side must be a multiple of 64, got {w}×{h}"
            ))
            .into());
        }
        let f = params.clip_frames;
        let total = inputs.audio.frames()?;
        if total == 0 || f <= params.motion_frames {
            return Err(candle_core::Error::Msg(format!(
                "audio features have {total} frames and clips {f} frames ({} motion frames): \
                 need at least one frame and more clip frames than motion frames",
                params.motion_frames
            ))
            .into());
        }
        // Face tokens: [ImageProj(0), ImageProj(face_emb)] (uncond row first).
        let face_emb = inputs.face_emb.to_device(dev)?.to_dtype(dt)?.unsqueeze(0)?;
        let cond = self.net.imageproj.forward(&face_emb)?;
        let uncond = self.net.imageproj.forward(&face_emb.zeros_like()?)?;
        let face_tokens = Tensor::cat(&[uncond, cond], 0)?;
        // Face locator on the face box repeated over the clip's frames: (1, 3, F, H, W).
        let region = inputs.face_region.to_device(dev)?.to_dtype(dt)?;
        let locator_in = region.unsqueeze(1)?.repeat((1, f, 1, 1))?.unsqueeze(0)?;
        let locator = self.net.face_locator.forward(&locator_in)?;
        let mask_cond_fea = Tensor::cat(&[locator.zeros_like()?, locator], 0)?;
        // Masks (1, hw) → (2F, hw): repeated per frame, then duplicated for the CFG halves.
        let per_frame = |m: &Tensor| -> candle_core::Result<Tensor> {
            m.to_device(dev)?.to_dtype(dt)?.repeat((2 * f, 1))
        };
        let level = |ms: &[Tensor; 4]| -> candle_core::Result<Vec<Tensor>> {
            ms.iter().map(per_frame).collect()
        };
        let masks = AudioMasks {
            full: level(&inputs.full_mask)?,
            face: level(&inputs.face_mask)?,
            lip: level(&inputs.lip_mask)?,
        };
        Ok(Conditions {
            source_pixels: inputs.source_pixels.to_device(dev)?.to_dtype(DType::F32)?,
            face_region: inputs.face_region.to_device(dev)?.to_dtype(DType::F32)?,
            face_tokens,
            mask_cond_fea,
            masks,
            audio: inputs.audio.clone(),
            clips: total.div_ceil(f),
            scheduler: self.scheduler(params.steps)?,
        })
    }

    /// One clip: reference pass, `steps` guided DDIM steps, frame-by-frame decoding.
    /// `motion`: the previous clip's last frames `(3, M, H, W)` in [-1, 1] (None for clip 0).
    pub fn clip(
        &self,
        cond: &Conditions,
        params: &GenerationParams,
        clip: usize,
        motion: Option<&Tensor>,
        generator: &mut TorchGenerator,
        observer: &mut dyn Observer,
    ) -> Result<ClipOutput> {
        match self.clip_from(cond, params, clip, motion, generator, None, observer)? {
            ClipRun::Done(out) => Ok(out),
            ClipRun::Stopped(_) => Err(ModelError::Cancelled),
        }
    }

    /// [`Self::clip`], continuing from `partial` when given (its draws are made again, so
    /// `generator` must be the clip's starting one; the saved latents replace the noise and the
    /// steps before `partial.step` are skipped). Stops between two steps when the observer asks.
    #[allow(clippy::too_many_arguments)]
    fn clip_from(
        &self,
        cond: &Conditions,
        params: &GenerationParams,
        clip: usize,
        motion: Option<&Tensor>,
        generator: &mut TorchGenerator,
        partial: Option<&PartialClip>,
        observer: &mut dyn Observer,
    ) -> Result<ClipRun> {
        let dev = &self.device;
        let dt = self.dtype;
        let scheduler = &cond.scheduler;
        let (f, m) = (params.clip_frames, params.motion_frames);
        let (_, h, w) = cond.source_pixels.dims3()?;
        let report = |observer: &mut dyn Observer, step, stage| {
            observer.progress(Progress {
                clip,
                clips: cond.clips,
                step,
                steps: params.steps,
                stage,
            })
        };
        report(observer, 0, Stage::Reference);

        // Reference + motion frames; clip 0 uses the source image as motion frames.
        let source = cond.source_pixels.unsqueeze(1)?;
        let motion = match motion {
            Some(frames) => frames.to_device(dev)?.to_dtype(DType::F32)?,
            None => source.repeat((1, m, 1, 1))?,
        };
        // The random pixel drop is drawn even for clip 0, before the noise (RNG order matters).
        let motion = match params.mask_rate {
            Some(rate) => {
                let draw = generator.rand(&[h, w])?.to_device(dev)?;
                let keep = draw.gt(rate)?.maximum(&cond.face_region.i(0)?.ne(0f64)?)?;
                motion.broadcast_mul(&keep.to_dtype(DType::F32)?)?
            }
            None => motion,
        };
        // (3, 1+M, H, W) → (1+M, 3, H, W)
        let images = Tensor::cat(&[source, motion], 1)?
            .transpose(0, 1)?
            .contiguous()?;
        let latents_ref = self.encode(&images)?;

        // Initial noise (1, 4, F, h, w), init_noise_sigma = 1.
        let (lh, lw) = (h / 8, w / 8);
        let mut latents = generator.randn(&[1, 4, f, lh, lw])?.to_device(dev)?;
        latents = (latents * scheduler.init_noise_sigma())?;
        let first_step = match partial {
            Some(p) => {
                latents = p.latents.to_device(dev)?.to_dtype(DType::F32)?;
                p.step
            }
            None => 0,
        };
        let stopped = |step: usize, latents: &Tensor| -> Result<ClipRun> {
            Ok(ClipRun::Stopped(PartialClip {
                step,
                latents: latents.to_device(&Device::Cpu)?,
            }))
        };

        let guidance = Guidance::new(params.cfg_scale);
        let face_tokens = guidance.conditional_rows(&cond.face_tokens)?;
        let ref_sample = guidance.model_input(&latents_ref)?.to_dtype(dt)?;
        let (_, bank) = self
            .net
            .reference_unet
            .forward(&ref_sample, 0.0, &face_tokens)?;
        let reference = ReaderBank::new(
            &bank,
            &self.net.denoising_unet.reader_blocks(),
            guidance.enabled(),
        )?;

        // This clip's audio: (1, F, 5, L, C) → tokens (1, F, N, C); uncond row is exact zeros.
        let windows = cond
            .audio
            .windows(clip * f, f)?
            .to_device(dev)?
            .to_dtype(dt)?;
        let audio = self.net.audioproj.forward(&windows.unsqueeze(0)?)?;
        let audio = if guidance.enabled() {
            Tensor::cat(&[audio.zeros_like()?, audio], 0)?
        } else {
            audio
        };
        // The masks are the same for every row (repeated per frame and half).
        let rows = |ms: &[Tensor]| -> candle_core::Result<Vec<Tensor>> {
            ms.iter()
                .map(|m| m.narrow(0, 0, guidance.rows() * f))
                .collect()
        };
        let unet_conditions = UNet3DConditions {
            encoder_hidden_states: face_tokens,
            audio_embedding: audio,
            mask_cond_fea: Some(guidance.conditional_rows(&cond.mask_cond_fea)?),
            masks: AudioMasks {
                full: rows(&cond.masks.full)?,
                face: rows(&cond.masks.face)?,
                lip: rows(&cond.masks.lip)?,
            },
            motion_scale: params.motion_scale,
            reference,
        };

        let timesteps = scheduler.timesteps().to_vec();
        for (step, &t) in timesteps.iter().enumerate().skip(first_step) {
            if observer.cancelled() {
                return stopped(step, &latents);
            }
            report(observer, step, Stage::Denoise);
            latents = self.denoise_step(&latents, t, &unet_conditions, guidance, scheduler)?;
        }
        if observer.cancelled() {
            return stopped(timesteps.len(), &latents);
        }
        report(observer, params.steps, Stage::Decode);
        let frames = self.decode(&latents)?;
        Ok(ClipRun::Done(ClipOutput { frames, latents }))
    }

    /// One DDIM step of `latents` `(1, 4, F, h, w)` at timestep `t`: the UNet on one row per
    /// guidance row, the rows combined (see [`Guidance`]), the scheduler's update.
    pub fn denoise_step(
        &self,
        latents: &Tensor,
        t: usize,
        conditions: &UNet3DConditions,
        guidance: Guidance,
        scheduler: &DDIMScheduler,
    ) -> Result<Tensor> {
        let input = guidance.model_input(latents)?.to_dtype(self.dtype)?;
        let v = self
            .net
            .denoising_unet
            .forward(&input, t as f64, conditions)?
            .to_dtype(DType::F32)?;
        Ok(scheduler
            .step(&guidance.combine(&v)?, t, latents)?
            .prev_sample)
    }

    /// A DDIM scheduler set to `steps` steps.
    pub fn scheduler(&self, steps: usize) -> Result<DDIMScheduler> {
        let mut scheduler = DDIMScheduler::new(&self.scheduler)?;
        scheduler.set_timesteps(steps)?;
        Ok(scheduler)
    }

    /// VAE latent means of `(n, 3, H, W)` images in [-1, 1], scaled: `(n, 4, H/8, W/8)` f32.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let mean = self.vae.encode(&images.to_dtype(self.dtype)?)?.mean;
        Ok((mean.to_dtype(DType::F32)? * VAE_SCALING_FACTOR)?)
    }

    /// Decodes `(1, 4, F, h, w)` latents one frame at a time into `(3, F, H, W)` in [0, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let (_, _, f, _, _) = latents.dims5()?;
        let latents = (latents / VAE_SCALING_FACTOR)?;
        let mut frames = Vec::with_capacity(f);
        for i in 0..f {
            let z = latents.i((.., .., i))?.contiguous()?.to_dtype(self.dtype)?;
            let x = self.vae.decode(&z)?.to_dtype(DType::F32)?;
            frames.push(((x / 2.0)? + 0.5)?.clamp(0f32, 1f32)?);
        }
        // F × (1, 3, H, W) → (3, F, H, W)
        Ok(Tensor::cat(&frames, 0)?
            .transpose(0, 1)?
            .contiguous()?
            .to_dtype(DType::F32)?)
    }
}

/// Classifier-free guidance as upstream decides it: on only when it changes something
/// (`do_classifier_free_guidance = guidance_scale > 1.0`). On, every condition is an
/// `[uncond, cond]` stack of batch rows; off, the UNet runs the conditional row alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    scale: f64,
}

impl Guidance {
    pub fn new(cfg_scale: f64) -> Self {
        Self { scale: cfg_scale }
    }

    pub fn enabled(self) -> bool {
        self.scale > 1.0
    }

    /// Batch rows per frame: 2 (`[uncond, cond]`) with guidance, 1 without.
    pub fn rows(self) -> usize {
        if self.enabled() { 2 } else { 1 }
    }

    /// The rows of an `[uncond, cond]` stack the UNet reads: all with guidance, the
    /// conditional half without.
    pub fn conditional_rows(self, stack: &Tensor) -> candle_core::Result<Tensor> {
        if self.enabled() {
            Ok(stack.clone())
        } else {
            let half = stack.dim(0)? / 2;
            stack.narrow(0, half, half)
        }
    }

    /// The UNet's input: `latents` once per row.
    pub fn model_input(self, latents: &Tensor) -> candle_core::Result<Tensor> {
        Tensor::cat(&vec![latents; self.rows()], 0)
    }

    /// One prediction from the rows' predictions: `u + scale · (c − u)` with guidance.
    pub fn combine(self, prediction: &Tensor) -> candle_core::Result<Tensor> {
        if !self.enabled() {
            return Ok(prediction.clone());
        }
        let (uncond, cond) = (prediction.i(0..1)?, prediction.i(1..2)?);
        &uncond + ((cond - &uncond)? * self.scale)?
    }
}

/// Per-video conditioning computed once by [`Pipeline::conditions`].
pub struct Conditions {
    pub source_pixels: Tensor,
    pub face_region: Tensor,
    /// `(2, tokens, C)`: [uncond, cond].
    pub face_tokens: Tensor,
    /// `(2, C, F, h, w)`: [zeros, FaceLocator(face box)].
    pub mask_cond_fea: Tensor,
    pub masks: AudioMasks,
    pub audio: AudioConditioning,
    pub clips: usize,
    /// DDIM set to the run's step count.
    pub scheduler: DDIMScheduler,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let base = GenerationParams::hallo2();
        assert_eq!(
            base.clone().with_overrides(&ParamOverrides::default()),
            base
        );
        let p = base.clone().with_overrides(&ParamOverrides {
            steps: Some(6),
            face_weight: Some(1.5),
            seed: Some(7),
            ..ParamOverrides::default()
        });
        assert_eq!((p.steps, p.cfg_scale, p.seed), (6, 3.5, 7));
        assert_eq!(p.motion_scale, [1.0, 1.5, 1.0]);
        assert_eq!((p.clip_frames, p.mask_rate), (16, Some(0.25)));
    }
}
