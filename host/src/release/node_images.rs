//! `node-images.yaml` into the plugin contract's `node-image` list.
//!
//! Upstream has one schema per provider and only the OpenStack operator reads the file (cso-behaviour.md
//! §3.2.7). The host reads the known schemas and hands every provider the same typed list:
//!
//! - `openStackNodeImages: [{url, createOpts: {name, disk_format, container_format, ...}}]` (CSPO): the
//!   remaining `createOpts` keys (`visibility`, `tags`, `min_disk`, `properties`, ...) become `properties`
//!   as JSON texts, so the plugin gets the whole Glance create body back.
//! - `dockerImages: [name | {name}]` (the docker provider): name only.
//! - `nodeImages: [{name, url, checksum, diskFormat, containerFormat, properties}]`: the contract's own
//!   shape, for new providers.
//!
//! Current OpenStack stacks ship no `node-images.yaml`: their cluster-class chart renders ORC
//! (`openstack.k-orc.cloud`) `Image` objects. [`orc_node_images`] turns each into a node image too
//! (Glance name, download URL, hash, formats) and passes the whole object in the property
//! [`ORC_IMAGE_PROPERTY`], so the plugin can import it where no ORC controller runs.

use serde_json::Value;

use super::assets::NODE_IMAGES_FILE;
use super::error::ReleaseError;
use crate::plugin::types::NodeImage;

/// The node-image property that carries an ORC `Image` object (JSON) the node image was made from.
pub const ORC_IMAGE_PROPERTY: &str = "openstack.k-orc.cloud/Image";

/// The node images of the ORC `Image` objects among the rendered cluster-class objects. The Glance
/// name is `spec.resource.name`, else `spec.import.filter.name`, else `metadata.name` (as ORC names
/// it); the checksum is `spec.resource.content.download.hash` as `<algorithm>:<value>`.
pub fn orc_node_images(objects: &[Value]) -> Vec<NodeImage> {
    objects
        .iter()
        .filter(|o| {
            o.get("kind").and_then(Value::as_str) == Some("Image")
                && o.get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.starts_with("openstack.k-orc.cloud/"))
        })
        .map(|object| {
            let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
            let name = text("/spec/resource/name")
                .or_else(|| text("/spec/import/filter/name"))
                .or_else(|| text("/metadata/name"))
                .unwrap_or_default();
            let content = object.pointer("/spec/resource/content");
            let checksum = match (
                text("/spec/resource/content/download/hash/algorithm"),
                text("/spec/resource/content/download/hash/value"),
            ) {
                (Some(algorithm), Some(value)) => Some(format!("{algorithm}:{value}")),
                _ => None,
            };
            NodeImage {
                name,
                url: text("/spec/resource/content/download/url").unwrap_or_default(),
                checksum,
                disk_format: text("/spec/resource/content/diskFormat").unwrap_or_default(),
                container_format: text("/spec/resource/content/containerFormat")
                    .or_else(|| content.map(|_| "bare".to_owned()))
                    .unwrap_or_default(),
                properties: vec![(ORC_IMAGE_PROPERTY.to_owned(), object.to_string())],
            }
        })
        .collect()
}

