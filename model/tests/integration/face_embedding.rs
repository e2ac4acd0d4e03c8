//! Identity embedding (SCRFD → norm_crop → ArcFace) against InsightFace 0.7.3 run with
//! onnxruntime, NumPy, OpenCV 4.9 and scikit-image on the tiny stand-in graphs
//! (`model/tools/make_tiny_insightface.py`, fixtures in `tests/fixtures/face_analysis/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use model::face::FaceError;
use model::face::embedding::arcface::ArcFace;
use model::face::embedding::face_align::{estimate_norm, norm_crop};
use model::face::embedding::scrfd::{self, DetectedFace, ScrfdOutputs};
use model::face::embedding::{FaceAnalysis, largest};
use safetensors::{Dtype, SafeTensors};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face_analysis")
}

fn portrait(name: &str) -> RgbImage {
    image::open(fixtures().join("portraits").join(format!("{name}.png")))
        .expect("portrait fixture")
        .to_rgb8()
}

fn analysis() -> FaceAnalysis {
    FaceAnalysis::new(&fixtures().join("models")).expect("tiny face models")
}

/// Every reference tensor, as f64 values with its shape.
struct Reference(HashMap<String, (Vec<usize>, Vec<f64>)>);

impl Reference {
    fn load() -> Self {
        let bytes = std::fs::read(fixtures().join("reference.safetensors")).expect("reference");
        let st = SafeTensors::deserialize(&bytes).expect("safetensors");
        let mut map = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::U8 => data.iter().map(|&v| v as f64).collect(),
                other => panic!("unexpected dtype {other:?}"),
            };
            map.insert(name.to_string(), (view.shape().to_vec(), values));
        }
        Self(map)
    }

    fn get(&self, name: &str) -> &[f64] {
        &self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"))
            .1
    }

    fn faces(&self, key: &str) -> Vec<DetectedFace> {
        let det = self.get(&format!("{key}.det"));
        let kps = self.get(&format!("{key}.kps"));
        (0..det.len() / 5)
            .map(|i| DetectedFace {
                bbox: std::array::from_fn(|j| det[i * 5 + j] as f32),
                score: det[i * 5 + 4] as f32,
                kps: std::array::from_fn(|p| {
                    [kps[i * 10 + 2 * p] as f32, kps[i * 10 + 2 * p + 1] as f32]
                }),
            })
            .collect()
    }
}

fn max_abs_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Largest box/keypoint coordinate difference between two face lists of equal length.
fn face_diff(got: &[DetectedFace], want: &[DetectedFace]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "number of faces after NMS");
    let mut coords = 0f64;
    let mut scores = 0f64;
    for (g, w) in got.iter().zip(want) {
        let gc = g.bbox.iter().chain(g.kps.iter().flatten());
        let wc = w.bbox.iter().chain(w.kps.iter().flatten());
        coords = coords.max(max_abs_diff(gc.map(|&v| v as f64), wc.map(|&v| v as f64)));
        scores = scores.max((g.score - w.score).abs() as f64);
    }
    (coords, scores)
}

#[test]
fn letterbox_is_bit_exact_to_cv2_resize() {
    let reference = Reference::load();
    let fa = analysis();
    for key in ["astronaut", "grace_hopper", "camera"] {
        let lb = fa.detector.letterbox(&portrait(key));
        let (w, h) = (lb.image.width() as usize, lb.image.height() as usize);
        assert_eq!((w, h), (640, 640));
        let mut rows = vec![0f64; h * 3];
        let mut cols = vec![0f64; w * 3];
        for (x, y, px) in lb.image.enumerate_pixels() {
            for c in 0..3 {
                rows[y as usize * 3 + c] += px.0[c] as f64;
                cols[x as usize * 3 + c] += px.0[c] as f64;
            }
        }
        let want_rows = reference.get(&format!("{key}.letterbox_row_sums"));
        let want_cols = reference.get(&format!("{key}.letterbox_col_sums"));
        let bad_rows = rows.iter().zip(want_rows).filter(|(a, b)| a != b).count();
        let bad_cols = cols.iter().zip(want_cols).filter(|(a, b)| a != b).count();
        println!(
            "{key}: det_scale {} rows off {bad_rows} cols off {bad_cols}",
            lb.det_scale
        );
        assert_eq!(
            (bad_rows, bad_cols),
            (0, 0),
            "{key}: letterbox differs from cv2.resize"
        );
    }
}

