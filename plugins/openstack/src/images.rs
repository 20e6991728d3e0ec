//! `reconcile-node-images` and `cleanup-node-images`: node images in Glance, as upstream's
//! OpenStackNodeImageRelease controller does it, idempotent through the `state` capability.
//!
//! Per image: find it (the id this plugin recorded, else `createOpts.id`, else name + tags; more
//! than one match is an error naming them), create it with the create options, start the import
//! (web-download, or glance-direct upload), then report pending while it is queued/importing,
//! ready with the Glance id when active, failed for killed/deactivated, a failed import task or an
//! import over the configured timeout.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cloud::Session;
use crate::clusterstack::provider::log::Level;
use crate::clusterstack::provider::types::{Error, ImageState, ImageStatus, NodeImage, ReleaseInfo, Retry};
use crate::config::{Config, ImportMethod, OrcMode};
use crate::orc::OrcImage;
use crate::{glance, log, net, orc, store, time};

/// What the plugin keeps per node image (`image/<name>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub id: String,
    /// Whether this plugin created the image (only those are ever deleted by cleanup).
    pub created: bool,
    #[serde(default)]
    pub import_method: Option<String>,
    #[serde(default)]
    pub import_started_at: Option<u64>,
    /// Tags of the releases that use the image.
    #[serde(default)]
    pub releases: BTreeSet<String>,
    /// The checksum of an ORC image was verified (by Glance's hash or by reading the image back).
    #[serde(default)]
    pub verified: bool,
}

/// The node images of one release (`release/<tag>`): name -> Glance id, for patching.
pub type ReleaseImages = BTreeMap<String, String>;

pub fn image_key(name: &str) -> String {
    format!("image/{name}")
}

pub fn release_key(tag: &str) -> String {
    format!("release/{tag}")
}

/// The ORC `Image` objects of one release whose images this plugin made (`orc/<tag>`): object
/// name -> the Glance image, for `imageRef` in the machine templates.
pub type ReleaseOrcImages = BTreeMap<String, OrcRecord>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrcRecord {
    pub id: String,
    /// The image's name in Glance.
    pub name: String,
}

pub fn orc_key(tag: &str) -> String {
    format!("orc/{tag}")
}

/// Keys of the Glance image-create body that upstream's `createOpts` accepts besides name and formats.
const CREATE_KEYS: &[&str] = &[
    "id",
    "visibility",
    "os_hidden",
    "tags",
    "min_disk",
    "min_ram",
    "protected",
];

/// The Glance create body of a node image, and its tags (for the lookup).
pub struct CreateOptions {
    pub body: Map<String, Value>,
    pub id: Option<String>,
    pub tags: Vec<String>,
    /// The ORC `Image` the node image was made from.
    pub orc: Option<OrcImage>,
}

/// Builds the create body from the node image: `name`, `disk_format`, `container_format`, the
/// createOpts keys, `properties` (a map of strings) flattened into image properties as Glance v2
/// wants them, and any other key as a string property.
pub fn create_options(image: &NodeImage) -> Result<CreateOptions, Error> {
    let bad = |why: String| Error::InvalidInput(format!("node image {:?}: {why}", image.name));
    if image.name.trim().is_empty() {
        return Err(Error::InvalidInput("a node image has an empty name".to_string()));
    }
    if let Some(orc) = orc::from_node_image(image)? {
        return Ok(CreateOptions {
            body: orc.body.clone(),
            id: orc.import_id.clone(),
            tags: orc.tags.clone(),
            orc: Some(orc),
        });
    }
    let mut body = Map::new();
    body.insert("name".into(), json!(image.name));
    body.insert("disk_format".into(), json!(image.disk_format));
    body.insert("container_format".into(), json!(image.container_format));
    for (key, text) in &image.properties {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| bad(format!("property {key:?} is not a JSON text ({e}): {text}")))?;
        match key.as_str() {
            "name" | "disk_format" | "container_format" => {
                if value.as_str().is_some_and(|v| !v.is_empty()) {
                    body.insert(key.clone(), value);
                }
            }
            k if CREATE_KEYS.contains(&k) => {
                body.insert(key.clone(), value);
            }
            "properties" => {
                let Value::Object(map) = value else {
                    return Err(bad(format!("`properties` must be a map of strings, not {text}")));
                };
                for (k, v) in map {
                    body.insert(k, Value::String(plain(&v)));
                }
            }
            _ => {
                body.insert(key.clone(), Value::String(plain(&value)));
            }
        }
    }
    if let Some(v) = body.get("visibility").and_then(Value::as_str) {
        if !matches!(v, "public" | "private" | "shared" | "community") {
            return Err(bad(format!(
                "visibility {v:?} is not one of public, private, shared, community"
            )));
        }
    }
    let tags = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("tag {t} is not a string")))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(bad(format!("tags must be a list of strings, not {other}"))),
    };
    let id = match body.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(other) => return Err(bad(format!("id must be a non-empty string, not {other}"))),
    };
    Ok(CreateOptions {
        body,
        id,
        tags,
        orc: None,
    })
}

