//! `/jobs/:id`: one job live — state, progress bar, clip and step, ETA, Cancel — then the video
//! with its download, parameters and provenance, Run again and Delete.
//!
//! Every action is a server function behind a plain form: without JavaScript the page still
//! cancels, re-runs and deletes (the server redirects), and refreshes itself while the job
//! runs.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use leptos::form::ActionForm;
use server_fn::ServerFn;

use crate::api::{CancelJob, DeleteJob, RerunJob, form_error};
use crate::format;
use crate::jobs::{JobRecord, JobState};
use crate::live::LiveBackend;
use crate::settings::Bound;
use crate::types::ErrorBody;

/// What a job action came back with: a refusal to show, and (a re-run's) new job to open.
fn on_result<T>(
    action: ServerAction<T>,
    error: RwSignal<Option<String>>,
    then: impl Fn(T::Output) + 'static,
) where
    T: ServerFn<Error = ErrorBody> + Clone + Send + Sync + 'static,
    T::Output: Clone + Send + Sync + 'static,
{
    Effect::new(move |_| match action.value().get() {
        Some(Ok(out)) => then(out),
        Some(Err(e)) => error.set(Some(e.error)),
        None => {}
    });
}

/// Opens a job just created (its record is known first, so the page never shows it missing
/// while its first event is on the way).
fn open_job(live: LiveBackend) -> impl Fn(JobRecord) + 'static {
    let navigate = leptos_router::hooks::use_navigate();
    move |job: JobRecord| {
        let id = job.id.clone();
        live.know_job(job);
        navigate(&format!("/jobs/{id}"), Default::default());
    }
}

/// A button that deletes a finished job (a plain form then goes to the job list).
#[component]
pub fn DeleteButton(id: String, error: RwSignal<Option<String>>) -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let action = ServerAction::<DeleteJob>::new();
    let deleted = id.clone();
    on_result(action, error, move |()| {
        live.jobs
            .update(|jobs| jobs.retain(|j| j.id != deleted || !j.state.is_final()));
    });
    view! {
        <ActionForm action=action attr:class="inline">
            <input type="hidden" name="id" value=id/>
            <button class="small job-delete" type="submit">"Delete"</button>
        </ActionForm>
    }
}

/// Other parameters for the same inputs (empty fields: the profile's defaults).
#[component]
fn RerunForm(job: JobRecord, error: RwSignal<Option<String>>) -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let b = live.settings.get_value().bounds;
    let d = live.settings.get_value().defaults;
    let action = ServerAction::<RerunJob>::new();
    on_result(action, error, open_job(live));
    let p = job.params.clone();
    let number = move |name: &'static str,
                       label: &'static str,
                       bound: Bound<f64>,
                       step: &'static str,
                       v: Option<f64>,
                       default: f64| {
        view! {
            <label>
                {label}
                <input
                    type="number"
                    name=format!("fields[{name}]")
                    min=bound.min.to_string()
                    max=bound.max.to_string()
                    step=step
                    value=v.map(|v| v.to_string()).unwrap_or_default()
                    placeholder=default.to_string()
                />
            </label>
        }
    };
    view! {
        <details class="rerun">
            <summary>"Run again with other parameters"</summary>
            <ActionForm action=action attr:id="rerun-form" attr:class="generate">
                <input type="hidden" name="id" value=job.id.clone()/>
                <div class="controls">
                    {number("pose_weight", "Pose weight", b.pose_weight, "0.05", p.pose_weight, d.pose_weight)}
                    {number("face_weight", "Face weight", b.face_weight, "0.05", p.face_weight, d.face_weight)}
                    {number("lip_weight", "Lip weight", b.lip_weight, "0.05", p.lip_weight, d.lip_weight)}
                    {number("cfg_scale", "CFG scale", b.cfg_scale, "0.1", p.cfg_scale, d.cfg_scale)}
                    {number("face_expand_ratio", "Face expand ratio", b.face_expand_ratio, "0.05", p.face_expand_ratio, d.face_expand_ratio)}
                    <label>
                        "Denoising steps"
                        <input
                            type="number"
                            name="fields[steps]"
                            min=b.steps.min.to_string()
                            max=b.steps.max.to_string()
                            value=p.steps.map(|s| s.to_string()).unwrap_or_default()
                            placeholder=d.steps.to_string()
                        />
                    </label>
                    <label>"Seed (empty: random)"<input type="number" name="fields[seed]" min="0" value=""/></label>
                    <label>
                        "Vocals"
                        <select name="fields[separate_vocals]">
                            <option value="" selected=p.separate_vocals.is_none()>"as the studio is set"</option>
                            <option value="true" selected=p.separate_vocals == Some(true)>"separate first"</option>
                            <option value="false" selected=p.separate_vocals == Some(false)>"raw mix"</option>
                        </select>
                    </label>
                </div>
                <button id="rerun-submit" type="submit">"Run with these"</button>
            </ActionForm>
        </details>
    }
}

