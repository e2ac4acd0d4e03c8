//! PyTorch's CPU default generator, bit for bit, for the draws Hallo2 inference makes.
//!
//! Upstream: PyTorch 2.2.2 `aten/src/ATen/core/MT19937RNGEngine.h` (the engine),
//! `aten/src/ATen/core/TransformationHelper.h` + `DistributionsHelper.h` (float uniform) and
//! `aten/src/ATen/native/cpu/DistributionTemplates.h` + `avx_mathfun.h` (the vectorised
//! `normal_fill_AVX2`, which is what `torch.randn` runs for float32 tensors of ≥ 16 elements on
//! any x86-64 CPU with AVX2; the AVX-512 build deliberately keeps the AVX2 normal kernel).
//!
//! The official script (`scripts/inference_long.py` @ 58a9aa6) calls `torch.manual_seed(42)` once
//! and then, for every clip, draws `torch.rand(h, w)` for the motion-frame mask followed by the
//! initial latents through diffusers' `randn_tensor` (`torch.randn(shape, generator=…)`, float32,
//! CPU), all from the same global generator. Replaying that order with one [`TorchGenerator`]
//! reproduces the official noise exactly:
//!
//! ```
//! # fn main() -> candle_core::Result<()> {
//! use model::torch_rng::TorchGenerator;
//! let mut generator = TorchGenerator::seed(42);
//! let rand_mask = generator.rand((64, 64))?; // torch.rand(64, 64)
//! let latents = generator.randn((1, 4, 4, 8, 8))?; // randn_tensor(...)
//! # let _ = (rand_mask, latents);
//! # Ok(())
//! # }
//! ```
//!
//! Normal draws use the Box–Muller transform with the Cephes-derived `log256_ps` and
//! `sincos256_ps` polynomials of `avx_mathfun.h`, evaluated lane by lane in `f32` with the same
//! operations (including the multiply-adds the compiler fused, see below) as the wheel's AVX2
//! kernel, so no libm is involved and the values are the same on every platform.

use candle_core::{Device, Result, Shape, Tensor};

/// Number of 32-bit words in the Mersenne-Twister state.
const STATE_N: usize = 624;
/// Middle word offset of the twist.
const STATE_M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The MT19937 engine as `at::mt19937` implements it (Cokus' variant of the 2002 reference code;
/// the output stream equals `std::mt19937` with the same 32-bit seed).
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; STATE_N],
    /// Outputs left before the next twist (the reference code's `left`, counted from 1).
    left: usize,
    next: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("left", &self.left)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// `init_genrand`: only the low 32 bits of `seed` matter, as in `at::mt19937(uint64_t)`.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; STATE_N];
        state[0] = seed as u32;
        for j in 1..STATE_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self {
            state,
            left: 1,
            next: 0,
        }
    }

    /// The next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// Regenerates the whole state block (`next_state`).
    fn twist(&mut self) {
        let mix = |u: u32, v: u32| {
            let bits = (u & UPPER_MASK) | (v & LOWER_MASK);
            (bits >> 1) ^ if v & 1 == 1 { MATRIX_A } else { 0 }
        };
        let s = &mut self.state;
        for k in 0..STATE_N {
            let next = s[(k + 1) % STATE_N];
            s[k] = s[(k + STATE_M) % STATE_N] ^ mix(s[k], next);
        }
        self.left = STATE_N;
        self.next = 0;
    }
}

/// `torch.Generator` on the CPU (`CPUGeneratorImpl`), restricted to the float32 `rand` / `randn`
/// draws Hallo2 makes. Both methods consume the stream exactly as PyTorch 2.2.2 does, so
/// interleaving them in the official order reproduces the official tensors.
#[derive(Debug, Clone)]
pub struct TorchGenerator {
    engine: Mt19937,
    initial_seed: u64,
}

/// A [`TorchGenerator`]'s whole state, to store and restore it exactly (job checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GeneratorState {
    pub initial_seed: u64,
    /// The 624 Mersenne-Twister words.
    pub words: Vec<u32>,
    pub left: usize,
    pub next: usize,
}

impl TorchGenerator {
    /// Everything the next draws depend on.
    pub fn state(&self) -> GeneratorState {
        GeneratorState {
            initial_seed: self.initial_seed,
            words: self.engine.state.to_vec(),
            left: self.engine.left,
            next: self.engine.next,
        }
    }

