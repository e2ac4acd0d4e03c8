//! The identity embedding Hallo2 conditions on (hallo2 `hallo/datasets/image_processor.py`
//! @ `58a9aa6`, `ImageProcessor.preprocess` step 2; insightface 0.7.3
//! `insightface/app/face_analysis.py`).
//!
//! ```text
//! RGB image ─▶ SCRFD (640² letterbox) ─▶ faces ─▶ largest box ─▶ 5 keypoints
//!           ─▶ norm_crop 112² ─▶ ArcFace (glintr100) ─▶ raw embedding (512)
//! no face   ─▶ zero embedding + warning, whole image as the face region
//! ```
//!
//! Hallo2 uses `face["embedding"]`, the raw recogniser output, not `normed_embedding`.
//! InsightFace's `FaceAnalysis` loads every ONNX file in `face_analysis/models/` and routes them by
//! signature; Hallo2 only reads the detector and the recogniser, so only those two files
//! (`scrfd_10g_bnkps.onnx`, `glintr100.onnx`) are loaded here. All models run through tract.

pub mod arcface;
pub mod face_align;
pub mod scrfd;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

pub use arcface::ArcFace;
pub use scrfd::{DetectedFace, Scrfd};

use super::FaceError;

/// Detector file name in `face_analysis/models/`.
pub const DETECTOR_FILE: &str = "scrfd_10g_bnkps.onnx";
/// Recogniser file name in `face_analysis/models/`.
pub const RECOGNISER_FILE: &str = "glintr100.onnx";

/// The identity embedding of one portrait.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceEmbedding {
    /// Raw recogniser output (512 values for glintr100), or zeros when no face was found.
    pub vector: Vec<f32>,
    /// Detector score of the chosen face (0 when none).
    pub det_score: f32,
    /// Face box `[x1, y1, x2, y2]` in source pixels; the whole image when no face was found.
    pub bbox: [f32; 4],
    /// The chosen face's five keypoints, if a face was found.
    pub kps: Option<[[f32; 2]; 5]>,
    /// Set when no face was found and the zero embedding stands in (Hallo2 only prints this).
    pub warning: Option<String>,
}

/// SCRFD + ArcFace, as Hallo2's `FaceAnalysis(name="", root=face_analysis)` with
/// `prepare(ctx_id=0, det_size=(640, 640))`.
pub struct FaceAnalysis {
    pub detector: Scrfd,
    pub recogniser: ArcFace,
    /// Names the two model files (names and sizes) in cache keys.
    fingerprint: String,
}

impl FaceAnalysis {
    /// Loads [`DETECTOR_FILE`] and [`RECOGNISER_FILE`] from `models_dir`
    /// (`pretrained_models/face_analysis/models`).
    pub fn new(models_dir: &Path) -> Result<Self, FaceError> {
        Self::from_files(
            &models_dir.join(DETECTOR_FILE),
            &models_dir.join(RECOGNISER_FILE),
        )
    }

