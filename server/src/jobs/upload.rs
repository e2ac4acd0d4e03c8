//! Reading a submission: the multipart form of `POST /api/v1/inference/hallo2` streamed into
//! the job's folder under generated names (the size limit is enforced while streaming), the
//! optional parameters parsed and range-checked, then the inputs validated the way generation
//! will read them (image decode + a face, audio decode + duration + not silent).

use std::path::{Path, PathBuf};

use app::jobs::JobParams;
use axum::extract::Multipart;
use axum::http::StatusCode;
use model::audio_io::{AudioError, AudioLimits, DecodedAudio, decode_audio_bytes};
use model::face::{FaceDetector, FaceError};
use model::image_io::{ImageError, ImageLimits, decode_image};
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;

/// Form fields we accept (old API: `image_file`, `audio_file`, `use_cache`).
pub const FIELDS: &[&str] = &[
    "image_file",
    "audio_file",
    "use_cache",
    "separate_vocals",
    "pose_weight",
    "face_weight",
    "lip_weight",
    "steps",
    "cfg_scale",
    "seed",
    "face_expand_ratio",
];

/// Bytes of a rejected request read (and dropped) before answering, so that a client still
/// sending gets the answer instead of a reset connection; past this the connection is closed.
pub const DRAIN_BYTES: u64 = 64 << 20;

/// Audio extensions the decoder reads (a hint for the container probe; the bytes decide).
const AUDIO_EXTENSIONS: &[&str] = &["wav", "mp3", "m4a", "ogg", "flac"];

/// An uploaded file, stored in the job's folder.
#[derive(Debug, Clone)]
pub struct StoredFile {
    /// Our name inside the job folder (`image.png`, `audio.wav`).
    pub stored: String,
    /// The client's name, for display only.
    pub client_name: String,
    pub bytes: u64,
}

/// A read and validated submission.
#[derive(Debug, Clone)]
pub struct Submission {
    pub image: StoredFile,
    pub audio: StoredFile,
    pub params: JobParams,
    pub audio_seconds: f64,
}

fn input(
    status: StatusCode,
    kind: &'static str,
    field: Option<&'static str>,
    message: impl Into<String>,
) -> ApiError {
    ApiError::Input {
        status,
        kind,
        field,
        message: message.into(),
    }
}

/// The client's file name reduced to something safe to show: the last path component, no
/// control characters, at most 120 characters.
pub fn display_name(raw: Option<&str>, fallback: &str) -> String {
    let name = raw
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect::<String>();
    let name = name.trim().trim_start_matches('.').to_string();
    if name.is_empty() {
        fallback.into()
    } else {
        name
    }
}

/// Streams the form into `dir`; `limit` bounds all file bytes together.
pub async fn read_form(
    mut form: Multipart,
    dir: &Path,
    limit: u64,
) -> Result<(Option<StoredFile>, Option<StoredFile>, JobParams), ApiError> {
    let mut image = None;
    let mut audio = None;
    let mut params = JobParams {
        use_cache: true,
        ..JobParams::default()
    };
    let mut total = 0u64;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit)),
        };
        let name = field.name().unwrap_or("").to_string();
        let Some(&known) = FIELDS.iter().find(|f| **f == name) else {
            // Read the rest (bounded) so the client, still sending, gets the answer.
            drop(field);
            drain_form(&mut form).await;
            return Err(input(
                StatusCode::BAD_REQUEST,
                "unknown_field",
                None,
                format!(
                    "unknown form field {name:?}; expected {}",
                    FIELDS.join(", ")
                ),
            ));
        };
        match known {
            "image_file" | "audio_file" => {
                let is_image = known == "image_file";
                let client_name = display_name(field.file_name(), known);
                let stored = if is_image {
                    "image.upload".to_string()
                } else {
                    "audio.upload".to_string()
                };
                let path = dir.join(&stored);
                let bytes = match stream_to(field, &path, limit, &mut total, known).await {
                    Ok(n) => n,
                    Err(e) => {
                        drain_form(&mut form).await;
                        return Err(e);
                    }
                };
                let file = StoredFile {
                    stored,
                    client_name,
                    bytes,
                };
                if is_image {
                    image = Some(file);
                } else {
                    audio = Some(file);
                }
            }
            _ => {
                let text = field.text().await.map_err(|e| multipart_error(e, limit))?;
                if let Err(e) = set_param(&mut params, known, text.trim()) {
                    drain_form(&mut form).await;
                    return Err(e);
                }
            }
        }
    }
    Ok((image, audio, params))
}

