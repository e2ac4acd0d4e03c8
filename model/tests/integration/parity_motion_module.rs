//! Parity of `VanillaTemporalModule` with the official tiny model (hallo2 `motion_module.py`).

use crate::common::{self, FixtureSet, for_each_set};

use candle_core::Tensor;
use model::motion_module::{MotionModuleConfig, VanillaTemporalModule};

/// The module the `motion_module` case ran (its description in `cases/index.json`).
const CASE_MODULE: &str = "down_blocks.0.motion_modules.0";

/// The set's `motion_module_kwargs` (its yaml).
fn kwargs(set: &FixtureSet) -> MotionModuleConfig {
    set.inference()
        .unet_additional_kwargs
        .motion_module_kwargs
        .expect("the yaml has motion_module_kwargs")
}

fn load(set: &FixtureSet, root: &str, in_channels: usize) -> VanillaTemporalModule {
    let vb = set.net_vb().pp("denoising_unet").pp(root);
    VanillaTemporalModule::new(&kwargs(set).with_in_channels(in_channels), vb)
        .expect("loading motion module")
}

/// The case's module, sized by its input.
fn case_module(set: &FixtureSet) -> (VanillaTemporalModule, Tensor) {
    let case = set.case("motion_module");
    let input = common::get(&case, "input").clone();
    (load(set, CASE_MODULE, input.dim(1).unwrap()), input)
}

#[test]
fn motion_module_matches_fixture() {
    for_each_set(|set| {
        let case = set.case("motion_module");
        let (module, input) = case_module(set);
        let output = module.forward(&input).expect("forward");
        common::assert_close(
            "motion_module output",
            &output,
            common::get(&case, "output"),
            1e-4,
            0.0,
        );
    });
}

#[test]
fn positional_encoding_is_the_loaded_table() {
    for_each_set(|set| {
        let case = set.case("motion_module");
        let (module, _) = case_module(set);
        let expected = common::get(&case, "pos_encoder_pe");
        for j in 0..kwargs(set).attention_block_types.len() {
            let pe = module.pos_encoding(0, j).expect("pos encoder present");
            common::assert_close(
                &format!("pos_encoder.pe of block {j}"),
                pe,
                expected,
                0.0,
                0.0,
            );
        }
    });
}

/// Every motion module the UNet ran at clip 0 step 0, from its recorded input.
#[test]
fn motion_modules_match_unet_intermediates() {
    for_each_set(|set| {
        let case = set.case("denoise_unet_clip0_step0_intermediates");
        let mut roots: Vec<&str> = case
            .keys()
            .filter_map(|k| k.strip_suffix(".input"))
            .filter(|root| root.contains(".motion_modules."))
            .collect();
        roots.sort();
        assert!(!roots.is_empty());
        for root in roots {
            let input = common::get(&case, &format!("{root}.input"));
            let channels = input.dim(1).expect("channel dim");
            let output = load(set, root, channels).forward(input).expect("forward");
            common::assert_close(
                root,
                &output,
                common::get(&case, &format!("{root}.output")),
                1e-4,
                0.0,
            );
        }
    });
}

#[test]
fn too_many_frames_are_rejected() {
    for_each_set(|set| {
        let (module, input) = case_module(set);
        let max_len = kwargs(set).temporal_position_encoding_max_len;
        let (b, c, _, h, w) = input.dims5().unwrap();
        let xs = Tensor::zeros(
            (b, c, max_len + 1, h, w),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .expect("zeros");
        let err = module.forward(&xs).expect_err("more frames than max_len");
        assert!(
            err.to_string()
                .contains("temporal_position_encoding_max_len"),
            "{err}"
        );
    });
}
