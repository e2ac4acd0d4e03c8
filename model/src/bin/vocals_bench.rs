//! `vocals_bench`: the real-time factor of vocal separation on this machine, and where its time
//! goes per chunk (STFT, network, iSTFT), against the wav2vec2-free rest of the audio path
//! (decoding to 16 kHz) run in the same process as the baseline.
//!
//! ```text
//! cargo build --release -p model --bin vocals_bench
//! target/release/vocals_bench [--model Kim_Vocal_2.onnx --data mdx_model_data.json] [--seconds 30]
//! ```
//! Without `--model` it runs the tiny stand-in network of the test fixtures, which says how long
//! the processing around the network takes, not the network. `scripts/bench-vocals.sh` makes a
//! random network of Kim_Vocal_2's architecture and size (the real weights are not public here)
//! and runs this bench on it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use model::audio_io::{AudioLimits, decode_audio_file};
use model::vocals::{SEPARATION_RATE, VocalSeparator};

#[derive(Parser)]
#[command(about = "Time vocal separation (MDX, audio-separator 0.17.2 processing)")]
struct Args {
    /// The ONNX network (default: the tests' stand-in).
    #[arg(long, requires = "data")]
    model: Option<PathBuf>,
    /// Its `mdx_model_data.json`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seconds of audio to separate.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (model, data) = match (args.model, args.data) {
        (Some(m), Some(d)) => (m, d),
        _ => {
            let dir = fixtures.join("vocals");
            println!("network: the tests' stand-in (times the processing, not Kim_Vocal_2)");
            (
                dir.join("stand_in_mdx.onnx"),
                dir.join("mdx_model_data.json"),
            )
        }
    };
    let t = Instant::now();
    let separator = VocalSeparator::load(&model, &data)?;
    println!(
        "load {}: {:.2} s (tract parse + optimise)",
        separator.name(),
        t.elapsed().as_secs_f64()
    );

    // Speech-like test signal: the speech fixture repeated to length, at the separation rate.
    let speech = fixtures.join("speech/sense_and_sensibility_01_austen_64kb-0880.wav");
    let decoded = decode_audio_file(&speech, &AudioLimits::default())?;
    let one = model::vocals::prepare_mix(vec![decoded.samples_16k.clone()], 16_000)?;
    let n = (args.seconds * f64::from(SEPARATION_RATE)) as usize;
    let mix: Vec<f32> = one[0].iter().copied().cycle().take(n).collect();

    // Baseline: decoding the speech file to 16 kHz, per second of audio.
    let t = Instant::now();
    decode_audio_file(&speech, &AudioLimits::default())?;
    let decode_rtf = t.elapsed().as_secs_f64() / decoded.duration_s;

    // One chunk, by part.
    let chunk = separator.params().chunk_size();
    let part = [mix[..chunk].to_vec(), mix[..chunk].to_vec()];
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let mut input = Vec::new();
    let stft = timed(&mut || input = separator.model_input(&part));
    let mut output = Vec::new();
    let network = timed(&mut || output = separator.run_network(input.clone()).expect("network"));
    let istft = timed(&mut || {
        separator.from_model_output(&output);
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "one chunk ({:.2} s of audio): STFT {:.0} ms, network {:.0} ms, iSTFT {:.0} ms",
        chunk as f64 / f64::from(SEPARATION_RATE),
        ms(stft),
        ms(network),
        ms(istft)
    );

    let t = Instant::now();
    let vocals = separator.separate([mix.clone(), mix])?;
    let to_16k = vocals.to_mono(16_000)?;
    let elapsed = t.elapsed().as_secs_f64();
    let rtf = elapsed / args.seconds;
    println!(
        "{:.0} s of audio: separated and at 16 kHz in {elapsed:.1} s — real-time factor {rtf:.3} \
         ({} samples out)",
        args.seconds,
        to_16k.len()
    );
    println!(
        "baseline, decoding to 16 kHz: real-time factor {decode_rtf:.5}; separation is {:.0}× it",
        rtf / decode_rtf
    );
    Ok(())
}
