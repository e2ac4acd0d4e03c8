//! `/`: the generation form: portrait and speech with previews, the face pre-flight overlay
//! (box and mesh from `/api/preflight`, with its warnings), the controls with the official
//! config's defaults (`configs/inference/long.yaml`), and the submission to the old API's
//! endpoint; errors show next to their field. Jobs can be queued while the model loads.

use leptos::prelude::*;

use crate::format;
use crate::jobs::{JobRecord, JobState, PreflightView};
use crate::live::LiveBackend;
use crate::types::BackendState;

/// Defaults of the official Hallo2 inference config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationDefaults {
    pub pose_weight: f32,
    pub face_weight: f32,
    pub lip_weight: f32,
    pub steps: u32,
    pub cfg_scale: f32,
    pub seed: u64,
    pub face_expand_ratio: f32,
}

impl GenerationDefaults {
    /// `long.yaml` of fudan-generative-ai/hallo2 (seed 42 as in its inference script).
    pub const OFFICIAL: Self = Self {
        pose_weight: 1.0,
        face_weight: 1.0,
        lip_weight: 1.0,
        steps: 40,
        cfg_scale: 3.5,
        seed: 42,
        face_expand_ratio: 1.2,
    };
}

/// A message for a form field (or the whole form when `field` is None).
#[derive(Debug, Clone, PartialEq)]
struct FieldError {
    field: Option<String>,
    message: String,
}

#[component]
pub fn StudioPage() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let d = GenerationDefaults::OFFICIAL;
    // Jobs can be queued while the model loads (they start when it is ready); not when the
    // backend failed, is disabled or stops.
    let can_queue = move || {
        live.status.with(|s| {
            matches!(
                s.state,
                BackendState::Starting
                    | BackendState::Loading { .. }
                    | BackendState::Warming
                    | BackendState::Ready { .. }
            )
        })
    };
    let ready = move || live.status.with(|s| s.state.is_ready());
    let error = RwSignal::new(None::<FieldError>);
    let submitting = RwSignal::new(false);
    let image_url = RwSignal::new(None::<String>);
    let audio_url = RwSignal::new(None::<String>);
    let audio_seconds = RwSignal::new(None::<f64>);
    let preflight = RwSignal::new(None::<PreflightView>);
    let steps = RwSignal::new(Some(d.steps as usize));
    let field_error = move |field: &'static str| {
        move || {
            error
                .get()
                .filter(|e| e.field.as_deref() == Some(field))
                .map(|e| {
                    view! { <p class="field-error" data-field=field>{e.message}</p> }
                })
        }
    };
    view! {
        <section class="panel">
            <h1>"Generate a talking portrait"</h1>
            <form
                id="generate-form"
                class="generate"
                on:submit=move |ev| {
                    ev.prevent_default();
                    submit(&ev, error, submitting);
                }
            >
                <fieldset id="generate-controls" disabled=move || !can_queue()>
                    <div class="inputs">
                        <div class="input">
                            <label>
                                "Portrait (jpg, png, webp)"
                                <input
                                    id="image-input"
                                    type="file"
                                    name="image_file"
                                    accept="image/jpeg,image/png,image/webp"
                                    on:change=move |ev| on_image(&ev, image_url, preflight, error)
                                />
                            </label>
                            {field_error("image_file")}
                            <div class="preview">
                                {move || image_url.get().map(|url| view! {
                                    <div class="portrait">
                                        <img id="image-preview" src=url alt="portrait preview"/>
                                        {move || preflight.get().map(overlay)}
                                    </div>
                                })}
                                {move || preflight.get().map(|p| view! {
                                    <ul id="preflight-warnings" class="warnings">
                                        {p.warnings.into_iter().map(|w| view! { <li>{w}</li> }).collect_view()}
                                    </ul>
                                })}
                            </div>
                        </div>
                        <div class="input">
                            <label>
                                "Speech (wav, mp3, m4a, ogg, flac)"
                                <input
                                    id="audio-input"
                                    type="file"
                                    name="audio_file"
                                    accept="audio/*,.m4a,.flac"
                                    on:change=move |ev| on_audio(&ev, audio_url, audio_seconds)
                                />
                            </label>
                            {field_error("audio_file")}
                            {move || audio_url.get().map(|url| view! {
                                <audio
                                    id="audio-preview"
                                    controls
                                    src=url
                                    on:loadedmetadata=move |ev| audio_seconds.set(media_duration(&ev))
                                ></audio>
                            })}
                            {move || audio_seconds.get().map(|s| view! {
                                <p class="muted" id="audio-duration">{format!("{} of speech → {} of video", format::duration_s(s), format::duration_s(s))}</p>
                            })}
                            {move || audio_seconds.get().map(|s| {
                                let text = live.jobs.with(|jobs| {
                                    estimate_s(jobs, s, steps.get().unwrap_or(d.steps as usize))
                                })
                                .map_or_else(
                                    || "Run time: estimated after the first finished job on this server.".to_string(),
                                    |t| format!("Run time: about {} (measured on the last finished job).", format::duration_s(t)),
                                );
                                view! { <p class="muted" id="run-estimate">{text}</p> }
                            })}
                        </div>
                    </div>
                    <div class="controls">
                        <Slider name="pose_weight" label="Pose weight" min=0.0 max=2.0 step=0.05 value=d.pose_weight/>
                        <Slider name="face_weight" label="Face weight" min=0.0 max=2.0 step=0.05 value=d.face_weight/>
                        <Slider name="lip_weight" label="Lip weight" min=0.0 max=2.0 step=0.05 value=d.lip_weight/>
                        <Slider name="cfg_scale" label="CFG scale" min=1.0 max=10.0 step=0.1 value=d.cfg_scale/>
                        <Slider name="face_expand_ratio" label="Face expand ratio" min=1.0 max=2.0 step=0.05 value=d.face_expand_ratio/>
                        <label>
                            "Denoising steps"
                            <input
                                type="number"
                                name="steps"
                                min="1"
                                max="200"
                                value=d.steps.to_string()
                                on:input=move |ev| steps.set(event_target_value(&ev).parse().ok())
                            />
                            {field_error("steps")}
                        </label>
                        <label>
                            "Seed (empty: random, shown after the run)"
                            <input type="number" name="seed" min="0" value=d.seed.to_string()/>
                            {field_error("seed")}
                        </label>
                    </div>
                </fieldset>
                <button id="generate" type="submit" disabled=move || !can_queue() || submitting.get()>
                    {move || if ready() { "Generate" } else { "Queue (starts when the model is ready)" }}
                </button>
                {move || error.get().filter(|e| e.field.is_none()).map(|e| view! {
                    <p class="error" id="generate-error">{e.message}</p>
                })}
            </form>
        </section>
    }
}

