//! hallo2 `hallo/models/unet_3d_blocks.py` @ `58a9aa6`: `CrossAttnDownBlock3D`, `DownBlock3D`,
//! `UNetMidBlock3DCrossAttn`, `CrossAttnUpBlock3D`, `UpBlock3D`, on the path the inference
//! pipeline takes.
//!
//! The denoising UNet is never put in eval mode and has gradient checkpointing enabled, so the
//! down/up blocks run their `if self.training and self.gradient_checkpointing` branch:
//! cross-attention layers run ResNet → spatial transformer → audio module (with `motion_scale`)
//! → motion module over `[motion-frame features ++ frames]` keeping the last `f` frames, and the
//! plain blocks (`DownBlock3D`, `UpBlock3D`) run their ResNets only: their motion modules are
//! loaded but skipped. The mid block has no such branch and always takes the motion-frame path.
//!
//! `ResnetBlock3D`, `Downsample3D` and `Upsample3D` (hallo `resnet.py`) are the 2-D layers
//! applied per frame (`use_inflated_groupnorm: true`), so the blocks hold [`ResnetBlock2D`],
//! [`Downsample2D`] and [`Upsample2D`] and work on `((b f), c, h, w)`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::transformer_3d::{
    AudioTransformer3DModel, Transformer3DModel, Transformer3DModelConfig,
};
use super::{FrameInputs, Probe, frames_to_video, video_to_frames};
use crate::attention::AudioBranchInputs;
use crate::motion_module::{MotionModuleConfig, VanillaTemporalModule};
use crate::nn::{Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D};

/// Arguments of one block (`get_down_block` / `get_up_block` / `UNetMidBlock3DCrossAttn`).
#[derive(Debug, Clone, PartialEq)]
pub struct Block3DConfig {
    /// Number of layers (ResNet + optional transformer/audio/motion modules).
    pub num_layers: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Up blocks only: channels coming from the block below.
    pub prev_output_channel: usize,
    pub temb_channels: usize,
    /// Adds the down- or upsampler.
    pub add_sampler: bool,
    pub resnet_eps: f64,
    pub resnet_groups: usize,
    /// Attention heads of the spatial and audio transformers; `None` for the plain blocks.
    pub num_attention_heads: Option<usize>,
    pub cross_attention_dim: usize,
    /// `Some(audio_attention_dim)` when the block has audio modules.
    pub audio_attention_dim: Option<usize>,
    /// Whether the audio modules use the three masked branches (`stack_enable_blocks_*`).
    pub audio_stacked: bool,
    /// Motion-module kwargs (`in_channels` is filled per block) when the block has them.
    pub motion_module: Option<MotionModuleConfig>,
    /// `depth` upstream: the level whose masks the audio modules use.
    pub depth: usize,
    /// Module path inside the UNet (`down_blocks.0`).
    pub path: String,
}

impl Block3DConfig {
    fn resnet(&self, in_channels: usize, out_channels: usize) -> ResnetBlock2DConfig {
        ResnetBlock2DConfig {
            in_channels,
            out_channels,
            temb_channels: Some(self.temb_channels),
            groups: self.resnet_groups,
            eps: self.resnet_eps,
        }
    }

    fn transformer(
        &self,
        heads: usize,
        width: usize,
        channels: usize,
        cross: usize,
        path: String,
    ) -> Transformer3DModelConfig {
        Transformer3DModelConfig {
            num_attention_heads: heads,
            attention_head_dim: width / heads,
            in_channels: channels,
            norm_num_groups: self.resnet_groups,
            cross_attention_dim: cross,
            path,
            stacked_audio: self.audio_stacked,
        }
    }

