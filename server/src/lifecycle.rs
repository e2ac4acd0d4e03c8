//! The backend lifecycle as a pure state machine: signals from the worker in, events out.
//!
//! ```text
//! starting ─▶ loading(resolve) ─▶ … ─▶ loading(heads) ─▶ warming ─▶ ready
//!     │                 └──────────────┬───────────────────┘          │
//!     ▼                                ▼                               │
//! disabled                 failed(stage, error, hint) ◀── reload ──────┘ (reload: back to loading)
//! any ─▶ draining
//! ```
//!
//! No clocks, channels or locks here: every call gets the time as a [`Now`], so the transitions
//! and the event stream they produce are unit-tested directly (TGI's `queue.rs` style).

use std::collections::HashMap;

use app::status::{load_eta_s, load_progress};
use app::types::{
    BackendEvent, BackendState, FileProgress, LoadStage, StageEvent, StagePhase, StageStatus,
    StageSummary, StateEvent,
};

/// The time of a signal: monotonic milliseconds (durations) and the wall clock (event `at`).
#[derive(Debug, Clone, PartialEq)]
pub struct Now {
    pub mono_ms: u64,
    pub at: String,
}

/// What the worker reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A load (or reload) begins: every stage goes back to pending.
    LoadBegun,
    StageStarted(LoadStage),
    /// Progress within the running stage: the stage's units (bytes, except denoising steps for
    /// the warm-up) and, for downloads, the file that moved.
    StageProgress {
        stage: LoadStage,
        done: u64,
        total: u64,
        file: Option<FileProgress>,
        message: Option<String>,
    },
    StageDone {
        stage: LoadStage,
        message: Option<String>,
    },
    /// Loading failed (in the running stage when `stage` is None).
    Failed {
        stage: Option<LoadStage>,
        error: String,
        hint: String,
    },
    Ready {
        device: String,
        dtype: String,
        warmup_step_s: Option<f64>,
        /// Why not a GPU, when `device = "auto"` fell back to the CPU.
        device_note: Option<String>,
    },
    Disabled,
    Draining,
}

/// A signal that makes no sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a load is already running (state {state})")]
    Busy { state: &'static str },
    #[error("cannot {action} while {state}")]
    Invalid {
        action: &'static str,
        state: &'static str,
    },
}

/// One stage of the current load.
#[derive(Debug, Clone, PartialEq)]
struct StageRecord {
    stage: LoadStage,
    phase: StagePhase,
    started_ms: Option<u64>,
    elapsed_ms: Option<u64>,
    progress: f32,
    bytes_done: Option<u64>,
    bytes_total: Option<u64>,
    message: Option<String>,
    files: Vec<FileProgress>,
    /// When the last progress event went out (for throttling).
    last_event_ms: Option<u64>,
    last_event_progress: f32,
}

impl StageRecord {
    fn pending(stage: LoadStage) -> Self {
        Self {
            stage,
            phase: StagePhase::Pending,
            started_ms: None,
            elapsed_ms: None,
            progress: 0.0,
            bytes_done: None,
            bytes_total: None,
            message: None,
            files: Vec::new(),
            last_event_ms: None,
            last_event_progress: 0.0,
        }
    }
}

/// Progress events of one stage go out at most this often…
pub const PROGRESS_MIN_INTERVAL_MS: u64 = 100;
/// …unless progress moved at least this much.
pub const PROGRESS_MIN_STEP: f32 = 0.05;

/// The lifecycle: state, stages of the current load, and the sequence of emitted events.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: BackendState,
    stages: Vec<StageRecord>,
    expected_ms: HashMap<LoadStage, u64>,
    seq: u64,
    load_started_ms: Option<u64>,
    attempts: u32,
    warmup_step_s: Option<f64>,
}

