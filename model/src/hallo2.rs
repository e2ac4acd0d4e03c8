//! Hallo2 as one thing: load it from an official `pretrained_models/` folder, then turn a
//! portrait and a speech file into an MP4. The studio's worker and the `hallo2` CLI are thin
//! callers of [`Hallo2::load`] and [`Hallo2::generate`].
//!
//! ```text
//! portrait ─▶ face path (box, mesh, masks, identity) ──┐
//! speech ─▶ decode ─▶ wav2vec2 features ───────────────┼─▶ clips ─▶ YUV ─▶ H.264 group ─▶ work dir
//!        └─▶ Opus packets (kept in memory, small) ─────┘   (checkpoint after every group)
//!                                     work dir + Opus ─▶ fast-start MP4 (streamed) ─▶ out
//! ```
//!
//! The video never sits in memory: frames leave clip by clip, H.264 goes to a sample file, and
//! the MP4 is written from that file. What still grows with the audio's length is the audio
//! path's: the decoded samples while preprocessing, the features and the Opus packets.
//!
//! **Checkpoints.** Frames are encoded in groups of `checkpoint_clips` clips, each by a fresh
//! encoder (so each group's bytes depend on its frames alone). After a group the work dir holds
//! the samples so far and `checkpoint.json` + `checkpoint-<clip>.safetensors` (the next clip, its
//! motion frames, the generator), written atomically. [`Hallo2::generate`] on a work dir with a
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

use crate::audio_features::AudioFeatures;
use crate::audio_io::{
    AudioLimits, CacheKey, FeatureCache, decode_audio_bytes, weights_fingerprint,
};
use crate::config::{InferenceConfig, WeightsLayout};
use crate::error::{ModelError, Result};
use crate::face::FaceDetector;
use crate::face::embedding::FaceAnalysis;
use crate::face::masks::MaskConfig;
use crate::face::preflight::{FacePreflight, FacePreprocessor};
use crate::loader::{self, LoadEvent, LoadOptions, LoadStage};
use crate::media::{
    H264Track, Mp4Options, Mp4Summary, TrackLength, VideoTrack, Yuv420, encode_opus_track,
    finish_mp4, frames_to_yuv, opus_target,
};
use crate::pipeline::{
    AudioConditioning, FrameSink, GenerationParams, LoopState, Observer, Pipeline, PreparedInputs,
};
use crate::torch_rng::{GeneratorState, TorchGenerator};
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
    pub layout: WeightsLayout,
    pub inference: InferenceConfig,
}