/// A JSON value as the plain string Glance stores for a property.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn reconcile(
    config: &Config,
    release: &ReleaseInfo,
    images: &[NodeImage],
) -> Result<Vec<ImageStatus>, Error> {
    let mut seen = BTreeSet::new();
    let mut prepared = Vec::new();
    for image in images {
        if !seen.insert(image.name.as_str()) {
            return Err(Error::InvalidInput(format!(
                "node image {:?} is listed twice in release {}",
                image.name, release.tag
            )));
        }
        prepared.push((image, create_options(image)?));
    }
    let mut statuses = Vec::new();
    let mut ids = ReleaseImages::new();
    let mut orc_ids = ReleaseOrcImages::new();
    let mut session = None;
    for (image, options) in prepared {
        if let (Some(orc), OrcMode::External) = (&options.orc, config.orc) {
            // ORC is installed and imports the image itself; its Image object is applied as rendered.
            statuses.push(ImageStatus {
                name: image.name.clone(),
                state: ImageState::Ready(orc.object.clone()),
            });
            continue;
        }
        if session.is_none() {
            session = Some(Session::open(config)?);
        }
        let session = session.as_mut().expect("opened above");
        let state = match reconcile_one(config, session, release, image, &options) {
            Ok(state) => state,
            // The service is unreachable or a grant is missing: the whole call is not possible.
            Err(e @ (Error::NotReady(_) | Error::Denied(_))) => return Err(e),
            Err(Error::InvalidInput(why) | Error::Failed(why)) => ImageState::Failed(why),
        };
        if let Some(record) = store::get::<ImageRecord>(&image_key(&image.name)) {
            if let Some(orc) = &options.orc {
                orc_ids.insert(
                    orc.object.clone(),
                    OrcRecord {
                        id: record.id.clone(),
                        name: image.name.clone(),
                    },
                );
            }
            ids.insert(image.name.clone(), record.id);
        }
        statuses.push(ImageStatus {
            name: image.name.clone(),
            state,
        });
    }
    // Recorded also for a release without node images, so `patch-cluster-class` knows it has none.
    store::set(&release_key(&release.tag), &ids)?;
    if orc_ids.is_empty() {
        store::delete(&orc_key(&release.tag));
    } else {
        store::set(&orc_key(&release.tag), &orc_ids)?;
    }
    Ok(statuses)
}

