//! `misbehaving`: a provider plugin that misbehaves on request, for the host's tests.
//!
//! `validate-config(b)` performs behaviour `b` at once and stores it (state key `behaviour`), so every
//! other export performs it too. Behaviours: `loop`, `alloc`, `trap`, `huge-output`, `forbidden-http`,
//! `guest-error`, `print`, `count`, `log-flood`, `ok`. `log-flood` writes big error lines into the host log
//! until its fuel or deadline ends it. `count` fails with how many calls this instance has seen
//! (a static in linear memory): always 1 when every call gets a fresh, reset instance. `later:<b>` stores `b` without performing it, so the plugin loads and
//! only the later calls misbehave (e.g. `later:trap` traps in `patch-cluster-class`).

wit_bindgen::generate!({
    path: "../../wit",
    world: "provider",
});

use clusterstack::provider::types::{
    Capability, ClusterInfo, Error, ImageState, ImageStatus, NodeImage, PluginInfo, ReleaseInfo,
};
use clusterstack::provider::{http, log, state};
use exports::clusterstack::provider::plugin::Guest;

/// Size of the `huge-output` result: far over the host's default result cap (4 MiB).
const HUGE: usize = 24 << 20;

/// Size of one `log-flood` line: far over the host's cap on one line (4 KiB).
const FLOOD_LINE: usize = 64 << 10;

struct Misbehaving;

/// Does what `behaviour` asks; `Ok(None)` means "behave normally".
fn perform(behaviour: &str) -> Result<Option<String>, Error> {
    match behaviour {
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![0xAB; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "trap" => panic!("misbehaving plugin: trap requested"),
        "huge-output" => Ok(Some("x".repeat(HUGE))),
        "forbidden-http" => {
            let request = http::Request {
                method: "GET".to_string(),
                url: "http://forbidden.invalid/".to_string(),
                headers: Vec::new(),
                body: None,
                timeout_ms: Some(1000),
            };
            match http::send(&request) {
                Err(http::HttpError::Denied(why)) => Err(Error::Denied(why)),
                Err(other) => Err(Error::Failed(format!("expected a denial, got {other:?}"))),
                Ok(response) => Err(Error::Failed(format!(
                    "expected a denial, got HTTP {}",
                    response.status
                ))),
            }
        }
        "guest-error" => Err(Error::Failed(
            "misbehaving plugin: guest error requested".to_string(),
        )),
        "print" => {
            println!("misbehaving plugin: hello on stdout");
            eprintln!("misbehaving plugin: hello on stderr");
            Ok(None)
        }
        "count" => {
            static SEEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let seen = SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            Err(Error::Failed(format!("calls seen by this instance: {seen}")))
        }
        "log-flood" => {
            let line = "log-flood ".repeat(FLOOD_LINE / 10);
            let fields = vec![("flood".to_string(), "x".repeat(FLOOD_LINE))];
            loop {
                log::log(log::Level::Error, std::hint::black_box(&line), &fields);
            }
        }
        "ok" | "" => Ok(None),
        other => Err(Error::InvalidInput(format!(
            "unknown behaviour {other:?}; expected one of loop, alloc, trap, huge-output, forbidden-http, \
             guest-error, print, count, log-flood, ok"
        ))),
    }
}

/// The behaviour stored by the last `validate-config`.
fn stored() -> Result<Option<String>, Error> {
    perform(&state::get("behaviour").unwrap_or_default())
}

/// The behaviour named by a config: a JSON string (`"trap"`), an object `{"behaviour": "trap"}` (what a
/// ProviderPlugin's `spec.config` holds), or the bare word.
fn behaviour_of(config: &str) -> String {
    let config = config.trim();
    if let Some(rest) = config.strip_prefix('{') {
        if let Some(at) = rest.find("\"behaviour\"") {
            let after = &rest[at + "\"behaviour\"".len()..];
            let value = after.trim_start().trim_start_matches(':').trim_start();
            if let Some(value) = value.strip_prefix('"') {
                return value.split('"').next().unwrap_or_default().to_string();
            }
        }
        return String::new();
    }
    config.trim_matches('"').to_string()
}

impl Guest for Misbehaving {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "misbehaving".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            provider: "test".to_string(),
            capabilities: vec![Capability::Log, Capability::Http, Capability::State],
        }
    }

    fn validate_config(config: String) -> Result<(), Error> {
        let behaviour = behaviour_of(&config);
        if let Some(later) = behaviour.strip_prefix("later:") {
            return state::set("behaviour", later)
                .map_err(|e| Error::Failed(format!("cannot store the behaviour: {e:?}")));
        }
        state::set("behaviour", &behaviour)
            .map_err(|e| Error::Failed(format!("cannot store the behaviour: {e:?}")))?;
        match perform(&behaviour)? {
            Some(huge) => Err(Error::Failed(huge)),
            None => Ok(()),
        }
    }

    fn reconcile_node_images(
        _release: ReleaseInfo,
        images: Vec<NodeImage>,
    ) -> Result<Vec<ImageStatus>, Error> {
        let huge = stored()?;
        Ok(images
            .into_iter()
            .map(|image| ImageStatus {
                state: ImageState::Ready(huge.clone().unwrap_or_else(|| image.name.clone())),
                name: image.name,
            })
            .collect())
    }

    fn cleanup_node_images(_release: ReleaseInfo, _images: Vec<NodeImage>) -> Result<(), Error> {
        stored().map(|_| ())
    }

    fn patch_cluster_class(_release: ReleaseInfo, objects: Vec<String>) -> Result<Vec<String>, Error> {
        Ok(match stored()? {
            Some(huge) => vec![huge],
            None => objects,
        })
    }

    fn addon_values(_cluster: ClusterInfo, values: String) -> Result<String, Error> {
        Ok(stored()?.unwrap_or(values))
    }
}

export!(Misbehaving);
