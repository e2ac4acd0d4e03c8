//! Fresh tensor buffers, and faulting their pages in before a read fills them.
//!
//! A tensor that is not served from a mapping (`mapped.rs`: the VAE, a converted dtype, programs
//! without the mapped-weights allocator) lands in newly allocated memory. On Linux
//! the kernel then zeroes and maps each 4 KiB page on its first write, one page fault at a time;
//! for gigabytes of weights that costs more than the copy from the page cache. Asking for the
//! pages up front with `madvise(MADV_POPULATE_WRITE)` (Linux >= 5.14) does the same zeroing in one
//! call per chunk, without a fault per page (measured ~35 % faster first touch on the 2-core dev
//! VM). Elsewhere, or on older kernels, the pages are faulted in by the read as before.

use std::alloc::Layout;

use candle_core::WithDType;

/// A vector of `n` zero values from `alloc_zeroed` (`calloc`): large blocks come straight from
/// fresh mappings, so nothing writes the pages before the read does. The vector is an ordinary
/// `Vec` that candle can own.
pub(crate) fn zeroed_vec<T: WithDType>(n: usize) -> candle_core::Result<Vec<T>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<T>(n).map_err(|_| {
        candle_core::Error::Msg(format!(
            "a tensor of {n} {} values does not fit in memory",
            std::any::type_name::<T>()
        ))
    })?;
    // SAFETY: `layout` has a non-zero size (n > 0 and every `WithDType` is at least one byte).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `[T; n]`, and all-zero
    // bytes are a valid value of every `WithDType` type (plain numbers).
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// Below this size a buffer is likely in already-faulted heap memory; the call is not worth it.
const MIN_POPULATE_BYTES: usize = 64 << 10;

/// Faults in, writable, every whole page inside `buf` (see the module docs). Best effort: on a
/// kernel without `MADV_POPULATE_WRITE` the read faults the pages in.
#[cfg(target_os = "linux")]
pub(crate) fn populate(buf: &mut [u8]) {
    use std::sync::atomic::AtomicBool;

    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if buf.len() < MIN_POPULATE_BYTES {
        return;
    }
    let page = page_size();
    let start = (buf.as_mut_ptr() as usize).next_multiple_of(page);
    let end = (buf.as_mut_ptr() as usize + buf.len()) / page * page;
    // SAFETY: [start, end) lies inside `buf`, which we borrow mutably; POPULATE_WRITE only maps
    // the pages (as a write fault would) and leaves their contents unchanged.
    unsafe { advise(start, end, libc::MADV_POPULATE_WRITE, &UNSUPPORTED) };
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn populate(_buf: &mut [u8]) {}

/// `madvise(start..end, advice)` as a best-effort hint: once the kernel answers that it does not
/// know the advice (EINVAL: a populate advice before Linux 5.14), `unsupported` is set and later
/// calls do nothing.
///
/// # Safety
/// `[start, end)` must be page-aligned at `start` and lie in memory this process owns, and
/// `advice` must not change its contents.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn advise(
    start: usize,
    end: usize,
    advice: libc::c_int,
    unsupported: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;

    if end <= start || unsupported.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: the caller's guarantees.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        unsupported.store(true, Ordering::Relaxed);
    }
}

/// The virtual memory page size.
pub(crate) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).unwrap_or(4096).max(1)
    })
}

/// A plain-old-data slice viewed as its bytes.
pub(crate) fn as_bytes_mut<T: WithDType>(data: &mut [T]) -> &mut [u8] {
    // SAFETY: `WithDType` types are plain old data; the byte view covers exactly `data`.
    unsafe {
        std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut u8, std::mem::size_of_val(data))
    }
}
