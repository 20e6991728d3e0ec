//! `patch-cluster-class`: writes the Glance image ids (or names) of the release's node images into
//! the rendered objects. Objects that are not changed are returned exactly as they came in; changed
//! ones keep their key order. ORC `Image` objects whose image this plugin imported are left out (the
//! plugin owns that Glance image; an ORC installed later must not manage, or delete, it), and
//! `image.imageRef` naming them is replaced like `image.filter.name`.
//!
//! CAPO refuses any change of an `OpenStackMachineTemplate`'s spec ("Please create a new resource
//! instead"), so a patched template gets a new name: its rendered name and a hash of the patched spec
//! (`<name>-<8 hex>`), and the ClusterClass's references follow. The same content always gets the same
//! name; new content (an image created again in Glance, a new id) a new template, which the ClusterClass
//! then points at while the old one is pruned.

use serde_json::Value;

use crate::clusterstack::provider::types::{Error, ReleaseInfo, Retry};
use crate::config::{ImageField, Patch, PatchMode};
use crate::images::{orc_key, release_key, ReleaseImages, ReleaseOrcImages};
use crate::{orc, store};

pub fn patch(config: &Patch, release: &ReleaseInfo, objects: Vec<String>) -> Result<Vec<String>, Error> {
    let orc_images: ReleaseOrcImages = store::get(&orc_key(&release.tag)).unwrap_or_default();
    let objects = without_imported_orc_images(objects, &orc_images);
    if config.mode == PatchMode::None {
        return Ok(objects);
    }
    let images: ReleaseImages = store::get(&release_key(&release.tag)).ok_or_else(|| {
        Error::NotReady(Retry {
            retry_after_seconds: 30,
            message: format!(
                "the node images of release {} have not been reconciled yet, so their Glance ids are unknown",
                release.tag
            ),
        })
    })?;
    let value_of = |name: &str| -> String {
        match config.field {
            ImageField::Id => images[name].clone(),
            ImageField::Name => name.to_string(),
        }
    };
    let value_of_orc = |object: &str| -> Option<Value> {
        let record = orc_images.get(object)?;
        Some(match config.field {
            ImageField::Id => serde_json::json!({ "id": record.id }),
            ImageField::Name => serde_json::json!({ "filter": { "name": record.name } }),
        })
    };
    if config.mode == PatchMode::Variables {
        for (variable, image) in &config.variables {
            if !images.contains_key(image) {
                return Err(Error::InvalidInput(format!(
                    "spec.config.patch.variables.{variable} names node image {image:?}, which release {} \
                     does not have (it has: {})",
                    release.tag,
                    images.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    let mut found_variables = std::collections::BTreeSet::new();
    let mut parsed = Vec::with_capacity(objects.len());
    let mut renamed = std::collections::BTreeMap::new();
    for (index, text) in objects.into_iter().enumerate() {
        let mut object: Value = serde_json::from_str(&text)
            .map_err(|e| Error::InvalidInput(format!("object {index} is not JSON: {e}")))?;
        let changed = match config.mode {
            PatchMode::MachineTemplates => {
                let changed = patch_machine_template(&mut object, &images, &value_of, &value_of_orc);
                if changed {
                    if let Some((old, new)) = rename_by_content(&mut object) {
                        renamed.insert(old, new);
                    }
                }
                changed
            }
            PatchMode::Variables => patch_variables(&mut object, config, &value_of, &mut found_variables),
            PatchMode::None => false,
        };
        parsed.push((object, text, changed));
    }
    let mut out = Vec::with_capacity(parsed.len());
    for (mut object, text, mut changed) in parsed {
        if object.get("kind").and_then(Value::as_str) == Some("ClusterClass") {
            changed |= follow_renames(&mut object, &renamed);
        }
        out.push(if changed {
            serde_json::to_string(&object).unwrap_or(text)
        } else {
            text
        });
    }
    if config.mode == PatchMode::Variables {
        let missing: Vec<&String> = config
            .variables
            .keys()
            .filter(|v| !found_variables.contains(*v))
            .collect();
        if !missing.is_empty() {
            return Err(Error::InvalidInput(format!(
                "spec.config.patch.variables: the ClusterClass of release {} has no variable {}",
                release.tag,
                missing
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(out)
}

/// `OpenStackMachineTemplate`: `spec.template.spec.image.filter.name` (CAPO v1beta1) or
/// `spec.template.spec.image` as a name (v1alpha6/7) naming a node image of the release.
fn patch_machine_template(
    object: &mut Value,
    images: &ReleaseImages,
    value_of: &dyn Fn(&str) -> String,
    value_of_orc: &dyn Fn(&str) -> Option<Value>,
) -> bool {
    if object.get("kind").and_then(Value::as_str) != Some("OpenStackMachineTemplate") {
        return false;
    }
    let Some(spec) = object
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    else {
        return false;
    };
    match spec.get("image").cloned() {
        Some(Value::Object(image)) if image.contains_key("imageRef") => {
            // CAPO v1beta1/v1beta2: a reference to an ORC Image object in the same namespace.
            let Some(value) = image
                .get("imageRef")
                .and_then(|r| r.get("name"))
                .and_then(Value::as_str)
                .and_then(value_of_orc)
            else {
                return false;
            };
            spec.insert("image".to_string(), value);
            true
        }
        Some(Value::Object(image)) => {
            let Some(name) = image.pointer_filter_name() else {
                return false;
            };
            if !images.contains_key(&name) {
                return false;
            }
            let value = value_of(&name);
            if value == name {
                return false;
            }
            spec.insert("image".to_string(), serde_json::json!({ "id": value }));
            true
        }
        Some(Value::String(name)) if images.contains_key(&name) => {
            let value = value_of(&name);
            if value == name {
                return false;
            }
            spec.remove("image");
            spec.insert("imageUUID".to_string(), Value::String(value));
            true
        }
        _ => false,
    }
}

/// Gives a patched template the name `<name>-<first 8 hex of the SHA-256 of its spec>`; the old and new
/// names.
fn rename_by_content(template: &mut Value) -> Option<(String, String)> {
    use sha2::Digest as _;
    let spec = serde_json::to_string(template.pointer("/spec/template/spec")?).ok()?;
    let hash = sha2::Sha256::digest(spec.as_bytes());
    let suffix: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let name = template.pointer("/metadata/name")?.as_str()?.to_owned();
    // Names are DNS subdomains: at most 253 characters.
    let stem: String = name.chars().take(253 - 9).collect();
    let new = format!("{}-{suffix}", stem.trim_end_matches(['-', '.']));
    template["metadata"]["name"] = Value::String(new.clone());
    Some((name, new))
}

/// Points every `OpenStackMachineTemplate` reference of a ClusterClass (`ref` in v1beta1, `templateRef` in
/// v1beta2, wherever they are) at the renamed templates; whether anything changed.
fn follow_renames(value: &mut Value, renamed: &std::collections::BTreeMap<String, String>) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            if map.get("kind").and_then(Value::as_str) == Some("OpenStackMachineTemplate") {
                if let Some(new) = map
                    .get("name")
                    .and_then(Value::as_str)
                    .and_then(|n| renamed.get(n))
                {
                    map.insert("name".to_string(), Value::String(new.clone()));
                    changed = true;
                }
            }
            for child in map.values_mut() {
                changed |= follow_renames(child, renamed);
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| follow_renames(item, renamed) | changed),
        _ => false,
    }
}

/// The objects without the ORC `Image`s whose image this plugin imported (others stay as they are).
fn without_imported_orc_images(objects: Vec<String>, imported: &ReleaseOrcImages) -> Vec<String> {
    if imported.is_empty() {
        return objects;
    }
    objects
        .into_iter()
        .filter(|text| {
            let Ok(object) = serde_json::from_str::<Value>(text) else {
                return true;
            };
            let name = object.pointer("/metadata/name").and_then(Value::as_str);
            !(orc::is_image(&object) && name.is_some_and(|n| imported.contains_key(n)))
        })
        .collect()
}

trait FilterName {
    fn pointer_filter_name(&self) -> Option<String>;
}

impl FilterName for serde_json::Map<String, Value> {
    fn pointer_filter_name(&self) -> Option<String> {
        self.get("filter")?.get("name")?.as_str().map(str::to_string)
    }
}

/// `ClusterClass`: the default of each configured variable.
fn patch_variables(
    object: &mut Value,
    config: &Patch,
    value_of: &dyn Fn(&str) -> String,
    found: &mut std::collections::BTreeSet<String>,
) -> bool {
    if object.get("kind").and_then(Value::as_str) != Some("ClusterClass") {
        return false;
    }
    let Some(variables) = object
        .pointer_mut("/spec/variables")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let mut changed = false;
    for variable in variables {
        let Some(name) = variable.get("name").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        let Some(image) = config.variables.get(&name) else {
            continue;
        };
        found.insert(name);
        let value = Value::String(value_of(image));
        let Some(schema) = variable
            .as_object_mut()
            .map(|v| v.entry("schema").or_insert_with(|| serde_json::json!({})))
            .and_then(Value::as_object_mut)
            .map(|s| {
                s.entry("openAPIV3Schema")
                    .or_insert_with(|| serde_json::json!({"type": "string"}))
            })
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if schema.get("default") != Some(&value) {
            schema.insert("default".to_string(), value);
            changed = true;
        }
    }
    changed
}
