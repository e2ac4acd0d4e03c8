//! MediaPipe BlazeFace short-range face detector (mediapipe `modules/face_detection/`
//! `face_detection_short_range.tflite` with `face_detection_short_range_common.pbtxt`:
//! `ImageToTensorCalculator` letterbox, `SsdAnchorsCalculator`, `TensorsToDetectionsCalculator`,
//! `NonMaxSuppressionCalculator` in WEIGHTED mode).

use candle_core::{Device, Tensor};
use image::RgbImage;
use image::imageops::FilterType;

use super::FaceError;
use super::tflite_graph::TfliteGraph;

/// Number of SSD anchors of the short-range model (16×16×2 + 8×8×6).
pub const NUM_ANCHORS: usize = 896;
/// Keypoints per detection, in this order (the subject's right eye is on the image's left).
pub const NUM_KEYPOINTS: usize = 6;
/// Index of the subject's right eye in [`FaceDetection::keypoints_px`].
pub const RIGHT_EYE: usize = 0;
/// Index of the subject's left eye.
pub const LEFT_EYE: usize = 1;
/// Index of the nose tip.
pub const NOSE_TIP: usize = 2;
/// Index of the mouth centre.
pub const MOUTH_CENTRE: usize = 3;
/// Index of the right ear tragion.
pub const RIGHT_EAR: usize = 4;
/// Index of the left ear tragion.
pub const LEFT_EAR: usize = 5;

/// Values per anchor in the regressor output: box (cx, cy, w, h) then 6 keypoints (x, y).
const REGRESSOR_VALUES: usize = 4 + 2 * NUM_KEYPOINTS;

/// Detector settings (`face_detection_short_range_common.pbtxt`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlazeFaceConfig {
    /// Side of the square network input.
    pub input_size: usize,
    /// Minimum sigmoid score of a detection (`min_score_thresh`).
    pub min_score: f32,
    /// Logits are clipped to ±this before the sigmoid (`score_clipping_thresh`).
    pub score_clip: f32,
    /// Detections overlapping the best one above this IoU are merged into it
    /// (`min_suppression_threshold`).
    pub min_suppression_iou: f32,
}

impl BlazeFaceConfig {
    /// The short-range model's settings: 128×128, score 0.5, clip 100, IoU 0.3.
    pub fn short_range() -> Self {
        Self {
            input_size: 128,
            min_score: 0.5,
            score_clip: 100.0,
            min_suppression_iou: 0.3,
        }
    }
}

/// One face found by the detector, in image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceDetection {
    /// Sigmoid score in [0, 1] of the best anchor of the merged cluster.
    pub score: f32,
    /// Face box `[x0, y0, x1, y1]` in image pixels (may reach outside the image).
    pub box_px: [f32; 4],
    /// Right eye, left eye, nose tip, mouth centre, right ear, left ear, `[x, y]` in pixels.
    pub keypoints_px: [[f32; 2]; NUM_KEYPOINTS],
}

impl FaceDetection {
    /// Box width in pixels.
    pub fn width(&self) -> f32 {
        self.box_px[2] - self.box_px[0]
    }

    /// Box height in pixels.
    pub fn height(&self) -> f32 {
        self.box_px[3] - self.box_px[1]
    }

