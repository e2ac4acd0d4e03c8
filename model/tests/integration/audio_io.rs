//! Audio input: real recordings and their re-encodings decode to the right 16 kHz samples and
//! give wav2vec2 features (tiny model) close to the original's; bad input is rejected with a
//! specific error; the feature cache hits, misses and invalidates as it should.
//!
//! Fixtures: `fixtures/speech/*.wav` (LibriVox via Debian pocketsphinx-testdata, see its
//! README) and `fixtures/speech/variants/` made from clip 0880 by
//! `model/tools/make_audio_variants.sh`.
use crate::common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{case, get, tiny_dir, tiny_weights};
use model::audio_features::{AudioFeatures, FPS, SAMPLE_RATE, frame_count};
use model::audio_io::{
    AudioError, AudioInput, AudioLimits, CacheKey, CacheOutcome, DecodedAudio, FeatureCache,
    decode_audio_bytes, decode_audio_file, decode_to_samples_file, weights_fingerprint,
};
use model::wav2vec2::{Wav2Vec2Config, Wav2Vec2Model};

/// `data.n_sample_frames` of the tiny profile.
const CLIP: usize = 4;

fn speech_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech")
}

fn variant(name: &str) -> PathBuf {
    speech_dir().join("variants").join(name)
}

/// The clip the variants were made from.
fn original() -> PathBuf {
    speech_dir().join("sense_and_sensibility_01_austen_64kb-0880.wav")
}

fn recordings() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(speech_dir())
        .expect("reading fixtures/speech")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    paths.sort();
    paths
}

fn w2v_dir() -> PathBuf {
    tiny_weights().join("wav2vec/wav2vec2-base-960h")
}

fn tiny_model() -> Wav2Vec2Model {
    let dir = w2v_dir();
    let cfg = Wav2Vec2Config::from_file(&dir.join("config.json")).expect("tiny config");
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .expect("tiny wav2vec2 weights");
    Wav2Vec2Model::new(&cfg, vb).expect("building the tiny wav2vec2")
}

fn decode(path: &Path) -> DecodedAudio {
    decode_audio_file(path, &AudioLimits::default())
        .unwrap_or_else(|e| panic!("decoding {}: {e}", path.display()))
}

/// The 16-bit samples of a PCM WAV as hound reads them, / 32768.
fn hound_samples(path: &Path) -> Vec<f32> {
    hound::WavReader::open(path)
        .expect("hound open")
        .samples::<i16>()
        .map(|s| f32::from(s.expect("hound sample")) / 32768.0)
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("flattening")
}

/// (max |a − b|, cosine similarity) of two equally long vectors.
fn compare(a: &[f32], b: &[f32]) -> (f32, f64) {
    assert_eq!(a.len(), b.len());
    let max_abs = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    (max_abs, dot / (na * nb))
}

/// The shift `lag` in [-max, max] maximising Σ a[i]·b[i + lag], and the least-squares gain of
/// `b` (shifted) against `a`.
fn align(a: &[f32], b: &[f32], max: isize) -> (isize, f64) {
    let score = |lag: isize| -> (f64, f64) {
        let (mut ab, mut aa) = (0f64, 0f64);
        for (i, &x) in a.iter().enumerate() {
            let j = i as isize + lag;
            if j >= 0 && (j as usize) < b.len() {
                ab += f64::from(x) * f64::from(b[j as usize]);
                aa += f64::from(x) * f64::from(x);
            }
        }
        (ab, aa)
    };
    let lag = (-max..=max)
        .max_by(|&p, &q| score(p).0.total_cmp(&score(q).0))
        .expect("non-empty range");
    let (ab, aa) = score(lag);
    (lag, ab / aa)
}

