//! Load benchmark: how close does loading the model come to just reading its bytes?
//!
//! In one run (`load_bench --weights DIR --dtype f16|f32`), against a fresh cache folder:
//!
//! 1. `first`: a load that converts `net.pth` into the safetensors cache (in the loaded dtype), to
//!    a built model;
//! 2. `read`: the time to read the bytes the second load uses (the cached safetensors copy of
//!    `net.pth` and the VAE safetensors) start to end into one reused buffer, with the page cache
//!    as warm as the second load finds it (and `net.pth` itself, for reference): pure I/O, the
//!    strictest baseline;
//! 3. `read-fresh`: the same bytes read once into freshly allocated memory, each file into a new
//!    zeroed `Vec` (as `std::fs::read` would, pages faulted in by the read), split across as many
//!    threads as the loader reads with: what a plain owned read of the weights pays;
//!    `read-populated` is the same with each 4 MiB piece faulted in by
//!    `madvise(MADV_POPULATE_WRITE)` before it is read (the fastest owned read this machine
//!    allows); both for reference;
//! 4. `second`: a load from the cache to a fully built model on the CPU, as the studio does it
//!    (this binary installs `MappedWeightsAllocator`, so the cache is mapped, not read);
//! 5. the three reads again, so every baseline brackets the second load.
//!
//! Peak RSS per phase: each phase runs in a child process of this binary (`--phase`), which
//! reports its own `VmHWM`. Resetting the peak in-process (`/proc/self/clear_refs`) would not
//! be per-phase: memory the allocator kept after the first load would count towards the second.
//! Mapped cache pages count in RSS like owned memory (they are the weights); the page cache of
//! files merely read does not.

use std::fs::File;
use std::io::Read;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device};
use clap::{Parser, ValueEnum};
use model::config::{InferenceConfig, WeightsLayout};
use model::loader::{LoadEvent, LoadOptions, load};
use model::weights::{SafetensorsFile, read_threads};

/// Weight tensors may live in a mapping of the `net.pth` cache (see `model::weights`).
#[global_allocator]
static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchDtype {
    F16,
    F32,
}

impl BenchDtype {
    fn dtype(self) -> DType {
        match self {
            Self::F16 => DType::F16,
            Self::F32 => DType::F32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    First,
    Read,
    ReadFresh,
    ReadPopulated,
    Second,
}

#[derive(Parser, Debug)]
#[command(about = "Times loading Hallo2 against reading its weight bytes, with peak RSS per phase")]
struct Args {
    /// The `pretrained_models/` folder (or the folder holding it).
    #[arg(long)]
    weights: PathBuf,
    /// Dtype of the loaded weights.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: BenchDtype,
    /// Inference yaml (default: the official full-size values).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Cache folder for the converted `net.pth`; must not exist yet (default: a fresh temporary
    /// folder, removed at the end).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Keep the cache folder after the run.
    #[arg(long)]
    keep_cache: bool,
    /// Internal: run one phase in this process and print its result.
    #[arg(long, value_enum, hide = true)]
    phase: Option<Phase>,
}

/// What a phase's child process reports (one `PHASE_RESULT` JSON line on stdout).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PhaseResult {
    seconds: f64,
    /// Bytes read or loaded from disk.
    bytes: u64,
    /// `VmHWM` of the child at the end of the phase, bytes.
    peak_rss: u64,
    /// `VmRSS` of the child before the phase started, bytes.
    start_rss: u64,
    /// `(stage, seconds)` from the loader's `Done` events.
    stages: Vec<(String, f64)>,
    /// Whether the load converted `net.pth` (it reported conversion progress).
    converted: bool,
    /// `read` only: seconds to read `net.pth` itself.
    pth_seconds: Option<f64>,
    pth_bytes: Option<u64>,
    /// Loads only: whether the `net.pth` cache was mapped rather than read.
    mapped: Option<bool>,
}

const RESULT_TAG: &str = "PHASE_RESULT ";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let root = if args.weights.join("pretrained_models").is_dir() {
        args.weights.join("pretrained_models")
    } else {
        args.weights.clone()
    };
    let layout = WeightsLayout::new(root);
    match args.phase {
        Some(phase) => {
            let cache_dir = args.cache_dir.clone().ok_or("--phase needs --cache-dir")?;
            let result = run_phase(phase, &args, &layout, &cache_dir)?;
            println!("{RESULT_TAG}{}", serde_json::to_string(&result)?);
            // The model is not dropped: the process ends here.
            std::process::exit(0);
        }
        None => orchestrate(&args, &layout),
    }
}

