//! Vocal separation (`model::vocals`) against `audio-separator` 0.17.2 running a random stand-in
//! network with Kim_Vocal_2's signature and parameters (`tests/fixtures/vocals/`, made by
//! `scripts/fixtures/make_vocals_set.py`; the spec is `scripts/fixtures/VOCALS.md`).
//!
//! Case 1 is a 44.1 kHz stereo mix (three chunks, both peak limits); case 2 a 16 kHz mono upload
//! (the package resamples it with soxr; we use our own resampler).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use model::audio_features::AudioFeatures;
use model::vocals::{SEPARATION_RATE, VocalSeparator, Vocals, prepare_mix};

use crate::common::{self, FixtureSet, assert_close, get};

fn dir() -> PathBuf {
    common::fixtures_root().join("vocals")
}

fn separator() -> VocalSeparator {
    VocalSeparator::load(
        &dir().join("stand_in_mdx.onnx"),
        &dir().join("mdx_model_data.json"),
    )
    .expect("loading the stand-in separator")
}

fn case(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join(format!("{name}.safetensors")), &Device::Cpu)
        .expect("loading a vocals case")
}

/// The channels of a 16-bit WAV as `s16 / 32768`, and its rate.
fn read_wav(name: &str) -> (Vec<Vec<f32>>, u32) {
    let mut reader = hound::WavReader::open(dir().join(name)).expect("opening the wav");
    let spec = reader.spec();
    let channels = spec.channels as usize;
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let split = (0..channels)
        .map(|c| {
            samples[c..]
                .iter()
                .step_by(channels)
                .map(|&s| f32::from(s) / 32768.0)
                .collect()
        })
        .collect();
    (split, spec.sample_rate)
}

/// The mix as the package loaded it: case 1 is the file itself, case 2 the golden soxr output
/// (the package's own resampler) duplicated to both channels.
fn loaded_mix(name: &str) -> [Vec<f32>; 2] {
    match name {
        "case1" => {
            let (channels, rate) = read_wav("case1_mix_44k1_stereo.wav");
            assert_eq!(rate, SEPARATION_RATE);
            channels.try_into().expect("stereo")
        }
        _ => {
            let mono: Vec<f32> = get(&case(name), "input.loaded").to_vec1().unwrap();
            [mono.clone(), mono]
        }
    }
}

/// `[N, 2]` → two channels.
fn channels_of(t: &Tensor) -> [Tensor; 2] {
    std::array::from_fn(|c| t.narrow(1, c, 1).unwrap().squeeze(1).unwrap())
}

/// The studio's audio path on the WAV at `path`: (16 kHz mix, 16 kHz vocals) files in `scratch`.
fn decode_separated(
    path: &std::path::Path,
    separator: &VocalSeparator,
    scratch: &std::path::Path,
) -> (model::audio_io::SamplesFile, model::audio_io::SamplesFile) {
    model::audio_io::decode_with_vocals(
        model::audio_io::AudioInput::File(path),
        Some("wav"),
        &model::audio_io::AudioLimits::default(),
        separator,
        &scratch.join("mix.f32"),
        &scratch.join("vocals.f32"),
    )
    .unwrap()
}

