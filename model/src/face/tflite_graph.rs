//! Runs the small TFLite graphs stored in the face-model safetensors (MediaPipe BlazeFace and
//! FaceMesh, converted by `face-models/tflite_to_safetensors.py`; reference interpreter
//! `face-models/st_run.py`).
//!
//! Each file holds every constant of the TFLite graph plus its op list (JSON metadata `graph`,
//! `inputs`, `outputs`). Both networks are plain NHWC chains of nine op kinds, so they run from
//! that list rather than from hand-written module code: the graph is the upstream source. Tensors
//! stay NHWC so `PAD`, `RESHAPE` and the outputs keep TFLite's meaning. Convolutions run as
//! patch-gather + matmul, depthwise convolutions as a sum of shifted, per-channel-scaled slices.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::FaceError;

/// A fused activation of a TFLite op.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    None,
    Relu,
    Relu6,
    ReluN1To1,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "NONE" => Some(Self::None),
            "RELU" => Some(Self::Relu),
            "RELU6" => Some(Self::Relu6),
            "RELU_N1_TO_1" => Some(Self::ReluN1To1),
            _ => None,
        }
    }

    fn apply(self, xs: Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::None => Ok(xs),
            Self::Relu => xs.relu(),
            Self::Relu6 => xs.clamp(0f32, 6f32),
            Self::ReluN1To1 => xs.clamp(-1f32, 1f32),
        }
    }
}

/// Spatial window of a convolution or pooling op.
#[derive(Debug, Clone, Copy)]
struct Window {
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    /// TF "SAME" padding; "VALID" otherwise.
    same: bool,
}

/// TF "SAME" padding of one axis: the odd pixel goes after (bottom/right).
fn same_pad(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out.saturating_sub(1)) * s + k).saturating_sub(n);
    (total / 2, total - total / 2)
}

impl Window {
    /// Pads `xs` [1, H, W, C] for SAME and returns it with the output size.
    fn pad(&self, xs: &Tensor) -> candle_core::Result<(Tensor, usize, usize)> {
        let (_, h, w, _) = xs.dims4()?;
        let xs = if self.same {
            let (top, bottom) = same_pad(h, self.kh, self.sh);
            let (left, right) = same_pad(w, self.kw, self.sw);
            xs.pad_with_zeros(1, top, bottom)?
                .pad_with_zeros(2, left, right)?
        } else {
            xs.clone()
        };
        let (_, hp, wp, _) = xs.dims4()?;
        if hp < self.kh || wp < self.kw {
            candle_core::bail!(
                "window {}x{} larger than its padded input {hp}x{wp}",
                self.kh,
                self.kw
            );
        }
        Ok((
            xs,
            (hp - self.kh) / self.sh + 1,
            (wp - self.kw) / self.sw + 1,
        ))
    }

    /// The input pixels that tap (i, j) of the window sees for every output pixel:
    /// `xs[:, i + sh*y, j + sw*x, :]` for y < oh, x < ow.
    fn tap(
        &self,
        xs: &Tensor,
        i: usize,
        j: usize,
        oh: usize,
        ow: usize,
    ) -> candle_core::Result<Tensor> {
        let xs = strided(xs, 1, i, oh, self.sh)?;
        strided(&xs, 2, j, ow, self.sw)
    }
}

/// `xs.index(dim, start + step * k)` for k < count.
fn strided(
    xs: &Tensor,
    dim: usize,
    start: usize,
    count: usize,
    step: usize,
) -> candle_core::Result<Tensor> {
    let xs = xs.narrow(dim, start, (count - 1) * step + 1)?;
    if step == 1 {
        return Ok(xs);
    }
    let idx: Vec<u32> = (0..count as u32).map(|k| k * step as u32).collect();
    let idx = Tensor::from_vec(idx, count, xs.device())?;
    xs.contiguous()?.index_select(&idx, dim)
}

