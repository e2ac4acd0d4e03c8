//! `/jobs/:id`: one job live — state, progress bar, clip and step, ETA, Cancel — then the video
//! with its download, parameters and provenance.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::format;
use crate::jobs::{JobRecord, JobState};
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

/// Queues the job again from its stored inputs and opens the new job.
fn rerun_job(id: String, on_error: RwSignal<Option<String>>) {
    #[cfg(feature = "hydrate")]
    {
        let navigate = leptos_router::hooks::use_navigate();
        leptos::task::spawn_local(async move {
            let url = format!("/api/jobs/{id}/rerun");
            match crate::fetch::send("POST", &url, None).await {
                Ok(text) => match serde_json::from_str::<crate::jobs::SubmitResponse>(&text) {
                    Ok(r) => navigate(&format!("/jobs/{}", r.task_id), Default::default()),
                    Err(e) => on_error.set(Some(format!("unexpected answer: {e}"))),
                },
                Err(e) => on_error.set(Some(e.error)),
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (id, on_error);
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
    move || match job.get() {
        None => view! {
            <section class="panel">
                <h1>"No such job"</h1>
                <p><a href="/jobs">"All jobs"</a></p>
            </section>
        }
        .into_any(),
        Some(j) => view! { <JobView job=j/> }.into_any(),
    }
}

#[component]
fn JobView(job: JobRecord) -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let error = RwSignal::new(None::<String>);
    let id = job.id.clone();
    let video_url = format!("/api/v1/tasks/{id}/video");
    let download_name = format!("hallo2_{id}.mp4");
    let p = &job.progress;
    let steps = if p.clips > 0 {
        format!("clip {}/{} · step {}/{}", p.clip, p.clips, p.step, p.steps)
    } else {
        String::new()
    };
    let eta = p
        .eta_s
        .map(|s| format!("about {} left", format::duration_s(s)))
        .unwrap_or_default();
    let final_state = job.state.is_final();
    let cancel_id = id.clone();
    view! {
        <section class="panel job" id="job" data-state=job.state.name()>
            <h1>{format!("{} + {}", job.image_name, job.audio_name)}</h1>
            <p class="job-state">
                <span class="badge" id="job-state">{job.state.name()}</span>
                " "
                <span id="job-message">{job.message.clone()}</span>
            </p>
            {(!final_state).then(|| view! {
                <progress id="job-progress" max="1" value=job.progress.fraction></progress>
                <p class="muted">
                    <span id="job-steps">{steps}</span>" "<span id="job-eta">{eta}</span>
                </p>
                <button id="job-cancel" on:click=move |_| delete_job(live, cancel_id.clone(), error)>"Cancel"</button>
            })}
            {final_state.then(|| {
                let id = id.clone();
                view! {
                    <button id="job-rerun" class="small" on:click=move |_| rerun_job(id.clone(), error)>
                        "Run again (same inputs, parameters and seed)"
                    </button>
                }
            })}
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
                {(!job.timings.is_empty()).then(|| view! {
                    <dt>"Stage seconds"</dt>
                    <dd>{job.timings.iter().map(|(s, t)| format!("{s} {t:.2}")).collect::<Vec<_>>().join(" · ")}</dd>
                })}
            </dl>
            <p><a href="/jobs">"All jobs"</a></p>
        </section>
    }
}

/// A parameter, or "default".
fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "default".into(), |v| v.to_string())
}
