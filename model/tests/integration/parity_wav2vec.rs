//! Parity of the audio path (`audio_features` + `wav2vec2::Wav2Vec2Model`) with the official
//! Hallo2 code (pydub cut, transformers 4.39.2 feature extractor and `Wav2VecModel`) on each
//! set's tiny wav2vec2 (`pretrained_models/wav2vec/wav2vec2-base-960h`), golden tensors
//! `cases/wav2vec.safetensors` starting from `inputs.safetensors → waveform_pcm16` (clip length
//! `data.n_sample_frames` of the set's yaml).
//!
//! Every stage is checked twice: chained from the waveform, and alone from the golden input of
//! that stage (so a failure names the stage that introduces it). Key coverage is checked against
//! the tiny file and the full-size manifest; both weight-norm spellings of the positional conv load.
use crate::common::{FixtureSet, for_each_set};

use std::collections::HashMap;

use crate::common::{assert_close, get};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use model::audio_features::{
    AudioFeatures, FPS, SAMPLE_RATE, SEGMENT_SECONDS, WINDOW_FRAMES, cut_audio, preprocess_segment,
    process_audio_emb, segment_audio_emb,
};
use model::wav2vec2::{Wav2Vec2Config, Wav2Vec2Model, linear_interpolation, weight_norm_weight};
use model::weights::{KeyAudit, SafetensorsFile, WeightBackend};

const ATOL: f32 = 1e-4;

/// `data.n_sample_frames` of the set's run (the clip length the audio is padded to).
fn clip_frames(set: &FixtureSet) -> usize {
    set.inference().data.n_sample_frames
}

fn w2v_dir(set: &FixtureSet) -> std::path::PathBuf {
    set.layout().wav2vec_dir()
}

fn w2v_config(set: &FixtureSet) -> Wav2Vec2Config {
    Wav2Vec2Config::from_file(&set.layout().wav2vec_config()).expect("tiny config")
}

/// The tiny model through the project's loader; also returns the keys it never requested.
fn tiny_model(set: &FixtureSet) -> (Wav2Vec2Model, Vec<String>) {
    let file = SafetensorsFile::open(&w2v_dir(set).join("model.safetensors")).expect("open");
    let (backend, unused) = WeightBackend::new(vec![file]);
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
    let model = Wav2Vec2Model::new(&w2v_config(set), vb).expect("building wav2vec2");
    (model, unused.unused())
}

fn tiny_tensors(set: &FixtureSet) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(w2v_dir(set).join("model.safetensors"), &Device::Cpu)
        .expect("loading the tiny wav2vec2")
}

/// `waveform_pcm16` as librosa hands it over: PCM / 32768 in f32.
fn waveform(set: &FixtureSet) -> Vec<f32> {
    let inputs = set.case("inputs");
    get(&inputs, "waveform_pcm16")
        .to_dtype(DType::F32)
        .and_then(|t| t / 32768.0)
        .and_then(|t| t.to_vec1::<f32>())
        .expect("waveform")
}

fn scalar_i64(t: &Tensor) -> i64 {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap()[0]
}

#[test]
fn every_stage_matches_transformers() {
    for_each_set(every_stage_matches);
}