#[test]
fn every_recording_decodes_and_gives_one_feature_row_per_video_frame() {
    let model = tiny_model();
    let paths = recordings();
    assert_eq!(paths.len(), 5);
    for path in paths {
        let audio = decode(&path);
        let expected = hound_samples(&path);
        assert_eq!(audio.codec, "pcm_s16le", "{}", path.display());
        assert_eq!((audio.source_rate, audio.channels), (16_000, 1));
        // 16 kHz s16 mono: decoding is exactly PCM / 32768 (what librosa returns).
        assert_eq!(audio.samples_16k, expected, "{}", path.display());
        let n = audio.samples_16k.len();
        assert!((audio.duration_s - n as f64 / 16_000.0).abs() < 1e-9);

        let features = AudioFeatures::compute(&model, &audio.samples_16k, CLIP).expect("features");
        let frames = frame_count(n, SAMPLE_RATE, FPS);
        assert_eq!(frames, (n as f64 / 16_000.0 * 25.0).ceil() as usize);
        assert_eq!(features.audio_length, frames, "{}", path.display());
        assert_eq!(features.seq_len, frames.div_ceil(CLIP) * CLIP);
        let (_, _, layers, hidden) = features
            .windows()
            .unwrap()
            .dims4()
            .expect("windows (T,5,L,C)");
        assert_eq!(
            features.windows().unwrap().dims(),
            &[features.seq_len, 5, layers, hidden]
        );
        eprintln!(
            "{}: {n} samples, {frames} frames, peak {:.1} dBFS",
            path.file_name().unwrap().to_string_lossy(),
            audio.peak_dbfs
        );
    }
}

#[test]
fn the_tiny_fixture_wav_is_exactly_the_golden_waveform() {
    let audio = decode(&tiny_dir().join("inputs/driving_audio.wav"));
    let golden: Vec<f32> = flat(
        &(get(&case("inputs"), "waveform_pcm16")
            .to_dtype(DType::F32)
            .unwrap()
            / 32768.0)
            .unwrap(),
    );
    assert_eq!(audio.samples_16k.len(), 4200);
    assert_eq!(audio.samples_16k, golden);
}

/// How one re-encoding of clip 0880 must compare with the 16 kHz s16 original.
struct Expect {
    name: &'static str,
    /// Least-squares gain of the decoded samples against the original, when the file fixes it.
    gain: Option<f64>,
    /// Minimum cosine similarity of the 16 kHz samples (gain-independent).
    samples_cos: f64,
    /// Minimum cosine similarity and maximum |difference| of the feature windows (T, 5, L, C).
    windows_cos: f64,
    windows_max_abs: f32,
}

/// Measured with the tiny wav2vec2 (values in the windows have an RMS of about 1, see the
/// output), in `samples cos / windows cos / windows max abs` order:
/// - 44.1 kHz stereo WAV (sox, L = x, R = x/2): gain 0.7500 (the mean of the channels),
///   1.000000 / 0.99994 / 0.20. Only resampling differs (sox up, rubato down).
/// - MP3 44.1 kHz stereo 128 kb/s: 0.99998 / 0.99984 / 0.34 (ffmpeg's mono→stereo upmix and
///   LAME set the level, not checked).
/// - M4A AAC-LC 48 kHz 96 kb/s: 0.99846 / 0.99857 / 0.58.
/// - Ogg Vorbis 22.05 kHz q4: 0.99098 / 0.98884 / 1.67.
/// - 8-bit WAV: 0.99482 / 0.92902 / 2.76: 8-bit quantisation noise (−48 dBFS) is loud next to
///   the quiet parts of speech, and the per-segment normalisation and the small random-weight
///   encoder amplify it.
///
/// The bounds leave about twice the measured distance from 1 for the cosines (3–8× for the
/// nearly exact WAV and MP3, whose distances are tiny) and 1.5× for the max abs. Lossy codecs
/// differ more because they discard inaudible detail that wav2vec2 still sees. Every variant is
/// also time-aligned (lag 0), which checks that MP3/Vorbis gapless trimming and the M4A edit list removed the encoder priming
/// (without the edit list the AAC output would lag by 1024 / 3 ≈ 341 samples at 16 kHz).
const LOSSY: [Expect; 5] = [
    Expect {
        name: "speech_44k1_stereo.wav",
        gain: Some(0.75),
        samples_cos: 0.9999,
        windows_cos: 0.9995,
        windows_max_abs: 0.3,
    },
    Expect {
        name: "speech_44k1_stereo.mp3",
        gain: None,
        samples_cos: 0.9999,
        windows_cos: 0.9995,
        windows_max_abs: 0.5,
    },
    Expect {
        name: "speech_48k_mono.m4a",
        gain: None,
        samples_cos: 0.997,
        windows_cos: 0.997,
        windows_max_abs: 0.9,
    },
    Expect {
        name: "speech_22k05_mono.ogg",
        gain: None,
        samples_cos: 0.98,
        windows_cos: 0.978,
        windows_max_abs: 2.5,
    },
    Expect {
        name: "speech_16k_u8.wav",
        gain: None,
        samples_cos: 0.99,
        windows_cos: 0.86,
        windows_max_abs: 4.2,
    },
];