impl Lifecycle {
    /// A lifecycle in `starting` for the stages this build runs, in order.
    pub fn new(stages: &[LoadStage]) -> Self {
        Self {
            state: BackendState::Starting,
            stages: stages.iter().copied().map(StageRecord::pending).collect(),
            expected_ms: HashMap::new(),
            seq: 0,
            load_started_ms: None,
            attempts: 0,
            warmup_step_s: None,
        }
    }

    /// Stage durations of the last successful load (from the timings file).
    pub fn set_expected(&mut self, expected: HashMap<LoadStage, u64>) {
        self.expected_ms = expected;
    }

    pub fn state(&self) -> &BackendState {
        &self.state
    }

    /// Takes the next event number for an event that is not the lifecycle's own (jobs).
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn warmup_step_s(&self) -> Option<f64> {
        self.warmup_step_s
    }

    /// The stages this build runs.
    pub fn stage_list(&self) -> Vec<LoadStage> {
        self.stages.iter().map(|r| r.stage).collect()
    }

    /// Durations of the stages that finished in this load (to persist after `ready`).
    pub fn measured_ms(&self) -> HashMap<LoadStage, u64> {
        self.stages
            .iter()
            .filter(|r| r.phase == StagePhase::Done)
            .filter_map(|r| Some((r.stage, r.elapsed_ms?)))
            .collect()
    }

    /// A state event for the current state (the first event a late subscriber gets).
    pub fn state_event(&self, now: &Now) -> BackendEvent {
        BackendEvent::State(StateEvent {
            seq: self.seq,
            at: now.at.clone(),
            state: self.state.clone(),
        })
    }

