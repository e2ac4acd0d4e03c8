//! `image_io`: real photos decode to RGB8 upright; every bad input gets its own error.

use std::path::PathBuf;

use image::{ImageEncoder, RgbImage};
use model::image_io::{ImageError, ImageLimits, decode_image, read_image};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/face")
        .join(name)
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

fn decode(data: &[u8], name: &str) -> Result<RgbImage, ImageError> {
    decode_image(data, name, &ImageLimits::default())
}

/// CRC-32 (IEEE) for hand-made PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG with a valid 8-bit RGB header of the given size and only the first two bytes of its
/// pixel data: decoding it would fail, only a header check can accept or refuse it.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// Overwrites the frame size in a baseline JPEG's SOF0 segment.
fn jpeg_with_size(mut data: Vec<u8>, width: u16, height: u16) -> Vec<u8> {
    let sof = data
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG has SOF0");
    // FF C0, length (2), precision (1), height (2), width (2)
    data[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    data[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    data
}

/// Inserts an EXIF APP1 segment with the given orientation tag right after SOI.
fn jpeg_with_orientation(data: &[u8], orientation: u16) -> Vec<u8> {
    // TIFF, little endian: header, IFD with one entry (0x0112 SHORT 1 = orientation), no next IFD
    let mut tiff = b"II*\x00".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = data[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&data[2..]);
    out
}

fn lossless_webp(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("webp encode");
    out
}

#[test]
fn real_png_jpeg_and_grey_png_decode_to_rgb8() {
    let astronaut = read_image(&fixture("astronaut.png"), &ImageLimits::default()).unwrap();
    assert_eq!(astronaut.dimensions(), (512, 512));
    let hopper = read_image(&fixture("grace_hopper.jpg"), &ImageLimits::default()).unwrap();
    assert_eq!(hopper.dimensions(), (512, 600));
    let camera = read_image(&fixture("camera.png"), &ImageLimits::default()).unwrap();
    assert_eq!(camera.dimensions(), (512, 512));
    assert!(
        camera
            .pixels()
            .all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]),
        "grey replicated into RGB"
    );
    assert!(
        camera
            .pixels()
            .any(|p| p.0[0] != camera.get_pixel(0, 0).0[0]),
        "not a flat image"
    );
}

#[test]
fn lossless_webp_round_trips_exactly() {
    let astronaut = decode(&bytes("astronaut.png"), "astronaut.png").unwrap();
    let webp = lossless_webp(&astronaut);
    let back = decode(&webp, "astronaut.webp").unwrap();
    assert_eq!(back.dimensions(), (512, 512));
    assert!(back == astronaut, "lossless WebP must give the same pixels");
}

#[test]
fn exif_orientation_is_applied() {
    let plain = decode(&bytes("grace_hopper.jpg"), "hopper.jpg").unwrap();
    // 6 = "rotate 90° clockwise to display"
    let tagged = jpeg_with_orientation(&bytes("grace_hopper.jpg"), 6);
    let upright = decode(&tagged, "hopper_exif6.jpg").unwrap();
    assert_eq!(upright.dimensions(), (600, 512));
    assert!(
        upright == image::imageops::rotate90(&plain),
        "orientation 6 rotates 90° clockwise"
    );
    // 3 = rotate 180°
    let tagged = jpeg_with_orientation(&bytes("grace_hopper.jpg"), 3);
    let upright = decode(&tagged, "hopper_exif3.jpg").unwrap();
    assert!(upright == image::imageops::rotate180(&plain));
}

#[test]
fn png_bomb_is_refused_from_the_header() {
    // 10000×10000 = 100 MP with no pixel data: only a header check can give TooManyPixels
    let err = decode(&png_header_only(10_000, 10_000), "bomb.png").unwrap_err();
    match err {
        ImageError::TooManyPixels {
            width,
            height,
            pixels,
            max_pixels,
            ..
        } => {
            assert_eq!(
                (width, height, pixels, max_pixels),
                (10_000, 10_000, 100_000_000, 40_000_000)
            );
        }
        other => panic!("expected TooManyPixels, got {other:?}"),
    }
}

#[test]
fn jpeg_bomb_is_refused_from_the_header() {
    let bomb = jpeg_with_size(bytes("grace_hopper.jpg"), 65_000, 65_000);
    let err = decode(&bomb, "bomb.jpg").unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::TooManyPixels {
                width: 65_000,
                height: 65_000,
                ..
            }
        ),
        "got {err:?}"
    );
}

