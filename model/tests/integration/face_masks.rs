//! Hallo2's mask preprocessing (`model::face::masks`) against OpenCV 4.9.0 / Pillow 10.3.0 /
//! numpy 1.26.4, the versions hallo2 @ 58a9aa6 pins.
//!
//! Fixtures: `tests/fixtures/face_masks/`, written by `model/tools/face_masks_reference.py`.
//! Inputs are either stored (landmarks) or regenerated here from the same formula ([`pattern`]).
//! Every comparison of 8-bit images is exact (tolerance 0); tensors built from them are compared
//! exactly too, since `u8 / 255` in float32 is deterministic. Only the float64 Gaussian kernel
//! has a tolerance (OpenCV uses its own soft-float `exp`).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use model::face::masks::{
    self, BinaryMasks, HalloMasks, LIP_IDS, MaskConfig, RegionBox, SILHOUETTE_IDS, SoftMasks,
};
use model::face::{FaceError, GrayImage, opencv};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face_masks")
}

pub(crate) fn load(name: &str) -> HashMap<String, Tensor> {
    let path = fixture_dir().join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn get<'a>(case: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    case.get(key)
        .unwrap_or_else(|| panic!("fixture has no tensor {key:?}"))
}

/// A stored 2-D u8 array as an image.
pub(crate) fn gray(case: &HashMap<String, Tensor>, key: &str) -> GrayImage {
    let t = get(case, key);
    let (h, w) = t.dims2().expect("2-D u8 array");
    GrayImage {
        width: w,
        height: h,
        data: t.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
    }
}

pub(crate) fn u8s(case: &HashMap<String, Tensor>, key: &str) -> Vec<u8> {
    get(case, key)
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap()
}

fn i64s(case: &HashMap<String, Tensor>, key: &str) -> Vec<i64> {
    get(case, key).to_vec1::<i64>().unwrap()
}

pub(crate) fn f64s(case: &HashMap<String, Tensor>, key: &str) -> Vec<f64> {
    get(case, key)
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// `((x*37 + y*91 + (x*y) % 17 + 53*ch + seed) * 5) % 256`, interleaved — the script's `pattern`.
pub(crate) fn pattern(w: usize, h: usize, c: usize, seed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                out.push((((x * 37 + y * 91 + (x * y) % 17 + 53 * ch + seed) * 5) % 256) as u8);
            }
        }
    }
    out
}

pub(crate) fn pattern_gray(w: usize, h: usize, seed: usize) -> GrayImage {
    GrayImage {
        width: w,
        height: h,
        data: pattern(w, h, 1, seed),
    }
}

/// Exact equality of two images, reporting the count and first mismatch.
pub(crate) fn assert_same(what: &str, actual: &GrayImage, expected: &GrayImage) {
    assert_eq!(
        (actual.width, actual.height),
        (expected.width, expected.height),
        "{what}: size"
    );
    assert_bytes(what, &actual.data, &expected.data, actual.width);
}

pub(crate) fn assert_bytes(what: &str, actual: &[u8], expected: &[u8], width: usize) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let bad: Vec<usize> = (0..actual.len())
        .filter(|&i| actual[i] != expected[i])
        .collect();
    if let Some(&i) = bad.first() {
        let max = bad
            .iter()
            .map(|&j| (i32::from(actual[j]) - i32::from(expected[j])).abs())
            .max()
            .unwrap_or(0);
        panic!(
            "{what}: {} of {} values differ (max |diff| {max}); first at ({}, {}): got {} want {}",
            bad.len(),
            actual.len(),
            i % width,
            i / width,
            actual[i],
            expected[i]
        );
    }
}

fn region(b: &RegionBox) -> Vec<i64> {
    vec![b.min_x, b.max_x, b.min_y, b.max_y]
}

