//! The whole face path in one call, for the studio's pre-flight overlay and for generation:
//! detection + mesh (policy and warnings), Hallo2's masks and face region, source pixels and the
//! identity embedding — plus a content-hash cache of the result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::embedding::FaceAnalysis;
use super::masks::{HalloMasks, MaskConfig, source_pixels};
use super::{FaceDetector, FaceError};

/// Everything Hallo2 needs from a portrait, and what the user should see before generating.
#[derive(Debug, Clone)]
pub struct FacePreflight {
    pub summary: PreflightSummary,
    /// `(3, S, S)` in [-1, 1].
    pub source_pixels: Tensor,
    /// Identity embedding `(D,)` (zeros when InsightFace found no face; see the warnings).
    pub face_emb: Tensor,
    pub masks: HalloMasks,
}

/// The serialisable part of a pre-flight: what the overlay draws and the warnings it shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreflightSummary {
    pub width: u32,
    pub height: u32,
    /// The chosen face box `[x0, y0, x1, y1]` in image pixels.
    pub face_box: [f32; 4],
    pub detection_score: f32,
    /// BlazeFace keypoints: right eye, left eye, nose tip, mouth centre, right ear, left ear.
    pub keypoints: Vec<[f32; 2]>,
    /// 468 mesh landmarks `[x, y, z]` in image pixels.
    pub landmarks: Vec<[f32; 3]>,
    pub faces_found: usize,
    pub yaw_degrees: f32,
    /// Whether the identity embedding found a face (false: zero embedding, as Hallo2 does).
    pub identity_found: bool,
    /// Human messages for the UI, most important first.
    pub warnings: Vec<String>,
}

/// The loaded face models (shared by every job) with the mask settings of one generation.
pub struct FacePreprocessor<'m> {
    detector: &'m FaceDetector,
    analysis: &'m FaceAnalysis,
    masks: MaskConfig,
    /// Identifies the models and settings in cache keys.
    fingerprint: String,
}

impl<'m> FacePreprocessor<'m> {
    /// `analysis`: the official `pretrained_models/face_analysis/models/` loaded once.
    pub fn new(detector: &'m FaceDetector, analysis: &'m FaceAnalysis, masks: MaskConfig) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(analysis.fingerprint().as_bytes());
        hasher.update(&(masks.image_size as u64).to_le_bytes());
        hasher.update(&masks.face_expand_ratio.to_le_bytes());
        Self {
            detector,
            analysis,
            masks,
            fingerprint: hasher.finalize().to_hex()[..16].to_string(),
        }
    }

    /// Runs the whole face path on `image` (CPU tensors).
    pub fn prepare(&self, image: &RgbImage) -> Result<FacePreflight, FaceError> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let face = self.detector.portrait_face(image)?;
        let masks = HalloMasks::new(&self.masks, &face.mesh.landmarks, w, h, &Device::Cpu)?;
        let pixels = source_pixels(image.as_raw(), w, h, self.masks.image_size, &Device::Cpu)?;
        let embedding = self.analysis.embed(image)?;
        let mut warnings: Vec<String> = face.warnings.iter().map(|w| w.to_string()).collect();
        warnings.extend(embedding.warning.clone());
        let face_emb = Tensor::new(embedding.vector.as_slice(), &Device::Cpu)?;
        Ok(FacePreflight {
            summary: PreflightSummary {
                width: image.width(),
                height: image.height(),
                face_box: face.detection.box_px,
                detection_score: face.detection.score,
                keypoints: face.detection.keypoints_px.to_vec(),
                landmarks: face.mesh.landmarks.clone(),
                faces_found: face.faces_found,
                yaw_degrees: face.yaw_degrees,
                identity_found: embedding.kps.is_some(),
                warnings,
            },
            source_pixels: pixels,
            face_emb,
            masks,
        })
    }

    /// [`Self::prepare`] through a content-hash cache in `cache_dir`: the same pixels with the
    /// same models and settings are computed once. Returns the result and whether it was cached.
    pub fn prepare_cached(
        &self,
        image: &RgbImage,
        cache_dir: &Path,
    ) -> Result<(FacePreflight, bool), FaceError> {
        let key = self.cache_key(image);
        let (tensors_path, summary_path) = cache_paths(cache_dir, &key);
        if let Some(hit) = read_cached(&tensors_path, &summary_path) {
            return Ok((hit, true));
        }
        let preflight = self.prepare(image)?;
        write_cached(&preflight, cache_dir, &tensors_path, &summary_path)?;
        Ok((preflight, false))
    }

    fn cache_key(&self, image: &RgbImage) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.fingerprint.as_bytes());
        hasher.update(&image.width().to_le_bytes());
        hasher.update(&image.height().to_le_bytes());
        hasher.update(image.as_raw());
        hasher.finalize().to_hex()[..32].to_string()
    }
}

fn cache_paths(dir: &Path, key: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("face-{key}.safetensors")),
        dir.join(format!("face-{key}.json")),
    )
}

const LEVELS: usize = 4;

fn read_cached(tensors: &Path, summary: &Path) -> Option<FacePreflight> {
    let summary: PreflightSummary = serde_json::from_slice(&std::fs::read(summary).ok()?).ok()?;
    let mut t = candle_core::safetensors::load(tensors, &Device::Cpu).ok()?;
    let mut level = |kind: &str| -> Option<[Tensor; LEVELS]> {
        let v: Vec<Tensor> = (0..LEVELS)
            .map(|l| t.remove(&format!("{kind}_mask.{l}")))
            .collect::<Option<_>>()?;
        v.try_into().ok()
    };
    let masks = HalloMasks {
        full_mask: level("full")?,
        face_mask: level("face")?,
        lip_mask: level("lip")?,
        face_region: t.remove("face_region")?,
    };
    Some(FacePreflight {
        summary,
        source_pixels: t.remove("source_pixels")?,
        face_emb: t.remove("face_emb")?,
        masks,
    })
}

/// Writes both files via temporary names; the summary goes last, so a present summary means a
/// complete entry.
fn write_cached(
    p: &FacePreflight,
    dir: &Path,
    tensors: &Path,
    summary: &Path,
) -> Result<(), FaceError> {
    let io = |e: std::io::Error| FaceError::Cache(format!("writing {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (kind, levels) in [
        ("full", &p.masks.full_mask),
        ("face", &p.masks.face_mask),
        ("lip", &p.masks.lip_mask),
    ] {
        for (l, t) in levels.iter().enumerate() {
            map.insert(format!("{kind}_mask.{l}"), t.to_dtype(DType::F32)?);
        }
    }
    map.insert("face_region".into(), p.masks.face_region.clone());
    map.insert("source_pixels".into(), p.source_pixels.clone());
    map.insert("face_emb".into(), p.face_emb.clone());
    let tmp = tensors.with_extension(format!("{}.tmp", std::process::id()));
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::rename(&tmp, tensors).map_err(io)?;
    let json = serde_json::to_vec(&p.summary).map_err(|e| FaceError::Cache(e.to_string()))?;
    let tmp = summary.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, summary).map_err(io)?;
    Ok(())
}
