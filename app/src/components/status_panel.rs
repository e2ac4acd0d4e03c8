//! The backend panel at the top of every page: "Backend not ready" with every load stage moving,
//! "Ready" with device, dtype and load time, "Failed" with the cause, a hint and Retry, or
//! "Backend disabled".

use leptos::prelude::*;

use crate::format;
use crate::live::{LiveBackend, Stream};
use crate::status::running_stage;
use crate::types::{
    BackendState, BackendStatus, LoadStage, StagePhase, StageSummary, WorkerReport,
};

/// What a person calls each stage.
pub fn stage_label(stage: LoadStage) -> &'static str {
    match stage {
        LoadStage::Resolve => "Find weight files",
        LoadStage::Download => "Download weights",
        LoadStage::Verify => "Verify weights",
        LoadStage::FaceAnalysis => "Face analysis models",
        LoadStage::AudioEncoder => "Audio encoder (wav2vec2)",
        LoadStage::VocalSeparator => "Vocal separator (Kim_Vocal_2)",
        LoadStage::Vae => "VAE",
        LoadStage::ReferenceUnet => "Reference UNet",
        LoadStage::DenoisingUnet => "Denoising UNet",
        LoadStage::Heads => "Face locator, image and audio projections",
        LoadStage::Warmup => "Warm-up pass",
    }
}

/// The panel's heading for a state.
pub fn state_title(state: &BackendState) -> &'static str {
    match state {
        BackendState::Starting | BackendState::Loading { .. } | BackendState::Warming => {
            "Backend not ready"
        }
        BackendState::Ready { .. } => "Ready",
        BackendState::Failed { .. } => "Failed",
        BackendState::Disabled => "Backend disabled",
        BackendState::Draining => "Shutting down",
    }
}

/// One line under the heading.
fn state_summary(status: &BackendStatus, since_event_ms: u64) -> String {
    match &status.state {
        BackendState::Starting => "Waiting to load the model.".into(),
        BackendState::Loading { .. } | BackendState::Warming => {
            let stage = running_stage(status)
                .map(|s| stage_label(s.stage))
                .or_else(|| status.state.stage().map(stage_label))
                .unwrap_or("Loading");
            let eta = status
                .eta_s
                .map(|s| (s - since_event_ms as f64 / 1000.0).max(0.0))
                .map(|s| format!(", about {} left", format::duration_s(s)))
                .unwrap_or_default();
            format!(
                "{stage}… {} of the load done{eta}.",
                format::percent(status.progress)
            )
        }
        BackendState::Ready {
            device,
            dtype,
            load_s,
            ..
        } => format!(
            "Hallo2 is loaded on {device} ({dtype}) in {}.",
            format::duration_s(*load_s)
        ),
        BackendState::Failed { stage, .. } => {
            format!("Loading stopped at “{}”.", stage_label(*stage))
        }
        BackendState::Disabled => {
            "The server runs without a model (DISABLE_BACKEND); nothing can be generated.".into()
        }
        BackendState::Draining => "The server is stopping.".into(),
    }
}

#[component]
pub fn StatusPanel() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let status = live.status;
    let state_name = move || status.with(|s| s.state.name());
    let loading = move || {
        status.with(|s| {
            matches!(
                s.state,
                BackendState::Starting | BackendState::Loading { .. } | BackendState::Warming
            )
        })
    };
    // A cluster's web node loads nothing itself: its workers' rows show their stages.
    let show_stages =
        move || status.with(|s| !matches!(s.state, BackendState::Disabled) && s.workers.is_empty());
    view! {
        <section id="backend-status" class="panel backend" data-state=state_name aria-live="polite">
            <div class="backend-head">
                <span class="dot" aria-hidden="true"></span>
                <h2 id="backend-title">{move || status.with(|s| state_title(&s.state))}</h2>
                <StreamBadge/>
            </div>
            <p id="backend-summary">
                {move || status.with(|s| state_summary(s, live.since_event_ms.get()))}
            </p>
            <Show when=loading>
                <progress
                    id="backend-progress"
                    max="1"
                    value=move || status.with(|s| s.progress)
                ></progress>
            </Show>
            <DeviceNote/>
            <FailureDetails/>
            <WorkerList/>
            <Show when=show_stages>
                <details class="stages" open=move || loading() || status.with(|s| s.state.name() == "failed")>
                    <summary>"Load stages"</summary>
                    <StageList/>
                </details>
            </Show>
        </section>
    }
}