/// One generation: inputs, choices and where caches go.
pub struct GenerateRequest<'a> {
    pub image: &'a RgbImage,
    /// The speech file's bytes and its extension (a hint for the decoder).
    pub audio: &'a [u8],
    pub audio_extension: Option<&'a str>,
    pub params: GenerationParams,
    pub face_expand_ratio: f64,
    /// Face and audio-feature caches (None: compute every time).
    pub cache_dir: Option<&'a Path>,
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
        let mut side: Option<Result<(FaceAnalysis, Wav2Vec2Model)>> = None;
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
                let loaded = load_side(layout, &options.device, on_event);
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
        let Some(Ok((face_analysis, audio_encoder))) = side else {
            return Err(ModelError::Cancelled);
        };
        Ok(Self {
            pipeline: loaded.pipeline,
            audio_encoder,
            face_analysis,
            face_detector,
            layout: layout.clone(),
            inference: inference.clone(),
        })
    }

    /// One pass at the smallest size the model takes (64×64, one clip, zero inputs): the
    /// kernels are warm afterwards. Returns seconds per denoising step.
    pub fn warmup(&self, steps: usize, observer: &mut dyn Observer) -> Result<f64> {
        let mut params = self.inference.generation_params();
        params.steps = steps;
        let inputs = zero_inputs(&self.inference, params.clip_frames)?;
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

    /// The audio path for `samples_16k` (the features of `bytes`, through the cache when there
    /// is one).
    pub fn audio_features(
        &self,
        bytes: &[u8],
        samples_16k: &[f32],
        clip_frames: usize,
        cache_dir: Option<&Path>,
    ) -> Result<AudioFeatures> {
        let compute = || AudioFeatures::compute(&self.audio_encoder, samples_16k, clip_frames);
        match cache_dir {
            Some(dir) => {
                let weights = self.layout.wav2vec_dir().join("model.safetensors");
                let cache = FeatureCache::new(dir.join("audio-features"));
                let key = CacheKey::new(bytes, &weights_fingerprint(&weights)?, clip_frames);
                Ok(cache
                    .get_or_compute(&key, &Device::Cpu, DType::F32, || Ok(compute()?))
                    .map(|(f, _)| f)?)
            }
            None => Ok(compute()?),
        }
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
        let limits = AudioLimits {
            max_duration_s: f64::INFINITY,
            ..AudioLimits::default()
        };
        let audio = decode_audio_bytes(request.audio, request.audio_extension, &limits)?;
        let features = self.audio_features(
            request.audio,
            &audio.samples_16k,
            params.clip_frames,
            request.cache_dir,
        )?;
        let fps = out.mp4.fps;
        let opus = encode_opus_track(
            &audio.samples_16k,
            crate::audio_features::SAMPLE_RATE as u32,
            opus_target(features.audio_length, fps),
            out.mp4.audio_bitrate_bps,
        )?;
        drop(audio);
        check(observer)?;
        let inputs = PreparedInputs {
            source_pixels: face.source_pixels.clone(),
            face_region: face.masks.face_region.clone(),
            face_emb: face.face_emb.clone(),
            full_mask: face.masks.full_mask.clone(),
            face_mask: face.masks.face_mask.clone(),
            lip_mask: face.masks.lip_mask.clone(),
            audio: AudioConditioning::Embedding(features.audio_emb_f32()?),
            audio_length: features.audio_length,
        };
        drop(features);
        let clips = Pipeline::clip_count(&inputs, params)?;
        let size = inputs.source_pixels.dim(1)?;

        // Resume from this request's checkpoint, if the work dir has one.
        let work = WorkDir::new(out.work_dir)?;
        let fingerprint = request_fingerprint(request, out, clips);
        let track = VideoTrack::in_dir(out.work_dir, size, size, fps);
        let (state, length) = match work.load(&fingerprint)? {
            Some(saved) => saved,
            None => {
                work.clear()?;
                (LoopState::start(params), TrackLength::default())
            }
        };
        let resumed_from = (state.next_clip > 0).then_some(state.next_clip);
        if let Some(clip) = resumed_from {
            observer.resumed(clip);
        }
        let mut sink = CheckpointSink {
            track: H264Track::open(track, &out.mp4, length)?,
            pending: Vec::new(),
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

/// The face models and the audio encoder, each announced as its own stage.
fn load_side(
    layout: &WeightsLayout,
    device: &Device,
    on_event: &mut dyn FnMut(LoadEvent) -> ControlFlow<()>,
) -> Result<(FaceAnalysis, Wav2Vec2Model)> {
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
    let encoder = build_audio_encoder(layout, device)?;
    let _ = on_event(LoadEvent::Done {
        stage: LoadStage::AudioEncoder,
        elapsed: t.elapsed(),
    });
    Ok((face, encoder))
}

/// wav2vec2 from `wav2vec/wav2vec2-base-960h/` (f32, as Hallo runs it even in fp16 runs).
fn build_audio_encoder(layout: &WeightsLayout, device: &Device) -> Result<Wav2Vec2Model> {
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

/// Zero conditioning at 64×64 for one clip of `frames` frames.
fn zero_inputs(inference: &InferenceConfig, frames: usize) -> Result<PreparedInputs> {
    const SIDE: usize = 64;
    let dev = &Device::Cpu;
    let heads = &inference.model_heads;
    let masks = || -> candle_core::Result<[Tensor; 4]> {
        let level = |div: usize| Tensor::zeros((1, (SIDE / div) * (SIDE / div)), DType::F32, dev);
        Ok([level(8)?, level(16)?, level(32)?, level(64)?])
    };
    let a = &heads.audio_proj;
    Ok(PreparedInputs {
        source_pixels: Tensor::zeros((3, SIDE, SIDE), DType::F32, dev)?,
        face_region: Tensor::zeros((3, SIDE, SIDE), DType::F32, dev)?,
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

/// Identifies a request and its output settings: a checkpoint is only continued by the same.
fn request_fingerprint(
    request: &GenerateRequest<'_>,
    out: &VideoOutput<'_>,
    clips: usize,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"hallo2-checkpoint-v1");
    h.update(&request.image.width().to_le_bytes());
    h.update(&request.image.height().to_le_bytes());
    h.update(request.image.as_raw());
    h.update(blake3::hash(request.audio).as_bytes());
    h.update(format!("{:?}", request.params).as_bytes());
    h.update(&request.face_expand_ratio.to_le_bytes());
    h.update(format!("{:?}|{}|{clips}", out.mp4, out.checkpoint_clips.max(1)).as_bytes());
    h.finalize().to_hex().to_string()
}

/// Encodes each group of clips and checkpoints after it.
struct CheckpointSink<'a> {
    track: H264Track,
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
            self.work.save(self.fingerprint, next, self.track.len())?;
        }
        Ok(())
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
}

/// The work dir of one generation: the video samples and the checkpoint.
struct WorkDir {
    dir: PathBuf,
}

const CHECKPOINT_JSON: &str = "checkpoint.json";

/// `checkpoint-<clip>.safetensors`: the motion frames the checkpoint of `next_clip` needs.
fn tensors_name(next_clip: usize) -> String {
    format!("checkpoint-{next_clip:06}.safetensors")
}

impl WorkDir {
    fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ModelError::io(format!("creating {}", dir.display()), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The checkpoint of `fingerprint`, if there is one (any other is ignored).
    fn load(&self, fingerprint: &str) -> Result<Option<(LoopState, TrackLength)>> {
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
        let motion = saved.tensors.as_ref().and_then(|name| {
            candle_core::safetensors::load(self.dir.join(name), &Device::Cpu)
                .ok()?
                .remove("motion")
        });
        if saved.next_clip > 0 && motion.is_none() {
            return Ok(None);
        }
        Ok(Some((
            LoopState {
                next_clip: saved.next_clip,
                motion,
                generator,
            },
            saved.track,
        )))
    }

    /// Writes the checkpoint: tensors, then the record that names them (each atomically and
    /// durably), so the record never points at missing or older tensors.
    fn save(&self, fingerprint: &str, state: &LoopState, track: TrackLength) -> Result<()> {
        let tensors = match &state.motion {
            Some(motion) => {
                let name = tensors_name(state.next_clip);
                let tensors = HashMap::from([("motion".to_string(), motion.to_dtype(DType::F32)?)]);
                let tmp = self.dir.join(format!("{name}.tmp"));
                candle_core::safetensors::save(&tensors, &tmp)?;
                self.commit(&tmp, &name)?;
                Some(name)
            }
            None => None,
        };
        let record = Checkpoint {
            fingerprint: fingerprint.to_string(),
            next_clip: state.next_clip,
            track,
            generator: state.generator.state(),
            tensors: tensors.clone(),
        };
        let tmp = self.dir.join(format!("{CHECKPOINT_JSON}.tmp"));
        let json = serde_json::to_vec(&record)
            .map_err(|e| ModelError::io("encoding the checkpoint", std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(|e| ModelError::io("writing the checkpoint", e))?;
        self.commit(&tmp, CHECKPOINT_JSON)?;
        // Older checkpoints' tensors are no longer named by the record.
        self.remove_tensors(tensors.as_deref())
    }

    /// Removes every checkpoint tensor file but `keep`.
    fn remove_tensors(&self, keep: Option<&str>) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| ModelError::io(format!("listing {}", self.dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.starts_with("checkpoint-") && name.ends_with(".safetensors");
            if ours && Some(name.as_ref()) != keep {
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

    /// Removes the samples and the checkpoint.
    fn clear(&self) -> Result<()> {
        self.remove_tensors(None)?;
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