#[test]
fn lossless_variants_decode_to_the_same_samples() {
    let reference = decode(&original());
    for (name, codec) in [
        ("speech_16k_mono.flac", "flac"),
        ("speech_16k_s24.wav", "pcm_s24le"),
        ("speech_16k_f32.wav", "pcm_f32le"),
    ] {
        let audio = decode(&variant(name));
        assert_eq!(audio.codec, codec);
        // s16 → s24 (x·256) → /2²³ and s16 → f32 (x/2¹⁵) are exact, and FLAC is lossless.
        assert_eq!(audio.samples_16k, reference.samples_16k, "{name}");
    }
    // u8 keeps the top 8 bits: the error is below one 8-bit step, 2⁻⁷.
    let audio = decode(&variant("speech_16k_u8.wav"));
    assert_eq!(audio.codec, "pcm_u8");
    assert_eq!(audio.samples_16k.len(), reference.samples_16k.len());
    let (max_abs, _) = compare(&audio.samples_16k, &reference.samples_16k);
    assert!(max_abs <= 1.0 / 128.0, "u8: max abs {max_abs}");
}

#[test]
fn lossy_and_resampled_variants_give_close_features() {
    let model = tiny_model();
    let reference = decode(&original());
    let n = reference.samples_16k.len();
    let ref_features = AudioFeatures::compute(&model, &reference.samples_16k, CLIP).unwrap();
    let ref_windows = flat(&ref_features.windows().unwrap());
    let rms = (ref_windows
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        / ref_windows.len() as f64)
        .sqrt();
    eprintln!(
        "reference windows: {} values, RMS {rms:.3}",
        ref_windows.len()
    );
    for expect in LOSSY {
        let name = expect.name;
        let audio = decode(&variant(name));
        // Same length up to the rounding of `ceil(frames · 16000 / rate)`.
        assert!(
            audio.samples_16k.len().abs_diff(n) <= 1,
            "{name}: {} samples, original {n}",
            audio.samples_16k.len()
        );
        let samples = &audio.samples_16k[..n];
        let (lag, gain) = align(&reference.samples_16k, samples, 400);
        assert_eq!(lag, 0, "{name}: decoded audio is shifted by {lag} samples");
        if let Some(expected) = expect.gain {
            assert!((gain - expected).abs() < 2e-3, "{name}: gain {gain}");
        }
        let (_, samples_cos) = compare(samples, &reference.samples_16k);
        let features = AudioFeatures::compute(&model, &audio.samples_16k, CLIP).unwrap();
        assert_eq!(features.audio_length, ref_features.audio_length, "{name}");
        let (windows_max_abs, windows_cos) =
            compare(&flat(&features.windows().unwrap()), &ref_windows);
        eprintln!(
            "{name}: codec {}, {} Hz × {} ch, gain {gain:.4}; samples cos {samples_cos:.6}; \
             windows cos {windows_cos:.6}, max abs {windows_max_abs:.3}",
            audio.codec, audio.source_rate, audio.channels
        );
        assert!(
            samples_cos >= expect.samples_cos,
            "{name}: samples cos {samples_cos}"
        );
        assert!(
            windows_cos >= expect.windows_cos,
            "{name}: windows cos {windows_cos}"
        );
        assert!(
            windows_max_abs <= expect.windows_max_abs,
            "{name}: windows max abs {windows_max_abs}"
        );
    }
}