/// Why the model is not on a GPU, when `device = "auto"` fell back to the CPU.
#[component]
fn DeviceNote() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let note = move || {
        live.status.with(|s| match &s.state {
            BackendState::Ready { device_note, .. } => device_note.clone(),
            _ => None,
        })
    };
    view! {
        {move || note().map(|note| view! { <p id="device-note" class="device-note" role="note">{note}</p> })}
    }
}

/// In a cluster: each worker with its own state, load progress and stages, and the job it
/// runs (the heading above is the cluster's: ready when one worker is).
#[component]
fn WorkerList() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let workers = move || live.status.with(|s| s.workers.clone());
    view! {
        <Show when=move || live.status.with(|s| !s.workers.is_empty())>
            <ul id="workers" class="workers">
                <For each=workers key=|w| format!("{w:?}") let:worker>
                    <WorkerRow worker/>
                </For>
            </ul>
        </Show>
    }
}

#[component]
fn WorkerRow(worker: WorkerReport) -> impl IntoView {
    let done = worker
        .stages
        .iter()
        .filter(|s| s.phase == StagePhase::Done)
        .count();
    let stages = format!("{done}/{} stages", worker.stages.len());
    let what = match &worker.state {
        BackendState::Loading { stage } => format!("loading: {}", stage_label(*stage)),
        BackendState::Warming => "warming up".into(),
        BackendState::Ready { device, dtype, .. } => format!("ready on {device} ({dtype})"),
        BackendState::Failed { error, .. } => format!("failed: {error}"),
        other => other.name().replace('_', " "),
    };
    let job = worker.job.as_ref().map(|id| {
        let short = id[..id.len().min(8)].to_string();
        view! { <span class="worker-job">" · running job " {short}</span> }
    });
    view! {
        <li class="worker" data-worker=worker.name.clone() data-state=worker.state.name()>
            <strong>{worker.name.clone()}</strong>
            " — "
            <span class="worker-state">{what}</span>
            " · "
            <span class="worker-stages">{stages}</span>
            " · "
            {format::percent(worker.progress)}
            {job}
        </li>
    }
}

/// Tells the user when live updates stopped (the browser reconnects by itself).
#[component]
fn StreamBadge() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    move || match live.stream.get() {
        Stream::Idle => None,
        Stream::Open => Some(view! { <span class="badge live" id="stream-state">"live"</span> }),
        Stream::Reconnecting => Some(view! {
            <span class="badge warn" id="stream-state">"reconnecting…"</span>
        }),
    }
}

/// Where Retry posts (the `reload_backend` server function).
const RELOAD_PATH: &str = <crate::api::ReloadBackend as server_fn::ServerFn>::PATH;

/// The cause, the hint and Retry. The form posts without JavaScript too (the server then
/// redirects back to the page).
#[component]
fn FailureDetails() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let failure = move || {
        live.status.with(|s| match &s.state {
            BackendState::Failed { error, hint, .. } => Some((error.clone(), hint.clone())),
            _ => None,
        })
    };
    move || {
        failure().map(|(error, hint)| {
            view! {
                <div class="failure">
                    <p id="backend-error" class="error">{error}</p>
                    <p id="backend-hint" class="hint">{hint}</p>
                    <form
                        method="post"
                        action=RELOAD_PATH
                        on:submit=move |ev| {
                            ev.prevent_default();
                            live.reload();
                        }
                    >
                        <button id="backend-retry" type="submit">"Retry"</button>
                    </form>
                    {move || {
                        live.reload_error
                            .get()
                            .map(|e| view! { <p class="error" id="retry-error">{e}</p> })
                    }}
                </div>
            }
        })
    }
}

/// Every stage of the current load: phase, bar, bytes, elapsed against expected.
#[component]
pub fn StageList() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let stages = move || live.status.with(|s| s.stages.clone());
    view! {
        <ol class="stage-list">
            <For each=stages key=|s| s.stage let:stage>
                <StageRow stage=stage.stage/>
            </For>
        </ol>
    }
}

