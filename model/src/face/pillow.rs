//! Pillow 10.3's `Image.resize(size, BILINEAR)` on 8-bit images (`libImaging/Resample.c`):
//! an antialiased triangle filter whose support grows with the reduction factor, two passes
//! (horizontal first) with 22-bit fixed-point weights and an 8-bit intermediate image.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillow_identity_and_constant() {
        let img = GrayImage {
            width: 5,
            height: 3,
            data: vec![200; 15],
        };
        assert_eq!(resize_bilinear_gray(&img, 5, 3), img);
        // A constant image stays constant under any resize (weights sum to 1 after rounding).
        for (w, h) in [(2, 2), (11, 7), (1, 1)] {
            let out = resize_bilinear_gray(&img, w, h);
            assert!(
                out.data.iter().all(|&v| v == 200),
                "{w}x{h}: {:?}",
                out.data
            );
        }
    }
}