    /// Applies a signal; returns the events it produces, in order (possibly none).
    pub fn apply(
        &mut self,
        signal: Signal,
        now: &Now,
    ) -> Result<Vec<BackendEvent>, TransitionError> {
        let mut out = Vec::new();
        match signal {
            Signal::LoadBegun => {
                match self.state {
                    BackendState::Starting
                    | BackendState::Failed { .. }
                    | BackendState::Ready { .. } => {}
                    BackendState::Loading { .. } | BackendState::Warming => {
                        return Err(TransitionError::Busy {
                            state: self.state.name(),
                        });
                    }
                    BackendState::Disabled | BackendState::Draining => {
                        return Err(self.invalid("load"));
                    }
                }
                self.attempts += 1;
                self.load_started_ms = Some(now.mono_ms);
                self.warmup_step_s = None;
                for r in &mut self.stages {
                    *r = StageRecord::pending(r.stage);
                }
                let first = self.stages.first().map_or(LoadStage::Resolve, |r| r.stage);
                self.set_state(BackendState::Loading { stage: first }, now, &mut out);
            }
            Signal::StageStarted(stage) => {
                self.require_loading("start a stage")?;
                if let Some(running) = self.running_stage()
                    && running != stage
                {
                    self.finish(running, None, now, &mut out);
                }
                let expected = self.expected_ms.get(&stage).copied();
                let Some(r) = self.record_mut(stage) else {
                    return Ok(out);
                };
                r.phase = StagePhase::Running;
                r.started_ms = Some(now.mono_ms);
                r.last_event_ms = Some(now.mono_ms);
                let event = self.stage_event(stage, StageStatus::Started, expected, now);
                out.push(event);
                let state = if stage == LoadStage::Warmup {
                    BackendState::Warming
                } else {
                    BackendState::Loading { stage }
                };
                self.set_state(state, now, &mut out);
            }
            Signal::StageProgress {
                stage,
                done,
                total,
                file,
                message,
            } => {
                self.require_loading("report progress")?;
                let expected = self.expected_ms.get(&stage).copied();
                let Some(r) = self.record_mut(stage) else {
                    return Ok(out);
                };
                if r.phase != StagePhase::Running {
                    return Ok(out);
                }
                // The warm-up counts steps, which are no bytes to show.
                if stage != LoadStage::Warmup {
                    r.bytes_done = Some(done);
                    r.bytes_total = Some(total);
                }
                r.progress = if total > 0 {
                    (done as f64 / total as f64).clamp(0.0, 1.0) as f32
                } else {
                    0.0
                };
                if message.is_some() {
                    r.message = message.clone();
                }
                if let Some(f) = &file {
                    match r.files.iter_mut().find(|x| x.name == f.name) {
                        Some(x) => *x = f.clone(),
                        None => r.files.push(f.clone()),
                    }
                }
                let since = now.mono_ms.saturating_sub(r.last_event_ms.unwrap_or(0));
                let moved = r.progress - r.last_event_progress;
                let complete = (total > 0 && done >= total)
                    || file
                        .as_ref()
                        .is_some_and(|f| f.total > 0 && f.done >= f.total);
                if since >= PROGRESS_MIN_INTERVAL_MS || moved >= PROGRESS_MIN_STEP || complete {
                    r.last_event_ms = Some(now.mono_ms);
                    r.last_event_progress = r.progress;
                    let mut event = self.stage_event(stage, StageStatus::Progress, expected, now);
                    if let BackendEvent::Stage(e) = &mut event {
                        e.file = file;
                        e.message = message;
                    }
                    out.push(event);
                }
            }
            Signal::StageDone { stage, message } => {
                self.require_loading("finish a stage")?;
                self.finish(stage, message, now, &mut out);
            }
            Signal::Failed { stage, error, hint } => {
                self.require_loading("fail")?;
                let stage = stage
                    .or_else(|| self.running_stage())
                    .or_else(|| self.state.stage())
                    .unwrap_or(LoadStage::Resolve);
                let expected = self.expected_ms.get(&stage).copied();
                if let Some(r) = self.record_mut(stage) {
                    r.phase = StagePhase::Failed;
                    r.elapsed_ms = r.started_ms.map(|s| now.mono_ms.saturating_sub(s));
                    r.message = Some(error.clone());
                    let mut event = self.stage_event(stage, StageStatus::Failed, expected, now);
                    if let BackendEvent::Stage(e) = &mut event {
                        e.message = Some(error.clone());
                    }
                    out.push(event);
                }
                self.set_state(BackendState::Failed { stage, error, hint }, now, &mut out);
            }
            Signal::Ready {
                device,
                dtype,
                warmup_step_s,
                device_note,
            } => {
                self.require_loading("become ready")?;
                if let Some(running) = self.running_stage() {
                    self.finish(running, None, now, &mut out);
                }
                self.warmup_step_s = warmup_step_s;
                let load_ms = now
                    .mono_ms
                    .saturating_sub(self.load_started_ms.unwrap_or(now.mono_ms));
                let state = BackendState::Ready {
                    device,
                    dtype,
                    load_s: load_ms as f64 / 1000.0,
                    device_note,
                };
                self.set_state(state, now, &mut out);
            }
            Signal::Disabled => {
                if self.state != BackendState::Starting {
                    return Err(self.invalid("disable the backend"));
                }
                self.set_state(BackendState::Disabled, now, &mut out);
            }
            Signal::Draining => {
                if self.state != BackendState::Draining {
                    self.set_state(BackendState::Draining, now, &mut out);
                }
            }
        }
        Ok(out)
    }

    /// Fraction of the whole load done (`app::status::load_progress`; time plays no part).
    pub fn progress(&self) -> f32 {
        load_progress(&self.state, &self.summaries(0))
    }

    /// Expected seconds until ready at `now_ms` (`app::status::load_eta_s`).
    pub fn eta_s(&self, now_ms: u64) -> Option<f64> {
        load_eta_s(&self.state, &self.summaries(now_ms))
    }

