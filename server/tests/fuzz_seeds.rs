//! The fuzz targets' seeds and every crash the fuzzer found (`fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/`) through the targets' own entry points: each returns.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files: Vec<PathBuf> = ["seeds", "regressions"]
        .iter()
        .filter_map(|kind| std::fs::read_dir(fuzz.join(kind).join(target)).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, entry: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds for {target}");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let done = std::panic::catch_unwind(|| entry(&data));
        assert!(done.is_ok(), "{target}: {} crashed", file.display());
    }
}

#[test]
fn audio_decode_seeds_and_regressions() {
    replay("audio_decode", server::fuzzing::audio);
}

#[test]
fn image_decode_seeds_and_regressions() {
    replay("image_decode", server::fuzzing::image);
}

#[test]
fn upload_form_seeds_and_regressions() {
    replay("upload_form", server::fuzzing::upload_form);
}
