//! `Hallo2::generate` on the tiny official-format weights: portrait + speech → MP4 whose length
//! is the audio's, and checkpoints: a run stopped after a checkpoint continues from it and writes
//! the very bytes of an uninterrupted run.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use candle_core::{DType, Device};
use model::audio_features::{FPS, SAMPLE_RATE, frame_count};
use model::face::FaceDetector;
use model::hallo2::{GenerateObserver, GenerateRequest, Hallo2, VideoOutput};
use model::image_io::{ImageLimits, read_image};
use model::loader::LoadOptions;
use model::media::Mp4Options;
use model::pipeline::{ClipOutput, Observer, Progress, Stage};

fn load(cache: &Path) -> Hallo2 {
    let layout = model::config::WeightsLayout::new(common::tiny_weights());
    let options = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        cache_dir: cache.to_path_buf(),
        vocal_separator: true,
    };
    Hallo2::load(
        &layout,
        &common::tiny_inference_config(),
        &options,
        Arc::new(FaceDetector::bundled().unwrap()),
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap()
}

fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Stops the run (as a shutdown does) once `after` clips are done.
struct StopAfter {
    after: usize,
    done: usize,
    resumed: Option<usize>,
}

impl Observer for StopAfter {
    fn cancelled(&self) -> bool {
        self.done >= self.after
    }
    fn clip_done(&mut self, _clip: usize, _output: &ClipOutput) {
        self.done += 1;
    }
}

impl GenerateObserver for StopAfter {
    fn resumed(&mut self, clip: usize) {
        self.resumed = Some(clip);
    }
}

/// Stops the run between two denoising steps once `after` steps have been started; counts the
/// steps it sees.
struct StopAtStep {
    after: usize,
    steps: usize,
    resumed: Option<usize>,
}

impl Observer for StopAtStep {
    fn progress(&mut self, p: Progress) {
        if p.stage == Stage::Denoise {
            self.steps += 1;
        }
    }
    fn cancelled(&self) -> bool {
        self.steps >= self.after
    }
}

impl GenerateObserver for StopAtStep {
    fn resumed(&mut self, clip: usize) {
        self.resumed = Some(clip);
    }
}

