//! The error type at the `model` crate boundary.

use std::path::PathBuf;

/// Everything that can go wrong when loading or running Hallo2.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("weights {path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Image(#[from] crate::image_io::ImageError),
    #[error(transparent)]
    Audio(#[from] crate::audio_io::AudioError),
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    #[error(transparent)]
    Face(#[from] crate::face::FaceError),
}

impl ModelError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
