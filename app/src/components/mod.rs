//! Components shared by the pages.

pub mod face_overlay;
pub mod slider;
pub mod status_panel;
pub mod upload_field;
pub mod waveform;
