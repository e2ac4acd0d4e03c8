//! The backend's status in the page: a signal that starts from the server's snapshot (embedded in
//! the page's head, so hydration sees exactly what the server rendered) and follows
//! `/api/events` in the browser.
//!
//! Only the browser connects: effects do not run during server rendering, so with JavaScript off
//! the page shows the state at the moment it was rendered.

use leptos::prelude::*;

use crate::jobs::JobRecord;
use crate::settings::GenerationSettings;
use crate::status::apply_event;
use crate::types::{BackendEvent, BackendStatus};

/// Id of the `<script type="application/json">` holding the server's snapshot.
pub const INITIAL_STATUS_ID: &str = "backend-initial";
/// Id of the one holding the jobs (newest first).
pub const INITIAL_JOBS_ID: &str = "jobs-initial";
/// Id of the one holding the profile's generation settings.
pub const INITIAL_SETTINGS_ID: &str = "settings-initial";

/// What the server renders a page from, and the browser hydrates from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub status: BackendStatus,
    /// Every job, newest first.
    pub jobs: Vec<JobRecord>,
    /// The running profile's defaults, bounds and frame rate.
    pub settings: GenerationSettings,
}

/// The event stream's connection, as far as the user needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Not connected yet (and never, without JavaScript).
    Idle,
    Open,
    /// Lost; the browser reconnects by itself (`retry:` from the server) and replays what it
    /// missed with `Last-Event-ID`.
    Reconnecting,
}

/// Shared by every component through the context.
#[derive(Debug, Clone, Copy)]
pub struct LiveBackend {
    pub status: RwSignal<BackendStatus>,
    /// Every job, newest first, kept current by `job` events.
    pub jobs: RwSignal<Vec<JobRecord>>,
    pub stream: RwSignal<Stream>,
    /// Milliseconds since the last applied event (browser clock; 0 on the server), so that the
    /// running stage's elapsed time moves between events.
    pub since_event_ms: RwSignal<u64>,
    /// What the last Retry got back, when it was refused.
    pub reload_error: RwSignal<Option<String>>,
    /// The profile's settings (they do not change while the server runs).
    pub settings: StoredValue<GenerationSettings>,
    /// When the last event was applied ([`now_ms`]).
    last_event_at: StoredValue<f64>,
}

impl LiveBackend {
    pub fn new(initial: Snapshot) -> Self {
        Self {
            status: RwSignal::new(initial.status),
            jobs: RwSignal::new(initial.jobs),
            stream: RwSignal::new(Stream::Idle),
            since_event_ms: RwSignal::new(0),
            reload_error: RwSignal::new(None),
            settings: StoredValue::new(initial.settings),
            last_event_at: StoredValue::new(now_ms()),
        }
    }

    /// Subscribes to `/api/events` (browser only), resuming after the snapshot's last event.
    pub fn connect(self) {
        #[cfg(feature = "hydrate")]
        crate::browser::connect_events(self);
    }

    /// Asks the server to load again (the Retry button); the outcome arrives as events.
    pub fn reload(self) {
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            self.reload_error.set(None);
            if let Err(e) = crate::api::reload_backend().await {
                self.reload_error.set(Some(e.error));
            }
        });
    }

    /// Adds a job record fetched on its own (one just submitted, whose first event may still be
    /// on the way); the events' copy wins when it is already there.
    pub fn know_job(self, job: JobRecord) {
        self.jobs.update(|jobs| {
            if !jobs.iter().any(|j| j.id == job.id) {
                jobs.insert(0, job);
            }
        });
    }

    /// Applies one event (also used by tests of the components).
    pub fn apply(self, event: &BackendEvent) {
        if let BackendEvent::Job(e) = event {
            self.jobs
                .update(|jobs| match jobs.iter_mut().find(|j| j.id == e.job.id) {
                    Some(j) => *j = e.job.clone(),
                    None => jobs.insert(0, e.job.clone()),
                });
        }
        let mut applied = false;
        self.status.update(|s| applied = apply_event(s, event));
        if applied {
            self.last_event_at.set_value(now_ms());
            self.since_event_ms.set(0);
        }
    }

    /// Moves the running stage's clock (called on a timer in the browser).
    #[cfg(feature = "hydrate")]
    pub(crate) fn tick(self) {
        let since = (now_ms() - self.last_event_at.get_value()).max(0.0) as u64;
        self.since_event_ms.set(since);
    }
}

/// A monotonic clock in milliseconds: `performance.now()` in the browser, 0 on the server (the
/// server renders "as of the snapshot").
fn now_ms() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        web_sys::window()
            .and_then(|w| w.performance())
            .map_or(0.0, |p| p.now())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
    }
}

/// A value as JSON safe inside a `<script>` element: no `<` at all (so neither `</script>` nor
/// `<!--` / `<script`, which switch the HTML parser's script states), nor `>` or `&`; each is
/// its `\u` escape, which JSON reads back as the same character.
pub fn embed_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_cannot_leave_its_script_element_and_reads_back_the_same() {
        let name = "a</script><script>alert(1)</script><!--<script>&amp;.png";
        let embedded = embed_json(&name);
        for bad in ["<", ">", "&"] {
            assert!(!embedded.contains(bad), "{embedded}");
        }
        let back: String = serde_json::from_str(&embedded).unwrap();
        assert_eq!(back, name);
    }
}