/// Runs the phases in child processes and prints the figures.
fn orchestrate(args: &Args, layout: &WeightsLayout) -> Result<(), Box<dyn std::error::Error>> {
    let (cache_dir, temporary) = match &args.cache_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("hallo2-load-bench-{}", std::process::id())),
            true,
        ),
    };
    if cache_dir.exists() {
        return Err(format!(
            "cache folder {} exists; the first load must convert",
            cache_dir.display()
        )
        .into());
    }
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let first = spawn_phase(args, Phase::First, &cache_dir)?;
        let read = spawn_phase(args, Phase::Read, &cache_dir)?;
        let fresh = spawn_phase(args, Phase::ReadFresh, &cache_dir)?;
        let populated = spawn_phase(args, Phase::ReadPopulated, &cache_dir)?;
        let second = spawn_phase(args, Phase::Second, &cache_dir)?;
        let read_after = spawn_phase(args, Phase::Read, &cache_dir)?;
        let fresh_after = spawn_phase(args, Phase::ReadFresh, &cache_dir)?;
        let populated_after = spawn_phase(args, Phase::ReadPopulated, &cache_dir)?;
        if !first.converted || second.converted {
            return Err("the first load must convert and the second must hit the cache".into());
        }
        let loaded_bytes = loaded_weight_bytes(layout, &cache_dir, args.dtype.dtype())?;
        report(
            args,
            &first,
            &second,
            [&read, &read_after],
            [&fresh, &fresh_after],
            [&populated, &populated_after],
            loaded_bytes,
        );
        Ok(())
    })();
    if temporary && !args.keep_cache {
        let _ = std::fs::remove_dir_all(&cache_dir);
    }
    result
}

fn spawn_phase(
    args: &Args,
    phase: Phase,
    cache_dir: &Path,
) -> Result<PhaseResult, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--weights")
        .arg(&args.weights)
        .arg("--dtype")
        .arg(match args.dtype {
            BenchDtype::F16 => "f16",
            BenchDtype::F32 => "f32",
        })
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("--phase")
        .arg(match phase {
            Phase::First => "first",
            Phase::Read => "read",
            Phase::ReadFresh => "read-fresh",
            Phase::ReadPopulated => "read-populated",
            Phase::Second => "second",
        });
    if let Some(config) = &args.config {
        cmd.arg("--config").arg(config);
    }
    eprintln!("[load_bench] phase {phase:?} ...");
    let output = cmd.stderr(std::process::Stdio::inherit()).output()?;
    if !output.status.success() {
        return Err(format!("phase {phase:?} failed: {}", output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_TAG))
        .ok_or_else(|| format!("phase {phase:?} printed no result"))?;
    Ok(serde_json::from_str(line)?)
}

