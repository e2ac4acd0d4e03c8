//! Hallo2's face, lip and background masks and the source pixels, from a 468-point face mesh
//! (hallo2 `hallo/utils/util.py::get_mask`, `expand_region`, `blur_mask`, `get_background_mask`,
//! `get_sep_face_mask` and `hallo/datasets/image_processor.py::ImageProcessor.preprocess`
//! @ `58a9aa6`).
//!
//! Upstream chains OpenCV 4.9 (`cv2.resize`, `cv2.GaussianBlur`, `cv2.normalize`) and Pillow 10.3
//! (torchvision's `Resize` on PIL images) through PNG files. The integer paths of both libraries
//! are reproduced in [`opencv`] and [`pillow`] so the masks match bit for bit (see
//! `model/tests/integration/face_masks.rs` and `model/tools/face_masks_reference.py`).
//!
//! ```text
//! landmarks ─▶ silhouette / lip boxes ─▶ expand_region (×face_expand_ratio, ×2.0)
//!   ─▶ binary u8 masks at image size ─┬─▶ cv2.resize 64×64 ─▶ GaussianBlur 51 / 31 ─▶ normalize
//!                                     │     ─▶ background = 255·(1 − face/255), face = face − lip, lip
//!                                     │     ─▶ PIL bilinear to S/8, S/16, S/32, S/64 ─▶ (1, h·w)
//!                                     └─▶ PIL bilinear to S×S ─▶ face region (3, S, S)
//! ```

use candle_core::{Device, Tensor};

use super::FaceError;

/// MediaPipe face-mesh indices of the face outline (`silhouette_ids` in `util.py`).
pub const SILHOUETTE_IDS: [usize; 36] = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
    148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];

/// MediaPipe face-mesh indices of the outer lip contour (`lip_ids` in `util.py`).
pub const LIP_IDS: [usize; 20] = [
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375,
];

/// Landmarks the index sets need: MediaPipe's 468-point face mesh.
pub const MESH_POINTS: usize = 468;

/// `get_lip_mask`'s hard-coded `expand_ratio`.
pub const LIP_EXPAND_RATIO: f64 = 2.0;

/// Side of the blurred soft masks (`resize_dim=(64, 64)`, fixed whatever the model resolution).
pub const SOFT_MASK_SIZE: usize = 64;

/// `get_mask`'s Gaussian kernel sizes (sigma 0: OpenCV derives 8.0 and 5.0).
pub const FACE_BLUR_KSIZE: usize = 51;
pub const LIP_BLUR_KSIZE: usize = 31;

/// Mask parameters of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskConfig {
    /// Model resolution `S` (square): 512 for Hallo2, 64 for the tiny profile. A multiple of 64.
    pub image_size: usize,
    /// `face_expand_ratio` of `configs/inference/long.yaml`.
    pub face_expand_ratio: f64,
}

impl MaskConfig {
    /// The official inference values (`long.yaml`: 512×512, `face_expand_ratio: 1.2`).
    pub fn hallo2() -> Self {
        Self {
            image_size: 512,
            face_expand_ratio: 1.2,
        }
    }
}

/// An 8-bit single-channel image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl GrayImage {
    /// An all-zero image.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height],
        }
    }

    fn get(&self, x: usize, y: usize) -> u8 {
        self.data[y * self.width + x]
    }
}

/// A box as `expand_region` returns it: `(min_x, max_x, min_y, max_y)`, half-open, before numpy
/// applies its slice rules (a negative start counts from the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionBox {
    pub min_x: i64,
    pub max_x: i64,
    pub min_y: i64,
    pub max_y: i64,
}

impl RegionBox {
    /// The pixels the box covers once numpy's slice rules apply, `[x0, y0, x1, y1]` half-open
    /// (what [`region_mask`] fills), for drawing it over the image.
    pub fn pixel_bounds(&self, width: usize, height: usize) -> [usize; 4] {
        let (x0, x1) = slice_bounds(self.min_x, self.max_x, width);
        let (y0, y1) = slice_bounds(self.min_y, self.max_y, height);
        [x0, y0, x1, y1]
    }
}