    /// The cross-attention layers: spatial transformer, audio module and motion module of each
    /// layer `j`. `audio_width(j)` is the audio module's `in_channels` argument upstream, which
    /// sets its inner width.
    fn cross_layers(
        &self,
        vb: &VarBuilder,
        channels: usize,
        audio_width: impl Fn(usize) -> usize,
    ) -> Result<Vec<CrossAttnLayer>> {
        let Some(heads) = self.num_attention_heads else {
            return Ok(Vec::new());
        };
        (0..self.num_layers)
            .map(|j| {
                let path = format!("{}.attentions.{j}", self.path);
                let cfg = Transformer3DModelConfig {
                    stacked_audio: false,
                    ..self.transformer(heads, channels, channels, self.cross_attention_dim, path)
                };
                let attention = Transformer3DModel::new(&cfg, vb.pp("attentions").pp(j))?;
                let audio_module = match self.audio_attention_dim {
                    Some(audio_dim) => {
                        let path = format!("{}.audio_modules.{j}", self.path);
                        let cfg =
                            self.transformer(heads, audio_width(j), channels, audio_dim, path);
                        Some(AudioTransformer3DModel::new(
                            &cfg,
                            vb.pp("audio_modules").pp(j),
                        )?)
                    }
                    None => None,
                };
                Ok(CrossAttnLayer {
                    attention,
                    audio_module,
                    motion_module: self.motion(vb, channels, j)?,
                    audio_name: format!("{}.audio_modules.{j}", self.path),
                    motion_name: format!("{}.motion_modules.{j}", self.path),
                    depth: self.depth,
                })
            })
            .collect()
    }

    fn motion(
        &self,
        vb: &VarBuilder,
        channels: usize,
        j: usize,
    ) -> Result<Option<VanillaTemporalModule>> {
        match &self.motion_module {
            Some(kwargs) => {
                let cfg = kwargs.with_in_channels(channels);
                Ok(Some(VanillaTemporalModule::new(
                    &cfg,
                    vb.pp("motion_modules").pp(j),
                )?))
            }
            None => Ok(None),
        }
    }
}

/// One layer's spatial transformer, audio module and motion module, run in the training-mode
/// order.
#[derive(Debug, Clone)]
struct CrossAttnLayer {
    attention: Transformer3DModel,
    audio_module: Option<AudioTransformer3DModel>,
    motion_module: Option<VanillaTemporalModule>,
    audio_name: String,
    motion_name: String,
    depth: usize,
}

impl CrossAttnLayer {
    /// `xs`: `((b f), c, h, w)` after the layer's ResNet.
    fn forward(
        &self,
        xs: &Tensor,
        inputs: &FrameInputs,
        probe: &mut Probe,
        attn_name: Option<&str>,
    ) -> Result<Tensor> {
        let f = inputs.video_length;
        let (_, _, h, w) = xs.dims4()?;
        // 1. Spatial transformer; its first block returns the bank's motion-frame features.
        let (mut xs, motion_frames) =
            self.attention
                .forward(xs, &inputs.encoder_hidden_states, inputs.reference, f)?;
        if let Some(name) = attn_name {
            probe.frames(name, &xs, f)?;
        }
        // "b f (d1 d2) c -> b c f d1 d2"
        let (b, n_motion_frames, _, c) = motion_frames.dims4()?;
        let motion_frames =
            motion_frames
                .permute((0, 3, 1, 2))?
                .reshape((b, c, n_motion_frames, h, w))?;

        // 2. Audio module, with motion_scale.
        if let Some(audio) = &self.audio_module {
            probe.frames(&format!("{}.input", self.audio_name), &xs, f)?;
            let branches = inputs.audio_branches(self.depth)?;
            xs = audio.forward(&xs, &inputs.audio_embedding, &branches)?;
            probe.frames(&format!("{}.output", self.audio_name), &xs, f)?;
        }

        // 3. Motion module over [motion frames ++ frames], keeping the last f frames.
        if let Some(motion) = &self.motion_module {
            let video = frames_to_video(&xs, f)?;
            let video = Tensor::cat(&[&motion_frames.to_dtype(video.dtype())?, &video], 2)?;
            probe.video(&format!("{}.input", self.motion_name), &video)?;
            let out = motion.forward(&video)?;
            probe.video(&format!("{}.output", self.motion_name), &out)?;
            xs = video_to_frames(&out.narrow(2, n_motion_frames, f)?)?;
        }
        Ok(xs)
    }
}

