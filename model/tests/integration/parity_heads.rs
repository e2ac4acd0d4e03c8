//! Parity of the small conditioning heads (image projection, audio projection, face locator)
//! with the official tiny model.

use crate::common;

use candle_core::{Module, Tensor};
use model::audio_proj::{AudioProjConfig, AudioProjModel};
use model::face_locator::{FaceLocator, FaceLocatorConfig};
use model::image_proj::{ImageProjConfig, ImageProjModel};

/// Tiny values from `tiny_config.json`: clip_embeddings_dim 16, image_tokens 4, unet
/// cross_attention_dim 32.
fn tiny_image_proj_cfg() -> ImageProjConfig {
    ImageProjConfig {
        cross_attention_dim: 32,
        clip_embeddings_dim: 16,
        clip_extra_context_tokens: 4,
    }
}

#[test]
fn image_proj_matches_fixture() {
    let case = common::case("image_proj");
    let model = ImageProjModel::new(
        &tiny_image_proj_cfg(),
        common::tiny_net_vb().pp("imageproj"),
    )
    .expect("loading imageproj");
    let face_emb = common::get(&case, "face_emb");
    let cond = model.forward(face_emb).expect("cond forward");
    common::assert_close(
        "image_proj cond_tokens",
        &cond,
        common::get(&case, "cond_tokens"),
        1e-5,
        0.0,
    );
    let uncond = model
        .forward(&face_emb.zeros_like().expect("zeros"))
        .expect("uncond forward");
    common::assert_close(
        "image_proj uncond_tokens",
        &uncond,
        common::get(&case, "uncond_tokens"),
        1e-5,
        0.0,
    );
}

#[test]
fn audio_proj_matches_fixture() {
    let case = common::case("audio_proj");
    // Tiny values: seq_len 5, blocks = 2 wav2vec layers, channels 32, intermediate 64,
    // output = cross_attention_dim 32, context tokens 8.
    let cfg = AudioProjConfig {
        seq_len: 5,
        blocks: 2,
        channels: 32,
        intermediate_dim: 64,
        output_dim: 32,
        context_tokens: 8,
    };
    let model = AudioProjModel::new(&cfg, common::tiny_net_vb().pp("audioproj")).expect("loading");
    let tokens = model
        .forward(common::get(&case, "audio_emb_clip0"))
        .expect("forward");
    common::assert_close(
        "audio_proj tokens",
        &tokens,
        common::get(&case, "audio_tokens_clip0"),
        1e-5,
        0.0,
    );
}

#[test]
fn audio_proj_rejects_wrong_window() {
    let cfg = AudioProjConfig {
        seq_len: 5,
        blocks: 2,
        channels: 32,
        intermediate_dim: 64,
        output_dim: 32,
        context_tokens: 8,
    };
    let model = AudioProjModel::new(&cfg, common::tiny_net_vb().pp("audioproj")).expect("loading");
    let xs = Tensor::zeros(
        (1, 4, 3, 2, 32),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .expect("zeros");
    assert!(model.forward(&xs).is_err());
}

#[test]
fn face_locator_matches_fixture() {
    let case = common::case("face_locator");
    let cfg = FaceLocatorConfig {
        conditioning_embedding_channels: 32,
        conditioning_channels: 3,
        block_out_channels: vec![4, 8, 8, 16],
    };
    let model = FaceLocator::new(&cfg, common::tiny_net_vb().pp("face_locator")).expect("loading");
    let output = model.forward(common::get(&case, "input")).expect("forward");
    common::assert_close(
        "face_locator output",
        &output,
        common::get(&case, "output"),
        1e-5,
        0.0,
    );
}