    /// The generator `state` was taken from, as it was; None for a state no generator has.
    pub fn from_state(state: &GeneratorState) -> Option<Self> {
        let words: [u32; STATE_N] = state.words.clone().try_into().ok()?;
        let valid = (1..=STATE_N).contains(&state.left) && state.next + state.left <= STATE_N + 1;
        valid.then_some(Self {
            engine: Mt19937 {
                state: words,
                left: state.left,
                next: state.next,
            },
            initial_seed: state.initial_seed,
        })
    }

    /// A generator in the state `torch.manual_seed(seed)` leaves the default generator in.
    pub fn seed(seed: u64) -> Self {
        Self {
            engine: Mt19937::new(seed),
            initial_seed: seed,
        }
    }

    /// The seed this generator was created with (`Generator.initial_seed()`).
    pub fn initial_seed(&self) -> u64 {
        self.initial_seed
    }

    /// One raw 32-bit draw (`CPUGeneratorImpl::random`).
    pub fn random(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// One float32 uniform in [0, 1): the low 24 bits of a 32-bit draw times 2⁻²⁴
    /// (`uniform_real_distribution<float>`; exact, no rounding).
    pub fn uniform_f32(&mut self) -> f32 {
        const MASK: u32 = (1 << f32::MANTISSA_DIGITS) - 1;
        const DIVISOR: f32 = 1.0 / (1u32 << f32::MANTISSA_DIGITS) as f32;
        (self.random() & MASK) as f32 * DIVISOR
    }

    /// `torch.rand(n)` (float32) as a flat vector, in storage order.
    pub fn rand_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform_f32()).collect()
    }

    /// `torch.randn(n)` (float32, contiguous, CPU) as a flat vector, in storage order.
    ///
    /// Follows `normal_fill_AVX2`: fill all `n` uniforms first, transform them in blocks of 16
    /// (lane `j` pairs `u[j]` with `u[j + 8]`), and when `n` is not a multiple of 16 redraw the
    /// last 16 values and transform them again. Tensors of fewer than 16 elements take a
    /// different (double-precision, libm) path upstream that Hallo2 never uses, so they are
    /// rejected.
    pub fn randn_vec(&mut self, n: usize) -> Result<Vec<f32>> {
        if n < 16 {
            candle_core::bail!(
                "torch randn of {n} < 16 elements uses the scalar double path, which is not reproduced"
            )
        }
        let mut data = self.rand_vec(n);
        for block in data.chunks_exact_mut(16) {
            normal_fill_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for u in tail.iter_mut() {
                *u = self.uniform_f32();
            }
            normal_fill_16(tail);
        }
        Ok(data)
    }

    /// `torch.rand(shape)` (float32) as a CPU tensor.
    pub fn rand<S: Into<Shape>>(&mut self, shape: S) -> Result<Tensor> {
        let shape = shape.into();
        let data = self.rand_vec(shape.elem_count());
        Tensor::from_vec(data, shape, &Device::Cpu)
    }

    /// `torch.randn(shape)` (float32) as a CPU tensor; at least 16 elements (see
    /// [`Self::randn_vec`]).
    pub fn randn<S: Into<Shape>>(&mut self, shape: S) -> Result<Tensor> {
        let shape = shape.into();
        let data = self.randn_vec(shape.elem_count())?;
        Tensor::from_vec(data, shape, &Device::Cpu)
    }
}

/// Box–Muller on 16 uniforms in place (`normal_fill_16_AVX2` with mean 0, std 1): lane `j` uses
/// `u1 = 1 − u[j]` (so the log argument is in (0, 1]) and `u2 = u[j + 8]`, and writes the cosine
/// branch to `j` and the sine branch to `j + 8`.
fn normal_fill_16(data: &mut [f32]) {
    // `_mm256_set1_ps(2.0f * c10::pi<double>)`: the product is formed in double, then rounded.
    const TWO_PI: f32 = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * log_ps(u1)).sqrt();
        let (sin, cos) = sincos_ps(TWO_PI * u2);
        // `_mm256_fmadd_ps(n, std, mean)` with std 1, mean 0 is n itself.
        data[j] = radius * cos;
        data[j + 8] = radius * sin;
    }
}

// The wheel's AVX2 kernels are built by GCC with `-mfma` and its default `-ffp-contract=fast`, so
// GCC's widening-mul pass fuses every `_mm256_mul_ps` whose only uses are `_mm256_add_ps` /
// `_mm256_sub_ps` into an FMA (statements taken in source order; a product already feeding an
// FMA stays a plain product). The `mul_add` calls below are exactly those fusions. The golden
// latents need them: without the fusions in the sin/cos polynomials 21 of 2048 official values
// differ by one or two ulps; with all of them none does.