#[component]
fn StageRow(stage: LoadStage) -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let summary = move || {
        live.status
            .with(|s| s.stages.iter().find(|x| x.stage == stage).cloned())
    };
    let phase = move || summary().map_or("pending", |s| phase_name(s.phase));
    let progress = move || summary().map_or(0.0, |s| s.progress);
    let detail = move || {
        summary()
            .map(|s| stage_detail(&s, live.since_event_ms.get()))
            .unwrap_or_default()
    };
    let files = move || summary().map(|s| s.files).unwrap_or_default();
    view! {
        <li class="stage" data-stage=stage.name() data-phase=phase>
            <span class="stage-name">{stage_label(stage)}</span>
            <span class="stage-phase">{phase}</span>
            <progress class="stage-bar" max="1" value=progress></progress>
            <span class="stage-detail">{detail}</span>
            <ul class="files">
                <For each=files key=|f| f.name.clone() let:file>
                    <FileRow stage=stage name=file.name/>
                </For>
            </ul>
        </li>
    }
}

#[component]
fn FileRow(stage: LoadStage, name: String) -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let key = name.clone();
    let file = Memo::new(move |_| {
        live.status.with(|s| {
            s.stages
                .iter()
                .find(|x| x.stage == stage)
                .and_then(|x| x.files.iter().find(|f| f.name == key).cloned())
        })
    });
    let fraction = move || {
        file.get().map_or(0.0, |f| {
            if f.total == 0 {
                0.0
            } else {
                f.done as f64 / f.total as f64
            }
        })
    };
    let text = move || {
        file.get().map_or(String::new(), |f| {
            format!("{} / {}", format::bytes(f.done), format::bytes(f.total))
        })
    };
    view! {
        <li class="file" data-file=name.clone()>
            <span class="file-name">{name.clone()}</span>
            <progress max="1" value=fraction></progress>
            <span class="file-bytes">{text}</span>
        </li>
    }
}

/// The stable phase names used in `data-phase` (and by the tests).
pub fn phase_name(phase: StagePhase) -> &'static str {
    match phase {
        StagePhase::Pending => "pending",
        StagePhase::Running => "running",
        StagePhase::Done => "done",
        StagePhase::Failed => "failed",
    }
}

/// `12.3 MB / 40.0 MB · 1.2 s (expected 3.4 s)`.
pub fn stage_detail(s: &StageSummary, since_event_ms: u64) -> String {
    let mut parts = Vec::new();
    if let (Some(done), Some(total)) = (s.bytes_done, s.bytes_total)
        && total > 0
    {
        parts.push(format!(
            "{} / {}",
            format::bytes(done),
            format::bytes(total)
        ));
    }
    let elapsed = s.elapsed_ms.map(|e| {
        if s.phase == StagePhase::Running {
            e + since_event_ms
        } else {
            e
        }
    });
    match (elapsed, s.expected_ms) {
        (Some(e), Some(x)) => parts.push(format!(
            "{} (expected {})",
            format::duration_ms(e),
            format::duration_ms(x)
        )),
        (Some(e), None) => parts.push(format::duration_ms(e)),
        (None, Some(x)) => parts.push(format!("expected {}", format::duration_ms(x))),
        (None, None) => {}
    }
    if let Some(m) = &s.message {
        parts.push(m.clone());
    }
    parts.join(" · ")
}

// Render tests need the `ssr` renderer (on whenever the workspace's tests build).
#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::live::Snapshot;

    /// A failed load shows its cause and hint, and Retry is a plain form posting to the reload
    /// server function (it works without JavaScript).
    #[test]
    fn a_failure_renders_cause_hint_and_a_retry_form() {
        let owner = Owner::new();
        owner.set();
        let status = BackendStatus {
            state: BackendState::Failed {
                stage: LoadStage::Vae,
                error: "vae/diffusion_pytorch_model.safetensors is truncated".into(),
                hint: "download it again".into(),
            },
            ..BackendStatus::default()
        };
        provide_context(LiveBackend::new(Snapshot {
            status,
            ..Snapshot::default()
        }));
        let html = view! { <StatusPanel/> }.to_html();
        assert!(html.contains("is truncated"), "{html}");
        assert!(html.contains("download it again"), "{html}");
        assert!(
            html.contains(&format!(r#"method="post" action="{RELOAD_PATH}""#)),
            "{html}"
        );
    }
}