fn tensor(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

/// `‖actual − expected‖ / ‖expected‖` over all elements, for paths where a different resampler
/// stands in for the official one (they differ most in the transition band, not sample by
/// sample everywhere).
fn relative_error(what: &str, actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape differs");
    let a = actual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let e = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (diff, norm) = a.iter().zip(&e).fold((0f64, 0f64), |(d, n), (&x, &y)| {
        let (x, y) = (f64::from(x), f64::from(y));
        (d + (x - y) * (x - y), n + y * y)
    });
    let relative = (diff / norm).sqrt();
    eprintln!("{what}: relative L2 error {relative:e}");
    relative
}

#[test]
fn the_first_chunk_into_and_out_of_the_network_matches_the_package() {
    let sep = separator();
    for name in ["case1", "case2"] {
        let golden = case(name);
        let chunk = sep.params().chunk_size();
        let part = sep
            .padded_mix(loaded_mix(name))
            .map(|c| c[..chunk].to_vec());
        let input = sep.model_input(&part);
        let output = sep.run_network(input.clone()).unwrap();
        let (dim_f, dim_t) = (sep.params().dim_f, sep.params().dim_t);
        let frames: Vec<i64> = get(&golden, "chunk0.frames").to_vec1().unwrap();
        // (1, 4, dim_f, dim_t) → the recorded frames, (1, 4, dim_f, frames).
        let pick = |all: &[f32]| -> Tensor {
            let full = Tensor::from_slice(all, (1, 4, dim_f, dim_t), &Device::Cpu).unwrap();
            let index: Vec<u32> = frames.iter().map(|&f| f as u32).collect();
            let index = Tensor::new(index.as_slice(), &Device::Cpu).unwrap();
            full.index_select(&index, 3).unwrap()
        };
        // torch's f32 FFT and ours differ by rounding (bins up to a few hundred).
        assert_close(
            &format!("{name} chunk 0 model input"),
            &pick(&input),
            get(&golden, "chunk0.model_input"),
            1e-4,
            0.0,
        );
        assert_close(
            &format!("{name} chunk 0 model output"),
            &pick(&output),
            get(&golden, "chunk0.model_output"),
            2e-4,
            0.0,
        );
    }
}

#[test]
fn the_vocals_match_the_package_before_and_after_writing() {
    let sep = separator();
    for name in ["case1", "case2"] {
        let golden = case(name);
        let expected = channels_of(get(&golden, "vocals.before_write"));
        let vocals = sep.separate_float(loaded_mix(name)).unwrap();
        for (c, (ours, want)) in vocals.iter().zip(&expected).enumerate() {
            assert_close(
                &format!("{name} vocals channel {c}"),
                &tensor(ours),
                want,
                2e-6,
                0.0,
            );
        }
        // The file: 16-bit by truncation, one step at most where v·32767 sits on an integer.
        let written = sep.separate(loaded_mix(name)).unwrap();
        for (c, (ours, want)) in written.channels.iter().zip(&expected).enumerate() {
            let truncated = want
                .affine(32767.0, 0.0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(|v| f32::from(v as i16) / 32768.0)
                .collect::<Vec<_>>();
            assert_close(
                &format!("{name} written channel {c}"),
                &tensor(ours),
                &tensor(&truncated),
                1.01 / 32768.0,
                0.0,
            );
        }
    }
}

#[test]
fn the_16k_step_is_close_to_ffmpeg() {
    for name in ["case1", "case2"] {
        let golden = case(name);
        let written = channels_of(get(&golden, "vocals.before_write")).map(|c| {
            c.to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(|v| f32::from((v * 32767.0) as i16) / 32768.0)
                .collect()
        });
        let mono = Vocals { channels: written }.to_mono(16_000).unwrap();
        // Our FFT resampler stands in for libswresample's polyphase filter.
        let error = relative_error(
            &format!("{name} 16 kHz mono"),
            &tensor(&mono),
            get(&golden, "hallo16k.samples"),
        );
        assert!(error < 6e-3, "{name}: {error:e}");
    }
}

#[test]
fn a_16k_mono_upload_is_resampled_close_to_soxr() {
    let (channels, rate) = read_wav("case2_speech_16k_mono.wav");
    let mix = prepare_mix(channels, rate).unwrap();
    assert_eq!(mix[0], mix[1]);
    let error = relative_error(
        "case2 mix at 44.1 kHz",
        &tensor(&mix[0]),
        get(&case("case2"), "input.loaded"),
    );
    assert!(error < 3e-2, "{error:e}");
}

/// The whole audio path from the mix file (separation, 16 kHz, wav2vec2 on the public set's
/// tiny encoder) against Hallo2's `AudioProcessor.preprocess` with the separator on.
#[test]
fn the_audio_path_with_separation_matches_hallo2() {
    let golden = case("case1_audio_processor");
    let set = FixtureSet::public();
    let (channels, rate) = read_wav("case1_mix_44k1_stereo.wav");
    let vocals = separator()
        .separate(prepare_mix(channels, rate).unwrap())
        .unwrap();
    let samples = vocals.to_mono(16_000).unwrap();
    let encoder = model::wav2vec2::Wav2Vec2Model::new(
        &model::wav2vec2::Wav2Vec2Config::from_file(&set.layout().wav2vec_config()).unwrap(),
        candle_nn::VarBuilder::from_tensors(
            candle_core::safetensors::load(
                set.layout().wav2vec_dir().join("model.safetensors"),
                &Device::Cpu,
            )
            .unwrap(),
            candle_core::DType::F32,
            &Device::Cpu,
        ),
    )
    .unwrap();
    let emb = get(&golden, "audio_emb");
    let clip = 16;
    let audio_length: Vec<i64> = get(&golden, "audio_length").to_vec1().unwrap();
    // From the official 16 kHz samples: wav2vec2 sees exactly what upstream's sees.
    let official: Vec<f32> = get(&case("case1"), "hallo16k.samples").to_vec1().unwrap();
    let features = AudioFeatures::compute(&encoder, &official, clip).unwrap();
    assert_eq!(features.audio_length as i64, audio_length[0]);
    assert_close(
        "features from the official 16 kHz",
        &features.audio_emb,
        emb,
        1e-4,
        0.0,
    );
    // From our own 16 kHz samples: the resampler's difference, through a random encoder.
    let features = AudioFeatures::compute(&encoder, &samples, clip).unwrap();
    assert_eq!(features.audio_length as i64, audio_length[0]);
    let error = relative_error("features", &features.audio_emb, emb);
    assert!(error < 3e-2, "{error:e}");
}

/// The streaming path the studio takes (decode → separation rate → 60 s segments → vocals at
/// 16 kHz, the mix at 16 kHz beside it) equals separating the whole decoded mix at once, and
/// its mix file is the one decoding without separation writes.
#[test]
fn decoding_with_vocals_equals_separating_the_whole_mix() {
    use model::audio_io::{AudioInput, AudioLimits, decode_native, decode_to_samples_file};
    let path = common::fixtures_root().join("speech/sense_and_sensibility_01_austen_64kb-0880.wav");
    let limits = AudioLimits::default();
    let scratch = tempfile::tempdir().unwrap();
    let (mix, vocals) = decode_separated(&path, &separator(), scratch.path());
    let plain = decode_to_samples_file(
        AudioInput::File(&path),
        Some("wav"),
        &limits,
        &scratch.path().join("plain.f32"),
    )
    .unwrap();
    assert_eq!(mix.len, plain.len);
    assert_eq!(
        mix.read((0, mix.len)).unwrap(),
        plain.read((0, plain.len)).unwrap()
    );

    let native = decode_native(&std::fs::read(&path).unwrap(), Some("wav"), &limits).unwrap();
    let whole = separator()
        .separate(prepare_mix(vec![native.samples], native.rate).unwrap())
        .unwrap()
        .to_mono(16_000)
        .unwrap();
    assert_eq!(vocals.len, whole.len());
    // 16 kHz → 44.1 kHz → 16 kHz rounds each length up: a sample more at most.
    assert!(
        vocals.len.abs_diff(mix.len) <= 1,
        "{} vs {}",
        vocals.len,
        mix.len
    );
    assert_eq!(vocals.read((0, vocals.len)).unwrap(), whole);
}

/// Audio over a minute is separated one 60 s segment at a time, as upstream's `use_cut`
/// segments are: the first minute's vocals are those of the first minute alone.
#[test]
fn each_minute_is_separated_on_its_own() {
    let rate = 16_000u32;
    let n = 61 * rate as usize + 123;
    let samples: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.4 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                * (0.5 + 0.5 * (2.0 * std::f32::consts::PI * 2.0 * t).sin())
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let wav = scratch.path().join("long.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&wav, spec).unwrap();
    for &s in &samples {
        writer.write_sample((s * 32767.0) as i16).unwrap();
    }
    writer.finalize().unwrap();
    let sep = separator();
    let (mix, vocals) = decode_separated(&wav, &sep, scratch.path());
    // Each segment's round trip through 44.1 kHz may round its length up by a sample.
    assert!(
        vocals.len.abs_diff(mix.len) <= 2,
        "{} vs {}",
        vocals.len,
        mix.len
    );
    let minute = 60 * rate as usize;
    let pcm: Vec<f32> = samples
        .iter()
        .map(|&s| f32::from((s * 32767.0) as i16) / 32768.0)
        .collect();
    let first = sep
        .separate(prepare_mix(vec![pcm[..minute].to_vec()], rate).unwrap())
        .unwrap()
        .to_mono(rate)
        .unwrap();
    assert_eq!(first.len(), minute);
    let ours = vocals.read((0, minute)).unwrap();
    let worst = ours
        .iter()
        .zip(&first)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // The stream is resampled as one piece, the reference minute alone: their last resampler
    // blocks differ, and so do the separation chunks that hold them (the last ~10 s).
    assert!(worst < 2e-3, "{worst}");
    let settled = 50 * rate as usize;
    let differing = ours[..settled]
        .iter()
        .zip(&first[..settled])
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "samples of the first 50 s that differ");
}

/// A stereo upload is separated as the package does it, both channels together: the studio's
/// streaming path gives the whole-file separation of the two channels exactly, and matches
/// Hallo2's 16 kHz vocals within the resampler's difference.
#[test]
fn a_stereo_upload_is_separated_as_two_channels() {
    let sep = separator();
    let scratch = tempfile::tempdir().unwrap();
    let (_, vocals) = decode_separated(
        &dir().join("case1_mix_44k1_stereo.wav"),
        &sep,
        scratch.path(),
    );
    let ours = vocals.read((0, vocals.len)).unwrap();
    let whole = sep
        .separate(loaded_mix("case1"))
        .unwrap()
        .to_mono(16_000)
        .unwrap();
    assert!(
        ours == whole,
        "the streaming path differs from the whole file"
    );
    let error = relative_error(
        "case1 streamed vocals at 16 kHz",
        &tensor(&ours),
        get(&case("case1"), "hallo16k.samples"),
    );
    assert!(error < 6e-3, "{error:e}");
}
