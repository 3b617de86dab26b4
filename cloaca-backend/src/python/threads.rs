//! A Python thread state for each engine worker thread, kept for the
//! thread's life.
//!
//! A thread that enters Python without a thread state of its own gets a new
//! one for that call, and loses it (with its frame stack) when it leaves.
//! A worker enters Python once per task, so on a chain of no-op tasks that
//! came to about a third of the time per task. A worker therefore makes its
//! thread state once, when it starts; each task then only takes the GIL.

use pyo3::ffi;

/// Runs `body` (a worker's loop) with a thread state of its own. Called by
/// a thread that does not hold the GIL, as every engine thread is outside
/// its calls into Python.
pub(crate) fn with_thread_state(body: &mut dyn FnMut()) {
    let _kept = KeptThreadState::new();
    body();
}

/// The thread's state, made and released at once; restored and dropped
/// with the value (a panic unwinding the loop included).
struct KeptThreadState {
    gil: ffi::PyGILState_STATE,
    state: *mut ffi::PyThreadState,
}

impl KeptThreadState {
    fn new() -> Self {
        // SAFETY: the interpreter is initialised (this module is loaded in
        // it) and this thread does not hold the GIL, so Ensure makes the
        // thread's state and takes the GIL, and SaveThread gives the GIL
        // back while the state stays this thread's.
        unsafe {
            let gil = ffi::PyGILState_Ensure();
            let state = ffi::PyEval_SaveThread();
            KeptThreadState { gil, state }
        }
    }
}

impl Drop for KeptThreadState {
    fn drop(&mut self) {
        // SAFETY: the pair of `new`, in reverse, on the same thread. A
        // runner's shutdown waits for its workers with the GIL released, so
        // the GIL can be taken here.
        unsafe {
            ffi::PyEval_RestoreThread(self.state);
            ffi::PyGILState_Release(self.gil);
        }
    }
}
