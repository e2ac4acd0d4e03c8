//! The job state machine, as one pure function: every change of a job's state (and of the
//! message and counters that go with it) is a [`JobChange`] applied by [`apply`], which refuses
//! the changes the state does not allow. The registry (`Jobs`) and the worker only say what
//! happened; this says what it means. Like `lifecycle.rs` for the backend.

use app::jobs::{JobRecord, JobState};

/// What happened to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobChange {
    /// A new record: queued, or waiting while the model loads.
    Created {
        model_ready: bool,
    },
    /// The model became ready (or stopped being): waiting jobs move between the two waits.
    ModelReady(bool),
    /// The worker took it.
    Started,
    /// The worker moved on to generating or encoding.
    Phase {
        state: JobState,
        message: String,
    },
    Completed {
        message: String,
    },
    Failed(String),
    /// The user asked to cancel: a waiting job ends now, a running one at its next step.
    CancelRequested,
    /// The worker saw the cancel flag and stopped.
    Stopped,
    /// A shutdown paused it; it continues from its checkpoint at the next start (the attempt
    /// does not count).
    Suspended,
    /// A restart found it running: it runs again, unless it was already started
    /// `max_attempts` times.
    Interrupted {
        max_attempts: u32,
    },
}

impl JobChange {
    fn name(&self) -> &'static str {
        match self {
            Self::Created { .. } => "created",
            Self::ModelReady(_) => "model_ready",
            Self::Started => "started",
            Self::Phase { .. } => "phase",
            Self::Completed { .. } => "completed",
            Self::Failed(_) => "failed",
            Self::CancelRequested => "cancel_requested",
            Self::Stopped => "stopped",
            Self::Suspended => "suspended",
            Self::Interrupted { .. } => "interrupted",
        }
    }
}

/// A change the job's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a job that is {state} cannot take `{change}`")]
pub struct TransitionError {
    pub state: &'static str,
    pub change: &'static str,
}

