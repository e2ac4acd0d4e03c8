//! The denoising UNet: hallo2 `hallo/models/unet_3d.py::UNet3DConditionModel` @ `58a9aa6`, as the
//! inference pipeline runs it (training mode with gradient checkpointing, see [`blocks`]).
//!
//! SD-1.5 topology "inflated" to video: every 2-D op runs per frame, so tensors travel as
//! `((b f), c, h, w)` with `b` outer and `f` inner and are only unfolded to `(b, c, f, h, w)`
//! around the motion modules. Per level, a cross-attention layer is
//! ResNet → spatial transformer (reads the reference bank) → audio module → motion module.
//!
//! The audio modules' inner width follows a construction quirk upstream: down blocks use the
//! layer's *input* channels, up blocks the block's `in_channels` argument (the channels of the
//! level below), the mid block its own channels. For SD-1.5: down 320/320, 320/640, 640/1280;
//! mid 1280; up1 640, up2 320, up3 320.

/// The down, mid and up blocks (training-mode path).
pub mod blocks;
/// The spatial transformer and the audio module.
pub mod transformer_3d;

use crate::nn::conv::{Conv2d, conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, GroupNorm, VarBuilder, group_norm};

use crate::motion_module::MotionModuleConfig;
use crate::mutual_self_attention::ReaderBank;
use crate::nn::{TimestepEmbedding, timestep_sinusoid};
use crate::unet_2d::{UNet2DConditionConfig, is_cross_attn_block};
use blocks::{Block3DConfig, DownBlock3D, UNetMidBlock3DCrossAttn, UpBlock3D};

fn default_motion_module_resolutions() -> Vec<usize> {
    vec![1, 2, 4, 8]
}
fn default_audio_attention_dim() -> usize {
    768
}

/// `unet_additional_kwargs` of the inference yaml (`configs/inference/long.yaml`), the arguments
/// `UNet3DConditionModel.from_pretrained_2d` adds to the SD-1.5 UNet config.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct UNet3DAdditionalKwargs {
    #[serde(default)]
    pub use_inflated_groupnorm: bool,
    #[serde(default)]
    pub unet_use_cross_frame_attention: Option<bool>,
    #[serde(default)]
    pub unet_use_temporal_attention: Option<bool>,
    #[serde(default)]
    pub use_motion_module: bool,
    #[serde(default)]
    pub use_audio_module: bool,
    /// Down level `i` has motion modules when `2^i` is listed (up level `i`: `2^(3−i)`).
    #[serde(default = "default_motion_module_resolutions")]
    pub motion_module_resolutions: Vec<usize>,
    #[serde(default)]
    pub motion_module_mid_block: bool,
    #[serde(default)]
    pub motion_module_decoder_only: bool,
    #[serde(default)]
    pub motion_module_type: Option<String>,
    /// `in_channels` stays 0 here; each block fills in its own.
    #[serde(default)]
    pub motion_module_kwargs: Option<MotionModuleConfig>,
    #[serde(default = "default_audio_attention_dim")]
    pub audio_attention_dim: usize,
    #[serde(default)]
    pub stack_enable_blocks_name: Option<Vec<String>>,
    #[serde(default)]
    pub stack_enable_blocks_depth: Option<Vec<usize>>,
}

impl UNet3DAdditionalKwargs {
    /// `unet_additional_kwargs` of hallo2 `configs/inference/long.yaml` @ `58a9aa6`.
    pub fn hallo2() -> Self {
        Self {
            use_inflated_groupnorm: true,
            unet_use_cross_frame_attention: Some(false),
            unet_use_temporal_attention: Some(false),
            use_motion_module: true,
            use_audio_module: true,
            motion_module_resolutions: vec![1, 2, 4, 8],
            motion_module_mid_block: true,
            motion_module_decoder_only: false,
            motion_module_type: Some("Vanilla".to_string()),
            motion_module_kwargs: Some(MotionModuleConfig {
                in_channels: 0,
                ..MotionModuleConfig::hallo2()
            }),
            audio_attention_dim: 768,
            stack_enable_blocks_name: Some(vec![
                "up".to_string(),
                "down".to_string(),
                "mid".to_string(),
            ]),
            stack_enable_blocks_depth: Some(vec![0, 1, 2, 3]),
        }
    }

