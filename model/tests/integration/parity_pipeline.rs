//! The whole long-video loop against the official pipeline run on the tiny weights:
//! `pipeline_clip{0,1}.safetensors` (per-clip latents and frames, seed 42 noise included) and
//! `pipeline_final.safetensors` (both clips, trimmed to the audio length).
//!
//! This binary installs the mapped-weights allocator, as the studio and the CLI do, so the model
//! here runs on tensors that share the `net.pth` cache's pages.

use crate::common;

use candle_core::{DType, IndexOp, Tensor};
use model::config::InferenceConfig;
use model::loader::{self, LoadEvent, LoadStage};
use model::mutual_self_attention::ReaderBank;
use model::pipeline::{AudioConditioning, ClipOutput, Observer, PreparedInputs};
use model::unet_3d::{AudioMasks, UNet3DConditions};

fn tiny_config() -> InferenceConfig {
    common::tiny_inference_config()
}

fn prepared_inputs() -> PreparedInputs {
    let inputs = common::case("inputs");
    let audio = common::case("wav2vec");
    let levels = |name: &str| -> [Tensor; 4] {
        std::array::from_fn(|l| common::get(&inputs, &format!("{name}.{l}")).clone())
    };
    let audio_length = common::get(&audio, "audio_length")
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()[0];
    PreparedInputs {
        source_pixels: common::get(&inputs, "source_image_pixels").clone(),
        face_region: common::get(&inputs, "source_image_face_region").clone(),
        face_emb: common::get(&inputs, "face_emb").clone(),
        full_mask: levels("full_mask"),
        face_mask: levels("face_mask"),
        lip_mask: levels("lip_mask"),
        audio: AudioConditioning::Windows(common::get(&audio, "audio_emb_windowed").clone()),
        audio_length: audio_length as usize,
    }
}

#[derive(Default)]
struct Clips {
    outputs: Vec<ClipOutput>,
}

impl Observer for Clips {
    fn clip_done(&mut self, _clip: usize, output: &ClipOutput) {
        self.outputs.push(output.clone());
    }
}

fn load_tiny(cache: &std::path::Path, on_event: &mut dyn FnMut(LoadEvent)) -> loader::LoadedModel {
    let loaded = common::load_tiny_model(cache, on_event);
    assert!(loaded.weights_mapped, "the net.pth cache is mapped");
    loaded
}

/// Each guided DDIM step of clip 0, fed the official step input and the official (f16) bank:
/// raw UNet output, CFG combination and scheduler step all within 1e-4.
#[test]
fn steps_match_the_official_run_given_its_bank() {
    let cache = tempfile::tempdir().unwrap();
    let pipeline = load_tiny(cache.path(), &mut |_| {}).pipeline;
    let args = common::case("denoise_unet_clip0_step0");
    let golden = common::case("pipeline_clip0");
    let ref_case = common::case("ref_unet_clip0");

    // Our writer bank's layout, with the official tensors put in (fixture order = pairing order).
    let (_, mut bank) = pipeline
        .net
        .reference_unet
        .forward(
            common::get(&ref_case, "sample"),
            0.0,
            common::get(&ref_case, "encoder_hidden_states"),
        )
        .unwrap();
    let mut order: Vec<usize> = (0..bank.entries.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(bank.entries[i].width));
    for (k, &i) in order.iter().enumerate() {
        bank.entries[i].features = common::get(&ref_case, &format!("bank.{k:02}")).clone();
    }
    let reference =
        ReaderBank::new(&bank, &pipeline.net.denoising_unet.reader_blocks(), true).unwrap();
    let masks = |kind: &str| {
        (0..4)
            .map(|l| common::get(&args, &format!("{kind}_mask.{l}")).clone())
            .collect()
    };
    let conditions = UNet3DConditions {
        encoder_hidden_states: common::get(&args, "encoder_hidden_states").clone(),
        audio_embedding: common::get(&args, "audio_embedding").clone(),
        mask_cond_fea: Some(common::get(&args, "mask_cond_fea").clone()),
        masks: AudioMasks {
            full: masks("full"),
            face: masks("face"),
            lip: masks("lip"),
        },
        motion_scale: [1.0; 3],
        reference,
    };
    let config = tiny_config();
    let scheduler = pipeline.scheduler(config.inference_steps).unwrap();
    for (j, &t) in scheduler.timesteps().iter().enumerate() {
        let step = |name: &str| common::get(&golden, &format!("step{j}.{name}")).clone();
        let expected_t = step("timestep")
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()[0];
        assert_eq!(t as i64, expected_t);
        let v = pipeline
            .net
            .denoising_unet
            .forward(&step("latent_model_input"), t as f64, &conditions)
            .unwrap();
        common::assert_close(
            &format!("step {j} noise_pred_raw"),
            &v,
            &step("noise_pred_raw"),
            1e-4,
            0.0,
        );
        let raw = step("noise_pred_raw");
        let (u, c) = (raw.i(0..1).unwrap(), raw.i(1..2).unwrap());
        let guided = (&u + ((c - &u).unwrap() * config.cfg_scale).unwrap()).unwrap();
        common::assert_close(
            &format!("step {j} noise_pred_cfg"),
            &guided,
            &step("noise_pred_cfg"),
            1e-4,
            0.0,
        );
        let out = scheduler
            .step(&step("noise_pred_cfg"), t, &step("latents_in"))
            .unwrap()
            .prev_sample;
        common::assert_close(
            &format!("step {j} latents_out"),
            &out,
            &step("latents_out"),
            1e-4,
            0.0,
        );
    }
    // The VAE encoding of the reference + masked motion frames.
    let encoded = pipeline
        .encode(common::get(&golden, "vae_encode_input"))
        .unwrap();
    let expected = (common::get(&golden, "ref_image_latents_unscaled")
        * model::pipeline::VAE_SCALING_FACTOR)
        .unwrap();
    common::assert_close("reference latents", &encoded, &expected, 1e-4, 0.0);
}

