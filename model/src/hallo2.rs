//! Hallo2 as one thing: load it from an official `pretrained_models/` folder, then turn a
//! portrait and a speech file into an MP4. The studio's worker and the `hallo2` CLI are thin
//! callers of [`Hallo2::load`] and [`Hallo2::generate`].
//!
//! ```text
//! portrait ─▶ face path (box, mesh, masks, identity) ───────────┐
//! speech file ─▶ decode ─▶ 16 kHz samples file ─▶ wav2vec2 per 60 s ─▶ feature file ─┤
//!                               └─▶ Opus packets file                                   │
//!     clips (each reads its rows of the feature file) ◀──────────────────────────────────┘
//!       ─▶ YUV ─▶ H.264 group ─▶ work dir (checkpoint after every group)
//!     work dir + Opus file ─▶ fast-start MP4 (streamed) ─▶ out
//! ```
//!
//! Nothing that grows with the audio's length sits in memory: the speech file is decoded in
//! packets into a file of samples, wav2vec2 reads one 60 s segment of it at a time (its CNN in
//! 5 s pieces) and appends its rows to a feature file, each clip reads its own rows, the Opus
//! packets go to a file, frames leave clip by clip, H.264 goes to a sample file, and the MP4 is
//! written from the files. Peak memory is the same for 10 s and 10 minutes (`memory_bench`).
//!
//! **Checkpoints.** Frames are encoded in groups of `checkpoint_clips` clips, each by a fresh
//! encoder (so each group's bytes depend on its frames alone). After a group the work dir holds
//! the samples so far and `checkpoint.json` + `checkpoint-<clip>.safetensors` (the next clip, its
//! motion frames, the generator), written atomically. A run stopped between two steps (a
//! shutdown, a cancel) checkpoints right there: the running clip's latents and step, and the
//! finished clips of the group in progress, raw (`checkpoint-<clip>.yuv`); nothing is lost. A
//! crash loses what came after the last group. [`Hallo2::generate`] on a work dir with a
//! checkpoint of the same request continues from it; the MP4 is then the same, byte for byte,
//! as an uninterrupted run's.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::audio_features::{AudioFeatures, FeatureSummary, SAMPLE_RATE, plan_segments};
use crate::audio_io::{
    AudioInput, AudioLimits, CacheKey, FeatureCache, FeatureFileWriter, FeatureRows, SamplesFile,
    decode_to_samples_file, decode_with_vocals, file_blake3, weights_fingerprint,
};
use crate::config::{InferenceConfig, WeightsLayout};
use crate::error::{ModelError, Result};
use crate::face::FaceDetector;
use crate::face::embedding::FaceAnalysis;
use crate::face::masks::MaskConfig;
use crate::face::preflight::{FacePreflight, FacePreprocessor};
use crate::heads::ModelHeads;
use crate::loader::{self, LoadEvent, LoadOptions, LoadStage};
use crate::media::{
    H264Track, Mp4Options, Mp4Summary, OpusWriter, TrackLength, VideoTrack, Yuv420, finish_mp4,
    frames_to_yuv, opus_target,
};
use crate::pipeline::{
    AudioConditioning, FrameSink, GenerationParams, LoopState, Observer, PartialClip, Pipeline,
    PreparedInputs,
};
use crate::torch_rng::{GeneratorState, TorchGenerator};
use crate::vocals::VocalSeparator;
use crate::wav2vec2::{Wav2Vec2Config, Wav2Vec2Model};
use crate::weights::{SafetensorsFile, WeightBackend};

/// The loaded model: the denoising pipeline, the audio encoder and the face models.
pub struct Hallo2 {
    pub pipeline: Pipeline,
    pub audio_encoder: Wav2Vec2Model,
    /// SCRFD + ArcFace from `face_analysis/models/`.
    pub face_analysis: FaceAnalysis,
    /// BlazeFace + FaceMesh (bundled in the binary), for the masks.
    pub face_detector: Arc<FaceDetector>,
    /// Kim_Vocal_2 when loaded ([`LoadOptions::vocal_separator`]).
    pub vocal_separator: Option<VocalSeparator>,
    pub layout: WeightsLayout,
    pub inference: InferenceConfig,
}