    /// Whether the audio module of block kind `name` (`down`/`mid`/`up`) at `depth` uses the
    /// three masked branches.
    pub fn stacked(&self, name: &str, depth: usize) -> bool {
        match (
            &self.stack_enable_blocks_name,
            &self.stack_enable_blocks_depth,
        ) {
            (Some(names), Some(depths)) => {
                names.iter().any(|n| n == name) && depths.contains(&depth)
            }
            _ => false,
        }
    }

    fn motion_kwargs(&self) -> Result<Option<&MotionModuleConfig>> {
        if !self.use_motion_module {
            return Ok(None);
        }
        match (
            self.motion_module_type.as_deref(),
            &self.motion_module_kwargs,
        ) {
            (Some("Vanilla"), Some(kwargs)) => Ok(Some(kwargs)),
            (kind, _) => {
                candle_core::bail!("unsupported motion module type {kind:?} (or missing kwargs)")
            }
        }
    }
}

/// Everything `UNet3DConditionModel.from_pretrained_2d` builds the denoising UNet from: the SD-1.5
/// `unet/config.json` (block types read as their 3-D counterparts) and the yaml's
/// `unet_additional_kwargs`.
#[derive(Debug, Clone, PartialEq)]
pub struct UNet3DConditionConfig {
    pub unet: UNet2DConditionConfig,
    pub unet_additional_kwargs: UNet3DAdditionalKwargs,
}

impl UNet3DConditionConfig {
    /// The official full-size configuration.
    pub fn hallo2() -> Self {
        Self {
            unet: UNet2DConditionConfig::hallo2(),
            unet_additional_kwargs: UNet3DAdditionalKwargs::hallo2(),
        }
    }

    /// Rejects the options this port does not implement (none of them is used by Hallo2).
    pub fn validate(&self) -> Result<()> {
        self.unet.validate()?;
        let kw = &self.unet_additional_kwargs;
        if self.unet.block_out_channels.len() != 4 {
            candle_core::bail!(
                "unet3d config: hallo2 hard-codes 4 levels (mid depth 3, up depth 3 − i)"
            )
        }
        if !kw.use_inflated_groupnorm {
            candle_core::bail!("unet3d config: only use_inflated_groupnorm = true is supported")
        }
        if kw.unet_use_cross_frame_attention == Some(true)
            || kw.unet_use_temporal_attention == Some(true)
        {
            candle_core::bail!(
                "unet3d config: cross-frame and temporal attention in spatial blocks are not supported"
            )
        }
        kw.motion_kwargs()?;
        Ok(())
    }
}

/// The audio-attention masks of one clip, per level (`0` = full latent resolution), each
/// `(b·f, h·w)` with the CFG halves stacked like the latents.
#[derive(Debug, Clone)]
pub struct AudioMasks {
    /// Pose/background mask (`full_mask`), scaled by `motion_scale[0]`.
    pub full: Vec<Tensor>,
    /// Face-minus-lip mask, scaled by `motion_scale[1]`.
    pub face: Vec<Tensor>,
    /// Lip mask, scaled by `motion_scale[2]`.
    pub lip: Vec<Tensor>,
}

/// The per-clip inputs of [`UNet3DConditionModel::forward`], constant over the denoising steps.
#[derive(Debug, Clone)]
pub struct UNet3DConditions {
    /// Face tokens `(b, tokens, cross_attention_dim)`, `[uncond, cond]` with CFG.
    pub encoder_hidden_states: Tensor,
    /// Audio tokens `(b, f, tokens, audio_attention_dim)` (zeros for the uncond half).
    pub audio_embedding: Tensor,
    /// Face-locator features `(b, block_out_channels[0], f, h, w)`, added after `conv_in`.
    pub mask_cond_fea: Option<Tensor>,
    pub masks: AudioMasks,
    /// `(pose_weight, face_weight, lip_weight)`.
    pub motion_scale: [f64; 3],
    /// The reference bank of this clip (see [`ReaderBank::new`]).
    pub reference: ReaderBank,
}

