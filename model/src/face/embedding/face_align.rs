//! ArcFace alignment: a similarity transform of the five detector keypoints onto the standard
//! template, then a bilinear warp (insightface 0.7.3 `insightface/utils/face_align.py`:
//! `arcface_dst`, `estimate_norm`, `norm_crop`).

use image::RgbImage;

use crate::face::opencv::warp_affine_linear;

/// `arcface_dst`: left eye, right eye, nose tip, left and right mouth corners in a 112×112 crop.
pub const ARCFACE_DST: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// `estimate_norm(lmk, image_size)`: the 2×3 similarity (rotation, uniform scale, translation)
/// that maps `kps` onto the ArcFace template scaled to `image_size`, or `None` when
/// `image_size` is neither a multiple of 112 nor of 128 (InsightFace asserts that).
///
/// scikit-image's `SimilarityTransform.estimate` is Umeyama's least-squares fit without
/// reflection. In 2-D it has the closed form used here: with the centred point sets and
/// cross-covariance `A = dstᵀ·src / n`, `p = a11 + a22`, `q = a21 − a12`, the linear part is
/// `[[p, −q], [q, p]] / σ²` (σ² the summed variance of `src`), equal to Umeyama's `U·diag(d)·V`
/// scaled by `(S·d)/σ²` for either sign of `det A`. Coincident keypoints give a zero matrix.
pub fn estimate_norm(kps: &[[f32; 2]; 5], image_size: u32) -> Option<[[f64; 3]; 2]> {
    let (ratio, diff_x) = if image_size.is_multiple_of(112) {
        (image_size as f64 / 112.0, 0.0)
    } else if image_size.is_multiple_of(128) {
        let ratio = image_size as f64 / 128.0;
        (ratio, 8.0 * ratio)
    } else {
        return None;
    };
    // `arcface_dst * ratio` is computed in float32 by NumPy, then the x offset is added.
    let dst: Vec<[f64; 2]> = ARCFACE_DST
        .iter()
        .map(|p| {
            let x = (p[0] * ratio as f32) as f64 + diff_x;
            let y = (p[1] * ratio as f32) as f64;
            [x, y]
        })
        .collect();
    let src: Vec<[f64; 2]> = kps.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    let n = src.len() as f64;
    let mean = |pts: &[[f64; 2]]| -> [f64; 2] {
        let sx: f64 = pts.iter().map(|p| p[0]).sum();
        let sy: f64 = pts.iter().map(|p| p[1]).sum();
        [sx / n, sy / n]
    };
    let (sm, dm) = (mean(&src), mean(&dst));
    let (mut a11, mut a12, mut a21, mut a22, mut var) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(&dst) {
        let (sx, sy) = (s[0] - sm[0], s[1] - sm[1]);
        let (dx, dy) = (d[0] - dm[0], d[1] - dm[1]);
        a11 += dx * sx;
        a12 += dx * sy;
        a21 += dy * sx;
        a22 += dy * sy;
        var += sx * sx + sy * sy;
    }
    if var == 0.0 {
        return Some([[0.0; 3]; 2]);
    }
    // A and σ² both carry a 1/n that cancels.
    let p = a11 + a22;
    let q = a21 - a12;
    let (a, b) = (p / var, q / var);
    let tx = dm[0] - (a * sm[0] - b * sm[1]);
    let ty = dm[1] - (b * sm[0] + a * sm[1]);
    Some([[a, -b, tx], [b, a, ty]])
}

/// `norm_crop(img, kps, image_size)`: the aligned `image_size`² face crop (zero outside the
/// source) and the transform used, or `None` for an unsupported size.
pub fn norm_crop(
    img: &RgbImage,
    kps: &[[f32; 2]; 5],
    image_size: u32,
) -> Option<(RgbImage, [[f64; 3]; 2])> {
    let m = estimate_norm(kps, image_size)?;
    Some((warp_affine_linear(img, &m, image_size, image_size), m))
}