fn decoded_frames(path: &Path) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg (Debian package ffmpeg; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_stopped_run_resumes_from_its_checkpoint_and_writes_the_same_video() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&dir.path().join("cache"));
    let image = read_image(&fixture("face/astronaut.png"), &ImageLimits::default()).unwrap();
    let speech = fixture("speech/sense_and_sensibility_01_austen_64kb-0880.wav");
    let mut params = model.inference.generation_params();
    params.steps = 1;
    let request = GenerateRequest {
        image: &image,
        audio: &speech,
        params: params.clone(),
        face_expand_ratio: model.inference.face_expand_ratio,
        cache_dir: None,
        separate_vocals: true,
    };
    let output = |name: &str, work: &Path| -> (std::path::PathBuf, std::path::PathBuf) {
        (dir.path().join(name), work.to_path_buf())
    };
    let mp4 = Mp4Options {
        fps: model.inference.data.export_video.fps,
        ..Mp4Options::default()
    };

    // Uninterrupted.
    let (whole_path, whole_work) = output("whole.mp4", &dir.path().join("work-whole"));
    let whole = model
        .generate(
            &request,
            &VideoOutput {
                path: &whole_path,
                work_dir: &whole_work,
                mp4: mp4.clone(),
                checkpoint_clips: 2,
            },
            &mut StopAfter {
                after: usize::MAX,
                done: 0,
                resumed: None,
            },
        )
        .unwrap();
    assert_eq!(whole.resumed_from, None);
    // The video lasts as long as the audio (whole frames, rounded up as upstream counts them).
    let samples = hound::WavReader::open(&speech).unwrap().duration() as usize;
    assert_eq!(whole.mp4.frames, frame_count(samples, SAMPLE_RATE, FPS));
    assert!(whole.clips >= 4, "the audio must span several checkpoints");
    // The work dir is emptied when the video is written.
    assert_eq!(std::fs::read_dir(&whole_work).unwrap().count(), 0);

    // Stopped after 3 clips (groups of 2: clips 0–1 encoded, clip 2 finished in an open group):
    // the stop saves clip 2's frames raw, so the next run starts at clip 3.
    let (path, work) = output("resumed.mp4", &dir.path().join("work-resumed"));
    let out = VideoOutput {
        path: &path,
        work_dir: &work,
        mp4: mp4.clone(),
        checkpoint_clips: 2,
    };
    let mut stop = StopAfter {
        after: 3,
        done: 0,
        resumed: None,
    };
    let err = model.generate(&request, &out, &mut stop).unwrap_err();
    assert!(matches!(err, model::ModelError::Cancelled), "{err}");
    assert!(!path.exists());
    assert!(work.join("checkpoint.json").is_file());
    let mut go_on = StopAfter {
        after: usize::MAX,
        done: 0,
        resumed: None,
    };
    let resumed = model.generate(&request, &out, &mut go_on).unwrap();
    assert_eq!(resumed.resumed_from, Some(3));
    assert_eq!(go_on.resumed, Some(3));
    assert_eq!(
        go_on.done,
        whole.clips - 3,
        "only the clips after the checkpoint ran"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&whole_path).unwrap()
    );
    assert_eq!(decoded_frames(&path), decoded_frames(&whole_path));

    // A checkpoint of another request (another seed) is not continued.
    let mut stop = StopAfter {
        after: 3,
        done: 0,
        resumed: None,
    };
    assert!(model.generate(&request, &out, &mut stop).is_err());
    let other = GenerateRequest {
        params: model::pipeline::GenerationParams {
            seed: params.seed + 1,
            ..params.clone()
        },
        ..request
    };
    let mut fresh = StopAfter {
        after: usize::MAX,
        done: 0,
        resumed: None,
    };
    let again = model.generate(&other, &out, &mut fresh).unwrap();
    assert_eq!(again.resumed_from, None);
    assert_eq!(fresh.done, whole.clips);
    assert_ne!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&whole_path).unwrap()
    );
}

/// A run stopped between two steps of a clip (a shutdown) continues at that very step: only the
/// remaining steps run, and the video is byte for byte the uninterrupted one.
#[test]
fn a_run_stopped_between_two_steps_continues_at_that_step() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&dir.path().join("cache"));
    let image = read_image(&fixture("face/astronaut.png"), &ImageLimits::default()).unwrap();
    let speech = fixture("speech/sense_and_sensibility_01_austen_64kb-0880.wav");
    let mut params = model.inference.generation_params();
    params.steps = 3;
    let steps = params.steps;
    let request = GenerateRequest {
        image: &image,
        audio: &speech,
        params,
        face_expand_ratio: model.inference.face_expand_ratio,
        cache_dir: None,
        separate_vocals: true,
    };
    let paths = |name: &str| {
        (
            dir.path().join(format!("{name}.mp4")),
            dir.path().join(name),
        )
    };
    let mp4 = Mp4Options {
        fps: model.inference.data.export_video.fps,
        ..Mp4Options::default()
    };
    fn output<'a>(
        (path, work): &'a (std::path::PathBuf, std::path::PathBuf),
        mp4: &Mp4Options,
    ) -> VideoOutput<'a> {
        VideoOutput {
            path,
            work_dir: work,
            mp4: mp4.clone(),
            checkpoint_clips: 2,
        }
    }
    let never = || StopAtStep {
        after: usize::MAX,
        steps: 0,
        resumed: None,
    };
    let whole_paths = paths("whole");
    let whole_out = output(&whole_paths, &mp4);
    let whole = model.generate(&request, &whole_out, &mut never()).unwrap();

    // Stop in clip 1 after 2 of its steps (clip 0 is in the open group of 2).
    let stopped_paths = paths("stopped");
    let out = output(&stopped_paths, &mp4);
    let mut stop = StopAtStep {
        after: steps + 2,
        ..never()
    };
    let err = model.generate(&request, &out, &mut stop).unwrap_err();
    assert!(matches!(err, model::ModelError::Cancelled), "{err}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.work_dir.join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(record["next_clip"], 1, "{record}");
    assert_eq!(record["partial_step"], 2, "{record}");
    assert_eq!(
        record["pending"]["frames"],
        model.inference.data.n_sample_frames
    );

    let mut go_on = never();
    let resumed = model.generate(&request, &out, &mut go_on).unwrap();
    assert_eq!(resumed.resumed_from, Some(1));
    assert_eq!(
        go_on.steps,
        (whole.clips - 1) * steps - 2,
        "only the steps after the stop ran"
    );
    assert_eq!(
        std::fs::read(out.path).unwrap(),
        std::fs::read(whole_out.path).unwrap()
    );
}

