//! Everything that touches the browser: the DOM, file inputs, media elements, the event stream
//! (hydrate only; on the server each function is a no-op or absent, so the components
//! type-check in both builds).

use leptos::prelude::*;

/// The file chosen in the file input with this id.
#[cfg(feature = "hydrate")]
pub fn chosen_file(id: &str) -> Option<web_sys::File> {
    use wasm_bindgen::JsCast;
    document()
        .get_element_by_id(id)?
        .dyn_into::<web_sys::HtmlInputElement>()
        .ok()?
        .files()?
        .get(0)
}

/// A multipart form with the file chosen in the input `input_id` under `field`, plus `extra`
/// text fields; None when no file is chosen.
#[cfg(feature = "hydrate")]
pub fn file_form(
    input_id: &str,
    field: &str,
    extra: &[(&str, String)],
) -> Option<web_sys::FormData> {
    let file = chosen_file(input_id)?;
    let form = web_sys::FormData::new().ok()?;
    form.append_with_blob_and_filename(field, &file, &file.name())
        .ok()?;
    for (name, value) in extra {
        form.append_with_str(name, value).ok()?;
    }
    Some(form)
}

/// The fields of the form a submit event came from.
#[cfg(feature = "hydrate")]
pub fn submitted_form(ev: &leptos::ev::SubmitEvent) -> Option<web_sys::FormData> {
    use wasm_bindgen::JsCast;
    let form = ev.target()?.dyn_into::<web_sys::HtmlFormElement>().ok()?;
    web_sys::FormData::new_with_form(&form).ok()
}

/// Points `url` at the file an input's change event chose (an object URL for a local preview),
/// releasing the previous file's URL.
pub fn show_chosen_file(ev: &leptos::ev::Event, url: RwSignal<Option<String>>) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        if let Some(old) = url.get_untracked() {
            let _ = web_sys::Url::revoke_object_url(&old);
        }
        let file = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            .and_then(|input| input.files())
            .and_then(|files| files.get(0));
        url.set(file.and_then(|f| web_sys::Url::create_object_url_with_blob(&f).ok()));
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, url);
}

/// The playing position of the media element an event came from, seconds.
pub fn media_time(ev: &leptos::ev::Event) -> f64 {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        ev.target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlMediaElement>().ok())
            .map_or(0.0, |m| m.current_time())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = ev;
        0.0
    }
}

/// Moves the media element `player_id` to the point of the clicked element that was clicked
/// (as a fraction of its width, times `duration`).
pub fn seek_to_click(ev: &leptos::ev::MouseEvent, player_id: &str, duration: f64) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(target) = ev
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let rect = target.get_bounding_client_rect();
        if rect.width() <= 0.0 {
            return;
        }
        let fraction = ((f64::from(ev.client_x()) - rect.left()) / rect.width()).clamp(0.0, 1.0);
        if let Some(player) = document()
            .get_element_by_id(player_id)
            .and_then(|e| e.dyn_into::<web_sys::HtmlMediaElement>().ok())
        {
            player.set_current_time(fraction * duration);
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, player_id, duration);
}

/// The snapshot the server embedded in the page (defaults where it is missing).
pub fn initial_from_document() -> crate::live::Snapshot {
    let read = |id: &str| {
        web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id(id))
            .and_then(|e| e.text_content())
    };
    crate::live::Snapshot {
        status: read(crate::live::INITIAL_STATUS_ID)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        jobs: read(crate::live::INITIAL_JOBS_ID)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        settings: read(crate::live::INITIAL_SETTINGS_ID)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
    }
}

/// Subscribes the page to `/api/events`, resuming after the snapshot's last event.
#[cfg(feature = "hydrate")]
pub fn connect_events(live: crate::live::LiveBackend) {
    events::connect(live);
}

#[cfg(feature = "hydrate")]
mod events {
    use std::time::Duration;

    use leptos::prelude::*;
    use send_wrapper::SendWrapper;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;

    use crate::live::{LiveBackend, Stream};
    use crate::types::BackendEvent;

    /// The SSE event names the server sends (`BackendEvent::event_name`).
    const EVENT_NAMES: [&str; 4] = ["stage", "state", "job", "workers"];
    /// How often the running stage's clock moves between events.
    const TICK: Duration = Duration::from_millis(250);

    pub fn connect(live: LiveBackend) {
        Effect::new(move |_| {
            let after = live.status.with_untracked(|s| s.last_seq);
            // EventSource cannot set headers: the first connection names the last event it has
            // in the query; reconnections send `Last-Event-ID` themselves.
            let url = format!("/api/events?last_event_id={after}");
            let Ok(source) = web_sys::EventSource::new(&url) else {
                live.stream.set(Stream::Reconnecting);
                return;
            };
            let on_event = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
                move |message: web_sys::MessageEvent| {
                    let Some(data) = message.data().as_string() else {
                        return;
                    };
                    match serde_json::from_str::<BackendEvent>(&data) {
                        Ok(event) => live.apply(&event),
                        Err(e) => leptos::logging::warn!("unreadable backend event: {e}"),
                    }
                },
            );
            for name in EVENT_NAMES {
                let _ = source
                    .add_event_listener_with_callback(name, on_event.as_ref().unchecked_ref());
            }
            let on_open = Closure::<dyn FnMut()>::new(move || live.stream.set(Stream::Open));
            source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
            let on_error =
                Closure::<dyn FnMut()>::new(move || live.stream.set(Stream::Reconnecting));
            source.set_onerror(Some(on_error.as_ref().unchecked_ref()));

            let ticker = set_interval_with_handle(move || live.tick(), TICK).ok();

            let held = SendWrapper::new((source, on_event, on_open, on_error));
            on_cleanup(move || {
                let (source, ..) = &*held;
                source.close();
                if let Some(t) = ticker {
                    t.clear();
                }
            });
        });
    }
}
