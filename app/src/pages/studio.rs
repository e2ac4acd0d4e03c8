//! `/`: the generation form: portrait and speech with previews, the face pre-flight overlay
//! (recomputed when the face expand ratio changes, with its warnings), the speech's waveform
//! and format, the controls with the running profile's defaults and bounds (from the server's
//! snapshot), and the submission (`submit_job`). Either preview's refusal (no face, silent
//! audio, …) shows next to its field before submitting. Jobs can be queued while the model
//! loads.
//!
//! Without JavaScript the form still works: it posts to the server function, which sends the
//! browser to the new job's page, or back here with the refusal in the query (shown beside its
//! field).

use leptos::prelude::*;
use server_fn::ServerFn;

use crate::api::{SubmitJob, form_error_of};
use crate::browser::{media_time, show_chosen_file};
use crate::components::face_overlay::{FaceOverlay, OverlayLegend, Preflight, Requests};
use crate::components::slider::Slider;
use crate::components::upload_field::{FieldError, FieldMessage, UploadField, clear_error};
use crate::components::waveform::{PLAYER_ID, Waveform, audio_format};
use crate::format;
use crate::jobs::{AudioPreview, JobRecord, JobState};
use crate::live::LiveBackend;
use crate::types::BackendState;

const IMAGE_INPUT: &str = "image-input";
const AUDIO_INPUT: &str = "audio-input";

