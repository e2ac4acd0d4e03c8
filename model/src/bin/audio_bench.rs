//! `audio_bench`: how long the audio path takes for a 60 s driving audio on the CPU, per stage:
//! decode (symphonia + downmix), resample to 16 kHz (rubato), wav2vec2 features with the tiny
//! test encoder and with the full-size wav2vec2-base config (random weights), the feature cache
//! (store, load) and the weights fingerprint of a full-size checkpoint.
//!
//! ```text
//! cargo build --release -p model --bin audio_bench
//! target/release/audio_bench [--audio FILE]... [--repeats N]
//! ```
//! Without `--audio` it builds a 60 s 44.1 kHz stereo 16-bit WAV in memory by repeating the
//! speech fixture `variants/speech_44k1_stereo.wav`; each `--audio` file is timed as well.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Parser;
use model::audio_features::AudioFeatures;
use model::audio_io::{
    AudioLimits, CacheKey, FeatureCache, decode_native, resample_to_16k, weights_fingerprint,
};
use model::wav2vec2::{Wav2Vec2Config, Wav2Vec2Model};

#[derive(Parser)]
#[command(about = "Time decoding, resampling and wav2vec2 features for a 60 s audio")]
struct Args {
    /// Extra audio files to time (any supported format).
    #[arg(long)]
    audio: Vec<PathBuf>,
    /// Runs per stage; the best is printed with the first.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip the full-size encoder (about 0.4 TFLOP per minute of audio).
    #[arg(long)]
    no_full: bool,
}