#[test]
fn max_pixels_is_configurable() {
    let limits = ImageLimits {
        max_pixels: 100_000,
        ..ImageLimits::default()
    };
    let err = decode_image(&bytes("astronaut.png"), "astronaut.png", &limits).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::TooManyPixels {
                width: 512,
                height: 512,
                pixels: 262_144,
                max_pixels: 100_000,
                ..
            }
        ),
        "got {err:?}"
    );
    assert!(err.to_string().contains("512x512"), "{err}");
    // exactly at the limit is fine
    let limits = ImageLimits {
        max_pixels: 512 * 512,
        ..ImageLimits::default()
    };
    assert!(decode_image(&bytes("astronaut.png"), "astronaut.png", &limits).is_ok());
}

#[test]
fn decoder_memory_cap_is_enforced() {
    let limits = ImageLimits {
        max_alloc_bytes: 100_000,
        ..ImageLimits::default()
    };
    for name in ["astronaut.png", "grace_hopper.jpg"] {
        let err = decode_image(&bytes(name), name, &limits).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::MemoryLimit {
                    max_alloc_bytes: 100_000,
                    ..
                }
            ),
            "{name}: got {err:?}"
        );
    }
}

#[test]
fn truncated_files_are_reported_as_truncated() {
    let webp = lossless_webp(&decode(&bytes("astronaut.png"), "a.png").unwrap());
    for (name, data) in [
        ("astronaut.png", bytes("astronaut.png")),
        ("grace_hopper.jpg", bytes("grace_hopper.jpg")),
        ("astronaut.webp", webp),
    ] {
        let half = &data[..data.len() / 2];
        let err = decode(half, name).unwrap_err();
        assert!(
            matches!(err, ImageError::Truncated { .. }),
            "{name} cut in half: got {err:?}"
        );
    }
}

#[test]
fn zero_by_zero_image_has_no_pixels() {
    let err = decode(&png_header_only(0, 0), "empty.png").unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::NoPixels {
                width: 0,
                height: 0,
                ..
            }
        ),
        "got {err:?}"
    );
    let err = decode(&png_header_only(0, 7), "empty.png").unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::NoPixels {
                width: 0,
                height: 7,
                ..
            }
        ),
        "got {err:?}"
    );
    let err = decode(
        &jpeg_with_size(bytes("grace_hopper.jpg"), 512, 0),
        "flat.jpg",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::NoPixels {
                width: 512,
                height: 0,
                ..
            }
        ),
        "got {err:?}"
    );
}

#[test]
fn non_image_bytes_with_an_image_extension_are_not_an_image() {
    let err = decode(b"<!DOCTYPE html><html>not a picture</html>", "photo.png").unwrap_err();
    match &err {
        ImageError::NotAnImage { name, head } => {
            assert_eq!(name, "photo.png");
            assert_eq!(head, "3c 21 44 4f 43 54 59 50");
        }
        other => panic!("expected NotAnImage, got {other:?}"),
    }
    let err = decode(b"", "empty.jpg").unwrap_err();
    assert!(matches!(err, ImageError::NotAnImage { .. }), "got {err:?}");
}

#[test]
fn other_formats_are_unsupported() {
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    let err = decode(gif, "anim.gif").unwrap_err();
    assert!(
        matches!(&err, ImageError::UnsupportedFormat { format, .. } if format == "GIF"),
        "got {err:?}"
    );
    let bmp = b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00";
    let err = decode(bmp, "scan.bmp").unwrap_err();
    assert!(
        matches!(&err, ImageError::UnsupportedFormat { format, .. } if format == "BMP"),
        "got {err:?}"
    );
}

#[test]
fn damaged_png_is_corrupt() {
    // flip a byte inside the first IDAT's compressed data (CRC now wrong)
    let mut data = bytes("astronaut.png");
    let idat = data.windows(4).position(|w| w == b"IDAT").expect("IDAT");
    data[idat + 20] ^= 0xFF;
    let err = decode(&data, "astronaut.png").unwrap_err();
    assert!(
        matches!(err, ImageError::Corrupt { format: "PNG", .. }),
        "got {err:?}"
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let err = read_image(&fixture("does_not_exist.png"), &ImageLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "got {err:?}");
}
