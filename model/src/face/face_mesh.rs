//! MediaPipe FaceMesh v1, 468 landmarks (mediapipe `modules/face_landmark/face_landmark.tflite`
//! with `face_detection_front_detection_to_roi.pbtxt` for the crop: `DetectionsToRectsCalculator`
//! rotated by the eye line, `RectTransformationCalculator` square-long ×1.5, and
//! `LandmarkProjectionCalculator` to map landmarks back).

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::FaceError;
use super::blazeface::{FaceDetection, LEFT_EYE, RIGHT_EYE};
use super::tflite_graph::TfliteGraph;

/// Landmarks of the v1 mesh (the first 468 of the 478-point landmarker share its topology).
pub const NUM_LANDMARKS: usize = 468;
/// Right cheek edge at the ear (face-oval point used for the yaw estimate).
pub const RIGHT_CHEEK: usize = 234;
/// Left cheek edge at the ear.
pub const LEFT_CHEEK: usize = 454;

/// FaceMesh settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceMeshConfig {
    /// Side of the square network input.
    pub input_size: usize,
    /// The crop is the detection box's longer side times this (`scale_x`/`scale_y`).
    pub roi_scale: f32,
}

impl FaceMeshConfig {
    /// MediaPipe's face-landmark front settings: 192×192 input, crop 1.5× the face box.
    pub fn v1() -> Self {
        Self {
            input_size: 192,
            roi_scale: 1.5,
        }
    }
}

/// The square, rotated region of the image the mesh network sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceRoi {
    /// Centre in image pixels.
    pub centre: [f32; 2],
    /// Side in image pixels.
    pub size: f32,
    /// Rotation in radians (image axes, y down): the crop's x axis points along
    /// `(cos, sin)`, the direction from the right eye to the left eye.
    pub rotation: f32,
}

impl FaceRoi {
    /// MediaPipe's ROI for a detection: box centre, longer box side × `scale`, rotated so the
    /// line from the right eye to the left eye is horizontal in the crop.
    pub fn from_detection(detection: &FaceDetection, scale: f32) -> Self {
        let [x0, y0, x1, y1] = detection.box_px;
        let [rx, ry] = detection.keypoints_px[RIGHT_EYE];
        let [lx, ly] = detection.keypoints_px[LEFT_EYE];
        Self {
            centre: [(x0 + x1) / 2.0, (y0 + y1) / 2.0],
            size: (x1 - x0).max(y1 - y0) * scale,
            rotation: (ly - ry).atan2(lx - rx),
        }
    }

    /// The same ROI without rotation (what the golden `mesh.input` used).
    pub fn upright(self) -> Self {
        Self {
            rotation: 0.0,
            ..self
        }
    }

    /// Maps a point of the `input_size`-pixel crop to image pixels.
    pub fn crop_to_image(&self, p: [f32; 2], input_size: usize) -> [f32; 2] {
        let k = self.size / input_size as f32;
        let (u, v) = (p[0] * k - self.size / 2.0, p[1] * k - self.size / 2.0);
        let (sin, cos) = self.rotation.sin_cos();
        [
            self.centre[0] + cos * u - sin * v,
            self.centre[1] + sin * u + cos * v,
        ]
    }

    /// Maps an image pixel position into the `input_size`-pixel crop (inverse of
    /// [`Self::crop_to_image`]).
    pub fn image_to_crop(&self, p: [f32; 2], input_size: usize) -> [f32; 2] {
        let (dx, dy) = (p[0] - self.centre[0], p[1] - self.centre[1]);
        let (sin, cos) = self.rotation.sin_cos();
        let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
        let k = input_size as f32 / self.size;
        [(u + self.size / 2.0) * k, (v + self.size / 2.0) * k]
    }

