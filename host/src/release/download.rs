//! Release downloads in the background, so that a slow source cannot stall anyone else.
//!
//! A reconcile asks [`Downloads::poll`] for its release and gets an answer at once: the release (cached
//! or just downloaded), the download's failure, or "still queued / still running" (come back later). The
//! download itself runs in its own task, not in a reconcile worker, so any number of slow downloads
//! leave the workers free. Downloads from one origin (a registry host, a GitHub API host) take turns
//! in a first-come-first-served queue of `per_origin` slots; each download has an overall deadline; and
//! [`Downloads::cancel`] (a deleted release) stops a queued or running download at once. A stopped
//! download leaves nothing behind: the cache removes its temporary directory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::cache::ReleaseCache;
use super::error::ReleaseError;
use super::name::ReleaseName;
use super::source::ReleaseSource;
use super::ReleaseAssets;

/// Where a requested release is.
#[derive(Debug)]
pub enum Download {
    /// Done: the release, or why it could not be had. The next poll starts afresh.
    Done(Box<Result<ReleaseAssets, ReleaseError>>),
    /// Waiting for a slot of its origin, whose slots are all taken.
    Queued {
        /// The origin (e.g. `registry.example:5000`).
        origin: String,
        /// How many downloads from the origin run now.
        running: usize,
        /// Since when it waits.
        since: Instant,
    },
    /// Downloading since `since`.
    Running {
        /// When the download started (not when it was queued).
        since: Instant,
    },
    /// The last download failed and the next may start only after this long (see [`Downloads::hold`]).
    Held(Duration),
}

/// The background downloads of release assets, keyed by the object that wants them.
pub struct Downloads {
    cache: Arc<ReleaseCache>,
    deadline: Duration,
    per_origin: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    running: Mutex<HashMap<String, Task>>,
    /// Failed downloads not to be retried before an instant, by key: `(what, until)`.
    held: Mutex<HashMap<String, (String, Instant)>>,
}

impl std::fmt::Debug for Downloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloads")
            .field("deadline", &self.deadline)
            .field("per_origin", &self.per_origin)
            .finish_non_exhaustive()
    }
}

struct Task {
    /// What is downloaded: `<source id> <tag>` (a changed spec starts a new download).
    what: String,
    origin: String,
    queued_at: Instant,
    started: Arc<Mutex<Option<Instant>>>,
    handle: JoinHandle<Result<ReleaseAssets, ReleaseError>>,
}

impl Drop for Task {
    fn drop(&mut self) {
        // A download nobody waits for any more stops (its temporary directory is removed).
        self.handle.abort();
    }
}

impl Downloads {
    /// Downloads into `cache`, each within `deadline`, at most `per_origin` at a time from one origin.
    pub fn new(cache: Arc<ReleaseCache>, deadline: Duration, per_origin: usize) -> Self {
        Downloads {
            cache,
            deadline,
            per_origin: per_origin.max(1),
            slots: Mutex::default(),
            running: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// The cache downloads go into.
    pub fn cache(&self) -> &Arc<ReleaseCache> {
        &self.cache
    }

    /// The deadline of one download.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn slot(&self, origin: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(origin.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_origin)))
            .clone()
    }

    /// Release `release` from `source` for the object `key`: from the cache when it is there, else
    /// the state of its download (started now if there is none). Must be called within a tokio runtime.
    pub fn poll(&self, key: &str, source: Arc<dyn ReleaseSource>, release: &ReleaseName) -> Download {
        let what = format!("{} {}", source.id(), release.tag());
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            match held.get(key) {
                Some((w, until)) if *w == what && *until > Instant::now() => {
                    return Download::Held(*until - Instant::now())
                }
                Some(_) => {
                    held.remove(key);
                }
                None => {}
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = running.get_mut(key) {
            if task.what == what {
                if let Some(joined) = (&mut task.handle).now_or_never() {
                    running.remove(key);
                    return Download::Done(Box::new(joined.unwrap_or_else(|e| {
                        Err(ReleaseError::Source {
                            source_name: source.describe(),
                            message: format!("the download of {} failed: {e}", release.tag()),
                        })
                    })));
                }
                let started = *task.started.lock().unwrap_or_else(|p| p.into_inner());
                return match started {
                    Some(since) => Download::Running { since },
                    None => Download::Queued {
                        running: self.per_origin
                            - self.slot(&task.origin).available_permits().min(self.per_origin),
                        origin: task.origin.clone(),
                        since: task.queued_at,
                    },
                };
            }
            // The object wants something else now: stop the old download.
            running.remove(key);
        }
        match self.cache.get(source.as_ref(), release) {
            Ok(Some(assets)) => return Download::Done(Box::new(Ok(assets))),
            Ok(None) => {}
            Err(e) => return Download::Done(Box::new(Err(e))),
        }
        let origin = source.origin();
        let slot = self.slot(&origin);
        // A free slot is taken here, so that the answer says at once whether the download runs.
        let free = slot.clone().try_acquire_owned().ok();
        let now = Instant::now();
        let started = Arc::new(Mutex::new(free.as_ref().map(|_| now)));
        let (cache, deadline, release, started_) = (
            self.cache.clone(),
            self.deadline,
            release.clone(),
            started.clone(),
        );
        let answer = match free {
            Some(_) => Download::Running { since: now },
            None => Download::Queued {
                running: self.per_origin,
                origin: origin.clone(),
                since: now,
            },
        };
        let handle = tokio::spawn(async move {
            // First come, first served: tokio's semaphore queues waiters in order.
            let _slot = match free {
                Some(permit) => Ok(permit),
                None => slot.acquire_owned().await,
            };
            *started_.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            match tokio::time::timeout(deadline, cache.fetch(source.as_ref(), &release)).await {
                Ok(result) => result,
                Err(_) => Err(ReleaseError::TimedOut {
                    tag: release.tag(),
                    source_name: source.describe(),
                    after: deadline,
                }),
            }
        });
        let task = Task {
            what,
            origin,
            queued_at: now,
            started,
            handle,
        };
        running.insert(key.to_owned(), task);
        answer
    }

    /// After a failed download of `release` from `source` for `key`: polls answer [`Download::Held`]
    /// for `wait` instead of starting the next download at once (an object is reconciled again as soon
    /// as its status changes; the failure stays visible and the retry keeps its backoff).
    pub fn hold(&self, key: &str, source: &dyn ReleaseSource, release: &ReleaseName, wait: Duration) {
        let what = format!("{} {}", source.id(), release.tag());
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), (what, Instant::now() + wait));
    }

    /// Stops the download of `key`, queued or running; whether there was one.
    pub fn cancel(&self, key: &str) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        let task = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        task.is_some()
    }

    /// How many downloads are queued or running.
    pub fn in_flight(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Set when dropped: tells blocking work (a GitHub download on its own thread) that nobody waits for it
/// any more.
#[derive(Debug, Default)]
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