/// One op of the graph with its constants already laid out for candle.
#[derive(Debug)]
enum Op {
    /// `kernel` [kh*kw*c_in, c_out] (TFLite [c_out, kh, kw, c_in] flattened and transposed).
    Conv2d {
        kernel: Tensor,
        bias: Tensor,
        window: Window,
        act: Activation,
    },
    /// `kernel` [kh, kw, c] (depth multiplier 1).
    DepthwiseConv2d {
        kernel: Tensor,
        bias: Tensor,
        window: Window,
        act: Activation,
    },
    MaxPool2d {
        window: Window,
    },
    /// Zero padding per NHWC axis (the graphs pad channels to widen residuals).
    Pad {
        paddings: [(usize, usize); 4],
    },
    Add {
        act: Activation,
    },
    Relu,
    /// `alpha` [1, 1, C], broadcast over NHWC.
    Prelu {
        alpha: Tensor,
    },
    Reshape {
        shape: Vec<i64>,
    },
    Concatenation {
        axis: i64,
        act: Activation,
    },
}

#[derive(Debug)]
struct Node {
    op: Op,
    /// Names of the activation inputs (constants are folded into `op`).
    inputs: Vec<String>,
    output: String,
}

/// A TFLite op graph loaded from a self-describing safetensors file.
#[derive(Debug)]
pub struct TfliteGraph {
    name: String,
    nodes: Vec<Node>,
    input: (String, Vec<usize>),
    outputs: Vec<(String, Vec<usize>)>,
}

#[derive(Deserialize)]
struct NodeSpec {
    op: String,
    #[serde(rename = "in")]
    inputs: Vec<Option<String>>,
    out: Vec<String>,
    #[serde(default)]
    opts: serde_json::Value,
}

fn graph_error(name: &str, message: impl Into<String>) -> FaceError {
    FaceError::Graph {
        model: name.to_string(),
        message: message.into(),
    }
}