    /// Samples the ROI into an NHWC tensor [1, size, size, 3] with values in [0, 1]: bilinear,
    /// black outside the image, each output pixel sampled at its centre.
    pub fn crop(
        &self,
        image: &RgbImage,
        input_size: usize,
        device: &Device,
    ) -> Result<Tensor, FaceError> {
        let (w, h) = (image.width() as i64, image.height() as i64);
        let texel = |x: i64, y: i64, c: usize| -> f32 {
            if x < 0 || y < 0 || x >= w || y >= h {
                0.0
            } else {
                image.get_pixel(x as u32, y as u32).0[c] as f32
            }
        };
        let mut data = Vec::with_capacity(input_size * input_size * 3);
        for v in 0..input_size {
            for u in 0..input_size {
                let [x, y] = self.crop_to_image([u as f32 + 0.5, v as f32 + 0.5], input_size);
                // pixel centres sit at integer + 0.5
                let (sx, sy) = (x - 0.5, y - 0.5);
                let (fx, fy) = (sx.floor(), sy.floor());
                let (ax, ay) = (sx - fx, sy - fy);
                let (ix, iy) = (fx as i64, fy as i64);
                for c in 0..3 {
                    let top = texel(ix, iy, c) * (1.0 - ax) + texel(ix + 1, iy, c) * ax;
                    let bottom = texel(ix, iy + 1, c) * (1.0 - ax) + texel(ix + 1, iy + 1, c) * ax;
                    data.push((top * (1.0 - ay) + bottom * ay) / 255.0);
                }
            }
        }
        Ok(Tensor::from_vec(
            data,
            (1, input_size, input_size, 3),
            device,
        )?)
    }
}

/// The mesh of one face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceMeshResult {
    /// 468 landmarks `[x, y, z]`: x, y in image pixels; z is relative depth in the same pixel
    /// scale (negative towards the camera, roughly 0 at the face centre).
    pub landmarks: Vec<[f32; 3]>,
    /// Face presence probability (sigmoid of the network's presence logit).
    pub presence: f32,
    /// The crop the network saw.
    pub roi: FaceRoi,
}

impl FaceMeshResult {
    /// Head yaw in degrees, estimated from the mesh: the angle of the line from the right cheek
    /// edge (234) to the left cheek edge (454) out of the image plane,
    /// `atan2(z_left - z_right, in-plane distance)`. FaceMesh z shares the x/y pixel scale
    /// (weak perspective), so this is the rotation of the face about its vertical axis;
    /// 0 is frontal, the sign tells the side.
    pub fn yaw_degrees(&self) -> f32 {
        let (Some(r), Some(l)) = (
            self.landmarks.get(RIGHT_CHEEK),
            self.landmarks.get(LEFT_CHEEK),
        ) else {
            return 0.0;
        };
        let in_plane = (l[0] - r[0]).hypot(l[1] - r[1]);
        (l[2] - r[2]).atan2(in_plane).to_degrees()
    }
}

/// FaceMesh v1: a 192×192 face crop in [0, 1], 468 landmarks and a presence logit out.
#[derive(Debug)]
pub struct FaceMesh {
    graph: TfliteGraph,
    cfg: FaceMeshConfig,
}

impl FaceMesh {
    /// Wraps the mesh graph (`face_mesh_468.safetensors`); checks its input size.
    pub fn new(cfg: &FaceMeshConfig, graph: TfliteGraph) -> Result<Self, FaceError> {
        let expected = [1, cfg.input_size, cfg.input_size, 3];
        if graph.input_shape() != expected {
            return Err(FaceError::Graph {
                model: "FaceMesh".into(),
                message: format!(
                    "graph input {:?}, expected {expected:?}",
                    graph.input_shape()
                ),
            });
        }
        Ok(Self {
            graph,
            cfg: cfg.clone(),
        })
    }

    /// Loads the mesh network from a converted safetensors file's bytes.
    pub fn from_bytes(
        cfg: &FaceMeshConfig,
        bytes: &[u8],
        device: &Device,
    ) -> Result<Self, FaceError> {
        Self::new(
            cfg,
            TfliteGraph::from_safetensors("FaceMesh", bytes, device)?,
        )
    }

    /// The settings this network runs with.
    pub fn config(&self) -> &FaceMeshConfig {
        &self.cfg
    }

