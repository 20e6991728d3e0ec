//! Watches: replay from a resourceVersion out of the bounded history (410 Expired when it is older), initial
//! events for `sendInitialEvents`, selector transitions, bookmarks, and `timeoutSeconds`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::api::{view, Inner, Target};
use crate::error::ApiError;
use crate::select::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType};
use crate::table;

/// Watch parameters from the query.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    /// `resourceVersion` ("" or "0": start with the current state).
    pub resource_version: String,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds` (default 30 minutes).
    pub timeout: Option<Duration>,
    /// labelSelector.
    pub labels: LabelSelector,
    /// fieldSelector.
    pub fields: FieldSelector,
    /// Send Table rows (kubectl get -w) with this includeObject policy.
    pub table: Option<String>,
    /// Send `PartialObjectMetadata` objects (kube-rs metadata watchers).
    pub metadata_only: bool,
    /// Bookmark period.
    pub bookmark_every: Duration,
}

/// Start a watch; returns a receiver of JSON lines. Errors that happen before the stream starts (bad
/// resourceVersion) come back as a stream with one ERROR event, like the real server.
pub fn start(inner: &Arc<Inner>, t: Target, p: WatchParams) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
    let key = (t.rt.storage_group.clone(), t.rt.plural.clone());
    let ns = if t.rt.namespaced {
        t.namespace.clone()
    } else {
        String::new()
    };
    let setup = {
        let store = inner.lock();
        let current = store.current_rv();
        let start_rv = p.resource_version.parse::<u64>().ok().filter(|rv| *rv > 0);
        match (p.send_initial_events, start_rv) {
            // A version from the future comes from before a reset (an emulator restarted without its state):
            // make the client list again instead of silently skipping events until the counter catches up.
            (false, Some(rv)) if rv > current => Err(ApiError::gone(format!(
                "too large resource version: {rv} (current {current}); the cluster was reset, list again"
            ))),
            (false, Some(rv)) => match store.watch_from(rv) {
                Some((events, rx)) => Ok((Vec::new(), events, rx, rv)),
                None => Err(ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    store.compacted_rv() + 1
                ))),
            },
            _ if !p.resource_version.is_empty() && p.resource_version != "0" && start_rv.is_none() => {
                Err(ApiError::bad_request(format!(
                    "invalid resource version {:?}: it must be a decimal number",
                    p.resource_version
                )))
            }
            _ => {
                let initial: Vec<Arc<Value>> = store.list(&key, if ns.is_empty() { None } else { Some(&ns) });
                Ok((initial, Vec::new(), store.subscribe(), current))
            }
        }
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut first = true;
        let send = |etype: &str, obj: &Value, first: &mut bool| {
            let object = match &p.table {
                Some(include) => {
                    let mut tbl = table::table(
                        &t.rt,
                        &t.version,
                        std::slice::from_ref(obj),
                        json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))}),
                        include,
                    );
                    if !*first {
                        tbl["columnDefinitions"] = json!([]);
                    }
                    *first = false;
                    tbl
                }
                None if p.metadata_only => crate::server::partial(obj),
                None => obj.clone(),
            };
            let mut line = serde_json::to_vec(&json!({"type": etype, "object": object})).unwrap_or_default();
            line.push(b'\n');
            line
        };
        let (initial, replay, mut rx, mut last_rv) = match setup {
            Ok(s) => s,
            Err(e) => {
                let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()}))
                    .unwrap_or_default();
                line.push(b'\n');
                let _ = tx.send(line).await;
                return;
            }
        };
        let matches = |o: &Value| p.labels.matches(o) && p.fields.matches(o);
        for obj in initial {
            let shown = view(&t.rt, &t.version, &obj);
            if matches(&shown) && tx.send(send("ADDED", &shown, &mut first)).await.is_err() {
                return;
            }
        }
        if p.send_initial_events {
            let bm = bookmark(&t, last_rv, true);
            if tx.send(bm).await.is_err() {
                return;
            }
        }
        // Objects are stored in this form: no conversion and one shared serialization per event.
        let converted =
            t.rt.builtin == Some(crate::resource::Builtin::Event) && t.rt.group == "events.k8s.io";
        let shared = !converted && p.table.is_none() && !p.metadata_only && t.version == t.rt.storage_version;
        let deliver = |ev: &Event, first: &mut bool| -> Option<Vec<u8>> {
            if ev.key != key || (!ns.is_empty() && ev.namespace != ns) {
                return None;
            }
            let (now_match, was_match) = if converted {
                (
                    matches(&view(&t.rt, &t.version, &ev.object)),
                    ev.old.as_ref().map(|o| matches(&view(&t.rt, &t.version, o))),
                )
            } else {
                (matches(&ev.object), ev.old.as_ref().map(|o| matches(o)))
            };
            let etype = match (ev.etype, was_match, now_match) {
                (EventType::Added, _, true) => "ADDED",
                (EventType::Modified, Some(true), true) => "MODIFIED",
                (EventType::Modified, Some(false) | None, true) => "ADDED",
                (EventType::Modified, Some(true), false) => "DELETED",
                (EventType::Deleted, _, true) | (EventType::Deleted, Some(true), _) => "DELETED",
                _ => return None,
            };
            if shared && etype == ev.etype.as_str() {
                return Some(ev.line.get_or_init(|| line(etype, &ev.object)).clone());
            }
            Some(send(etype, &view(&t.rt, &t.version, &ev.object), first))
        };
        for ev in replay {
            last_rv = ev.rv;
            if let Some(line) = deliver(&ev, &mut first) {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
        let mut closing = inner.closing.subscribe();
        if *closing.borrow() {
            return;
        }
        let deadline = tokio::time::sleep(p.timeout.unwrap_or(Duration::from_secs(1800)));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(p.bookmark_every.max(Duration::from_millis(50)));
        tick.tick().await;
        // A bookmark promises that everything up to its version was sent, so a due bookmark waits until
        // nothing is queued for this watch and carries the last version processed. (Bookmarking the store's
        // current version lost events: a client that re-watched from it skipped those still queued.)
        let mut bookmark_due = false;
        loop {
            if bookmark_due && rx.is_empty() {
                bookmark_due = false;
                if tx.send(bookmark(&t, last_rv, false)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = &mut deadline => return,
                _ = closing.changed() => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if p.bookmarks => bookmark_due = true,
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if let Some(line) = deliver(&ev, &mut first) {
                            if tx.send(line).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(fell_behind(last_rv)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    rx
}

/// The ERROR event that ends a watch whose subscriber could not keep up with the event stream.
fn fell_behind(last_rv: u64) -> Vec<u8> {
    let e = ApiError::gone(format!(
        "the watch fell behind the event stream at resource version {last_rv}; list and watch again"
    ));
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    line.push(b'\n');
    line
}

fn bookmark(t: &Target, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": t.rt.kind, "apiVersion": t.rt.api_version(&t.version), "metadata": meta});
    let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
    line.push(b'\n');
    line
}

#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    etype: &'a str,
    object: &'a Value,
}

fn line(etype: &str, object: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(&Line { etype, object }).unwrap_or_default();
    out.push(b'\n');
    out
}