/// The node images of release `tag` from the text of its `node-images.yaml`.
pub fn parse_node_images(tag: &str, text: &str) -> Result<Vec<NodeImage>, ReleaseError> {
    let invalid = |reason: String| ReleaseError::Config {
        tag: tag.to_owned(),
        file: NODE_IMAGES_FILE,
        reason,
    };
    let doc: Value = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let Some(map) = doc.as_object() else {
        return Err(invalid(format!(
            "expected a mapping with `openStackNodeImages`, `dockerImages` or `nodeImages`, found {}",
            kind_of(&doc)
        )));
    };
    let mut images = Vec::new();
    let mut known = false;
    if let Some(list) = map.get("openStackNodeImages") {
        known = true;
        for (i, item) in items(list, "openStackNodeImages")
            .map_err(&invalid)?
            .iter()
            .enumerate()
        {
            images
                .push(openstack_image(item).map_err(|e| invalid(format!("openStackNodeImages[{i}]: {e}")))?);
        }
    }
    if let Some(list) = map.get("dockerImages") {
        known = true;
        for (i, item) in items(list, "dockerImages").map_err(&invalid)?.iter().enumerate() {
            let name = match item {
                Value::String(s) => s.clone(),
                Value::Object(o) => field_str(o, "name")
                    .map_err(|e| invalid(format!("dockerImages[{i}]: {e}")))?
                    .unwrap_or_default(),
                other => {
                    return Err(invalid(format!(
                        "dockerImages[{i}]: expected an image name, found {}",
                        kind_of(other)
                    )))
                }
            };
            if name.is_empty() {
                return Err(invalid(format!("dockerImages[{i}]: expected an image name")));
            }
            images.push(NodeImage {
                name,
                url: String::new(),
                checksum: None,
                disk_format: String::new(),
                container_format: "docker".into(),
                properties: Vec::new(),
            });
        }
    }
    if let Some(list) = map.get("nodeImages") {
        known = true;
        for (i, item) in items(list, "nodeImages").map_err(&invalid)?.iter().enumerate() {
            images.push(generic_image(item).map_err(|e| invalid(format!("nodeImages[{i}]: {e}")))?);
        }
    }
    if !known {
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        return Err(invalid(format!(
            "none of `openStackNodeImages`, `dockerImages`, `nodeImages` is present (keys: {})",
            keys.join(", ")
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for image in &images {
        if !seen.insert(image.name.as_str()) {
            return Err(invalid(format!("image `{}` is listed twice", image.name)));
        }
    }
    Ok(images)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn items<'a>(list: &'a Value, key: &str) -> Result<&'a Vec<Value>, String> {
    list.as_array()
        .ok_or_else(|| format!("`{key}` must be a list, found {}", kind_of(list)))
}

fn field_str(o: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{field}` must be a string, found {}", kind_of(other))),
    }
}

fn openstack_image(item: &Value) -> Result<NodeImage, String> {
    let o = item.as_object().ok_or_else(|| {
        format!(
            "expected a mapping with `url` and `createOpts`, found {}",
            kind_of(item)
        )
    })?;
    let url = field_str(o, "url")?.ok_or("`url` is required")?;
    let opts = o
        .get("createOpts")
        .and_then(Value::as_object)
        .ok_or("`createOpts` (a mapping with at least `name`) is required")?;
    let name = field_str(opts, "name")?.ok_or("`createOpts.name` is required")?;
    let disk_format = field_str(opts, "disk_format")?.unwrap_or_default();
    let container_format = field_str(opts, "container_format")?.unwrap_or_default();
    let checksum = o.get("checksum").and_then(Value::as_str).map(str::to_owned);
    let properties = opts
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "name" | "disk_format" | "container_format"))
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    Ok(NodeImage {
        name,
        url,
        checksum,
        disk_format,
        container_format,
        properties,
    })
}

fn generic_image(item: &Value) -> Result<NodeImage, String> {
    let o = item.as_object().ok_or_else(|| {
        format!(
            "expected a mapping with `name` and `url`, found {}",
            kind_of(item)
        )
    })?;
    let properties = match o.get("properties") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(p)) => p.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
        Some(other) => {
            return Err(format!(
                "`properties` must be a mapping, found {}",
                kind_of(other)
            ))
        }
    };
    Ok(NodeImage {
        name: field_str(o, "name")?.ok_or("`name` is required")?,
        url: field_str(o, "url")?.unwrap_or_default(),
        checksum: field_str(o, "checksum")?,
        disk_format: field_str(o, "diskFormat")?.unwrap_or_default(),
        container_format: field_str(o, "containerFormat")?.unwrap_or_default(),
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openstack_schema_keeps_the_whole_create_body() {
        let text = r#"
apiVersion: openstack.infrastructure.clusterstack.x-k8s.io/v1alpha1
openStackNodeImages:
  - url: https://swift.example/ubuntu-2204-kube-v1.27.8.qcow2
    createOpts:
      name: ubuntu-capi-image-v1.27.8
      disk_format: qcow2
      container_format: bare
      visibility: shared
      tags: [capi]
"#;
        let images = parse_node_images("openstack-ferrol-1-27-v4", text).expect("valid");
        assert_eq!(images.len(), 1);
        let i = &images[0];
        assert_eq!(
            (
                i.name.as_str(),
                i.url.as_str(),
                i.disk_format.as_str(),
                i.container_format.as_str()
            ),
            (
                "ubuntu-capi-image-v1.27.8",
                "https://swift.example/ubuntu-2204-kube-v1.27.8.qcow2",
                "qcow2",
                "bare"
            )
        );
        assert_eq!(
            i.properties,
            vec![
                ("tags".to_string(), r#"["capi"]"#.to_string()),
                ("visibility".to_string(), r#""shared""#.to_string())
            ]
        );
    }

    #[test]
    fn orc_images_become_node_images_carrying_the_object() {
        let image = serde_json::json!({
            "apiVersion": "openstack.k-orc.cloud/v1alpha1", "kind": "Image",
            "metadata": {"name": "ubuntu-capi-image-v1.32.5"},
            "spec": {"managementPolicy": "managed",
                     "resource": {"content": {"diskFormat": "qcow2",
                                              "download": {"url": "https://example/u.qcow2",
                                                           "hash": {"algorithm": "sha256", "value": "8bfa"}}}}}});
        let other =
            serde_json::json!({"apiVersion": "image.example/v1", "kind": "Image", "metadata": {"name": "x"}});
        let images = orc_node_images(&[other, image.clone()]);
        assert_eq!(images.len(), 1);
        let i = &images[0];
        assert_eq!(
            (
                i.name.as_str(),
                i.url.as_str(),
                i.checksum.as_deref(),
                i.disk_format.as_str(),
                i.container_format.as_str()
            ),
            (
                "ubuntu-capi-image-v1.32.5",
                "https://example/u.qcow2",
                Some("sha256:8bfa"),
                "qcow2",
                "bare"
            )
        );
        assert_eq!(
            i.properties,
            vec![(ORC_IMAGE_PROPERTY.to_string(), image.to_string())]
        );
    }

    #[test]
    fn docker_and_generic_schemas() {
        let docker = parse_node_images(
            "docker-ferrol-1-32-v1",
            "dockerImages:\n  - kindest/node:v1.32.2\n  - name: other\n",
        )
        .expect("valid");
        let names: Vec<&str> = docker.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["kindest/node:v1.32.2", "other"]);
        let generic = parse_node_images(
            "x-y-1-32-v1",
            "nodeImages:\n  - {name: a, url: 'http://h/a.img', checksum: 'sha256:00', diskFormat: raw, properties: {k: 1}}\n",
        )
        .expect("valid");
        assert_eq!(generic[0].checksum.as_deref(), Some("sha256:00"));
        assert_eq!(generic[0].properties, vec![("k".to_string(), "1".to_string())]);
    }

    #[test]
    fn wrong_content_names_the_item_and_field() {
        let cases = [
            ("- http://a\n- http://b\n", "expected a mapping"),
            ("images: []\n", "none of `openStackNodeImages`"),
            (
                "openStackNodeImages:\n  - url: http://a\n",
                "openStackNodeImages[0]: `createOpts`",
            ),
            (
                "openStackNodeImages:\n  - url: http://a\n    createOpts: {disk_format: raw}\n",
                "`createOpts.name` is required",
            ),
            (
                "nodeImages:\n  - {name: a}\n  - {name: a}\n",
                "image `a` is listed twice",
            ),
            ("nodeImages: {a: 1}\n", "`nodeImages` must be a list"),
        ];
        for (text, expected) in cases {
            let err = parse_node_images("openstack-ferrol-1-27-v4", text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(
                err.contains("openstack-ferrol-1-27-v4") && err.contains("node-images.yaml"),
                "{err}"
            );
        }
    }
}