    /// Every stage of the current load.
    pub fn summaries(&self, now_ms: u64) -> Vec<StageSummary> {
        self.stages
            .iter()
            .map(|r| StageSummary {
                stage: r.stage,
                phase: r.phase,
                progress: if r.phase == StagePhase::Done {
                    1.0
                } else {
                    r.progress
                },
                elapsed_ms: match r.phase {
                    StagePhase::Running => r.started_ms.map(|s| now_ms.saturating_sub(s)),
                    _ => r.elapsed_ms,
                },
                expected_ms: self.expected_ms.get(&r.stage).copied(),
                bytes_done: r.bytes_done,
                bytes_total: r.bytes_total,
                message: r.message.clone(),
                files: r.files.clone(),
            })
            .collect()
    }

    fn running_stage(&self) -> Option<LoadStage> {
        self.stages
            .iter()
            .find(|r| r.phase == StagePhase::Running)
            .map(|r| r.stage)
    }

    fn record_mut(&mut self, stage: LoadStage) -> Option<&mut StageRecord> {
        self.stages.iter_mut().find(|r| r.stage == stage)
    }

    fn require_loading(&self, action: &'static str) -> Result<(), TransitionError> {
        match self.state {
            BackendState::Loading { .. } | BackendState::Warming => Ok(()),
            _ => Err(self.invalid(action)),
        }
    }

    fn invalid(&self, action: &'static str) -> TransitionError {
        TransitionError::Invalid {
            action,
            state: self.state.name(),
        }
    }

    fn finish(
        &mut self,
        stage: LoadStage,
        message: Option<String>,
        now: &Now,
        out: &mut Vec<BackendEvent>,
    ) {
        let expected = self.expected_ms.get(&stage).copied();
        let Some(r) = self.record_mut(stage) else {
            return;
        };
        if r.phase != StagePhase::Running {
            return;
        }
        r.phase = StagePhase::Done;
        r.progress = 1.0;
        r.elapsed_ms = r.started_ms.map(|s| now.mono_ms.saturating_sub(s));
        if message.is_some() {
            r.message = message.clone();
        }
        let mut event = self.stage_event(stage, StageStatus::Done, expected, now);
        if let BackendEvent::Stage(e) = &mut event {
            e.message = message;
        }
        out.push(event);
    }

    fn stage_event(
        &mut self,
        stage: LoadStage,
        status: StageStatus,
        expected_ms: Option<u64>,
        now: &Now,
    ) -> BackendEvent {
        self.seq += 1;
        let r = self.stages.iter().find(|r| r.stage == stage);
        let elapsed_ms = r
            .and_then(|r| r.started_ms)
            .map_or(0, |s| now.mono_ms.saturating_sub(s));
        BackendEvent::Stage(StageEvent {
            seq: self.seq,
            at: now.at.clone(),
            stage,
            status,
            progress: r.map_or(0.0, |r| r.progress),
            bytes_done: r.and_then(|r| r.bytes_done),
            bytes_total: r.and_then(|r| r.bytes_total),
            file: None,
            elapsed_ms,
            expected_ms,
            message: None,
        })
    }