/// Folder of the audio feature cache under a job's cache folder.
pub const FEATURE_CACHE_DIR: &str = "audio-features";

/// The feature-cache key's separation part for features of the raw mix.
pub const NO_SEPARATION: &str = "none";

/// One generation: inputs, choices and where caches go.
pub struct GenerateRequest<'a> {
    pub image: &'a RgbImage,
    /// The speech file (its extension is a hint for the decoder). It is read in pieces, never
    /// whole.
    pub audio: &'a Path,
    pub params: GenerationParams,
    pub face_expand_ratio: f64,
    /// Face and audio-feature caches (None: compute every time).
    pub cache_dir: Option<&'a Path>,
    /// Separate the vocals before wav2vec2, as the official pipeline does (needs the separator
    /// loaded). The video's audio track is the original mix either way.
    pub separate_vocals: bool,
}

/// Where a generation writes.
pub struct VideoOutput<'a> {
    /// The MP4 (written under a temporary name, renamed when complete).
    pub path: &'a Path,
    /// Samples and checkpoints; a run finds its checkpoint here after an interruption.
    pub work_dir: &'a Path,
    pub mp4: Mp4Options,
    /// Clips per checkpoint (and per H.264 group, so per IDR frame at least).
    pub checkpoint_clips: usize,
}

/// Whole clips per checkpoint for `seconds` of video at `fps` (at least one clip): the studio's
/// `checkpoint_seconds` and the CLI's `--checkpoint-seconds` go through this, so the same
/// setting gives the same groups, and so the same video.
pub fn checkpoint_clips(seconds: f64, fps: u32, clip_frames: usize) -> usize {
    let frames = seconds * f64::from(fps);
    ((frames / clip_frames.max(1) as f64).round() as usize).max(1)
}

/// What a finished generation made.
#[derive(Debug, Clone)]
pub struct GenerateSummary {
    pub mp4: Mp4Summary,
    pub seed: u64,
    pub clips: usize,
    /// The clip the run resumed from (None: it started at clip 0).
    pub resumed_from: Option<usize>,
}

/// The parts of a generation, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Face and audio paths.
    Preprocess,
    /// Clips (the pipeline reports steps through [`Observer::progress`]).
    Generate { clips: usize },
    /// The MP4 is written from the encoded samples.
    Mux,
}

/// `Observer` plus what a whole generation reports.
pub trait GenerateObserver: Observer {
    fn phase(&mut self, _phase: Phase) {}
    /// The run continues from a checkpoint at `clip` (0-based) instead of clip 0.
    fn resumed(&mut self, _clip: usize) {}
}