/// The conditions, expanded to one row per frame, as the blocks consume them.
pub(crate) struct FrameInputs<'a> {
    /// Time embedding `((b f), temb)`.
    pub(crate) temb: Tensor,
    /// Face tokens repeated per frame, `((b f), tokens, dim)`.
    pub(crate) encoder_hidden_states: Tensor,
    /// `"bs f margin dim -> (bs f) margin dim"`.
    pub(crate) audio_embedding: Tensor,
    pub(crate) masks: &'a AudioMasks,
    pub(crate) motion_scale: [f64; 3],
    pub(crate) reference: &'a ReaderBank,
    pub(crate) video_length: usize,
}

/// Callback receiving a named intermediate tensor (see [`UNet3DConditionModel::forward_observed`]).
pub type Observer<'a> = &'a mut dyn FnMut(&str, &Tensor);

/// Optional observer of named intermediate tensors; free when absent.
pub(crate) struct Probe<'a> {
    observer: Option<Observer<'a>>,
}

impl Probe<'_> {
    /// Reports `xs` given as `((b f), c, h, w)` in the upstream layout `(b, c, f, h, w)`.
    pub(crate) fn frames(&mut self, name: &str, xs: &Tensor, video_length: usize) -> Result<()> {
        if let Some(observer) = self.observer.as_mut() {
            observer(name, &frames_to_video(xs, video_length)?);
        }
        Ok(())
    }

    /// Reports `xs` as it is.
    pub(crate) fn video(&mut self, name: &str, xs: &Tensor) -> Result<()> {
        if let Some(observer) = self.observer.as_mut() {
            observer(name, xs);
        }
        Ok(())
    }
}

/// `"(b f) c h w -> b c f h w"`.
pub(crate) fn frames_to_video(xs: &Tensor, video_length: usize) -> Result<Tensor> {
    let (bf, c, h, w) = xs.dims4()?;
    if video_length == 0 || !bf.is_multiple_of(video_length) {
        candle_core::bail!("batch {bf} is not a multiple of {video_length} frames")
    }
    xs.reshape((bf / video_length, video_length, c, h, w))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()
}

/// `"b c f h w -> (b f) c h w"`.
pub(crate) fn video_to_frames(xs: &Tensor) -> Result<Tensor> {
    let (b, c, f, h, w) = xs.dims5()?;
    xs.permute((0, 2, 1, 3, 4))?.reshape((b * f, c, h, w))
}

/// The denoising UNet (`denoising_unet.*` of `net.pth`).
#[derive(Debug, Clone)]
pub struct UNet3DConditionModel {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock3D>,
    up_blocks: Vec<UpBlock3D>,
    mid_block: UNetMidBlock3DCrossAttn,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNet3DConditionConfig,
}

