//! `/jobs/:id`: one job live — state, progress bar, clip and step, ETA, Cancel — then the video
//! with its download, parameters and provenance.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::format;
use crate::jobs::{JobParams, JobRecord, JobState};
use crate::live::LiveBackend;

/// Cancels (running or waiting) or deletes (finished) a job through the old API's DELETE; a
/// deleted job leaves the page's list (cancellations arrive as job events).
pub fn delete_job(live: LiveBackend, id: String, on_error: RwSignal<Option<String>>) {
    #[cfg(feature = "hydrate")]
    leptos::task::spawn_local(async move {
        let url = format!("/api/v1/tasks/{id}");
        match crate::fetch::send("DELETE", &url, None).await {
            Ok(_) => {
                live.jobs
                    .update(|jobs| jobs.retain(|j| j.id != id || !j.state.is_final()));
            }
            Err(e) => on_error.set(Some(e.error)),
        }
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = (live, id, on_error);
}

/// Opens the page of a job just created. Its record is fetched first, so the page never shows
/// the job missing while its first event is still on the way.
#[cfg(feature = "hydrate")]
pub async fn open_new_job(
    live: LiveBackend,
    id: &str,
    navigate: impl Fn(&str, leptos_router::NavigateOptions),
) {
    if let Ok(text) = crate::fetch::send("GET", &format!("/api/jobs/{id}"), None).await
        && let Ok(job) = serde_json::from_str::<JobRecord>(&text)
    {
        live.know_job(job);
    }
    navigate(&format!("/jobs/{id}"), Default::default());
}

/// Queues the job again from its stored inputs (with `params`, or the same parameters and seed)
/// and opens the new job.
fn rerun_job(
    live: LiveBackend,
    id: String,
    params: Option<JobParams>,
    on_error: RwSignal<Option<String>>,
) {
    #[cfg(feature = "hydrate")]
    {
        let navigate = leptos_router::hooks::use_navigate();
        leptos::task::spawn_local(async move {
            let url = format!("/api/jobs/{id}/rerun");
            let body = params
                .and_then(|p| serde_json::to_string(&p).ok())
                .map(crate::fetch::Body::Json);
            match crate::fetch::send_body("POST", &url, body).await {
                Ok(text) => match serde_json::from_str::<crate::jobs::SubmitResponse>(&text) {
                    Ok(r) => open_new_job(live, &r.task_id, navigate).await,
                    Err(e) => on_error.set(Some(format!("unexpected answer: {e}"))),
                },
                Err(e) => on_error.set(Some(e.error)),
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (live, id, params, on_error);
}

/// Reads the re-run form's fields (empty: the default; an empty seed: random).
#[cfg(feature = "hydrate")]
fn params_from_form(ev: &leptos::ev::SubmitEvent) -> Option<JobParams> {
    use wasm_bindgen::JsCast;
    let form = ev.target()?.dyn_into::<web_sys::HtmlFormElement>().ok()?;
    let data = web_sys::FormData::new_with_form(&form).ok()?;
    let text = |k: &str| {
        data.get(k)
            .as_string()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let float = |k: &str| text(k).and_then(|s| s.parse::<f64>().ok());
    Some(JobParams {
        pose_weight: float("pose_weight"),
        face_weight: float("face_weight"),
        lip_weight: float("lip_weight"),
        steps: text("steps").and_then(|s| s.parse().ok()),
        cfg_scale: float("cfg_scale"),
        seed: text("seed").and_then(|s| s.parse().ok()),
        face_expand_ratio: float("face_expand_ratio"),
        use_cache: true,
        separate_vocals: text("separate_vocals").map(|s| s == "true"),
    })
}

/// Other parameters for the same inputs.
#[component]
fn RerunForm(job: JobRecord, error: RwSignal<Option<String>>) -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let p = job.params.clone();
    let value = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let id = job.id.clone();
    view! {
        <details class="rerun">
            <summary>"Run again with other parameters"</summary>
            <form
                id="rerun-form"
                class="generate"
                on:submit=move |ev| {
                    ev.prevent_default();
                    #[cfg(feature = "hydrate")]
                    rerun_job(live, id.clone(), params_from_form(&ev), error);
                    #[cfg(not(feature = "hydrate"))]
                    let _ = (&ev, &id, live, error);
                }
            >
                <div class="controls">
                    <label>"Pose weight"<input type="number" name="pose_weight" min="0" max="2" step="0.05" value=value(p.pose_weight) placeholder="1.0"/></label>
                    <label>"Face weight"<input type="number" name="face_weight" min="0" max="2" step="0.05" value=value(p.face_weight) placeholder="1.0"/></label>
                    <label>"Lip weight"<input type="number" name="lip_weight" min="0" max="2" step="0.05" value=value(p.lip_weight) placeholder="1.0"/></label>
                    <label>"CFG scale"<input type="number" name="cfg_scale" min="1" max="20" step="0.1" value=value(p.cfg_scale) placeholder="3.5"/></label>
                    <label>"Face expand ratio"<input type="number" name="face_expand_ratio" min="1" max="2" step="0.05" value=value(p.face_expand_ratio) placeholder="1.2"/></label>
                    <label>"Denoising steps"<input type="number" name="steps" min="1" max="200" value=p.steps.map(|s| s.to_string()).unwrap_or_default() placeholder="default"/></label>
                    <label>"Seed (empty: random)"<input type="number" name="seed" min="0" value=""/></label>
                    <label>
                        "Vocals"
                        <select name="separate_vocals">
                            <option value="" selected=p.separate_vocals.is_none()>"as the studio is set"</option>
                            <option value="true" selected=p.separate_vocals == Some(true)>"separate first"</option>
                            <option value="false" selected=p.separate_vocals == Some(false)>"raw mix"</option>
                        </select>
                    </label>
                </div>
                <button id="rerun-submit" type="submit">"Run with these"</button>
            </form>
        </details>
    }
}

#[component]
pub fn JobPage() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let job = Memo::new(move |_| {
        let id = id();
        live.jobs
            .with(|jobs| jobs.iter().find(|j| j.id == id).cloned())
    });
    // The view is rebuilt only when the job changes state; progress events update its parts.
    let shown = Memo::new(move |_| job.with(|j| j.as_ref().map(|j| (j.id.clone(), j.state))));
    let running = Memo::new(move |_| job.with(|j| j.as_ref().is_some_and(|j| !j.state.is_final())));
    let error = RwSignal::new(None::<String>);
    view! {
        {move || match shown.get() {
            None => view! {
                <section class="panel">
                    <h1>"No such job"</h1>
                    <p><a href="/jobs">"All jobs"</a></p>
                </section>
            }
            .into_any(),
            Some(_) => match job.get_untracked() {
                Some(j) => view! { <JobView job=j live_job=job/> }.into_any(),
                None => ().into_any(),
            },
        }}
        <Show when=move || running.get()>
            <div class="job-actions">
                <button id="job-cancel" on:click=move |_| delete_job(live, id(), error)>"Cancel"</button>
                {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            </div>
        </Show>
    }
}

/// One job: `job` as it was when it entered its state (what does not change within a state),
/// `live_job` for what does (message, progress, last frame).
#[component]
fn JobView(job: JobRecord, live_job: Memo<Option<JobRecord>>) -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let error = RwSignal::new(None::<String>);
    let id = job.id.clone();
    let video_url = format!("/api/v1/tasks/{id}/video");
    let download_name = format!("hallo2_{id}.mp4");
    let now = move |f: fn(&JobRecord) -> String| {
        move || live_job.with(|j| j.as_ref().map(f).unwrap_or_default())
    };
    let fraction =
        Memo::new(move |_| live_job.with(|j| j.as_ref().map_or(0.0, |j| j.progress.fraction)));
    // `?clip=` changes with each clip, so the browser fetches the new frame.
    let frame_id = id.clone();
    let frame = Memo::new(move |_| {
        live_job.with(|j| {
            j.as_ref()
                .filter(|j| j.files.frame.is_some())
                .map(|j| j.files.frame_clip)
        })
    });
    let final_state = job.state.is_final();
    view! {
        <section class="panel job" id="job" data-state=job.state.name()>
            <h1>{format!("{} + {}", job.image_name, job.audio_name)}</h1>
            <p class="job-state">
                <span class="badge" id="job-state">{job.state.name()}</span>
                " "
                <span id="job-message">{now(|j| j.message.clone())}</span>
            </p>
            {(!final_state).then(|| view! {
                <progress id="job-progress" max="1" value=move || fraction.get()></progress>
                <p class="muted">
                    <span id="job-steps">{now(steps_text)}</span>" "<span id="job-eta">{now(eta_text)}</span>
                </p>
                {move || frame.get().map(|clip| view! {
                    <figure class="last-frame">
                        <img id="job-frame" src=format!("/api/jobs/{frame_id}/frame?clip={clip}") alt="last finished frame"/>
                        <figcaption class="muted">{format!("end of clip {clip}")}</figcaption>
                    </figure>
                })}
            })}
            {final_state.then(|| {
                let id = id.clone();
                view! {
                    <button id="job-rerun" class="small" on:click=move |_| rerun_job(live, id.clone(), None, error)>
                        "Run again (same inputs, parameters and seed)"
                    </button>
                }
            })}
            {final_state.then(|| view! { <RerunForm job=job.clone() error=error/> })}
            {(job.state == JobState::Completed).then(|| view! {
                <video id="job-video" controls preload="metadata" src=video_url.clone()></video>
                <p><a id="job-download" href=video_url.clone() download=download_name>"Download MP4"</a></p>
            })}
            {job.error.clone().map(|e| view! { <p class="error" id="job-error">{e}</p> })}
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            <dl class="facts">
                <dt>"Audio"</dt><dd>{format::duration_s(job.audio_seconds)}</dd>
                <dt>"Seed"</dt><dd id="job-seed">{job.seed_used.or(job.params.seed).map_or("random".to_string(), |s| s.to_string())}</dd>
                <dt>"Steps · CFG"</dt><dd>{format!("{} · {}", opt(job.params.steps), opt(job.params.cfg_scale))}</dd>
                <dt>"Pose · face · lip"</dt><dd>{format!("{} · {} · {}", opt(job.params.pose_weight), opt(job.params.face_weight), opt(job.params.lip_weight))}</dd>
                <dt>"Created"</dt><dd>{job.created_at.clone()}</dd>
                {job.made_with.clone().map(|m| view! { <dt>"Made on"</dt><dd>{format!("{} ({})", m.device, m.dtype)}</dd> })}
                <dt>"Vocals"</dt><dd id="job-vocals">{vocals_text(&job)}</dd>
                {job.resumed_from_clip.map(|clip| view! {
                    <dt>"Interrupted"</dt>
                    <dd id="job-resumed">{format!("resumed from clip {clip} (its last checkpoint)")}</dd>
                })}
                {(!job.timings.is_empty()).then(|| view! {
                    <dt>"Stage seconds"</dt>
                    <dd>{job.timings.iter().map(|(s, t)| format!("{s} {t:.2}")).collect::<Vec<_>>().join(" · ")}</dd>
                })}
            </dl>
            <p><a href="/jobs">"All jobs"</a></p>
        </section>
    }
}

/// `clip 2/19 · step 3/6`, once the clips are known.
fn steps_text(j: &JobRecord) -> String {
    let p = &j.progress;
    if p.clips > 0 {
        format!("clip {}/{} · step {}/{}", p.clip, p.clips, p.step, p.steps)
    } else {
        String::new()
    }
}

/// `about 1 min 20 s left`, once there is an estimate.
fn eta_text(j: &JobRecord) -> String {
    j.progress
        .eta_s
        .map(|s| format!("about {} left", format::duration_s(s)))
        .unwrap_or_default()
}

/// A parameter, or "default".
fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "default".into(), |v| v.to_string())
}

/// Whether the audio features were computed from separated vocals: what the finished run
/// records, else what the job asked for.
fn vocals_text(job: &JobRecord) -> String {
    if let Some(made) = &job.made_with {
        return match &made.vocal_separator {
            Some(separator) => format!("separated ({separator})"),
            None => "not separated (features from the raw mix)".into(),
        };
    }
    match job.params.separate_vocals {
        Some(true) => "to be separated".into(),
        Some(false) => "not separated (features from the raw mix)".into(),
        None => "as the studio is set (separated unless vocal_separation is off)".into(),
    }
}