// Constants of `avx_mathfun.h`, written there as double literals stored into float arrays.
/// `cephes_SQRTHF` = 0.707106781186547524, the double nearest 1/√2.
const SQRTHF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
const LOG_P: [f32; 9] = [
    7.037_683_629_2E-2_f64 as f32,
    -1.151_461_031_0E-1_f64 as f32,
    1.167_699_874_0E-1_f64 as f32,
    -1.242_014_084_6E-1_f64 as f32,
    1.424_932_278_7E-1_f64 as f32,
    -1.666_805_766_5E-1_f64 as f32,
    2.000_071_476_5E-1_f64 as f32,
    -2.499_999_399_3E-1_f64 as f32,
    3.333_333_117_4E-1_f64 as f32,
];
const LOG_Q1: f32 = -2.121_944_40e-4_f64 as f32;
const LOG_Q2: f32 = 0.693_359_375_f64 as f32;
const MINUS_DP1: f32 = -0.785_156_25_f64 as f32;
#[allow(clippy::excessive_precision)] // spelled as in avx_mathfun.h
const MINUS_DP2: f32 = -2.418_756_484_985_351_562_5e-4_f64 as f32;
#[allow(clippy::excessive_precision)] // spelled as in avx_mathfun.h
const MINUS_DP3: f32 = -3.774_894_977_445_941_08e-8_f64 as f32;
const SINCOF_P: [f32; 3] = [
    -1.951_529_589_1E-4_f64 as f32,
    8.332_160_873_6E-3_f64 as f32,
    -1.666_665_461_1E-1_f64 as f32,
];
const COSCOF_P: [f32; 3] = [
    2.443_315_711_809_948E-5_f64 as f32,
    -1.388_731_625_493_765E-3_f64 as f32,
    4.166_664_568_298_827E-2_f64 as f32,
];
/// 4 / π.
const FOPI: f32 = 1.273_239_544_735_16_f64 as f32;

/// One lane of `log256_ps` (Cephes `logf`): NaN for `x ≤ 0`, denormals flushed to the smallest
/// normal.
fn log_ps(x: f32) -> f32 {
    if x.is_nan() || x <= 0.0 {
        return f32::NAN;
    }
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    // Mantissa with exponent of 0.5: x in [0.5, 1).
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    // if x < SQRTHF { e -= 1; x = x + x - 1 } else { x = x - 1 }, in the kernel's op order.
    let below = x < SQRTHF;
    let tmp = if below { x } else { 0.0 };
    x -= 1.0;
    e -= if below { 1.0 } else { 0.0 };
    x += tmp;

    let z = x * x;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = y.mul_add(x, p);
    }
    y *= x;
    y = y.mul_add(z, e * LOG_Q1);
    y = (-z).mul_add(0.5, y);
    x += y;
    e.mul_add(LOG_Q2, x)
}