impl TfliteGraph {
    /// Parses `bytes` (a safetensors file in the `tflite-graph-v1` format) into a runnable graph
    /// on `device`. `name` names the model in error messages.
    pub fn from_safetensors(name: &str, bytes: &[u8], device: &Device) -> Result<Self, FaceError> {
        let err = |m: String| graph_error(name, m);
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let meta = metadata
            .metadata()
            .as_ref()
            .ok_or_else(|| err("no metadata: this is not a converted TFLite graph".into()))?;
        let field = |key: &str| {
            meta.get(key).ok_or_else(|| {
                err(format!(
                    "metadata lacks `{key}`: this is not a converted TFLite graph"
                ))
            })
        };
        if field("format")? != "tflite-graph-v1" {
            return Err(err(format!(
                "format `{}`, expected `tflite-graph-v1`",
                field("format")?
            )));
        }
        let json = |key: &str| -> Result<serde_json::Value, FaceError> {
            serde_json::from_str(field(key)?).map_err(|e| err(format!("metadata `{key}`: {e}")))
        };
        let io_list = |key: &str| -> Result<Vec<(String, Vec<usize>)>, FaceError> {
            serde_json::from_value(json(key)?).map_err(|e| err(format!("metadata `{key}`: {e}")))
        };
        let mut inputs = io_list("inputs")?;
        let outputs = io_list("outputs")?;
        if inputs.len() != 1 {
            return Err(err(format!("{} graph inputs, expected 1", inputs.len())));
        }
        let input = inputs.remove(0);
        let specs: Vec<NodeSpec> = serde_json::from_value(json("graph")?)
            .map_err(|e| err(format!("metadata `graph`: {e}")))?;
        let consts = candle_core::safetensors::load_buffer(bytes, device)?;

        let mut nodes = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            let at = |m: String| err(format!("op {index} ({}): {m}", spec.op));
            let node = Self::node(spec, &consts).map_err(|e| match e {
                FaceError::Graph { message, .. } => at(message),
                other => other,
            })?;
            nodes.push(node);
        }
        Ok(Self {
            name: name.to_string(),
            nodes,
            input,
            outputs,
        })
    }

    fn node(spec: &NodeSpec, consts: &HashMap<String, Tensor>) -> Result<Node, FaceError> {
        let err = |m: String| graph_error("", m);
        let names: Vec<&str> = spec
            .inputs
            .iter()
            .map(|n| n.as_deref().unwrap_or(""))
            .collect();
        let konst = |k: usize| -> Result<&Tensor, FaceError> {
            let key = names.get(k).copied().unwrap_or("");
            consts
                .get(key)
                .ok_or_else(|| err(format!("constant input {k} `{key}` missing from the file")))
        };
        let float = |k: usize| -> Result<Tensor, FaceError> { Ok(konst(k)?.to_dtype(DType::F32)?) };
        let opts = &spec.opts;
        let pair = |key: &str| -> Result<(usize, usize), FaceError> {
            let v: Vec<usize> = serde_json::from_value(opts[key].clone())
                .map_err(|e| err(format!("option `{key}`: {e}")))?;
            match v.as_slice() {
                [a, b] if *a > 0 && *b > 0 => Ok((*a, *b)),
                _ => Err(err(format!(
                    "option `{key}` = {v:?}, expected two positive numbers"
                ))),
            }
        };
        let act = || -> Result<Activation, FaceError> {
            let name = opts["act"].as_str().unwrap_or("NONE");
            Activation::parse(name)
                .ok_or_else(|| err(format!("unsupported fused activation {name}")))
        };
        let same = || -> Result<bool, FaceError> {
            match opts["padding"].as_str() {
                Some("SAME") => Ok(true),
                Some("VALID") => Ok(false),
                other => Err(err(format!("padding {other:?}, expected SAME or VALID"))),
            }
        };
        let check_dilation = || -> Result<(), FaceError> {
            if opts.get("dilation").is_some() && pair("dilation")? != (1, 1) {
                return Err(err("dilated convolutions are not supported".into()));
            }
            Ok(())
        };
        let first = || names.first().map(|s| s.to_string()).unwrap_or_default();

        let (op, inputs) = match spec.op.as_str() {
            "CONV_2D" => {
                check_dilation()?;
                let w = float(1)?;
                let (c_out, kh, kw, c_in) = w.dims4()?;
                let (sh, sw) = pair("stride")?;
                let kernel = w.reshape((c_out, kh * kw * c_in))?.t()?.contiguous()?;
                let op = Op::Conv2d {
                    kernel,
                    bias: float(2)?,
                    window: Window {
                        kh,
                        kw,
                        sh,
                        sw,
                        same: same()?,
                    },
                    act: act()?,
                };
                (op, vec![first()])
            }
            "DEPTHWISE_CONV_2D" => {
                check_dilation()?;
                let w = float(1)?;
                let (m, kh, kw, c) = w.dims4()?;
                if m != 1 {
                    return Err(err(format!("depthwise kernel leading dim {m}, expected 1")));
                }
                let (sh, sw) = pair("stride")?;
                let op = Op::DepthwiseConv2d {
                    kernel: w.reshape((kh, kw, c))?,
                    bias: float(2)?,
                    window: Window {
                        kh,
                        kw,
                        sh,
                        sw,
                        same: same()?,
                    },
                    act: act()?,
                };
                (op, vec![first()])
            }
            "MAX_POOL_2D" => {
                let (kh, kw) = pair("filter")?;
                let (sh, sw) = pair("stride")?;
                if act()? != Activation::None {
                    return Err(err(
                        "fused activation on MAX_POOL_2D is not supported".into()
                    ));
                }
                let op = Op::MaxPool2d {
                    window: Window {
                        kh,
                        kw,
                        sh,
                        sw,
                        same: same()?,
                    },
                };
                (op, vec![first()])
            }
            "PAD" => {
                let p = konst(1)?.to_dtype(DType::I64)?.to_vec2::<i64>()?;
                let mut paddings = [(0, 0); 4];
                if p.len() != 4 {
                    return Err(err(format!("{} padding rows, expected 4 (NHWC)", p.len())));
                }
                for (slot, row) in paddings.iter_mut().zip(&p) {
                    match row.as_slice() {
                        [a, b] if *a >= 0 && *b >= 0 => *slot = (*a as usize, *b as usize),
                        _ => return Err(err(format!("padding row {row:?}"))),
                    }
                }
                (Op::Pad { paddings }, vec![first()])
            }
            "ADD" => (
                Op::Add { act: act()? },
                names.iter().map(|s| s.to_string()).collect(),
            ),
            "RELU" => (Op::Relu, vec![first()]),
            "PRELU" => (Op::Prelu { alpha: float(1)? }, vec![first()]),
            "RESHAPE" => {
                let shape = match names.get(1).filter(|n| !n.is_empty()) {
                    Some(_) => konst(1)?.to_dtype(DType::I64)?.to_vec1::<i64>()?,
                    None => serde_json::from_value(opts["new_shape"].clone())
                        .map_err(|e| err(format!("option `new_shape`: {e}")))?,
                };
                (Op::Reshape { shape }, vec![first()])
            }
            "CONCATENATION" => {
                let axis = opts["axis"]
                    .as_i64()
                    .ok_or_else(|| err("option `axis` missing".into()))?;
                let op = Op::Concatenation { axis, act: act()? };
                (op, names.iter().map(|s| s.to_string()).collect())
            }
            other => return Err(err(format!("unsupported op {other}"))),
        };
        let output = spec
            .out
            .first()
            .cloned()
            .ok_or_else(|| err("op without output".into()))?;
        Ok(Node { op, inputs, output })
    }

    /// Name and NHWC shape of the graph input.
    pub fn input_shape(&self) -> &[usize] {
        &self.input.1
    }

    /// Runs the graph on `xs` (the input's shape, f32) and returns the outputs in graph order.
    pub fn forward(&self, xs: &Tensor) -> Result<Vec<Tensor>, FaceError> {
        if xs.dims() != self.input.1.as_slice() {
            return Err(graph_error(
                &self.name,
                format!("input shape {:?}, expected {:?}", xs.dims(), self.input.1),
            ));
        }
        let mut values: HashMap<&str, Tensor> = HashMap::new();
        values.insert(self.input.0.as_str(), xs.to_dtype(DType::F32)?);
        for node in &self.nodes {
            let get = |k: usize| -> Result<&Tensor, FaceError> {
                let key = node.inputs.get(k).map(String::as_str).unwrap_or("");
                values.get(key).ok_or_else(|| {
                    graph_error(
                        &self.name,
                        format!("`{}` reads `{key}` before it is computed", node.output),
                    )
                })
            };
            let ys = match &node.op {
                Op::Conv2d {
                    kernel,
                    bias,
                    window,
                    act,
                } => conv2d(get(0)?, kernel, bias, window, *act)?,
                Op::DepthwiseConv2d {
                    kernel,
                    bias,
                    window,
                    act,
                } => depthwise_conv2d(get(0)?, kernel, bias, window, *act)?,
                Op::MaxPool2d { window } => max_pool2d(get(0)?, window)?,
                Op::Pad { paddings } => {
                    let mut xs = get(0)?.clone();
                    for (dim, &(lo, hi)) in paddings.iter().enumerate() {
                        if lo + hi > 0 {
                            xs = xs.pad_with_zeros(dim, lo, hi)?;
                        }
                    }
                    xs
                }
                Op::Add { act } => act.apply(get(0)?.broadcast_add(get(1)?)?)?,
                Op::Relu => get(0)?.relu()?,
                Op::Prelu { alpha } => {
                    let xs = get(0)?;
                    // max(x, 0) + alpha * min(x, 0)
                    let neg = xs.minimum(0f32)?.broadcast_mul(alpha)?;
                    (xs.relu()? + neg)?
                }
                Op::Reshape { shape } => reshape(get(0)?, shape)?,
                Op::Concatenation { axis, act } => {
                    let parts = (0..node.inputs.len())
                        .map(get)
                        .collect::<Result<Vec<_>, _>>()?;
                    let rank = parts.first().map(|t| t.rank()).unwrap_or(0) as i64;
                    let axis = if *axis < 0 { axis + rank } else { *axis };
                    act.apply(Tensor::cat(&parts, axis as usize)?)?
                }
            };
            values.insert(node.output.as_str(), ys);
        }
        self.outputs
            .iter()
            .map(|(name, _)| {
                values.remove(name.as_str()).ok_or_else(|| {
                    graph_error(&self.name, format!("output `{name}` is never computed"))
                })
            })
            .collect()
    }
}

