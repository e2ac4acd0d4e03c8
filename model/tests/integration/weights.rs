//! Weight loading on the official tiny files: `.pth` → safetensors cache, positioned reads,
//! key audits, and the errors for truncated or corrupt files.

use crate::common;

use std::collections::BTreeMap;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::max_abs_diff;
use model::weights::{KeyAudit, SafetensorsFile, TensorSpec, WeightBackend, pth_cache};

fn tiny_net_pth() -> std::path::PathBuf {
    common::tiny_weights().join("hallo2/net.pth")
}

#[test]
fn pth_converts_once_into_an_identical_safetensors_cache() {
    let cache = tempfile::tempdir().unwrap();
    let mut calls = 0;
    let first = pth_cache::cached_safetensors(
        &tiny_net_pth(),
        cache.path(),
        DType::F16,
        &mut |done, total| {
            assert!(done <= total);
            calls += 1;
        },
    )
    .unwrap();
    assert!(first.converted);
    assert!(calls > 1, "progress was reported");
    let second =
        pth_cache::cached_safetensors(&tiny_net_pth(), cache.path(), DType::F16, &mut |_, _| {})
            .unwrap();
    assert!(!second.converted, "second call must reuse the cache");
    assert_eq!(first.safetensors, second.safetensors);
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        1,
        "no temporary files left"
    );

    // Every tensor, bit for bit, against candle's own pickle reader.
    let file = SafetensorsFile::open(&first.safetensors).unwrap();
    let reference = candle_core::pickle::PthTensors::new(tiny_net_pth(), None).unwrap();
    assert_eq!(file.entries().len(), reference.tensor_infos().len());
    for name in reference.tensor_infos().keys() {
        let expected = reference.get(name).unwrap().unwrap();
        let actual = file.read(name).unwrap();
        assert_eq!(actual.dtype(), DType::F16, "{name} keeps the file's F16");
        assert_eq!(actual.dims(), expected.dims(), "{name}");
        assert_eq!(max_abs_diff(&actual, &expected), 0.0, "{name} differs");
    }
    // The five wrapper prefixes of the official `Net`.
    for prefix in [
        "reference_unet.",
        "denoising_unet.",
        "face_locator.",
        "imageproj.",
        "audioproj.",
    ] {
        assert!(
            file.entries().keys().any(|k| k.starts_with(prefix)),
            "{prefix}"
        );
    }
}

#[test]
fn fingerprint_follows_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("net.pth");
    std::fs::copy(tiny_net_pth(), &copy).unwrap();
    let a = pth_cache::fingerprint(&copy).unwrap();
    assert_eq!(a, pth_cache::fingerprint(&copy).unwrap(), "stable");
    // Same size, one stored byte flipped inside the directory → another key.
    let mut bytes = std::fs::read(&copy).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(&copy, &bytes).unwrap();
    assert_ne!(a, pth_cache::fingerprint(&copy).unwrap());
}

#[test]
fn truncated_pth_is_reported_as_truncated_or_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("net.pth");
    let bytes = std::fs::read(tiny_net_pth()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err =
        pth_cache::cached_safetensors(&cut, &dir.path().join("cache"), DType::F32, &mut |_, _| {})
            .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("net.pth") && message.contains("truncated or corrupt"),
        "{message}"
    );
    let not_zip = dir.path().join("junk.pth");
    std::fs::write(&not_zip, b"definitely not a zip archive").unwrap();
    let message = pth_cache::fingerprint(&not_zip).unwrap_err().to_string();
    assert!(message.contains("not a torch zip archive"), "{message}");
}

