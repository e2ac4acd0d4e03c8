//! Fault injection for the tests of fault containment: inert unless a test arms it (there is no
//! config key or request that can).

use std::sync::Mutex;

static PANIC_SEED: Mutex<Option<u64>> = Mutex::new(None);

/// Makes every job that runs with `seed` panic when it starts generating (None: none does).
#[doc(hidden)]
pub fn panic_in_jobs_with_seed(seed: Option<u64>) {
    *PANIC_SEED.lock().unwrap_or_else(|p| p.into_inner()) = seed;
}

/// Called by the job runner once the job's seed is known.
pub(crate) fn job_started(seed: u64) {
    if *PANIC_SEED.lock().unwrap_or_else(|p| p.into_inner()) == Some(seed) {
        panic!("injected fault in the job with seed {seed}");
    }
}
