//! OpenCV 4.9's 8-bit image operations that the upstream face path goes through, reproduced bit
//! for bit: `cv2.resize` (INTER_LINEAR, and INTER_AREA's fast path that it takes for an exact
//! halving), `cv2.GaussianBlur` and `cv2.normalize` (Hallo2's masks), `cv2.warpAffine` and
//! `cv2.dnn.blobFromImage` (InsightFace) — `imgproc/src/resize.cpp`, `imgproc/src/smooth.*`,
//! `imgproc/src/imgwarp.cpp`, `dnn/src/dnn_utils.cpp` @ 4.9.0.
//!
//! The resamplers work in fixed point, so a float bilinear filter differs from them by ±1 grey
//! level on a few percent of pixels; these follow OpenCV's integer arithmetic instead.

use image::RgbImage;

use super::GrayImage;

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
    index: i64,
    w0: i32,
    w1: i32,
}

/// The taps `resizeGeneric_` computes for one axis (`ksize` 2, non-area mode). `clamp` is true
/// for x only: rows outside the source keep their fractional weight and are clamped when fetched.
fn linear_taps(src_len: usize, dst_len: usize, clamp: bool) -> Vec<Tap> {
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    (0..dst_len)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut index = f.floor() as i64;
            f -= index as f32;
            if clamp && index < 0 {
                f = 0.0;
                index = 0;
            }
            if clamp && index >= src_len as i64 - 1 {
                f = 0.0;
                index = src_len as i64 - 1;
            }
            // saturate_cast<short>(float) rounds half to even (cvRound).
            let q = |c: f32| (c * RESIZE_COEF_SCALE).round_ties_even() as i32;
            Tap {
                index,
                w0: q(1.0 - f),
                w1: q(f),
            }
        })
        .collect()
}

