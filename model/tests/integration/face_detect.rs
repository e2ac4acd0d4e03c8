//! BlazeFace + FaceMesh: parity with the TFLite runtime on the golden astronaut tensors, crop
//! geometry, and detection policy on real photos (fixtures in `tests/fixtures/face/`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use image::RgbImage;
use model::face::blazeface::{BlazeFace, BlazeFaceConfig, FaceDetection, letterbox};
use model::face::face_mesh::{FaceMesh, FaceMeshConfig, FaceRoi, NUM_LANDMARKS};
use model::face::{FaceDetector, FaceError, FaceWarning, PortraitFace};
use model::image_io::{ImageLimits, read_image};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/face")
        .join(name)
}

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("astronaut.safetensors"), &Device::Cpu)
        .expect("golden astronaut tensors")
}

fn photo(name: &str) -> RgbImage {
    read_image(&fixture(name), &ImageLimits::default()).expect("portrait decodes")
}

/// The bundled models (the same bytes as the fixtures the parity tests load).
fn detector() -> &'static FaceDetector {
    static DET: OnceLock<FaceDetector> = OnceLock::new();
    DET.get_or_init(|| FaceDetector::bundled().expect("bundled face models load"))
}

fn blazeface() -> &'static BlazeFace {
    static NET: OnceLock<BlazeFace> = OnceLock::new();
    NET.get_or_init(|| {
        let bytes =
            std::fs::read(fixture("blazeface_short_range.safetensors")).expect("detector weights");
        BlazeFace::from_bytes(&BlazeFaceConfig::short_range(), &bytes, &Device::Cpu)
            .expect("BlazeFace loads")
    })
}

fn face_mesh() -> &'static FaceMesh {
    static NET: OnceLock<FaceMesh> = OnceLock::new();
    NET.get_or_init(|| {
        let bytes = std::fs::read(fixture("face_mesh_468.safetensors")).expect("mesh weights");
        FaceMesh::from_bytes(&FaceMeshConfig::v1(), &bytes, &Device::Cpu).expect("FaceMesh loads")
    })
}

/// Largest absolute difference, asserted against `atol`; returns it for the log.
fn max_abs_diff(what: &str, actual: &Tensor, expected: &Tensor, atol: f32) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let a = actual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let e = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (mut worst, mut at) = (0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let d = (x - y).abs();
        assert!(d.is_finite(), "{what}: non-finite at {i}");
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    println!(
        "{what}: max |diff| = {worst:.3e} at {at} (actual {}, expected {})",
        a[at], e[at]
    );
    assert!(
        worst <= atol,
        "{what}: max |diff| {worst} at {at} exceeds {atol}"
    );
    worst
}

#[test]
fn blazeface_matches_tflite_on_the_stored_input() {
    let g = golden();
    let (regressors, logits) = blazeface().forward(&g["detector.input"]).unwrap();
    max_abs_diff(
        "detector.regressors",
        &regressors,
        &g["detector.regressors"],
        1e-4,
    );
    max_abs_diff("detector.logits", &logits, &g["detector.logits"], 1e-4);
}

#[test]
fn face_mesh_matches_tflite_on_the_stored_input() {
    let g = golden();
    let (landmarks, presence) = face_mesh().forward(&g["mesh.input"]).unwrap();
    max_abs_diff("mesh.landmarks", &landmarks, &g["mesh.landmarks"], 1e-4);
    max_abs_diff(
        "mesh.presence_logit",
        &presence,
        &g["mesh.presence_logit"],
        1e-4,
    );
}

/// Asserts every box edge is within `tol` px of the golden box and returns the worst edge error.
fn assert_box_near(what: &str, actual: [f32; 4], golden: [f32; 4], tol: f32) -> f32 {
    let worst = actual
        .iter()
        .zip(golden)
        .map(|(a, g)| (a - g).abs())
        .fold(0f32, f32::max);
    println!("{what}: box {actual:?} vs golden {golden:?}, worst edge {worst:.2} px");
    assert!(
        worst <= tol,
        "{what}: box {actual:?} is {worst} px from {golden:?}"
    );
    worst
}