fn run_phase(
    phase: Phase,
    args: &Args,
    layout: &WeightsLayout,
    cache_dir: &Path,
) -> Result<PhaseResult, Box<dyn std::error::Error>> {
    let start_rss = proc_status_bytes("VmRSS:")?;
    match phase {
        Phase::Read => {
            let mut buffer = vec![0u8; 16 << 20];
            let files = [cached_net(cache_dir)?, layout.vae_weights()];
            let started = Instant::now();
            let mut bytes = 0;
            for file in &files {
                bytes += read_through(file, &mut buffer)?;
            }
            let seconds = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let pth_bytes = read_through(&layout.net_pth(), &mut buffer)?;
            let pth_seconds = started.elapsed().as_secs_f64();
            Ok(PhaseResult {
                seconds,
                bytes,
                peak_rss: proc_status_bytes("VmHWM:")?,
                start_rss,
                stages: vec![],
                converted: false,
                pth_seconds: Some(pth_seconds),
                pth_bytes: Some(pth_bytes),
                mapped: None,
            })
        }
        Phase::ReadFresh | Phase::ReadPopulated => {
            let files = [cached_net(cache_dir)?, layout.vae_weights()];
            let started = Instant::now();
            let mut owned = vec![];
            for file in &files {
                owned.push(read_fresh(
                    file,
                    read_threads(),
                    phase == Phase::ReadPopulated,
                )?);
            }
            let seconds = started.elapsed().as_secs_f64();
            let bytes = owned.iter().map(|v| v.len() as u64).sum();
            std::hint::black_box(&owned);
            Ok(PhaseResult {
                seconds,
                bytes,
                peak_rss: proc_status_bytes("VmHWM:")?,
                start_rss,
                stages: vec![],
                converted: false,
                pth_seconds: None,
                pth_bytes: None,
                mapped: None,
            })
        }
        Phase::First | Phase::Second => {
            let inference = match &args.config {
                Some(path) => InferenceConfig::from_yaml_file(path)?,
                None => InferenceConfig::hallo2(),
            };
            let options = LoadOptions {
                dtype: args.dtype.dtype(),
                device: Device::Cpu,
                cache_dir: cache_dir.to_owned(),
                vocal_separator: false,
            };
            let mut stages = vec![];
            let mut converted = false;
            let started = Instant::now();
            let loaded = load(layout, &inference, &options, &mut |event| {
                match event {
                    LoadEvent::Progress { .. } => converted = true,
                    LoadEvent::Done { stage, elapsed } => {
                        stages.push((stage.name().to_string(), elapsed.as_secs_f64()))
                    }
                    LoadEvent::Started(_) => {}
                }
                ControlFlow::Continue(())
            })?;
            let seconds = started.elapsed().as_secs_f64();
            let peak_rss = proc_status_bytes("VmHWM:")?;
            let bytes = loaded.weight_bytes;
            std::hint::black_box(&loaded);
            Ok(PhaseResult {
                seconds,
                bytes,
                peak_rss,
                start_rss,
                stages,
                converted,
                pth_seconds: None,
                pth_bytes: None,
                mapped: Some(loaded.weights_mapped),
            })
        }
    }
}

/// The converted `net.pth` in the cache folder (the only `.safetensors` there).
fn cached_net(cache_dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let mut found = vec![];
    for entry in std::fs::read_dir(cache_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("expected one safetensors file in {}", cache_dir.display()).into()),
    }
}

