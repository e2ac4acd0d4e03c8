//! Components shared by the pages.

pub mod status_panel;
