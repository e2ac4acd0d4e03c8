//! The face path: portrait → face box, 468-point mesh, Hallo2 masks and identity embedding
//! (hallo2 `hallo/datasets/image_processor.py`, `hallo/utils/util.py` @ `58a9aa6`).

pub mod blazeface;
pub mod embedding;
pub mod face_mesh;
pub mod masks;
