//! The SCRFD face detector with five keypoints (insightface 0.7.3
//! `insightface/model_zoo/retinaface.py`, the class FaceAnalysis routes a 9-output detector to,
//! and `scrfd.py`, which decodes the same way).
//!
//! The image is letterboxed into the network input (scaled to fit with `cv2.resize`, top-left,
//! zero padding), normalised `(x − 127.5)/128` in RGB order, and each of the three levels
//! (strides 8, 16, 32; two anchors per location) yields scores, box distances and keypoint
//! offsets in stride units. Candidates at or above the score threshold are decoded around their
//! anchor centres, mapped back to the source image, sorted by score and thinned by NMS.

use std::path::Path;

use image::RgbImage;

use super::OnnxModel;
use crate::face::FaceError;
use crate::face::opencv::{blob_from_image, resize_linear_rgb};

/// Feature strides of the three FPN levels (`_feat_stride_fpn` for 9 outputs).
pub const STRIDES: [usize; 3] = [8, 16, 32];
/// Anchors per feature-map location (`_num_anchors` for 9 outputs).
pub const NUM_ANCHORS: usize = 2;
/// `det_thresh`: FaceAnalysis.prepare's default.
pub const DET_THRESH: f32 = 0.5;
/// `nms_thresh`.
pub const NMS_THRESH: f32 = 0.4;
/// `det_size` Hallo2 passes to `FaceAnalysis.prepare`.
pub const DET_SIZE: (u32, u32) = (640, 640);
const INPUT_MEAN: f32 = 127.5;
const INPUT_STD: f32 = 128.0;

/// One detected face in source-image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectedFace {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Detector score in `[0, 1]`.
    pub score: f32,
    /// Left eye, right eye, nose tip, left and right mouth corners, `[x, y]`.
    pub kps: [[f32; 2]; 5],
}

impl DetectedFace {
    /// `(x2 − x1)·(y2 − y1)`, the size Hallo2 ranks faces by.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])
    }
}

/// The nine raw network outputs: `scores[level]` is `[n, 1]`, `boxes[level]` `[n, 4]`,
/// `kps[level]` `[n, 10]`, with `n = (h/stride)·(w/stride)·2` rows in (row, column, anchor) order.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrfdOutputs {
    pub scores: [Vec<f32>; 3],
    pub boxes: [Vec<f32>; 3],
    pub kps: [Vec<f32>; 3],
}

/// The letterboxed network input and the factor from source to input pixels.
#[derive(Debug, Clone)]
pub struct Letterbox {
    pub image: RgbImage,
    /// `det_scale = new_height / source_height`.
    pub det_scale: f32,
}

/// An SCRFD detector loaded with tract.
pub struct Scrfd {
    model: OnnxModel,
    /// Network input `(width, height)`: the graph's own if fixed, else [`DET_SIZE`].
    input_size: (u32, u32),
}

impl Scrfd {
    /// Loads an SCRFD graph with keypoints (one image input, 9 outputs).
    pub fn new(path: &Path) -> Result<Self, FaceError> {
        const EXPECTED: &str = "an SCRFD detector with keypoints (one [1, 3, H, W] input; 9 \
                                outputs: scores, boxes and keypoints at strides 8/16/32)";
        let file = OnnxModel::read_proto(path)?;
        let dims = OnnxModel::input_dims(&file, path, EXPECTED)?;
        let outputs = file.graph.as_ref().map_or(0, |g| g.output.len());
        if outputs != 9 {
            return Err(FaceError::OnnxSignature {
                path: path.to_path_buf(),
                expected: EXPECTED,
                found: format!("{outputs} outputs"),
            });
        }
        let input_size = match (dims[2], dims[3]) {
            (Some(h), Some(w)) if h > 0 && w > 0 => (w as u32, h as u32),
            _ => DET_SIZE,
        };
        let shape = [1, 3, input_size.1 as usize, input_size.0 as usize];
        let model = OnnxModel::optimise(path, file, &shape)?;
        Ok(Self { model, input_size })
    }

    /// Network input size `(width, height)`.
    pub fn input_size(&self) -> (u32, u32) {
        self.input_size
    }

    /// The letterbox of `detect`: scale to fit (aspect kept, `int()` truncation), `cv2.resize`,
    /// top-left placement on black.
    pub fn letterbox(&self, img: &RgbImage) -> Letterbox {
        let (iw, ih) = self.input_size;
        let im_ratio = img.height() as f64 / img.width() as f64;
        let model_ratio = ih as f64 / iw as f64;
        let (new_w, new_h) = if im_ratio > model_ratio {
            ((ih as f64 / im_ratio) as u32, ih)
        } else {
            (iw, (iw as f64 * im_ratio) as u32)
        };
        let det_scale = (new_h as f64 / img.height() as f64) as f32;
        let resized = resize_linear_rgb(img, new_w.max(1), new_h.max(1));
        let mut image = RgbImage::new(iw, ih);
        for (x, y, px) in resized.enumerate_pixels() {
            if x < iw && y < ih && new_w > 0 && new_h > 0 {
                image.put_pixel(x, y, *px);
            }
        }
        Letterbox { image, det_scale }
    }