fn reconcile_one(
    config: &Config,
    session: &mut Session,
    release: &ReleaseInfo,
    image: &NodeImage,
    options: &CreateOptions,
) -> Result<ImageState, Error> {
    let key = image_key(&image.name);
    let label = session.glance_label();
    let mut record: Option<ImageRecord> = store::get(&key);

    // 1. The image this plugin already uses, if Glance still has it.
    let mut current = None;
    if let Some(r) = &record {
        current = glance::get(session, &r.id)?;
        if current.is_none() {
            log(
                Level::Warn,
                "a recorded image is gone from Glance; looking it up again",
                &[("image", &image.name), ("id", &r.id)],
            );
            record = None;
        }
    }
    // 2. Otherwise look it up as upstream does: by id, or by name and tags.
    if current.is_none() {
        current = match &options.id {
            Some(id) => glance::get(session, id)?,
            None => {
                let found = glance::find(session, &image.name, &options.tags)?;
                if found.len() > 1 {
                    let ids: Vec<&str> = found.iter().filter_map(|i| i.get("id")?.as_str()).collect();
                    return Ok(ImageState::Failed(format!(
                        "too many images were found in {label} with the name {:?} and tags {:?}: {}; \
                         delete the extra ones or give the node image an id",
                        image.name,
                        options.tags,
                        ids.join(", ")
                    )));
                }
                found.into_iter().next()
            }
        };
        if let Some(found) = &current {
            let id = str_field(found, "id");
            log(
                Level::Info,
                "using an existing image",
                &[("image", &image.name), ("id", &id)],
            );
            record = Some(ImageRecord {
                id,
                created: false,
                import_method: None,
                import_started_at: None,
                releases: BTreeSet::new(),
                verified: false,
            });
        }
    }
    // 3. Create it. The record is saved before anything else happens, so a repeated call (or a
    //    restarted controller) finds this image instead of creating another.
    let (image_json, mut record) = match (current, record) {
        (Some(found), Some(record)) => (found, record),
        _ if options.orc.as_ref().is_some_and(|o| o.lookup_only) => {
            let orc = options.orc.as_ref().expect("checked");
            let what = match &options.id {
                Some(id) => format!("id {id}"),
                None => format!("name {:?} and tags {:?}", image.name, options.tags),
            };
            return Ok(ImageState::Pending(Retry {
                retry_after_seconds: config.import.poll_seconds,
                message: format!(
                    "ORC Image {:?} uses an existing image ({what}), which {label} does not have yet",
                    orc.object
                ),
            }));
        }
        _ => {
            let created = glance::create(session, &Value::Object(options.body.clone()))?;
            let id = str_field(&created, "id");
            log(
                Level::Info,
                "created image",
                &[("image", &image.name), ("id", &id)],
            );
            let record = ImageRecord {
                id,
                created: true,
                import_method: None,
                import_started_at: None,
                releases: BTreeSet::new(),
                verified: false,
            };
            store::set(&key, &record)?;
            (created, record)
        }
    };
    if record.releases.insert(release.tag.clone()) || store::get::<ImageRecord>(&key).is_none() {
        store::set(&key, &record)?;
    }

    let id = record.id.clone();
    let status = str_field(&image_json, "status");
    let poll = config.import.poll_seconds;
    let pending = |message: String| {
        ImageState::Pending(Retry {
            retry_after_seconds: poll,
            message,
        })
    };
    match status.as_str() {
        "active" => {
            if let Some(why) = checksum_mismatch(image, &image_json) {
                return Ok(ImageState::Failed(format!(
                    "image {:?} ({id}) in {label}: {why}",
                    image.name
                )));
            }
            if options.orc.is_some() && !record.verified {
                if let Some(why) = verify_orc_hash(session, image, &image_json)? {
                    return Ok(ImageState::Failed(format!(
                        "image {:?} ({id}) in {label}: {why}; delete the image in Glance to have it \
                         imported again",
                        image.name
                    )));
                }
                record.verified = true;
                store::set(&key, &record)?;
            }
            Ok(ImageState::Ready(id))
        }
        "killed" | "deactivated" => Ok(ImageState::Failed(format!(
            "image {:?} ({id}) in {label}: image status {status} is unexpected; delete the image in \
             Glance to have it created again",
            image.name
        ))),
        "queued" if options.orc.as_ref().is_some_and(|o| o.lookup_only) => Ok(pending(format!(
            "waiting for the existing image {:?} ({id}) to become active: status queued",
            image.name
        ))),
        "queued" => {
            if record.import_started_at.is_some() {
                if let Some(why) = failed_import(session, &id, &image_json)? {
                    return Ok(ImageState::Failed(format!(
                        "the {} import of image {:?} ({id}) in {label} failed: {why}; delete the image \
                         in Glance to try again",
                        record.import_method.as_deref().unwrap_or("image"),
                        image.name
                    )));
                }
                if let Some(failed) = timed_out(config, &record, &status, &image.name, &label) {
                    return Ok(failed);
                }
                return Ok(pending(format!(
                    "waiting for image {:?} ({id}) to become active: status queued",
                    image.name
                )));
            }
            if !record.created {
                log(
                    Level::Info,
                    "an existing image has no data yet; starting its import",
                    &[("image", &image.name), ("id", &id)],
                );
            }
            let method = start_import(config, session, image, &id)?;
            record.import_method = Some(method.to_string());
            record.import_started_at = Some(time::now());
            store::set(&key, &record)?;
            Ok(pending(format!(
                "import of image {:?} ({id}) started ({method})",
                image.name
            )))
        }
        "importing" | "saving" | "uploading" | "deleted" | "pending_delete" => {
            if let Some(failed) = timed_out(config, &record, &status, &image.name, &label) {
                return Ok(failed);
            }
            Ok(pending(format!(
                "waiting for image {:?} ({id}) to become active: status {status}",
                image.name
            )))
        }
        other => Ok(ImageState::Failed(format!(
            "image {:?} ({id}) in {label}: image status {other:?} is unknown",
            image.name
        ))),
    }
}

