//! Weight files in the official layouts, read without duplicating them in memory.
//!
//! - [`SafetensorsFile`] reads tensors straight from a `.safetensors` file with positioned reads
//!   into owned buffers, or, for our own cache files in a program that installs
//!   [`MappedWeightsAllocator`], serves them from a private mapping of the file (no copy, no
//!   fresh pages); either way resident memory is only the tensors we keep.
//! - [`pth_cache`] converts a torch zip-pickle (`net.pth`) once into a safetensors file in a cache
//!   folder, in the dtype the model loads, keyed by the source's size, mtime and zip central
//!   directory (which holds a CRC-32 of every stored tensor), streaming one tensor at a time.
//! - [`WeightBackend`] serves a `VarBuilder` from such files, reading each component's tensors
//!   ahead on a few threads into their final, pre-faulted buffers, and records every requested
//!   key, so a load can prove it used every tensor of the file ([`UnusedKeys`]).
//! - [`KeyAudit`] builds modules against a list of names and shapes (a file header or a manifest)
//!   without allocating any weight, and reports missing, unused and mis-shaped keys by name.

mod audit;
mod backend;
mod mapped;
mod memory;
pub mod pth_cache;
mod safetensors_file;

pub use audit::{KeyAudit, KeyAuditReport, TensorSpec};
pub use backend::{UnusedKeys, WeightBackend, read_threads};
pub use mapped::{MappedWeightsAllocator, mapped_weights_enabled};
pub use safetensors_file::{SafetensorsFile, TensorEntry};
