//! Wakes readers of local streams when any process appends: the streams'
//! directory is watched with Linux inotify, and each append, once committed,
//! opens and closes `<stream>.appended` for writing, which signals the stream's
//! readers in this process. (SQLite's own write to `<stream>.sqlite-wal` comes
//! before its commit is visible and would wake a reader too early to find the
//! records.) Where inotify is missing, or the watch fails, readers go on
//! polling. Knows files and signals, not records.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Weak};

use rustix::fs::inotify;
use tokio::sync::watch;

/// The signal of each stream read in this process, by stream name.
pub(super) type Signals = Mutex<HashMap<String, watch::Sender<u64>>>;

/// The suffix of the file an append announces itself by (the streams are `<name>.sqlite`).
const ANNOUNCE_SUFFIX: &[u8] = b".appended";

/// The file appends to `stream` announce themselves by.
pub(super) fn announce_path(dir: &Path, stream: &str) -> PathBuf {
    dir.join(format!("{stream}.appended"))
}

/// Tells the watchers of the directory that an append to the stream of `path` is committed:
/// closing a file opened for writing is an event they see, and writes nothing.
pub(super) fn announce(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map(drop)
}

/// Starts watching `dir` on a thread of its own (inotify reads block), which
/// ends at the first event after `signals` is dropped, or if the watch fails.
pub(super) fn watch_dir(dir: &Path, signals: Weak<Signals>) -> std::io::Result<()> {
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
    inotify::add_watch(&fd, dir, inotify::WatchFlags::CLOSE_WRITE)?;
    std::thread::Builder::new().name("statefun-stream-watch".into()).spawn(move || {
        let mut buffer = [MaybeUninit::<u8>::uninit(); 8 * 1024];
        let mut events = inotify::Reader::new(&fd, &mut buffer);
        loop {
            let event = match events.next() {
                Ok(event) => event,
                Err(e) => {
                    tracing::debug!("watching the local streams for appends stopped ({e}); readers poll");
                    return;
                }
            };
            let Some(signals) = signals.upgrade() else { return };
            let stream = event.file_name().and_then(|name| name.to_bytes().strip_suffix(ANNOUNCE_SUFFIX));
            if let Some(stream) = stream.and_then(|s| std::str::from_utf8(s).ok())
                && let Some(signal) = signals.lock().unwrap_or_else(|e| e.into_inner()).get(stream)
            {
                signal.send_modify(|appends| *appends += 1);
            }
        }
    })?;
    Ok(())
}
