//! The whole long-video loop against the official pipeline run on the tiny weights:
//! `pipeline_clip{0,1}.safetensors` (per-clip latents and frames, seed 42 noise included) and
//! `pipeline_final.safetensors` (both clips, trimmed to the audio length).

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use model::config::{InferenceConfig, WeightsLayout};
use model::loader::{self, LoadEvent, LoadOptions, LoadStage};
use model::pipeline::{ClipOutput, Observer, PreparedInputs};

fn tiny_config() -> InferenceConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/inference/long_tiny.yaml");
    InferenceConfig::from_yaml_file(&path).unwrap()
}

fn prepared_inputs() -> PreparedInputs {
    let inputs = common::case("inputs");
    let audio = common::case("wav2vec");
    let levels = |name: &str| -> [Tensor; 4] {
        std::array::from_fn(|l| common::get(&inputs, &format!("{name}.{l}")).clone())
    };
    let audio_length = common::get(&audio, "audio_length").to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap()[0];
    PreparedInputs {
        source_pixels: common::get(&inputs, "source_image_pixels").clone(),
        face_region: common::get(&inputs, "source_image_face_region").clone(),
        face_emb: common::get(&inputs, "face_emb").clone(),
        full_mask: levels("full_mask"),
        face_mask: levels("face_mask"),
        lip_mask: levels("lip_mask"),
        audio_windows: common::get(&audio, "audio_emb_windowed").clone(),
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

#[test]
fn pipeline_reproduces_every_clip_and_the_final_video() {
    let cache = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let options = LoadOptions { dtype: DType::F32, device: Device::Cpu, cache_dir: cache.path().to_owned() };
    let mut events = vec![];
    let loaded = loader::load(&WeightsLayout::new(common::tiny_weights()), &config, &options, &mut |e| {
        events.push(e)
    })
    .unwrap();
    let started: Vec<LoadStage> = events
        .iter()
        .filter_map(|e| if let LoadEvent::Started(s) = e { Some(*s) } else { None })
        .collect();
    assert_eq!(
        started,
        [LoadStage::Verify, LoadStage::Vae, LoadStage::ReferenceUnet, LoadStage::DenoisingUnet, LoadStage::Heads]
    );

    let mut clips = Clips::default();
    let video = loaded.pipeline.generate(&prepared_inputs(), &config.generation_params(), &mut clips).unwrap();

    assert_eq!(clips.outputs.len(), 2);
    for (i, out) in clips.outputs.iter().enumerate() {
        let golden = common::case(&format!("pipeline_clip{i}"));
        let latents = common::get(&golden, "final_latents");
        // The official reader casts the reference bank to f16. Our f32 bank differs from the
        // official one by ~1e-5 (summation order), which flips about 1 % of the f16-rounded
        // values by one f16 ulp (up to 2e-3); through 3 guided steps that reaches ~1.6e-4 on the
        // latents. `steps_match_the_official_run_given_its_bank` pins the per-step maths at 1e-4.
        common::assert_close(&format!("clip {i} final latents"), &out.latents, latents, 5e-4, 0.0);
        // golden videos: (1, 3, F, H, W) in [0, 1]
        let expected = common::get(&golden, "videos").i(0).unwrap();
        common::assert_close(&format!("clip {i} frames"), &out.frames, &expected, 1e-3, 0.0);
    }
    let expected = common::case("pipeline_final");
    common::assert_close("final video", &video, common::get(&expected, "video"), 1e-3, 0.0);
}
