//! One module per route.

pub mod history;
pub mod job;
pub mod status;
pub mod studio;
