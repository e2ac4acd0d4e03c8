//! Image files → RGB pixels with size limits.
//!
//! Decodes PNG, JPEG and WebP (the `image` crate's decoders), applies the EXIF orientation, and
//! refuses what a server must not try to decode: decompression bombs (the pixel count is checked
//! from the header before any pixel is decoded, and the decoder gets a memory cap), truncated or
//! damaged files, images without pixels, non-image bytes and other formats. Colour handling
//! follows PIL's `convert("RGB")`: grey is replicated, alpha is dropped, 16-bit is scaled to 8.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Default cap on decoded pixels (40 megapixels, e.g. 8000×5000).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Default cap on the decoder's allocations (enough for 40 MP of 16-bit RGBA).
pub const DEFAULT_MAX_ALLOC_BYTES: u64 = 512 * 1024 * 1024;

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted `width × height`, checked from the header before decoding.
    pub max_pixels: u64,
    /// Largest allocation the decoder may make, in bytes.
    pub max_alloc_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_alloc_bytes: DEFAULT_MAX_ALLOC_BYTES,
        }
    }
}

/// Why an image could not be used. `name` is the file name (or whatever the caller passed).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{name} is not an image (it starts with bytes {head}); upload a PNG, JPEG or WebP file"
    )]
    NotAnImage { name: String, head: String },
    #[error("{name} is a {format} image; only PNG, JPEG and WebP are supported, convert it first")]
    UnsupportedFormat { name: String, format: String },
    #[error("{name} uses a {format} feature this decoder does not support: {detail}")]
    UnsupportedFeature {
        name: String,
        format: &'static str,
        detail: String,
    },
    #[error(
        "{name} is {width}x{height} = {pixels} pixels, above the limit of {max_pixels}; downscale it first"
    )]
    TooManyPixels {
        name: String,
        width: u32,
        height: u32,
        pixels: u64,
        max_pixels: u64,
    },
    #[error("{name} is {width}x{height}: it has no pixels")]
    NoPixels {
        name: String,
        width: u32,
        height: u32,
    },
    #[error(
        "{name} is cut short: the {format} data ends before the image is complete ({detail}); upload the whole file"
    )]
    Truncated {
        name: String,
        format: &'static str,
        detail: String,
    },
    #[error("{name} is a damaged {format} file: {detail}")]
    Corrupt {
        name: String,
        format: &'static str,
        detail: String,
    },
    #[error("decoding {name} needs more than the {max_alloc_bytes}-byte memory limit ({detail})")]
    MemoryLimit {
        name: String,
        max_alloc_bytes: u64,
        detail: String,
    },
}

/// Reads and decodes the image file at `path` (see [`decode_image`]).
pub fn read_image(path: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    decode_image(&bytes, &name, limits)
}

/// Decodes PNG, JPEG or WebP `bytes` into RGB8, upright per the EXIF orientation. The format is
/// recognised from the content, not from `name`, which only labels errors.
pub fn decode_image(
    bytes: &[u8],
    name: &str,
    limits: &ImageLimits,
) -> Result<RgbImage, ImageError> {
    // The decoders are third-party parsers of untrusted bytes: a panic in one refuses this file,
    // not the process.
    std::panic::catch_unwind(|| decode_image_unguarded(bytes, name, limits)).unwrap_or_else(|_| {
        Err(ImageError::Corrupt {
            name: name.to_string(),
            format: image::guess_format(bytes).map_or("image", format_label),
            detail: "the decoder could not handle its headers or data".into(),
        })
    })
}

