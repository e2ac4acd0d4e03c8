//! Parity of `VanillaTemporalModule` with the official tiny model (hallo2 `motion_module.py`).

use crate::common;

use candle_core::Tensor;
use model::motion_module::{MotionModuleConfig, VanillaTemporalModule};

/// The tiny `motion_module_kwargs` (tiny_config.json: `mm_heads` 2, otherwise as long.yaml).
fn tiny_cfg(in_channels: usize) -> MotionModuleConfig {
    MotionModuleConfig {
        num_attention_heads: 2,
        ..MotionModuleConfig::hallo2()
    }
    .with_in_channels(in_channels)
}

fn load(root: &str, in_channels: usize) -> VanillaTemporalModule {
    let vb = common::tiny_net_vb().pp("denoising_unet").pp(root);
    VanillaTemporalModule::new(&tiny_cfg(in_channels), vb).expect("loading motion module")
}

#[test]
fn motion_module_matches_fixture() {
    let case = common::case("motion_module");
    let module = load("down_blocks.0.motion_modules.0", 32);
    let output = module
        .forward(common::get(&case, "input"))
        .expect("forward");
    common::assert_close(
        "motion_module output",
        &output,
        common::get(&case, "output"),
        1e-4,
        0.0,
    );
}

#[test]
fn positional_encoding_is_the_loaded_table() {
    let case = common::case("motion_module");
    let module = load("down_blocks.0.motion_modules.0", 32);
    let expected = common::get(&case, "pos_encoder_pe");
    for j in 0..2 {
        let pe = module.pos_encoding(0, j).expect("pos encoder present");
        common::assert_close(
            &format!("pos_encoder.pe of block {j}"),
            pe,
            expected,
            0.0,
            0.0,
        );
    }
}

#[test]
fn motion_modules_match_unet_intermediates() {
    let case = common::case("denoise_unet_clip0_step0_intermediates");
    for root in [
        "up_blocks.3.motion_modules.1",
        "mid_block.motion_modules.0",
        "down_blocks.2.motion_modules.0",
    ] {
        let input = common::get(&case, &format!("{root}.input"));
        let channels = input.dim(1).expect("channel dim");
        let output = load(root, channels).forward(input).expect("forward");
        common::assert_close(
            root,
            &output,
            common::get(&case, &format!("{root}.output")),
            1e-4,
            0.0,
        );
    }
}

#[test]
fn too_many_frames_are_rejected() {
    let module = load("down_blocks.0.motion_modules.0", 32);
    let xs = Tensor::zeros(
        (1, 32, 33, 2, 2),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .expect("zeros");
    let err = module.forward(&xs).expect_err("33 frames > max_len 32");
    assert!(
        err.to_string()
            .contains("temporal_position_encoding_max_len"),
        "{err}"
    );
}
