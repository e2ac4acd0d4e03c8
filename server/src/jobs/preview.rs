//! The studio's previews before anything is submitted, computed the way generation will:
//! `POST /api/preflight` (face box, mesh, Hallo2's regions and soft masks for a face expand
//! ratio, warnings) and `POST /api/preflight/audio` (duration, format, waveform). Inputs that
//! generation would refuse get the same error here, so the message shows before submitting.

use std::path::Path;

use app::jobs::{AudioPreview, MaskPreview, PreflightView};
use base64::Engine;
use model::audio_features::{FPS, SAMPLE_RATE, frame_count};
use model::audio_io::{AudioLimits, decode_audio_bytes};
use model::face::FaceDetector;
use model::face::GrayImage;
use model::face::masks::{BinaryMasks, SoftMasks};
use model::image_io::{ImageLimits, decode_image};

use crate::error::{ApiError, Refusal};

/// Slices of the waveform outline (about one per pixel of the preview).
pub const WAVEFORM_BUCKETS: usize = 600;

/// Decodes a stored portrait, finds its face and computes Hallo2's masks for `face_expand_ratio`.
pub fn check_portrait(
    path: &Path,
    name: &str,
    limits: &ImageLimits,
    detector: &FaceDetector,
    face_expand_ratio: f64,
) -> Result<PreflightView, ApiError> {
    let rgb = decode_image(&read_back(path)?, name, limits).map_err(Refusal::from)?;
    let face = detector.portrait_face(&rgb).map_err(Refusal::from)?;
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let binary = BinaryMasks::from_landmarks(&face.mesh.landmarks, w, h, face_expand_ratio)
        .map_err(Refusal::from)?;
    let soft = SoftMasks::new(&binary);
    let bounds = |b: [usize; 4]| b.map(|v| v as u32);
    Ok(PreflightView {
        width: rgb.width(),
        height: rgb.height(),
        face_box: face.detection.box_px,
        score: face.detection.score,
        landmarks: face.mesh.landmarks.iter().map(|p| [p[0], p[1]]).collect(),
        faces_found: face.faces_found,
        yaw_degrees: face.yaw_degrees,
        warnings: face.warnings.iter().map(|w| w.to_string()).collect(),
        masks: MaskPreview {
            face_expand_ratio,
            face_region: bounds(binary.face_box.pixel_bounds(w, h)),
            lip_region: bounds(binary.lip_box.pixel_bounds(w, h)),
            pose_png: png_data_url(&soft.background)?,
            face_png: png_data_url(&soft.face)?,
            lip_png: png_data_url(&soft.lip)?,
        },
    })
}

/// Decodes stored speech with the submission's limits and outlines its waveform.
pub fn check_audio(
    path: &Path,
    extension: Option<&str>,
    limits: &AudioLimits,
) -> Result<AudioPreview, ApiError> {
    let audio = decode_audio_bytes(&read_back(path)?, extension, limits).map_err(Refusal::from)?;
    Ok(AudioPreview {
        duration_s: audio.duration_s,
        frames: frame_count(audio.samples_16k.len(), SAMPLE_RATE, FPS),
        sample_rate: audio.source_rate,
        channels: audio.channels,
        codec: audio.codec.clone(),
        peak_dbfs: audio.peak_dbfs,
        waveform: audio.waveform(WAVEFORM_BUCKETS),
    })
}

fn read_back(path: &Path) -> Result<Vec<u8>, ApiError> {
    std::fs::read(path).map_err(|e| ApiError::Internal(format!("reading the upload back: {e}")))
}

fn png_data_url(mask: &GrayImage) -> Result<String, ApiError> {
    let img = image::GrayImage::from_raw(mask.width as u32, mask.height as u32, mask.data.clone())
        .ok_or_else(|| ApiError::Internal("mask buffer of the wrong size".into()))?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| ApiError::Internal(format!("encoding a mask: {e}")))?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.into_inner())
    ))
}
