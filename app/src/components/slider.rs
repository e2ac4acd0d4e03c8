//! A range input with its value shown beside it, its range from the server's bounds.

use leptos::prelude::*;

use crate::settings::Bound;

#[component]
pub fn Slider(
    name: &'static str,
    label: &'static str,
    bound: Bound<f64>,
    step: f64,
    value: f64,
    /// Called with the value when the user lets go of the slider.
    #[prop(optional)]
    on_commit: Option<Callback<f64>>,
) -> impl IntoView {
    let current = RwSignal::new(value);
    view! {
        <label class="slider">
            <span>{label}</span>
            <input
                type="range"
                name=name
                min=bound.min.to_string()
                max=bound.max.to_string()
                step=step.to_string()
                value=value.to_string()
                on:input=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse() {
                        current.set(v);
                    }
                }
                on:change=move |ev| {
                    if let (Some(commit), Ok(v)) = (on_commit, event_target_value(&ev).parse()) {
                        commit.run(v);
                    }
                }
            />
            <output>{move || format!("{:.2}", current.get())}</output>
        </label>
    }
}

// Render tests need the `ssr` renderer (on whenever the workspace's tests build).
#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    #[test]
    fn renders_the_bound_and_the_value() {
        let _owner = Owner::new();
        _owner.set();
        let html = view! {
            <Slider name="cfg_scale" label="CFG scale" bound=Bound::new(1.0, 12.5) step=0.1 value=3.5/>
        }
        .to_html();
        for part in [
            r#"name="cfg_scale""#,
            r#"min="1""#,
            r#"max="12.5""#,
            r#"step="0.1""#,
            r#"value="3.5""#,
            "3.50</output>",
            "CFG scale",
        ] {
            assert!(html.contains(part), "{part} in {html}");
        }
    }
}
