//! Parity of the small conditioning heads (image projection, audio projection, face locator)
//! with the official tiny models, built from the arguments the loader reads off `net.pth`.

use crate::common::{self, FixtureSet, for_each_set};

use candle_core::{Module, Tensor};
use model::audio_proj::AudioProjModel;
use model::face_locator::FaceLocator;
use model::image_proj::ImageProjModel;

#[test]
fn image_proj_matches_fixture() {
    for_each_set(|set| {
        let case = set.case("image_proj");
        let heads = set.model_config().heads;
        let model = ImageProjModel::new(&heads.image_proj, set.net_vb().pp("imageproj"))
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
    });
}

fn audio_proj(set: &FixtureSet) -> AudioProjModel {
    let heads = set.model_config().heads;
    AudioProjModel::new(&heads.audio_proj, set.net_vb().pp("audioproj")).expect("loading")
}

#[test]
fn audio_proj_matches_fixture() {
    for_each_set(|set| {
        let case = set.case("audio_proj");
        let tokens = audio_proj(set)
            .forward(common::get(&case, "audio_emb_clip0"))
            .expect("forward");
        common::assert_close(
            "audio_proj tokens",
            &tokens,
            common::get(&case, "audio_tokens_clip0"),
            1e-5,
            0.0,
        );
    });
}

#[test]
fn audio_proj_rejects_wrong_window() {
    for_each_set(|set| {
        let case = set.case("audio_proj");
        let windows = common::get(&case, "audio_emb_clip0");
        // One frame fewer in each window than the model was built for.
        let short = windows.narrow(2, 1, windows.dim(2).unwrap() - 1).unwrap();
        assert!(audio_proj(set).forward(&short).is_err());
        let _: &Tensor = windows;
    });
}

#[test]
fn face_locator_matches_fixture() {
    for_each_set(|set| {
        let case = set.case("face_locator");
        let heads = set.model_config().heads;
        let model = FaceLocator::new(&heads.face_locator, set.net_vb().pp("face_locator"))
            .expect("loading");
        let output = model.forward(common::get(&case, "input")).expect("forward");
        common::assert_close(
            "face_locator output",
            &output,
            common::get(&case, "output"),
            1e-5,
            0.0,
        );
    });
}