fn str_field(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Failed when the import started longer ago than the configured timeout.
fn timed_out(
    config: &Config,
    record: &ImageRecord,
    status: &str,
    name: &str,
    label: &str,
) -> Option<ImageState> {
    let timeout = config.import.timeout_seconds;
    let started = record.import_started_at?;
    let elapsed = time::now().saturating_sub(started);
    (timeout > 0 && elapsed > timeout).then(|| {
        ImageState::Failed(format!(
            "the {} import of image {name:?} ({}) in {label} did not finish within the import timeout \
             of {timeout} s (started {elapsed} s ago, status {status}); check that Glance can fetch the \
             image URL, then delete the image in Glance to try again",
            record.import_method.as_deref().unwrap_or("image"),
            record.id
        ))
    })
}

/// Why the last import of this image failed, if it did (Glance puts the image back to `queued`).
fn failed_import(session: &mut Session, id: &str, image: &Value) -> Result<Option<String>, Error> {
    let tasks = glance::tasks(session, id)?;
    if let Some(task) = tasks.last() {
        if task.get("status").and_then(Value::as_str) == Some("failure") {
            let message = str_field(task, "message");
            return Ok(Some(if message.is_empty() {
                "the import task failed".to_string()
            } else {
                message
            }));
        }
    }
    let failed_stores = str_field(image, "os_glance_failed_import");
    Ok((!failed_stores.is_empty())
        .then(|| format!("Glance could not import into the store(s) {failed_stores}")))
}

/// Starts the import with the configured (or offered) method.
fn start_import(
    config: &Config,
    session: &mut Session,
    image: &NodeImage,
    id: &str,
) -> Result<&'static str, Error> {
    let method = match config.import.method {
        ImportMethod::WebDownload => "web-download",
        ImportMethod::GlanceDirect => "glance-direct",
        ImportMethod::Auto => {
            let offered = glance::import_methods(session)?;
            if offered.iter().any(|m| m == "web-download") {
                "web-download"
            } else if offered.iter().any(|m| m == "glance-direct") {
                "glance-direct"
            } else {
                return Err(Error::Failed(format!(
                    "{} offers neither web-download nor glance-direct import (it offers: {})",
                    session.glance_label(),
                    offered.join(", ")
                )));
            }
        }
    };
    if image.url.trim().is_empty() {
        return Err(Error::InvalidInput(format!(
            "node image {:?}: url is empty",
            image.name
        )));
    }
    if method == "web-download" {
        glance::start_import(session, id, &json!({ "name": "web-download", "uri": image.url }))?;
    } else {
        let data = download(image)?;
        glance::stage(session, id, data)?;
        glance::start_import(session, id, &json!({ "name": "glance-direct" }))?;
    }
    log(
        Level::Info,
        "started image import",
        &[
            ("image", &image.name),
            ("id", id),
            ("method", method),
            ("url", &image.url),
        ],
    );
    Ok(method)
}