/// Min/max of the chosen landmarks, each rounded half-to-even like `np.round`:
/// `[min_x, max_x, min_y, max_y]`.
pub fn landmark_bounds(landmarks: &[[f32; 3]], ids: &[usize]) -> Result<[f64; 4], FaceError> {
    let mut b = [
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for &i in ids {
        let p = landmarks.get(i).ok_or(FaceError::TooFewLandmarks {
            got: landmarks.len(),
        })?;
        if !(p[0].is_finite() && p[1].is_finite()) {
            return Err(FaceError::NonFiniteLandmark {
                index: i,
                x: p[0],
                y: p[1],
            });
        }
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        b = [b[0].min(x), b[1].max(x), b[2].min(y), b[3].max(y)];
    }
    Ok(b.map(f64::round_ties_even))
}

/// `expand_region`: scales the box about its centre and shifts it back inside the image.
///
/// Replicates the float arithmetic literally: centre `(max + min) // 2`, half side
/// `((max − min) · ratio) // 2` (floor divisions on floats), then one shift per side. A box wider
/// than the image ends with a negative start, as upstream.
pub fn expand_region(region: [f64; 4], image_w: usize, image_h: usize, ratio: f64) -> RegionBox {
    let [min_x, max_x, min_y, max_y] = region;
    let (min_x, max_x) = expand_axis(min_x, max_x, image_w as f64, ratio);
    let (min_y, max_y) = expand_axis(min_y, max_y, image_h as f64, ratio);
    RegionBox {
        min_x,
        max_x,
        min_y,
        max_y,
    }
}

fn expand_axis(lo: f64, hi: f64, size: f64, ratio: f64) -> (i64, i64) {
    let mid = ((hi + lo) / 2.0).floor();
    let half = ((hi - lo) * ratio / 2.0).floor();
    let (mut lo, mut hi) = (mid - half, mid + half);
    if lo < 0.0 {
        hi -= lo;
        lo = 0.0;
    }
    if hi > size {
        lo -= hi - size;
        hi = size;
    }
    // Python's round() on the already integral values.
    (lo.round_ties_even() as i64, hi.round_ties_even() as i64)
}

/// Python's slice bounds for `a[start:stop]` on an axis of length `n`.
fn slice_bounds(start: i64, stop: i64, n: usize) -> (usize, usize) {
    let n = n as i64;
    let clamp = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
    let (s, e) = (clamp(start), clamp(stop));
    (s as usize, e.max(s) as usize)
}

/// The binary mask `mask[min_y:max_y, min_x:max_x] = 255` with numpy's slice semantics.
pub fn region_mask(region: &RegionBox, width: usize, height: usize) -> GrayImage {
    let mut mask = GrayImage::zeros(width, height);
    let (x0, x1) = slice_bounds(region.min_x, region.max_x, width);
    let (y0, y1) = slice_bounds(region.min_y, region.max_y, height);
    for row in mask.data.chunks_exact_mut(width.max(1)).take(y1).skip(y0) {
        row[x0..x1].fill(255);
    }
    mask
}

/// The boxes and binary masks of `get_face_mask` / `get_lip_mask` at the original resolution.
#[derive(Debug, Clone)]
pub struct BinaryMasks {
    pub face_box: RegionBox,
    pub lip_box: RegionBox,
    pub face: GrayImage,
    pub lip: GrayImage,
}

impl BinaryMasks {
    /// Builds both masks from 468 (or 478) landmarks in pixels of a `width × height` image.
    pub fn from_landmarks(
        landmarks: &[[f32; 3]],
        width: usize,
        height: usize,
        face_expand_ratio: f64,
    ) -> Result<Self, FaceError> {
        if landmarks.len() < MESH_POINTS {
            return Err(FaceError::TooFewLandmarks {
                got: landmarks.len(),
            });
        }
        if width == 0 || height == 0 {
            return Err(FaceError::EmptyImage { width, height });
        }
        if !(face_expand_ratio.is_finite() && face_expand_ratio > 0.0) {
            return Err(FaceError::ExpandRatio {
                ratio: face_expand_ratio,
            });
        }
        let face_box = expand_region(
            landmark_bounds(landmarks, &SILHOUETTE_IDS)?,
            width,
            height,
            face_expand_ratio,
        );
        let lip_box = expand_region(
            landmark_bounds(landmarks, &LIP_IDS)?,
            width,
            height,
            LIP_EXPAND_RATIO,
        );
        Ok(Self {
            face: region_mask(&face_box, width, height),
            lip: region_mask(&lip_box, width, height),
            face_box,
            lip_box,
        })
    }
}

/// `blur_mask`: `cv2.resize` to 64×64, `cv2.GaussianBlur(k×k, σ 0)`, `cv2.normalize(MINMAX)`.
pub fn blur_mask(mask: &GrayImage, ksize: usize) -> GrayImage {
    let resized = opencv::resize_linear(mask, SOFT_MASK_SIZE, SOFT_MASK_SIZE);
    opencv::normalize_minmax(&opencv::gaussian_blur(&resized, ksize))
}

/// The three 64×64 soft masks `get_mask` writes as PNG.
#[derive(Debug, Clone)]
pub struct SoftMasks {
    /// `*_sep_background.png`: `uint8(255 · (1 − face_blur / 255))` (the "full" / pose mask).
    pub background: GrayImage,
    /// `*_sep_face.png`: `cv2.subtract(face_blur, lip_blur)` (saturating).
    pub face: GrayImage,
    /// `*_sep_lip.png`: the blurred lip mask.
    pub lip: GrayImage,
}

impl SoftMasks {
    /// Blurs the binary masks and separates them as `get_mask` does.
    pub fn new(binary: &BinaryMasks) -> Self {
        let face_blur = blur_mask(&binary.face, FACE_BLUR_KSIZE);
        let lip = blur_mask(&binary.lip, LIP_BLUR_KSIZE);
        let background = GrayImage {
            data: face_blur
                .data
                .iter()
                // float64 as numpy, then astype(uint8) truncates.
                .map(|&v| ((1.0 - f64::from(v) / 255.0) * 255.0) as u8)
                .collect(),
            ..face_blur
        };
        let face = GrayImage {
            data: face_blur
                .data
                .iter()
                .zip(&lip.data)
                .map(|(&f, &l)| f.saturating_sub(l))
                .collect(),
            ..face_blur
        };
        Self {
            background,
            face,
            lip,
        }
    }
}

/// The four levels `attn_transform_64 … _8` make of a soft mask: PIL bilinear to `S/8`, `S/16`,
/// `S/32` and `S/64` pixels square.
pub fn mask_pyramid(mask: &GrayImage, image_size: usize) -> [GrayImage; 4] {
    [8, 16, 32, 64].map(|div| {
        let side = image_size / div;
        pillow::resize_bilinear_gray(mask, side, side)
    })
}

/// Mask tensors in the shapes [`crate::pipeline::PreparedInputs`] takes.
#[derive(Debug, Clone)]
pub struct HalloMasks {
    /// Background ("full"/pose) mask per level, each `(1, h·w)` in [0, 1] for `h = S/8 … S/64`.
    pub full_mask: [Tensor; 4],
    /// Face-minus-lip mask per level, `(1, h·w)`.
    pub face_mask: [Tensor; 4],
    /// Lip mask per level, `(1, h·w)`.
    pub lip_mask: [Tensor; 4],
    /// `(3, S, S)`: the binary face box bilinearly resized (fractional at the edges), in [0, 1].
    pub face_region: Tensor,
}

impl HalloMasks {
    /// Every mask of `ImageProcessor.preprocess` from the face mesh of a `width × height` image.
    pub fn new(
        cfg: &MaskConfig,
        landmarks: &[[f32; 3]],
        width: usize,
        height: usize,
        device: &Device,
    ) -> Result<Self, FaceError> {
        check_image_size(cfg.image_size)?;
        let binary = BinaryMasks::from_landmarks(landmarks, width, height, cfg.face_expand_ratio)?;
        let soft = SoftMasks::new(&binary);
        let levels = |m: &GrayImage| -> Result<[Tensor; 4], FaceError> {
            let [a, b, c, d] = mask_pyramid(m, cfg.image_size);
            Ok([
                flat_tensor(&a, device)?,
                flat_tensor(&b, device)?,
                flat_tensor(&c, device)?,
                flat_tensor(&d, device)?,
            ])
        };
        let s = cfg.image_size;
        // The face mask PNG opened as RGB: three equal channels, resized alike.
        let region = pillow::resize_bilinear_gray(&binary.face, s, s);
        let region = Tensor::from_vec(to_unit(&region.data), (1, s, s), device)?;
        Ok(Self {
            full_mask: levels(&soft.background)?,
            face_mask: levels(&soft.face)?,
            lip_mask: levels(&soft.lip)?,
            face_region: region.repeat((3, 1, 1))?,
        })
    }
}

/// `pixel_transform` of `ImageProcessor`: PIL bilinear resize of the RGB image to `S×S` (squashed,
/// no crop), `ToTensor`, `Normalize(0.5, 0.5)` → `(3, S, S)` in [-1, 1].
///
/// `rgb` is interleaved 8-bit RGB, `width × height`.
pub fn source_pixels(
    rgb: &[u8],
    width: usize,
    height: usize,
    image_size: usize,
    device: &Device,
) -> Result<Tensor, FaceError> {
    check_image_size(image_size)?;
    check_buffer(rgb, width, height, 3)?;
    let s = image_size;
    let resized = pillow::resize_bilinear(rgb, width, height, 3, s, s);
    let mut chw = vec![0f32; 3 * s * s];
    for (i, px) in resized.chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            // ToTensor divides in float32, Normalize subtracts then divides in float32.
            chw[c * s * s + i] = (f32::from(v) / 255.0 - 0.5) / 0.5;
        }
    }
    Ok(Tensor::from_vec(chw, (3, s, s), device)?)
}