/// Mean and max distance (px) between two landmark sets in the image plane.
fn landmark_distance(a: &[[f32; 3]], b: &[[f32; 2]]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d: Vec<f32> = a
        .iter()
        .zip(b)
        .map(|(p, q)| (p[0] - q[0]).hypot(p[1] - q[1]))
        .collect();
    (
        d.iter().sum::<f32>() / d.len() as f32,
        d.iter().copied().fold(0f32, f32::max),
    )
}

fn rgb_from_tensor(t: &Tensor, w: u32, h: u32) -> RgbImage {
    let v: Vec<u8> = (t.flatten_all().unwrap() * 255.0)
        .unwrap()
        .round()
        .unwrap()
        .clamp(0f32, 255f32)
        .unwrap()
        .to_dtype(candle_core::DType::U8)
        .unwrap()
        .to_vec1()
        .unwrap();
    RgbImage::from_raw(w, h, v).unwrap()
}

/// The highest-scoring anchor before suppression (what the README's golden boxes are).
fn best_anchor(image: &RgbImage) -> FaceDetection {
    let (xs, geometry) = letterbox(image, 128, &Device::Cpu).unwrap();
    let (regressors, logits) = blazeface().forward(&xs).unwrap();
    let raw = blazeface().decode(&regressors, &logits, &geometry).unwrap();
    raw.into_iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .expect("a face")
}

#[test]
fn best_anchors_match_the_readme_boxes() {
    for (name, golden, score) in [
        ("astronaut.png", [179.0, 82.0, 274.0, 177.0], 0.921),
        ("grace_hopper.jpg", [170.0, 147.0, 365.0, 342.0], 0.949),
    ] {
        let best = best_anchor(&photo(name));
        assert_box_near(name, best.box_px, golden, 3.0);
        assert!(
            (best.score - score).abs() < 0.02,
            "{name}: score {}",
            best.score
        );
    }
}

#[test]
fn letterbox_matches_the_stored_detector_input() {
    let g = golden();
    let (xs, geometry) = letterbox(&photo("astronaut.png"), 128, &Device::Cpu).unwrap();
    assert_eq!(
        (geometry.scale, geometry.offset_x, geometry.offset_y),
        (0.25, 0.0, 0.0)
    );
    let d = (xs - &g["detector.input"])
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap();
    let mean = d.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let max = d.max(0).unwrap().to_scalar::<f32>().unwrap();
    println!(
        "letterbox vs PIL: mean |diff| {mean:.2e}, max {max:.2e} (one 8-bit level = {:.2e})",
        1.0 / 127.5
    );
    // image-rs and PIL both resample with a scaled triangle filter; their rounding differs by at
    // most one 8-bit level on a few pixels
    assert!(max <= 1.0 / 127.5 + 1e-5, "max {max}");
    assert!(mean < 2e-3, "mean {mean}");
}

#[test]
fn stored_outputs_decode_to_the_readme_box() {
    let g = golden();
    let geometry = letterbox(&photo("astronaut.png"), 128, &Device::Cpu)
        .unwrap()
        .1;
    let raw = blazeface()
        .decode(&g["detector.regressors"], &g["detector.logits"], &geometry)
        .unwrap();
    let best = raw
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .unwrap();
    // the README lists the best anchor's own box, rounded to whole pixels
    assert!((best.score - 0.921).abs() < 5e-4, "score {}", best.score);
    assert_box_near("best anchor", best.box_px, [179.0, 82.0, 274.0, 177.0], 0.5);
    assert!(raw.iter().all(|d| d.score >= 0.5));
}

