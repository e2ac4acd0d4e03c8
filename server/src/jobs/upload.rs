//! Reading a submission: the multipart form of `POST /api/v1/inference/hallo2` streamed into
//! the job's folder under generated names (the size limit is enforced while streaming), the
//! optional parameters parsed and range-checked, then the inputs validated the way generation
//! will read them (image decode + a face, audio decode + duration + not silent).

use std::path::{Path, PathBuf};

use app::jobs::JobParams;
use model::audio_io::{AudioLimits, DecodedAudio, decode_audio_bytes};
use model::face::FaceDetector;
use model::image_io::{ImageLimits, decode_image};
use multer::Multipart;
use tokio::io::AsyncWriteExt;

use crate::body::{BodyError, DRAIN_BYTES};
use crate::error::{ApiError, Refusal};

/// The two file fields (old API: `image_file`, `audio_file`); the others are
/// [`JobParams::FIELDS`].
pub const FILE_FIELDS: [&str; 2] = ["image_file", "audio_file"];

/// Every field a form may have, for the unknown-field message.
fn expected_fields() -> String {
    FILE_FIELDS
        .iter()
        .chain(JobParams::FIELDS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Most bytes a text field may have (numbers and switches are a few bytes).
pub const TEXT_FIELD_BYTES: usize = 4096;
/// Most fields a form may have (the files and parameters, each at most a few times).
pub const MAX_FIELDS: usize = 32;
/// Form bytes besides the files (text fields, part headers, boundaries), for the whole-body
/// bound.
pub const FORM_OVERHEAD_BYTES: u64 = (MAX_FIELDS * (TEXT_FIELD_BYTES + 1024)) as u64;

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

/// The multipart form of a request with this `Content-Type` and body; a body that is not one
/// is read (bounded) and refused, so the client sees the answer.
pub async fn multipart(
    content_type: Option<&str>,
    body: axum::body::Body,
) -> Result<Multipart<'static>, Refusal> {
    match content_type.map(multer::parse_boundary) {
        Some(Ok(boundary)) => Ok(Multipart::new(body.into_data_stream(), boundary)),
        other => {
            drain_body(body).await;
            Err(Refusal::BadForm(match other {
                Some(Err(e)) => e.to_string(),
                _ => "the request has no Content-Type".into(),
            }))
        }
    }
}

/// Streams the form into `dir`; `limit` bounds all file bytes together. Parameters are
/// parsed for their type only ([`JobParams::validate`] checks their ranges) over `initial`
/// (what a field left out stays).
pub async fn read_form(
    mut form: Multipart<'static>,
    dir: &Path,
    limit: u64,
    initial: JobParams,
) -> Result<(Option<StoredFile>, Option<StoredFile>, JobParams), ApiError> {
    let mut image = None;
    let mut audio = None;
    let mut params = initial;
    let mut total = 0u64;
    let mut fields = 0;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit)),
        };
        fields += 1;
        if fields > MAX_FIELDS {
            drop(field);
            drain_form(&mut form).await;
            return Err(Refusal::BadForm(format!("more than {MAX_FIELDS} form fields")).into());
        }
        let name = field.name().unwrap_or("").to_string();
        let Some(&known) = FILE_FIELDS
            .iter()
            .chain(JobParams::FIELDS)
            .find(|f| **f == name)
        else {
            // Read the rest (bounded) so the client, still sending, gets the answer.
            drop(field);
            drain_form(&mut form).await;
            return Err(Refusal::UnknownField {
                name,
                expected: expected_fields(),
            }
            .into());
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
                let text = match read_text(field, known, limit).await {
                    Ok(text) => text,
                    Err(e) => {
                        drain_form(&mut form).await;
                        return Err(e);
                    }
                };
                if let Err(e) = params.set_field(known, &text) {
                    drain_form(&mut form).await;
                    return Err(Refusal::from(e).into());
                }
            }
        }
    }
    Ok((image, audio, params))
}

/// A text field, at most [`TEXT_FIELD_BYTES`] (past that the field is read to its end, bounded,
/// and refused).
async fn read_text(
    mut field: multer::Field<'static>,
    name: &'static str,
    limit: u64,
) -> Result<String, ApiError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        if text.len() + chunk.len() > TEXT_FIELD_BYTES {
            let mut budget = DRAIN_BYTES;
            drain_field(&mut field, &mut budget).await;
            return Err(Refusal::FieldTooLong {
                field: name,
                limit: TEXT_FIELD_BYTES,
            }
            .into());
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).map_err(|_| {
        Refusal::BadParameter {
            field: name,
            message: format!("{name} is not UTF-8 text"),
        }
        .into()
    })
}

/// Reads and drops the rest of a field, at most `budget` bytes (what is read is taken from it).
async fn drain_field(field: &mut multer::Field<'static>, budget: &mut u64) {
    while *budget > 0
        && let Ok(Some(chunk)) = field.chunk().await
    {
        *budget = budget.saturating_sub(chunk.len() as u64);
    }
}

/// Reads and drops the rest of a form, at most [`DRAIN_BYTES`].
pub async fn drain_form(form: &mut Multipart<'static>) {
    let mut budget = DRAIN_BYTES;
    while budget > 0
        && let Ok(Some(mut field)) = form.next_field().await
    {
        drain_field(&mut field, &mut budget).await;
    }
}

/// Reads and drops a request body that is refused before it is parsed, at most
/// [`DRAIN_BYTES`].
pub async fn drain_body(body: axum::body::Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut left = DRAIN_BYTES;
    while let Some(Ok(chunk)) = stream.next().await {
        left = left.saturating_sub(chunk.len() as u64);
        if left == 0 {
            return;
        }
    }
}

async fn stream_to(
    mut field: multer::Field<'static>,
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
            let mut budget = DRAIN_BYTES;
            drain_field(&mut field, &mut budget).await;
            return Err(Refusal::TooLarge {
                limit,
                field: Some(name),
            }
            .into());
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    // Not fsynced here: a submission's files are made durable once they have their final names
    // (`JobStore::make_durable`), a pre-flight's are scratch.
    file.flush().await.map_err(internal)?;
    Ok(written)
}

fn multipart_error(e: multer::Error, limit: u64) -> ApiError {
    match BodyError::find(&e) {
        Some(BodyError::TooLarge { .. }) => {
            return Refusal::TooLarge { limit, field: None }.into();
        }
        Some(BodyError::TimedOut { idle }) => return Refusal::ReadTimeout(idle).into(),
        None => {}
    }
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            Refusal::TooLarge { limit, field: None }.into()
        }
        e => Refusal::BadForm(format!("unreadable multipart form: {e}")).into(),
    }
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
    let rgb =
        decode_image(&image_bytes, &image.client_name, image_limits).map_err(Refusal::from)?;
    let image_ext = match image::guess_format(&image_bytes) {
        Ok(image::ImageFormat::Png) => "png",
        Ok(image::ImageFormat::WebP) => "webp",
        _ => "jpg",
    };
    detector.portrait_face(&rgb).map_err(Refusal::from)?;

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
        decode_audio_bytes(&audio_bytes, ext.as_deref(), audio_limits).map_err(Refusal::from)?;
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
}
