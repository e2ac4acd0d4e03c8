//! Layers shared by the UNets, the VAE and the motion/audio modules, in diffusers' key layout.
//!
//! Everything here works on plain `(batch, channels, h, w)` or token tensors; the 3-D UNet
//! "inflates" them by folding frames into the batch (`(b f) c h w`).

pub mod attention;
pub mod conv;
pub mod feed_forward;
pub mod interpolate;
pub mod resnet;
pub mod sampling;
pub mod timestep;

pub use attention::{Attention, AttentionConfig};
pub use conv::{Conv2d, conv2d};
pub use feed_forward::FeedForward;
pub use interpolate::interpolate_linear;
pub use resnet::{ResnetBlock2D, ResnetBlock2DConfig};
pub use sampling::{Downsample2D, Upsample2D};
pub use timestep::{TimestepEmbedding, timestep_sinusoid};