#[test]
fn truncated_safetensors_names_the_file_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let vae = common::tiny_weights().join("sd-vae-ft-mse/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&vae).unwrap();
    let cut = dir.path().join("vae.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let message = SafetensorsFile::open(&cut).unwrap_err().to_string();
    assert!(
        message.contains("vae.safetensors") && message.contains("truncated"),
        "{message}"
    );
    std::fs::write(&cut, &bytes[..4]).unwrap();
    let message = SafetensorsFile::open(&cut).unwrap_err().to_string();
    assert!(message.contains("too short"), "{message}");
}

#[test]
fn weight_backend_serves_requested_dtype_and_reports_unused_keys() {
    let vae = common::tiny_weights().join("sd-vae-ft-mse/diffusion_pytorch_model.safetensors");
    let (backend, unused) = WeightBackend::new(vec![SafetensorsFile::open(&vae).unwrap()]);
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
    let all = unused.unused().len();
    let conv = vb.pp("encoder.conv_in");
    let w = conv.get((16, 3, 3, 3), "weight").unwrap();
    assert_eq!(w.dtype(), DType::F32);
    let err = conv.get((16, 3, 3, 4), "bias").unwrap_err().to_string();
    assert!(err.contains("encoder.conv_in.bias"), "{err}");
    assert_eq!(unused.unused().len(), all - 1);
    assert!(
        !unused
            .unused()
            .contains(&"encoder.conv_in.weight".to_string())
    );
    assert!(vb.get(1, "no.such.key").is_err());
}

#[test]
fn read_as_converts_exactly_like_to_dtype() {
    // F16 -> F32 (an F16 file loaded in f32) and F32 -> F16 (the VAE loaded in f16) go through the
    // staging buffer, tensors of every size in a row, so a stale or short staging view would show
    // up here.
    let cache = tempfile::tempdir().unwrap();
    let net =
        pth_cache::cached_safetensors(&tiny_net_pth(), cache.path(), DType::F16, &mut |_, _| {})
            .unwrap();
    let vae = common::tiny_weights().join("sd-vae-ft-mse/diffusion_pytorch_model.safetensors");
    for (path, stored, target) in [
        (net.safetensors, DType::F16, DType::F32),
        (vae, DType::F32, DType::F16),
    ] {
        let file = SafetensorsFile::open(&path).unwrap();
        for (name, entry) in file.entries() {
            assert_eq!(entry.dtype, stored, "{name}");
            let expected = file.read(name).unwrap().to_dtype(target).unwrap();
            let actual = file.read_as(name, target).unwrap();
            assert_eq!(actual.dtype(), target, "{name}");
            assert_eq!(actual.dims(), entry.shape.as_slice(), "{name}");
            assert_eq!(max_abs_diff(&actual, &expected), 0.0, "{name}");
        }
    }
}

#[test]
fn pth_cache_is_kept_in_the_loaded_dtype_and_read_only() {
    // The official net.pth is F16; a model loaded in F32 gets an F32 cache of its own, so a later
    // load can use the cached bytes as they are (mapped, no conversion).
    let cache = tempfile::tempdir().unwrap();
    let f16 =
        pth_cache::cached_safetensors(&tiny_net_pth(), cache.path(), DType::F16, &mut |_, _| {})
            .unwrap();
    let f32 =
        pth_cache::cached_safetensors(&tiny_net_pth(), cache.path(), DType::F32, &mut |_, _| {})
            .unwrap();
    assert!(f32.converted, "a second dtype is a second cache entry");
    assert_ne!(f16.safetensors, f32.safetensors);
    assert_eq!(f16.fingerprint, f32.fingerprint, "same source");
    assert!(
        f32.safetensors
            .to_str()
            .unwrap()
            .ends_with("-f32.safetensors")
    );
    let (f16, f32) = (
        SafetensorsFile::open(&f16.safetensors).unwrap(),
        SafetensorsFile::open(&f32.safetensors).unwrap(),
    );
    assert_eq!(f32.data_bytes(), 2 * f16.data_bytes());
    for (name, entry) in f32.entries() {
        assert_eq!(entry.dtype, DType::F32, "{name}");
        let exact = f16.read(name).unwrap().to_dtype(DType::F32).unwrap();
        assert_eq!(
            max_abs_diff(&f32.read(name).unwrap(), &exact),
            0.0,
            "{name}"
        );
    }
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert!(
            meta.permissions().readonly(),
            "a mapped cache file is read-only"
        );
    }
}