/// Applies `change` to `job` (state, message, attempts, error, ETA), or leaves it untouched and
/// says why not. Pure: the caller stamps, saves and publishes.
pub fn apply(job: &mut JobRecord, change: JobChange) -> Result<(), TransitionError> {
    use JobState as S;
    let state = job.state;
    let refuse = |change: &JobChange| TransitionError {
        state: state.name(),
        change: change.name(),
    };
    match change {
        JobChange::Created { model_ready } => {
            (job.state, job.message) = if model_ready {
                (S::Queued, "Queued".into())
            } else {
                (S::WaitingForModel, "Waiting for the model to load".into())
            };
        }
        JobChange::ModelReady(ready) if state.is_waiting() => {
            let target = if ready { S::Queued } else { S::WaitingForModel };
            if state != target {
                return apply(job, JobChange::Created { model_ready: ready });
            }
        }
        JobChange::Started if state.is_waiting() => {
            job.state = S::Preprocessing;
            job.attempts += 1;
            job.error = None;
            job.message = "Preparing the face and the audio".into();
        }
        JobChange::Phase {
            state: target @ (S::Generating | S::Encoding),
            message,
        } if state.is_running() => {
            job.state = target;
            job.message = message;
        }
        JobChange::Completed { message } if state.is_running() => {
            job.state = S::Completed;
            job.message = message;
            job.progress.fraction = 1.0;
            job.progress.eta_s = None;
        }
        JobChange::Failed(error) if state.is_running() => {
            job.state = S::Failed;
            job.message = format!("Failed: {error}");
            job.error = Some(error);
            job.progress.eta_s = None;
        }
        JobChange::CancelRequested if state.is_waiting() => {
            job.state = S::Cancelled;
            job.message = "Cancelled before it started".into();
        }
        JobChange::CancelRequested if state.is_running() => {
            job.message = "Cancelling at the next step…".into();
        }
        JobChange::Stopped if state.is_running() => {
            job.state = S::Cancelled;
            job.message = "Cancelled".into();
            job.progress.eta_s = None;
        }
        JobChange::Suspended if state.is_running() => {
            job.state = S::Queued;
            job.attempts = job.attempts.saturating_sub(1);
            job.message =
                "Paused by a shutdown; continues from its last checkpoint at the next start".into();
            job.progress.eta_s = None;
        }
        JobChange::Interrupted { max_attempts } if state.is_running() => {
            job.progress = Default::default();
            if job.attempts >= max_attempts {
                job.state = S::Failed;
                job.error = Some(format!(
                    "interrupted {} times by a server restart (last while {}); not retried again",
                    job.attempts,
                    state.name()
                ));
                job.message = "Failed: interrupted by restarts".into();
            } else {
                job.state = S::Queued;
                job.message = "Interrupted by a server restart; queued to run again".into();
            }
        }
        other => return Err(refuse(&other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::store::tests::record;

    fn in_state(state: JobState) -> JobRecord {
        let mut job = record(
            "00000000-0000-4000-8000-000000000001",
            "2026-01-01T00:00:00Z",
        );
        job.state = state;
        job
    }

    const ALL: [JobState; 8] = JobState::ALL;

    /// The whole table: every change from every state, and where it lands (None: refused).
    #[test]
    fn every_change_from_every_state() {
        use JobState as S;
        let changes = [
            JobChange::ModelReady(true),
            JobChange::Started,
            JobChange::Phase {
                state: S::Generating,
                message: "Generating clip 1/2".into(),
            },
            JobChange::Completed {
                message: "done".into(),
            },
            JobChange::Failed("boom".into()),
            JobChange::CancelRequested,
            JobChange::Stopped,
            JobChange::Suspended,
            JobChange::Interrupted { max_attempts: 2 },
        ];
        for from in ALL {
            for change in &changes {
                let mut job = in_state(from);
                job.attempts = 1;
                let result = apply(&mut job, change.clone());
                let expected = match (change, from) {
                    (JobChange::ModelReady(_), s) if s.is_waiting() => Some(S::Queued),
                    (JobChange::Started, s) if s.is_waiting() => Some(S::Preprocessing),
                    (JobChange::Phase { .. }, s) if s.is_running() => Some(S::Generating),
                    (JobChange::Completed { .. }, s) if s.is_running() => Some(S::Completed),
                    (JobChange::Failed(_), s) if s.is_running() => Some(S::Failed),
                    (JobChange::CancelRequested, s) if s.is_waiting() => Some(S::Cancelled),
                    (JobChange::CancelRequested, s) if s.is_running() => Some(s),
                    (JobChange::Stopped, s) if s.is_running() => Some(S::Cancelled),
                    (JobChange::Suspended, s) if s.is_running() => Some(S::Queued),
                    (JobChange::Interrupted { .. }, s) if s.is_running() => Some(S::Queued),
                    _ => None,
                };
                match expected {
                    Some(to) => {
                        assert_eq!(result, Ok(()), "{from:?} + {change:?}");
                        assert_eq!(job.state, to, "{from:?} + {change:?}");
                    }
                    None => {
                        assert!(result.is_err(), "{from:?} + {change:?} must be refused");
                        assert_eq!(job, in_state_with_attempts(from, 1), "untouched");
                    }
                }
            }
        }
    }

    fn in_state_with_attempts(state: JobState, attempts: u32) -> JobRecord {
        let mut job = in_state(state);
        job.attempts = attempts;
        job
    }

    #[test]
    fn attempts_count_starts_and_a_second_interruption_fails_the_job() {
        let mut job = in_state(JobState::Queued);
        apply(&mut job, JobChange::Started).unwrap();
        assert_eq!(job.attempts, 1);
        apply(&mut job, JobChange::Interrupted { max_attempts: 2 }).unwrap();
        assert_eq!(job.state, JobState::Queued);
        apply(&mut job, JobChange::Started).unwrap();
        apply(&mut job, JobChange::Suspended).unwrap();
        assert_eq!(job.attempts, 1, "a pause by shutdown does not count");
        apply(&mut job, JobChange::Started).unwrap();
        apply(&mut job, JobChange::Interrupted { max_attempts: 2 }).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert!(job.error.unwrap().contains("interrupted 2 times"));
    }
}