fn every_stage_matches(set: &FixtureSet) {
    let golden = set.case("wav2vec");
    let (model, _) = tiny_model(set);

    // pydub cut in whole milliseconds (a partial millisecond is dropped), bit-exact.
    let samples = waveform(set);
    let segments = cut_audio(&samples, SAMPLE_RATE, SEGMENT_SECONDS);
    assert_eq!(
        segments.len(),
        samples.len().div_ceil(SEGMENT_SECONDS * SAMPLE_RATE)
    );
    let waveform_f32 = Tensor::from_slice(&segments[0], segments[0].len(), &Device::Cpu).unwrap();
    assert_close(
        "waveform_f32",
        &waveform_f32,
        get(&golden, "waveform_f32"),
        0.0,
        0.0,
    );

    // Normalisation + padding to whole clips (NumPy arithmetic reproduced).
    let segment = preprocess_segment(&segments[0], clip_frames(set), true, 0);
    assert_eq!(
        segment.audio_length as i64,
        scalar_i64(get(&golden, "audio_length"))
    );
    assert_eq!(segment.seq_len as i64, scalar_i64(get(&golden, "seq_len")));
    let n = segment.input_values.len();
    let input_values = Tensor::from_slice(&segment.input_values, (1, n), &Device::Cpu).unwrap();
    assert_close(
        "input_values",
        &input_values,
        get(&golden, "input_values"),
        0.0,
        0.0,
    );

    // CNN features.
    let conv_features = model.feature_extractor.forward(&input_values).unwrap();
    assert_close(
        "conv_features",
        &conv_features,
        get(&golden, "conv_features"),
        ATOL,
        0.0,
    );
    let alone = model
        .feature_extractor
        .forward(get(&golden, "input_values"))
        .unwrap();
    assert_close(
        "conv_features (golden input)",
        &alone,
        get(&golden, "conv_features"),
        ATOL,
        0.0,
    );

    // Interpolation to the frame count.
    let seq_len = segment.seq_len;
    let interpolated =
        linear_interpolation(&conv_features.transpose(1, 2).unwrap(), seq_len).unwrap();
    assert_close(
        "interpolated_features",
        &interpolated,
        get(&golden, "interpolated_features"),
        ATOL,
        0.0,
    );
    let alone = linear_interpolation(
        &get(&golden, "conv_features").transpose(1, 2).unwrap(),
        seq_len,
    )
    .unwrap();
    assert_close(
        "interpolated_features (golden input)",
        &alone,
        get(&golden, "interpolated_features"),
        0.0,
        0.0,
    );
    assert_close(
        "feature_extract",
        &model.feature_extract(&input_values, seq_len).unwrap(),
        get(&golden, "interpolated_features"),
        ATOL,
        0.0,
    );

    // Feature projection.
    let (projected, normed) = model.feature_projection.forward(&interpolated).unwrap();
    assert_close(
        "feature_projection_layernorm",
        &normed,
        get(&golden, "feature_projection_layernorm"),
        ATOL,
        0.0,
    );
    assert_close(
        "feature_projection_out",
        &projected,
        get(&golden, "feature_projection_out"),
        ATOL,
        0.0,
    );
    let (alone, alone_normed) = model
        .feature_projection
        .forward(get(&golden, "interpolated_features"))
        .unwrap();
    assert_close(
        "feature_projection_layernorm (golden input)",
        &alone_normed,
        get(&golden, "feature_projection_layernorm"),
        ATOL,
        0.0,
    );
    assert_close(
        "feature_projection_out (golden input)",
        &alone,
        get(&golden, "feature_projection_out"),
        ATOL,
        0.0,
    );

    // Encoder: hidden_states[0] = after pos conv + encoder LayerNorm, then each layer.
    let hidden_states = model.encoder.forward(&projected).unwrap();
    let alone = model
        .encoder
        .forward(get(&golden, "feature_projection_out"))
        .unwrap();
    assert_eq!(hidden_states.len(), w2v_config(set).num_hidden_layers + 1);
    for (i, (h, a)) in hidden_states.iter().zip(&alone).enumerate() {
        let name = format!("hidden_states.{i}");
        assert_close(&name, h, get(&golden, &name), ATOL, 0.0);
        assert_close(
            &format!("{name} (golden input)"),
            a,
            get(&golden, &name),
            ATOL,
            0.0,
        );
    }
    let last = hidden_states.last().unwrap();
    assert_close(
        "last_hidden_state",
        last,
        get(&golden, "last_hidden_state"),
        ATOL,
        0.0,
    );
    // The whole forward gives the same tensors.
    let forward = model.forward(&input_values, seq_len).unwrap();
    for (i, (f, h)) in forward.iter().zip(&hidden_states).enumerate() {
        assert_close(&format!("forward hidden_states.{i}"), f, h, 0.0, 0.0);
    }

    // Hallo's stacking and the 5-frame windows.
    let audio_emb = segment_audio_emb(&model, &segment).unwrap();
    assert_close(
        "audio_emb",
        &audio_emb,
        get(&golden, "audio_emb"),
        ATOL,
        0.0,
    );
    let windowed = process_audio_emb(&audio_emb).unwrap();
    assert_close(
        "audio_emb_windowed",
        &windowed,
        get(&golden, "audio_emb_windowed"),
        ATOL,
        0.0,
    );
    let alone = process_audio_emb(get(&golden, "audio_emb")).unwrap();
    assert_close(
        "audio_emb_windowed (golden input)",
        &alone,
        get(&golden, "audio_emb_windowed"),
        0.0,
        0.0,
    );
}

