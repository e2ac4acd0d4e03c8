//! The OpenCV 4.9 and Pillow 10.3 ports (`model::face::opencv`, `model::face::pillow`) against
//! the libraries themselves: fixtures in `tests/fixtures/face_masks/` written by
//! `model/tools/face_masks_reference.py`, inputs regenerated from the script's `pattern`. Every
//! comparison of 8-bit images is exact; only the float64 Gaussian kernel has a tolerance
//! (OpenCV uses its own soft-float `exp`).

use crate::face_masks::{assert_bytes, assert_same, f64s, gray, load, pattern, pattern_gray, u8s};

use model::face::{GrayImage, opencv, pillow};

#[test]
fn gaussian_kernel_follows_opencv_sigma_rule() {
    assert_eq!(opencv::auto_sigma(51), 8.0);
    assert_eq!(opencv::auto_sigma(31), 5.0);
    let prims = load("primitives");
    for k in [31usize, 51] {
        let want = f64s(&prims, &format!("kernel_{k}"));
        let got = opencv::gaussian_kernel(k);
        // OpenCV's soft-float exp vs f64::exp: a few units in the last place at most.
        let worst_ulps = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / (b.abs() * f64::EPSILON))
            .fold(0.0, f64::max);
        println!("kernel {k}: max diff vs cv2.getGaussianKernel = {worst_ulps:.2} ulp");
        assert!(worst_ulps <= 4.0, "kernel {k}: {worst_ulps} ulp");
        let fixed = opencv::gaussian_kernel_fixed(k);
        assert_eq!(
            fixed.iter().sum::<u32>(),
            256,
            "fixed kernel {k} sums to 1.0"
        );
        // The error-diffusion rounding, recomputed from OpenCV's own float64 kernel.
        let mut err = 0.0;
        for i in 0..k / 2 {
            let adj = want[i] * 256.0 + err;
            let v = adj.round_ties_even();
            err = adj - v;
            assert_eq!(f64::from(fixed[i]), v, "fixed kernel {k} tap {i}");
            assert_eq!(fixed[i], fixed[k - 1 - i]);
        }
    }
}

#[test]
fn reflect_101_border() {
    let idx: Vec<usize> = (-4..9).map(|p| opencv::reflect_101(p, 5)).collect();
    assert_eq!(idx, [4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0]);
    assert_eq!(opencv::reflect_101(-3, 1), 0);
}

#[test]
fn cv_resize_matches_opencv() {
    let prims = load("primitives");
    for (sw, sh, dw, dh) in [
        (97, 83, 64, 64),   // non-integer reduction
        (128, 128, 64, 64), // exact 2x: OpenCV's INTER_AREA fast path
        (37, 29, 64, 64),   // enlargement: clipped rows, clamped columns
        (41, 200, 64, 64),  // mixed
        (300, 17, 25, 9),   // widths off the 16-byte vectors: scalar tail
    ] {
        let key = format!("cv_resize_{sw}x{sh}_{dw}x{dh}");
        let got = opencv::resize_linear_gray(&pattern_gray(sw, sh, sw), dw, dh);
        assert_same(&key, &got, &gray(&prims, &key));
    }
}

#[test]
fn cv_gaussian_blur_matches_opencv() {
    let prims = load("primitives");
    let mut blocky = GrayImage::zeros(64, 64);
    for y in 10..40 {
        blocky.data[y * 64 + 20..y * 64 + 61].fill(255);
    }
    for y in 45..50 {
        blocky.data[y * 64..y * 64 + 8].fill(128);
    }
    for k in [31, 51] {
        let key = format!("cv_blur_pattern_{k}");
        let got = opencv::gaussian_blur(&pattern_gray(64, 64, 3), k);
        assert_same(&key, &got, &gray(&prims, &key));
        let key = format!("cv_blur_blocky_{k}");
        assert_same(
            &key,
            &opencv::gaussian_blur(&blocky, k),
            &gray(&prims, &key),
        );
    }
    let got = opencv::gaussian_blur(&pattern_gray(40, 33, 9), 31);
    assert_same(
        "cv_blur_pattern_40x33_31",
        &got,
        &gray(&prims, "cv_blur_pattern_40x33_31"),
    );
}

#[test]
fn cv_normalize_matches_opencv() {
    let prims = load("primitives");
    let narrow = GrayImage {
        data: pattern(64, 64, 1, 5).iter().map(|v| v / 3 + 40).collect(),
        ..pattern_gray(64, 64, 5)
    };
    assert_same(
        "cv_normalize_narrow",
        &opencv::normalize_minmax(&narrow),
        &gray(&prims, "cv_normalize_narrow"),
    );
    let blurred = gray(&prims, "cv_blur_blocky_51");
    assert_same(
        "cv_normalize_blocky51",
        &opencv::normalize_minmax(&blurred),
        &gray(&prims, "cv_normalize_blocky51"),
    );
    // 1..211 twice: 4 of these values round differently unless v·a + b is fused (AVX2 + FMA).
    let ramp = GrayImage {
        width: 211,
        height: 2,
        data: (1..=211u8).chain(1..=211).collect(),
    };
    assert_same(
        "cv_normalize_ramp",
        &opencv::normalize_minmax(&ramp),
        &gray(&prims, "cv_normalize_ramp"),
    );
    let flat = GrayImage {
        width: 8,
        height: 8,
        data: vec![77; 64],
    };
    assert_same(
        "cv_normalize_flat",
        &opencv::normalize_minmax(&flat),
        &gray(&prims, "cv_normalize_flat"),
    );
}

#[test]
fn pil_bilinear_matches_pillow() {
    let prims = load("primitives");
    for (sw, sh, dw, dh) in [
        (64, 64, 32, 32),
        (64, 64, 16, 16),
        (64, 64, 8, 8),
        (64, 64, 1, 1),
        (50, 50, 17, 17),
        (20, 20, 64, 64),
        (40, 30, 23, 51),
    ] {
        let key = format!("pil_l_{sw}x{sh}_{dw}x{dh}");
        let got = pillow::resize_bilinear_gray(&pattern_gray(sw, sh, sw + 1), dw, dh);
        assert_same(&key, &got, &gray(&prims, &key));
    }
    for (sw, sh, dw, dh) in [(30, 20, 16, 16), (30, 20, 45, 33), (97, 61, 24, 20)] {
        let key = format!("pil_rgb_{sw}x{sh}_{dw}x{dh}");
        let got = pillow::resize_bilinear(&pattern(sw, sh, 3, sw + 2), sw, sh, 3, dw, dh);
        assert_bytes(&key, &got, &u8s(&prims, &key), dw * 3);
    }
}
