//! `tools/make_full_size_weights.py` at tiny scale: from manifests of the tiny official files it
//! must write files that candle reads back with the same keys, shapes and dtypes, sensible random
//! values and the exact `pos_encoder.pe` tables; the net.pth layout must match torch.save's
//! byte for byte outside the tensor payloads.
//!
//! Needs `python3` with numpy (or the interpreter named by `HALLO2_PYTHON`); without one the
//! tests print why and pass without checking anything.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::pickle::{PthTensors, read_pth_tensor_info};
use candle_core::{DType, Device, Tensor};
use common::tiny_weights;

/// The Python interpreter to run the script with, when one with numpy is available.
fn python_with_numpy() -> Option<String> {
    let candidates = std::env::var("HALLO2_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_string()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(python);
        }
    }
    None
}

/// A fresh scratch folder for one test (removed again by [`Scratch::drop`]).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hallo2-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "F16",
        DType::F32 => "F32",
        other => panic!("unexpected dtype {other:?} in a tiny weight file"),
    }
}

/// Writes a manifest in the format of `tests/fixtures/manifests/*.json`, keys in the given order.
fn write_manifest(path: &Path, file: &str, tensors: &[(String, Vec<usize>, DType)]) {
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, shape, dtype)| {
            format!(
                "{}: {{\"shape\": {shape:?}, \"dtype\": \"{}\"}}",
                serde_json::to_string(name).expect("quoting a key"),
                dtype_name(*dtype)
            )
        })
        .collect();
    let json = format!(
        "{{\"file\": {}, \"tensors\": {{{}}}}}",
        serde_json::to_string(file).expect("quoting a path"),
        entries.join(", ")
    );
    std::fs::write(path, json).expect("writing manifest");
}

fn run_script(python: &str, out: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/make_full_size_weights.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(out)
        .args(args)
        .output()
        .expect("running make_full_size_weights.py");
    assert!(
        output.status.success(),
        "make_full_size_weights.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn pth_entries(path: &Path) -> Vec<(String, Vec<usize>, DType)> {
    read_pth_tensor_info(path, false, None)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .map(|t| (t.name, t.layout.shape().dims().to_vec(), t.dtype))
        .collect()
}

/// The file's key order from candle's listing: Python's pickler emits a dict in SETITEMS batches
/// of 1000 entries and candle's reader reverses each batch, so reverse them back.
fn pickle_order(mut entries: Vec<(String, Vec<usize>, DType)>) -> Vec<(String, Vec<usize>, DType)> {
    for batch in entries.chunks_mut(1000) {
        batch.reverse();
    }
    entries
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("reading tensor values")
}

/// The value rules of the script: norm scales and weight-norm magnitudes ≈ 1 + N(0, 0.02),
/// everything else N(0, 0.02).
fn check_random_values(name: &str, shape: &[usize], xs: &[f32]) {
    assert!(xs.iter().all(|x| x.is_finite()), "{name}: non-finite value");
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let parts: Vec<&str> = name.split('.').collect();
    let (last, parents) = parts.split_last().expect("non-empty key");
    let is_scale = *last == "weight_g"
        || (*last == "weight" && shape.len() == 1 && parents.iter().any(|p| p.contains("norm")));
    let expected_mean = if is_scale { 1.0 } else { 0.0 };
    // Five standard errors of the mean (plus F16 rounding): fails only for a wrong rule.
    let slack = 5.0 * 0.02 / n.sqrt() + 1e-3;
    assert!(
        (mean - expected_mean).abs() <= slack,
        "{name}: mean {mean} (expected {expected_mean} ± {slack})"
    );
    if xs.len() >= 64 {
        assert!((0.012..0.028).contains(&std), "{name}: std {std}");
    }
}

fn le16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// (name, payload offset) of every record, from the central directory of a small zip.
fn zip_payload_offsets(b: &[u8]) -> Vec<(String, usize)> {
    let eocd = b.len() - 22;
    assert_eq!(
        &b[eocd..eocd + 4],
        b"PK\x05\x06",
        "end of central directory"
    );
    let (count, mut at) = (le16(b, eocd + 10), le32(b, eocd + 16));
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        assert_eq!(&b[at..at + 4], b"PK\x01\x02", "central directory entry");
        let (name_len, extra_len, comment_len) =
            (le16(b, at + 28), le16(b, at + 30), le16(b, at + 32));
        let local = le32(b, at + 42);
        let name = String::from_utf8_lossy(&b[at + 46..at + 46 + name_len]).into_owned();
        assert_eq!(&b[local..local + 4], b"PK\x03\x04", "{name}: local header");
        let payload = local + 30 + le16(b, local + 26) + le16(b, local + 28);
        out.push((name, payload));
        at += 46 + name_len + extra_len + comment_len;
    }
    out
}