/// NHWC convolution as gathered patches times the flattened kernel.
fn conv2d(
    xs: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    window: &Window,
    act: Activation,
) -> candle_core::Result<Tensor> {
    let (_, _, _, c_in) = xs.dims4()?;
    let (k, c_out) = kernel.dims2()?;
    if k != window.kh * window.kw * c_in {
        candle_core::bail!("conv kernel expects {k} patch values, input has {c_in} channels");
    }
    let (xs, oh, ow) = window.pad(xs)?;
    // patches [1, oh, ow, kh*kw*c_in] in the kernel's (i, j, c) order
    let patches = if window.kh == 1 && window.kw == 1 {
        window.tap(&xs, 0, 0, oh, ow)?
    } else {
        let mut taps = Vec::with_capacity(window.kh * window.kw);
        for i in 0..window.kh {
            for j in 0..window.kw {
                taps.push(window.tap(&xs, i, j, oh, ow)?);
            }
        }
        Tensor::cat(&taps, 3)?
    };
    let ys = patches
        .reshape((oh * ow, k))?
        .matmul(kernel)?
        .broadcast_add(bias)?
        .reshape((1, oh, ow, c_out))?;
    act.apply(ys)
}

/// NHWC depthwise convolution: sum over taps of the shifted input scaled per channel.
fn depthwise_conv2d(
    xs: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    window: &Window,
    act: Activation,
) -> candle_core::Result<Tensor> {
    let (xs, oh, ow) = window.pad(xs)?;
    let mut acc: Option<Tensor> = None;
    for i in 0..window.kh {
        for j in 0..window.kw {
            let w = kernel.get(i)?.get(j)?;
            let term = window.tap(&xs, i, j, oh, ow)?.broadcast_mul(&w)?;
            acc = Some(match acc {
                Some(a) => (a + term)?,
                None => term,
            });
        }
    }
    let Some(acc) = acc else {
        candle_core::bail!("depthwise kernel with no taps");
    };
    act.apply(acc.broadcast_add(bias)?)
}