/// Every tensor of `file` as a `(name, shape)` list, in name order.
fn shapes(file: &SafetensorsFile) -> Vec<(String, Vec<usize>)> {
    file.entries()
        .iter()
        .map(|(n, e)| (n.clone(), e.shape.clone()))
        .collect()
}

#[test]
fn weight_backend_reads_a_group_ahead_and_hands_each_tensor_out_once() {
    let vae = common::tiny_weights().join("sd-vae-ft-mse/diffusion_pytorch_model.safetensors");
    let reference = SafetensorsFile::open(&vae).unwrap();
    let all = shapes(&reference);
    let bytes_in = |dtype: DType, prefix: &str, skip: &str| -> u64 {
        all.iter()
            .filter(|(n, _)| n.starts_with(prefix) && n != skip)
            .map(|(_, s)| (s.iter().product::<usize>() * dtype.size_in_bytes()) as u64)
            .sum()
    };
    for dtype in [DType::F32, DType::F16] {
        let (backend, unused) = WeightBackend::new(vec![SafetensorsFile::open(&vae).unwrap()]);
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, Device::Cpu);
        assert_eq!(
            unused.unclaimed_bytes(),
            0,
            "nothing is read before a request"
        );

        // The first request reads the whole `encoder` group; the rest of it waits in the backend.
        let first = "encoder.conv_in.weight";
        vb.get((16, 3, 3, 3), first).unwrap();
        let expected_ahead = bytes_in(dtype, "encoder.", first);
        assert!(expected_ahead > 0);
        assert_eq!(unused.unclaimed_bytes(), expected_ahead, "{dtype:?}");

        // Every tensor, in any order, equals a direct read, and leaves the backend once served.
        for (name, shape) in all.iter().rev() {
            let got = vb.get(shape.as_slice(), name).unwrap();
            let want = reference.read_as(name, dtype).unwrap();
            assert_eq!(got.dtype(), dtype, "{name}");
            assert_eq!(got.dims(), shape.as_slice(), "{name}");
            assert_eq!(max_abs_diff(&got, &want), 0.0, "{name} {dtype:?}");
        }
        assert_eq!(
            unused.unclaimed_bytes(),
            0,
            "no tensor is held after being served"
        );
        assert!(unused.unused().is_empty());

        // A second request for a served tensor reads it again.
        let again = vb.get((16, 3, 3, 3), first).unwrap();
        let want = reference.read_as(first, dtype).unwrap();
        assert_eq!(max_abs_diff(&again, &want), 0.0);

        // Another dtype than the group was read in is converted on the way out.
        let other = if dtype == DType::F32 {
            DType::F16
        } else {
            DType::F32
        };
        let shape_of = |name: &str| all.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let (backend, _) = WeightBackend::new(vec![SafetensorsFile::open(&vae).unwrap()]);
        let vb2 = VarBuilder::from_backend(Box::new(backend), dtype, Device::Cpu);
        let opener = "decoder.conv_in.bias";
        vb2.get(shape_of(opener).as_slice(), opener).unwrap();
        let name = "decoder.conv_out.bias";
        let got = vb2
            .get_with_hints_dtype(shape_of(name).as_slice(), name, Default::default(), other)
            .unwrap();
        assert_eq!(got.dtype(), other);
        let want = reference
            .read_as(name, dtype)
            .unwrap()
            .to_dtype(other)
            .unwrap();
        assert_eq!(max_abs_diff(&got, &want), 0.0);

        drop(vb);
        assert_eq!(unused.unclaimed_bytes(), 0);
    }
}