/// Fetches the image for a glance-direct upload and checks its checksum when the release gives one.
fn download(image: &NodeImage) -> Result<Vec<u8>, Error> {
    let label = format!("the image source of {:?}", image.name);
    let reply = net::send(&label, "GET", &image.url, &[], None).map_err(|e| match e {
        Error::Denied(why) => Error::Denied(format!(
            "{why} (glance-direct uploads the image through the plugin, so the image URL's host must \
             be granted too)"
        )),
        other => other,
    })?;
    if reply.status != 200 {
        return Err(Error::Failed(format!(
            "{label}: GET {}: HTTP {}: {}",
            image.url,
            reply.status,
            reply.snippet()
        )));
    }
    if let Some(checksum) = &image.checksum {
        let (algo, want) = checksum.split_once(':').unwrap_or(("sha256", checksum));
        if let Some(got) = digest(algo, &reply.body) {
            if !got.eq_ignore_ascii_case(want) {
                return Err(Error::Failed(format!(
                    "{label}: {} has {algo} {got}, the release says {want}",
                    image.url
                )));
            }
        }
    }
    Ok(reply.body)
}

fn digest(algo: &str, data: &[u8]) -> Option<String> {
    use sha2::Digest;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match algo.to_ascii_lowercase().as_str() {
        "sha256" => Some(hex(&sha2::Sha256::digest(data))),
        "sha512" => Some(hex(&sha2::Sha512::digest(data))),
        "md5" => Some(hex(&md5::Md5::digest(data))),
        _ => None,
    }
}

/// Compares the release's checksum with what Glance computed, when the algorithms allow it.
fn checksum_mismatch(image: &NodeImage, glance: &Value) -> Option<String> {
    let checksum = image.checksum.as_ref()?;
    let (algo, want) = checksum.split_once(':')?;
    let got = if algo.eq_ignore_ascii_case("md5") {
        str_field(glance, "checksum")
    } else if str_field(glance, "os_hash_algo").eq_ignore_ascii_case(algo) {
        str_field(glance, "os_hash_value")
    } else {
        return None;
    };
    (!got.is_empty() && !got.eq_ignore_ascii_case(want))
        .then(|| format!("Glance computed {algo} {got}, the release says {want}"))
}

/// The hash of an ORC image, checked once it is active: with Glance's own hash when Glance uses the
/// same algorithm (or md5, which Glance always computes), else by reading the image back through
/// `http` (bounded by the host's body limit). `Some(why)` when it does not match.
fn verify_orc_hash(
    session: &mut Session,
    image: &NodeImage,
    glance: &Value,
) -> Result<Option<String>, Error> {
    let Some(checksum) = &image.checksum else {
        return Ok(None);
    };
    let Some((algo, want)) = checksum.split_once(':') else {
        return Ok(None);
    };
    let from_glance = if algo.eq_ignore_ascii_case("md5") {
        Some(str_field(glance, "checksum"))
    } else if str_field(glance, "os_hash_algo").eq_ignore_ascii_case(algo) {
        Some(str_field(glance, "os_hash_value"))
    } else {
        None
    };
    let got = match from_glance.filter(|v| !v.is_empty()) {
        Some(got) => got,
        None => {
            let id = str_field(glance, "id");
            let label = session.glance_label();
            let reply = session
                .glance_download(&format!("/v2/images/{}/file", net::encode(&id)))
                .map_err(|e| match e {
                    Error::Failed(why) => Error::Failed(format!(
                        "cannot verify the {algo} hash of the ORC image: Glance hashes with {} and \
                         reading the image back failed: {why}; raise the plugin's HTTP body limit or set \
                         Glance's hashing_algorithm to {algo}",
                        str_field(glance, "os_hash_algo")
                    )),
                    other => other,
                })?;
            if reply.status != 200 {
                return Err(net::unexpected(&label, &format!("read image {id}"), &reply));
            }
            match digest(algo, &reply.body) {
                Some(got) => got,
                None => return Ok(Some(format!("hash algorithm {algo:?} is not supported"))),
            }
        }
    };
    Ok((!got.eq_ignore_ascii_case(want))
        .then(|| format!("the image has {algo} {got}, the ORC Image says {want}")))
}