impl Hallo2 {
    /// Loads everything from `layout`: `loader::load`'s stages, with the face models and the
    /// audio encoder read right after `verify` (reported as [`LoadStage::FaceAnalysis`] and
    /// [`LoadStage::AudioEncoder`]). `on_event` may stop the load between stages.
    pub fn load(
        layout: &WeightsLayout,
        inference: &InferenceConfig,
        options: &LoadOptions,
        face_detector: Arc<FaceDetector>,
        on_event: &mut dyn FnMut(LoadEvent) -> ControlFlow<()>,
    ) -> Result<Self> {
        let mut side: Option<Result<SideModels>> = None;
        let loaded = loader::load(layout, inference, options, &mut |event| {
            if matches!(side, Some(Err(_))) {
                // A side load failed: the caller hears of no stage after the one that failed.
                return ControlFlow::Break(());
            }
            let verified = matches!(
                event,
                LoadEvent::Done {
                    stage: LoadStage::Verify,
                    ..
                }
            );
            if on_event(event).is_break() {
                return ControlFlow::Break(());
            }
            if verified {
                let loaded = load_side(layout, options, on_event);
                let failed = loaded.is_err();
                side = Some(loaded);
                if failed {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(Err(e)) = side {
            return Err(e);
        }
        let loaded = loaded?;
        let Some(Ok((face_analysis, audio_encoder, vocal_separator))) = side else {
            return Err(ModelError::Cancelled);
        };
        Ok(Self {
            pipeline: loaded.pipeline,
            audio_encoder,
            face_analysis,
            face_detector,
            vocal_separator,
            layout: layout.clone(),
            inference: inference.clone(),
        })
    }

    /// One pass at the smallest size the model takes (64×64, one clip, zero inputs): the
    /// kernels are warm afterwards. Returns seconds per denoising step.
    pub fn warmup(&self, steps: usize, observer: &mut dyn Observer) -> Result<f64> {
        let mut params = self.inference.generation_params();
        params.steps = steps;
        let inputs = zero_inputs(&self.pipeline.net.heads, params.clip_frames, 64)?;
        let mut timer = StepTimer {
            inner: observer,
            first_step: None,
            decode: None,
        };
        self.pipeline.generate(&inputs, &params, &mut timer)?;
        Ok(match (timer.first_step, timer.decode) {
            (Some(a), Some(b)) => (b - a).as_secs_f64() / steps.max(1) as f64,
            _ => 0.0,
        })
    }

    /// The face path for `image` (through the cache when there is one).
    pub fn prepare_face(
        &self,
        image: &RgbImage,
        face_expand_ratio: f64,
        cache_dir: Option<&Path>,
    ) -> Result<FacePreflight> {
        let masks = MaskConfig {
            image_size: self.inference.data.source_image.width,
            face_expand_ratio,
        };
        let faces = FacePreprocessor::new(&self.face_detector, &self.face_analysis, masks);
        let face = match cache_dir {
            Some(dir) => faces
                .prepare_cached(image, &dir.join("face"))
                .map(|(f, _)| f),
            None => faces.prepare(image),
        };
        Ok(face?)
    }

    /// The feature-cache key of the audio file whose BLAKE3 is `audio_hash`, its vocals taken as
    /// `separation` says ([`NO_SEPARATION`] or the separator's fingerprint).
    fn feature_key(
        &self,
        audio_hash: &str,
        separation: &str,
        clip_frames: usize,
    ) -> Result<CacheKey> {
        let weights = self.layout.wav2vec_dir().join("model.safetensors");
        Ok(CacheKey::for_audio_hash(
            audio_hash.to_string(),
            &weights_fingerprint(&weights)?,
            separation,
            clip_frames,
        ))
    }

    /// `key`'s features from the cache in `cache_dir`, when it has them.
    fn cached_features(
        key: &CacheKey,
        cache_dir: Option<&Path>,
    ) -> Option<(FeatureRows, FeatureSummary)> {
        FeatureCache::new(cache_dir?.join(FEATURE_CACHE_DIR)).open(key)
    }

    /// The features of `samples` for `key`, computed one 60 s segment at a time into a file (the
    /// cache's, or `scratch/features.safetensors` without a cache).
    fn compute_features(
        &self,
        key: &CacheKey,
        samples: &SamplesFile,
        clip_frames: usize,
        cache_dir: Option<&Path>,
        scratch: &Path,
    ) -> Result<(FeatureRows, FeatureSummary)> {
        let cache = cache_dir.map(|dir| FeatureCache::new(dir.join(FEATURE_CACHE_DIR)));
        let path = match &cache {
            Some(cache) => cache.path(key),
            None => scratch.join("features.safetensors"),
        };
        let plan = plan_segments(samples.len, clip_frames)?;
        let summary = FeatureSummary::of(&plan);
        let metadata = key.metadata(&summary);
        let mut writer: Option<FeatureFileWriter> = None;
        let wrap = |e: crate::audio_io::AudioError| candle_core::Error::wrap(e);
        AudioFeatures::compute_segments(
            &self.audio_encoder,
            &plan,
            &mut |range| samples.read(range).map_err(wrap),
            &mut |emb| {
                let writer = match &mut writer {
                    Some(w) => w,
                    None => {
                        let (_, l, c) = emb.dims3()?;
                        let created =
                            FeatureFileWriter::create(&path, [summary.seq_len, l, c], &metadata);
                        writer.insert(created.map_err(wrap)?)
                    }
                };
                writer.append(&emb).map_err(wrap)
            },
        )?;
        let Some(writer) = writer else {
            // plan_segments fails on audio with no segment, so this cannot happen.
            return Err(candle_core::Error::Msg("the audio gave no feature rows".into()).into());
        };
        let path = writer.finish()?;
        Ok((FeatureRows::open(&path)?, summary))
    }

    /// Portrait + speech → MP4 at `out.path`, continuing from a checkpoint in `out.work_dir`
    /// when it holds one of this very request. The work dir is emptied when the MP4 is done.
    pub fn generate(
        &self,
        request: &GenerateRequest<'_>,
        out: &VideoOutput<'_>,
        observer: &mut dyn GenerateObserver,
    ) -> Result<GenerateSummary> {
        let params = &request.params;
        observer.phase(Phase::Preprocess);
        let face =
            self.prepare_face(request.image, request.face_expand_ratio, request.cache_dir)?;
        check(observer)?;

        // Resume from this request's checkpoint, if the work dir has one.
        let audio_hash = file_blake3(request.audio)?;
        let work = WorkDir::new(out.work_dir)?;
        let fingerprint = request_fingerprint(request, &audio_hash, out);
        let (state, length, pending) = match work.load(&fingerprint)? {
            Some(saved) => saved,
            None => {
                work.clear()?;
                (LoopState::start(params), TrackLength::default(), Vec::new())
            }
        };

        // The audio path, through files (see the module docs).
        let scratch = work.scratch()?;
        let limits = AudioLimits {
            max_duration_s: MAX_AUDIO_S,
            ..AudioLimits::default()
        };
        let extension = request.audio.extension().and_then(|e| e.to_str());
        let separator = match request.separate_vocals {
            false => None,
            true => Some(self.vocal_separator.as_ref().ok_or_else(|| {
                ModelError::Config {
                    path: self.layout.vocal_separator(),
                    message: "vocal separation was asked for but the separator is not loaded \
                              (vocal_separation is off in the studio's config)"
                        .into(),
                }
            })?),
        };
        let separation =
            separator.map_or_else(|| NO_SEPARATION.to_string(), VocalSeparator::fingerprint);
        let key = self.feature_key(&audio_hash, &separation, params.clip_frames)?;
        let cached = Self::cached_features(&key, request.cache_dir);
        // The mix is decoded either way (the video's audio track); the separation only feeds
        // wav2vec2, so cached features skip it.
        let input = AudioInput::File(request.audio);
        let mix_path = scratch.join("audio-16k.f32");
        let (samples, vocals) = match separator.filter(|_| cached.is_none()) {
            Some(separator) => {
                let vocals_path = scratch.join("vocals-16k.f32");
                let (mix, vocals) = decode_with_vocals(
                    input,
                    extension,
                    &limits,
                    separator,
                    &mix_path,
                    &vocals_path,
                )?;
                (mix, Some(vocals))
            }
            None => (
                decode_to_samples_file(input, extension, &limits, &mix_path)?,
                None,
            ),
        };
        let (rows, features) = match cached {
            Some(hit) => hit,
            None => self.compute_features(
                &key,
                vocals.as_ref().unwrap_or(&samples),
                params.clip_frames,
                request.cache_dir,
                &scratch,
            )?,
        };
        if let Some(vocals) = &vocals {
            let _ = std::fs::remove_file(&vocals.path);
        }
        let fps = out.mp4.fps;
        let mut opus = OpusWriter::create(
            &scratch.join("audio.opus"),
            SAMPLE_RATE as u32,
            opus_target(features.audio_length, fps),
            out.mp4.audio_bitrate_bps,
        )?;
        samples.for_each_block(1 << 16, &mut |block| -> Result<()> {
            Ok(opus.push(block)?)
        })?;
        let opus = opus.finish()?;
        let _ = std::fs::remove_file(&samples.path);
        check(observer)?;
        let inputs = PreparedInputs {
            source_pixels: face.source_pixels.clone(),
            face_region: face.masks.face_region.clone(),
            face_emb: face.face_emb.clone(),
            full_mask: face.masks.full_mask.clone(),
            face_mask: face.masks.face_mask.clone(),
            lip_mask: face.masks.lip_mask.clone(),
            audio: AudioConditioning::Rows(Arc::new(rows)),
            audio_length: features.audio_length,
        };
        let clips = Pipeline::clip_count(&inputs, params)?;
        let size = inputs.source_pixels.dim(1)?;
        let track = VideoTrack::in_dir(out.work_dir, size, size, fps);
        let resumed_from = (state.next_clip > 0).then_some(state.next_clip);
        if let Some(clip) = resumed_from {
            observer.resumed(clip);
        }
        let mut sink = CheckpointSink {
            track: H264Track::open(track, &out.mp4, length)?,
            pending,
            group: out.checkpoint_clips.max(1),
            clips,
            work: &work,
            fingerprint: &fingerprint,
        };
        observer.phase(Phase::Generate { clips });
        self.pipeline
            .generate_into(&inputs, params, state, observer, &mut sink)?;
        check(observer)?;
        observer.phase(Phase::Mux);
        let mp4 = finish_mp4(out.path, &sink.track, &opus)?;
        drop(sink);
        work.clear()?;
        Ok(GenerateSummary {
            mp4,
            seed: params.seed,
            clips,
            resumed_from,
        })
    }
}

fn check(observer: &dyn GenerateObserver) -> Result<()> {
    if observer.cancelled() {
        Err(ModelError::Cancelled)
    } else {
        Ok(())
    }
}

/// What [`load_side`] loads.
type SideModels = (FaceAnalysis, Wav2Vec2Model, Option<VocalSeparator>);

/// The face models, the audio encoder and (when asked) the vocal separator, each announced as
/// its own stage.
fn load_side(
    layout: &WeightsLayout,
    options: &LoadOptions,
    on_event: &mut dyn FnMut(LoadEvent) -> ControlFlow<()>,
) -> Result<SideModels> {
    let stage = |stage: LoadStage, on_event: &mut dyn FnMut(LoadEvent) -> ControlFlow<()>| {
        let _ = on_event(LoadEvent::Started(stage));
        std::time::Instant::now()
    };
    let t = stage(LoadStage::FaceAnalysis, on_event);
    let dir = layout.root.join("face_analysis/models");
    let face = FaceAnalysis::new(&dir).map_err(|e| ModelError::Weights {
        path: dir.clone(),
        message: format!(
            "loading the face analysis models (scrfd_10g_bnkps.onnx, glintr100.onnx): {e}"
        ),
    })?;
    let _ = on_event(LoadEvent::Done {
        stage: LoadStage::FaceAnalysis,
        elapsed: t.elapsed(),
    });
    let t = stage(LoadStage::AudioEncoder, on_event);
    let encoder = build_audio_encoder(layout, &options.device)?;
    let _ = on_event(LoadEvent::Done {
        stage: LoadStage::AudioEncoder,
        elapsed: t.elapsed(),
    });
    let separator = if options.vocal_separator {
        let t = stage(LoadStage::VocalSeparator, on_event);
        let separator =
            VocalSeparator::load(&layout.vocal_separator(), &layout.vocal_separator_data())
                .map_err(|e| ModelError::Weights {
                    path: layout.vocal_separator(),
                    message: e.to_string(),
                })?;
        let _ = on_event(LoadEvent::Done {
            stage: LoadStage::VocalSeparator,
            elapsed: t.elapsed(),
        });
        Some(separator)
    } else {
        None
    };
    Ok((face, encoder, separator))
}

/// wav2vec2 from `wav2vec/wav2vec2-base-960h/` (f32, as Hallo runs it even in fp16 runs).
pub fn build_audio_encoder(layout: &WeightsLayout, device: &Device) -> Result<Wav2Vec2Model> {
    let dir = layout.wav2vec_dir();
    let cfg = Wav2Vec2Config::from_file(&dir.join("config.json"))?;
    let file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
    let (backend, _unused) = WeightBackend::new(vec![file]);
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
    Wav2Vec2Model::new(&cfg, vb).map_err(|e| ModelError::Weights {
        path: dir.join("model.safetensors"),
        message: e.to_string(),
    })
}

/// Zero conditioning at `side`×`side` (a multiple of 64) for one clip of `frames` frames: what
/// the warm-up pass and the stage benchmark run (the cost of a pass does not depend on values).
pub fn zero_inputs(heads: &ModelHeads, frames: usize, side: usize) -> Result<PreparedInputs> {
    let dev = &Device::Cpu;
    let masks = || -> candle_core::Result<[Tensor; 4]> {
        let level = |div: usize| Tensor::zeros((1, (side / div) * (side / div)), DType::F32, dev);
        Ok([level(8)?, level(16)?, level(32)?, level(64)?])
    };
    let a = &heads.audio_proj;
    Ok(PreparedInputs {
        source_pixels: Tensor::zeros((3, side, side), DType::F32, dev)?,
        face_region: Tensor::zeros((3, side, side), DType::F32, dev)?,
        face_emb: Tensor::zeros(heads.image_proj.clip_embeddings_dim, DType::F32, dev)?,
        full_mask: masks()?,
        face_mask: masks()?,
        lip_mask: masks()?,
        audio: AudioConditioning::Windows(Tensor::zeros(
            (frames, a.seq_len, a.blocks, a.channels),
            DType::F32,
            dev,
        )?),
        audio_length: frames,
    })
}

/// Times the first denoising step and the decode of a warm-up pass, passing progress on.
struct StepTimer<'a> {
    inner: &'a mut dyn Observer,
    first_step: Option<std::time::Instant>,
    decode: Option<std::time::Instant>,
}

impl Observer for StepTimer<'_> {
    fn progress(&mut self, p: crate::pipeline::Progress) {
        use crate::pipeline::Stage;
        match p.stage {
            Stage::Denoise if p.step == 0 => self.first_step = Some(std::time::Instant::now()),
            Stage::Decode => self.decode = Some(std::time::Instant::now()),
            _ => {}
        }
        self.inner.progress(p);
    }

    fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }
}

/// Identifies a request (its audio by `audio_hash`) and its output settings: a checkpoint is
/// only continued by the same.
fn request_fingerprint(
    request: &GenerateRequest<'_>,
    audio_hash: &str,
    out: &VideoOutput<'_>,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"hallo2-checkpoint-v2");
    h.update(&request.image.width().to_le_bytes());
    h.update(&request.image.height().to_le_bytes());
    h.update(request.image.as_raw());
    h.update(audio_hash.as_bytes());
    h.update(format!("{:?}", request.params).as_bytes());
    h.update(&request.face_expand_ratio.to_le_bytes());
    h.update(&[u8::from(request.separate_vocals)]);
    h.update(format!("{:?}|{}", out.mp4, out.checkpoint_clips.max(1)).as_bytes());
    h.finalize().to_hex().to_string()
}

/// Encodes each group of clips and checkpoints after it.
struct CheckpointSink<'a> {
    track: H264Track,
    /// Frames of the clips of the group in progress (not encoded yet).
    pending: Vec<Yuv420>,
    group: usize,
    clips: usize,
    work: &'a WorkDir,
    fingerprint: &'a str,
}

