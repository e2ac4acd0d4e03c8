//! Files whose headers declare sizes, durations or offsets far beyond any limit (made by
//! `model/tools/make_hostile_audio.py` from the real fixtures): each is refused with a specific
//! error, nothing is allocated for what the header claims, and nothing panics.

use std::path::PathBuf;

use model::audio_io::{AudioError, AudioLimits, decode_audio_bytes};

fn hostile(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/speech/hostile")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode(name: &str) -> Result<f64, AudioError> {
    let ext = name.rsplit('.').next();
    decode_audio_bytes(&hostile(name), ext, &AudioLimits::default()).map(|a| a.duration_s)
}

#[test]
fn declared_leading_silence_past_the_limit_is_refused_before_any_is_made() {
    for name in [
        "m4a_empty_edit_u32.m4a",
        "m4a_empty_edits_overflow.m4a",
        "m4a_timescale_1.m4a",
    ] {
        let err = decode(name).unwrap_err();
        assert!(
            matches!(err, AudioError::TooLong { at_least: true, duration_s, limit_s }
                if duration_s > limit_s),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn other_declared_quantities_are_refused_or_ignored() {
    // Skipping past the end leaves nothing.
    let err = decode("m4a_skip_2e62.m4a").unwrap_err();
    assert!(matches!(err, AudioError::Empty), "{err:?}");
    // An edit list that cannot hold its stated entries: a malformed file.
    let err = decode("m4a_elst_count_lies.m4a").unwrap_err();
    assert!(
        matches!(err, AudioError::UnrecognisedFormat { .. }),
        "{err:?}"
    );
    // 4 GiB of 384 kHz stereo declared (1398 s): past the limit before decoding.
    let err = decode("wav_declares_4gib.wav").unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::TooLong {
                at_least: false,
                ..
            }
        ),
        "{err:?}"
    );
    // Checked before the RIFF reader sees it (it multiplies the count unchecked).
    let err = decode("wav_65535_channels.wav").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported audio parameters: 65535 channels (accepted: 1 to 32)"
    );
    // Behind an ID3 tag too (the probe skips it; so does the check).
    let mut tagged = b"ID3\x04\x00\x00\x00\x00\x01\x00".to_vec();
    tagged.extend(std::iter::repeat_n(0u8, 128));
    tagged.extend(hostile("wav_65535_channels.wav"));
    let err = decode_audio_bytes(&tagged, Some("mp3"), &AudioLimits::default()).unwrap_err();
    assert!(
        matches!(&err, AudioError::UnsupportedParameters { detail } if detail.contains("65535")),
        "{err:?}"
    );
    for name in ["wav_zero_channels.wav", "wav_zero_rate.wav"] {
        let err = decode(name).unwrap_err();
        println!("{name}: {err}");
        assert!(
            matches!(
                err,
                AudioError::UnrecognisedFormat { .. } | AudioError::UnsupportedParameters { .. }
            ),
            "{name}: {err:?}"
        );
    }
}
