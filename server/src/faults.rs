//! Fault injection for the tests of fault containment: inert unless a test arms it (there is no
//! config key or request that can).

use std::sync::Mutex;

static PANIC_SEED: Mutex<Option<u64>> = Mutex::new(None);

/// Makes every job that runs with `seed` panic when it starts generating (None: none does).
#[doc(hidden)]
pub fn panic_in_jobs_with_seed(seed: Option<u64>) {
    *PANIC_SEED.lock().unwrap_or_else(|p| p.into_inner()) = seed;
}

static KILL_WORKER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the worker thread die (a panic outside any job) at its next command.
#[doc(hidden)]
pub fn kill_worker_at_next_command() {
    KILL_WORKER.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Called by the worker before each command.
pub(crate) fn worker_command() {
    if KILL_WORKER.swap(false, std::sync::atomic::Ordering::SeqCst) {
        panic!("injected fault: the worker thread dies");
    }
}

/// Called by the job runner once the job's seed is known.
pub(crate) fn job_started(seed: u64) {
    if *PANIC_SEED.lock().unwrap_or_else(|p| p.into_inner()) == Some(seed) {
        panic!("injected fault in the job with seed {seed}");
    }
}