impl FrameSink for CheckpointSink<'_> {
    fn clip(&mut self, clip: usize, frames: &Tensor, next: &LoopState) -> Result<()> {
        self.pending.extend(frames_to_yuv(frames)?);
        // Groups are fixed by clip index, so a resumed run encodes the same groups.
        if (clip + 1).is_multiple_of(self.group) || next.next_clip == self.clips {
            if !self.pending.is_empty() {
                self.track.encode_group(&self.pending)?;
                self.pending.clear();
            }
            self.work
                .save(self.fingerprint, next, self.track.len(), &[])?;
        }
        Ok(())
    }

    /// Stopped between two steps (a shutdown, a cancel): a checkpoint of the running clip's
    /// latents, with the finished clips of the open group saved raw; the next run continues at
    /// that very step and encodes the group whole (the same bytes).
    fn stopped(&mut self, state: &LoopState) -> Result<()> {
        self.work
            .save(self.fingerprint, state, self.track.len(), &self.pending)
    }
}

/// `checkpoint.json`: where a job stands after its last finished group.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    fingerprint: String,
    next_clip: usize,
    track: TrackLength,
    generator: GeneratorState,
    /// The file holding the motion frames of `next_clip` (one per checkpoint, so a crash
    /// between writing it and this record leaves the record's own file in place).
    tensors: Option<String>,
    /// Frames of the group in progress (clips finished but not encoded), raw YUV 4:2:0 of
    /// `track`'s size; saved when a run stops between two steps.
    #[serde(default)]
    pending: Option<PendingFrames>,
    /// Steps of `next_clip` done when the run stopped (its latents are `latents` in `tensors`).
    #[serde(default)]
    partial_step: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PendingFrames {
    file: String,
    frames: usize,
    width: usize,
    height: usize,
}

