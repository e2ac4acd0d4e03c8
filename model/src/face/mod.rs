//! The face path: portrait → face box, 468-point mesh, Hallo2 masks and identity embedding
//! (hallo2 `hallo/datasets/image_processor.py`, `hallo/utils/util.py` @ `58a9aa6`).

pub mod blazeface;
pub mod embedding;
pub mod face_mesh;
mod gray_image;
pub mod masks;
pub mod opencv;
pub mod pillow;
pub mod preflight;
pub mod tflite_graph;

pub use gray_image::GrayImage;

/// What can go wrong on the face path (detection, mesh, masks, embedding).
///
/// Other face modules add their own variants here.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// The detector found no face above its score threshold.
    #[error("no face found: use a photo with one clearly visible, roughly frontal human face")]
    NoFace,
    /// A tensor operation of a face network failed.
    #[error("face model: {0}")]
    Model(#[from] candle_core::Error),
    /// The pre-flight cache could not be written.
    #[error("face pre-flight cache: {0}")]
    Cache(String),
    /// A face-model file (BlazeFace / FaceMesh safetensors with its TFLite op graph) is unusable.
    #[error("face model {model}: {message}")]
    Graph { model: String, message: String },
    /// The face mesh has fewer points than MediaPipe's 468-point topology the masks index.
    #[error(
        "face mesh gave {got} landmarks; the Hallo2 masks need MediaPipe's 468-point face mesh"
    )]
    TooFewLandmarks { got: usize },
    /// A landmark the masks use is NaN or infinite.
    #[error("face landmark {index} is not finite ({x}, {y}); the face mesh output is unusable")]
    NonFiniteLandmark { index: usize, x: f32, y: f32 },
    /// An image with no pixels.
    #[error("image is {width}x{height}: it has no pixels")]
    EmptyImage { width: usize, height: usize },
    /// A pixel buffer whose length does not match its stated size.
    #[error(
        "pixel buffer holds {len} bytes, but {width}x{height} with {channels} channel(s) needs {expected}"
    )]
    ImageBuffer {
        width: usize,
        height: usize,
        channels: usize,
        len: usize,
        expected: usize,
    },
    /// A model resolution the four mask levels (S/8 … S/64) cannot be made from.
    #[error("image size {size} is not a positive multiple of 64 (the masks need S/8 … S/64 sides)")]
    ImageSize { size: usize },
    /// A face expansion ratio that would not give a box.
    #[error(
        "face_expand_ratio {ratio} must be a finite number above 0 (the official value is 1.2)"
    )]
    ExpandRatio { ratio: f64 },
    /// An InsightFace ONNX model is missing, unreadable, or tract could not load or run it.
    #[error("face model {path}: {message}")]
    Onnx {
        path: std::path::PathBuf,
        message: String,
    },
    /// An ONNX file lacks the inputs/outputs its InsightFace role needs.
    #[error("face model {path} is not {expected}: {found}")]
    OnnxSignature {
        path: std::path::PathBuf,
        expected: &'static str,
        found: String,
    },
}

use blazeface::{BlazeFace, BlazeFaceConfig, FaceDetection};
use face_mesh::{FaceMesh, FaceMeshConfig, FaceMeshResult};

/// A face box side (longer side, image pixels) below which the portrait is too small to animate
/// well: Hallo2 crops and resizes the face region, so a tiny face comes out blurry.
pub const SMALL_FACE_PX: f32 = 64.0;
/// Head yaw (degrees, see [`FaceMeshResult::yaw_degrees`]) beyond which a warning is given.
pub const MAX_YAW_DEGREES: f32 = 30.0;
/// Mesh presence below which the landmarks (and so the masks) are unreliable. MediaPipe drops a
/// tracked face at 0.5; a still portrait should be far clearer than that, and real faces score
/// above 0.9999 (presence logits 34–41 on the test portraits).
pub const MIN_MESH_PRESENCE: f32 = 0.9;

/// Something about the portrait the user should know; the face is still usable.
#[derive(Debug, Clone, PartialEq)]
pub enum FaceWarning {
    /// Several faces were found; the largest is used.
    MultipleFaces { count: usize },
    /// The face box is smaller than [`SMALL_FACE_PX`].
    SmallFace { side_px: f32 },
    /// The head is turned more than [`MAX_YAW_DEGREES`] to one side.
    StrongYaw { degrees: f32 },
    /// The face mesh is unsure there is a face in its crop.
    LowMeshPresence { presence: f32 },
}