fn check_image_size(size: usize) -> Result<(), FaceError> {
    if size == 0 || !size.is_multiple_of(64) {
        return Err(FaceError::ImageSize { size });
    }
    Ok(())
}

fn check_buffer(buf: &[u8], width: usize, height: usize, channels: usize) -> Result<(), FaceError> {
    if width == 0 || height == 0 {
        return Err(FaceError::EmptyImage { width, height });
    }
    let expected = width * height * channels;
    if buf.len() != expected {
        return Err(FaceError::ImageBuffer {
            width,
            height,
            channels,
            len: buf.len(),
            expected,
        });
    }
    Ok(())
}

/// `ToTensor` on mode L: `u8 / 255` in float32.
fn to_unit(data: &[u8]) -> Vec<f32> {
    data.iter().map(|&v| f32::from(v) / 255.0).collect()
}

/// `ToTensor` then `.view(1, -1)`.
fn flat_tensor(m: &GrayImage, device: &Device) -> Result<Tensor, FaceError> {
    Ok(Tensor::from_vec(
        to_unit(&m.data),
        (1, m.width * m.height),
        device,
    )?)
}

/// The 8-bit paths of OpenCV 4.9 that `get_mask` goes through, reproduced bit-exactly.
pub mod opencv {
    use super::GrayImage;

