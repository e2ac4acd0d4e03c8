//! One module per route.

pub mod status;
pub mod studio;