/// Reads `path` start to end through `buffer`; returns the byte count.
fn read_through(path: &Path, buffer: &mut [u8]) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let mut total = 0u64;
    loop {
        let n = file.read(buffer)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Reads all of `path` into a new zeroed `Vec` (fresh pages, faulted in by the reads, or with
/// `populate` by `MADV_POPULATE_WRITE` just before each 4 MiB read), split into `threads`
/// contiguous parts read in parallel.
fn read_fresh(path: &Path, threads: usize, populate: bool) -> std::io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
    let mut data = vec![0u8; len];
    let part = len.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .chunks_mut(part)
            .enumerate()
            .map(|(i, chunk)| {
                let file = &file;
                scope.spawn(move || {
                    if !populate {
                        return file.read_exact_at(chunk, (i * part) as u64);
                    }
                    let mut offset = (i * part) as u64;
                    for piece in chunk.chunks_mut(4 << 20) {
                        populate_write(piece);
                        file.read_exact_at(piece, offset)?;
                        offset += piece.len() as u64;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| std::io::Error::other("reader panicked"))?
        })
    })?;
    Ok(data)
}

/// `madvise(MADV_POPULATE_WRITE)` over the whole pages of `buf`; errors are ignored.
fn populate_write(buf: &mut [u8]) {
    const PAGE: usize = 4096;
    let start = (buf.as_mut_ptr() as usize).next_multiple_of(PAGE);
    let end = (buf.as_mut_ptr() as usize + buf.len()) / PAGE * PAGE;
    if end > start {
        // SAFETY: the range lies inside `buf`; the advice only maps pages, contents unchanged.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }
}

/// Bytes of every weight in `dtype`: the tensors of the cached `net.pth` and the VAE.
fn loaded_weight_bytes(
    layout: &WeightsLayout,
    cache_dir: &Path,
    dtype: DType,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut bytes = 0u64;
    for path in [cached_net(cache_dir)?, layout.vae_weights()] {
        let file = SafetensorsFile::open(&path)?;
        bytes += file
            .entries()
            .values()
            .map(|e| (e.shape.iter().product::<usize>() * dtype.size_in_bytes()) as u64)
            .sum::<u64>();
    }
    Ok(bytes)
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn proc_status_bytes(field: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn report(
    args: &Args,
    first: &PhaseResult,
    second: &PhaseResult,
    reads: [&PhaseResult; 2],
    fresh_reads: [&PhaseResult; 2],
    populated_reads: [&PhaseResult; 2],
    loaded_bytes: u64,
) {
    let rate = |bytes: u64, s: f64| gb(bytes) / s;
    let fastest = |runs: [&PhaseResult; 2]| runs[0].seconds.min(runs[1].seconds);
    let read_s = fastest(reads);
    let fresh_s = fastest(fresh_reads);
    let populated_s = fastest(populated_reads);
    println!(
        "== load_bench --dtype {:?} ({}), {} read threads",
        args.dtype,
        args.weights.display(),
        read_threads()
    );
    println!(
        "byte read, reused 16 MiB buffer (cache + VAE, warm)  {:>6.2} s  {:.2} GB  {:.2} GB/s   (runs: {:.2} s before, {:.2} s after the second load)",
        read_s,
        gb(reads[0].bytes),
        rate(reads[0].bytes, read_s),
        reads[0].seconds,
        reads[1].seconds
    );
    println!(
        "byte read into fresh memory ({} threads)              {:>6.2} s  {:.2} GB  {:.2} GB/s   (runs: {:.2} s before, {:.2} s after; peak RSS {:.2} GB)",
        read_threads(),
        fresh_s,
        gb(fresh_reads[0].bytes),
        rate(fresh_reads[0].bytes, fresh_s),
        fresh_reads[0].seconds,
        fresh_reads[1].seconds,
        gb(fresh_reads[0].peak_rss.max(fresh_reads[1].peak_rss))
    );
    println!(
        "byte read into fresh memory, pre-faulted (ref.)       {:>6.2} s  {:.2} GB  {:.2} GB/s   (runs: {:.2} s before, {:.2} s after)",
        populated_s,
        gb(populated_reads[0].bytes),
        rate(populated_reads[0].bytes, populated_s),
        populated_reads[0].seconds,
        populated_reads[1].seconds,
    );
    if let (Some(s), Some(b)) = (reads[0].pth_seconds, reads[0].pth_bytes) {
        println!(
            "byte read, reused buffer (net.pth, for reference)    {:>6.2} s  {:.2} GB  {:.2} GB/s",
            s,
            gb(b),
            rate(b, s)
        );
    }
    for (name, phase) in [
        ("first load (converts)", first),
        ("second load (cache)", second),
    ] {
        println!(
            "{name:<30} {:>8.2} s  peak RSS {:.2} GB (start {:.3} GB){}",
            phase.seconds,
            gb(phase.peak_rss),
            gb(phase.start_rss),
            if phase.mapped == Some(true) {
                ", net.pth cache mapped"
            } else {
                ", net.pth cache read"
            }
        );
        for (stage, s) in &phase.stages {
            println!("    {stage:<26} {s:>8.2} s");
        }
    }
    println!(
        "weights: {:.3} GB on disk (cache + VAE), {:.3} GB as {:?}",
        gb(second.bytes),
        gb(loaded_bytes),
        args.dtype
    );
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    let strict = second.seconds / read_s;
    let owned = second.seconds / fresh_s;
    let populated = second.seconds / populated_s;
    let rss_ratio = second.peak_rss as f64 / loaded_bytes as f64;
    println!(
        "second load / byte read, reused buffer (pure I/O)   = {strict:.2} (target <= 1.5: {})",
        verdict(strict <= 1.5)
    );
    println!(
        "second load / byte read into fresh memory           = {owned:.2} (target <= 1.5: {})",
        verdict(owned <= 1.5)
    );
    println!("second load / byte read into fresh memory, pre-faulted (reference) = {populated:.2}");
    println!(
        "second-load peak RSS / weight bytes in {:?}          = {rss_ratio:.2} (target <= 1.2: {})",
        args.dtype,
        verdict(rss_ratio <= 1.2)
    );
}