/// The original clip with the RIFF and `data` sizes set to 0xFFFFFFFF, as tools that stream
/// WAV to a pipe write it: the container states no length.
fn streamed_wav() -> Vec<u8> {
    let mut bytes = std::fs::read(original()).unwrap();
    bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    bytes[data + 4..data + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes
}

#[test]
fn a_streamed_wav_of_unknown_length_decodes_to_the_end() {
    let audio = decode_audio_bytes(&streamed_wav(), Some("wav"), &AudioLimits::default()).unwrap();
    assert_eq!(audio.samples_16k, hound_samples(&original()));
}

fn limit(seconds: f64) -> AudioLimits {
    AudioLimits {
        max_duration_s: seconds,
        ..AudioLimits::default()
    }
}

#[test]
fn rejects_audio_longer_than_the_limit_from_the_container_before_decoding() {
    // 0870 is 7.1 s; its header says so.
    let path = speech_dir().join("sense_and_sensibility_01_austen_64kb-0870.wav");
    let err = decode_audio_file(&path, &limit(5.0)).unwrap_err();
    let AudioError::TooLong {
        duration_s,
        limit_s,
        at_least,
    } = err
    else {
        panic!("expected TooLong, got {err:?}")
    };
    assert!((duration_s - 7.1).abs() < 1e-9 && limit_s == 5.0 && !at_least);
    assert_eq!(
        err.to_string(),
        "the audio is 7.1 s long, more than the limit of 5.0 s"
    );
    // Lossy containers state it too (MP3 Xing header, Ogg last granule, MP4 track duration).
    for name in [
        "speech_44k1_stereo.mp3",
        "speech_22k05_mono.ogg",
        "speech_48k_mono.m4a",
    ] {
        let err = decode_audio_file(&variant(name), &limit(1.0)).unwrap_err();
        assert!(
            matches!(err, AudioError::TooLong { at_least: false, duration_s, .. } if duration_s > 2.9),
            "{name}: {err:?}"
        );
    }
    // Exactly at the limit is accepted.
    assert!(decode_audio_file(&path, &limit(7.1)).is_ok());
}

#[test]
fn rejects_audio_longer_than_the_limit_while_decoding_when_the_length_is_unknown() {
    let err = decode_audio_bytes(&streamed_wav(), Some("wav"), &limit(1.0)).unwrap_err();
    let AudioError::TooLong {
        duration_s,
        at_least,
        ..
    } = err
    else {
        panic!("expected TooLong, got {err:?}")
    };
    // Decoding stops at the first packet past 1 s.
    assert!(at_least && (1.0..1.1).contains(&duration_s), "{duration_s}");
    assert!(err.to_string().contains("s long or more"), "{err}");
}

#[test]
fn rejects_a_truncated_file() {
    let wav = std::fs::read(original()).unwrap();
    let half = &wav[..wav.len() / 2];
    let err = decode_audio_bytes(half, Some("wav"), &AudioLimits::default()).unwrap_err();
    let AudioError::Truncated {
        decoded_s,
        expected_s,
    } = err
    else {
        panic!("expected Truncated, got {err:?}")
    };
    assert_eq!(expected_s, Some(2.99));
    assert!((1.45..1.5).contains(&decoded_s), "{decoded_s}");
    assert!(
        err.to_string()
            .starts_with("truncated file: the data ends after 1.49 s of the 2.99 s"),
        "{err}"
    );
    // Compressed files too: FLAC and MP3 state their length, Ogg ends mid-page, and an MP4
    // whose index is at the end loses it.
    for name in [
        "speech_16k_mono.flac",
        "speech_44k1_stereo.mp3",
        "speech_22k05_mono.ogg",
        "speech_48k_mono.m4a",
    ] {
        let bytes = std::fs::read(variant(name)).unwrap();
        let err = decode_audio_bytes(
            &bytes[..bytes.len() / 2],
            name.rsplit('.').next(),
            &AudioLimits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, AudioError::Truncated { .. }),
            "{name}: {err:?}"
        );
    }
    // A header cut short is not recognisable at all.
    let err = decode_audio_bytes(&wav[..30], Some("wav"), &AudioLimits::default()).unwrap_err();
    assert!(
        matches!(err, AudioError::UnrecognisedFormat { .. }),
        "{err:?}"
    );
}

#[test]
fn rejects_random_bytes_named_mp3() {
    // xorshift64: fixed, incompressible bytes.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<u8> = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("song.mp3");
    std::fs::write(&path, &random).unwrap();
    let err = decode_audio_file(&path, &AudioLimits::default()).unwrap_err();
    assert!(
        matches!(err, AudioError::UnrecognisedFormat { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("not a recognised audio file"),
        "{err}"
    );
}

#[test]
fn rejects_opus_as_an_unsupported_codec() {
    let err = decode_audio_file(&variant("speech_opus.ogg"), &AudioLimits::default()).unwrap_err();
    assert!(
        matches!(&err, AudioError::UnsupportedCodec { codec } if codec == "opus"),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("unsupported codec: opus"),
        "{err}"
    );
}

fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
}

#[test]
fn rejects_a_wav_with_no_samples() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.wav");
    write_wav(&path, &[]);
    let err = decode_audio_file(&path, &AudioLimits::default()).unwrap_err();
    assert!(matches!(err, AudioError::Empty), "{err:?}");
    // And a zero-byte file.
    let err = decode_audio_bytes(&[], Some("wav"), &AudioLimits::default()).unwrap_err();
    assert!(matches!(err, AudioError::Empty), "{err:?}");
}