    fn set_state(&mut self, state: BackendState, now: &Now, out: &mut Vec<BackendEvent>) {
        if self.state == state {
            return;
        }
        self.state = state;
        self.seq += 1;
        out.push(BackendEvent::State(StateEvent {
            seq: self.seq,
            at: now.at.clone(),
            state: self.state.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            at: format!("t{ms}"),
        }
    }

    const STAGES: [LoadStage; 4] = [
        LoadStage::Resolve,
        LoadStage::Verify,
        LoadStage::Heads,
        LoadStage::Warmup,
    ];

    fn states(events: &[BackendEvent]) -> Vec<&'static str> {
        events
            .iter()
            .filter_map(|e| match e {
                BackendEvent::State(s) => Some(s.state.name()),
                BackendEvent::Stage(_) | BackendEvent::Job(_) | BackendEvent::Workers(_) => None,
            })
            .collect()
    }

    fn run_to_ready(l: &mut Lifecycle) -> Vec<BackendEvent> {
        let mut all = l.apply(Signal::LoadBegun, &at(0)).unwrap();
        let mut t = 0;
        for stage in STAGES {
            t += 10;
            all.extend(l.apply(Signal::StageStarted(stage), &at(t)).unwrap());
            t += 100;
            all.extend(
                l.apply(
                    Signal::StageDone {
                        stage,
                        message: None,
                    },
                    &at(t),
                )
                .unwrap(),
            );
        }
        all.extend(
            l.apply(
                Signal::Ready {
                    device: "cpu".into(),
                    dtype: "f32".into(),
                    warmup_step_s: Some(0.5),
                    device_note: None,
                },
                &at(t + 1),
            )
            .unwrap(),
        );
        all
    }

    #[test]
    fn a_load_walks_the_states_in_order_with_increasing_seq() {
        let mut l = Lifecycle::new(&STAGES);
        assert_eq!(l.state(), &BackendState::Starting);
        let events = run_to_ready(&mut l);
        assert_eq!(
            states(&events),
            ["loading", "loading", "loading", "warming", "ready"]
        );
        // The first state event names the first stage before its `started` event.
        match &events[0] {
            BackendEvent::State(s) => assert_eq!(
                s.state,
                BackendState::Loading {
                    stage: LoadStage::Resolve
                }
            ),
            other => panic!("{other:?}"),
        }
        let seqs: Vec<u64> = events.iter().map(BackendEvent::seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert_eq!(l.last_seq(), *seqs.last().unwrap());
        match l.state() {
            BackendState::Ready { load_s, .. } => assert!((load_s - 0.441).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.progress(), 1.0);
        assert_eq!(l.warmup_step_s(), Some(0.5));
        let measured = l.measured_ms();
        assert_eq!(measured.len(), 4);
        assert!(measured.values().all(|&ms| ms == 100));
    }

    #[test]
    fn failure_names_the_running_stage_and_reload_starts_over() {
        let mut l = Lifecycle::new(&STAGES);
        l.apply(Signal::LoadBegun, &at(0)).unwrap();
        l.apply(Signal::StageStarted(LoadStage::Resolve), &at(1))
            .unwrap();
        l.apply(Signal::StageStarted(LoadStage::Verify), &at(5))
            .unwrap();
        let events = l
            .apply(
                Signal::Failed {
                    stage: None,
                    error: "weights net.pth: truncated".into(),
                    hint: "download it again".into(),
                },
                &at(9),
            )
            .unwrap();
        assert_eq!(states(&events), ["failed"]);
        match &events[0] {
            BackendEvent::Stage(e) => {
                assert_eq!(e.stage, LoadStage::Verify);
                assert_eq!(e.status, StageStatus::Failed);
                assert_eq!(e.elapsed_ms, 4);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(l.state().stage(), Some(LoadStage::Verify));
        // Resolve finished implicitly when verify started.
        let summaries = l.summaries(9);
        assert_eq!(summaries[0].phase, StagePhase::Done);
        assert_eq!(summaries[1].phase, StagePhase::Failed);
        assert_eq!(summaries[2].phase, StagePhase::Pending);
        // Stage signals are refused while failed; a reload resets every stage.
        assert!(
            l.apply(Signal::StageStarted(LoadStage::Heads), &at(10))
                .is_err()
        );
        l.apply(Signal::LoadBegun, &at(20)).unwrap();
        assert_eq!(l.attempts(), 2);
        assert!(
            l.summaries(20)
                .iter()
                .all(|s| s.phase == StagePhase::Pending)
        );
    }

    #[test]
    fn load_is_refused_while_loading_draining_or_disabled() {
        let mut l = Lifecycle::new(&STAGES);
        l.apply(Signal::LoadBegun, &at(0)).unwrap();
        assert_eq!(
            l.apply(Signal::LoadBegun, &at(1)),
            Err(TransitionError::Busy { state: "loading" })
        );
        let events = l.apply(Signal::Draining, &at(2)).unwrap();
        assert_eq!(states(&events), ["draining"]);
        assert!(l.apply(Signal::Draining, &at(3)).unwrap().is_empty());
        assert!(l.apply(Signal::LoadBegun, &at(4)).is_err());

        let mut d = Lifecycle::new(&STAGES);
        assert_eq!(
            states(&d.apply(Signal::Disabled, &at(0)).unwrap()),
            ["disabled"]
        );
        assert!(d.apply(Signal::LoadBegun, &at(1)).is_err());
        assert_eq!(d.progress(), 0.0);
    }

    #[test]
    fn progress_events_are_throttled_but_completion_always_goes_out() {
        let mut l = Lifecycle::new(&STAGES);
        l.apply(Signal::LoadBegun, &at(0)).unwrap();
        l.apply(Signal::StageStarted(LoadStage::Resolve), &at(0))
            .unwrap();
        let p = |done, ms, l: &mut Lifecycle| {
            l.apply(
                Signal::StageProgress {
                    stage: LoadStage::Resolve,
                    done,
                    total: 1000,
                    file: None,
                    message: None,
                },
                &at(ms),
            )
            .unwrap()
            .len()
        };
        assert_eq!(p(10, 1, &mut l), 0, "1% after 1 ms: throttled");
        assert_eq!(p(60, 2, &mut l), 1, "6%: goes out");
        assert_eq!(p(70, 3, &mut l), 0);
        assert_eq!(p(80, 200, &mut l), 1, "after 100 ms: goes out");
        assert_eq!(p(1000, 201, &mut l), 1, "completion: goes out");
        let s = &l.summaries(201)[0];
        assert_eq!((s.bytes_done, s.bytes_total), (Some(1000), Some(1000)));
    }

    #[test]
    fn the_warm_up_moves_its_bar_without_claiming_bytes() {
        let stages = [LoadStage::Resolve, LoadStage::Warmup];
        let mut l = Lifecycle::new(&stages);
        l.apply(Signal::LoadBegun, &at(0)).unwrap();
        l.apply(Signal::StageStarted(LoadStage::Warmup), &at(0))
            .unwrap();
        l.apply(
            Signal::StageProgress {
                stage: LoadStage::Warmup,
                done: 1,
                total: 2,
                file: None,
                message: Some("step 1/1".into()),
            },
            &at(1),
        )
        .unwrap();
        let s = &l.summaries(1)[1];
        assert_eq!(s.progress, 0.5);
        assert_eq!((s.bytes_done, s.bytes_total), (None, None));
    }

    #[test]
    fn eta_and_progress_follow_the_expected_durations() {
        let mut l = Lifecycle::new(&STAGES);
        assert_eq!(l.eta_s(0), None, "no expectations yet");
        l.set_expected(STAGES.iter().map(|&s| (s, 1000)).collect());
        l.apply(Signal::LoadBegun, &at(0)).unwrap();
        assert_eq!(l.eta_s(0), Some(4.0));
        l.apply(Signal::StageStarted(LoadStage::Resolve), &at(0))
            .unwrap();
        assert_eq!(l.eta_s(400), Some(3.6));
        l.apply(Signal::StageStarted(LoadStage::Verify), &at(1000))
            .unwrap();
        assert_eq!(l.progress(), 0.25);
        // A stage slower than expected counts as nearly done, never negative.
        assert_eq!(l.eta_s(5000), Some(2.0));
        match l.apply(Signal::StageStarted(LoadStage::Heads), &at(5000)) {
            Ok(events) => match &events[1] {
                BackendEvent::Stage(e) => assert_eq!(e.expected_ms, Some(1000)),
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn stages_not_in_this_build_are_ignored() {
        let mut l = Lifecycle::new(&STAGES);
        l.apply(Signal::LoadBegun, &at(0)).unwrap();
        let events = l
            .apply(Signal::StageStarted(LoadStage::FaceAnalysis), &at(1))
            .unwrap();
        assert!(events.is_empty());
        assert!(!l.stage_list().contains(&LoadStage::FaceAnalysis));
    }
}
