//! Hallo2 in candle: audio-driven portrait animation without a web stack.
//!
//! This crate must not depend on leptos, axum or tokio: the server links it, and a CLI can run it
//! alone. It tracks the official inference code `fudan-generative-vision/hallo2` @ `58a9aa6`
//! (diffusers 0.32.2, transformers 4.39.2).
//!
//! ```text
//! audio ─▶ wav2vec2 ─▶ 5-frame window ─▶ AudioProjModel ───────────────┐
//! face embedding ─▶ ImageProjModel ─▶ face tokens ───────────────────────┤
//! reference + motion frames ─▶ VAE encode ─▶ reference UNet2D ─▶ bank ──┤
//! face region ─▶ FaceLocator ────────────────────────────────────────────┤
//! noise ─▶ UNet3D × DDIM steps (CFG) × 16-frame clips ─▶ VAE decode ─▶ frames
//! ```

pub mod attention;
pub mod audio_features;
pub mod audio_io;
pub mod audio_proj;
pub mod cache_prune;
pub mod config;
pub mod device;
pub mod error;
pub mod face;
pub mod face_locator;
pub mod hallo2;
pub mod heads;
pub mod image_io;
pub mod image_proj;
pub mod loader;
pub mod media;
pub mod motion_module;
pub mod mutual_self_attention;
pub mod net;
pub mod nn;
pub mod pipeline;
pub mod scheduler;
pub mod torch_rng;
pub mod unet_2d;
pub mod unet_3d;
pub mod vae;
pub mod vocals;
pub mod wav2vec2;
pub mod weights;

pub use error::ModelError;
