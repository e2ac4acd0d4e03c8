//! The face path: portrait → face box, 468-point mesh, Hallo2 masks and identity embedding
//! (hallo2 `hallo/datasets/image_processor.py`, `hallo/utils/util.py` @ `58a9aa6`).

pub mod blazeface;
pub mod embedding;
pub mod face_mesh;
pub mod masks;
pub mod tflite_graph;

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
    #[error("face_expand_ratio {ratio} must be a finite number above 0 (the official value is 1.2)")]
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