#[test]
fn detector_outputs_match_onnxruntime() {
    let reference = Reference::load();
    let fa = analysis();
    let lb = fa.detector.letterbox(&portrait("astronaut"));
    let out = fa.detector.forward(&lb.image).unwrap();
    let got = out.scores.iter().chain(&out.boxes).chain(&out.kps);
    let mut worst = 0f64;
    for (i, values) in got.enumerate() {
        let want = reference.get(&format!("astronaut.net.{i}"));
        assert_eq!(values.len(), want.len(), "output {i} length");
        let d = max_abs_diff(values.iter().map(|&v| v as f64), want.iter().copied());
        println!(
            "output {i}: {} values, max |tract - onnxruntime| = {d:.2e}",
            values.len()
        );
        worst = worst.max(d);
    }
    assert!(worst <= 1e-4, "raw SCRFD outputs differ by {worst:.2e}");
}

#[test]
fn decode_and_nms_match_insightface() {
    let reference = Reference::load();
    // Decode the stored onnxruntime outputs: isolates the decode/NMS from the network.
    let net: Vec<Vec<f32>> = (0..9)
        .map(|i| {
            let v = reference.get(&format!("astronaut.net.{i}"));
            v.iter().map(|&x| x as f32).collect()
        })
        .collect();
    let outputs = ScrfdOutputs {
        scores: [net[0].clone(), net[1].clone(), net[2].clone()],
        boxes: [net[3].clone(), net[4].clone(), net[5].clone()],
        kps: [net[6].clone(), net[7].clone(), net[8].clone()],
    };
    // 512x512 letterboxed to 640x640: det_scale = 640 / 512.
    let faces = scrfd::decode(&outputs, (640, 640), 1.25, 0.5, 0.4);
    let want = reference.faces("astronaut");
    let (coords, scores) = face_diff(&faces, &want);
    println!(
        "astronaut (stored outputs): {} faces, max coordinate diff {coords:.2e} px, score {scores:.2e}",
        faces.len()
    );
    assert!(coords <= 1e-3 && scores <= 1e-7);

    // The whole detector, including a non-square letterbox (546x640, det_scale 640/600).
    let fa = analysis();
    for key in ["astronaut", "grace_hopper"] {
        let faces = fa.detect(&portrait(key)).unwrap();
        let (coords, scores) = face_diff(&faces, &reference.faces(key));
        println!(
            "{key} (tract): {} faces, max coordinate diff {coords:.2e} px, score {scores:.2e}",
            faces.len()
        );
        assert!(
            coords <= 1e-3,
            "{key}: boxes/keypoints differ by {coords:.2e} px"
        );
        assert!(scores <= 1e-5, "{key}: scores differ by {scores:.2e}");
    }
}

#[test]
fn norm_crop_is_bit_exact_to_cv2_warp_affine() {
    let reference = Reference::load();
    for key in ["astronaut", "grace_hopper"] {
        let faces = reference.faces(key);
        let best = reference.get(&format!("{key}.best"))[0] as usize;
        assert_eq!(
            largest(&faces),
            Some(&faces[best]),
            "{key}: largest-face choice"
        );
        let kps = faces[best].kps;
        let m = estimate_norm(&kps, 112).unwrap();
        let want_m = reference.get(&format!("{key}.norm_matrix"));
        let dm = max_abs_diff(m.iter().flatten().copied(), want_m.iter().copied());
        let want_m32 = reference.get(&format!("{key}.norm_matrix_f32_fit"));
        let dm32 = max_abs_diff(m.iter().flatten().copied(), want_m32.iter().copied());
        let (aligned, _) = norm_crop(&portrait(key), &kps, 112).unwrap();
        let want = reference.get(&format!("{key}.aligned"));
        let levels = max_abs_diff(
            aligned.as_raw().iter().map(|&v| v as f64),
            want.iter().copied(),
        );
        let off = aligned
            .as_raw()
            .iter()
            .zip(want)
            .filter(|(a, b)| **a as f64 != **b)
            .count();
        println!(
            "{key}: |M - skimage(f64)| {dm:.1e}, |M - skimage(f32 keypoints)| {dm32:.1e}, \
             warp: {off} values off, max {levels} levels"
        );
        assert!(
            dm <= 1e-9,
            "{key}: similarity transform differs by {dm:.2e}"
        );
        // Tolerance: bit-exact (0 grey levels).
        assert_eq!(off, 0, "{key}: aligned crop differs from cv2.warpAffine");
    }
}