    /// `INTER_RESIZE_COEF_BITS`: linear-resize weights are 11-bit fixed point.
    const RESIZE_COEF_SCALE: f32 = 2048.0;

    /// `cv2.resize(src, (dw, dh))` with the default `INTER_LINEAR` on one 8-bit channel.
    ///
    /// An exact 2× reduction on both axes goes through `INTER_AREA`'s fast path, as OpenCV does.
    pub fn resize_linear(src: &GrayImage, dw: usize, dh: usize) -> GrayImage {
        let (sw, sh) = (src.width, src.height);
        if sw == dw && sh == dh {
            return src.clone();
        }
        let inv_x = dw as f64 / sw as f64;
        let inv_y = dh as f64 / sh as f64;
        let (scale_x, scale_y) = (1.0 / inv_x, 1.0 / inv_y);
        let (ix, iy) = (scale_x.round_ties_even(), scale_y.round_ties_even());
        let area_fast = (scale_x - ix).abs() < f64::EPSILON && (scale_y - iy).abs() < f64::EPSILON;
        if area_fast && ix == 2.0 && iy == 2.0 {
            return area_half(src, dw, dh);
        }
        let (xofs, alpha) = linear_coeffs(sw, dw, scale_x, true);
        let (yofs, beta) = linear_coeffs(sh, dh, scale_y, false);
        // Rows are clipped, not their weights: `resizeGeneric_` keeps the vertical fraction.
        let clip_row = |y: i64| y.clamp(0, sh as i64 - 1) as usize;
        // Horizontal pass: 11-bit weights, exact integer sums.
        let hrow = |sy: usize| -> Vec<i32> {
            let row = &src.data[sy * sw..(sy + 1) * sw];
            (0..dw)
                .map(|dx| {
                    let sx = xofs[dx] as usize;
                    let next = row[(sx + 1).min(sw - 1)];
                    i32::from(row[sx]) * alpha[dx][0] + i32::from(next) * alpha[dx][1]
                })
                .collect()
        };
        // VResizeLinear<uchar, …> (vector blocks and its scalar tail alike) drops 4 bits of the
        // row sums and keeps the high half of the 16-bit products:
        // (((s0 >> 4) · b0) >> 16 + ((s1 >> 4) · b1) >> 16 + 2) >> 2.
        let mulhi = |s: i32, b: i32| ((s >> 4) * b) >> 16;
        let mut out = GrayImage::zeros(dw, dh);
        for dy in 0..dh {
            let s0 = hrow(clip_row(yofs[dy]));
            let s1 = hrow(clip_row(yofs[dy] + 1));
            let [b0, b1] = beta[dy];
            for dx in 0..dw {
                let v = (mulhi(s0[dx], b0) + mulhi(s1[dx], b1) + 2) >> 2;
                out.data[dy * dw + dx] = v.clamp(0, 255) as u8;
            }
        }
        out
    }