/// "Run again" with the same inputs, parameters and seed.
#[component]
fn RerunSame(id: String, error: RwSignal<Option<String>>) -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let action = ServerAction::<RerunJob>::new();
    on_result(action, error, open_job(live));
    view! {
        <ActionForm action=action attr:class="inline">
            <input type="hidden" name="id" value=id/>
            <input type="hidden" name="fields[same]" value="1"/>
            <button id="job-rerun" class="small" type="submit">
                "Run again (same inputs, parameters and seed)"
            </button>
        </ActionForm>
    }
}

/// Cancel, for a job that waits or runs (a plain form comes back to the job's page).
#[component]
fn CancelButton(id: String, error: RwSignal<Option<String>>) -> impl IntoView {
    let action = ServerAction::<CancelJob>::new();
    on_result(action, error, |_| {});
    view! {
        <ActionForm action=action attr:class="inline">
            <input type="hidden" name="id" value=id/>
            <button id="job-cancel" type="submit">"Cancel"</button>
        </ActionForm>
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
    // A plain form's refusal comes back in the query.
    let error = RwSignal::new(form_error().map(|(_, e)| e.error));
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
            // Without JavaScript the page follows the job by reloading itself.
            <noscript><meta http-equiv="refresh" content="2"/></noscript>
            <div class="job-actions">
                <CancelButton id=id() error=error/>
            </div>
        </Show>
        {move || error.get().map(|e| view! { <p class="error" id="job-action-error">{e}</p> })}
    }
}

/// One job: `job` as it was when it entered its state (what does not change within a state),
/// `live_job` for what does (message, progress, last frame).
#[component]
fn JobView(job: JobRecord, live_job: Memo<Option<JobRecord>>) -> impl IntoView {
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
            {final_state.then(|| view! {
                <div class="job-actions">
                    <RerunSame id=id.clone() error=error/>
                    <DeleteButton id=id.clone() error=error/>
                </div>
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

// Render tests need the `ssr` renderer (on whenever the workspace's tests build).
#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::jobs::{JobFiles, JobParams, JobProgress};
    use crate::live::Snapshot;
    use crate::settings::GenerationSettings;

    fn finished_job() -> JobRecord {
        JobRecord {
            id: "00000000-0000-4000-8000-000000000001".into(),
            state: JobState::Completed,
            params: JobParams {
                steps: Some(12),
                ..JobParams::default()
            },
            seed_used: Some(7),
            created_at: String::new(),
            updated_at: String::new(),
            message: String::new(),
            progress: JobProgress::default(),
            error: None,
            image_name: "a.png".into(),
            audio_name: "b.wav".into(),
            audio_seconds: 1.0,
            files: JobFiles::default(),
            attempts: 1,
            resumed_from_clip: None,
            timings: vec![],
            made_with: None,
        }
    }

    /// The actions are plain forms posting to their server functions (so they work without
    /// JavaScript), and the re-run form's ranges are the server's bounds.
    #[test]
    fn actions_are_plain_forms_with_the_servers_bounds() {
        let owner = Owner::new();
        owner.set();
        let mut settings = GenerationSettings::default();
        settings.bounds.steps = Bound::new(3, 33);
        settings.bounds.cfg_scale = Bound::new(1.5, 7.5);
        provide_context(LiveBackend::new(Snapshot {
            settings,
            ..Snapshot::default()
        }));
        provide_context(leptos_router::location::RequestUrl::new("/jobs/x"));
        let error = RwSignal::new(None);
        let job = finished_job();
        let id = job.id.clone();
        let (a, b, c) = (id.clone(), id.clone(), id.clone());
        let html = view! {
            <leptos_router::components::Router>
                <RerunForm job=job error=error/>
                <RerunSame id=a error=error/>
                <DeleteButton id=b error=error/>
                <CancelButton id=c error=error/>
            </leptos_router::components::Router>
        }
        .to_html();
        for part in [
            format!(r#"action="{}""#, RerunJob::PATH),
            format!(r#"action="{}""#, DeleteJob::PATH),
            format!(r#"action="{}""#, CancelJob::PATH),
            r#"name="fields[steps]" min="3" max="33" value="12""#.to_string(),
            r#"name="fields[cfg_scale]" min="1.5" max="7.5""#.to_string(),
            r#"name="fields[same]" value="1""#.to_string(),
            format!(r#"name="id" value="{id}""#),
        ] {
            assert!(html.contains(&part), "{part} in {html}");
        }
        assert_eq!(html.matches(r#"method="post""#).count(), 4, "{html}");
    }
}