/// Writes a safetensors file of `(name, dtype name, shape, little-endian bytes)` tensors.
fn write_safetensors(path: &std::path::Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    // An odd header length, so the tensor data starts at no page or word boundary of the file.
    let mut header = serde_json::to_vec(&header).unwrap();
    if header.len().is_multiple_of(2) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn large_tensors_read_and_convert_exactly_across_read_chunks() {
    // Tensors of several MiB cross the reader's 4 MiB read chunks and 1 Mi-element conversion
    // chunks at odd file offsets; every value must land in its place.
    let n = 2_500_003usize;
    let f32s: Vec<f32> = (0..n)
        .map(|i| ((i % 65_521) as f32 - 30_000.0) * 0.25)
        .collect();
    let f16s: Vec<half::f16> = (0..n)
        .map(|i| half::f16::from_f32(((i % 4099) as f32 - 2000.0) / 64.0))
        .collect();
    let f32_bytes: Vec<u8> = f32s.iter().flat_map(|x| x.to_le_bytes()).collect();
    let f16_bytes: Vec<u8> = f16s.iter().flat_map(|x| x.to_le_bytes()).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    write_safetensors(
        &path,
        &[
            ("big.a", "F16", vec![n], f16_bytes.clone()),
            ("big.b", "F32", vec![n], f32_bytes.clone()),
            ("small.c", "F32", vec![3], f32_bytes[..12].to_vec()),
        ],
    );
    let file = SafetensorsFile::open(&path).unwrap();
    let expect_f16 = candle_core::Tensor::from_vec(f16s.clone(), n, &Device::Cpu).unwrap();
    let expect_f32 = candle_core::Tensor::from_vec(f32s.clone(), n, &Device::Cpu).unwrap();
    for (name, stored) in [("big.a", &expect_f16), ("big.b", &expect_f32)] {
        assert_eq!(
            max_abs_diff(&file.read(name).unwrap(), stored),
            0.0,
            "{name}"
        );
        for dtype in [DType::F16, DType::F32] {
            let want = stored.to_dtype(dtype).unwrap();
            let got = file.read_as(name, dtype).unwrap();
            assert_eq!(got.dtype(), dtype);
            assert_eq!(max_abs_diff(&got, &want), 0.0, "{name} as {dtype:?}");
        }
    }
    // Through the backend, both big tensors are read by the group's threads at once.
    for dtype in [DType::F16, DType::F32] {
        let (backend, unused) = WeightBackend::new(vec![SafetensorsFile::open(&path).unwrap()]);
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, Device::Cpu);
        let b = vb.get(n, "big.b").unwrap();
        assert_eq!(unused.unclaimed_bytes(), (n * dtype.size_in_bytes()) as u64);
        let a = vb.get(n, "big.a").unwrap();
        assert_eq!(max_abs_diff(&a, &expect_f16.to_dtype(dtype).unwrap()), 0.0);
        assert_eq!(max_abs_diff(&b, &expect_f32.to_dtype(dtype).unwrap()), 0.0);
        assert_eq!(unused.unused(), vec!["small.c".to_string()]);
        assert_eq!(
            unused.unclaimed_bytes(),
            0,
            "`small` is another group, never read"
        );
    }
}

#[test]
fn key_audit_names_missing_unused_and_mismatched_keys_without_allocating() {
    let specs: BTreeMap<String, TensorSpec> = [
        ("a.weight", vec![100_000, 100_000]), // 40 GB if it were allocated
        ("a.bias", vec![100_000]),
        ("b.weight", vec![4, 4]),
        ("extra", vec![1]),
    ]
    .into_iter()
    .map(|(k, s)| {
        (
            k.to_string(),
            TensorSpec {
                shape: s,
                dtype: Some("F16".into()),
            },
        )
    })
    .collect();
    let audit = KeyAudit::new(specs);
    let vb = audit.var_builder();
    candle_nn::linear(100_000, 100_000, vb.pp("a")).unwrap();
    candle_nn::linear_no_bias(4, 5, vb.pp("b")).unwrap();
    candle_nn::linear_no_bias(2, 2, vb.pp("c")).unwrap();
    let report = audit.report();
    assert!(!report.is_exact());
    assert_eq!(report.missing, vec![("c.weight".to_string(), vec![2, 2])]);
    assert_eq!(report.unused, vec!["extra".to_string()]);
    assert_eq!(
        report.mismatched,
        vec![("b.weight".to_string(), vec![5, 4], vec![4, 4])]
    );
    let summary = report.summary();
    assert!(
        summary.contains("c.weight") && summary.contains("extra") && summary.contains("b.weight"),
        "{summary}"
    );
}
