//! The database file in memory, on huge pages where the kernel offers them.
//!
//! A lookup walks about thirty nodes of a 50 MB search tree at random; with 4 KiB pages
//! nearly every deep step also misses the TLB. The file is read into one allocation aligned
//! to 2 MiB; [`Buffer::promote`] then asks the kernel to put it on transparent huge pages,
//! so the tree spans a few dozen TLB entries instead of thousands. That is done after the
//! read, off the start-up path: asking before the pages are touched makes every fault wait
//! for the kernel to compact memory, which after a memory-hungry job took start-up from
//! 50 ms to 500 ms. Where huge pages are off the advice is ignored and the buffer behaves
//! as an ordinary one.

use std::alloc::{self, Layout};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Alignment and size of a transparent huge page on x86-64 and arm64.
const HUGE_PAGE: usize = 2 << 20;

/// A file's bytes in one 2 MiB-aligned allocation; clones share it.
#[derive(Clone)]
pub struct Buffer {
    allocation: std::sync::Arc<Allocation>,
}

struct Allocation {
    data: std::ptr::NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: `Allocation` owns its memory exclusively and only hands out shared slices.
unsafe impl Send for Allocation {}
// SAFETY: after `read` returns, the bytes are never written again.
unsafe impl Sync for Allocation {}

impl Buffer {
    /// Reads the whole file at `path`.
    pub fn read(path: &Path) -> io::Result<Buffer> {
        // Opened without waiting (a named pipe would wait for a writer; a regular file
        // ignores the flag), then refused unless regular: a pipe or device would be read
        // until its writer stops, if ever.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let len = usize::try_from(metadata.len())
            .map_err(|_| io::Error::other("file does not fit in memory"))?;
        let allocation = Allocation::new(len)?;
        // SAFETY: the allocation holds `len` bytes and nothing else refers to it yet;
        // zeroing it first makes every byte initialised before a slice is formed.
        let bytes = unsafe {
            std::ptr::write_bytes(allocation.data.as_ptr(), 0, len);
            std::slice::from_raw_parts_mut(allocation.data.as_ptr(), len)
        };
        file.read_exact(bytes)?;
        // A file that grew while being read is read again by the next reload.
        Ok(Buffer {
            allocation: std::sync::Arc::new(allocation),
        })
    }
}

impl Allocation {
    fn new(len: usize) -> io::Result<Allocation> {
        let size = len.max(1).next_multiple_of(HUGE_PAGE);
        let layout = Layout::from_size_align(size, HUGE_PAGE).map_err(io::Error::other)?;
        // SAFETY: `layout` has a non-zero size.
        let data = std::ptr::NonNull::new(unsafe { alloc::alloc(layout) })
            .ok_or_else(|| io::Error::other(format!("cannot allocate {size} bytes")))?;
        Ok(Allocation { data, len, layout })
    }
}

impl Buffer {
    /// Moves the bytes onto huge pages where the kernel can: advised for them (so the
    /// kernel's background collapsing takes them), then collapsed at once where the
    /// kernel supports it (Linux 6.1+). Slow on fragmented memory, so it is called off the
    /// request and start-up paths; contents never change.
    pub fn promote(&self) {
        let a = &self.allocation;
        // Only whole huge pages of the file: a huge page over its last, partial one would
        // make the unused rest resident too (up to 2 MiB; 0.36 MiB for the shipped file).
        let (start, size) = (a.data.as_ptr(), a.len - a.len % HUGE_PAGE);
        if size == 0 {
            return;
        }
        advise(start, size, HUGE_PAGE_ADVICE, "huge pages not available");
        advise(start, size, COLLAPSE_ADVICE, "huge pages not collapsed now");
    }
}

#[cfg(target_os = "linux")]
const HUGE_PAGE_ADVICE: libc::c_int = libc::MADV_HUGEPAGE;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const COLLAPSE_ADVICE: libc::c_int = libc::MADV_COLLAPSE;
#[cfg(all(target_os = "linux", not(target_env = "gnu")))]
const COLLAPSE_ADVICE: libc::c_int = 25;

#[cfg(target_os = "linux")]
fn advise(start: *mut u8, size: usize, advice: libc::c_int, failed: &str) {
    // SAFETY: the range is one allocation of ours; these advices change no contents.
    if unsafe { libc::madvise(start.cast(), size, advice) } != 0 {
        let error = io::Error::last_os_error();
        tracing::debug!(%error, "{failed} for the GeoIP database");
    }
}

#[cfg(not(target_os = "linux"))]
const HUGE_PAGE_ADVICE: i32 = 0;
#[cfg(not(target_os = "linux"))]
const COLLAPSE_ADVICE: i32 = 0;

#[cfg(not(target_os = "linux"))]
fn advise(_start: *mut u8, _size: usize, _advice: i32, _failed: &str) {}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        let a = &self.allocation;
        // SAFETY: `len` bytes were initialised by `read` and are never written again.
        unsafe { std::slice::from_raw_parts(a.data.as_ptr(), a.len) }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        // SAFETY: allocated in `allocate` with exactly this layout.
        unsafe { alloc::dealloc(self.data.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes read are the file's, whatever its length, and the start is 2 MiB-aligned.
    #[test]
    fn reads_files_exactly() {
        let dir = tempfile::tempdir().expect("dir");
        for len in [0usize, 1, 4095, HUGE_PAGE + 3] {
            let path = dir.path().join(format!("f{len}"));
            let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&path, &content).expect("written");
            let buffer = Buffer::read(&path).expect("read");
            assert_eq!(buffer.as_ref(), &content[..]);
            assert_eq!(buffer.as_ref().as_ptr() as usize % HUGE_PAGE, 0);
        }
    }
}