#[component]
pub fn StudioPage() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let settings = live.settings.get_value();
    let (d, b) = (settings.defaults, settings.bounds);
    let fps = f64::from(settings.fps.max(1));
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
    // A plain form's refusal comes back in the query.
    let error =
        RwSignal::new(form_error_of(SubmitJob::PATH).map(|e| FieldError::from_body(e, None)));
    let submitting = RwSignal::new(false);
    let image_url = RwSignal::new(None::<String>);
    let audio_url = RwSignal::new(None::<String>);
    let audio = RwSignal::new(None::<AudioPreview>);
    let audio_seconds = move || audio.with(|a| a.as_ref().map(|a| a.duration_s));
    let playhead = RwSignal::new(0.0f64);
    let preflight = Preflight::new();
    let audio_requests = Requests::new();
    let ratio = RwSignal::new(d.face_expand_ratio);
    let steps = RwSignal::new(Some(d.steps));
    let weight = |name, label, bound| {
        view! { <Slider name=name label=label bound=bound step=0.05 value=match name {
            "pose_weight" => d.pose_weight,
            "face_weight" => d.face_weight,
            _ => d.lip_weight,
        }/> }
    };
    view! {
        <section class="panel">
            <h1>"Generate a talking portrait"</h1>
            <form
                id="generate-form"
                class="generate"
                method="post"
                action=SubmitJob::PATH
                enctype="multipart/form-data"
                on:submit=move |ev| {
                    ev.prevent_default();
                    submit(&ev, live, error, submitting);
                }
            >
                <fieldset id="generate-controls" disabled=move || !can_queue()>
                    <div class="inputs">
                        <div class="input">
                            <UploadField
                                id=IMAGE_INPUT
                                name="image_file"
                                label="Portrait (jpg, png, webp)"
                                accept="image/jpeg,image/png,image/webp"
                                error=error
                                on_change=Callback::new(move |ev| {
                                    preflight.view.set(None);
                                    show_chosen_file(&ev, image_url);
                                    preflight.request(IMAGE_INPUT, ratio.get_untracked(), error);
                                })
                            />
                            <div class="preview">
                                {move || image_url.get().map(|url| view! {
                                    <div class="portrait">
                                        <img id="image-preview" src=url alt="portrait preview"/>
                                        {move || preflight.view.get().map(|p| view! { <FaceOverlay preflight=p layers=preflight.layers/> })}
                                    </div>
                                })}
                                {move || preflight.view.get().map(|p| view! {
                                    <OverlayLegend layers=preflight.layers ratio=p.masks.face_expand_ratio/>
                                    <ul id="preflight-warnings" class="warnings">
                                        {p.warnings.into_iter().map(|w| view! { <li>{w}</li> }).collect_view()}
                                    </ul>
                                })}
                            </div>
                        </div>
                        <div class="input">
                            <UploadField
                                id=AUDIO_INPUT
                                name="audio_file"
                                label="Speech (wav, mp3, m4a, ogg, flac)"
                                accept="audio/*,.m4a,.flac"
                                error=error
                                on_change=Callback::new(move |ev| {
                                    show_chosen_file(&ev, audio_url);
                                    request_audio_preview(audio, audio_requests, error);
                                })
                            />
                            {move || audio_url.get().map(|url| view! {
                                <audio
                                    id=PLAYER_ID
                                    controls
                                    src=url
                                    on:timeupdate=move |ev| playhead.set(media_time(&ev))
                                ></audio>
                            })}
                            {move || audio.get().map(|a| view! {
                                <Waveform audio=a.clone() playhead=playhead/>
                                <p class="muted" id="audio-duration">{format!(
                                    "{} of speech → {} frames of video ({})",
                                    format::duration_s(a.duration_s),
                                    a.frames,
                                    format::duration_s(a.frames as f64 / fps),
                                )}</p>
                                <p class="muted" id="audio-format">{audio_format(&a)}</p>
                            })}
                            {move || audio_seconds().map(|s| {
                                let text = live.jobs.with(|jobs| {
                                    estimate_s(jobs, s, steps.get().unwrap_or(d.steps))
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
                        {weight("pose_weight", "Pose weight", b.pose_weight)}
                        {weight("face_weight", "Face weight", b.face_weight)}
                        {weight("lip_weight", "Lip weight", b.lip_weight)}
                        <Slider name="cfg_scale" label="CFG scale" bound=b.cfg_scale step=0.1 value=d.cfg_scale/>
                        <Slider
                            name="face_expand_ratio"
                            label="Face expand ratio"
                            bound=b.face_expand_ratio
                            step=0.05
                            value=d.face_expand_ratio
                            on_commit=Callback::new(move |v: f64| {
                                ratio.set(v);
                                clear_error(error, "image_file");
                                preflight.request(IMAGE_INPUT, v, error);
                            })
                        />
                        <label>
                            "Denoising steps"
                            <input
                                type="number"
                                name="steps"
                                min=b.steps.min.to_string()
                                max=b.steps.max.to_string()
                                value=d.steps.to_string()
                                on:input=move |ev| steps.set(event_target_value(&ev).parse().ok())
                            />
                            <FieldMessage error=error field="steps"/>
                        </label>
                        <label>
                            "Seed (empty: random, shown after the run)"
                            <input type="number" name="seed" min="0" value=d.seed.to_string()/>
                            <FieldMessage error=error field="seed"/>
                        </label>
                        <VocalsSwitch enabled=settings.vocal_separation error=error/>
                        {["pose_weight", "face_weight", "lip_weight", "cfg_scale", "face_expand_ratio"]
                            .map(|field| view! { <FieldMessage error=error field=field/> })}
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

/// "Separate the vocals first". An unchecked box sends nothing, which would mean "the studio's
/// default": the hidden `false` before it says so, and a checked box's `true` comes after and
/// wins.
#[component]
fn VocalsSwitch(enabled: bool, error: RwSignal<Option<FieldError>>) -> impl IntoView {
    view! {
        <label class="check">
            <input type="hidden" name="separate_vocals" value="false"/>
            <input
                type="checkbox"
                id="separate-vocals"
                name="separate_vocals"
                value="true"
                checked=enabled
                disabled=!enabled
            />
            {if enabled {
                "Separate the vocals first (Kim_Vocal_2, as the official pipeline does)"
            } else {
                "Separate the vocals first (off in this studio's config)"
            }}
            <FieldMessage error=error field="separate_vocals"/>
        </label>
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

/// Asks how the chosen speech decodes (duration, format, waveform); its refusal shows next to
/// the field.
fn request_audio_preview(
    audio: RwSignal<Option<AudioPreview>>,
    requests: Requests,
    error: RwSignal<Option<FieldError>>,
) {
    #[cfg(feature = "hydrate")]
    {
        audio.set(None);
        let Some(form) = crate::browser::file_form(AUDIO_INPUT, "audio_file", &[]) else {
            return;
        };
        let id = requests.next();
        leptos::task::spawn_local(async move {
            let result = crate::api::preflight_audio(form.into()).await;
            if !requests.is_latest(id) {
                return;
            }
            match result {
                Ok(preview) => audio.set(Some(preview)),
                Err(e) => error.set(Some(FieldError::from_body(e, Some("audio_file")))),
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (audio, requests, error);
}

/// Sends the form to `submit_job` and opens the job's page.
fn submit(
    ev: &leptos::ev::SubmitEvent,
    live: LiveBackend,
    error: RwSignal<Option<FieldError>>,
    submitting: RwSignal<bool>,
) {
    #[cfg(feature = "hydrate")]
    {
        let Some(data) = crate::browser::submitted_form(ev) else {
            return;
        };
        error.set(None);
        submitting.set(true);
        let navigate = leptos_router::hooks::use_navigate();
        leptos::task::spawn_local(async move {
            let result = crate::api::submit_job(data.into()).await;
            submitting.set(false);
            match result {
                Ok(job) => {
                    let id = job.id.clone();
                    live.know_job(job);
                    navigate(&format!("/jobs/{id}"), Default::default());
                }
                Err(e) => error.set(Some(FieldError::from_body(e, None))),
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, live, error, submitting);
}

// Render tests need the `ssr` renderer (on whenever the workspace's tests build).
#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::jobs::{JobFiles, JobParams, JobProgress};
    use crate::live::Snapshot;
    use crate::settings::{Bound, GenerationSettings};

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
            resumed_from_clip: None,
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

    /// The page's controls take their defaults and bounds from the snapshot's settings, and the
    /// form posts to the submit server function without JavaScript.
    #[test]
    fn the_form_is_built_from_the_servers_settings() {
        let owner = Owner::new();
        owner.set();
        let mut settings = GenerationSettings::default();
        settings.defaults.steps = 7;
        settings.defaults.cfg_scale = 2.25;
        settings.bounds.cfg_scale = Bound::new(1.0, 12.5);
        settings.bounds.steps = Bound::new(2, 60);
        settings.vocal_separation = false;
        let live = LiveBackend::new(Snapshot {
            settings,
            ..Snapshot::default()
        });
        provide_context(live);
        provide_context(leptos_router::location::RequestUrl::new("/"));
        let html = view! { <leptos_router::components::Router><StudioPage/></leptos_router::components::Router> }
            .to_html();
        for part in [
            format!(r#"action="{}""#, SubmitJob::PATH),
            r#"enctype="multipart/form-data""#.to_string(),
            r#"name="steps" min="2" max="60" value="7""#.to_string(),
            r#"name="cfg_scale" min="1" max="12.5" step="0.1" value="2.25""#.to_string(),
            "off in this studio's config".to_string(),
        ] {
            assert!(html.contains(&part), "{part} in {html}");
        }
    }
}
