//! Audio files → 16 kHz mono samples: decoding, downmix, resampling, validation.
