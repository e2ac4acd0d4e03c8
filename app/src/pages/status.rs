//! `/status`: the load as a waterfall (each stage's start and duration on one time axis, with the
//! duration expected from the last load behind it) and the figures behind it.

use leptos::prelude::*;

use crate::components::status_panel::{phase_name, stage_label};
use crate::format;
use crate::live::LiveBackend;
use crate::types::{BackendStatus, LoadStage, StagePhase};

/// One bar of the waterfall, in milliseconds from the start of the load.
#[derive(Debug, Clone, PartialEq)]
pub struct WaterfallBar {
    pub stage: LoadStage,
    pub phase: StagePhase,
    pub start_ms: u64,
    pub elapsed_ms: u64,
    pub expected_ms: Option<u64>,
}

/// Stages run one after another, so each starts where the previous ones ended; a pending stage
/// starts after the running one would end as expected.
pub fn waterfall(status: &BackendStatus, since_event_ms: u64) -> Vec<WaterfallBar> {
    let mut at = 0u64;
    status
        .stages
        .iter()
        .map(|s| {
            let elapsed = match s.phase {
                StagePhase::Running => s.elapsed_ms.unwrap_or(0) + since_event_ms,
                _ => s.elapsed_ms.unwrap_or(0),
            };
            let bar = WaterfallBar {
                stage: s.stage,
                phase: s.phase,
                start_ms: at,
                elapsed_ms: elapsed,
                expected_ms: s.expected_ms,
            };
            at += match s.phase {
                StagePhase::Pending => s.expected_ms.unwrap_or(0),
                StagePhase::Running => elapsed.max(s.expected_ms.unwrap_or(0)),
                _ => elapsed,
            };
            bar
        })
        .collect()
}

/// The time axis: the longer of what happened and what was expected.
fn axis_ms(bars: &[WaterfallBar]) -> u64 {
    bars.iter()
        .map(|b| b.start_ms + b.elapsed_ms.max(b.expected_ms.unwrap_or(0)))
        .max()
        .unwrap_or(0)
        .max(1)
}

fn pct(part: u64, whole: u64) -> f64 {
    (part as f64 / whole as f64 * 100.0).clamp(0.0, 100.0)
}

#[component]
pub fn StatusPage() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let bars = move || {
        live.status
            .with(|s| waterfall(s, live.since_event_ms.get()))
    };
    let facts = move || {
        live.status.with(|s| {
            let mut rows = vec![
                ("State", s.state.name().to_string()),
                ("Load attempts", s.attempts.to_string()),
                ("Events so far", s.last_seq.to_string()),
            ];
            if let Some(step) = s.warmup_step_s {
                rows.push(("Warm-up: seconds per denoising step", format!("{step:.3}")));
            }
            rows
        })
    };
    view! {
        <section class="panel">
            <h1>"Load waterfall"</h1>
            <p class="muted">
                "Each bar is one load stage on a shared time axis; the pale bar behind it is how long the stage took in the last successful load on this device and weights."
            </p>
            <div id="waterfall" class="waterfall">
                {move || {
                    let bars = bars();
                    let axis = axis_ms(&bars);
                    bars.into_iter()
                        .map(|b| {
                            let left = pct(b.start_ms, axis);
                            let width = pct(b.elapsed_ms, axis);
                            let expected = b.expected_ms.map(|x| pct(x, axis));
                            let label = match b.phase {
                                StagePhase::Pending => b
                                    .expected_ms
                                    .map(|x| format!("expected {}", format::duration_ms(x)))
                                    .unwrap_or_else(|| "pending".into()),
                                _ => format::duration_ms(b.elapsed_ms),
                            };
                            view! {
                                <div class="wf-row" data-stage=b.stage.name() data-phase=phase_name(b.phase)>
                                    <span class="wf-name">{stage_label(b.stage)}</span>
                                    <span class="wf-track">
                                        {expected.map(|w| view! {
                                            <span class="wf-expected" style=format!("left:{left:.2}%;width:{w:.2}%")></span>
                                        })}
                                        <span class="wf-bar" style=format!("left:{left:.2}%;width:{width:.2}%")></span>
                                    </span>
                                    <span class="wf-time">{label}</span>
                                </div>
                            }
                        })
                        .collect_view()
                }}
            </div>
            <dl class="facts">
                {move || {
                    facts()
                        .into_iter()
                        .map(|(k, v)| view! { <dt>{k}</dt><dd>{v}</dd> })
                        .collect_view()
                }}
            </dl>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BackendState, StageSummary};

    fn stage(
        stage: LoadStage,
        phase: StagePhase,
        elapsed: Option<u64>,
        expected: u64,
    ) -> StageSummary {
        StageSummary {
            stage,
            phase,
            progress: 0.0,
            elapsed_ms: elapsed,
            expected_ms: Some(expected),
            bytes_done: None,
            bytes_total: None,
            message: None,
            files: Vec::new(),
        }
    }

    #[test]
    fn stages_follow_one_another_on_one_axis() {
        let status = BackendStatus {
            state: BackendState::Loading {
                stage: LoadStage::Vae,
            },
            stages: vec![
                stage(LoadStage::Verify, StagePhase::Done, Some(100), 150),
                stage(LoadStage::Vae, StagePhase::Running, Some(50), 300),
                stage(LoadStage::Heads, StagePhase::Pending, None, 40),
            ],
            ..BackendStatus::default()
        };
        let bars = waterfall(&status, 25);
        assert_eq!(bars[0].start_ms, 0);
        assert_eq!(bars[1].start_ms, 100);
        assert_eq!(bars[1].elapsed_ms, 75, "the running stage's clock moves");
        assert_eq!(
            bars[2].start_ms, 400,
            "after the running stage's expected end"
        );
        assert_eq!(axis_ms(&bars), 440);
    }
}