/// The work dir of one generation: the video samples and the checkpoint.
struct WorkDir {
    dir: PathBuf,
}

const CHECKPOINT_JSON: &str = "checkpoint.json";
/// The work dir's folder for the audio path's files (samples, features, Opus packets), made
/// again by every run.
const SCRATCH: &str = "audio";
/// Longest audio [`Hallo2::generate`] decodes: the studio and the CLI apply their own limits
/// before; this only bounds what a file can make it decode.
const MAX_AUDIO_S: f64 = 4.0 * 3600.0;

/// `checkpoint-<clip>.safetensors`: the motion frames the checkpoint of `next_clip` needs.
fn tensors_name(next_clip: usize) -> String {
    format!("checkpoint-{next_clip:06}.safetensors")
}

/// `checkpoint-<clip>.yuv`: the unencoded frames of the checkpoint of `next_clip`.
fn pending_name(next_clip: usize) -> String {
    format!("checkpoint-{next_clip:06}.yuv")
}

impl WorkDir {
    fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ModelError::io(format!("creating {}", dir.display()), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The checkpoint of `fingerprint`, if there is one (any other is ignored): the loop state,
    /// the committed track and the frames of the group in progress.
    fn load(&self, fingerprint: &str) -> Result<Option<(LoopState, TrackLength, Vec<Yuv420>)>> {
        let Ok(json) = std::fs::read(self.dir.join(CHECKPOINT_JSON)) else {
            return Ok(None);
        };
        let Ok(saved) = serde_json::from_slice::<Checkpoint>(&json) else {
            return Ok(None);
        };
        if saved.fingerprint != fingerprint {
            return Ok(None);
        }
        let Some(generator) = TorchGenerator::from_state(&saved.generator) else {
            return Ok(None);
        };
        let mut tensors = match &saved.tensors {
            Some(name) => match candle_core::safetensors::load(self.dir.join(name), &Device::Cpu) {
                Ok(tensors) => tensors,
                Err(_) => return Ok(None),
            },
            None => HashMap::new(),
        };
        let motion = tensors.remove("motion");
        if saved.next_clip > 0 && motion.is_none() {
            return Ok(None);
        }
        let partial = match (saved.partial_step, tensors.remove("latents")) {
            (None, _) => None,
            (Some(step), Some(latents)) => Some(PartialClip { step, latents }),
            (Some(_), None) => return Ok(None),
        };
        let pending = match &saved.pending {
            None => Vec::new(),
            Some(p) => match self.read_pending(p) {
                Some(frames) => frames,
                None => return Ok(None),
            },
        };
        Ok(Some((
            LoopState {
                next_clip: saved.next_clip,
                motion,
                generator,
                partial,
            },
            saved.track,
            pending,
        )))
    }

    /// The frames of a [`PendingFrames`] file, if it is whole.
    fn read_pending(&self, p: &PendingFrames) -> Option<Vec<Yuv420>> {
        let (w, h) = (p.width, p.height);
        let (luma, chroma) = (w * h, (w / 2) * (h / 2));
        let bytes = std::fs::read(self.dir.join(&p.file)).ok()?;
        if bytes.len() != p.frames * (luma + 2 * chroma) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(luma + 2 * chroma)
                .map(|f| Yuv420 {
                    width: w,
                    height: h,
                    y: f[..luma].to_vec(),
                    u: f[luma..luma + chroma].to_vec(),
                    v: f[luma + chroma..].to_vec(),
                })
                .collect(),
        )
    }