    /// Raw outputs for `xs` [1, 192, 192, 3] in [0, 1]: landmarks [1, 1, 1, 1404] (468 × xyz in
    /// crop pixels) and the presence logit [1, 1, 1, 1].
    pub fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor), FaceError> {
        let mut outs = self.graph.forward(xs)?.into_iter();
        match (outs.next(), outs.next()) {
            (Some(landmarks), Some(presence_logit)) => Ok((landmarks, presence_logit)),
            _ => Err(FaceError::Graph {
                model: "FaceMesh".into(),
                message: "graph has fewer than 2 outputs".into(),
            }),
        }
    }

    /// Runs the mesh on the network-ready crop of `roi` and maps the landmarks to image pixels.
    pub fn mesh_roi(&self, image: &RgbImage, roi: FaceRoi) -> Result<FaceMeshResult, FaceError> {
        let size = self.cfg.input_size;
        let xs = roi.crop(image, size, &Device::Cpu)?;
        let (landmarks, presence_logit) = self.forward(&xs)?;
        let flat = landmarks.flatten_all()?.to_vec1::<f32>()?;
        if flat.len() != NUM_LANDMARKS * 3 {
            return Err(FaceError::TooFewLandmarks {
                got: flat.len() / 3,
            });
        }
        let z_scale = roi.size / size as f32;
        let landmarks = flat
            .chunks_exact(3)
            .map(|p| {
                let [x, y] = roi.crop_to_image([p[0], p[1]], size);
                [x, y, p[2] * z_scale]
            })
            .collect();
        let logit = presence_logit
            .flatten_all()?
            .to_vec1::<f32>()?
            .first()
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        Ok(FaceMeshResult {
            landmarks,
            presence: 1.0 / (1.0 + (-logit).exp()),
            roi,
        })
    }

    /// MediaPipe's path: rotated 1.5× ROI of `detection`, mesh, landmarks in image pixels.
    pub fn mesh(
        &self,
        image: &RgbImage,
        detection: &FaceDetection,
    ) -> Result<FaceMeshResult, FaceError> {
        self.mesh_roi(
            image,
            FaceRoi::from_detection(detection, self.cfg.roi_scale),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roi_levels_the_eye_line_and_round_trips() {
        // eyes 40 px apart, the left one 40 px lower: a 45° roll
        let det = FaceDetection {
            score: 0.9,
            box_px: [100.0, 100.0, 200.0, 180.0],
            keypoints_px: [
                [130.0, 120.0],
                [170.0, 160.0],
                [150.0, 150.0],
                [150.0, 170.0],
                [110.0, 140.0],
                [190.0, 140.0],
            ],
        };
        let roi = FaceRoi::from_detection(&det, 1.5);
        assert_eq!(roi.centre, [150.0, 140.0]);
        assert_eq!(roi.size, 150.0);
        assert!((roi.rotation - std::f32::consts::FRAC_PI_4).abs() < 1e-6);
        let r = roi.image_to_crop(det.keypoints_px[RIGHT_EYE], 192);
        let l = roi.image_to_crop(det.keypoints_px[LEFT_EYE], 192);
        assert!((r[1] - l[1]).abs() < 1e-3, "eye rows {} vs {}", r[1], l[1]);
        assert!(
            l[0] > r[0],
            "left eye must be right of the right eye in the crop"
        );
        // the eyes are 40·√2 px apart, i.e. 40·√2·192/150 crop px
        assert!((l[0] - r[0] - 40.0 * 2f32.sqrt() * 192.0 / 150.0).abs() < 1e-3);
        for p in [[0.0, 0.0], [96.0, 96.0], [191.0, 7.0]] {
            let q = roi.image_to_crop(roi.crop_to_image(p, 192), 192);
            assert!((q[0] - p[0]).abs() < 1e-3 && (q[1] - p[1]).abs() < 1e-3);
        }
        // the crop centre is the ROI centre
        assert_eq!(roi.crop_to_image([96.0, 96.0], 192), [150.0, 140.0]);
    }
}
