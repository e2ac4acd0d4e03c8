//! The whole face path on real photos with the tiny profile's face-analysis models: shapes the
//! pipeline takes, the policy errors, and the content-hash cache.

use crate::common;

use std::sync::OnceLock;

use model::face::embedding::FaceAnalysis;
use model::face::masks::MaskConfig;
use model::face::preflight::FacePreprocessor;
use model::face::{FaceDetector, FaceError};
use model::image_io::{ImageLimits, read_image};

/// The bundled detector and the tiny profile's face-analysis models, loaded once.
fn models() -> &'static (FaceDetector, FaceAnalysis) {
    static MODELS: OnceLock<(FaceDetector, FaceAnalysis)> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = common::tiny_weights().join("face_analysis/models");
        (
            FaceDetector::bundled().unwrap(),
            FaceAnalysis::new(&dir).unwrap(),
        )
    })
}

fn preprocessor(image_size: usize, face_expand_ratio: f64) -> FacePreprocessor<'static> {
    let (detector, analysis) = models();
    FacePreprocessor::new(
        detector,
        analysis,
        MaskConfig {
            image_size,
            face_expand_ratio,
        },
    )
}

fn photo(name: &str) -> image::RgbImage {
    let path = common::tiny_dir().join("../face").join(name);
    read_image(&path, &ImageLimits::default()).unwrap()
}

#[test]
fn astronaut_gives_every_tensor_the_pipeline_takes() {
    let p = preprocessor(64, 1.2)
        .prepare(&photo("astronaut.png"))
        .unwrap();
    assert_eq!(p.source_pixels.dims(), [3, 64, 64]);
    assert_eq!(p.masks.face_region.dims(), [3, 64, 64]);
    for (l, side) in [8usize, 4, 2, 1].into_iter().enumerate() {
        for m in [
            &p.masks.full_mask[l],
            &p.masks.face_mask[l],
            &p.masks.lip_mask[l],
        ] {
            assert_eq!(m.dims(), [1, side * side]);
        }
    }
    // The tiny stand-in ArcFace has a 16-d output (the tiny image projection's input).
    assert_eq!(p.face_emb.dims(), [16]);
    let s = &p.summary;
    assert_eq!(
        (s.width, s.height, s.faces_found, s.landmarks.len()),
        (512, 512, 1, 468)
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // The face box of the data README, (179,82)-(274,177), within a few pixels.
    let golden = [179.0, 82.0, 274.0, 177.0];
    for (a, b) in s.face_box.iter().zip(golden) {
        assert!((a - b).abs() < 4.0, "{:?}", s.face_box);
    }
}

#[test]
fn no_face_is_a_specific_error() {
    let err = preprocessor(64, 1.2)
        .prepare(&photo("coffee.png"))
        .unwrap_err();
    assert!(matches!(err, FaceError::NoFace), "{err}");
    assert!(err.to_string().contains("no face found"));
}

#[test]
fn cache_reuses_the_same_photo_and_settings_only() {
    let dir = tempfile::tempdir().unwrap();
    let image = photo("astronaut.png");
    let pre = preprocessor(64, 1.2);
    let (first, hit) = pre.prepare_cached(&image, dir.path()).unwrap();
    assert!(!hit);
    let (second, hit) = pre.prepare_cached(&image, dir.path()).unwrap();
    assert!(hit);
    assert_eq!(first.summary, second.summary);
    common::assert_close(
        "cached face region",
        &second.masks.face_region,
        &first.masks.face_region,
        0.0,
        0.0,
    );
    common::assert_close(
        "cached lip mask",
        &second.masks.lip_mask[0],
        &first.masks.lip_mask[0],
        0.0,
        0.0,
    );
    common::assert_close(
        "cached embedding",
        &second.face_emb,
        &first.face_emb,
        0.0,
        0.0,
    );
    // Another expand ratio is another entry.
    let (_, hit) = preprocessor(64, 1.5)
        .prepare_cached(&image, dir.path())
        .unwrap();
    assert!(!hit);
}