    /// Writes the checkpoint: tensors and `pending` frames, then the record that names them
    /// (each atomically and durably), so the record never points at missing or older files.
    fn save(
        &self,
        fingerprint: &str,
        state: &LoopState,
        track: TrackLength,
        pending: &[Yuv420],
    ) -> Result<()> {
        let mut to_save = HashMap::new();
        if let Some(motion) = &state.motion {
            to_save.insert("motion".to_string(), motion.to_dtype(DType::F32)?);
        }
        if let Some(partial) = &state.partial {
            to_save.insert("latents".to_string(), partial.latents.to_dtype(DType::F32)?);
        }
        let tensors = if to_save.is_empty() {
            None
        } else {
            let name = tensors_name(state.next_clip);
            let tmp = self.dir.join(format!("{name}.tmp"));
            candle_core::safetensors::save(&to_save, &tmp)?;
            self.commit(&tmp, &name)?;
            Some(name)
        };
        let pending = match pending.first() {
            None => None,
            Some(first) => {
                let name = pending_name(state.next_clip);
                let tmp = self.dir.join(format!("{name}.tmp"));
                let mut bytes = Vec::new();
                for f in pending {
                    bytes.extend_from_slice(&f.y);
                    bytes.extend_from_slice(&f.u);
                    bytes.extend_from_slice(&f.v);
                }
                std::fs::write(&tmp, bytes)
                    .map_err(|e| ModelError::io("writing the unencoded frames", e))?;
                self.commit(&tmp, &name)?;
                Some(PendingFrames {
                    file: name,
                    frames: pending.len(),
                    width: first.width,
                    height: first.height,
                })
            }
        };
        let keep: Vec<String> = tensors
            .iter()
            .cloned()
            .chain(pending.as_ref().map(|p| p.file.clone()))
            .collect();
        let record = Checkpoint {
            fingerprint: fingerprint.to_string(),
            next_clip: state.next_clip,
            track,
            generator: state.generator.state(),
            tensors,
            pending,
            partial_step: state.partial.as_ref().map(|p| p.step),
        };
        let tmp = self.dir.join(format!("{CHECKPOINT_JSON}.tmp"));
        let json = serde_json::to_vec(&record)
            .map_err(|e| ModelError::io("encoding the checkpoint", std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(|e| ModelError::io("writing the checkpoint", e))?;
        self.commit(&tmp, CHECKPOINT_JSON)?;
        // Older checkpoints' files are no longer named by the record.
        self.remove_tensors(&keep)
    }

    /// Removes every checkpoint file (tensors, frames) but those in `keep`.
    fn remove_tensors(&self, keep: &[String]) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| ModelError::io(format!("listing {}", self.dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.starts_with("checkpoint-")
                && (name.ends_with(".safetensors") || name.ends_with(".yuv"));
            if ours && !keep.iter().any(|k| k == name.as_ref()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// fsync `tmp`, rename it to `name`, fsync the folder.
    fn commit(&self, tmp: &Path, name: &str) -> Result<()> {
        let io = |e| ModelError::io(format!("saving {}", self.dir.join(name).display()), e);
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(tmp, self.dir.join(name)).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// An empty scratch folder for the audio path.
    fn scratch(&self) -> Result<PathBuf> {
        let dir = self.dir.join(SCRATCH);
        self.remove_scratch()?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| ModelError::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    fn remove_scratch(&self) -> Result<()> {
        let dir = self.dir.join(SCRATCH);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ModelError::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// Removes the samples, the checkpoint and the scratch folder.
    fn clear(&self) -> Result<()> {
        self.remove_scratch()?;
        self.remove_tensors(&[])?;
        for name in [CHECKPOINT_JSON, "video.h264", "video.idx"] {
            match std::fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ModelError::io(format!("removing {name}"), e)),
            }
        }
        Ok(())
    }
}