    /// Loads a detector and a recogniser from explicit paths.
    pub fn from_files(detector: &Path, recogniser: &Path) -> Result<Self, FaceError> {
        // The models first: they name a missing or damaged file best.
        let (scrfd, arcface) = (Scrfd::new(detector)?, ArcFace::new(recogniser)?);
        let mut hasher = blake3::Hasher::new();
        for path in [detector, recogniser] {
            let meta = std::fs::metadata(path).map_err(|e| FaceError::Onnx {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            hasher.update(name.as_bytes());
            hasher.update(&meta.len().to_le_bytes());
        }
        Ok(Self {
            detector: scrfd,
            recogniser: arcface,
            fingerprint: hasher.finalize().to_hex()[..16].to_string(),
        })
    }

    /// Identifies the loaded models (file names and sizes), for cache keys.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Every face the detector keeps, best score first (`FaceAnalysis.get` without the
    /// recogniser).
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<DetectedFace>, FaceError> {
        check_image(img)?;
        self.detector.detect(img)
    }

    /// Hallo2's identity embedding: the largest detected face (first on ties, as Python's
    /// stable sort keeps them) through the recogniser; with no face, zeros and a warning.
    pub fn embed(&self, img: &RgbImage) -> Result<FaceEmbedding, FaceError> {
        let faces = self.detect(img)?;
        let Some(face) = largest(&faces) else {
            let warning = format!(
                "no face found in the {}x{} image (detector threshold {}): using a zero identity \
                 embedding and the whole image as the face region, as Hallo2 does; the video \
                 will not keep the person's identity",
                img.width(),
                img.height(),
                scrfd::DET_THRESH
            );
            tracing::warn!("{warning}");
            return Ok(FaceEmbedding {
                vector: vec![0.0; self.recogniser.embedding_dim()],
                det_score: 0.0,
                bbox: [0.0, 0.0, img.width() as f32, img.height() as f32],
                kps: None,
                warning: Some(warning),
            });
        };
        let (_, vector) = self.recogniser.get(img, &face.kps)?;
        Ok(FaceEmbedding {
            vector,
            det_score: face.score,
            bbox: face.bbox,
            kps: Some(face.kps),
            warning: None,
        })
    }
}

/// `sorted(faces, key=area, reverse=True)[0]`.
pub fn largest(faces: &[DetectedFace]) -> Option<&DetectedFace> {
    let mut best: Option<&DetectedFace> = None;
    for f in faces {
        if best.is_none_or(|b| f.area() > b.area()) {
            best = Some(f);
        }
    }
    best
}

fn check_image(img: &RgbImage) -> Result<(), FaceError> {
    if img.width() == 0 || img.height() == 0 {
        return Err(FaceError::EmptyImage {
            width: img.width() as usize,
            height: img.height() as usize,
        });
    }
    Ok(())
}

/// One network output: shape and values.
pub(crate) type Output = (Vec<usize>, Vec<f32>);

/// An ONNX graph optimised by tract for one fixed input shape.
pub(crate) struct OnnxModel {
    pub(crate) path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    /// Concrete output shapes for the fixed input.
    pub(crate) output_shapes: Vec<Vec<usize>>,
}

impl OnnxModel {
    /// Parses the protobuf (kept for the signature checks InsightFace does on it).
    pub(crate) fn read_proto(path: &Path) -> Result<ModelProto, FaceError> {
        if !path.is_file() {
            return Err(onnx_error(
                path,
                "file not found: put the InsightFace antelopev2 models (scrfd_10g_bnkps.onnx, \
                 glintr100.onnx) in pretrained_models/face_analysis/models",
            ));
        }
        tract_onnx::onnx()
            .proto_model_for_path(path)
            .map_err(|e| onnx_error(path, format!("not a readable ONNX model: {e:#}")))
    }

    /// Shape of the first graph input that is not an initializer (`session.get_inputs()[0]`),
    /// `None` for symbolic dimensions; it must have rank 4.
    pub(crate) fn input_dims(
        proto: &ModelProto,
        path: &Path,
        expected: &'static str,
    ) -> Result<Vec<Option<i64>>, FaceError> {
        use tract_onnx::pb::tensor_shape_proto::dimension::Value;
        use tract_onnx::pb::type_proto;
        let graph = proto.graph.as_ref();
        let input = graph.and_then(|g| {
            g.input
                .iter()
                .find(|i| !g.initializer.iter().any(|t| t.name == i.name))
        });
        let dims: Vec<Option<i64>> = input
            .and_then(|i| i.r#type.as_ref())
            .and_then(|t| match &t.value {
                Some(type_proto::Value::TensorType(tt)) => tt.shape.as_ref(),
                _ => None,
            })
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(v)) => Some(v),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if dims.len() != 4 {
            return Err(FaceError::OnnxSignature {
                path: path.to_path_buf(),
                expected,
                found: match input {
                    Some(i) => format!("input `{}` of rank {}", i.name, dims.len()),
                    None => "no input".to_string(),
                },
            });
        }
        Ok(dims)
    }

    /// Fixes the input to `shape` (f32) and optimises.
    pub(crate) fn optimise(
        path: &Path,
        proto: ModelProto,
        shape: &[usize],
    ) -> Result<Self, FaceError> {
        let fail = |stage: &str, e: TractError| onnx_error(path, format!("{stage}: {e:#}"));
        let onnx = tract_onnx::onnx();
        let dir = path.parent().and_then(|d| d.to_str());
        let parsed = onnx
            .parse(&proto, dir)
            .map_err(|e| fail("cannot translate the graph", e))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(onnx_error(
                path,
                format!("unresolved graph inputs {:?}", parsed.unresolved_inputs),
            ));
        }
        let typed = parsed
            .model
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(|m| m.into_optimized())
            .map_err(|e| fail("cannot optimise the graph", e))?;
        let output_shapes = typed
            .output_outlets()
            .map_err(|e| fail("cannot read the outputs", e))?
            .iter()
            .map(|o| {
                typed
                    .outlet_fact(*o)
                    .ok()
                    .and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
                    .unwrap_or_default()
            })
            .collect();
        let plan = typed
            .into_runnable()
            .map_err(|e| fail("cannot plan the graph", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            plan,
            output_shapes,
        })
    }

    /// Runs on one f32 tensor; returns every output as (shape, values).
    pub(crate) fn run(&self, shape: &[usize], data: Vec<f32>) -> Result<Vec<Output>, FaceError> {
        let fail = |e: TractError| onnx_error(&self.path, format!("inference failed: {e:#}"));
        let input = Tensor::from_shape(shape, &data).map_err(fail)?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(fail)?;
        outputs
            .iter()
            .map(|t| {
                let view = t.to_plain_array_view::<f32>().map_err(fail)?;
                Ok((t.shape().to_vec(), view.iter().copied().collect()))
            })
            .collect()
    }
}

fn onnx_error(path: &Path, message: impl Into<String>) -> FaceError {
    FaceError::Onnx {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