/// Every accepted length gives as many video frames as the audio lasts (within one frame) and a
/// whole number of clips to run — around the clip length, whole numbers of clips, the 60 s
/// segment boundary and its multiples, at the tiny profile's clip length and Hallo2's 16 frames
/// (where upstream drops the last partial clip when the last segment alone is whole).
#[test]
fn every_length_around_the_boundaries_gives_a_video_as_long_as_its_audio() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&dir.path().join("cache"));
    let per_frame = SAMPLE_RATE / FPS;
    let segment = model::audio_features::SEGMENT_SECONDS * SAMPLE_RATE;
    let tiny_clip = model.inference.data.n_sample_frames;
    let hallo2_clip = model::config::InferenceConfig::hallo2()
        .data
        .n_sample_frames;
    for clip in [tiny_clip, hallo2_clip] {
        let clip_samples = clip * per_frame;
        let mut lengths = vec![per_frame - 1, per_frame, per_frame + 1];
        for base in [clip_samples, 3 * clip_samples, segment, 2 * segment] {
            lengths.extend([base - per_frame, base - 1, base, base + 1, base + per_frame]);
        }
        // The last segment a whole number of clips on its own, the total not.
        lengths.push(segment + 4 * clip_samples);
        lengths.push(2 * segment + clip_samples);
        for n in lengths {
            let samples: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.05).sin() * 0.3).collect();
            let features =
                model::audio_features::AudioFeatures::compute(&model.audio_encoder, &samples, clip)
                    .unwrap();
            let frames = features.audio_length;
            // pydub rounds to whole milliseconds, then whole frames are counted up.
            let ms = model::audio_features::pydub_len_ms(n, SAMPLE_RATE) as f64;
            let audio_s = n as f64 / SAMPLE_RATE as f64;
            let video_s = frames as f64 / FPS as f64;
            assert!(
                (video_s - audio_s).abs() < 1.0 / FPS as f64 + 1e-3,
                "{n} samples ({ms} ms): {frames} frames = {video_s} s"
            );
            let inputs_frames = features.seq_len;
            let clips = inputs_frames.div_ceil(clip);
            assert!(
                clips * clip >= frames,
                "{n}: {clips} clips of {clip} < {frames}"
            );
            // The last clip's windows exist even when the features stop inside it.
            let audio = model::pipeline::AudioConditioning::Embedding(features.audio_emb.clone());
            let last = audio.windows((clips - 1) * clip, clip).unwrap();
            assert_eq!(last.dim(0).unwrap(), clip);
        }
    }
}