    /// Source offsets and 11-bit weights of `resizeGeneric_` (`ksize` 2, non-area mode). Only
    /// the horizontal axis clamps offsets and fractions at the borders.
    fn linear_coeffs(
        ssize: usize,
        dsize: usize,
        scale: f64,
        clamp: bool,
    ) -> (Vec<i64>, Vec<[i32; 2]>) {
        let mut ofs = Vec::with_capacity(dsize);
        let mut w = Vec::with_capacity(dsize);
        for d in 0..dsize {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            f -= s as f32;
            if clamp && s < 0 {
                f = 0.0;
                s = 0;
            }
            if clamp && s >= ssize as i64 - 1 {
                f = 0.0;
                s = ssize as i64 - 1;
            }
            let q = |c: f32| {
                (c * RESIZE_COEF_SCALE)
                    .round_ties_even()
                    .clamp(-32768.0, 32767.0) as i32
            };
            ofs.push(s);
            w.push([q(1.0 - f), q(f)]);
        }
        (ofs, w)
    }

    /// `resizeAreaFast_` for 2×2 blocks: the SIMD path rounds halves up, `(sum + 2) >> 2`.
    fn area_half(src: &GrayImage, dw: usize, dh: usize) -> GrayImage {
        let mut out = GrayImage::zeros(dw, dh);
        for y in 0..dh {
            for x in 0..dw {
                let sum = u32::from(src.get(2 * x, 2 * y))
                    + u32::from(src.get(2 * x + 1, 2 * y))
                    + u32::from(src.get(2 * x, 2 * y + 1))
                    + u32::from(src.get(2 * x + 1, 2 * y + 1));
                out.data[y * dw + x] = ((sum + 2) >> 2) as u8;
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
                    .map(|(i, &k)| {
                        k * u32::from(src.get(reflect_101(x as i64 + i as i64 - rx, w), y))
                    })
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
}

/// Pillow 10.3's `Image.resize(size, BILINEAR)` on 8-bit images (`libImaging/Resample.c`):
/// an antialiased triangle filter whose support grows with the reduction factor, two passes
/// (horizontal first) with 22-bit fixed-point weights and an 8-bit intermediate image.
pub mod pillow {
    use super::GrayImage;

    /// `PRECISION_BITS = 32 − 8 − 2`.
    const PRECISION_BITS: u32 = 22;

    /// Per output pixel: first source index and fixed-point weights.
    struct Coeffs {
        start: Vec<usize>,
        weights: Vec<Vec<i32>>,
    }

    /// `precompute_coeffs` (box `0..in_size`) followed by `normalize_coeffs_8bpc`.
    fn precompute(in_size: usize, out_size: usize) -> Coeffs {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the bilinear filter's support is 1
        let ss = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut weights = Vec::with_capacity(out_size);
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin).max(0) as usize;
            let mut k: Vec<f64> = (0..n)
                .map(|x| {
                    let t = ((x as i64 + xmin) as f64 - center + 0.5) * ss;
                    (1.0 - t.abs()).max(0.0)
                })
                .collect();
            let ww: f64 = k.iter().fold(0.0, |s, v| s + v);
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let one = f64::from(1u32 << PRECISION_BITS);
            weights.push(
                k.iter()
                    .map(|&v| {
                        if v < 0.0 {
                            (-0.5 + v * one) as i32
                        } else {
                            (0.5 + v * one) as i32
                        }
                    })
                    .collect(),
            );
            start.push(xmin as usize);
        }
        Coeffs { start, weights }
    }

    /// `clip8`: the rounded-up accumulator shifted down and clamped to 0..=255.
    fn clip8(acc: i32) -> u8 {
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }

    /// Resizes interleaved 8-bit pixels with `channels` bands (1 for L, 3 for RGB).
    pub fn resize_bilinear(
        src: &[u8],
        width: usize,
        height: usize,
        channels: usize,
        out_w: usize,
        out_h: usize,
    ) -> Vec<u8> {
        if width == out_w && height == out_h {
            return src.to_vec();
        }
        let c = channels;
        let round = 1i32 << (PRECISION_BITS - 1);
        // Horizontal pass over the rows the vertical pass reads.
        let (tmp, tmp_w) = if out_w != width {
            let co = precompute(width, out_w);
            let mut tmp = vec![0u8; out_w * height * c];
            for y in 0..height {
                let row = &src[y * width * c..(y + 1) * width * c];
                for xx in 0..out_w {
                    for ch in 0..c {
                        let acc = co.weights[xx].iter().enumerate().fold(round, |a, (i, &k)| {
                            a + i32::from(row[(co.start[xx] + i) * c + ch]) * k
                        });
                        tmp[(y * out_w + xx) * c + ch] = clip8(acc);
                    }
                }
            }
            (tmp, out_w)
        } else {
            (src.to_vec(), width)
        };
        if out_h == height {
            return tmp;
        }
        let co = precompute(height, out_h);
        let mut out = vec![0u8; out_w * out_h * c];
        for yy in 0..out_h {
            for x in 0..tmp_w * c {
                let acc = co.weights[yy].iter().enumerate().fold(round, |a, (i, &k)| {
                    a + i32::from(tmp[(co.start[yy] + i) * tmp_w * c + x]) * k
                });
                out[yy * tmp_w * c + x] = clip8(acc);
            }
        }
        out
    }

    /// [`resize_bilinear`] on a single-channel (mode L) image.
    pub fn resize_bilinear_gray(src: &GrayImage, out_w: usize, out_h: usize) -> GrayImage {
        GrayImage {
            width: out_w,
            height: out_h,
            data: resize_bilinear(&src.data, src.width, src.height, 1, out_w, out_h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_bounds_follow_python() {
        assert_eq!(slice_bounds(2, 5, 10), (2, 5));
        assert_eq!(slice_bounds(-3, 10, 10), (7, 10));
        assert_eq!(slice_bounds(-30, 4, 10), (0, 4));
        assert_eq!(slice_bounds(8, 3, 10), (8, 8));
        assert_eq!(slice_bounds(5, 50, 10), (5, 10));
    }

    #[test]
    fn pixel_bounds_are_what_region_mask_fills() {
        for region in [
            RegionBox {
                min_x: 2,
                max_x: 5,
                min_y: 1,
                max_y: 3,
            },
            RegionBox {
                min_x: -3,
                max_x: 9,
                min_y: 0,
                max_y: 40,
            },
        ] {
            let mask = region_mask(&region, 8, 6);
            let [x0, y0, x1, y1] = region.pixel_bounds(8, 6);
            for (i, &v) in mask.data.iter().enumerate() {
                let (x, y) = (i % 8, i / 8);
                let inside = (x0..x1).contains(&x) && (y0..y1).contains(&y);
                assert_eq!(v == 255, inside, "({x}, {y}) of {region:?}");
            }
        }
    }

    #[test]
    fn landmark_bounds_round_half_to_even() {
        let mut lm = vec![[100.0f32, 50.0, 0.0]; MESH_POINTS];
        lm[LIP_IDS[0]] = [20.5, 40.5, 0.0];
        lm[LIP_IDS[1]] = [121.5, 61.5, 0.0];
        let b = landmark_bounds(&lm, &LIP_IDS).unwrap();
        assert_eq!(b, [20.0, 122.0, 40.0, 62.0]);
    }

    #[test]
    fn pillow_identity_and_constant() {
        let img = GrayImage {
            width: 5,
            height: 3,
            data: vec![200; 15],
        };
        assert_eq!(pillow::resize_bilinear_gray(&img, 5, 3), img);
        // A constant image stays constant under any resize (weights sum to 1 after rounding).
        for (w, h) in [(2, 2), (11, 7), (1, 1)] {
            let out = pillow::resize_bilinear_gray(&img, w, h);
            assert!(
                out.data.iter().all(|&v| v == 200),
                "{w}x{h}: {:?}",
                out.data
            );
        }
    }
}
