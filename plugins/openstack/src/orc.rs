//! Node images that come from ORC `Image` objects (`openstack.k-orc.cloud/v1alpha1`).
//!
//! Current cluster stacks render an ORC `Image` in their cluster-class chart instead of shipping
//! `node-images.yaml`. The host hands each one to `reconcile-node-images` as a node image whose
//! property `openstack.k-orc.cloud/Image` holds the whole object (JSON). This module reads that
//! object: the Glance create body from `spec.resource` (the way ORC's image controller maps it),
//! whether the image is only looked up (`managementPolicy: unmanaged`, `spec.import`), and the
//! object's name, which `OpenStackMachineTemplate`s reference with `image.imageRef.name`.

use serde_json::{json, Map, Value};

use crate::clusterstack::provider::types::{Error, NodeImage};

/// The node-image property that carries the ORC `Image` object.
pub const PROPERTY: &str = "openstack.k-orc.cloud/Image";

/// What an ORC `Image` asks for.
#[derive(Debug, Clone)]
pub struct OrcImage {
    /// `metadata.name` of the `Image` object (what `imageRef.name` refers to).
    pub object: String,
    /// The Glance create body (name, formats, properties, visibility, tags, ...), for a managed image.
    pub body: Map<String, Value>,
    /// An existing Glance image to use instead of creating one: its id (`spec.import.id`).
    pub import_id: Option<String>,
    /// Tags to look the image up by (`spec.import.filter.tags`, or `spec.resource.tags`).
    pub tags: Vec<String>,
    /// Look up only, never create (`managementPolicy: unmanaged` or `spec.import`).
    pub lookup_only: bool,
}

/// The ORC `Image` a node image was made from, if it was.
pub fn from_node_image(image: &NodeImage) -> Result<Option<OrcImage>, Error> {
    let Some((_, text)) = image.properties.iter().find(|(k, _)| k == PROPERTY) else {
        return Ok(None);
    };
    let object: Value = serde_json::from_str(text).map_err(|e| {
        Error::InvalidInput(format!(
            "node image {:?}: property {PROPERTY} is not a JSON object ({e})",
            image.name
        ))
    })?;
    parse(&object).map(Some)
}

/// Reads an ORC `Image` object. Errors name the object and the field.
pub fn parse(object: &Value) -> Result<OrcImage, Error> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let bad =
        |field: &str, why: String| Error::InvalidInput(format!("ORC Image {name:?}: spec.{field}: {why}"));
    if name.is_empty() {
        return Err(Error::InvalidInput(
            "an ORC Image has no metadata.name".to_string(),
        ));
    }
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let unmanaged = spec.get("managementPolicy").and_then(Value::as_str) == Some("unmanaged");
    let import = spec.get("import");
    let resource = spec.get("resource").cloned().unwrap_or(Value::Null);
    let import_id = import
        .and_then(|i| i.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let lookup_only = unmanaged || import.is_some();
    if !lookup_only && !resource.is_object() {
        return Err(bad(
            "resource",
            "a managed Image needs spec.resource (or spec.import to use an existing image)".to_string(),
        ));
    }

    let glance_name = import
        .and_then(|i| i.pointer("/filter/name"))
        .or_else(|| resource.get("name"))
        .and_then(Value::as_str)
        .unwrap_or(&name)
        .to_string();
    let tags_of = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()
    };
    let tags = match import {
        Some(i) => tags_of(i.pointer("/filter/tags")),
        None => tags_of(resource.get("tags")),
    };

    let mut body = Map::new();
    body.insert("name".into(), json!(glance_name));
    let content = resource.get("content");
    if let Some(content) = content {
        let disk = content
            .get("diskFormat")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if disk.is_empty() {
            return Err(bad("resource.content.diskFormat", "is required".to_string()));
        }
        body.insert("disk_format".into(), json!(disk));
        let container = content
            .get("containerFormat")
            .and_then(Value::as_str)
            .unwrap_or("bare");
        body.insert("container_format".into(), json!(container));
        if content.pointer("/download/decompress").is_some() {
            return Err(bad(
                "resource.content.download.decompress",
                "compressed downloads are not supported without ORC (Glance imports the file as it is); \
                 point the url at the uncompressed image or install ORC and set config.orc: external"
                    .to_string(),
            ));
        }
    } else if !lookup_only {
        return Err(bad(
            "resource.content",
            "is required to create the image (download url and diskFormat)".to_string(),
        ));
    }
    for key in ["visibility", "protected"] {
        if let Some(v) = resource.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
    if !tags.is_empty() && import.is_none() {
        body.insert("tags".into(), json!(tags));
    }
    if let Some(properties) = resource.get("properties") {
        glance_properties(properties, &mut body);
    }
    Ok(OrcImage {
        object: name,
        body,
        import_id,
        tags,
        lookup_only,
    })
}