/// At full size, the tensors whose size follows the audio's length stay far below candle's
/// 2³¹-element limit (CUDA kernels index with i32) for the longest accepted audio: the wav2vec2
/// outputs of the whole audio, each clip's windows, and the per-60-s-segment wav2vec2
/// activations (feature extractor output, attention scores). The video itself is never a tensor
/// (frames leave clip by clip). Dimensions come from the full-size wav2vec2 manifest's config.
#[test]
fn no_tensor_of_a_600_s_full_size_run_reaches_2_pow_31_elements() {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("manifests/wav2vec2_base_960h.json")).unwrap(),
    )
    .unwrap();
    let cfg = &manifest["config"];
    let num = |k: &str| cfg[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
    let list = |k: &str| -> Vec<usize> {
        cfg[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    };
    let (layers, hidden, heads) = (
        num("num_hidden_layers"),
        num("hidden_size"),
        num("num_attention_heads"),
    );
    let (conv_dim, conv_kernel, conv_stride) =
        (list("conv_dim"), list("conv_kernel"), list("conv_stride"));
    let hallo2 = model::config::InferenceConfig::hallo2();
    let clip = hallo2.data.n_sample_frames;
    let seconds = 600usize; // the real profile's limit (configs/server.toml)
    let frames = frame_count(seconds * SAMPLE_RATE, SAMPLE_RATE, FPS);
    let padded = frames.div_ceil(clip) * clip + clip;
    // One 60 s segment through the feature extractor.
    let mut len = model::audio_features::SEGMENT_SECONDS * SAMPLE_RATE;
    let mut largest_conv = 0;
    for ((&dim, &k), &s) in conv_dim.iter().zip(&conv_kernel).zip(&conv_stride) {
        len = (len - k) / s + 1;
        largest_conv = largest_conv.max(dim * len);
    }
    let shapes = [
        ("audio_emb (T, L, C)", padded * layers * hidden),
        ("one clip's windows", clip * 5 * layers * hidden),
        ("feature extractor output of a segment", largest_conv),
        ("attention scores of a segment", heads * len * len),
        ("hidden states of a segment", (layers + 1) * len * hidden),
    ];
    for (what, elements) in shapes {
        println!("{what}: {elements} elements");
        assert!(elements < (1 << 31), "{what}: {elements} elements");
    }
    assert!(len > 2000, "a 60 s segment is {len} wav2vec2 frames");
}

/// Separated vocals condition the video (the raw mix gives another one), each has its own
/// cached features, and a model loaded without the separator refuses a request for it.
#[test]
fn separated_vocals_condition_the_video_and_are_cached_apart() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&dir.path().join("cache"));
    let image = read_image(&fixture("face/astronaut.png"), &ImageLimits::default()).unwrap();
    let speech = fixture("speech/sense_and_sensibility_01_austen_64kb-0880.wav");
    let mut params = model.inference.generation_params();
    params.steps = 1;
    let features = dir.path().join("features");
    let run = |model: &Hallo2, separate_vocals: bool, name: &str| {
        let request = GenerateRequest {
            image: &image,
            audio: &speech,
            params: params.clone(),
            face_expand_ratio: model.inference.face_expand_ratio,
            cache_dir: Some(&features),
            separate_vocals,
        };
        let path = dir.path().join(format!("{name}.mp4"));
        let out = VideoOutput {
            path: &path,
            work_dir: &dir.path().join(name),
            mp4: Mp4Options {
                fps: model.inference.data.export_video.fps,
                ..Mp4Options::default()
            },
            checkpoint_clips: 2,
        };
        let mut observer = StopAfter {
            after: usize::MAX,
            done: 0,
            resumed: None,
        };
        model
            .generate(&request, &out, &mut observer)
            .map(|_| std::fs::read(&path).unwrap())
    };
    let separated = run(&model, true, "separated").unwrap();
    let raw = run(&model, false, "raw").unwrap();
    assert_ne!(separated, raw);
    let cached = std::fs::read_dir(features.join("audio-features"))
        .unwrap()
        .count();
    assert_eq!(cached, 2, "one feature file per separation choice");
    assert_eq!(run(&model, true, "again").unwrap(), separated);

    let layout = model::config::WeightsLayout::new(common::tiny_weights());
    let without = Hallo2::load(
        &layout,
        &common::tiny_inference_config(),
        &LoadOptions {
            dtype: DType::F32,
            device: Device::Cpu,
            cache_dir: dir.path().join("cache"),
            vocal_separator: false,
        },
        Arc::new(FaceDetector::bundled().unwrap()),
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap();
    assert!(without.vocal_separator.is_none());
    let err = run(&without, true, "refused").unwrap_err().to_string();
    assert!(err.contains("separator"), "{err}");
    assert_eq!(run(&without, false, "raw-again").unwrap(), raw);
}