pub fn cleanup(config: &Config, release: &ReleaseInfo, images: &[NodeImage]) -> Result<(), Error> {
    let mut session = None;
    for image in images {
        let key = image_key(&image.name);
        let Some(mut record) = store::get::<ImageRecord>(&key) else {
            continue;
        };
        record.releases.remove(&release.tag);
        if !record.releases.is_empty() {
            store::set(&key, &record)?;
            continue;
        }
        if config.cleanup.enabled && record.created {
            if session.is_none() {
                session = Some(Session::open(config)?);
            }
            let s = session.as_mut().expect("opened above");
            glance::delete(s, &record.id)?;
            log(
                Level::Info,
                "deleted an image no release uses any more",
                &[("image", &image.name), ("id", &record.id)],
            );
            store::delete(&key);
        } else {
            // Kept in Glance (cleanup disabled, or not created by this plugin); the record stays so a
            // later release reuses it.
            store::set(&key, &record)?;
        }
    }
    store::delete(&release_key(&release.tag));
    store::delete(&orc_key(&release.tag));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_image(properties: &[(&str, &str)]) -> NodeImage {
        NodeImage {
            name: "ubuntu-capi-image-v1.30.9".into(),
            url: "http://127.0.0.1/x.qcow2".into(),
            checksum: None,
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn create_options_follow_upstream_create_opts() {
        let o = create_options(&node_image(&[
            ("visibility", "\"shared\""),
            ("tags", "[\"a\",\"b\"]"),
            ("min_disk", "20"),
            (
                "properties",
                "{\"os_distro\":\"ubuntu\",\"hw_rng_model\":\"virtio\"}",
            ),
            ("architecture", "\"x86_64\""),
        ]))
        .unwrap();
        assert_eq!(o.tags, vec!["a", "b"]);
        assert_eq!(o.id, None);
        let body = Value::Object(o.body);
        assert_eq!(body["min_disk"], 20);
        assert_eq!(body["os_distro"], "ubuntu");
        assert_eq!(body["architecture"], "x86_64");
        assert_eq!(body["disk_format"], "qcow2");
        let Err(Error::InvalidInput(e)) = create_options(&node_image(&[("visibility", "\"everyone\"")]))
        else {
            panic!()
        };
        assert!(
            e.contains("ubuntu-capi-image-v1.30.9") && e.contains("everyone"),
            "{e}"
        );
        let Err(Error::InvalidInput(e)) = create_options(&node_image(&[("tags", "not json")])) else {
            panic!()
        };
        assert!(e.contains("\"tags\""), "{e}");
    }

    #[test]
    fn checksums_are_compared_when_glance_has_the_algorithm() {
        let mut image = node_image(&[]);
        image.checksum = Some("sha512:abc".into());
        let glance = json!({"os_hash_algo": "sha512", "os_hash_value": "def", "checksum": "123"});
        assert!(checksum_mismatch(&image, &glance).unwrap().contains("def"));
        image.checksum = Some("sha256:abc".into());
        assert_eq!(checksum_mismatch(&image, &glance), None);
        image.checksum = Some("md5:123".into());
        assert_eq!(checksum_mismatch(&image, &glance), None);
        assert_eq!(
            digest("sha256", b"").unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