/// Reads and drops the rest of a form, at most [`DRAIN_BYTES`].
async fn drain_form(form: &mut Multipart) {
    let mut left = DRAIN_BYTES as i64;
    while let Ok(Some(mut field)) = form.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            left -= chunk.len() as i64;
            if left < 0 {
                return;
            }
        }
    }
}

/// Reads and drops a request body that is refused before it is parsed, at most
/// [`DRAIN_BYTES`].
pub async fn drain_body(body: axum::body::Body) {
    let _ = axum::body::to_bytes(body, DRAIN_BYTES as usize).await;
}

async fn stream_to(
    mut field: axum::extract::multipart::Field<'_>,
    path: &Path,
    limit: u64,
    total: &mut u64,
    name: &'static str,
) -> Result<u64, ApiError> {
    let internal = |e: std::io::Error| ApiError::Internal(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(internal)?;
    let mut written = 0u64;
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit)),
        };
        written += chunk.len() as u64;
        *total += chunk.len() as u64;
        if *total > limit {
            // The rest of this field is read and dropped (bounded) so the client, still
            // sending, gets the answer instead of a reset connection.
            let mut left = DRAIN_BYTES as i64;
            while let Ok(Some(rest)) = field.chunk().await {
                left -= rest.len() as i64;
                if left < 0 {
                    break;
                }
            }
            return Err(too_large(limit, Some(name)));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    file.sync_all().await.map_err(internal)?;
    Ok(written)
}

fn too_large(limit: u64, field: Option<&'static str>) -> ApiError {
    input(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        field,
        format!(
            "the upload is larger than the limit of {} MB",
            limit as f64 / 1e6
        ),
    )
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(limit, None);
    }
    input(
        StatusCode::BAD_REQUEST,
        "bad_form",
        None,
        format!("unreadable multipart form: {}", e.body_text()),
    )
}

fn set_param(p: &mut JobParams, field: &'static str, text: &str) -> Result<(), ApiError> {
    let bad = |what: &str| {
        input(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_parameter",
            Some(field),
            format!("{field} must be {what} (got {text:?})"),
        )
    };
    let float = |lo: f64, hi: f64| -> Result<f64, ApiError> {
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && (lo..=hi).contains(v))
            .ok_or_else(|| bad(&format!("a number from {lo} to {hi}")))
    };
    let flag = || match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad("true or false")),
    };
    if text.is_empty() {
        return Ok(()); // an empty field means "the default"
    }
    match field {
        "use_cache" => p.use_cache = flag()?,
        "separate_vocals" => p.separate_vocals = Some(flag()?),
        "pose_weight" => p.pose_weight = Some(float(0.0, 2.0)?),
        "face_weight" => p.face_weight = Some(float(0.0, 2.0)?),
        "lip_weight" => p.lip_weight = Some(float(0.0, 2.0)?),
        "cfg_scale" => p.cfg_scale = Some(float(1.0, 20.0)?),
        "face_expand_ratio" => p.face_expand_ratio = Some(float(1.0, 2.0)?),
        "steps" => {
            p.steps = Some(
                text.parse::<usize>()
                    .ok()
                    .filter(|s| (1..=200).contains(s))
                    .ok_or_else(|| bad("a whole number from 1 to 200"))?,
            )
        }
        "seed" => p.seed = Some(text.parse::<u64>().map_err(|_| bad("a whole number ≥ 0"))?),
        _ => {}
    }
    Ok(())
}

/// What validation found out about the inputs.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Extensions to store the files under (from the decoded formats).
    pub image_ext: &'static str,
    pub audio_ext: &'static str,
    pub audio: DecodedAudio,
}

