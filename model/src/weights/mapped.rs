//! Weight tensors served from a private mapping of a cache file instead of fresh memory.
//!
//! A loaded model owns its weights as candle `Vec`s. Reading them into fresh memory makes the
//! kernel zero every new page before the copy lands, which on the dev VM costs more than the copy
//! itself (`model/BENCHMARKS.md`). A private mapping of a safetensors file whose tensors are
//! already in the wanted dtype needs neither: its pages are the page cache's own, and a page is
//! copied only if something writes to it (copy-on-write; writes never reach the file).
//!
//! The catch is ownership: a `Vec` is freed through the global allocator. [`MappedWeightsAllocator`]
//! is the system allocator plus a small table of live mappings: freeing a pointer inside a
//! mapping drops one reference to that mapping instead of calling `free`, and the mapping is
//! unmapped when its last tensor and its [`FileMapping`] handle are gone. A binary opts in with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;
//! ```
//!
//! Without it (other programs, most test binaries) [`FileMapping::map`] declines and the loader
//! reads into fresh memory as before. Only files this crate writes and renames into place (the
//! `net.pth` cache, made read-only) are mapped: a mapped file edited in place would change, or
//! truncated would crash, the running model.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use candle_core::WithDType;

/// The system allocator, aware of weight tensors that live in a [`FileMapping`] (module docs).
pub struct MappedWeightsAllocator;

/// Set by the first allocation through [`MappedWeightsAllocator`]: the allocator is the global
/// one, so a `Vec` over a mapping will be freed by it.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Mappings alive at once; a load maps one file, a reload a second while the first is freed.
const SLOTS: usize = 16;
const FREE: u8 = 0;
const TAKEN: u8 = 1;

/// One live mapping: its address range and how many holders (tensors + the handle) remain.
struct Slot {
    state: AtomicU8,
    /// Non-zero only while the range is mapped and may hold tensors.
    start: AtomicUsize,
    end: AtomicUsize,
    refs: AtomicUsize,
}

impl Slot {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            refs: AtomicUsize::new(0),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Bounds of every range ever mapped: two loads that keep the common `free` path off the table.
static LOWEST: AtomicUsize = AtomicUsize::new(usize::MAX);
static HIGHEST: AtomicUsize = AtomicUsize::new(0);

/// The live mapping holding `addr`, if any. A range is published only after `mmap` returned it
/// and withdrawn before `munmap`, so a system allocation never falls inside a published range.
fn slot_of(addr: usize) -> Option<&'static Slot> {
    if addr < LOWEST.load(Ordering::Acquire) || addr >= HIGHEST.load(Ordering::Acquire) {
        return None;
    }
    TABLE.iter().find(|slot| {
        let start = slot.start.load(Ordering::Acquire);
        start != 0 && start <= addr && addr < slot.end.load(Ordering::Acquire)
    })
}

/// Drops one holder of `slot`; the last one unmaps the range and frees the slot.
fn release(slot: &Slot) {
    if slot.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let start = slot.start.swap(0, Ordering::AcqRel);
    let end = slot.end.swap(0, Ordering::AcqRel);
    // SAFETY: [start, end) is the range `FileMapping::map` mapped; no holder is left to use it.
    unsafe { libc::munmap(start as *mut libc::c_void, end - start) };
    slot.state.store(FREE, Ordering::Release);
}

// SAFETY: every block not inside a published mapping goes to `System` unchanged; blocks inside
// one were never `System`'s and are only counted down (or copied out, for `realloc`).
unsafe impl GlobalAlloc for MappedWeightsAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        mark_installed();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        mark_installed();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match slot_of(ptr as usize) {
            Some(slot) => release(slot),
            // SAFETY: not in a mapping, so `System` allocated it.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(slot) = slot_of(ptr as usize) else {
            // SAFETY: not in a mapping, so `System` allocated it.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        // A mapped tensor that grows or shrinks moves to ordinary memory.
        // SAFETY: the caller guarantees `new_size`, rounded to `layout.align()`, fits a Layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has a non-zero size (the caller's guarantee).
        let moved = unsafe { System.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks hold at least the copied length and do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size)) };
            release(slot);
        }
        moved
    }
}