#[test]
fn embedding_matches_reference() {
    let reference = Reference::load();
    let fa = analysis();
    assert_eq!(
        (fa.recogniser.input_mean, fa.recogniser.input_std),
        (127.5, 127.5)
    );
    assert_eq!(fa.recogniser.embedding_dim(), 16);
    for key in ["astronaut", "grace_hopper"] {
        let emb = fa.embed(&portrait(key)).unwrap();
        assert!(emb.warning.is_none());
        let best = &reference.faces(key)[reference.get(&format!("{key}.best"))[0] as usize];
        let (coords, _) = face_diff(
            &[DetectedFace {
                bbox: emb.bbox,
                score: emb.det_score,
                kps: emb.kps.unwrap(),
            }],
            std::slice::from_ref(best),
        );
        let want = reference.get(&format!("{key}.embedding"));
        let d = max_abs_diff(emb.vector.iter().map(|&v| v as f64), want.iter().copied());
        let want32 = reference.get(&format!("{key}.embedding_f32_fit"));
        let d32 = max_abs_diff(emb.vector.iter().map(|&v| v as f64), want32.iter().copied());
        let norm = emb.vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        println!(
            "{key}: face diff {coords:.1e} px; embedding |Δ| {d:.2e} (f64 fit), {d32:.2e} \
             (InsightFace's f32-keypoint fit), norm {norm:.3}"
        );
        assert!(coords <= 1e-3);
        assert!(d <= 1e-4, "{key}: embedding differs by {d:.2e}");
    }
}

#[test]
fn mxnet_style_graph_feeds_raw_pixels() {
    let reference = Reference::load();
    let arc = ArcFace::new(&fixtures().join("arcface_mxnet_style.onnx")).unwrap();
    assert_eq!((arc.input_mean, arc.input_std), (0.0, 1.0));
    let want_aligned = reference.get("astronaut.aligned");
    let raw: Vec<u8> = want_aligned.iter().map(|&v| v as u8).collect();
    let aligned = RgbImage::from_raw(112, 112, raw).unwrap();
    let emb = arc.get_feat(&aligned).unwrap();
    let want = reference.get("astronaut.embedding_mxnet_style");
    let d = max_abs_diff(emb.iter().map(|&v| v as f64), want.iter().copied());
    println!("mxnet-style recogniser: max |Δ| {d:.2e}");
    assert!(d <= 1e-4);
}

#[test]
fn no_face_gives_zero_embedding_and_warning() {
    let fa = analysis();
    // A real greyscale photo: the stand-in detector keys on skin colour, so it finds nothing.
    let img = portrait("camera");
    assert!(fa.detect(&img).unwrap().is_empty());
    let emb = fa.embed(&img).unwrap();
    assert_eq!(emb.vector, vec![0.0; 16]);
    assert_eq!(emb.bbox, [0.0, 0.0, 512.0, 512.0]);
    assert_eq!((emb.det_score, emb.kps), (0.0, None));
    let warning = emb.warning.expect("a warning");
    assert!(warning.contains("no face") && warning.contains("zero identity embedding"));
}

#[test]
fn bad_model_files_give_specific_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Missing directory.
    let missing = dir.path().join("nowhere");
    match FaceAnalysis::new(&missing) {
        Err(FaceError::Onnx { path, message }) => {
            assert!(path.ends_with("scrfd_10g_bnkps.onnx"));
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("expected a missing-file error, got {:?}", other.err()),
    }
    // Garbage bytes.
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    std::fs::write(
        models.join("scrfd_10g_bnkps.onnx"),
        b"this is not protobuf \xff\xff",
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("models/glintr100.onnx"),
        models.join("glintr100.onnx"),
    )
    .unwrap();
    match FaceAnalysis::new(&models) {
        Err(e @ FaceError::Onnx { .. }) => {
            let text = e.to_string();
            println!("{text}");
            assert!(text.contains("scrfd_10g_bnkps.onnx") && text.contains("not a readable ONNX"));
        }
        other => panic!("expected an ONNX read error, got {:?}", other.err()),
    }
    // A valid graph in the wrong role.
    std::fs::copy(
        fixtures().join("models/glintr100.onnx"),
        models.join("scrfd_10g_bnkps.onnx"),
    )
    .unwrap();
    match FaceAnalysis::new(&models) {
        Err(e @ FaceError::OnnxSignature { .. }) => {
            let text = e.to_string();
            println!("{text}");
            assert!(text.contains("SCRFD") && text.contains("1 outputs"));
        }
        other => panic!("expected a signature error, got {:?}", other.err()),
    }
    // An empty image.
    let fa = analysis();
    assert!(matches!(
        fa.embed(&RgbImage::new(0, 0)),
        Err(FaceError::EmptyImage { .. })
    ));
}
