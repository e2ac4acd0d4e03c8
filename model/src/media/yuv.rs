//! RGB f32 planes in [0, 1] → 8-bit YUV 4:2:0 (I420), BT.601 limited ("TV") range.
//!
//! ```text
//! Y  = 16  + 219 · ( 0.299    R + 0.587    G + 0.114    B)
//! Cb = 128 + 224 · (−0.168736 R − 0.331264 G + 0.5      B)
//! Cr = 128 + 224 · ( 0.5      R − 0.418688 G − 0.081312 B)
//! ```
//!
//! Chroma is taken from the mean RGB of each 2×2 block (the conversion is linear, so this equals
//! the mean of the four per-pixel chroma values). The stream's VUI signals the same matrix
//! (SMPTE 170M = BT.601) and limited range, so players convert back with matching coefficients.

/// One frame in I420 layout: `Y` (`w·h`), then `U` and `V` (`w/2 · h/2` each).
#[derive(Debug, Clone, PartialEq)]
pub struct Yuv420 {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

fn to_u8(x: f32) -> u8 {
    // NaN becomes 0 through `as`; the value is already in [16, 240] for inputs in [0, 1].
    x.round().clamp(0.0, 255.0) as u8
}

/// Converts planar RGB (`rgb` = R plane, G plane, B plane, each `height × width`, values clamped
/// to [0, 1]) into `out`. `width` and `height` must be even (checked by the caller).
pub fn rgb_planar_to_yuv420(rgb: &[f32], width: usize, height: usize, out: &mut Yuv420) {
    let plane = width * height;
    let (r, rest) = rgb.split_at(plane);
    let (g, b) = rest.split_at(plane);
    let c = |x: f32| x.clamp(0.0, 1.0);
    out.width = width;
    out.height = height;
    out.y.resize(plane, 0);
    out.u.resize(plane / 4, 0);
    out.v.resize(plane / 4, 0);
    for (i, y) in out.y.iter_mut().enumerate() {
        let (r, g, b) = (c(r[i]), c(g[i]), c(b[i]));
        *y = to_u8(16.0 + 219.0 * (0.299 * r + 0.587 * g + 0.114 * b));
    }
    let half_w = width / 2;
    for cy in 0..height / 2 {
        for cx in 0..half_w {
            let top = 2 * cy * width + 2 * cx;
            let idx = [top, top + 1, top + width, top + width + 1];
            let mean = |p: &[f32]| idx.iter().map(|&i| c(p[i])).sum::<f32>() * 0.25;
            let (r, g, b) = (mean(r), mean(g), mean(b));
            let o = cy * half_w + cx;
            out.u[o] = to_u8(128.0 + 224.0 * (-0.168_736 * r - 0.331_264 * g + 0.5 * b));
            out.v[o] = to_u8(128.0 + 224.0 * (0.5 * r - 0.418_688 * g - 0.081_312 * b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(rgb: [f32; 3]) -> (u8, u8, u8) {
        let planes: Vec<f32> = rgb.iter().flat_map(|&v| [v; 4]).collect();
        let mut out = Yuv420 {
            width: 0,
            height: 0,
            y: vec![],
            u: vec![],
            v: vec![],
        };
        rgb_planar_to_yuv420(&planes, 2, 2, &mut out);
        (out.y[0], out.u[0], out.v[0])
    }

    #[test]
    fn bt601_limited_range_reference_colours() {
        assert_eq!(convert([0.0, 0.0, 0.0]), (16, 128, 128));
        assert_eq!(convert([1.0, 1.0, 1.0]), (235, 128, 128));
        // Rec. 601 limited-range primaries: red (81, 90, 240), green (145, 54, 34),
        // blue (41, 240, 110).
        assert_eq!(convert([1.0, 0.0, 0.0]), (81, 90, 240));
        assert_eq!(convert([0.0, 1.0, 0.0]), (145, 54, 34));
        assert_eq!(convert([0.0, 0.0, 1.0]), (41, 240, 110));
        // Out-of-range values are clamped.
        assert_eq!(convert([2.0, 2.0, 2.0]), (235, 128, 128));
    }
}