/// `spec.resource.properties` as the Glance image properties ORC sets.
fn glance_properties(properties: &Value, body: &mut Map<String, Value>) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut set = |key: &str, value: Option<&Value>, as_string: bool| {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            let v = if as_string { json!(text(v)) } else { v.clone() };
            body.insert(key.to_string(), v);
        }
    };
    set("min_disk", properties.get("minDiskGB"), false);
    set("min_ram", properties.get("minMemoryMB"), false);
    set("architecture", properties.get("architecture"), true);
    set("hypervisor_type", properties.get("hypervisorType"), true);
    if let Some(os) = properties.get("operatingSystem") {
        set("os_distro", os.get("distro"), true);
        set("os_version", os.get("version"), true);
    }
    if let Some(hw) = properties.get("hardware") {
        for (field, key) in [
            ("cpuSockets", "hw_cpu_sockets"),
            ("cpuCores", "hw_cpu_cores"),
            ("cpuThreads", "hw_cpu_threads"),
            ("cpuPolicy", "hw_cpu_policy"),
            ("cpuThreadPolicy", "hw_cpu_thread_policy"),
            ("cdromBus", "hw_cdrom_bus"),
            ("diskBus", "hw_disk_bus"),
            ("scsiModel", "hw_scsi_model"),
            ("vifModel", "hw_vif_model"),
            ("rngModel", "hw_rng_model"),
        ] {
            set(key, hw.get(field), true);
        }
        if let Some(agent) = hw.get("qemuGuestAgent").and_then(Value::as_bool) {
            body.insert(
                "hw_qemu_guest_agent".into(),
                json!(if agent { "yes" } else { "no" }),
            );
        }
    }
}

/// Whether a rendered object is an ORC `Image`.
pub fn is_image(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Image")
        && object
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("openstack.k-orc.cloud/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scs_image() -> Value {
        json!({"apiVersion": "openstack.k-orc.cloud/v1alpha1", "kind": "Image",
               "metadata": {"name": "ubuntu-capi-image-v1.32.5"},
               "spec": {"cloudCredentialsRef": {"cloudName": "openstack", "secretName": "openstack"},
                        "managementPolicy": "managed",
                        "resource": {"content": {"diskFormat": "qcow2",
                                                 "download": {"hash": {"algorithm": "sha256", "value": "8bfa"},
                                                              "url": "https://example/x.qcow2"}},
                                     "properties": {"architecture": "x86_64",
                                                    "hardware": {"diskBus": "scsi", "qemuGuestAgent": true,
                                                                 "rngModel": "virtio", "scsiModel": "virtio-scsi",
                                                                 "vifModel": "virtio"},
                                                    "minDiskGB": 20, "minMemoryMB": 2048,
                                                    "operatingSystem": {"distro": "ubuntu", "version": "22.04"}}}}})
    }

    #[test]
    fn the_scs_image_maps_to_the_glance_properties_orc_sets() {
        let image = parse(&scs_image()).unwrap();
        assert_eq!(image.object, "ubuntu-capi-image-v1.32.5");
        assert!(!image.lookup_only);
        assert_eq!(
            Value::Object(image.body),
            json!({"name": "ubuntu-capi-image-v1.32.5", "disk_format": "qcow2", "container_format": "bare",
                   "min_disk": 20, "min_ram": 2048, "architecture": "x86_64",
                   "os_distro": "ubuntu", "os_version": "22.04",
                   "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi", "hw_vif_model": "virtio",
                   "hw_rng_model": "virtio", "hw_qemu_guest_agent": "yes"})
        );
    }

    #[test]
    fn problems_name_the_object_and_field() {
        let mut object = scs_image();
        object["spec"]["resource"]["content"]["download"]["decompress"] = json!("xz");
        let Err(Error::InvalidInput(why)) = parse(&object) else {
            panic!()
        };
        assert!(
            why.contains("ubuntu-capi-image-v1.32.5") && why.contains("decompress"),
            "{why}"
        );
        let unmanaged = json!({"metadata": {"name": "x"},
                               "spec": {"managementPolicy": "unmanaged", "import": {"filter": {"name": "y"}}}});
        let image = parse(&unmanaged).unwrap();
        assert!(image.lookup_only);
        assert_eq!(image.body["name"], "y");
    }
}
