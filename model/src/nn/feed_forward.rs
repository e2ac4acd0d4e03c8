//! diffusers `FeedForward` with the GEGLU activation (`activation_fn="geglu"`).
//!
//! Keys: `net.0.proj` (dim → 2·inner: value and gate halves), `net.2` (inner → dim);
//! `net.1` is a parameter-free dropout.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear};

#[derive(Debug, Clone)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    /// `inner` is `mult · dim` (4·dim everywhere in Hallo2).
    pub fn new(dim: usize, inner: usize, vb: VarBuilder) -> Result<Self> {
        let net = vb.pp("net");
        Ok(Self {
            proj: linear(dim, 2 * inner, net.pp("0").pp("proj"))?,
            out: linear(inner, dim, net.pp("2"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let projected = self.proj.forward(xs)?;
        let halves = projected.chunk(2, D::Minus1)?;
        // GEGLU: value · gelu(gate), with the exact (erf) GELU of `F.gelu`.
        let hidden = (&halves[0] * halves[1].gelu_erf()?)?;
        self.out.forward(&hidden)
    }
}