    /// Runs the network on a letterboxed image.
    pub fn forward(&self, letterboxed: &RgbImage) -> Result<ScrfdOutputs, FaceError> {
        let (w, h) = (letterboxed.width() as usize, letterboxed.height() as usize);
        let blob = blob_from_image(letterboxed, INPUT_MEAN, INPUT_STD);
        let outs = self.model.run(&[1, 3, h, w], blob)?;
        let mut take = outs.into_iter();
        let mut next = || take.next().map(|(_, v)| v).unwrap_or_default();
        let scores = [next(), next(), next()];
        let boxes = [next(), next(), next()];
        let kps = [next(), next(), next()];
        let out = ScrfdOutputs { scores, boxes, kps };
        for (level, stride) in STRIDES.iter().enumerate() {
            let n = (h / stride) * (w / stride) * NUM_ANCHORS;
            let lens = [
                out.scores[level].len(),
                out.boxes[level].len(),
                out.kps[level].len(),
            ];
            if lens != [n, 4 * n, 10 * n] {
                return Err(FaceError::OnnxSignature {
                    path: self.model.path.clone(),
                    expected: "an SCRFD detector with keypoints",
                    found: format!(
                        "stride-{stride} outputs hold {lens:?} values for a {w}x{h} input; \
                         expected {:?}",
                        [n, 4 * n, 10 * n]
                    ),
                });
            }
        }
        Ok(out)
    }

    /// Letterbox, run, decode: every face at or above [`DET_THRESH`] after NMS, best first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<DetectedFace>, FaceError> {
        let lb = self.letterbox(img);
        let outputs = self.forward(&lb.image)?;
        let (w, h) = self.input_size;
        Ok(decode(
            &outputs,
            (w as usize, h as usize),
            lb.det_scale,
            DET_THRESH,
            NMS_THRESH,
        ))
    }
}

/// `forward` (after the network) + `detect` (after `forward`): decodes candidates at or above
/// `threshold` around their anchor centres (`distance2bbox`, `distance2kps`, offsets × stride),
/// divides by `det_scale`, sorts by score (descending; ties keep NumPy's reversed-argsort order,
/// later first) and applies NMS. All arithmetic in f32, as NumPy does it.
pub fn decode(
    outputs: &ScrfdOutputs,
    input_size: (usize, usize),
    det_scale: f32,
    threshold: f32,
    nms_thresh: f32,
) -> Vec<DetectedFace> {
    let (w, h) = input_size;
    let mut candidates = Vec::new();
    for (level, &stride) in STRIDES.iter().enumerate() {
        let (fw, fh) = (w / stride, h / stride);
        let s = stride as f32;
        let scores = &outputs.scores[level];
        // Rows present in all three outputs (forward checks they are all there).
        let rows = (fw * fh * NUM_ANCHORS)
            .min(outputs.boxes[level].len() / 4)
            .min(outputs.kps[level].len() / 10);
        for (i, &score) in scores.iter().enumerate().take(rows) {
            if score < threshold {
                continue;
            }
            let loc = i / NUM_ANCHORS;
            let cx = (loc % fw) as f32 * s;
            let cy = (loc / fw) as f32 * s;
            let d = &outputs.boxes[level][i * 4..i * 4 + 4];
            let bbox = [
                (cx - d[0] * s) / det_scale,
                (cy - d[1] * s) / det_scale,
                (cx + d[2] * s) / det_scale,
                (cy + d[3] * s) / det_scale,
            ];
            let k = &outputs.kps[level][i * 10..i * 10 + 10];
            let mut kps = [[0f32; 2]; 5];
            for (j, p) in kps.iter_mut().enumerate() {
                *p = [
                    (cx + k[2 * j] * s) / det_scale,
                    (cy + k[2 * j + 1] * s) / det_scale,
                ];
            }
            candidates.push(DetectedFace { bbox, score, kps });
        }
    }
    // `scores.argsort()[::-1]`: a stable ascending sort, reversed.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[a].score.total_cmp(&candidates[b].score));
    order.reverse();
    let sorted: Vec<DetectedFace> = order.into_iter().map(|i| candidates[i].clone()).collect();
    nms(&sorted, nms_thresh)
        .into_iter()
        .map(|i| sorted[i].clone())
        .collect()
}

/// Greedy NMS with InsightFace's `+1` pixel areas, over faces already sorted by score; returns
/// the kept indices in order.
pub fn nms(faces: &[DetectedFace], thresh: f32) -> Vec<usize> {
    let area = |f: &DetectedFace| (f.bbox[2] - f.bbox[0] + 1.0) * (f.bbox[3] - f.bbox[1] + 1.0);
    let mut order: Vec<usize> = (0..faces.len()).collect();
    let mut keep = Vec::new();
    while let Some((&i, rest)) = order.split_first() {
        keep.push(i);
        let a = &faces[i];
        let area_i = area(a);
        order = rest
            .iter()
            .copied()
            .filter(|&j| {
                let b = &faces[j];
                let xx1 = a.bbox[0].max(b.bbox[0]);
                let yy1 = a.bbox[1].max(b.bbox[1]);
                let xx2 = a.bbox[2].min(b.bbox[2]);
                let yy2 = a.bbox[3].min(b.bbox[3]);
                let iw = (xx2 - xx1 + 1.0).max(0.0);
                let ih = (yy2 - yy1 + 1.0).max(0.0);
                let inter = iw * ih;
                let ovr = inter / (area_i + area(b) - inter);
                // NumPy drops NaN overlaps too (`ovr <= thresh` is false).
                ovr <= thresh
            })
            .collect();
    }
    keep
}