/// NHWC max pooling. SAME padding would pad with -inf in TF; the graphs never need it.
fn max_pool2d(xs: &Tensor, window: &Window) -> candle_core::Result<Tensor> {
    let (_, h, w, _) = xs.dims4()?;
    if window.same
        && (same_pad(h, window.kh, window.sh) != (0, 0)
            || same_pad(w, window.kw, window.sw) != (0, 0))
    {
        candle_core::bail!(
            "MAX_POOL_2D with SAME padding on a {h}x{w} input needs -inf padding, unsupported"
        );
    }
    let (xs, oh, ow) = window.pad(xs)?;
    let mut acc = window.tap(&xs, 0, 0, oh, ow)?;
    for i in 0..window.kh {
        for j in 0..window.kw {
            if i + j > 0 {
                acc = acc.maximum(&window.tap(&xs, i, j, oh, ow)?)?;
            }
        }
    }
    Ok(acc)
}

/// TFLite RESHAPE (row-major, one -1 allowed).
fn reshape(xs: &Tensor, shape: &[i64]) -> candle_core::Result<Tensor> {
    let known: i64 = shape.iter().filter(|&&d| d >= 0).product();
    let elems = xs.elem_count() as i64;
    let dims = shape
        .iter()
        .map(|&d| if d < 0 && known > 0 { elems / known } else { d })
        .map(|d| {
            usize::try_from(d).map_err(|_| candle_core::Error::Msg(format!("bad reshape dim {d}")))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    xs.contiguous()?.reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        assert_eq!(same_pad(128, 5, 2), (1, 2));
        assert_eq!(same_pad(64, 3, 2), (0, 1));
        assert_eq!(same_pad(16, 3, 1), (1, 1));
        assert_eq!(same_pad(64, 2, 2), (0, 0));
    }

    #[test]
    fn strided_picks_every_step() -> candle_core::Result<()> {
        let xs = Tensor::arange(0f32, 10., &Device::Cpu)?;
        assert_eq!(
            strided(&xs, 0, 1, 4, 2)?.to_vec1::<f32>()?,
            [1., 3., 5., 7.]
        );
        assert_eq!(strided(&xs, 0, 2, 3, 1)?.to_vec1::<f32>()?, [2., 3., 4.]);
        Ok(())
    }
}
