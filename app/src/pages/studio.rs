//! `/`: the generation form: portrait and speech with previews, the face pre-flight overlay
//! (box, mesh, Hallo2's regions and soft masks from `/api/preflight`, recomputed when the face
//! expand ratio changes, with its warnings), the speech's waveform and format from
//! `/api/preflight/audio`, the controls with the official config's defaults
//! (`configs/inference/long.yaml`), and the submission to the old API's endpoint. Either
//! preview's refusal (no face, silent audio, …) shows next to its field before submitting.
//! Jobs can be queued while the model loads.

use leptos::prelude::*;

use crate::format;
use crate::jobs::{AudioPreview, JobRecord, JobState, PreflightView};
use crate::live::LiveBackend;
use crate::types::{BackendState, LoadStage};

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
    // The studio loads the separator only with `vocal_separation` on (its stage is listed then).
    let separation_on = move || {
        live.status.with(|s| {
            s.stages
                .iter()
                .any(|st| st.stage == LoadStage::VocalSeparator)
        })
    };
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
    let audio = RwSignal::new(None::<AudioPreview>);
    let audio_seconds = move || audio.with(|a| a.as_ref().map(|a| a.duration_s));
    let playhead = RwSignal::new(0.0f64);
    let preflight = Preflight::new();
    let audio_requests = Requests::new();
    let ratio = RwSignal::new(d.face_expand_ratio);
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
                    submit(&ev, live, error, submitting);
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
                                    on:change=move |ev| {
                                        clear_error(error, "image_file");
                                        preflight.view.set(None);
                                        show_chosen_file(&ev, image_url);
                                        preflight.request(ratio.get_untracked(), error);
                                    }
                                />
                            </label>
                            {field_error("image_file")}
                            <div class="preview">
                                {move || image_url.get().map(|url| view! {
                                    <div class="portrait">
                                        <img id="image-preview" src=url alt="portrait preview"/>
                                        {move || preflight.view.get().map(|p| overlay(p, preflight.layers))}
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
                            <label>
                                "Speech (wav, mp3, m4a, ogg, flac)"
                                <input
                                    id="audio-input"
                                    type="file"
                                    name="audio_file"
                                    accept="audio/*,.m4a,.flac"
                                    on:change=move |ev| {
                                        clear_error(error, "audio_file");
                                        show_chosen_file(&ev, audio_url);
                                        request_audio_preview(audio, audio_requests, error);
                                    }
                                />
                            </label>
                            {field_error("audio_file")}
                            {move || audio_url.get().map(|url| view! {
                                <audio
                                    id="audio-preview"
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
                                    format::duration_s(a.frames as f64 / 25.0),
                                )}</p>
                                <p class="muted" id="audio-format">{audio_format(&a)}</p>
                            })}
                            {move || audio_seconds().map(|s| {
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
                        <Slider
                            name="face_expand_ratio"
                            label="Face expand ratio"
                            min=1.0
                            max=2.0
                            step=0.05
                            value=d.face_expand_ratio
                            on_commit=Callback::new(move |v: f32| {
                                ratio.set(v);
                                clear_error(error, "image_file");
                                preflight.request(v, error);
                            })
                        />
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
                        <label class="check">
                            <input
                                type="checkbox"
                                id="separate-vocals"
                                name="separate_vocals"
                                value="true"
                                checked=true
                                disabled=move || !separation_on()
                            />
                            {move || if separation_on() {
                                "Separate the vocals first (Kim_Vocal_2, as the official pipeline does)"
                            } else {
                                "Separate the vocals first (off in this studio's config)"
                            }}
                            {field_error("separate_vocals")}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobFiles, JobParams, JobProgress};

    #[test]
    fn the_waveform_is_mirrored_and_scaled_to_the_loudest_slice() {
        assert_eq!(
            waveform_path(&[0.25, 0.5]),
            "M0,50 L0.5,26.0 L1.5,2.0 L2,50 L1.5,98.0 L0.5,74.0 Z"
        );
        // Nothing audible draws the middle line, never NaN.
        assert_eq!(waveform_path(&[0.0]), "M0,50 L0.5,50.0 L1,50 L0.5,50.0 Z");
    }

    #[test]
    fn the_audio_format_line_names_codec_rate_channels_and_peak() {
        let a = AudioPreview {
            duration_s: 3.0,
            frames: 75,
            sample_rate: 44_100,
            channels: 2,
            codec: "mp3".into(),
            peak_dbfs: -3.24,
            waveform: vec![],
        };
        assert_eq!(audio_format(&a), "mp3 · 44.1 kHz · stereo · peak -3.2 dBFS");
    }

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
}

/// The face pre-flight of the chosen portrait: the newest answer, the overlay's layer
/// switches, and a request counter so that only the newest request's answer is shown (the
/// ratio slider can leave several in flight).
#[derive(Clone, Copy)]
struct Preflight {
    view: RwSignal<Option<PreflightView>>,
    layers: Layers,
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    requests: Requests,
}

/// Which parts of the overlay are drawn.
#[derive(Clone, Copy)]
struct Layers {
    mesh: RwSignal<bool>,
    masks: RwSignal<bool>,
    regions: RwSignal<bool>,
}

impl Preflight {
    fn new() -> Self {
        Self {
            view: RwSignal::new(None),
            layers: Layers {
                mesh: RwSignal::new(true),
                masks: RwSignal::new(true),
                regions: RwSignal::new(true),
            },
            requests: Requests::new(),
        }
    }

    /// Asks `/api/preflight` about the portrait in the form for `ratio`; the current overlay
    /// stays until the answer replaces it.
    fn request(self, ratio: f32, error: RwSignal<Option<FieldError>>) {
        #[cfg(feature = "hydrate")]
        {
            let Some(file) = chosen_file("image-input") else {
                self.view.set(None);
                return;
            };
            let Ok(form) = web_sys::FormData::new() else {
                return;
            };
            let _ = form.append_with_blob_and_filename("image_file", &file, &file.name());
            let _ = form.append_with_str("face_expand_ratio", &ratio.to_string());
            let id = self.requests.next();
            leptos::task::spawn_local(async move {
                let result = crate::fetch::send("POST", "/api/preflight", Some(&form)).await;
                if !self.requests.is_latest(id) {
                    return;
                }
                match result {
                    Ok(text) => self.view.set(serde_json::from_str(&text).ok()),
                    Err(e) => {
                        self.view.set(None);
                        error.set(Some(FieldError {
                            field: e.field.or(Some("image_file".into())),
                            message: e.error,
                        }));
                    }
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (self, ratio, error);
    }
}

/// Numbers requests so that a slow answer to an older one is dropped.
#[derive(Clone, Copy)]
struct Requests(StoredValue<u64>);

impl Requests {
    fn new() -> Self {
        Self(StoredValue::new(0))
    }

    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn next(self) -> u64 {
        self.0.update_value(|n| *n += 1);
        self.0.get_value()
    }

    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn is_latest(self, id: u64) -> bool {
        self.0.get_value() == id
    }
}

/// Asks `/api/preflight/audio` how the chosen speech decodes (duration, format, waveform);
/// its refusal shows next to the field.
fn request_audio_preview(
    audio: RwSignal<Option<AudioPreview>>,
    requests: Requests,
    error: RwSignal<Option<FieldError>>,
) {
    #[cfg(feature = "hydrate")]
    {
        audio.set(None);
        let Some(file) = chosen_file("audio-input") else {
            return;
        };
        let Ok(form) = web_sys::FormData::new() else {
            return;
        };
        let _ = form.append_with_blob_and_filename("audio_file", &file, &file.name());
        let id = requests.next();
        leptos::task::spawn_local(async move {
            let result = crate::fetch::send("POST", "/api/preflight/audio", Some(&form)).await;
            if !requests.is_latest(id) {
                return;
            }
            match result {
                Ok(text) => audio.set(serde_json::from_str(&text).ok()),
                Err(e) => error.set(Some(FieldError {
                    field: e.field.or(Some("audio_file".into())),
                    message: e.error,
                })),
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (audio, requests, error);
}

/// The file chosen in the file input with this id.
#[cfg(feature = "hydrate")]
fn chosen_file(id: &str) -> Option<web_sys::File> {
    use wasm_bindgen::JsCast;
    document()
        .get_element_by_id(id)?
        .dyn_into::<web_sys::HtmlInputElement>()
        .ok()?
        .files()?
        .get(0)
}

/// Points `url` at the file an input's change event chose (an object URL for a local preview),
/// releasing the previous file's URL.
fn show_chosen_file(ev: &leptos::ev::Event, url: RwSignal<Option<String>>) {
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

/// Clears the message shown for `field`, and any message for the whole form.
fn clear_error(error: RwSignal<Option<FieldError>>, field: &str) {
    if error.with_untracked(|e| {
        e.as_ref()
            .is_some_and(|e| e.field.is_none() || e.field.as_deref() == Some(field))
    }) {
        error.set(None);
    }
}

fn media_time(ev: &leptos::ev::Event) -> f64 {
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

/// The face box, the mesh, Hallo2's face and lip regions and its three soft masks over the
/// preview, in the image's own pixel coordinates. The soft masks are 64×64 images stretched
/// over the whole portrait, as the model stretches them over its latent grid.
fn overlay(p: PreflightView, layers: Layers) -> impl IntoView {
    let (w, h) = (p.width, p.height);
    let [x0, y0, x1, y1] = p.face_box;
    let r = (w.max(h) as f32 / 300.0).max(1.0);
    let m = p.masks;
    let shown = |on: RwSignal<bool>| move || if on.get() { "inline" } else { "none" };
    let region = |[x0, y0, x1, y1]: [u32; 4], class: &'static str| {
        view! { <rect x=x0 y=y0 width=x1 - x0 height=y1 - y0 class=class></rect> }
    };
    let soft = |id: &'static str, png: String| {
        view! {
            <mask id=id>
                <image href=png width=w height=h preserveAspectRatio="none"></image>
            </mask>
        }
    };
    view! {
        <svg id="preflight-overlay" class="overlay" viewBox=format!("0 0 {w} {h}") preserveAspectRatio="none">
            <defs>
                {soft("mask-pose", m.pose_png)}
                {soft("mask-face", m.face_png)}
                {soft("mask-lip", m.lip_png)}
            </defs>
            <g class="soft-masks" style:display=shown(layers.masks)>
                <rect class="soft-pose" width=w height=h mask="url(#mask-pose)"></rect>
                <rect class="soft-face" width=w height=h mask="url(#mask-face)"></rect>
                <rect class="soft-lip" width=w height=h mask="url(#mask-lip)"></rect>
            </g>
            <g class="regions" style:display=shown(layers.regions)>
                {region(m.face_region, "face-region")}
                {region(m.lip_region, "lip-region")}
            </g>
            <g class="detection" style:display=shown(layers.mesh)>
                <rect x=x0 y=y0 width=x1 - x0 height=y1 - y0 class="face-box"></rect>
                {p.landmarks.into_iter().map(|[x, y]| view! { <circle cx=x cy=y r=r class="mesh"></circle> }).collect_view()}
            </g>
        </svg>
    }
}

/// Switches for the overlay's layers, with the colour key. The checkboxes have no `name`, so
/// the form never submits them.
#[component]
fn OverlayLegend(layers: Layers, ratio: f64) -> impl IntoView {
    let switch = |on: RwSignal<bool>, id: &'static str| {
        view! {
            <input
                type="checkbox"
                id=id
                prop:checked=move || on.get()
                on:change=move |ev| on.set(event_target_checked(&ev))
            />
        }
    };
    view! {
        <div class="legend" id="overlay-layers">
            <label>{switch(layers.mesh, "layer-mesh")}<span class="swatch detection"></span>"face box and mesh"</label>
            <label>
                {switch(layers.masks, "layer-masks")}
                "soft masks: "<span class="swatch pose"></span>"pose "<span class="swatch face"></span>"face "
                <span class="swatch lip"></span>"lips"
            </label>
            <label>{switch(layers.regions, "layer-regions")}{format!("regions: face ×{ratio:.2}, lips ×2")}</label>
        </div>
    }
}

/// The speech's outline with a playhead that follows the audio player; a click plays from there.
#[component]
fn Waveform(audio: AudioPreview, playhead: RwSignal<f64>) -> impl IntoView {
    let n = audio.waveform.len().max(1);
    let duration = audio.duration_s.max(1e-9);
    let x = move || {
        format!(
            "{:.1}",
            (playhead.get() / duration).clamp(0.0, 1.0) * n as f64
        )
    };
    view! {
        <svg
            id="waveform"
            class="waveform"
            viewBox=format!("0 0 {n} 100")
            preserveAspectRatio="none"
            role="img"
            aria-label="waveform of the speech (click to play from there)"
            on:click=move |ev| seek_to_click(&ev, duration)
        >
            <path class="wave" d=waveform_path(&audio.waveform)></path>
            <line class="playhead" x1=x x2=x y1="0" y2="100"></line>
        </svg>
    }
}

/// Moves the audio player to the point of the waveform that was clicked.
fn seek_to_click(ev: &leptos::ev::MouseEvent, duration: f64) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(svg) = ev
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let rect = svg.get_bounding_client_rect();
        if rect.width() <= 0.0 {
            return;
        }
        let fraction = ((f64::from(ev.client_x()) - rect.left()) / rect.width()).clamp(0.0, 1.0);
        if let Some(player) = document()
            .get_element_by_id("audio-preview")
            .and_then(|e| e.dyn_into::<web_sys::HtmlMediaElement>().ok())
        {
            player.set_current_time(fraction * duration);
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, duration);
}

/// A closed outline, mirrored about the middle line, of levels scaled to the loudest one, in
/// a `len × 100` box.
pub fn waveform_path(levels: &[f32]) -> String {
    let loudest = levels.iter().fold(0f32, |m, v| m.max(*v));
    let scale = if loudest > 0.0 { 48.0 / loudest } else { 0.0 };
    let mut d = String::from("M0,50");
    for (i, v) in levels.iter().enumerate() {
        d.push_str(&format!(" L{:.1},{:.1}", i as f32 + 0.5, 50.0 - v * scale));
    }
    d.push_str(&format!(" L{},50", levels.len()));
    for (i, v) in levels.iter().enumerate().rev() {
        d.push_str(&format!(" L{:.1},{:.1}", i as f32 + 0.5, 50.0 + v * scale));
    }
    d.push_str(" Z");
    d
}

/// "mp3 · 44.1 kHz · stereo · peak −3.2 dBFS".
pub fn audio_format(a: &AudioPreview) -> String {
    let channels = match a.channels {
        1 => "mono".to_string(),
        2 => "stereo".to_string(),
        n => format!("{n} channels"),
    };
    format!(
        "{} · {} kHz · {channels} · peak {:.1} dBFS",
        a.codec,
        f64::from(a.sample_rate) / 1000.0,
        a.peak_dbfs
    )
}

/// Posts the form to the old API's endpoint and opens the job's page.
fn submit(
    ev: &leptos::ev::SubmitEvent,
    live: LiveBackend,
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
        // An unchecked box sends nothing, which would mean "the studio's default": say it.
        if let Some(input) = document()
            .get_element_by_id("separate-vocals")
            .and_then(|e| e.dyn_into::<web_sys::HtmlInputElement>().ok())
            .filter(|i| !i.disabled())
        {
            let value = if input.checked() { "true" } else { "false" };
            let _ = data.set_with_str("separate_vocals", value);
        }
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
                Ok(Ok(r)) => crate::pages::job::open_new_job(live, &r.task_id, navigate).await,
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
    let _ = (ev, live, error, submitting);
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
    /// Called with the value when the user lets go of the slider.
    #[prop(optional)]
    on_commit: Option<Callback<f32>>,
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
