//! The backend's status as the UI keeps it: a [`BackendStatus`] snapshot (rendered by the server,
//! embedded in the page) moved forward by the events of `/api/events`, plus the overall progress
//! and ETA both sides compute the same way. Pure functions: no signals, no browser, no clock.

use crate::types::{
    BackendEvent, BackendState, BackendStatus, FileProgress, StageEvent, StagePhase, StageStatus,
    StageSummary,
};

/// Fraction of the whole load done: stages weighted by their expected durations when every
/// stage has one, else equally.
pub fn load_progress(state: &BackendState, stages: &[StageSummary]) -> f32 {
    match state {
        BackendState::Ready { .. } => return 1.0,
        BackendState::Starting | BackendState::Disabled => return 0.0,
        _ => {}
    }
    if stages.is_empty() {
        return 0.0;
    }
    let weights = stage_weights(stages);
    let total: f64 = weights.iter().sum();
    let done: f64 = stages
        .iter()
        .zip(&weights)
        .map(|(s, w)| match s.phase {
            StagePhase::Done => *w,
            StagePhase::Running | StagePhase::Failed => w * f64::from(s.progress),
            StagePhase::Pending => 0.0,
        })
        .sum();
    (done / total).clamp(0.0, 1.0) as f32
}

/// Expected seconds until ready, from the expectations of the stages not done yet (`elapsed_ms`
/// of the running stage is as of the summary); None without expectations or when not loading.
pub fn load_eta_s(state: &BackendState, stages: &[StageSummary]) -> Option<f64> {
    let loading = matches!(
        state,
        BackendState::Loading { .. } | BackendState::Warming | BackendState::Starting
    );
    if !loading || !has_all_expectations(stages) {
        return None;
    }
    let ms: u64 = stages
        .iter()
        .map(|s| {
            let expected = s.expected_ms.unwrap_or(0);
            match s.phase {
                StagePhase::Done | StagePhase::Failed => 0,
                StagePhase::Pending => expected,
                StagePhase::Running => {
                    let by_time = expected.saturating_sub(s.elapsed_ms.unwrap_or(0));
                    // Where bytes are known, they say more than the clock.
                    if s.bytes_total.is_some_and(|t| t > 0) {
                        by_time.min(((1.0 - f64::from(s.progress)) * expected as f64) as u64)
                    } else {
                        by_time
                    }
                }
            }
        })
        .sum();
    Some(ms as f64 / 1000.0)
}

fn has_all_expectations(stages: &[StageSummary]) -> bool {
    !stages.is_empty() && stages.iter().all(|s| s.expected_ms.is_some())
}

fn stage_weights(stages: &[StageSummary]) -> Vec<f64> {
    if has_all_expectations(stages) {
        stages
            .iter()
            .map(|s| s.expected_ms.unwrap_or(1).max(1) as f64)
            .collect()
    } else {
        vec![1.0; stages.len()]
    }
}

/// Moves `status` forward by one event of `/api/events`. Events at or before `last_seq` (already
/// in the snapshot, or replayed twice after a reconnect) change nothing; returns whether the
/// event was applied.
pub fn apply_event(status: &mut BackendStatus, event: &BackendEvent) -> bool {
    if event.seq() <= status.last_seq {
        return false;
    }
    status.last_seq = event.seq();
    match event {
        BackendEvent::State(e) => apply_state(status, &e.state),
        BackendEvent::Stage(e) => apply_stage(status, e),
        // Jobs share the stream's numbering but not the backend's status.
        BackendEvent::Job(_) => return true,
        BackendEvent::Workers(e) => {
            status.workers = e.workers.clone();
            return true;
        }
    }
    status.progress = load_progress(&status.state, &status.stages);
    status.eta_s = load_eta_s(&status.state, &status.stages);
    true
}

fn apply_state(status: &mut BackendStatus, state: &BackendState) {
    let was_loading = matches!(
        status.state,
        BackendState::Loading { .. } | BackendState::Warming
    );
    // A load (or reload) begins: the server puts every stage back to pending.
    if matches!(state, BackendState::Loading { .. }) && !was_loading {
        status.attempts += 1;
        status.warmup_step_s = None;
        for s in &mut status.stages {
            *s = pending(s);
        }
    }
    status.state = state.clone();
}

fn pending(s: &StageSummary) -> StageSummary {
    StageSummary {
        stage: s.stage,
        phase: StagePhase::Pending,
        progress: 0.0,
        elapsed_ms: None,
        expected_ms: s.expected_ms,
        bytes_done: None,
        bytes_total: None,
        message: None,
        files: Vec::new(),
    }
}

fn apply_stage(status: &mut BackendStatus, e: &StageEvent) {
    let Some(s) = status.stages.iter_mut().find(|s| s.stage == e.stage) else {
        return;
    };
    s.phase = match e.status {
        StageStatus::Started | StageStatus::Progress => StagePhase::Running,
        StageStatus::Done => StagePhase::Done,
        StageStatus::Failed => StagePhase::Failed,
    };
    s.progress = if s.phase == StagePhase::Done {
        1.0
    } else {
        e.progress
    };
    s.elapsed_ms = Some(e.elapsed_ms);
    s.expected_ms = e.expected_ms.or(s.expected_ms);
    if e.bytes_total.is_some() {
        s.bytes_done = e.bytes_done;
        s.bytes_total = e.bytes_total;
    }
    if e.message.is_some() {
        s.message = e.message.clone();
    }
    if let Some(f) = &e.file {
        upsert_file(&mut s.files, f);
    }
}