fn decode_image_unguarded(
    bytes: &[u8],
    name: &str,
    limits: &ImageLimits,
) -> Result<RgbImage, ImageError> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => f,
        Ok(other) => {
            return Err(ImageError::UnsupportedFormat {
                name: name.to_string(),
                format: format!("{other:?}").to_uppercase(),
            });
        }
        Err(_) => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(ImageError::NotAnImage {
                name: name.to_string(),
                head: if head.is_empty() {
                    "(empty file)".into()
                } else {
                    head.join(" ")
                },
            });
        }
    };
    let label = format_label(format);
    let classify = |e: image::ImageError| classify(e, name, label, limits);

    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits);
    // Building the decoder parses the header only; no pixel buffer exists yet.
    let mut decoder = reader.into_decoder().map_err(|e| {
        // Decoders reject a zero side as a format error; name it for what it is.
        match header_size(bytes, format) {
            Some((width, height)) if width == 0 || height == 0 => ImageError::NoPixels {
                name: name.to_string(),
                width,
                height,
            },
            _ => classify(e),
        }
    })?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            name: name.to_string(),
            width,
            height,
            pixels,
            max_pixels: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(ImageError::NoPixels {
            name: name.to_string(),
            width,
            height,
        });
    }
    if decoder.total_bytes() > limits.max_alloc_bytes {
        return Err(ImageError::MemoryLimit {
            name: name.to_string(),
            max_alloc_bytes: limits.max_alloc_bytes,
            detail: format!(
                "{width}x{height} decodes to {} bytes",
                decoder.total_bytes()
            ),
        });
    }
    match format {
        ImageFormat::Jpeg => check_jpeg_complete(bytes, name)?,
        ImageFormat::WebP => check_riff_complete(bytes, name)?,
        _ => {}
    }
    let orientation = decoder.orientation().map_err(classify)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(classify)?;
    image.apply_orientation(orientation);
    Ok(image.to_rgb8())
}

fn format_label(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        _ => "image",
    }
}

/// Width and height as the PNG (IHDR) or JPEG (first SOFn) header states them.
fn header_size(bytes: &[u8], format: ImageFormat) -> Option<(u32, u32)> {
    let be16 = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let be32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match format {
        ImageFormat::Png if bytes.get(12..16) == Some(b"IHDR") => Some((be32(16)?, be32(20)?)),
        ImageFormat::Jpeg => {
            // walk the marker segments up to the first start-of-frame
            let mut at = 2;
            while bytes.get(at) == Some(&0xFF) {
                let marker = *bytes.get(at + 1)?;
                if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
                    return Some((be16(at + 7)?, be16(at + 5)?));
                }
                at += 2 + be16(at + 2)? as usize;
            }
            None
        }
        _ => None,
    }
}

/// A JPEG whose last scan (SOS, `FF DA`) is not followed by the end-of-image marker (`FF D9`)
/// was cut off: the JPEG decoder would otherwise fill the missing rows with grey. An embedded
/// EXIF thumbnail has its own markers, but they come before the main image's scans.
fn check_jpeg_complete(bytes: &[u8], name: &str) -> Result<(), ImageError> {
    let last = |marker: u8| {
        bytes
            .windows(2)
            .rposition(|w| w[0] == 0xFF && w[1] == marker)
    };
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) if eoi > sos => Ok(()),
        (None, _) => Err(ImageError::Truncated {
            name: name.to_string(),
            format: "JPEG",
            detail: format!("no image scan in {} bytes", bytes.len()),
        }),
        _ => Err(ImageError::Truncated {
            name: name.to_string(),
            format: "JPEG",
            detail: format!(
                "no end-of-image marker after the last scan, {} bytes",
                bytes.len()
            ),
        }),
    }
}

/// A WebP file is one RIFF chunk whose header states its length; a shorter file was cut off.
fn check_riff_complete(bytes: &[u8], name: &str) -> Result<(), ImageError> {
    let declared = bytes
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u64::from(u32::from_le_bytes(b)) + 8);
    match declared {
        Some(len) if len > bytes.len() as u64 => Err(ImageError::Truncated {
            name: name.to_string(),
            format: "WebP",
            detail: format!(
                "the RIFF header declares {len} bytes, the file has {}",
                bytes.len()
            ),
        }),
        _ => Ok(()),
    }
}

/// Maps the `image` crate's error onto ours.
fn classify(
    e: image::ImageError,
    name: &str,
    format: &'static str,
    limits: &ImageLimits,
) -> ImageError {
    use image::ImageError as E;
    let name = name.to_string();
    let detail = e.to_string();
    let truncation = |text: &str| {
        let t = text.to_ascii_lowercase();
        t.contains("eof")
            || t.contains("end of file")
            || t.contains("unexpected end")
            || t.contains("no more bytes")
    };
    match e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => ImageError::Truncated {
            name,
            format,
            detail,
        },
        E::Limits(_) => ImageError::MemoryLimit {
            name,
            max_alloc_bytes: limits.max_alloc_bytes,
            detail,
        },
        E::Unsupported(_) => ImageError::UnsupportedFeature {
            name,
            format,
            detail,
        },
        _ if truncation(&detail) => ImageError::Truncated {
            name,
            format,
            detail,
        },
        _ => ImageError::Corrupt {
            name,
            format,
            detail,
        },
    }
}
