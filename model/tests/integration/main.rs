//! The model crate's integration tests, in one binary (one link of candle instead of one per
//! file): parity against the official golden tensors, key coverage, weights, audio, face, media
//! and whole generations. Each module is one former `tests/*.rs` file.

/// Weight tensors may live in a mapping of the `net.pth` cache (see `model::weights`); the
/// allocator passes every other allocation to the system's.
#[global_allocator]
static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;

mod common;

mod audio_io;
mod face_detect;
mod face_embedding;
mod face_masks;
mod face_preflight;
mod generate;
mod hostile_audio;
mod image_io;
mod image_ports;
mod key_coverage;
mod key_coverage_unets;
mod mapped_weights;
mod media;
mod parity_denoise_unet;
mod parity_heads;
mod parity_motion_module;
mod parity_pipeline;
mod parity_ref_unet;
mod parity_scheduler;
mod parity_torch_rng;
mod parity_vae;
mod parity_wav2vec;
mod pth_writer;
mod vocals;
mod weights;