#[test]
fn compute_runs_the_whole_path_from_pcm() {
    for_each_set(whole_path_from_pcm);
}

fn whole_path_from_pcm(set: &FixtureSet) {
    let golden = set.case("wav2vec");
    let (model, _) = tiny_model(set);
    let features = AudioFeatures::compute(&model, &waveform(set), clip_frames(set)).unwrap();
    assert_eq!(features.num_segments, 1);
    assert_eq!(
        features.audio_length as i64,
        scalar_i64(get(&golden, "audio_length"))
    );
    assert_eq!(features.seq_len as i64, scalar_i64(get(&golden, "seq_len")));
    assert_close(
        "AudioFeatures.audio_emb",
        &features.audio_emb,
        get(&golden, "audio_emb"),
        ATOL,
        0.0,
    );
    assert_close(
        "AudioFeatures.windows",
        &features.windows().unwrap(),
        get(&golden, "audio_emb_windowed"),
        ATOL,
        0.0,
    );
    // The pipeline cuts the video at the unpadded length recorded in the fixtures' config.
    assert_eq!(
        set.preset()["audio_length_frames"].as_u64(),
        Some(features.audio_length as u64)
    );
}

#[test]
fn audio_longer_than_a_minute_is_processed_per_segment() {
    for_each_set(per_segment);
}

fn per_segment(set: &FixtureSet) {
    let (model, _) = tiny_model(set);
    let clip = clip_frames(set);
    let cfg = w2v_config(set);
    // 61.02 s of a deterministic vocal-like signal.
    let n = 61 * SAMPLE_RATE + 320;
    let samples: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            0.3 * (2.0 * std::f32::consts::PI * 180.0 * t).sin()
                * (0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin())
        })
        .collect();
    let features = AudioFeatures::compute(&model, &samples, clip).unwrap();
    assert_eq!(features.num_segments, 2);
    // 1500 frames + ceil(1.02 s · 25) = 26 frames; total 1526, padded to whole clips.
    let total = 1526usize.next_multiple_of(clip);
    let (layers, width) = (cfg.num_hidden_layers, cfg.hidden_size);
    assert_eq!(features.audio_length, 1526);
    assert_eq!(features.seq_len, total);
    assert_eq!(
        features.windows().unwrap().dims(),
        &[total, WINDOW_FRAMES, layers, width]
    );
    assert_eq!(features.audio_emb.dims(), &[total, layers, width]);

    // The first minute is normalised and encoded on its own: the same rows as running that
    // segment alone (no padding, it is not the last segment).
    let first = preprocess_segment(&samples[..60 * SAMPLE_RATE], clip, false, 0);
    assert_eq!((first.seq_len, first.audio_length), (1500, 1500));
    let alone = segment_audio_emb(&model, &first).unwrap();
    assert_close(
        "first segment",
        &features.audio_emb.narrow(0, 0, 1500).unwrap(),
        &alone,
        0.0,
        0.0,
    );
    // The second is padded with the running total in mind.
    let second = preprocess_segment(&samples[60 * SAMPLE_RATE..], clip, true, 1500);
    assert_eq!((second.audio_length, second.seq_len), (26, total - 1500));
    assert_eq!(
        second.input_values.len(),
        (n - 60 * SAMPLE_RATE) + (total - 1526) * (SAMPLE_RATE / FPS)
    );
    let alone = segment_audio_emb(&model, &second).unwrap();
    assert_close(
        "second segment",
        &features.audio_emb.narrow(0, 1500, total - 1500).unwrap(),
        &alone,
        0.0,
        0.0,
    );
    // Windows straddle the segment boundary.
    assert_close(
        "window across the cut",
        &features
            .windows()
            .unwrap()
            .get(1500)
            .unwrap()
            .get(0)
            .unwrap(),
        &features.audio_emb.get(1498).unwrap(),
        0.0,
        0.0,
    );
}