    /// Box area in square pixels.
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// Intersection over union of two boxes.
    pub fn iou(&self, other: &FaceDetection) -> f32 {
        let [ax0, ay0, ax1, ay1] = self.box_px;
        let [bx0, by0, bx1, by1] = other.box_px;
        let iw = (ax1.min(bx1) - ax0.max(bx0)).max(0.0);
        let ih = (ay1.min(by1) - ay0.max(by0)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// Where the image sits inside the square letterboxed network input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Network pixels per image pixel.
    pub scale: f32,
    /// Left padding in network pixels.
    pub offset_x: f32,
    /// Top padding in network pixels.
    pub offset_y: f32,
    /// Side of the square network input.
    pub size: usize,
}

impl Letterbox {
    /// Maps a point in normalised network coordinates ([0, 1] over the square input) to image
    /// pixels.
    pub fn to_image(&self, p: [f32; 2]) -> [f32; 2] {
        let size = self.size as f32;
        [
            (p[0] * size - self.offset_x) / self.scale,
            (p[1] * size - self.offset_y) / self.scale,
        ]
    }
}

/// Resizes `image` to fit a `size`×`size` square (aspect kept, bilinear with antialiasing like
/// PIL's BILINEAR), centres it on black, and returns the NHWC tensor [1, size, size, 3] in
/// [-1, 1] with the letterbox geometry.
pub fn letterbox(
    image: &RgbImage,
    size: usize,
    device: &Device,
) -> Result<(Tensor, Letterbox), FaceError> {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 || size == 0 {
        return Err(FaceError::EmptyImage {
            width: w as usize,
            height: h as usize,
        });
    }
    let scale = size as f32 / w.max(h) as f32;
    let nw = ((w as f32 * scale).round() as u32).clamp(1, size as u32);
    let nh = ((h as f32 * scale).round() as u32).clamp(1, size as u32);
    let ox = (size as u32 - nw) / 2;
    let oy = (size as u32 - nh) / 2;
    let resized = image::imageops::resize(image, nw, nh, FilterType::Triangle);
    let mut data = vec![-1f32; size * size * 3];
    for (x, y, px) in resized.enumerate_pixels() {
        let base = (((y + oy) as usize) * size + (x + ox) as usize) * 3;
        for c in 0..3 {
            data[base + c] = px.0[c] as f32 / 127.5 - 1.0;
        }
    }
    let tensor = Tensor::from_vec(data, (1, size, size, 3), device)?;
    let geometry = Letterbox {
        scale,
        offset_x: ox as f32,
        offset_y: oy as f32,
        size,
    };
    Ok((tensor, geometry))
}

/// The short-range model's SSD anchor centres in normalised input coordinates: strides 8, 16,
/// 16, 16 with offset 0.5; layers of equal stride share a grid, so 2 anchors per cell on the
/// 16×16 grid and 6 per cell on the 8×8 grid. Anchor sizes are fixed at 1.
pub fn ssd_anchors(input_size: usize) -> Vec<[f32; 2]> {
    let mut anchors = Vec::with_capacity(NUM_ANCHORS);
    for (stride, per_cell) in [(8usize, 2usize), (16, 6)] {
        let n = input_size.div_ceil(stride);
        for y in 0..n {
            for x in 0..n {
                let centre = [(x as f32 + 0.5) / n as f32, (y as f32 + 0.5) / n as f32];
                anchors.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
    }
    anchors
}

/// MediaPipe's WEIGHTED non-maximum suppression: the best remaining detection absorbs every
/// remaining one overlapping it above `min_iou` (itself included); box and keypoints become the
/// score-weighted mean of the cluster, the score stays the best one's.
pub fn weighted_nms(mut detections: Vec<FaceDetection>, min_iou: f32) -> Vec<FaceDetection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = Vec::new();
    while let Some(best) = detections.first().cloned() {
        let (cluster, rest): (Vec<_>, Vec<_>) = detections
            .into_iter()
            .partition(|d| best.iou(d) > min_iou || *d == best);
        detections = rest;
        let total: f32 = cluster.iter().map(|d| d.score).sum();
        let mut merged = FaceDetection {
            score: best.score,
            box_px: [0.0; 4],
            keypoints_px: [[0.0; 2]; NUM_KEYPOINTS],
        };
        for d in &cluster {
            let w = d.score / total;
            for (m, v) in merged.box_px.iter_mut().zip(d.box_px) {
                *m += w * v;
            }
            for (m, v) in merged.keypoints_px.iter_mut().zip(d.keypoints_px) {
                m[0] += w * v[0];
                m[1] += w * v[1];
            }
        }
        kept.push(merged);
    }
    kept
}

/// BlazeFace short-range: letterboxed RGB in, scored face boxes with 6 keypoints out.
#[derive(Debug)]
pub struct BlazeFace {
    graph: TfliteGraph,
    anchors: Vec<[f32; 2]>,
    cfg: BlazeFaceConfig,
}

impl BlazeFace {
    /// Wraps the detector graph (`blazeface_short_range.safetensors`); checks its input size.
    pub fn new(cfg: &BlazeFaceConfig, graph: TfliteGraph) -> Result<Self, FaceError> {
        let expected = [1, cfg.input_size, cfg.input_size, 3];
        if graph.input_shape() != expected {
            return Err(FaceError::Graph {
                model: "BlazeFace".into(),
                message: format!(
                    "graph input {:?}, expected {expected:?}",
                    graph.input_shape()
                ),
            });
        }
        Ok(Self {
            graph,
            anchors: ssd_anchors(cfg.input_size),
            cfg: cfg.clone(),
        })
    }

    /// Loads the detector from a converted safetensors file's bytes.
    pub fn from_bytes(
        cfg: &BlazeFaceConfig,
        bytes: &[u8],
        device: &Device,
    ) -> Result<Self, FaceError> {
        Self::new(
            cfg,
            TfliteGraph::from_safetensors("BlazeFace", bytes, device)?,
        )
    }

    /// The settings this detector runs with.
    pub fn config(&self) -> &BlazeFaceConfig {
        &self.cfg
    }

    /// Raw network outputs for `xs` [1, 128, 128, 3] in [-1, 1]: regressors [1, 896, 16] and
    /// logits [1, 896, 1].
    pub fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor), FaceError> {
        let mut outs = self.graph.forward(xs)?.into_iter();
        match (outs.next(), outs.next()) {
            (Some(regressors), Some(logits)) => Ok((regressors, logits)),
            _ => Err(FaceError::Graph {
                model: "BlazeFace".into(),
                message: "graph has fewer than 2 outputs".into(),
            }),
        }
    }

    /// Decodes raw outputs into detections above the score threshold, before suppression, in
    /// image pixels.
    pub fn decode(
        &self,
        regressors: &Tensor,
        logits: &Tensor,
        letterbox: &Letterbox,
    ) -> Result<Vec<FaceDetection>, FaceError> {
        let (_, n, values) = regressors.dims3()?;
        if n != self.anchors.len() || values != REGRESSOR_VALUES {
            return Err(FaceError::Graph {
                model: "BlazeFace".into(),
                message: format!(
                    "regressors [1, {n}, {values}], expected [1, {}, {REGRESSOR_VALUES}]",
                    self.anchors.len()
                ),
            });
        }
        let regs = regressors.flatten_all()?.to_vec1::<f32>()?;
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let size = self.cfg.input_size as f32;
        let mut detections = Vec::new();
        for (i, (anchor, logit)) in self.anchors.iter().zip(&logits).enumerate() {
            let clipped = logit.clamp(-self.cfg.score_clip, self.cfg.score_clip);
            let score = 1.0 / (1.0 + (-clipped).exp());
            if score < self.cfg.min_score {
                continue;
            }
            let r = &regs[i * REGRESSOR_VALUES..(i + 1) * REGRESSOR_VALUES];
            let cx = r[0] / size + anchor[0];
            let cy = r[1] / size + anchor[1];
            let (bw, bh) = (r[2] / size, r[3] / size);
            let p0 = letterbox.to_image([cx - bw / 2.0, cy - bh / 2.0]);
            let p1 = letterbox.to_image([cx + bw / 2.0, cy + bh / 2.0]);
            let mut keypoints_px = [[0.0; 2]; NUM_KEYPOINTS];
            for (k, kp) in keypoints_px.iter_mut().enumerate() {
                *kp = letterbox.to_image([
                    r[4 + 2 * k] / size + anchor[0],
                    r[5 + 2 * k] / size + anchor[1],
                ]);
            }
            detections.push(FaceDetection {
                score,
                box_px: [p0[0], p0[1], p1[0], p1[1]],
                keypoints_px,
            });
        }
        Ok(detections)
    }

    /// Every face in `image`, best score first (empty when there is none).
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<FaceDetection>, FaceError> {
        let device = Device::Cpu;
        let (xs, geometry) = letterbox(image, self.cfg.input_size, &device)?;
        let (regressors, logits) = self.forward(&xs)?;
        let raw = self.decode(&regressors, &logits, &geometry)?;
        Ok(weighted_nms(raw, self.cfg.min_suppression_iou))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32, b: [f32; 4]) -> FaceDetection {
        FaceDetection {
            score,
            box_px: b,
            keypoints_px: [[b[0], b[1]]; NUM_KEYPOINTS],
        }
    }

    #[test]
    fn anchors_follow_the_ssd_grid() {
        let a = ssd_anchors(128);
        assert_eq!(a.len(), NUM_ANCHORS);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_the_rest() {
        let dets = vec![
            det(0.6, [10.0, 10.0, 20.0, 20.0]),
            det(0.9, [0.0, 0.0, 10.0, 10.0]),
            det(0.3, [2.0, 0.0, 12.0, 10.0]),
        ];
        let out = weighted_nms(dets, 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        // (0.9 * 0 + 0.3 * 2) / 1.2 = 0.5
        assert!((out[0].box_px[0] - 0.5).abs() < 1e-6);
        assert!((out[0].box_px[2] - 10.5).abs() < 1e-6);
        assert_eq!(out[1].box_px, [10.0, 10.0, 20.0, 20.0]);
    }
}
