//! Hallo2's face, lip and background masks and the source pixels, from a 468-point face mesh
//! (hallo2 `hallo/utils/util.py::get_mask`, `expand_region`, `blur_mask`, `get_background_mask`,
//! `get_sep_face_mask` and `hallo/datasets/image_processor.py::ImageProcessor.preprocess`
//! @ `58a9aa6`).
//!
//! Upstream chains OpenCV 4.9 (`cv2.resize`, `cv2.GaussianBlur`, `cv2.normalize`) and Pillow 10.3
//! (torchvision's `Resize` on PIL images) through PNG files. The integer paths of both libraries
//! are reproduced in [`super::opencv`] and [`super::pillow`] so the masks match bit for bit (see
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

use super::opencv;
use super::pillow;
use super::{FaceError, GrayImage};

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
    let resized = opencv::resize_linear_gray(mask, SOFT_MASK_SIZE, SOFT_MASK_SIZE);
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
}