#[test]
fn expand_region_matches_python_rounding() {
    let text = std::fs::read_to_string(fixture_dir().join("expand_region.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 11);
    for c in &cases {
        let r: Vec<f64> = serde_json::from_value(c["region"].clone()).unwrap();
        let want: Vec<i64> = serde_json::from_value(c["expanded"].clone()).unwrap();
        let got = masks::expand_region(
            [r[0], r[1], r[2], r[3]],
            c["w"].as_u64().unwrap() as usize,
            c["h"].as_u64().unwrap() as usize,
            c["ratio"].as_f64().unwrap(),
        );
        assert_eq!(region(&got), want, "expand_region({c})");
    }
}

#[test]
fn negative_box_start_slices_like_numpy() {
    // [-10, 64) on a 64-wide image is numpy's a[-10:64]: only the last 10 columns.
    let b = RegionBox {
        min_x: -10,
        max_x: 64,
        min_y: 0,
        max_y: 2,
    };
    let m = masks::region_mask(&b, 64, 4);
    let row: Vec<u8> = m.data[..64].to_vec();
    assert!(row[..54].iter().all(|&v| v == 0) && row[54..].iter().all(|&v| v == 255));
    assert!(m.data[128..].iter().all(|&v| v == 0));
}

/// One landmark set through the whole `get_mask` + `ImageProcessor` path.
fn check_case(name: &str, full: bool) {
    let case = load(name);
    let lm = get(&case, "landmarks").to_vec2::<f32>().unwrap();
    let landmarks: Vec<[f32; 3]> = lm.iter().map(|p| [p[0], p[1], p[2]]).collect();
    let hw = i64s(&case, "image_hw");
    let (height, width) = (hw[0] as usize, hw[1] as usize);
    let image_size = i64s(&case, "image_size")[0] as usize;
    let ratio = f64s(&case, "face_ratio")[0];

    assert_eq!(
        masks::landmark_bounds(&landmarks, &SILHOUETTE_IDS)
            .unwrap()
            .to_vec(),
        f64s(&case, "face_raw"),
        "{name}: face landmark box"
    );
    assert_eq!(
        masks::landmark_bounds(&landmarks, &LIP_IDS)
            .unwrap()
            .to_vec(),
        f64s(&case, "lip_raw"),
        "{name}: lip landmark box"
    );
    let binary = BinaryMasks::from_landmarks(&landmarks, width, height, ratio).unwrap();
    assert_eq!(
        region(&binary.face_box),
        i64s(&case, "face_box"),
        "{name}: face box"
    );
    assert_eq!(
        region(&binary.lip_box),
        i64s(&case, "lip_box"),
        "{name}: lip box"
    );
    if full {
        let face_rs = opencv::resize_linear_gray(&binary.face, 64, 64);
        let lip_rs = opencv::resize_linear_gray(&binary.lip, 64, 64);
        assert_same(
            &format!("{name} face_resized"),
            &face_rs,
            &gray(&case, "face_resized"),
        );
        assert_same(
            &format!("{name} lip_resized"),
            &lip_rs,
            &gray(&case, "lip_resized"),
        );
        let face_bl = opencv::gaussian_blur(&face_rs, 51);
        assert_same(
            &format!("{name} face_blurred"),
            &face_bl,
            &gray(&case, "face_blurred"),
        );
        assert_same(
            &format!("{name} lip_blurred"),
            &opencv::gaussian_blur(&lip_rs, 31),
            &gray(&case, "lip_blurred"),
        );
        assert_same(
            &format!("{name} face_blur"),
            &opencv::normalize_minmax(&face_bl),
            &gray(&case, "face_blur"),
        );
    }
    let soft = SoftMasks::new(&binary);
    assert_same(
        &format!("{name} background"),
        &soft.background,
        &gray(&case, "background"),
    );
    assert_same(
        &format!("{name} sep_face"),
        &soft.face,
        &gray(&case, "sep_face"),
    );
    assert_same(
        &format!("{name} sep_lip"),
        &soft.lip,
        &gray(&case, "sep_lip"),
    );

    let cfg = MaskConfig {
        image_size,
        face_expand_ratio: ratio,
    };
    let out = HalloMasks::new(&cfg, &landmarks, width, height, &Device::Cpu).unwrap();
    for (key, levels, soft64) in [
        ("full", &out.full_mask, &soft.background),
        ("face", &out.face_mask, &soft.face),
        ("lip", &out.lip_mask, &soft.lip),
    ] {
        for (level, div) in [8usize, 16, 32, 64].iter().enumerate() {
            let side = image_size / div;
            let want = if side == 64 {
                soft64.data.clone()
            } else {
                u8s(&case, &format!("{key}_{div}"))
            };
            let got = &levels[level];
            assert_eq!(got.dims(), [1, side * side], "{name} {key} level {level}");
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            // ToTensor: u8 / 255 in float32, bit for bit.
            let want: Vec<f32> = want.iter().map(|&v| f32::from(v) / 255.0).collect();
            let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(bad, 0, "{name} {key}_{div}: {bad} values differ");
        }
    }
    assert_eq!(out.face_region.dims(), [3, image_size, image_size]);
    let region_u8 = out
        .face_region
        .affine(255.0, 0.0)
        .unwrap()
        .round()
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let plane = image_size * image_size;
    assert_eq!(region_u8[..plane], region_u8[plane..2 * plane]);
    assert_eq!(region_u8[..plane], region_u8[2 * plane..]);
    if case.contains_key("face_region") {
        assert_bytes(
            &format!("{name} face_region"),
            &region_u8[..plane],
            &u8s(&case, "face_region"),
            image_size,
        );
    } else if (width, height) == (image_size, image_size) {
        // Same size: torchvision's Resize is Image.copy(), the binary mask itself.
        assert_bytes(
            &format!("{name} face_region"),
            &region_u8[..plane],
            &binary.face.data,
            image_size,
        );
    }
}

#[test]
fn masks_512_match_reference() {
    check_case("case_512", true);
}

#[test]
fn masks_non_square_match_reference() {
    check_case("case_600x520", false);
}

#[test]
fn masks_at_border_with_exact_2x_resize_match_reference() {
    check_case("case_128_border", true);
}

#[test]
fn masks_tiny_profile_match_reference() {
    check_case("case_tiny", false);
}

#[test]
fn masks_box_wider_than_image_match_reference() {
    check_case("case_overflow", false);
}

#[test]
fn source_pixels_match_pillow_and_normalise() {
    let case = load("source_pixels");
    let (w, h) = (83, 47);
    let rgb = pattern(w, h, 3, 11);
    let t = masks::source_pixels(&rgb, w, h, 64, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), [3, 64, 64]);
    let resized = u8s(&case, "resized");
    let chw = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, px) in resized.chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            let want = (f32::from(v) / 255.0 - 0.5) / 0.5;
            assert_eq!(chw[c * 4096 + i], want, "pixel {i} channel {c}");
        }
    }
    let (lo, hi) = (
        chw.iter().cloned().fold(f32::MAX, f32::min),
        chw.iter().cloned().fold(f32::MIN, f32::max),
    );
    assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let lm = vec![[10.0f32, 10.0, 0.0]; 100];
    let cfg = MaskConfig::hallo2();
    let cpu = Device::Cpu;
    assert!(matches!(
        HalloMasks::new(&cfg, &lm, 64, 64, &cpu),
        Err(FaceError::TooFewLandmarks { got: 100 })
    ));
    let mut lm = vec![[10.0f32, 10.0, 0.0]; 468];
    lm[LIP_IDS[3]][1] = f32::NAN;
    assert!(matches!(
        HalloMasks::new(&cfg, &lm, 64, 64, &cpu),
        Err(FaceError::NonFiniteLandmark { index: 39, .. })
    ));
    let lm = vec![[10.0f32, 10.0, 0.0]; 468];
    assert!(matches!(
        HalloMasks::new(&cfg, &lm, 0, 64, &cpu),
        Err(FaceError::EmptyImage { .. })
    ));
    let bad = MaskConfig {
        image_size: 100,
        ..MaskConfig::hallo2()
    };
    assert!(matches!(
        HalloMasks::new(&bad, &lm, 64, 64, &cpu),
        Err(FaceError::ImageSize { size: 100 })
    ));
    let bad = MaskConfig {
        face_expand_ratio: f64::NAN,
        ..MaskConfig::hallo2()
    };
    assert!(matches!(
        HalloMasks::new(&bad, &lm, 64, 64, &cpu),
        Err(FaceError::ExpandRatio { .. })
    ));
    assert!(matches!(
        masks::source_pixels(&[0; 10], 2, 2, 64, &cpu),
        Err(FaceError::ImageBuffer {
            len: 10,
            expected: 12,
            ..
        })
    ));
    // A degenerate face (all points equal) still yields masks: zero boxes, flat soft masks.
    let m = HalloMasks::new(
        &MaskConfig {
            image_size: 64,
            face_expand_ratio: 1.2,
        },
        &lm,
        64,
        64,
        &cpu,
    )
    .unwrap();
    assert_eq!(m.full_mask[0].dims(), [1, 64]);
    assert_eq!(m.full_mask[3].dims(), [1, 1]);
}
