//! The entry points of the fuzz targets (`fuzz/fuzz_targets/`), here so that the stable test
//! suite replays the seeds and every crash found through exactly the same code
//! (`server/tests/fuzz_seeds.rs`).

use model::audio_io::{AudioLimits, decode_audio_bytes};
use model::image_io::{ImageLimits, decode_image};

/// Arbitrary bytes into the audio decoder; the first byte picks the extension hint, as a
/// client's file name would.
pub fn audio(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let hint = ["wav", "mp3", "m4a", "ogg", "flac", "bin"][usize::from(pick) % 6];
    let limits = AudioLimits {
        max_duration_s: 30.0,
        ..AudioLimits::default()
    };
    let _ = decode_audio_bytes(bytes, Some(hint), &limits);
}

/// Arbitrary bytes into the portrait decoder (PNG, JPEG, WebP).
pub fn image(data: &[u8]) {
    let limits = ImageLimits {
        max_pixels: 1 << 20,
        max_alloc_bytes: 64 << 20,
    };
    let _ = decode_image(data, "fuzz", &limits);
}

/// Upload limit of [`upload_form`].
pub const FORM_LIMIT: u64 = 1 << 20;

/// Arbitrary bytes as the body of a submission (boundary `B`) through the form reader; what it
/// stores stays within the limit.
pub fn upload_form(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let dir = tempfile::tempdir().expect("a scratch folder");
    let body = bytes::Bytes::copy_from_slice(data);
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(body)]);
    let form = multer::Multipart::new(stream, "B");
    runtime.block_on(async {
        let read = crate::jobs::upload::read_form(
            form,
            dir.path(),
            FORM_LIMIT,
            app::jobs::JobParams::default(),
        )
        .await;
        if let Ok((image, audio, _)) = read {
            let stored: u64 = [image, audio].iter().flatten().map(|f| f.bytes).sum();
            assert!(stored <= FORM_LIMIT, "{stored} bytes stored past the limit");
        }
    });
}