#[test]
fn pipeline_reproduces_every_clip_and_the_final_video() {
    let cache = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let mut events = vec![];
    let loaded = load_tiny(cache.path(), &mut |e| events.push(e));
    let started: Vec<LoadStage> = events
        .iter()
        .filter_map(|e| {
            if let LoadEvent::Started(s) = e {
                Some(*s)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        started,
        [
            LoadStage::Verify,
            LoadStage::Vae,
            LoadStage::ReferenceUnet,
            LoadStage::DenoisingUnet,
            LoadStage::Heads
        ]
    );

    let mut clips = Clips::default();
    let video = loaded
        .pipeline
        .generate(&prepared_inputs(), &config.generation_params(), &mut clips)
        .unwrap();

    assert_eq!(clips.outputs.len(), 2);
    for (i, out) in clips.outputs.iter().enumerate() {
        let golden = common::case(&format!("pipeline_clip{i}"));
        let latents = common::get(&golden, "final_latents");
        // The official reader casts the reference bank to f16. Our f32 bank differs from the
        // official one by ~1e-5 (summation order), which flips about 1 % of the f16-rounded
        // values by one f16 ulp (up to 2e-3); through 3 guided steps that reaches ~1.6e-4 on the
        // latents. `steps_match_the_official_run_given_its_bank` pins the per-step maths at 1e-4.
        // Clip 1 also inherits clip 0's frame differences through its motion frames (run alone
        // from the official motion frames it stays within 5e-4: `clip1_from_the_official_motion_frames`).
        let bound = if i == 0 { 5e-4 } else { 2e-3 };
        common::assert_close(
            &format!("clip {i} final latents"),
            &out.latents,
            latents,
            bound,
            0.0,
        );
        // golden videos: (1, 3, F, H, W) in [0, 1]
        let expected = common::get(&golden, "videos").i(0).unwrap();
        common::assert_close(
            &format!("clip {i} frames"),
            &out.frames,
            &expected,
            1e-3,
            0.0,
        );
    }
    let expected = common::case("pipeline_final");
    common::assert_close(
        "final video",
        &video,
        common::get(&expected, "video"),
        1e-3,
        0.0,
    );
}

/// Clip 1 started from the official clip-1 motion frames (so clip 0's small differences do not
/// carry over): its latents stay within the same bound as clip 0's.
#[test]
fn clip1_from_the_official_motion_frames() {
    let cache = tempfile::tempdir().unwrap();
    let pipeline = load_tiny(cache.path(), &mut |_| {}).pipeline;
    let config = tiny_config();
    let params = config.generation_params();
    let conditions = pipeline.conditions(&prepared_inputs(), &params).unwrap();
    let golden = common::case("pipeline_clip1");
    // Advance the generator past clip 0's draws (mask, then noise).
    let mut generator = model::torch_rng::TorchGenerator::seed(params.seed);
    generator.rand(&[64, 64][..]).unwrap();
    generator.randn(&[1, 4, 4, 8, 8][..]).unwrap();
    // (3 images, 3, H, W): the official [ref, masked m1, masked m2]; masking again is a no-op.
    let motion = common::get(&golden, "vae_encode_input")
        .i(1..3)
        .unwrap()
        .transpose(0, 1)
        .unwrap();
    let out = pipeline
        .clip(
            &conditions,
            &params,
            1,
            Some(&motion),
            &mut generator,
            &mut model::pipeline::Silent,
        )
        .unwrap();
    common::assert_close(
        "clip 1 final latents",
        &out.latents,
        common::get(&golden, "final_latents"),
        5e-4,
        0.0,
    );
    let expected = common::get(&golden, "videos").i(0).unwrap();
    common::assert_close("clip 1 frames", &out.frames, &expected, 1e-3, 0.0);
}

/// `cfg_scale ≤ 1` turns guidance off as upstream does (`guidance_scale > 1.0`): one conditional
/// batch row, every condition's conditional half, plain reference concatenation for every frame.
/// Every scale ≤ 1 gives the same frames. (Not the guided run at a scale near 1: with guidance
/// upstream's reader tiles the two halves' reference features over the frames, so half of the
/// conditional frames read the unconditional reference; without it all read the conditional
/// one. No golden set at `guidance_scale ≤ 1` exists yet to compare with: see #13.)
#[test]
fn a_cfg_scale_of_at_most_one_runs_the_conditional_row_alone() {
    let cache = tempfile::tempdir().unwrap();
    let loaded = load_tiny(cache.path(), &mut |_| {});
    let inputs = prepared_inputs();
    let run = |cfg_scale: f64| {
        let mut params = tiny_config().generation_params();
        params.cfg_scale = cfg_scale;
        loaded
            .pipeline
            .generate(&inputs, &params, &mut model::pipeline::Silent)
            .unwrap()
    };
    let off = run(1.0);
    let values: Vec<f32> = off.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(common::max_abs_diff(&run(0.5), &off), 0.0);
    assert_eq!(common::max_abs_diff(&run(0.0), &off), 0.0);
    // Guidance, even barely above 1, is the other path.
    assert!(common::max_abs_diff(&run(1.0 + 1e-6), &off) > 1e-3);
}
