//! The ArcFace recogniser (insightface 0.7.3 `insightface/model_zoo/arcface_onnx.py`).
//!
//! `get` aligns the face with `norm_crop` at the network's input size and returns the raw
//! network output (`face.embedding`, not `normed_embedding`). The input normalisation follows
//! `ArcFaceONNX.__init__`: when the first 8 graph nodes include both a node named `Sub…`/`_minus…`
//! and one named `Mul…`/`_mul…` (an mxnet export that normalises inside the graph), pixels go in
//! as 0..255 (mean 0, std 1); otherwise `(x − 127.5)/127.5`.

use std::path::Path;

use image::RgbImage;

use super::OnnxModel;
use super::face_align::norm_crop;
use crate::face::FaceError;
use crate::face::opencv::blob_from_image;

/// An ArcFace recogniser loaded with tract.
pub struct ArcFace {
    model: OnnxModel,
    /// Square input side (112 for glintr100).
    input_size: u32,
    /// Normalisation chosen from the graph's first nodes.
    pub input_mean: f32,
    pub input_std: f32,
    /// Length of the embedding (512 for glintr100).
    embedding_dim: usize,
}

impl ArcFace {
    /// Loads a recogniser graph: one `[N, 3, S, S]` input (S a multiple of 112 or 128, as
    /// `norm_crop` needs), one output.
    pub fn new(path: &Path) -> Result<Self, FaceError> {
        const EXPECTED: &str = "an ArcFace recogniser (one [N, 3, S, S] input with S a multiple \
                                of 112 or 128; one embedding output)";
        let file = OnnxModel::read_proto(path)?;
        let dims = OnnxModel::input_dims(&file, path, EXPECTED)?;
        let signature_error = |found: String| FaceError::OnnxSignature {
            path: path.to_path_buf(),
            expected: EXPECTED,
            found,
        };
        let size = match (dims[2], dims[3]) {
            (Some(h), Some(w)) if h == w && h > 0 && (h % 112 == 0 || h % 128 == 0) => h as u32,
            (h, w) => return Err(signature_error(format!("input height/width {h:?}/{w:?}"))),
        };
        let graph = file.graph.as_ref();
        let outputs = graph.map_or(0, |g| g.output.len());
        if outputs != 1 {
            return Err(signature_error(format!("{outputs} outputs")));
        }
        let first: Vec<&str> = graph
            .map(|g| g.node.iter().take(8).map(|n| n.name.as_str()).collect())
            .unwrap_or_default();
        let find_sub = first
            .iter()
            .any(|n| n.starts_with("Sub") || n.starts_with("_minus"));
        let find_mul = first
            .iter()
            .any(|n| n.starts_with("Mul") || n.starts_with("_mul"));
        let (input_mean, input_std) = if find_sub && find_mul {
            (0.0, 1.0)
        } else {
            (127.5, 127.5)
        };
        let shape = [1, 3, size as usize, size as usize];
        let model = OnnxModel::optimise(path, file, &shape)?;
        let embedding_dim = model
            .output_shapes
            .first()
            .map_or(0, |s| s.iter().skip(1).product());
        if embedding_dim == 0 {
            return Err(signature_error("an empty output".to_string()));
        }
        Ok(Self {
            model,
            input_size: size,
            input_mean,
            input_std,
            embedding_dim,
        })
    }

    /// Square input side.
    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// Embedding length.
    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// `get_feat` on one aligned crop of the input size: the raw embedding.
    pub fn get_feat(&self, aligned: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let s = self.input_size as usize;
        if aligned.width() as usize != s || aligned.height() as usize != s {
            return Err(FaceError::OnnxSignature {
                path: self.model.path.clone(),
                expected: "an aligned crop of the recogniser's input size",
                found: format!(
                    "a {}x{} crop for a {s}x{s} input",
                    aligned.width(),
                    aligned.height()
                ),
            });
        }
        let blob = blob_from_image(aligned, self.input_mean, self.input_std);
        let out = self.model.run(&[1, 3, s, s], blob)?;
        Ok(out.into_iter().next().map(|(_, v)| v).unwrap_or_default())
    }

    /// `get`: the aligned crop (`norm_crop` of the five keypoints) and its raw embedding.
    pub fn get(
        &self,
        img: &RgbImage,
        kps: &[[f32; 2]; 5],
    ) -> Result<(RgbImage, Vec<f32>), FaceError> {
        let (aligned, _) =
            norm_crop(img, kps, self.input_size).ok_or_else(|| FaceError::OnnxSignature {
                path: self.model.path.clone(),
                expected: "a recogniser whose input side is a multiple of 112 or 128",
                found: format!("side {}", self.input_size),
            })?;
        let embedding = self.get_feat(&aligned)?;
        Ok((aligned, embedding))
    }
}