/// `CrossAttnDownBlock3D` (with attention layers) or `DownBlock3D` (ResNets only).
#[derive(Debug, Clone)]
pub struct DownBlock3D {
    resnets: Vec<ResnetBlock2D>,
    layers: Vec<CrossAttnLayer>,
    /// `DownBlock3D.motion_modules`: in `net.pth`, but skipped by the training-mode branch.
    #[allow(dead_code)] // loaded so the checkpoint's keys are all consumed; never run upstream
    motion_modules: Vec<VanillaTemporalModule>,
    downsamplers: Option<Downsample2D>,
    path: String,
}

impl DownBlock3D {
    /// Loads the block rooted at `vb` (`down_blocks.{i}`, `mid_block`, `up_blocks.{i}`).
    pub fn new(cfg: &Block3DConfig, vb: VarBuilder) -> Result<Self> {
        let resnets = (0..cfg.num_layers)
            .map(|j| {
                let cin = if j == 0 {
                    cfg.in_channels
                } else {
                    cfg.out_channels
                };
                ResnetBlock2D::new(&cfg.resnet(cin, cfg.out_channels), vb.pp("resnets").pp(j))
            })
            .collect::<Result<_>>()?;
        // The audio module's inner width is the *layer input* width.
        let audio_width = |j: usize| {
            if j == 0 {
                cfg.in_channels
            } else {
                cfg.out_channels
            }
        };
        let layers = cfg.cross_layers(&vb, cfg.out_channels, audio_width)?;
        let motion_modules = if layers.is_empty() {
            (0..cfg.num_layers)
                .filter_map(|j| cfg.motion(&vb, cfg.out_channels, j).transpose())
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let downsamplers = if cfg.add_sampler {
            let vb = vb.pp("downsamplers").pp("0");
            Some(Downsample2D::new(cfg.out_channels, cfg.out_channels, vb)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            layers,
            motion_modules,
            downsamplers,
            path: cfg.path.clone(),
        })
    }

    pub(crate) fn reader_blocks(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().flat_map(|l| l.attention.block_paths())
    }

    /// Returns the block output and the states it pushes onto the skip stack.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        inputs: &FrameInputs,
        probe: &mut Probe,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut xs = xs.clone();
        let mut output_states = Vec::with_capacity(self.resnets.len() + 1);
        for (j, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(&inputs.temb))?;
            if let Some(layer) = self.layers.get(j) {
                xs = layer.forward(&xs, inputs, probe, None)?;
            }
            output_states.push(xs.clone());
        }
        if let Some(down) = &self.downsamplers {
            xs = down.forward(&xs)?;
            output_states.push(xs.clone());
        }
        probe.frames(&format!("{}.output", self.path), &xs, inputs.video_length)?;
        Ok((xs, output_states))
    }
}

/// `UNetMidBlock3DCrossAttn`: ResNet, then (transformer, audio, motion, ResNet) × `num_layers`.
#[derive(Debug, Clone)]
pub struct UNetMidBlock3DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    layers: Vec<CrossAttnLayer>,
    path: String,
}

impl UNetMidBlock3DCrossAttn {
    /// Loads the block rooted at `vb` (`down_blocks.{i}`, `mid_block`, `up_blocks.{i}`).
    pub fn new(cfg: &Block3DConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.in_channels;
        let resnets = (0..=cfg.num_layers)
            .map(|j| ResnetBlock2D::new(&cfg.resnet(c, c), vb.pp("resnets").pp(j)))
            .collect::<Result<_>>()?;
        let layers = cfg.cross_layers(&vb, c, |_| c)?;
        if layers.len() != cfg.num_layers {
            candle_core::bail!("{}: the mid block needs attention heads", cfg.path)
        }
        Ok(Self {
            resnets,
            layers,
            path: cfg.path.clone(),
        })
    }

