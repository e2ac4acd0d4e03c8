//! The three OpenCV 4.9 operations InsightFace applies to 8-bit images, reproduced bit for bit:
//! `cv2.resize` (INTER_LINEAR), `cv2.warpAffine` (INTER_LINEAR, constant border) and
//! `cv2.dnn.blobFromImage` (`imgproc/src/resize.cpp`, `imgproc/src/imgwarp.cpp`,
//! `dnn/src/dnn_utils.cpp` @ 4.9.0).
//!
//! Both resamplers work in fixed point, so a float bilinear filter differs from them by ±1 grey
//! level on a few percent of pixels; these follow OpenCV's integer arithmetic instead.

use image::RgbImage;

/// `INTER_RESIZE_COEF_BITS`: resize weights are 11-bit fixed point.
const RESIZE_COEF_SCALE: f32 = 2048.0;
/// `AB_BITS`: warpAffine source coordinates are 10-bit fixed point before rounding to
/// `INTER_BITS` (5) bits of sub-pixel position.
const AB_SCALE: f64 = 1024.0;
const INTER_BITS: i32 = 5;
const INTER_TAB_SIZE: i32 = 1 << INTER_BITS;
/// `INTER_REMAP_COEF_BITS`: remap weights are 15-bit fixed point.
const REMAP_COEF_BITS: i32 = 15;

/// One output coordinate of the resize: first source index and the two 11-bit weights.
#[derive(Debug, Clone, Copy)]
struct Tap {
    index: i32,
    w0: i32,
    w1: i32,
}

/// The taps OpenCV's `resizeGeneric` computes for one axis. `clamp` is true for x only: rows
/// outside the source keep their fractional weight and are clamped when fetched.
fn resize_taps(src_len: usize, dst_len: usize, clamp: bool) -> Vec<Tap> {
    let inv_scale = dst_len as f64 / src_len as f64;
    let scale = 1.0 / inv_scale;
    (0..dst_len)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut index = f.floor() as i32;
            f -= index as f32;
            if clamp && index < 0 {
                f = 0.0;
                index = 0;
            }
            if clamp && index >= src_len as i32 - 1 {
                f = 0.0;
                index = src_len as i32 - 1;
            }
            // saturate_cast<short>(float) rounds half to even (cvRound).
            let w0 = ((1.0 - f) * RESIZE_COEF_SCALE).round_ties_even() as i32;
            let w1 = (f * RESIZE_COEF_SCALE).round_ties_even() as i32;
            Tap { index, w0, w1 }
        })
        .collect()
}

