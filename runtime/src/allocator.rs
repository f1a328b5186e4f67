//! The process's allocator, and the one setting of it the worker depends on.
//! It owns nothing else: the memory budget itself lives with the worker.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// glibc's allocator spent close to half of a busy worker's CPU time (the
/// benchmarks' profiles): every message is a handful of small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The variable mimalloc reads, as the process loads, for how long memory
/// freed by the program stays with the process before it goes back to the
/// system.
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// The worker's purge delay, in milliseconds. The memory budget is kept by
/// the process's resident memory; with mimalloc's default of one second, a
/// load that allocates and frees fast (a fan-out loop) keeps freed memory
/// resident long enough to pass the budget's mark while the partitions count
/// far less, and every partition then pauses its input
/// (docs/performance.md, "The allocator's purge delay").
const WORKER_PURGE_DELAY_MS: &str = "100";

/// Makes the worker run with [`WORKER_PURGE_DELAY_MS`] unless the operator
/// set [`PURGE_DELAY_VAR`] (any value, mimalloc's `1000` included, is kept).
///
/// mimalloc reads its options once, before `main`, from the environment, and
/// this workspace calls no C itself; so the process starts itself again with
/// the variable set. `exec` keeps the pid, the open files and the arguments,
/// so supervisors and signals see one process. Call it before any thread is
/// started. If the new start fails, the worker goes on with the default and
/// says so.
pub fn settle_for_worker() {
    if std::env::var_os(PURGE_DELAY_VAR).is_some() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return warn_unsettled(&e),
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from(&exe));
    // Returns only if the new start failed.
    let e = Command::new(&exe).arg0(arg0).args(args).env(PURGE_DELAY_VAR, WORKER_PURGE_DELAY_MS).exec();
    warn_unsettled(&e);
}

fn warn_unsettled(e: &std::io::Error) {
    tracing::warn!(
        error = %e,
        "could not start again with {PURGE_DELAY_VAR}={WORKER_PURGE_DELAY_MS}: freed memory stays resident for \
         mimalloc's default delay, which the memory budget counts"
    );
}