/// Decodes both inputs as generation will, and looks for the face; the specific message for
/// each way they can be wrong. Blocking (run it off the async runtime).
pub fn validate(
    dir: &Path,
    image: &StoredFile,
    audio: &StoredFile,
    image_limits: &ImageLimits,
    audio_limits: &AudioLimits,
    detector: &FaceDetector,
) -> Result<Checked, ApiError> {
    let read = |f: &StoredFile| -> Result<Vec<u8>, ApiError> {
        std::fs::read(dir.join(&f.stored))
            .map_err(|e| ApiError::Internal(format!("reading the upload back: {e}")))
    };
    let image_bytes = read(image)?;
    let rgb = decode_image(&image_bytes, &image.client_name, image_limits).map_err(image_error)?;
    let image_ext = match image::guess_format(&image_bytes) {
        Ok(image::ImageFormat::Png) => "png",
        Ok(image::ImageFormat::WebP) => "webp",
        _ => "jpg",
    };
    detector.portrait_face(&rgb).map_err(face_error)?;

    let audio_bytes = read(audio)?;
    let ext = Path::new(&audio.client_name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let audio_ext = ext
        .as_deref()
        .and_then(|e| AUDIO_EXTENSIONS.iter().find(|x| **x == e))
        .copied()
        .unwrap_or("bin");
    let decoded =
        decode_audio_bytes(&audio_bytes, ext.as_deref(), audio_limits).map_err(audio_error)?;
    Ok(Checked {
        image_ext,
        audio_ext,
        audio: decoded,
    })
}

/// Gives the stored files their final names (`image.png`, `audio.wav`).
pub fn finalise_names(
    dir: &Path,
    image: &mut StoredFile,
    audio: &mut StoredFile,
    checked: &Checked,
) -> Result<(), ApiError> {
    for (file, name) in [
        (image, format!("image.{}", checked.image_ext)),
        (audio, format!("audio.{}", checked.audio_ext)),
    ] {
        let from: PathBuf = dir.join(&file.stored);
        std::fs::rename(&from, dir.join(&name))
            .map_err(|e| ApiError::Internal(format!("storing {}: {e}", from.display())))?;
        file.stored = name;
    }
    Ok(())
}

pub(crate) fn image_error(e: ImageError) -> ApiError {
    let (status, kind) = match &e {
        ImageError::UnsupportedFormat { .. } => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image")
        }
        ImageError::TooManyPixels { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"),
        ImageError::NotAnImage { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_an_image"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
    };
    input(status, kind, Some("image_file"), e.to_string())
}

pub(crate) fn face_error(e: FaceError) -> ApiError {
    let kind = match &e {
        FaceError::NoFace => "no_face",
        _ => "face_analysis",
    };
    input(
        StatusCode::UNPROCESSABLE_ENTITY,
        kind,
        Some("image_file"),
        e.to_string(),
    )
}

pub(crate) fn audio_error(e: AudioError) -> ApiError {
    let (status, kind) = match &e {
        AudioError::UnsupportedCodec { .. }
        | AudioError::UnrecognisedFormat { .. }
        | AudioError::NoAudioTrack { .. } => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_audio")
        }
        AudioError::Silent { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "silent_audio"),
        AudioError::TooLong { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "audio_too_long"),
        AudioError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        AudioError::Empty => (StatusCode::UNPROCESSABLE_ENTITY, "empty_audio"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_audio"),
    };
    input(status, kind, Some("audio_file"), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_are_reduced_to_a_safe_display_name() {
        assert_eq!(display_name(Some("../../etc/passwd"), "x"), "passwd");
        assert_eq!(
            display_name(Some("C:\\Users\\me\\face.png"), "x"),
            "face.png"
        );
        assert_eq!(display_name(Some("..."), "image_file"), "image_file");
        assert_eq!(display_name(Some("a\u{0}b\nc.wav"), "x"), "abc.wav");
        assert_eq!(display_name(None, "audio_file"), "audio_file");
    }

    #[test]
    fn parameters_are_range_checked_with_the_field_named() {
        let mut p = JobParams::default();
        set_param(&mut p, "steps", "25").unwrap();
        set_param(&mut p, "lip_weight", "1.5").unwrap();
        set_param(&mut p, "use_cache", "false").unwrap();
        set_param(&mut p, "separate_vocals", "off").unwrap();
        assert_eq!(p.separate_vocals, Some(false));
        assert!(set_param(&mut p, "separate_vocals", "maybe").is_err());
        set_param(&mut p, "seed", "").unwrap();
        assert_eq!(
            (p.steps, p.lip_weight, p.use_cache, p.seed),
            (Some(25), Some(1.5), false, None)
        );
        let e = set_param(&mut p, "lip_weight", "3").unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body().field.as_deref(), Some("lip_weight"));
        assert!(set_param(&mut p, "steps", "0").is_err());
        assert!(set_param(&mut p, "cfg_scale", "NaN").is_err());
    }
}
