//! The wasm entry point: hydrates the page the server rendered, starting from the backend
//! snapshot the server embedded in it.

// The pages' view types nest deeply (leptos/tachys).
#![recursion_limit = "256"]

use app::App;
use app::browser::initial_from_document;

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    let initial = initial_from_document();
    leptos::mount::hydrate_body(move || leptos::view! { <App initial/> });
}
