//! The whole long-video loop against the official pipeline run on the tiny weights:
//! `pipeline_clip{0,1}.safetensors` (per-clip latents and frames, seed 42 noise included) and
//! `pipeline_final.safetensors` (both clips, trimmed to the audio length).
//!
//! This binary installs the mapped-weights allocator, as the studio and the CLI do, so the model
//! here runs on tensors that share the `net.pth` cache's pages.

use crate::common::{self, FixtureSet, for_each_set};
use crate::parity_denoise_unet::mask_levels;
use crate::parity_torch_rng::pipeline_clips;

use candle_core::{DType, IndexOp, Tensor};
use model::loader::{self, LoadEvent, LoadStage};
use model::mutual_self_attention::ReaderBank;
use model::pipeline::{AudioConditioning, ClipOutput, Guidance, Observer, PreparedInputs};
use model::unet_3d::{AudioMasks, UNet3DConditions};

fn prepared_inputs(set: &FixtureSet) -> PreparedInputs {
    let inputs = set.case("inputs");
    let audio = set.case("wav2vec");
    let levels = |kind: &str| -> [Tensor; 4] {
        mask_levels(&inputs, kind)
            .try_into()
            .expect("four mask levels")
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
        full_mask: levels("full"),
        face_mask: levels("face"),
        lip_mask: levels("lip"),
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

fn load(
    set: &FixtureSet,
    cache: &std::path::Path,
    on_event: &mut dyn FnMut(LoadEvent),
) -> loader::LoadedModel {
    let loaded = set.load_model(cache, on_event);
    assert!(loaded.weights_mapped, "the net.pth cache is mapped");
    loaded
}

/// Each DDIM step of clip 0 through the pipeline's own step (UNet on the guidance rows, CFG
/// combination, scheduler), fed the official step input and the official (f16) bank: raw UNet
/// output, combined prediction and next latents all within 1e-4.
#[test]
fn steps_match_the_official_run_given_its_bank() {
    for_each_set(steps_match);
}

fn steps_match(set: &FixtureSet) {
    let cache = tempfile::tempdir().unwrap();
    let pipeline = load(set, cache.path(), &mut |_| {}).pipeline;
    let args = set.case("denoise_unet_clip0_step0");
    let golden = set.case("pipeline_clip0");
    let ref_case = set.case("ref_unet_clip0");
    let params = set.inference().generation_params();
    let guidance = Guidance::new(params.cfg_scale);

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
    let reference = ReaderBank::new(
        &bank,
        &pipeline.net.denoising_unet.reader_blocks(),
        guidance.enabled(),
    )
    .unwrap();
    let conditions = UNet3DConditions {
        encoder_hidden_states: common::get(&args, "encoder_hidden_states").clone(),
        audio_embedding: common::get(&args, "audio_embedding").clone(),
        mask_cond_fea: Some(common::get(&args, "mask_cond_fea").clone()),
        masks: AudioMasks {
            full: mask_levels(&args, "full"),
            face: mask_levels(&args, "face"),
            lip: mask_levels(&args, "lip"),
        },
        motion_scale: params.motion_scale,
        reference,
    };
    let scheduler = pipeline.scheduler(params.steps).unwrap();
    for (j, &t) in scheduler.timesteps().iter().enumerate() {
        let step = |name: &str| common::get(&golden, &format!("step{j}.{name}")).clone();
        let expected_t = step("timestep")
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()[0];
        assert_eq!(t as i64, expected_t);
        common::assert_close(
            &format!("step {j} model input"),
            &guidance.model_input(&step("latents_in")).unwrap(),
            &step("latent_model_input"),
            0.0,
            0.0,
        );
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
        common::assert_close(
            &format!("step {j} noise_pred_cfg"),
            &guidance.combine(&step("noise_pred_raw")).unwrap(),
            &step("noise_pred_cfg"),
            1e-5,
            0.0,
        );
        let out = pipeline
            .denoise_step(&step("latents_in"), t, &conditions, guidance, &scheduler)
            .unwrap();
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
    for_each_set(reproduces_every_clip);
}

fn reproduces_every_clip(set: &FixtureSet) {
    let cache = tempfile::tempdir().unwrap();
    let config = set.inference();
    let mut events = vec![];
    let loaded = load(set, cache.path(), &mut |e| events.push(e));
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
        .generate(
            &prepared_inputs(set),
            &config.generation_params(),
            &mut clips,
        )
        .unwrap();

    assert_eq!(clips.outputs.len(), pipeline_clips(set));
    for (i, out) in clips.outputs.iter().enumerate() {
        let golden = set.case(&format!("pipeline_clip{i}"));
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
    let expected = set.case("pipeline_final");
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
    for_each_set(clip1_from_official_motion);
}

fn clip1_from_official_motion(set: &FixtureSet) {
    let cache = tempfile::tempdir().unwrap();
    let pipeline = load(set, cache.path(), &mut |_| {}).pipeline;
    let params = set.inference().generation_params();
    let conditions = pipeline.conditions(&prepared_inputs(set), &params).unwrap();
    let clip0 = set.case("pipeline_clip0");
    let golden = set.case("pipeline_clip1");
    // Advance the generator past clip 0's draws (mask, then noise), shaped as recorded.
    let mut generator = model::torch_rng::TorchGenerator::seed(params.seed);
    if params.mask_rate.is_some() {
        generator
            .rand(common::get(&clip0, "motion_rand_mask").shape())
            .unwrap();
    }
    generator
        .randn(common::get(&clip0, "initial_latents").shape())
        .unwrap();
    // (1 + M images, 3, H, W): the official [ref, masked motion…]; masking again is a no-op.
    let motion = common::get(&golden, "vae_encode_input")
        .i(1..1 + params.motion_frames)
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
/// one.) A set made at `cfg_scale` 1.0 checks the unguided frames against the official code in
/// `pipeline_reproduces_every_clip_and_the_final_video`.
#[test]
fn a_cfg_scale_of_at_most_one_runs_the_conditional_row_alone() {
    let set = FixtureSet::public();
    let cache = tempfile::tempdir().unwrap();
    let loaded = load(&set, cache.path(), &mut |_| {});
    let inputs = prepared_inputs(&set);
    let run = |cfg_scale: f64| {
        let mut params = set.inference().generation_params();
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