#[test]
fn net_pth_layout_and_values() {
    let Some(python) = python_with_numpy() else {
        eprintln!("SKIPPED pth_writer: no python3 with numpy (set HALLO2_PYTHON to one)");
        return;
    };
    let scratch = Scratch::new("pth-writer");
    let official = tiny_weights().join("hallo2/net.pth");
    let official_entries = pth_entries(&official);
    let manifest = scratch.0.join("tiny_net.json");
    let file = "pretrained_models/hallo2/net.pth";
    write_manifest(&manifest, file, &pickle_order(official_entries.clone()));
    let manifest = manifest.to_str().expect("utf-8 path");

    let out = scratch.0.join("out");
    run_script(
        &python,
        &out,
        &["--only", "net", "--net-manifest", manifest],
    );
    let written = out.join("pretrained_models/hallo2/net.pth");

    // Same keys, order, shapes and dtypes as the official file.
    let written_entries = pth_entries(&written);
    assert_eq!(written_entries.len(), official_entries.len());
    assert_eq!(written_entries, official_entries);

    // torch.save layout: same length (every header, padding and descriptor the same size), and
    // identical bytes up to the first storage (data.pkl and byteorder records, CRCs included).
    let official_bytes = std::fs::read(&official).expect("reading official net.pth");
    let written_bytes = std::fs::read(&written).expect("reading written net.pth");
    assert_eq!(written_bytes.len(), official_bytes.len(), "file length");
    let first_storage = official_bytes
        .windows(10)
        .position(|w| w == b"net/data/0")
        .expect("official net.pth has net/data/0")
        - 30;
    assert!(
        written_bytes[..first_storage] == official_bytes[..first_storage],
        "data.pkl / byteorder records differ from torch.save's"
    );
    // Same records at the same payload offsets, each 64-byte aligned like torch's writer.
    let records = zip_payload_offsets(&written_bytes);
    assert_eq!(records, zip_payload_offsets(&official_bytes));
    assert!(
        records.iter().all(|(_, at)| at % 64 == 0),
        "payload not 64-byte aligned"
    );

    // Values: random per the rules, except the sinusoid tables, which must equal the official
    // (F16-rounded) ones exactly.
    let official_tensors = PthTensors::new(&official, None).expect("opening official net.pth");
    let vb = candle_nn::VarBuilder::from_pth(&written, DType::F32, &Device::Cpu)
        .expect("VarBuilder::from_pth on the written net.pth");
    let mut tables = 0;
    for (name, shape, _) in &official_entries {
        let t = vb
            .get(shape.as_slice(), name)
            .expect("reading a written tensor");
        let xs = values(&t);
        if name.ends_with("pos_encoder.pe") {
            let reference = official_tensors
                .get(name)
                .expect("reading official pe")
                .expect("official pe present");
            let diff = xs
                .iter()
                .zip(values(&reference))
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert_eq!(diff, 0.0, "{name}: sinusoid table differs by {diff}");
            tables += 1;
        } else {
            check_random_values(name, shape, &xs);
        }
    }
    assert!(tables > 0, "no pos_encoder.pe tables checked");
    println!(
        "pth_writer: {} tensors match in name/shape/dtype, {tables} pe tables exact",
        official_entries.len()
    );

    // The zip64 path (offsets ≥ 4 GiB in the full-size file), forced on from 4 KiB: candle must
    // read the same tensors.
    let out64 = scratch.0.join("out64");
    run_script(
        &python,
        &out64,
        &[
            "--only",
            "net",
            "--net-manifest",
            manifest,
            "--zip64-threshold",
            "4096",
        ],
    );
    let written64 = out64.join("pretrained_models/hallo2/net.pth");
    assert_eq!(pth_entries(&written64), official_entries);
    let vb64 = candle_nn::VarBuilder::from_pth(&written64, DType::F32, &Device::Cpu)
        .expect("VarBuilder::from_pth on the zip64 net.pth");
    for (name, shape, _) in &official_entries {
        let a = values(&vb.get(shape.as_slice(), name).expect("tensor"));
        let b = values(&vb64.get(shape.as_slice(), name).expect("zip64 tensor"));
        assert!(a == b, "{name}: zip64 copy differs");
    }
}

#[test]
fn vae_safetensors_from_manifest() {
    let Some(python) = python_with_numpy() else {
        eprintln!("SKIPPED pth_writer: no python3 with numpy (set HALLO2_PYTHON to one)");
        return;
    };
    let scratch = Scratch::new("st-writer");
    let official = tiny_weights().join("sd-vae-ft-mse/diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&official, &Device::Cpu).expect("tiny VAE");
    let mut entries: Vec<(String, Vec<usize>, DType)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec(), t.dtype()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let manifest = scratch.0.join("tiny_vae.json");
    let file = "pretrained_models/sd-vae-ft-mse/diffusion_pytorch_model.safetensors";
    write_manifest(&manifest, file, &entries);

    let out = scratch.0.join("out");
    let manifest = manifest.to_str().expect("utf-8 path");
    run_script(
        &python,
        &out,
        &["--only", "vae", "--vae-manifest", manifest],
    );
    let written =
        candle_core::safetensors::load(out.join(file), &Device::Cpu).expect("written VAE");
    let mut written_entries: Vec<(String, Vec<usize>, DType)> = written
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec(), t.dtype()))
        .collect();
    written_entries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(written_entries, entries);
    for (name, t) in &written {
        check_random_values(name, t.dims(), &values(t));
    }
    println!("vae safetensors: {} tensors match", entries.len());
}