/// Hallo2's clip length (`n_sample_frames`).
const CLIP_FRAMES: usize = 16;
const SECONDS: f64 = 60.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut inputs: Vec<(String, Vec<u8>, Option<String>)> = vec![(
        "60 s WAV 44.1 kHz stereo s16 (generated)".to_string(),
        sixty_second_wav(&fixtures.join("speech/variants/speech_44k1_stereo.wav"))?,
        Some("wav".to_string()),
    )];
    for path in &args.audio {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_string);
        inputs.push((path.display().to_string(), std::fs::read(path)?, ext));
    }

    let tiny_dir = fixtures.join("hallo2-tiny/pretrained_models/wav2vec/wav2vec2-base-960h");
    let tiny = {
        let cfg = Wav2Vec2Config::from_file(&tiny_dir.join("config.json"))?;
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[tiny_dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )?
        };
        Wav2Vec2Model::new(&cfg, vb)?
    };
    let full = if args.no_full {
        None
    } else {
        let start = Instant::now();
        let (model, varmap) = random_full_size()?;
        println!(
            "full-size wav2vec2-base (random weights) built in {:.2?}",
            start.elapsed()
        );
        Some((model, varmap))
    };

    let limits = AudioLimits::default();
    let mut samples_16k = Vec::new();
    for (name, bytes, ext) in &inputs {
        println!("\n{name}: {:.1} MB", bytes.len() as f64 / 1e6);
        let (native, decode) = best(args.repeats, || {
            decode_native(bytes, ext.as_deref(), &limits)
        })?;
        let seconds = native.samples.len() as f64 / f64::from(native.rate);
        println!(
            "  decode   {:>9.2?}  ({} Hz × {} ch {}, {seconds:.2} s, {:.0}× real time)",
            decode,
            native.rate,
            native.channels,
            native.codec,
            seconds / decode.as_secs_f64()
        );
        let (resampled, resample) = best(args.repeats, || {
            resample_to_16k(native.samples.clone(), native.rate)
        })?;
        println!(
            "  resample {:>9.2?}  ({} → {} samples, {:.0}× real time)",
            resample,
            native.samples.len(),
            resampled.len(),
            seconds / resample.as_secs_f64()
        );
        samples_16k = resampled;
    }

    // Features of the generated clip (the last input's, when --audio is given).
    println!(
        "\nwav2vec2 features, {:.1} s of audio, clip length {CLIP_FRAMES}:",
        samples_16k.len() as f64 / 16_000.0
    );
    let (tiny_features, t) = best(args.repeats, || {
        AudioFeatures::compute(&tiny, &samples_16k, CLIP_FRAMES)
    })?;
    println!(
        "  tiny encoder       {t:>9.2?}  windows {:?}",
        tiny_features.windows()?.dims()
    );
    let mut full_features = None;
    if let Some((model, _)) = &full {
        let (features, t) = best(args.repeats.min(2), || {
            AudioFeatures::compute(model, &samples_16k, CLIP_FRAMES)
        })?;
        let finite = features
            .windows()?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|x| x.is_finite());
        println!(
            "  full-size encoder  {t:>9.2?}  windows {:?}, finite {finite}",
            features.windows()?.dims()
        );
        full_features = Some(features);
    }

    // Cache: store and load the largest feature set we have.
    let features = full_features.as_ref().unwrap_or(&tiny_features);
    let dir = std::env::temp_dir().join(format!("audio_bench_cache_{}", std::process::id()));
    let cache = FeatureCache::new(&dir);
    let key = CacheKey::new(&inputs[0].1, "bench", CLIP_FRAMES);
    let (path, store) = best(args.repeats, || cache.store(&key, features))?;
    let size = std::fs::metadata(&path)?.len();
    let (_, load) = best(args.repeats, || cache.load(&key, &Device::Cpu, DType::F32))?;
    let (_, hash) = best(args.repeats, || {
        Ok::<_, std::io::Error>(CacheKey::new(&inputs[0].1, "bench", CLIP_FRAMES))
    })?;
    println!(
        "\nfeature cache: key (hash of {:.1} MB) {hash:.2?}, store {store:.2?}, load {load:.2?} ({:.1} MB file)",
        inputs[0].1.len() as f64 / 1e6,
        size as f64 / 1e6
    );

    if let Some((_, varmap)) = &full {
        let weights = dir.join("wav2vec2-base-random.safetensors");
        varmap.save(&weights)?;
        let size = std::fs::metadata(&weights)?.len();
        let (_, fingerprint) = best(args.repeats, || weights_fingerprint(&weights))?;
        println!(
            "weights fingerprint of a {:.0} MB safetensors file: {fingerprint:.2?} (page cache warm)",
            size as f64 / 1e6
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Runs `f` `n` times (at least once) and returns the first result with the fastest time.
fn best<T, E>(n: usize, mut f: impl FnMut() -> Result<T, E>) -> Result<(T, Duration), E> {
    let start = Instant::now();
    let first = f()?;
    let mut fastest = start.elapsed();
    for _ in 1..n {
        let start = Instant::now();
        f()?;
        fastest = fastest.min(start.elapsed());
    }
    Ok((first, fastest))
}

/// wav2vec2-base with Hallo2's config and random, non-zero weights: built once so the VarMap
/// creates every variable, refilled with N(0, 0.02) (the default hints would leave plain
/// `get`s at zero and make the weight-normed positional conv 0/0), then rebuilt from the same
/// variables so weights derived at construction see the random values.
fn random_full_size() -> candle_core::Result<(Wav2Vec2Model, VarMap)> {
    let varmap = VarMap::new();
    let cfg = Wav2Vec2Config::hallo2();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Wav2Vec2Model::new(&cfg, vb.clone())?;
    for var in varmap.all_vars() {
        let values = Tensor::randn(0f32, 0.02, var.shape(), &Device::Cpu)?;
        var.set(&values)?;
    }
    Ok((Wav2Vec2Model::new(&cfg, vb)?, varmap))
}

/// A 16-bit PCM WAV of exactly [`SECONDS`], the `data` of `path` repeated.
fn sixty_second_wav(path: &Path) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    let fmt = find_chunk(&bytes, b"fmt ").ok_or("no fmt chunk")?;
    let data = find_chunk(&bytes, b"data").ok_or("no data chunk")?;
    let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
    let frame = usize::from(channels) * usize::from(bits / 8);
    let len = (SECONDS * f64::from(rate)) as usize * frame;
    let pcm: Vec<u8> = data.iter().copied().cycle().take(len).collect();
    let mut out = Vec::with_capacity(44 + len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + len as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * frame as u32).to_le_bytes());
    out.extend_from_slice(&(frame as u16).to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&pcm);
    Ok(out)
}

/// The payload of the first RIFF chunk with id `id`.
fn find_chunk<'a>(bytes: &'a [u8], id: &[u8; 4]) -> Option<&'a [u8]> {
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        let payload = bytes.get(at + 8..(at + 8 + size).min(bytes.len()))?;
        if &bytes[at..at + 4] == id {
            return Some(payload);
        }
        at += 8 + size + size % 2;
    }
    None
}