/// `cv2.resize(img, (width, height))` with the default INTER_LINEAR on an 8-bit image.
///
/// The horizontal pass keeps exact integer sums (weights × pixels); the vertical pass is
/// OpenCV's SIMD kernel (`VResizeLinearVec_32s8u`): each sum is shifted right by 4, multiplied
/// by the row weight keeping the high 16 bits, and the two halves are added and rounded by
/// `(t + 2) >> 2`. OpenCV 4.9 on x86 applies that kernel across the full row width (checked
/// against `cv2.resize` on widths that are not multiples of the vector size), so the scalar
/// `(sum + 2^21) >> 22` tail is never used here.
pub fn resize_linear(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let (dw, dh) = (width as usize, height as usize);
    let mut dst = RgbImage::new(width, height);
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return dst;
    }
    let xs = resize_taps(sw, dw, true);
    let ys = resize_taps(sh, dh, false);
    let pixels = src.as_raw();
    let row_len = sw * 3;
    let horizontal = |y: usize| -> Vec<i32> {
        let row = &pixels[y * row_len..(y + 1) * row_len];
        let mut out = Vec::with_capacity(dw * 3);
        for tap in &xs {
            let x0 = tap.index as usize;
            let x1 = (x0 + 1).min(sw - 1);
            for c in 0..3 {
                out.push(row[x0 * 3 + c] as i32 * tap.w0 + row[x1 * 3 + c] as i32 * tap.w1);
            }
        }
        out
    };
    let rows: Vec<Vec<i32>> = (0..sh).map(horizontal).collect();
    let out = dst.as_mut();
    for (dy, tap) in ys.iter().enumerate() {
        let r0 = &rows[tap.index.clamp(0, sh as i32 - 1) as usize];
        let r1 = &rows[(tap.index + 1).clamp(0, sh as i32 - 1) as usize];
        let line = &mut out[dy * dw * 3..(dy + 1) * dw * 3];
        for (i, v) in line.iter_mut().enumerate() {
            let a = saturate_i16(r0[i] >> 4);
            let b = saturate_i16(r1[i] >> 4);
            let t = saturate_i16(mul_hi(a, tap.w0) + mul_hi(b, tap.w1));
            *v = ((t + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    dst
}

fn saturate_i16(v: i32) -> i32 {
    v.clamp(i16::MIN as i32, i16::MAX as i32)
}

/// High 16 bits of a signed 16×16-bit product (`_mm_mulhi_epi16`).
fn mul_hi(a: i32, b: i32) -> i32 {
    (a * b) >> 16
}

/// `cv2.warpAffine(img, m, (width, height), borderValue=0)`: bilinear, 8-bit, zero outside.
///
/// `m` maps source to destination pixels (as `cv2.warpAffine` takes it without
/// `WARP_INVERSE_MAP`); it is inverted in f64, each destination pixel's source position is
/// rounded to 1/32 pixel through OpenCV's 10-bit accumulators, and the four taps are blended with
/// 15-bit weights. Taps outside the source read 0.
pub fn warp_affine_linear(src: &RgbImage, m: &[[f64; 3]; 2], width: u32, height: u32) -> RgbImage {
    let inv = invert_affine(m);
    let (sw, sh) = (src.width() as i32, src.height() as i32);
    let mut dst = RgbImage::new(width, height);
    if sw == 0 || sh == 0 {
        return dst;
    }
    let pixels = src.as_raw();
    let round_delta = (AB_SCALE as i32) / INTER_TAB_SIZE / 2;
    let adelta: Vec<i32> = (0..width)
        .map(|x| saturate_round(inv[0][0] * x as f64 * AB_SCALE))
        .collect();
    let bdelta: Vec<i32> = (0..width)
        .map(|x| saturate_round(inv[1][0] * x as f64 * AB_SCALE))
        .collect();
    let fetch = |x: i32, y: i32, c: usize| -> i32 {
        if x < 0 || y < 0 || x >= sw || y >= sh {
            0
        } else {
            pixels[(y as usize * sw as usize + x as usize) * 3 + c] as i32
        }
    };
    let out = dst.as_mut();
    for y in 0..height as usize {
        let x0 = saturate_round((inv[0][1] * y as f64 + inv[0][2]) * AB_SCALE) + round_delta;
        let y0 = saturate_round((inv[1][1] * y as f64 + inv[1][2]) * AB_SCALE) + round_delta;
        for x in 0..width as usize {
            let fx = (x0 + adelta[x]) >> (10 - INTER_BITS);
            let fy = (y0 + bdelta[x]) >> (10 - INTER_BITS);
            let sx = saturate_i16(fx >> INTER_BITS);
            let sy = saturate_i16(fy >> INTER_BITS);
            let tx = fx & (INTER_TAB_SIZE - 1);
            let ty = fy & (INTER_TAB_SIZE - 1);
            // The 32×32 bilinear table: (1 − t) and t in 1/32 steps, products scaled by 2^15
            // (exact integers, so OpenCV's sum correction never triggers).
            let w = [
                (INTER_TAB_SIZE - ty) * (INTER_TAB_SIZE - tx) * 32,
                (INTER_TAB_SIZE - ty) * tx * 32,
                ty * (INTER_TAB_SIZE - tx) * 32,
                ty * tx * 32,
            ];
            for c in 0..3 {
                let acc = fetch(sx, sy, c) * w[0]
                    + fetch(sx + 1, sy, c) * w[1]
                    + fetch(sx, sy + 1, c) * w[2]
                    + fetch(sx + 1, sy + 1, c) * w[3];
                out[(y * width as usize + x) * 3 + c] =
                    ((acc + (1 << (REMAP_COEF_BITS - 1))) >> REMAP_COEF_BITS).clamp(0, 255) as u8;
            }
        }
    }
    dst
}

/// `saturate_cast<int>(double)`: round half to even, saturate (NaN gives 0).
fn saturate_round(v: f64) -> i32 {
    v.round_ties_even() as i32
}

/// The inverse of a 2×3 affine map, as `cv::warpAffine` computes it (a singular map gives 0s).
fn invert_affine(m: &[[f64; 3]; 2]) -> [[f64; 3]; 2] {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let d = if det != 0.0 { 1.0 / det } else { 0.0 };
    let a11 = m[1][1] * d;
    let a22 = m[0][0] * d;
    let a12 = -m[0][1] * d;
    let a21 = -m[1][0] * d;
    let b1 = -a11 * m[0][2] - a12 * m[1][2];
    let b2 = -a21 * m[0][2] - a22 * m[1][2];
    [[a11, a12, b1], [a21, a22, b2]]
}

/// `cv2.dnn.blobFromImage(img, 1/std, size, (mean,)*3, swapRB=True)` for an RGB image already at
/// the network size: NCHW f32 in RGB order, `(x − mean) · (1/std)` in f32 as OpenCV computes it.
pub fn blob_from_image(img: &RgbImage, mean: f32, std: f32) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let scale = (1.0f64 / std as f64) as f32;
    let mut blob = vec![0f32; 3 * w * h];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            blob[c * w * h + i] = (px.0[c] as f32 - mean) * scale;
        }
    }
    blob
}