fn mark_installed() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

/// Whether [`MappedWeightsAllocator`] is this program's global allocator.
pub fn mapped_weights_enabled() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// A private, copy-on-write mapping of a whole file that hands out tensor `Vec`s over its bytes.
pub(crate) struct FileMapping {
    slot: &'static Slot,
    base: usize,
    len: usize,
}

impl std::fmt::Debug for FileMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileMapping({} bytes at {:#x})", self.len, self.base)
    }
}

impl FileMapping {
    /// Maps `file` (`len` bytes), or `None` when [`MappedWeightsAllocator`] is not the global
    /// allocator, the table is full or `mmap` fails (the caller then reads instead).
    pub(crate) fn map(file: &File, len: u64) -> Option<Self> {
        if !mapped_weights_enabled() {
            return None;
        }
        Self::map_unchecked(file, len)
    }

    /// [`Self::map`] without asking whether the allocator is installed: the `Vec`s it hands out
    /// must then be freed through [`MappedWeightsAllocator`] explicitly (unit tests).
    fn map_unchecked(file: &File, len: u64) -> Option<Self> {
        use std::os::fd::AsRawFd;

        let len = usize::try_from(len).ok().filter(|&n| n > 0)?;
        let slot = TABLE.iter().find(|slot| {
            slot.state
                .compare_exchange(FREE, TAKEN, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        // SAFETY: a fresh private mapping of an open file; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            slot.state.store(FREE, Ordering::Release);
            return None;
        }
        let base = ptr as usize;
        slot.refs.store(1, Ordering::Release);
        slot.end.store(base + len, Ordering::Release);
        slot.start.store(base, Ordering::Release);
        LOWEST.fetch_min(base, Ordering::AcqRel);
        HIGHEST.fetch_max(base + len, Ordering::AcqRel);
        Some(Self { slot, base, len })
    }

    /// The `n` values of `T` stored at byte `offset`, as a `Vec` candle can own, with their pages
    /// mapped in; `None` if the range is empty, outside the file or misaligned for `T`.
    pub(crate) fn vec<T: WithDType>(&self, offset: u64, n: usize) -> Option<Vec<T>> {
        let bytes = n.checked_mul(std::mem::size_of::<T>())?;
        let offset = usize::try_from(offset).ok()?;
        if n == 0 || offset.checked_add(bytes)? > self.len {
            return None;
        }
        let addr = self.base + offset;
        if !addr.is_multiple_of(std::mem::align_of::<T>()) {
            return None;
        }
        populate_read(addr, bytes);
        self.slot.refs.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the range lies inside the live, readable and writable (copy-on-write) mapping,
        // is aligned for `T`, and holds initialised bytes, valid for plain-old-data `T`. The
        // `Vec` frees through the global allocator, which recognises the range and drops the
        // reference taken above instead of calling `free` (see `map`).
        Some(unsafe { Vec::from_raw_parts(addr as *mut T, n, n) })
    }
}

impl Drop for FileMapping {
    fn drop(&mut self) {
        release(self.slot);
    }
}

/// Maps the page-cache pages of `[addr, addr + len)` into the page table now, read-only until
/// written (`MADV_POPULATE_READ`, Linux >= 5.14): one call instead of a fault per 16 pages when
/// the model first runs. Best effort; elsewhere the pages fault in on first use.
#[cfg(target_os = "linux")]
fn populate_read(addr: usize, len: usize) {
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    let page = super::memory::page_size();
    // SAFETY: the range is inside a live mapping of ours, from the start of its first page;
    // POPULATE_READ changes no contents.
    unsafe {
        super::memory::advise(
            addr / page * page,
            addr + len,
            libc::MADV_POPULATE_READ,
            &UNSUPPORTED,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn populate_read(_addr: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::mem::ManuallyDrop;

    /// A temporary file of `n` bytes counting 0, 1, 2, ... (mod 256).
    fn counting_file(n: usize) -> (tempfile::NamedTempFile, File) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..n).map(|i| i as u8).collect();
        tmp.write_all(&bytes).unwrap();
        let file = File::open(tmp.path()).unwrap();
        (tmp, file)
    }

    fn is_mapped(path: &std::path::Path) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let name = path.to_str().unwrap();
        maps.lines().any(|line| line.ends_with(name))
    }

    /// Frees a mapped `Vec` the way the global allocator would (this test binary's global
    /// allocator is the system one).
    fn free<T>(v: ManuallyDrop<Vec<T>>) {
        let layout = Layout::array::<T>(v.capacity()).unwrap();
        // SAFETY: the block is a mapped tensor handed out by `FileMapping::vec`.
        unsafe { MappedWeightsAllocator.dealloc(v.as_ptr() as *mut u8, layout) };
    }

    #[test]
    fn tensors_read_the_file_and_keep_it_mapped_until_the_last_is_freed() {
        let (tmp, file) = counting_file(3 * 4096 + 10);
        let mapping = FileMapping::map_unchecked(&file, 3 * 4096 + 10).unwrap();
        let a = ManuallyDrop::new(mapping.vec::<u8>(4096, 8).unwrap());
        let b = ManuallyDrop::new(mapping.vec::<u32>(2 * 4096, 5).unwrap());
        assert_eq!(a.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(b[1], u32::from_le_bytes([4, 5, 6, 7]));
        assert!(slot_of(a.as_ptr() as usize).is_some());

        drop(mapping);
        assert!(is_mapped(tmp.path()), "tensors keep the mapping alive");
        let b_addr = b.as_ptr() as usize;
        free(a);
        assert!(is_mapped(tmp.path()));
        free(b);
        assert!(!is_mapped(tmp.path()), "the last tensor unmaps the file");
        assert!(slot_of(b_addr).is_none());
    }

    #[test]
    fn out_of_range_misaligned_and_empty_requests_are_refused() {
        let (_tmp, file) = counting_file(100);
        let mapping = FileMapping::map_unchecked(&file, 100).unwrap();
        assert!(mapping.vec::<u8>(96, 5).is_none(), "past the end");
        assert!(mapping.vec::<f32>(2, 4).is_none(), "misaligned");
        assert!(mapping.vec::<f32>(0, 0).is_none(), "empty");
        assert!(mapping.vec::<u8>(u64::MAX, 1).is_none());
        assert_eq!(mapping.slot.refs.load(Ordering::Acquire), 1);
    }

    #[test]
    fn writes_stay_private_and_a_resized_tensor_moves_to_ordinary_memory() {
        let (tmp, file) = counting_file(8192);
        let mapping = FileMapping::map_unchecked(&file, 8192).unwrap();
        let mut v = ManuallyDrop::new(mapping.vec::<u8>(0, 4096).unwrap());
        v[0] = 200;
        assert_eq!(std::fs::read(tmp.path()).unwrap()[0], 0, "copy-on-write");

        let old = Layout::array::<u8>(4096).unwrap();
        // SAFETY: `v` is a mapped tensor; the new size is non-zero.
        let moved = unsafe { MappedWeightsAllocator.realloc(v.as_mut_ptr(), old, 8000) };
        assert!(!moved.is_null());
        assert!(slot_of(moved as usize).is_none(), "now system memory");
        // SAFETY: `moved` holds at least 4096 initialised bytes copied from `v`.
        let copied = unsafe { std::slice::from_raw_parts(moved, 4096) };
        assert_eq!((copied[0], copied[1], copied[4095]), (200, 1, 255));
        drop(mapping);
        assert!(
            !is_mapped(tmp.path()),
            "the moved tensor no longer holds the mapping"
        );
        // SAFETY: `moved` came from `System.alloc` with this layout.
        unsafe { MappedWeightsAllocator.dealloc(moved, Layout::array::<u8>(8000).unwrap()) };
    }
}