#[test]
fn astronaut_has_one_frontal_face_with_a_full_mesh() {
    let face = detector().portrait_face(&photo("astronaut.png")).unwrap();
    // weighted NMS averages 8 overlapping anchors, which moves the box ~2 px from the best
    // anchor's box that the README lists
    assert_box_near(
        "astronaut",
        face.detection.box_px,
        [179.0, 82.0, 274.0, 177.0],
        3.0,
    );
    assert!(
        (face.detection.score - 0.921).abs() < 0.02,
        "score {}",
        face.detection.score
    );
    assert_eq!(face.faces_found, 1);
    assert_eq!(face.mesh.landmarks.len(), NUM_LANDMARKS);
    assert!(face.mesh.presence > 0.99, "presence {}", face.mesh.presence);
    assert!(face.yaw_degrees.abs() < 10.0, "yaw {}", face.yaw_degrees);
    assert!(face.warnings.is_empty(), "{:?}", face.warnings);
    println!(
        "astronaut: score {:.3}, presence {:.4}, yaw {:.1}°, roll {:.1}°",
        face.detection.score,
        face.mesh.presence,
        face.yaw_degrees,
        face.mesh.roi.rotation.to_degrees()
    );
}

#[test]
fn astronaut_mesh_agrees_with_the_golden_mesh_in_image_pixels() {
    let g = golden();
    let image = photo("astronaut.png");
    // the golden crop: PIL crop of the best anchor's box, 1.5× square, corners truncated to int
    let geometry = letterbox(&image, 128, &Device::Cpu).unwrap().1;
    let raw = blazeface()
        .decode(&g["detector.regressors"], &g["detector.logits"], &geometry)
        .unwrap();
    let best = raw
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .unwrap();
    let [x0, y0, x1, y1] = best.box_px;
    let (cx, cy, half) = (
        (x0 + x1) / 2.0,
        (y0 + y1) / 2.0,
        0.75 * (x1 - x0).max(y1 - y0),
    );
    let (left, top, right) = (
        (cx - half).trunc(),
        (cy - half).trunc(),
        (cx + half).trunc(),
    );
    let k = (right - left) / 192.0;
    let flat = g["mesh.landmarks"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let golden_px: Vec<[f32; 2]> = flat
        .chunks_exact(3)
        .map(|p| [left + p[0] * k, top + p[1] * k])
        .collect();

    let face = detector().portrait_face(&image).unwrap();
    let upright = face_mesh()
        .mesh_roi(&image, face.mesh.roi.upright())
        .unwrap();
    let (mean_up, max_up) = landmark_distance(&upright.landmarks, &golden_px);
    let (mean_rot, max_rot) = landmark_distance(&face.mesh.landmarks, &golden_px);
    println!(
        "vs golden mesh: upright crop mean {mean_up:.2} max {max_up:.2} px; rotated crop mean {mean_rot:.2} max {max_rot:.2} px"
    );
    // our crop comes from the NMS box (~2 px off the best anchor's) and samples bilinearly
    // instead of PIL's resize of an integer crop
    assert!(
        mean_up < 0.75 && max_up < 1.5,
        "upright: mean {mean_up}, max {max_up}"
    );
    // the eye-line rotation (9°) changes what the network sees a little more
    assert!(
        mean_rot < 1.5 && max_rot < 3.5,
        "rotated: mean {mean_rot}, max {max_rot}"
    );
}

#[test]
fn rotated_portraits_give_the_same_landmarks_after_mapping_back() {
    let image = photo("astronaut.png");
    let reference = detector().portrait_face(&image).unwrap();
    for theta in [0.3f32, -0.5] {
        // the whole photo turned by -theta about its centre (a similarity, tested in face_mesh.rs)
        let turn = FaceRoi {
            centre: [256.0, 256.0],
            size: 512.0,
            rotation: theta,
        };
        let turned = rgb_from_tensor(&turn.crop(&image, 512, &Device::Cpu).unwrap(), 512, 512);
        let face = detector().portrait_face(&turned).unwrap();
        let roll_error = face.mesh.roi.rotation - (reference.mesh.roi.rotation - theta);
        let back: Vec<[f32; 3]> = face
            .mesh
            .landmarks
            .iter()
            .map(|p| {
                let [x, y] = turn.crop_to_image([p[0], p[1]], 512);
                [x, y, p[2]]
            })
            .collect();
        let ref_px: Vec<[f32; 2]> = reference
            .mesh
            .landmarks
            .iter()
            .map(|p| [p[0], p[1]])
            .collect();
        let (mean, max) = landmark_distance(&back, &ref_px);
        println!(
            "turned {theta:+.1} rad: roll error {roll_error:+.3} rad, landmarks mean {mean:.2} max {max:.2} px"
        );
        // the crop follows the eye line (BlazeFace's eye keypoints are coarse, ±0.15 rad) ...
        assert!(
            roll_error.abs() < 0.2,
            "theta {theta}: roll error {roll_error}"
        );
        // ... so the mesh lands on the same face points
        assert!(
            mean < 1.5 && max < 4.0,
            "theta {theta}: mean {mean}, max {max}"
        );
    }
}

#[test]
fn grace_hopper_face_matches_the_readme_box() {
    let face = detector()
        .portrait_face(&photo("grace_hopper.jpg"))
        .unwrap();
    assert_box_near(
        "grace_hopper",
        face.detection.box_px,
        [170.0, 147.0, 365.0, 342.0],
        3.0,
    );
    assert!(
        (face.detection.score - 0.949).abs() < 0.02,
        "score {}",
        face.detection.score
    );
    assert_eq!(face.mesh.landmarks.len(), NUM_LANDMARKS);
    assert!(face.mesh.presence > 0.99, "presence {}", face.mesh.presence);
    assert!(face.warnings.is_empty(), "{:?}", face.warnings);
    // every landmark inside the (1.5×) crop around the face
    let [x0, y0, x1, y1] = face.detection.box_px;
    let pad = 0.25 * (x1 - x0);
    assert!(
        face.mesh
            .landmarks
            .iter()
            .all(|p| p[0] > x0 - pad && p[0] < x1 + pad && p[1] > y0 - pad && p[1] < y1 + pad)
    );
}

#[test]
fn coffee_and_chelsea_have_no_face() {
    for name in ["coffee.png", "chelsea.png"] {
        let image = photo(name);
        assert!(
            detector().detect_faces(&image).unwrap().is_empty(),
            "{name}"
        );
        match detector().portrait_face(&image) {
            Err(e @ FaceError::NoFace) => {
                assert!(e.to_string().starts_with("no face found"), "{e}")
            }
            other => panic!("{name}: expected NoFace, got {other:?}"),
        }
    }
}

#[test]
fn camera_gives_a_turned_face_with_a_yaw_warning() {
    // camera.png: the detector finds the face (score 0.78, below the ≥0.92 of the frontal
    // portraits), the mesh is confident (presence ≈ 0.997 on our eye-aligned crop; the README's
    // logit 1.29 came from an unrotated PIL crop), and the head is turned about 40°: the policy
    // answers with a face plus a StrongYaw warning.
    let image = photo("camera.png");
    let golden_box = [174.0, 120.0, 267.0, 213.0];
    // the README lists the best anchor's box; weighted NMS then averages the overlapping
    // anchors, which moves this uncertain face's box up to ~4.6 px (IoU stays high)
    let best = best_anchor(&image);
    assert_box_near("camera best anchor", best.box_px, golden_box, 3.0);
    let face = detector().portrait_face(&image).unwrap();
    let golden = FaceDetection {
        box_px: golden_box,
        ..best.clone()
    };
    let iou = face.detection.iou(&golden);
    println!(
        "camera: NMS box {:?}, IoU with the README box {iou:.3}",
        face.detection.box_px
    );
    assert!(iou > 0.85, "IoU {iou}");
    assert!(
        (face.detection.score - 0.782).abs() < 0.02,
        "score {}",
        face.detection.score
    );
    assert_eq!(face.mesh.landmarks.len(), NUM_LANDMARKS);
    println!(
        "camera: presence {:.4}, yaw {:.1}°, warnings {:?}",
        face.mesh.presence, face.yaw_degrees, face.warnings
    );
    assert_eq!(face.warnings.len(), 1, "{:?}", face.warnings);
    assert!(
        matches!(face.warnings[0], FaceWarning::StrongYaw { degrees } if degrees > 30.0),
        "{:?}",
        face.warnings
    );
    assert!(
        face.warnings[0].to_string().contains("turned about 40°"),
        "{}",
        face.warnings[0]
    );
}

#[test]
fn yaw_changes_sign_with_a_mirrored_photo() {
    let image = photo("camera.png");
    let yaw = detector().portrait_face(&image).unwrap().yaw_degrees;
    let mirrored = detector()
        .portrait_face(&image::imageops::flip_horizontal(&image))
        .unwrap()
        .yaw_degrees;
    println!("camera yaw {yaw:.1}°, mirrored {mirrored:.1}°");
    assert!(
        yaw > 30.0 && mirrored < -30.0,
        "yaw {yaw}, mirrored {mirrored}"
    );
    assert!(
        (yaw + mirrored).abs() < 5.0,
        "mirror should negate yaw: {yaw} vs {mirrored}"
    );
}

#[test]
fn a_small_face_is_flagged() {
    // astronaut at 160×160: the network input is the same as for the full photo (both letterbox
    // to 128), the face box is ~30 px
    let small = image::imageops::resize(
        &photo("astronaut.png"),
        160,
        160,
        image::imageops::FilterType::Triangle,
    );
    let face: PortraitFace = detector().portrait_face(&small).unwrap();
    let side = face.detection.width().max(face.detection.height());
    assert!((side - 95.0 * 160.0 / 512.0).abs() < 3.0, "side {side}");
    assert_eq!(
        face.warnings,
        vec![FaceWarning::SmallFace { side_px: side }]
    );
}

#[test]
fn several_faces_use_the_largest_and_warn() {
    // the astronaut's head twice: full size on the left, 3/4 size on the right
    let image = photo("astronaut.png");
    let head = image::imageops::crop_imm(&image, 100, 0, 256, 256).to_image();
    let smaller = image::imageops::resize(&head, 192, 192, image::imageops::FilterType::Triangle);
    let mut canvas = RgbImage::new(512, 256);
    image::imageops::replace(&mut canvas, &head, 0, 0);
    image::imageops::replace(&mut canvas, &smaller, 288, 32);
    let faces = detector().detect_faces(&canvas).unwrap();
    assert_eq!(faces.len(), 2, "{faces:?}");
    let face = detector().portrait_face(&canvas).unwrap();
    assert!(
        face.detection.box_px[2] < 256.0,
        "the larger, left face: {:?}",
        face.detection.box_px
    );
    assert_eq!(face.faces_found, 2);
    assert!(
        face.warnings
            .contains(&FaceWarning::MultipleFaces { count: 2 }),
        "{:?}",
        face.warnings
    );
    assert!(face.warnings[0].to_string().starts_with("2 faces found"));
}

#[test]
fn detections_carry_six_keypoints_inside_the_face() {
    let faces = detector().detect_faces(&photo("astronaut.png")).unwrap();
    let f: &FaceDetection = &faces[0];
    let [x0, y0, x1, y1] = f.box_px;
    // eyes, nose and mouth inside the box; the right eye left of the left eye (image view)
    for kp in &f.keypoints_px[..4] {
        assert!(
            kp[0] > x0 && kp[0] < x1 && kp[1] > y0 && kp[1] < y1,
            "{kp:?} outside {:?}",
            f.box_px
        );
    }
    assert!(f.keypoints_px[0][0] < f.keypoints_px[1][0]);
    assert!(
        f.keypoints_px[3][1] > f.keypoints_px[2][1],
        "mouth below nose"
    );
}