/// Expected seconds for `seconds` of audio at `steps` steps, scaled from the newest completed
/// job on this server (its stages scale with the audio length, denoising also with the steps).
pub fn estimate_s(jobs: &[JobRecord], seconds: f64, steps: usize) -> Option<f64> {
    let last = jobs.iter().find(|j| {
        j.state == JobState::Completed && j.audio_seconds > 0.0 && j.progress.steps > 0
    })?;
    let by_length = seconds / last.audio_seconds;
    let by_steps = steps as f64 / last.progress.steps as f64;
    Some(
        last.timings
            .iter()
            .map(|(stage, t)| match stage.as_str() {
                "denoise" => t * by_length * by_steps,
                _ => t * by_length,
            })
            .sum(),
    )
}

/// The face box and the mesh over the preview, in the image's own pixel coordinates.
fn overlay(p: PreflightView) -> impl IntoView {
    let [x0, y0, x1, y1] = p.face_box;
    let r = (p.width.max(p.height) as f32 / 300.0).max(1.0);
    view! {
        <svg id="preflight-overlay" class="overlay" viewBox=format!("0 0 {} {}", p.width, p.height) preserveAspectRatio="none">
            <rect x=x0 y=y0 width=x1 - x0 height=y1 - y0 class="face-box"></rect>
            {p.landmarks.into_iter().map(|[x, y]| view! { <circle cx=x cy=y r=r class="mesh"></circle> }).collect_view()}
        </svg>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobFiles, JobParams, JobProgress};

    #[test]
    fn estimates_scale_the_last_finished_job() {
        let job = |state, timings: Vec<(&str, f64)>| JobRecord {
            id: "x".into(),
            state,
            params: JobParams::default(),
            seed_used: None,
            created_at: String::new(),
            updated_at: String::new(),
            message: String::new(),
            progress: JobProgress {
                steps: 10,
                ..JobProgress::default()
            },
            error: None,
            image_name: String::new(),
            audio_name: String::new(),
            audio_seconds: 2.0,
            files: JobFiles::default(),
            attempts: 1,
            timings: timings
                .into_iter()
                .map(|(s, t)| (s.to_string(), t))
                .collect(),
            made_with: None,
        };
        assert_eq!(estimate_s(&[], 4.0, 20), None);
        let jobs = [
            job(JobState::Failed, vec![("denoise", 100.0)]),
            job(
                JobState::Completed,
                vec![("preprocess", 1.0), ("denoise", 10.0), ("encode", 0.5)],
            ),
        ];
        // Twice the audio: every stage ×2; twice the steps: denoising ×2 again.
        assert_eq!(estimate_s(&jobs, 4.0, 20), Some(2.0 + 40.0 + 1.0));
    }
}