impl std::fmt::Display for FaceWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MultipleFaces { count } => write!(
                f,
                "{count} faces found; the largest one is animated. Crop the photo to one person for control."
            ),
            Self::SmallFace { side_px } => write!(
                f,
                "the face is only {side_px:.0} px wide (under {SMALL_FACE_PX:.0}); the animation will be blurry. Use a closer or larger photo."
            ),
            Self::StrongYaw { degrees } => write!(
                f,
                "the head is turned about {:.0}° to the side (over {MAX_YAW_DEGREES:.0}°); lip sync works best on a frontal face.",
                degrees.abs()
            ),
            Self::LowMeshPresence { presence } => write!(
                f,
                "the face is unclear (face-mesh confidence {presence:.2}); the mouth and face masks may be wrong. Use a sharper, well-lit, frontal photo."
            ),
        }
    }
}

/// The face a portrait will be animated with.
#[derive(Debug, Clone)]
pub struct PortraitFace {
    /// The chosen (largest) detection.
    pub detection: FaceDetection,
    /// Its 468-point mesh in image pixels.
    pub mesh: FaceMeshResult,
    /// How many faces the detector found.
    pub faces_found: usize,
    /// Head yaw estimated from the mesh, degrees.
    pub yaw_degrees: f32,
    /// What the UI should tell the user.
    pub warnings: Vec<FaceWarning>,
}

/// BlazeFace short-range + FaceMesh v1 on the CPU: portrait in, one face with its mesh out.
#[derive(Debug)]
pub struct FaceDetector {
    pub blazeface: BlazeFace,
    pub face_mesh: FaceMesh,
}

/// The bundled detector weights (`model/tests/fixtures/face/`, Apache-2.0, MediaPipe).
const BLAZEFACE_BYTES: &[u8] =
    include_bytes!("../../tests/fixtures/face/blazeface_short_range.safetensors");
/// The bundled face-mesh weights.
const FACE_MESH_BYTES: &[u8] =
    include_bytes!("../../tests/fixtures/face/face_mesh_468.safetensors");

impl FaceDetector {
    /// The models that ship inside the binary (see `model/tests/fixtures/face/README.md`).
    pub fn bundled() -> Result<Self, FaceError> {
        let device = candle_core::Device::Cpu;
        Ok(Self {
            blazeface: BlazeFace::from_bytes(
                &BlazeFaceConfig::short_range(),
                BLAZEFACE_BYTES,
                &device,
            )?,
            face_mesh: FaceMesh::from_bytes(&FaceMeshConfig::v1(), FACE_MESH_BYTES, &device)?,
        })
    }

    /// Every face in `image`, best score first; empty when there is none.
    pub fn detect_faces(&self, image: &image::RgbImage) -> Result<Vec<FaceDetection>, FaceError> {
        self.blazeface.detect(image)
    }

    /// The 468-point mesh of `detection` (rotated 1.5× crop), landmarks in image pixels.
    pub fn face_mesh(
        &self,
        image: &image::RgbImage,
        detection: &FaceDetection,
    ) -> Result<FaceMeshResult, FaceError> {
        self.face_mesh.mesh(image, detection)
    }

    /// Detection + mesh with the product policy: no face is [`FaceError::NoFace`]; several
    /// faces use the largest box; small, turned or unclear faces come with warnings.
    pub fn portrait_face(&self, image: &image::RgbImage) -> Result<PortraitFace, FaceError> {
        let detections = self.detect_faces(image)?;
        let faces_found = detections.len();
        let detection = detections
            .into_iter()
            .max_by(|a, b| a.area().total_cmp(&b.area()))
            .ok_or(FaceError::NoFace)?;
        let mesh = self.face_mesh(image, &detection)?;
        let yaw_degrees = mesh.yaw_degrees();
        let mut warnings = Vec::new();
        if faces_found > 1 {
            warnings.push(FaceWarning::MultipleFaces { count: faces_found });
        }
        let side_px = detection.width().max(detection.height());
        if side_px < SMALL_FACE_PX {
            warnings.push(FaceWarning::SmallFace { side_px });
        }
        if yaw_degrees.abs() > MAX_YAW_DEGREES {
            warnings.push(FaceWarning::StrongYaw {
                degrees: yaw_degrees,
            });
        }
        if mesh.presence < MIN_MESH_PRESENCE {
            warnings.push(FaceWarning::LowMeshPresence {
                presence: mesh.presence,
            });
        }
        Ok(PortraitFace {
            detection,
            mesh,
            faces_found,
            yaw_degrees,
            warnings,
        })
    }
}