#[test]
fn rejects_silence_below_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zeros.wav");
    write_wav(&path, &[0; 16_000]);
    let err = decode_audio_file(&path, &AudioLimits::default()).unwrap_err();
    assert!(
        matches!(err, AudioError::Silent { peak_dbfs, threshold_dbfs }
            if peak_dbfs == f64::NEG_INFINITY && threshold_dbfs == -60.0),
        "{err:?}"
    );
    // −60 dBFS is 32.77 in 16-bit: a peak of 32 is silent, 33 is not.
    write_wav(&path, &[32; 16_000]);
    let err = decode_audio_file(&path, &AudioLimits::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the audio is silent: its peak is -60.2 dBFS"),
        "{err}"
    );
    write_wav(&path, &[33; 16_000]);
    assert!(decode_audio_file(&path, &AudioLimits::default()).is_ok());
}

#[test]
fn the_feature_cache_hits_misses_and_is_invalidated_by_weights_and_clip_length() {
    let model = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path().join("audio"));
    let bytes = std::fs::read(original()).unwrap();
    let fingerprint = weights_fingerprint(&w2v_dir().join("model.safetensors")).unwrap();
    let expected_fp = format!(
        "blake3:{}",
        blake3::hash(&std::fs::read(w2v_dir().join("model.safetensors")).unwrap()).to_hex()
    );
    assert_eq!(fingerprint, expected_fp);

    let computed = std::cell::Cell::new(0);
    let run = |bytes: &[u8], fingerprint: &str, clip: usize| {
        let key = CacheKey::new(bytes, fingerprint, clip);
        cache
            .get_or_compute(&key, &Device::Cpu, DType::F32, || {
                computed.set(computed.get() + 1);
                let audio = decode_audio_bytes(bytes, Some("wav"), &AudioLimits::default())?;
                Ok(AudioFeatures::compute(&model, &audio.samples_16k, clip)?)
            })
            .unwrap()
    };

    let (first, outcome) = run(&bytes, &fingerprint, CLIP);
    assert_eq!((outcome, computed.get()), (CacheOutcome::Miss, 1));
    let (again, outcome) = run(&bytes, &fingerprint, CLIP);
    assert_eq!((outcome, computed.get()), (CacheOutcome::Hit, 1));
    // Stored in f32, so the hit is bit-identical; the windows are rebuilt from audio_emb.
    assert_eq!(
        flat(&again.windows().unwrap()),
        flat(&first.windows().unwrap())
    );
    assert_eq!(
        again.windows().unwrap().dims(),
        first.windows().unwrap().dims()
    );
    assert_eq!(flat(&again.audio_emb), flat(&first.audio_emb));
    assert_eq!(
        (again.audio_length, again.seq_len, again.num_segments),
        (first.audio_length, first.seq_len, first.num_segments)
    );

    // Other weights, another clip length, other audio: misses.
    let (_, outcome) = run(&bytes, "blake3:retrained", CLIP);
    assert_eq!((outcome, computed.get()), (CacheOutcome::Miss, 2));
    let (other_clip, outcome) = run(&bytes, &fingerprint, 16);
    assert_eq!((outcome, computed.get()), (CacheOutcome::Miss, 3));
    assert_eq!(other_clip.seq_len, 80);
    let other =
        std::fs::read(speech_dir().join("sense_and_sensibility_01_austen_64kb-0930.wav")).unwrap();
    let (_, outcome) = run(&other, &fingerprint, CLIP);
    assert_eq!((outcome, computed.get()), (CacheOutcome::Miss, 4));
    let (_, outcome) = run(&bytes, "blake3:retrained", CLIP);
    assert_eq!((outcome, computed.get()), (CacheOutcome::Hit, 4));

    // Four files, no temporary leftovers.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("audio"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(".safetensors") && !n.starts_with('.'))
    );
}