    pub(crate) fn reader_blocks(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().flat_map(|l| l.attention.block_paths())
    }

    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        inputs: &FrameInputs,
        probe: &mut Probe,
    ) -> Result<Tensor> {
        let mut xs = self.resnets[0].forward(xs, Some(&inputs.temb))?;
        for (j, (layer, resnet)) in self.layers.iter().zip(&self.resnets[1..]).enumerate() {
            let attn_name = format!("{}.attentions.{j}.output", self.path);
            xs = layer.forward(&xs, inputs, probe, Some(&attn_name))?;
            xs = resnet.forward(&xs, Some(&inputs.temb))?;
        }
        probe.frames(&format!("{}.output", self.path), &xs, inputs.video_length)?;
        Ok(xs)
    }
}

/// `CrossAttnUpBlock3D` (with attention layers) or `UpBlock3D` (ResNets only).
#[derive(Debug, Clone)]
pub struct UpBlock3D {
    resnets: Vec<ResnetBlock2D>,
    layers: Vec<CrossAttnLayer>,
    /// `UpBlock3D.motion_modules`: in `net.pth`, but skipped by the training-mode branch.
    #[allow(dead_code)] // loaded so the checkpoint's keys are all consumed; never run upstream
    motion_modules: Vec<VanillaTemporalModule>,
    upsamplers: Option<Upsample2D>,
    path: String,
}

impl UpBlock3D {
    /// Loads the block rooted at `vb` (`down_blocks.{i}`, `mid_block`, `up_blocks.{i}`).
    pub fn new(cfg: &Block3DConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.num_layers;
        let resnets = (0..n)
            .map(|j| {
                let res_skip = if j == n - 1 {
                    cfg.in_channels
                } else {
                    cfg.out_channels
                };
                let resnet_in = if j == 0 {
                    cfg.prev_output_channel
                } else {
                    cfg.out_channels
                };
                ResnetBlock2D::new(
                    &cfg.resnet(resnet_in + res_skip, cfg.out_channels),
                    vb.pp("resnets").pp(j),
                )
            })
            .collect::<Result<_>>()?;
        // The audio module's inner width is the *block's* `in_channels` argument.
        let layers = cfg.cross_layers(&vb, cfg.out_channels, |_| cfg.in_channels)?;
        let motion_modules = if layers.is_empty() {
            (0..n)
                .filter_map(|j| cfg.motion(&vb, cfg.out_channels, j).transpose())
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let upsamplers = if cfg.add_sampler {
            Some(Upsample2D::new(
                cfg.out_channels,
                cfg.out_channels,
                vb.pp("upsamplers").pp("0"),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            layers,
            motion_modules,
            upsamplers,
            path: cfg.path.clone(),
        })
    }

    pub(crate) fn reader_blocks(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().flat_map(|l| l.attention.block_paths())
    }

    /// `res_hidden_states`: the skip stack; one state is popped per layer.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        res_hidden_states: &mut Vec<Tensor>,
        inputs: &FrameInputs,
        probe: &mut Probe,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let Some(skip) = res_hidden_states.pop() else {
                candle_core::bail!("{}: the skip stack is empty", self.path)
            };
            xs = Tensor::cat(&[&xs, &skip], 1)?;
            xs = resnet.forward(&xs, Some(&inputs.temb))?;
            if let Some(layer) = self.layers.get(j) {
                xs = layer.forward(&xs, inputs, probe, None)?;
            }
        }
        if let Some(up) = &self.upsamplers {
            xs = up.forward(&xs)?;
        }
        probe.frames(&format!("{}.output", self.path), &xs, inputs.video_length)?;
        Ok(xs)
    }
}

impl<'a> FrameInputs<'a> {
    /// The masks of `level` and the branch scales.
    fn audio_branches(&self, level: usize) -> Result<AudioBranchInputs<'a>> {
        fn pick<'t>(masks: &'t [Tensor], what: &str, level: usize) -> Result<&'t Tensor> {
            match masks.get(level) {
                Some(m) => Ok(m),
                None => candle_core::bail!("no {what} mask for level {level}"),
            }
        }
        Ok(AudioBranchInputs {
            full_mask: pick(&self.masks.full, "full", level)?,
            face_mask: pick(&self.masks.face, "face", level)?,
            lip_mask: pick(&self.masks.lip, "lip", level)?,
            motion_scale: self.motion_scale,
        })
    }
}