#[test]
fn too_short_input_is_an_error_not_a_panic() {
    for_each_set(too_short_is_an_error);
}

/// Input samples one CNN output frame needs: the receptive field of the conv stack.
fn receptive_field(cfg: &Wav2Vec2Config) -> usize {
    let mut field = 1;
    let mut stride = 1;
    for (&k, &s) in cfg.conv_kernel.iter().zip(&cfg.conv_stride) {
        field += (k - 1) * stride;
        stride *= s;
    }
    field
}

fn too_short_is_an_error(set: &FixtureSet) {
    let (model, _) = tiny_model(set);
    let samples = receptive_field(&w2v_config(set)) - 1;
    let input = Tensor::zeros((1, samples), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward(&input, 1).unwrap_err().to_string();
    assert!(err.contains("too short"), "{err}");
    // 1 ms of audio with a clip length of 1 is never padded, so wav2vec2 sees 16 samples.
    let err = AudioFeatures::compute(&model, &[0.1; 16], 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("too short"), "{err}");
    assert!(AudioFeatures::compute(&model, &[0.1; 7], 4).is_err());
}

#[test]
fn tiny_checkpoint_keys_are_all_used_except_lm_head() {
    for_each_set(keys_used);
}

fn keys_used(set: &FixtureSet) {
    let (_, unused) = tiny_model(set);
    assert_eq!(unused, vec!["lm_head.bias", "lm_head.weight"]);

    let file = SafetensorsFile::open(&w2v_dir(set).join("model.safetensors")).unwrap();
    let audit = KeyAudit::from_safetensors(&file);
    Wav2Vec2Model::new(&w2v_config(set), audit.var_builder()).unwrap();
    let report = audit.report();
    assert!(report.missing.is_empty(), "{}", report.summary());
    assert!(report.mismatched.is_empty(), "{}", report.summary());
    assert_eq!(report.unused, vec!["lm_head.bias", "lm_head.weight"]);
}

#[test]
fn full_size_keys_match_the_manifest() {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests/wav2vec2_base_960h.json");
    let audit = KeyAudit::from_manifest(&manifest).expect("reading the manifest");
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    Wav2Vec2Model::new(&Wav2Vec2Config::hallo2(), audit.var_builder())
        .expect("building the full-size wav2vec2");
    let report = audit.report();
    assert!(report.missing.is_empty(), "{}", report.summary());
    assert!(report.mismatched.is_empty(), "{}", report.summary());
    assert_eq!(report.unused, vec!["lm_head.bias", "lm_head.weight"]);
    assert_eq!(
        Some(report.requested as u64 + report.unused.len() as u64),
        listed["num_tensors"].as_u64()
    );
}

/// Runs `model` on the golden `input_values` and returns all hidden states.
fn run_golden(set: &FixtureSet, model: &Wav2Vec2Model) -> Vec<Tensor> {
    let golden = set.case("wav2vec");
    let seq_len = scalar_i64(get(&golden, "seq_len")) as usize;
    model
        .forward(get(&golden, "input_values"), seq_len)
        .unwrap()
}

#[test]
fn weight_norm_spellings_and_unprefixed_checkpoints_load_the_same_model() {
    for_each_set(spellings_load_the_same_model);
}

fn spellings_load_the_same_model(set: &FixtureSet) {
    let (reference, _) = tiny_model(set);
    let expected = run_golden(set, &reference);
    let tensors = tiny_tensors(set);
    let pos = "wav2vec2.encoder.pos_conv_embed.conv";

    // torch.nn.utils.parametrizations.weight_norm spelling: original0 = g, original1 = v.
    let parametrized: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| {
            let k = k
                .replace(
                    &format!("{pos}.weight_g"),
                    &format!("{pos}.parametrizations.weight.original0"),
                )
                .replace(
                    &format!("{pos}.weight_v"),
                    &format!("{pos}.parametrizations.weight.original1"),
                );
            (k, v.clone())
        })
        .collect();
    assert!(parametrized.contains_key(&format!("{pos}.parametrizations.weight.original1")));
    assert!(!parametrized.contains_key(&format!("{pos}.weight_g")));
    let vb = VarBuilder::from_tensors(parametrized, DType::F32, &Device::Cpu);
    let model = Wav2Vec2Model::new(&w2v_config(set), vb).expect("parametrizations spelling");
    for (i, (a, e)) in run_golden(set, &model).iter().zip(&expected).enumerate() {
        assert_close(&format!("parametrized hidden_states.{i}"), a, e, 0.0, 0.0);
    }

    // A bare `Wav2Vec2Model` checkpoint (no `wav2vec2.` prefix, no lm_head).
    let bare: HashMap<String, Tensor> = tensors
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("wav2vec2.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    let vb = VarBuilder::from_tensors(bare, DType::F32, &Device::Cpu);
    let model = Wav2Vec2Model::new(&w2v_config(set), vb).expect("unprefixed checkpoint");
    for (i, (a, e)) in run_golden(set, &model).iter().zip(&expected).enumerate() {
        assert_close(&format!("unprefixed hidden_states.{i}"), a, e, 0.0, 0.0);
    }

    // A checkpoint with neither spelling names the legacy keys in its error.
    let without: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| !k.starts_with(&format!("{pos}.weight_")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vb = VarBuilder::from_tensors(without, DType::F32, &Device::Cpu);
    let err = Wav2Vec2Model::new(&w2v_config(set), vb)
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight_g"), "{err}");
}

#[test]
fn weight_norm_weight_normalises_each_kernel_tap() {
    // v (2, 1, 2): tap 0 = (3, 4) → norm 5; tap 1 = (0, 2) → norm 2. g = (10, 1).
    let v = Tensor::new(&[[[3f32, 0.0]], [[4.0, 2.0]]], &Device::Cpu).unwrap();
    let g = Tensor::new(&[[[10f32, 1.0]]], &Device::Cpu).unwrap();
    let w = weight_norm_weight(&g, &v, 2).unwrap();
    let expected = Tensor::new(&[[[6f32, 0.0]], [[8.0, 1.0]]], &Device::Cpu).unwrap();
    assert_close("weight norm", &w, &expected, 1e-6, 0.0);
    // The tiny checkpoint: every tap of the effective weight has norm |g|.
    let tensors = tiny_tensors(&FixtureSet::public());
    let g = &tensors["wav2vec2.encoder.pos_conv_embed.conv.weight_g"];
    let w = weight_norm_weight(
        g,
        &tensors["wav2vec2.encoder.pos_conv_embed.conv.weight_v"],
        2,
    )
    .unwrap();
    let norms = w
        .sqr()
        .unwrap()
        .sum_keepdim(1)
        .unwrap()
        .sum_keepdim(0)
        .unwrap()
        .sqrt()
        .unwrap();
    assert_close("tap norms", &norms, &g.abs().unwrap(), 1e-5, 0.0);
    assert!(weight_norm_weight(g, &w, 3).is_err());
}