#[cfg(feature = "hydrate")]
fn input_file(ev: &leptos::ev::Event) -> Option<web_sys::File> {
    use wasm_bindgen::JsCast;
    ev.target()?
        .dyn_into::<web_sys::HtmlInputElement>()
        .ok()?
        .files()?
        .get(0)
}

/// Shows the chosen portrait and asks the server for its face box and mesh.
fn on_image(
    ev: &leptos::ev::Event,
    image_url: RwSignal<Option<String>>,
    preflight: RwSignal<Option<PreflightView>>,
    error: RwSignal<Option<FieldError>>,
) {
    #[cfg(feature = "hydrate")]
    {
        preflight.set(None);
        error.set(None);
        let Some(file) = input_file(ev) else {
            image_url.set(None);
            return;
        };
        image_url.set(web_sys::Url::create_object_url_with_blob(&file).ok());
        let Ok(form) = web_sys::FormData::new() else {
            return;
        };
        let _ = form.append_with_blob_and_filename("image_file", &file, &file.name());
        leptos::task::spawn_local(async move {
            match crate::fetch::send("POST", "/api/preflight", Some(&form)).await {
                Ok(text) => preflight.set(serde_json::from_str(&text).ok()),
                Err(e) => error.set(Some(FieldError {
                    field: e.field.or(Some("image_file".into())),
                    message: e.error,
                })),
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, image_url, preflight, error);
}

fn on_audio(
    ev: &leptos::ev::Event,
    audio_url: RwSignal<Option<String>>,
    seconds: RwSignal<Option<f64>>,
) {
    #[cfg(feature = "hydrate")]
    {
        seconds.set(None);
        audio_url
            .set(input_file(ev).and_then(|f| web_sys::Url::create_object_url_with_blob(&f).ok()));
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, audio_url, seconds);
}

fn media_duration(ev: &leptos::ev::Event) -> Option<f64> {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let d = ev
            .target()?
            .dyn_into::<web_sys::HtmlMediaElement>()
            .ok()?
            .duration();
        d.is_finite().then_some(d)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = ev;
        None
    }
}

/// Posts the form to the old API's endpoint and opens the job's page.
fn submit(
    ev: &leptos::ev::SubmitEvent,
    error: RwSignal<Option<FieldError>>,
    submitting: RwSignal<bool>,
) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(form) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlFormElement>().ok())
        else {
            return;
        };
        let Ok(data) = web_sys::FormData::new_with_form(&form) else {
            return;
        };
        // An empty seed means "random": leave it out.
        if data
            .get("seed")
            .as_string()
            .is_some_and(|s| s.trim().is_empty())
        {
            data.delete("seed");
        }
        error.set(None);
        submitting.set(true);
        let navigate = leptos_router::hooks::use_navigate();
        leptos::task::spawn_local(async move {
            let result = crate::fetch::send("POST", "/api/v1/inference/hallo2", Some(&data)).await;
            submitting.set(false);
            match result.map(|text| serde_json::from_str::<crate::jobs::SubmitResponse>(&text)) {
                Ok(Ok(r)) => navigate(&format!("/jobs/{}", r.task_id), Default::default()),
                Ok(Err(e)) => error.set(Some(FieldError {
                    field: None,
                    message: format!("unexpected answer: {e}"),
                })),
                Err(e) => error.set(Some(FieldError {
                    field: e.field,
                    message: e.error,
                })),
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, error, submitting);
}

/// A range input with its value shown beside it.
#[component]
fn Slider(
    name: &'static str,
    label: &'static str,
    min: f32,
    max: f32,
    step: f32,
    value: f32,
) -> impl IntoView {
    let current = RwSignal::new(value);
    view! {
        <label class="slider">
            <span>{label}</span>
            <input
                type="range"
                name=name
                min=min.to_string()
                max=max.to_string()
                step=step.to_string()
                value=value.to_string()
                on:input=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse() {
                        current.set(v);
                    }
                }
            />
            <output>{move || format!("{:.2}", current.get())}</output>
        </label>
    }
}