fn upsert_file(files: &mut Vec<FileProgress>, f: &FileProgress) {
    match files.iter_mut().find(|x| x.name == f.name) {
        Some(x) => *x = f.clone(),
        None => files.push(f.clone()),
    }
}

/// The running stage, if any.
pub fn running_stage(status: &BackendStatus) -> Option<&StageSummary> {
    status
        .stages
        .iter()
        .find(|s| s.phase == StagePhase::Running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LoadStage, StateEvent};

    fn summary(stage: LoadStage, expected_ms: Option<u64>) -> StageSummary {
        StageSummary {
            stage,
            phase: StagePhase::Pending,
            progress: 0.0,
            elapsed_ms: None,
            expected_ms,
            bytes_done: None,
            bytes_total: None,
            message: None,
            files: Vec::new(),
        }
    }

    fn starting(expected: Option<u64>) -> BackendStatus {
        BackendStatus {
            state: BackendState::Starting,
            progress: 0.0,
            eta_s: None,
            stages: vec![
                summary(LoadStage::Download, expected),
                summary(LoadStage::Vae, expected),
            ],
            last_seq: 0,
            attempts: 0,
            warmup_step_s: None,
            workers: Vec::new(),
        }
    }

    fn state(seq: u64, state: BackendState) -> BackendEvent {
        BackendEvent::State(StateEvent {
            seq,
            at: String::new(),
            state,
        })
    }

    fn stage(seq: u64, stage: LoadStage, status: StageStatus, progress: f32) -> StageEvent {
        StageEvent {
            seq,
            at: String::new(),
            stage,
            status,
            progress,
            bytes_done: None,
            bytes_total: None,
            file: None,
            elapsed_ms: 100 * seq,
            expected_ms: None,
            message: None,
        }
    }

    #[test]
    fn events_walk_a_load_to_ready_and_old_events_are_ignored() {
        let mut s = starting(None);
        let loading = BackendState::Loading {
            stage: LoadStage::Download,
        };
        assert!(apply_event(&mut s, &state(1, loading.clone())));
        assert_eq!(s.attempts, 1);
        let mut e = stage(2, LoadStage::Download, StageStatus::Progress, 0.5);
        e.bytes_done = Some(50);
        e.bytes_total = Some(100);
        e.file = Some(FileProgress {
            name: "hallo2/net.pth".into(),
            done: 30,
            total: 60,
        });
        assert!(apply_event(&mut s, &BackendEvent::Stage(e.clone())));
        assert_eq!(s.stages[0].phase, StagePhase::Running);
        assert_eq!(s.stages[0].bytes_done, Some(50));
        assert_eq!(s.stages[0].files.len(), 1);
        assert_eq!(s.progress, 0.25, "half of the first of two equal stages");
        // The same event again (replay after a reconnect) changes nothing.
        assert!(!apply_event(&mut s, &BackendEvent::Stage(e)));
        let done = stage(3, LoadStage::Download, StageStatus::Done, 1.0);
        apply_event(&mut s, &BackendEvent::Stage(done));
        assert_eq!(s.stages[0].phase, StagePhase::Done);
        assert_eq!(s.progress, 0.5);
        let ready = BackendState::Ready {
            device: "cpu".into(),
            dtype: "f32".into(),
            load_s: 1.0,
            device_note: None,
        };
        apply_event(&mut s, &state(4, ready));
        assert_eq!(s.progress, 1.0);
        assert_eq!(s.last_seq, 4);
    }

    #[test]
    fn a_new_load_after_failure_resets_the_stages() {
        let mut s = starting(Some(1000));
        apply_event(
            &mut s,
            &state(
                1,
                BackendState::Loading {
                    stage: LoadStage::Download,
                },
            ),
        );
        apply_event(
            &mut s,
            &BackendEvent::Stage(stage(2, LoadStage::Download, StageStatus::Failed, 0.3)),
        );
        let failed = BackendState::Failed {
            stage: LoadStage::Download,
            error: "hallo2/net.pth is missing".into(),
            hint: "fix it".into(),
        };
        apply_event(&mut s, &state(3, failed));
        assert_eq!(s.stages[0].phase, StagePhase::Failed);
        assert_eq!(s.eta_s, None, "no ETA while failed");
        apply_event(
            &mut s,
            &state(
                4,
                BackendState::Loading {
                    stage: LoadStage::Download,
                },
            ),
        );
        assert_eq!(s.attempts, 2);
        assert!(s.stages.iter().all(|x| x.phase == StagePhase::Pending));
        assert_eq!(s.stages[0].expected_ms, Some(1000), "expectations stay");
        assert_eq!(s.eta_s, Some(2.0));
    }

    #[test]
    fn progress_weights_stages_by_expected_time_and_eta_prefers_bytes() {
        let mut stages = vec![
            summary(LoadStage::Download, Some(3000)),
            summary(LoadStage::Vae, Some(1000)),
        ];
        stages[0].phase = StagePhase::Running;
        stages[0].progress = 0.5;
        stages[0].elapsed_ms = Some(500);
        stages[0].bytes_total = Some(10);
        let loading = BackendState::Loading {
            stage: LoadStage::Download,
        };
        assert_eq!(load_progress(&loading, &stages), 0.375);
        // By time 2.5 s are left of the download, by bytes 1.5 s: the bytes win.
        assert_eq!(load_eta_s(&loading, &stages), Some(2.5));
        assert_eq!(load_progress(&BackendState::Disabled, &stages), 0.0);
        assert_eq!(load_eta_s(&BackendState::Disabled, &stages), None);
    }
}
