//! The studio's web app: pages, components and server functions (with the UI, later), and the
//! wire types shared by the server and the browser (now).
//!
//! This crate is compiled for the server (`ssr`) and for wasm (`hydrate`), so it must never depend
//! on `model`, candle or anything that does not build for `wasm32-unknown-unknown`. The server
//! converts its own state into the types of [`types`]; the browser only deserialises them.

pub mod types;
