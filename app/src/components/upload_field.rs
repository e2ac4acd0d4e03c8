//! A file input with its label and the message the server gave about it (a refused upload shows
//! beside its own field), and the form's error type.

use leptos::prelude::*;

use crate::types::ErrorBody;

/// A message for a form field (or the whole form when `field` is None).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: Option<String>,
    pub message: String,
}

impl FieldError {
    /// The server's refusal, on its field (or on `fallback` when it names none).
    pub fn from_body(e: ErrorBody, fallback: Option<&str>) -> Self {
        Self {
            field: e.field.or(fallback.map(str::to_string)),
            message: e.error,
        }
    }
}

/// Clears the message shown for `field`, and any message for the whole form.
pub fn clear_error(error: RwSignal<Option<FieldError>>, field: &str) {
    if error.with_untracked(|e| {
        e.as_ref()
            .is_some_and(|e| e.field.is_none() || e.field.as_deref() == Some(field))
    }) {
        error.set(None);
    }
}

/// The form's message for `field`, where there is one.
#[component]
pub fn FieldMessage(error: RwSignal<Option<FieldError>>, field: &'static str) -> impl IntoView {
    move || {
        error
            .get()
            .filter(|e| e.field.as_deref() == Some(field))
            .map(|e| view! { <p class="field-error" data-field=field>{e.message}</p> })
    }
}

/// A labelled file input named `name` (the form field) with its message.
#[component]
pub fn UploadField(
    id: &'static str,
    name: &'static str,
    label: &'static str,
    accept: &'static str,
    error: RwSignal<Option<FieldError>>,
    on_change: Callback<leptos::ev::Event>,
) -> impl IntoView {
    view! {
        <label>
            {label}
            <input
                id=id
                type="file"
                name=name
                accept=accept
                on:change=move |ev| {
                    clear_error(error, name);
                    on_change.run(ev);
                }
            />
        </label>
        <FieldMessage error=error field=name/>
    }
}

// Render tests need the `ssr` renderer (on whenever the workspace's tests build).
#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    #[test]
    fn renders_the_input_and_only_its_own_message() {
        let owner = Owner::new();
        owner.set();
        let error = RwSignal::new(Some(FieldError {
            field: Some("audio_file".into()),
            message: "the audio is silent".into(),
        }));
        let field = |name: &'static str| {
            view! {
                <UploadField id="x" name=name label="File" accept="audio/*" error=error on_change=Callback::new(|_| {})/>
            }
            .to_html()
        };
        let audio = field("audio_file");
        assert!(audio.contains(r#"type="file""#) && audio.contains(r#"name="audio_file""#));
        assert!(audio.contains("the audio is silent"), "{audio}");
        assert!(!field("image_file").contains("the audio is silent"));
    }

    #[test]
    fn a_refusal_without_a_field_lands_on_the_fallback() {
        let body = ErrorBody {
            error: "bad".into(),
            detail: "bad".into(),
            kind: "invalid_image".into(),
            field: None,
        };
        let e = FieldError::from_body(body, Some("image_file"));
        assert_eq!(e.field.as_deref(), Some("image_file"));
    }
}