#[test]
fn a_damaged_or_mismatching_cache_file_is_a_miss_and_is_replaced() {
    let model = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path());
    let bytes = std::fs::read(original()).unwrap();
    let key = CacheKey::new(&bytes, "fp", CLIP);
    let audio = decode_audio_bytes(&bytes, Some("wav"), &AudioLimits::default()).unwrap();
    let features = AudioFeatures::compute(&model, &audio.samples_16k, CLIP).unwrap();

    std::fs::write(cache.path(&key), b"not a safetensors file").unwrap();
    assert!(
        cache
            .load(&key, &Device::Cpu, DType::F32)
            .unwrap()
            .is_none()
    );

    // A valid file under the wrong name (its metadata names other weights) is not used either.
    let other = CacheKey::new(&bytes, "other-fp", CLIP);
    let written = cache.store(&other, &features).unwrap();
    std::fs::copy(&written, cache.path(&key)).unwrap();
    assert!(
        cache
            .load(&key, &Device::Cpu, DType::F32)
            .unwrap()
            .is_none()
    );

    let (_, outcome) = cache
        .get_or_compute(&key, &Device::Cpu, DType::F32, || Ok(features.clone()))
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    let (_, outcome) = cache
        .get_or_compute(&key, &Device::Cpu, DType::F32, || unreachable!("a hit"))
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
}

/// The studio's generation path decodes into a file of 16 kHz samples packet by packet; each
/// file must give exactly what decoding it whole gives (the same edit-list trimming, the same
/// resampler blocks), and the same refusal where decoding whole refuses.
#[test]
fn decoding_into_a_samples_file_equals_decoding_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("samples.f32");
    let mut paths = recordings();
    paths.extend(
        std::fs::read_dir(speech_dir().join("variants"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    let mut decoded = 0;
    for path in &paths {
        let ext = path.extension().and_then(|e| e.to_str());
        let limits = AudioLimits::default();
        let whole = decode_audio_file(path, &limits);
        let streamed = decode_to_samples_file(AudioInput::File(path), ext, &limits, &out);
        match (whole, streamed) {
            (Ok(whole), Ok(file)) => {
                assert_eq!(file.len, whole.samples_16k.len(), "{}", path.display());
                let back = file.read((0, file.len)).unwrap();
                assert_eq!(back, whole.samples_16k, "{}", path.display());
                assert_eq!(file.source_rate, whole.source_rate);
                assert!((file.duration_s - whole.duration_s).abs() < 1e-12);
                assert_eq!(file.peak_dbfs, whole.peak_dbfs);
                // Past the end: silence.
                assert_eq!(
                    file.read((file.len - 1, file.len + 2)).unwrap()[1..],
                    [0.0; 2]
                );
                decoded += 1;
            }
            (Err(a), Err(b)) => assert_eq!(
                std::mem::discriminant(&a),
                std::mem::discriminant(&b),
                "{}: {a} / {b}",
                path.display()
            ),
            (a, b) => panic!("{}: whole {a:?}, streamed {b:?}", path.display()),
        }
    }
    assert!(decoded > paths.len() / 2, "{decoded} of {}", paths.len());
}

/// Features written to a file a segment at a time and read back a clip's rows at a time give
/// the in-memory tensor's windows, at every clip and past the end.
#[test]
fn feature_rows_on_disk_give_the_in_memory_windows() {
    let model = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let audio = decode(&original());
    let features = AudioFeatures::compute(&model, &audio.samples_16k, CLIP).unwrap();
    let cache = FeatureCache::new(dir.path());
    let key = CacheKey::new(b"any", "fp", CLIP);
    cache.store(&key, &features).unwrap();
    let (rows, summary) = cache.open(&key).expect("the stored file opens");
    assert_eq!(rows.frames(), features.seq_len);
    assert_eq!(
        (summary.audio_length, summary.num_segments),
        (features.audio_length, features.num_segments)
    );
    let t = features.seq_len;
    for (start, len) in [
        (0, CLIP),
        (CLIP, CLIP),
        (t - 1, CLIP),
        (t - CLIP, 2 * CLIP),
        (0, t),
    ] {
        let want =
            model::audio_features::audio_emb_windows(&features.audio_emb, start, len).unwrap();
        let got = rows.windows(start, len, &Device::Cpu).unwrap();
        assert_eq!(got.dims(), want.dims());
        assert_eq!(flat(&got), flat(&want), "{start}+{len}");
    }
    // A truncated file is refused.
    let path = cache.path(&key);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    assert!(cache.open(&key).is_none());
}
