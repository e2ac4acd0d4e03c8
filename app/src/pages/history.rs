//! `/jobs`: every job, newest first, with its portrait, audio length, parameters and state;
//! finished jobs can be deleted.

use leptos::prelude::*;

use crate::format;
use crate::jobs::JobRecord;
use crate::live::LiveBackend;
use crate::pages::job::DeleteButton;

#[component]
pub fn HistoryPage() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let error = RwSignal::new(crate::api::form_error().map(|(_, e)| e.error));
    view! {
        <section class="panel">
            <h1>"Jobs"</h1>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            {move || {
                let jobs = live.jobs.get();
                if jobs.is_empty() {
                    view! { <p class="muted" id="no-jobs">"No jobs yet."</p> }.into_any()
                } else {
                    view! {
                        <table class="history" id="history">
                            <thead><tr><th></th><th>"Inputs"</th><th>"Audio"</th><th>"Parameters"</th><th>"State"</th><th></th></tr></thead>
                            <tbody>
                                {jobs.into_iter().map(|j| row(j, error)).collect_view()}
                            </tbody>
                        </table>
                    }
                    .into_any()
                }
            }}
        </section>
    }
}

fn row(job: JobRecord, error: RwSignal<Option<String>>) -> impl IntoView {
    let id = job.id.clone();
    let href = format!("/jobs/{id}");
    let params = format!(
        "seed {} · steps {}",
        job.seed_used
            .or(job.params.seed)
            .map_or("random".into(), |s| s.to_string()),
        job.params.steps.map_or("default".into(), |s| s.to_string())
    );
    let final_state = job.state.is_final();
    view! {
        <tr data-job=id.clone() data-state=job.state.name()>
            <td><img class="thumb" alt="" loading="lazy" src=format!("/api/jobs/{id}/image")/></td>
            <td><a href=href>{format!("{} + {}", job.image_name, job.audio_name)}</a><br/><span class="muted">{job.created_at.clone()}</span></td>
            <td>{format::duration_s(job.audio_seconds)}</td>
            <td>{params}</td>
            <td><span class="badge">{job.state.name()}</span></td>
            <td>
                {final_state.then(|| view! { <DeleteButton id=id.clone() error=error/> })}
            </td>
        </tr>
    }
}
