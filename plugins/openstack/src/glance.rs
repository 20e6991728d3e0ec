//! Glance v2 image API calls.

use serde_json::Value;

use crate::cloud::Session;
use crate::clusterstack::provider::types::Error;
use crate::net;

const JSON: &str = "application/json";

/// Most pages followed when listing images (1000 images at Glance's default page size of 25... and
/// more with `limit`): a guard against a `next` link that never ends.
const MAX_PAGES: usize = 50;

/// The image, or `None` when Glance does not know the id.
pub fn get(session: &mut Session, id: &str) -> Result<Option<Value>, Error> {
    let reply = session.glance("GET", &format!("/v2/images/{}", net::encode(id)), None, JSON)?;
    match reply.status {
        200 => Ok(Some(reply.json(&session.glance_label())?)),
        404 => Ok(None),
        _ => Err(net::unexpected(
            &session.glance_label(),
            &format!("get image {id}"),
            &reply,
        )),
    }
}

/// Images with this name that carry all `tags` (every page).
pub fn find(session: &mut Session, name: &str, tags: &[String]) -> Result<Vec<Value>, Error> {
    let mut path = format!("/v2/images?limit=100&name={}", net::encode(name));
    for tag in tags {
        path.push_str(&format!("&tag={}", net::encode(tag)));
    }
    let mut found = Vec::new();
    for _ in 0..MAX_PAGES {
        let reply = session.glance("GET", &path, None, JSON)?;
        if reply.status != 200 {
            return Err(net::unexpected(
                &session.glance_label(),
                &format!("list images named {name:?}"),
                &reply,
            ));
        }
        let body = reply.json(&session.glance_label())?;
        found.extend(
            body.get("images")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        match body.get("next").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => path = next.to_string(),
            _ => return Ok(found),
        }
    }
    Ok(found)
}

/// Creates the image record (status `queued`).
pub fn create(session: &mut Session, body: &Value) -> Result<Value, Error> {
    let reply = session.glance("POST", "/v2/images", Some(body), JSON)?;
    match reply.status {
        200 | 201 => reply.json(&session.glance_label()),
        _ => Err(net::unexpected(
            &session.glance_label(),
            &format!(
                "create image {}",
                body.get("name").and_then(Value::as_str).unwrap_or("?")
            ),
            &reply,
        )),
    }
}

/// The import methods this Glance offers (`/v2/info/import`).
pub fn import_methods(session: &mut Session) -> Result<Vec<String>, Error> {
    let reply = session.glance("GET", "/v2/info/import", None, JSON)?;
    if reply.status != 200 {
        return Err(net::unexpected(
            &session.glance_label(),
            "read the import methods",
            &reply,
        ));
    }
    let body = reply.json(&session.glance_label())?;
    Ok(body
        .pointer("/import-methods/value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect())
}

/// Starts an interoperable import (`POST /v2/images/{id}/import`). `Ok(false)` when Glance says
/// an import is already under way or done (409), which is what a repeated call should see.
pub fn start_import(session: &mut Session, id: &str, method: &Value) -> Result<bool, Error> {
    let reply = session.glance(
        "POST",
        &format!("/v2/images/{}/import", net::encode(id)),
        Some(&serde_json::json!({ "method": method })),
        JSON,
    )?;
    match reply.status {
        200..=299 => Ok(true),
        409 => Ok(false),
        _ => Err(net::unexpected(
            &session.glance_label(),
            &format!(
                "start the {} import of image {id}",
                method.get("name").and_then(Value::as_str).unwrap_or("?")
            ),
            &reply,
        )),
    }
}

/// Uploads the image data to the staging area (glance-direct).
pub fn stage(session: &mut Session, id: &str, data: Vec<u8>) -> Result<(), Error> {
    let reply = session.glance_upload(&format!("/v2/images/{}/stage", net::encode(id)), data)?;
    match reply.status {
        200..=299 => Ok(()),
        _ => Err(net::unexpected(
            &session.glance_label(),
            &format!("stage the data of image {id}"),
            &reply,
        )),
    }
}

/// The image's import tasks (Glance >= Yoga), newest last; empty when the API is missing.
pub fn tasks(session: &mut Session, id: &str) -> Result<Vec<Value>, Error> {
    let reply = session.glance(
        "GET",
        &format!("/v2/images/{}/tasks", net::encode(id)),
        None,
        JSON,
    )?;
    if reply.status != 200 {
        return Ok(Vec::new());
    }
    let body = reply.json(&session.glance_label())?;
    let mut tasks = body
        .get("tasks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    tasks.sort_by(|a, b| {
        let at = |t: &Value| {
            t.get("created_at")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        at(a).cmp(&at(b))
    });
    Ok(tasks)
}

/// Deletes an image; `Ok` when it is already gone.
pub fn delete(session: &mut Session, id: &str) -> Result<(), Error> {
    let reply = session.glance("DELETE", &format!("/v2/images/{}", net::encode(id)), None, JSON)?;
    match reply.status {
        200..=299 | 404 => Ok(()),
        _ => Err(net::unexpected(
            &session.glance_label(),
            &format!("delete image {id}"),
            &reply,
        )),
    }
}