/// One lane of `sincos256_ps` (Cephes `sinf`/`cosf` with the 3-part Cody–Waite reduction),
/// returning `(sin, cos)`.
fn sincos_ps(x: f32) -> (f32, f32) {
    let sign_in = x.to_bits() & 0x8000_0000;
    let mut x = x.abs();
    // Octant j = (trunc(x·4/π) + 1) & !1 (cvttps: truncation toward zero).
    let j = (((x * FOPI) as i32).wrapping_add(1)) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let use_sin_poly = j & 2 == 0;
    let sign_cos = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;
    let sign_sin = sign_in ^ swap_sign_sin;

    x = y.mul_add(MINUS_DP1, x);
    x = y.mul_add(MINUS_DP2, x);
    x = y.mul_add(MINUS_DP3, x);

    let z = x * x;
    let mut yc = COSCOF_P[0];
    yc = yc.mul_add(z, COSCOF_P[1]);
    yc = yc.mul_add(z, COSCOF_P[2]);
    yc *= z;
    yc = yc.mul_add(z, -(z * 0.5));
    yc += 1.0;

    let mut ys = SINCOF_P[0];
    ys = ys.mul_add(z, SINCOF_P[1]);
    ys = ys.mul_add(z, SINCOF_P[2]);
    ys *= z;
    ys = ys.mul_add(x, x);

    // Blend exactly like the kernel (select, subtract, add) so signed zeros match too.
    let (sin_from_s, sin_from_c) = if use_sin_poly { (ys, 0.0) } else { (0.0, yc) };
    let cos_from_c = yc - sin_from_c;
    let cos_from_s = ys - sin_from_s;
    let sin = f32::from_bits((sin_from_c + sin_from_s).to_bits() ^ sign_sin);
    let cos = f32::from_bits((cos_from_c + cos_from_s).to_bits() ^ sign_cos);
    (sin, cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_default_seed_matches_reference() {
        // First outputs of the reference mt19937 with init_genrand(5489) (std::mt19937 default).
        let mut mt = Mt19937::new(5489);
        let first: Vec<u32> = (0..5).map(|_| mt.next_u32()).collect();
        assert_eq!(
            first,
            [
                3_499_211_612,
                581_869_302,
                3_890_346_734,
                3_586_334_585,
                545_404_204
            ]
        );
        // C++11 [rand.predef]: the 10000th output of a default-constructed std::mt19937.
        let mut mt = Mt19937::new(5489);
        let nth = (0..10_000).map(|_| mt.next_u32()).last();
        assert_eq!(nth, Some(4_123_659_995));
    }

    #[test]
    fn mt19937_seed_42_matches_torch_rand() {
        // init_genrand(42), the stream of `numpy.random.RandomState(42)` and of
        // `torch.manual_seed(42)`.
        let mut mt = Mt19937::new(42);
        let first: Vec<u32> = (0..3).map(|_| mt.next_u32()).collect();
        assert_eq!(first, [1_608_637_542, 3_421_126_067, 4_083_286_876]);
        // The well-known `torch.manual_seed(42); torch.rand(3)` = [0.8823, 0.9150, 0.3829].
        let mut g = TorchGenerator::seed(42);
        let rounded: Vec<f32> = g
            .rand_vec(3)
            .iter()
            .map(|u| (u * 1e4).round() / 1e4)
            .collect();
        assert_eq!(rounded, [0.8823, 0.9150, 0.3829]);
    }

    #[test]
    fn a_restored_state_continues_the_same_stream() -> Result<()> {
        let mut g = TorchGenerator::seed(42);
        g.rand_vec(1000);
        let saved = g.state();
        let json = serde_json::to_string(&saved).unwrap();
        let restored: GeneratorState = serde_json::from_str(&json).unwrap();
        let mut h = TorchGenerator::from_state(&restored).unwrap();
        assert_eq!(h.initial_seed(), 42);
        assert_eq!(g.randn_vec(700)?, h.randn_vec(700)?);
        assert_eq!(g.random(), h.random());
        let mut bad = saved.clone();
        bad.words.pop();
        assert!(TorchGenerator::from_state(&bad).is_none());
        bad = saved;
        bad.left = 0;
        assert!(TorchGenerator::from_state(&bad).is_none());
        Ok(())
    }

    #[test]
    fn seed_uses_low_32_bits() {
        let mut a = Mt19937::new(42);
        let mut b = Mt19937::new((1u64 << 32) | 42);
        assert!((0..1000).all(|_| a.next_u32() == b.next_u32()));
    }

    #[test]
    fn uniform_is_24_bit_fraction() -> Result<()> {
        let mut g = TorchGenerator::seed(42);
        let mut mt = Mt19937::new(42);
        for _ in 0..100 {
            let u = g.uniform_f32();
            let expect = (mt.next_u32() & 0x00ff_ffff) as f32 / 16_777_216.0;
            assert_eq!(u.to_bits(), expect.to_bits());
        }
        Ok(())
    }

    #[test]
    fn math_kernels_are_close_to_libm() {
        for i in 1..=10_000 {
            let u = i as f32 / 10_000.0;
            let l = log_ps(u);
            assert!(
                (l - u.ln()).abs() <= 2e-7 * (1.0 + u.ln().abs()),
                "log({u})"
            );
            let t = (2.0 * std::f64::consts::PI) as f32 * (u - 1e-4);
            let (s, c) = sincos_ps(t);
            assert!((s - t.sin()).abs() < 3e-7, "sin({t})");
            assert!((c - t.cos()).abs() < 3e-7, "cos({t})");
        }
    }

    #[test]
    fn randn_tail_redraws_last_16() -> Result<()> {
        // 20 elements: 20 uniforms, the first block of 16 transformed, then the last 16
        // positions (4..20) overwritten by 16 fresh uniforms and transformed again.
        let mut g = TorchGenerator::seed(7);
        let xs = g.randn_vec(20)?;
        let mut h = TorchGenerator::seed(7);
        let mut first = h.rand_vec(20);
        normal_fill_16(&mut first[..16]);
        let mut tail = h.rand_vec(16);
        normal_fill_16(&mut tail);
        assert_eq!(&xs[..4], &first[..4]);
        assert_eq!(&xs[4..], &tail[..]);
        assert!(g.randn_vec(15).is_err());
        Ok(())
    }
}