/// `cv2.resize(src, (dw, dh))` with the default INTER_LINEAR on interleaved 8-bit pixels with
/// `channels` channels.
///
/// Equal sizes copy. An exact 2× reduction on both axes goes through `INTER_AREA`'s fast path,
/// as OpenCV does. Otherwise the horizontal pass keeps exact integer sums (weights × pixels) and
/// the vertical pass is OpenCV's SIMD kernel (`VResizeLinearVec_32s8u`): each sum is shifted
/// right by 4, multiplied by the row weight keeping the high 16 bits, and the two halves are
/// added and rounded by `(t + 2) >> 2`. OpenCV 4.9 on x86 applies that kernel across the full
/// row width (checked against `cv2.resize` on widths that are not multiples of the vector
/// size), so the scalar `(sum + 2^21) >> 22` tail is never used.
pub fn resize_linear(
    src: &[u8],
    (sw, sh): (usize, usize),
    channels: usize,
    (dw, dh): (usize, usize),
) -> Vec<u8> {
    if (sw, sh) == (dw, dh) {
        return src.to_vec();
    }
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return vec![0; dw * dh * channels];
    }
    let (scale_x, scale_y) = (sw as f64 / dw as f64, sh as f64 / dh as f64);
    let exact = |s: f64| (s - s.round_ties_even()).abs() < f64::EPSILON;
    if exact(scale_x) && exact(scale_y) && scale_x == 2.0 && scale_y == 2.0 {
        return area_half(src, sw, channels, (dw, dh));
    }
    let xs = linear_taps(sw, dw, true);
    let ys = linear_taps(sh, dh, false);
    let c = channels;
    let horizontal = |y: usize| -> Vec<i32> {
        let row = &src[y * sw * c..(y + 1) * sw * c];
        let mut out = Vec::with_capacity(dw * c);
        for tap in &xs {
            let x0 = tap.index as usize;
            let x1 = (x0 + 1).min(sw - 1);
            for ch in 0..c {
                out.push(
                    i32::from(row[x0 * c + ch]) * tap.w0 + i32::from(row[x1 * c + ch]) * tap.w1,
                );
            }
        }
        out
    };
    let rows: Vec<Vec<i32>> = (0..sh).map(horizontal).collect();
    let clip_row = |y: i64| y.clamp(0, sh as i64 - 1) as usize;
    let mut out = vec![0u8; dw * dh * c];
    for (line, tap) in out.chunks_exact_mut(dw * c).zip(&ys) {
        let r0 = &rows[clip_row(tap.index)];
        let r1 = &rows[clip_row(tap.index + 1)];
        for (i, v) in line.iter_mut().enumerate() {
            let a = saturate_i16(r0[i] >> 4);
            let b = saturate_i16(r1[i] >> 4);
            let t = saturate_i16(mul_hi(a, tap.w0) + mul_hi(b, tap.w1));
            *v = ((t + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    out
}

/// [`resize_linear`] on a single-channel image.
pub fn resize_linear_gray(src: &GrayImage, dw: usize, dh: usize) -> GrayImage {
    GrayImage {
        width: dw,
        height: dh,
        data: resize_linear(&src.data, (src.width, src.height), 1, (dw, dh)),
    }
}

/// [`resize_linear`] on an RGB image.
pub fn resize_linear_rgb(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let data = resize_linear(
        src.as_raw(),
        (src.width() as usize, src.height() as usize),
        3,
        (width as usize, height as usize),
    );
    RgbImage::from_raw(width, height, data).expect("resize_linear returns width·height·3 bytes")
}

/// `resizeAreaFast_` for 2×2 blocks: the SIMD path rounds halves up, `(sum + 2) >> 2`.
fn area_half(src: &[u8], sw: usize, c: usize, (dw, dh): (usize, usize)) -> Vec<u8> {
    let at = |x: usize, y: usize, ch: usize| u32::from(src[(y * sw + x) * c + ch]);
    let mut out = vec![0u8; dw * dh * c];
    for y in 0..dh {
        for x in 0..dw {
            for ch in 0..c {
                let sum = at(2 * x, 2 * y, ch)
                    + at(2 * x + 1, 2 * y, ch)
                    + at(2 * x, 2 * y + 1, ch)
                    + at(2 * x + 1, 2 * y + 1, ch);
                out[(y * dw + x) * c + ch] = ((sum + 2) >> 2) as u8;
            }
        }
    }
    out
}

/// `σ = 0.3·((k − 1)·0.5 − 1) + 0.8`, as OpenCV computes it for `sigma <= 0`:
/// `fma(k, 0.15, 0.35)`.
pub fn auto_sigma(ksize: usize) -> f64 {
    (ksize as f64).mul_add(0.15, 0.35)
}

/// `getGaussianKernelBitExact(ksize, 0)` as float64 (`cv2.getGaussianKernel(k, 0)` for `k > 9`).
///
/// OpenCV evaluates `exp` with its own soft-float routine; `f64::exp` may differ in the last
/// bit, which never moves the 8-bit fixed-point kernel the blur uses.
pub fn gaussian_kernel(ksize: usize) -> Vec<f64> {
    let sigma = auto_sigma(ksize);
    let scale2x = -0.125 / (sigma * sigma);
    let half = (ksize - 1) / 2;
    let values: Vec<f64> = (0..half)
        .map(|i| {
            let x = 2 * i as i64 + 1 - ksize as i64;
            ((x * x) as f64 * scale2x).exp()
        })
        .collect();
    let mut sum = values.iter().fold(0.0, |s, v| s + v) * 2.0 + 1.0;
    if ksize.is_multiple_of(2) {
        sum += 1.0;
    }
    let mul = 1.0 / sum;
    let mut k = vec![mul; ksize];
    for (i, v) in values.iter().enumerate() {
        k[i] = v * mul;
        k[ksize - 1 - i] = v * mul;
    }
    k
}

/// The `ufixedpoint16` kernel (8 fractional bits) of the 8-bit blur: error-diffusion rounding
/// (`getGaussianKernelFixedPoint_ED`), the centre tap takes what makes the sum exactly 256.
pub fn gaussian_kernel_fixed(ksize: usize) -> Vec<u32> {
    let k = gaussian_kernel(ksize);
    let half = ksize / 2;
    let mut out = vec![0u32; ksize];
    let mut err = 0.0;
    let mut sum = 0i64;
    for i in 0..half {
        let adj = k[i] * 256.0 + err;
        let v = adj.round_ties_even();
        err = adj - v;
        out[i] = v as u32;
        out[ksize - 1 - i] = v as u32;
        sum += v as i64;
    }
    out[half] = (256 - 2 * sum) as u32;
    out
}

/// `BORDER_REFLECT_101`: `gfedcb|abcdefgh|gfedcba`.
pub fn reflect_101(p: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let mut p = p;
    while p < 0 || p >= n {
        p = if p < 0 { -p } else { 2 * n - 2 - p };
    }
    p as usize
}

/// `cv2.GaussianBlur(src, (k, k), 0)` on 8 bits: OpenCV's bit-exact fixed-point separable
/// filter (horizontal sums in 8 fractional bits, vertical in 16, rounded), reflect-101 border.
pub fn gaussian_blur(src: &GrayImage, ksize: usize) -> GrayImage {
    let (w, h) = (src.width, src.height);
    // OpenCV drops the kernel along an axis of length 1.
    let kx = if w == 1 {
        vec![256]
    } else {
        gaussian_kernel_fixed(ksize)
    };
    let ky = if h == 1 {
        vec![256]
    } else {
        gaussian_kernel_fixed(ksize)
    };
    let (rx, ry) = ((kx.len() / 2) as i64, (ky.len() / 2) as i64);
    let mut hsum = vec![0u32; w * h];
    for y in 0..h {
        for x in 0..w {
            hsum[y * w + x] = kx
                .iter()
                .enumerate()
                .map(|(i, &k)| k * u32::from(src.get(reflect_101(x as i64 + i as i64 - rx, w), y)))
                .sum();
        }
    }
    let mut out = GrayImage::zeros(w, h);
    for y in 0..h {
        for x in 0..w {
            let acc: u32 = ky
                .iter()
                .enumerate()
                .map(|(j, &k)| k * hsum[reflect_101(y as i64 + j as i64 - ry, h) * w + x])
                .sum();
            out.data[y * w + x] = ((acc + (1 << 15)) >> 16).min(255) as u8;
        }
    }
    out
}

/// `cv2.normalize(src, None, 0, 255, NORM_MINMAX)` on 8 bits.
///
/// `scale = 255 · (1 / (max − min))`, `shift = −min · scale` in float64, then `convertTo`
/// evaluates `v · (float)scale + (float)shift` in float32 with a fused multiply-add (the AVX2
/// path) and rounds half to even. A constant image becomes all zeros (scale 0).
pub fn normalize_minmax(src: &GrayImage) -> GrayImage {
    let (lo, hi) = src
        .data
        .iter()
        .fold((u8::MAX, u8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (smin, smax) = (f64::from(lo), f64::from(hi));
    let scale = if smax - smin > f64::EPSILON {
        255.0 * (1.0 / (smax - smin))
    } else {
        0.0
    };
    let shift = 0.0 - smin * scale;
    if (scale - 1.0).abs() < f64::EPSILON && shift.abs() < f64::EPSILON {
        return src.clone();
    }
    let (a, b) = (scale as f32, shift as f32);
    GrayImage {
        data: src
            .data
            .iter()
            .map(|&v| {
                f32::from(v)
                    .mul_add(a, b)
                    .round_ties_even()
                    .clamp(0.0, 255.0) as u8
            })
            .collect(),
        ..*src
    }
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