impl UNet3DConditionModel {
    /// Builds the denoising UNet from `denoising_unet.*` of `net.pth`, motion modules included.
    pub fn new(cfg: &UNet3DConditionConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (unet, kw) = (&cfg.unet, &cfg.unet_additional_kwargs);
        let channels = &unet.block_out_channels;
        let n = channels.len();
        let conv3 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = conv2d(unet.in_channels, channels[0], 3, conv3, vb.pp("conv_in"))?;
        let time_embedding =
            TimestepEmbedding::new(channels[0], unet.time_embed_dim(), vb.pp("time_embedding"))?;
        let motion = kw.motion_kwargs()?;
        let audio_attention_dim = kw.use_audio_module.then_some(kw.audio_attention_dim);
        let block = |kind: &str,
                     heads: usize,
                     depth: usize,
                     name: &str,
                     path: String|
         -> Result<Block3DConfig> {
            Ok(Block3DConfig {
                num_layers: unet.layers_per_block,
                in_channels: 0,
                out_channels: 0,
                prev_output_channel: 0,
                temb_channels: unet.time_embed_dim(),
                add_sampler: false,
                resnet_eps: unet.norm_eps,
                resnet_groups: unet.norm_num_groups,
                num_attention_heads: is_cross_attn_block(kind)?.then_some(heads),
                cross_attention_dim: unet.cross_attention_dim,
                audio_attention_dim,
                audio_stacked: kw.stacked(name, depth),
                motion_module: None,
                depth,
                path,
            })
        };
        let with_motion = |enabled: bool| if enabled { motion.cloned() } else { None };

        let mut down_blocks = Vec::with_capacity(n);
        for (i, kind) in unet.down_block_types.iter().enumerate() {
            let res = 1 << i;
            let bc = Block3DConfig {
                in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                out_channels: channels[i],
                add_sampler: i < n - 1,
                motion_module: with_motion(
                    kw.motion_module_resolutions.contains(&res) && !kw.motion_module_decoder_only,
                ),
                ..block(kind, unet.heads(i)?, i, "down", format!("down_blocks.{i}"))?
            };
            down_blocks.push(DownBlock3D::new(&bc, vb.pp("down_blocks").pp(i))?);
        }

        let mid = Block3DConfig {
            num_layers: 1,
            in_channels: channels[n - 1],
            out_channels: channels[n - 1],
            motion_module: with_motion(kw.motion_module_mid_block),
            ..block(
                "CrossAttnDownBlock3D",
                unet.heads(n - 1)?,
                3,
                "mid",
                "mid_block".to_string(),
            )?
        };
        let mid_block = UNetMidBlock3DCrossAttn::new(&mid, vb.pp("mid_block"))?;

        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        for (i, kind) in unet.up_block_types.iter().enumerate() {
            let res = 1 << (3 - i);
            let bc = Block3DConfig {
                num_layers: unet.layers_per_block + 1,
                in_channels: reversed[(i + 1).min(n - 1)],
                out_channels: reversed[i],
                prev_output_channel: if i == 0 { reversed[0] } else { reversed[i - 1] },
                add_sampler: i < n - 1,
                motion_module: with_motion(kw.motion_module_resolutions.contains(&res)),
                ..block(
                    kind,
                    unet.heads(n - 1 - i)?,
                    3 - i,
                    "up",
                    format!("up_blocks.{i}"),
                )?
            };
            up_blocks.push(UpBlock3D::new(&bc, vb.pp("up_blocks").pp(i))?);
        }

        let conv_norm_out = group_norm(
            unet.norm_num_groups,
            channels[0],
            unet.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = conv2d(channels[0], unet.out_channels, 3, conv3, vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            time_embedding,
            down_blocks,
            up_blocks,
            mid_block,
            conv_norm_out,
            conv_out,
            config: cfg.clone(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &UNet3DConditionConfig {
        &self.config
    }

    /// The reference-bank reader blocks as `(path, width)` in upstream module-traversal order
    /// (`down_blocks`, `up_blocks`, `mid_block`), for [`ReaderBank::new`].
    pub fn reader_blocks(&self) -> Vec<(String, usize)> {
        let unet = &self.config.unet;
        let n = unet.block_out_channels.len();
        let down = self.down_blocks.iter().enumerate().flat_map(|(i, b)| {
            b.reader_blocks()
                .map(move |p| (p.to_string(), unet.block_out_channels[i]))
        });
        let up = self.up_blocks.iter().enumerate().flat_map(|(i, b)| {
            b.reader_blocks()
                .map(move |p| (p.to_string(), unet.block_out_channels[n - 1 - i]))
        });
        let mid = self
            .mid_block
            .reader_blocks()
            .map(|p| (p.to_string(), unet.block_out_channels[n - 1]));
        down.chain(up).chain(mid).collect()
    }

    /// One denoising call. `sample`: `(b, in_channels, f, h, w)` (with CFG `b = 2`, uncond
    /// first); `timestep`: the scheduler timestep. Returns the model output (v-prediction for
    /// Hallo2) `(b, out_channels, f, h, w)`.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        conditions: &UNet3DConditions,
    ) -> Result<Tensor> {
        self.forward_inner(sample, timestep, conditions, Probe { observer: None })
    }

    /// [`Self::forward`], reporting intermediates to `observer` under the fixture names
    /// (`time_embedding.output`, `conv_in.output`, `down_blocks.{i}.output`,
    /// `<module path>.input/.output` of every audio and motion module that runs,
    /// `mid_block.attentions.0.output`, `mid_block.output`, `up_blocks.{i}.output`,
    /// `conv_norm_out.output`, `conv_out.output`), 5-D tensors as `(b, c, f, h, w)`.
    pub fn forward_observed(
        &self,
        sample: &Tensor,
        timestep: f64,
        conditions: &UNet3DConditions,
        observer: Observer,
    ) -> Result<Tensor> {
        self.forward_inner(
            sample,
            timestep,
            conditions,
            Probe {
                observer: Some(observer),
            },
        )
    }

    fn forward_inner(
        &self,
        sample: &Tensor,
        timestep: f64,
        conditions: &UNet3DConditions,
        mut probe: Probe,
    ) -> Result<Tensor> {
        let (b, _, f, h, w) = sample.dims5()?;
        let unet = &self.config.unet;
        let factor = 1 << (unet.block_out_channels.len() - 1);
        if h % factor != 0 || w % factor != 0 {
            candle_core::bail!("denoising unet: latent size {h}×{w} is not a multiple of {factor}")
        }
        let dtype = sample.dtype();
        let sample = if unet.center_input_sample {
            sample.affine(2.0, -1.0)?
        } else {
            sample.clone()
        };

        // 1. Time embedding: one row per batch item, cast to the model dtype before the MLP.
        let t_emb = timestep_sinusoid(
            &vec![timestep; b],
            unet.block_out_channels[0],
            unet.flip_sin_to_cos,
            unet.freq_shift,
            sample.device(),
        )?
        .to_dtype(dtype)?;
        let emb = self.time_embedding.forward(&t_emb)?;
        probe.video("time_embedding.output", &emb)?;

        // Conditions per frame (row b·f + frame).
        let per_frame = |xs: &Tensor| -> Result<Tensor> {
            let (rows, tokens, dim) = xs.dims3()?;
            if rows != b {
                candle_core::bail!("condition batch {rows} differs from the sample batch {b}")
            }
            // "b n c -> (b f) n c"
            xs.unsqueeze(1)?
                .repeat((1, f, 1, 1))?
                .reshape((b * f, tokens, dim))
        };
        let (ab, af, tokens, audio_dim) = conditions.audio_embedding.dims4()?;
        if (ab, af) != (b, f) {
            candle_core::bail!(
                "audio embedding {:?} does not match {b} × {f} frames",
                conditions.audio_embedding.dims()
            )
        }
        let inputs = FrameInputs {
            // "b c -> (b f) c"
            temb: emb.unsqueeze(1)?.repeat((1, f, 1))?.reshape((b * f, ()))?,
            encoder_hidden_states: per_frame(&conditions.encoder_hidden_states.to_dtype(dtype)?)?,
            // "bs f margin dim -> (bs f) margin dim"
            audio_embedding: conditions.audio_embedding.to_dtype(dtype)?.reshape((
                b * f,
                tokens,
                audio_dim,
            ))?,
            masks: &conditions.masks,
            motion_scale: conditions.motion_scale,
            reference: &conditions.reference,
            video_length: f,
        };

        // 2. conv_in, then the face-locator features.
        let mut xs = self.conv_in.forward(&video_to_frames(&sample)?)?;
        probe.frames("conv_in.output", &xs, f)?;
        if let Some(fea) = &conditions.mask_cond_fea {
            xs = (xs + video_to_frames(&fea.to_dtype(dtype)?)?)?;
        }

        // 3. Down path.
        let mut res_samples = vec![xs.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(&xs, &inputs, &mut probe)?;
            xs = out;
            res_samples.extend(states);
        }

        // 4. Mid block.
        xs = self.mid_block.forward(&xs, &inputs, &mut probe)?;

        // 5. Up path.
        for block in &self.up_blocks {
            xs = block.forward(&xs, &mut res_samples, &inputs, &mut probe)?;
        }

        // 6. Output head (per-frame GroupNorm, SiLU, conv).
        let xs = self.conv_norm_out.forward(&xs)?;
        probe.frames("conv_norm_out.output", &xs, f)?;
        let xs = self.conv_out.forward(&xs.silu()?)?;
        probe.frames("conv_out.output", &xs, f)?;
        frames_to_video(&xs, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `unet_additional_kwargs` as written in hallo2 `configs/inference/long.yaml` @ `58a9aa6`.
    const LONG_YAML: &str = r#"
unet_additional_kwargs:
  use_inflated_groupnorm: true
  unet_use_cross_frame_attention: false
  unet_use_temporal_attention: false
  use_motion_module: true
  use_audio_module: true
  motion_module_resolutions:
    - 1
    - 2
    - 4
    - 8
  motion_module_mid_block: true
  motion_module_decoder_only: false
  motion_module_type: Vanilla
  motion_module_kwargs:
    num_attention_heads: 8
    num_transformer_block: 1
    attention_block_types:
      - Temporal_Self
      - Temporal_Self
    temporal_position_encoding: true
    temporal_position_encoding_max_len: 32
    temporal_attention_dim_div: 1
  audio_attention_dim: 768
  stack_enable_blocks_name:
    - "up"
    - "down"
    - "mid"
  stack_enable_blocks_depth: [0,1,2,3]
"#;

    #[derive(serde::Deserialize)]
    struct InferenceYaml {
        unet_additional_kwargs: UNet3DAdditionalKwargs,
    }

    #[test]
    fn hallo2_kwargs_match_long_yaml() {
        let parsed: InferenceYaml = serde_yaml::from_str(LONG_YAML).unwrap();
        assert_eq!(
            parsed.unet_additional_kwargs,
            UNet3DAdditionalKwargs::hallo2()
        );
        UNet3DConditionConfig::hallo2().validate().unwrap();
    }

    #[test]
    fn tiny_yaml_differs_only_in_widths() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/hallo2-tiny/config/long_tiny.yaml"
        );
        let parsed: InferenceYaml =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut expected = UNet3DAdditionalKwargs::hallo2();
        expected.audio_attention_dim = 32;
        if let Some(mm) = expected.motion_module_kwargs.as_mut() {
            mm.num_attention_heads = 2;
        }
        assert_eq!(parsed.unet_additional_kwargs, expected);
    }

    #[test]
    fn stacked_audio_blocks() {
        let kw = UNet3DAdditionalKwargs::hallo2();
        assert!(kw.stacked("down", 0) && kw.stacked("mid", 3) && kw.stacked("up", 1));
        let kw = UNet3DAdditionalKwargs {
            stack_enable_blocks_depth: Some(vec![0]),
            ..kw
        };
        assert!(!kw.stacked("up", 1));
    }

    #[test]
    fn unsupported_options_are_rejected() {
        let mut cfg = UNet3DConditionConfig::hallo2();
        cfg.unet_additional_kwargs.use_inflated_groupnorm = false;
        assert!(cfg.validate().is_err());
        let mut cfg = UNet3DConditionConfig::hallo2();
        cfg.unet_additional_kwargs.motion_module_type = Some("Sparse".into());
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn frame_layout_round_trip() {
        let xs = Tensor::arange(0f32, 2. * 3. * 4. * 2. * 2., &candle_core::Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4, 2, 2))
            .unwrap();
        let frames = video_to_frames(&xs).unwrap();
        assert_eq!(frames.dims(), [8, 3, 2, 2]);
        // Row b·f + frame holds frame `frame` of batch item `b`.
        let row5 = frames
            .get(5)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let expected = xs
            .get(1)
            .unwrap()
            .narrow(1, 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(row5, expected);
        let back = frames_to_video(&frames, 4).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            xs.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
