//! Rendering with Helm's own Go SDK, loaded at run time from `libhelm_c.so` (the C ABI shipped in the
//! PyPI wheel `helm-python-sdk==0.2.2`, Helm v4.2.3; installed by `scripts/deps/helm.sh`).
//!
//! This is the one module allowed `unsafe`: calling a C ABI through `libloading` cannot be expressed
//! safely. The invariants kept here: every input string is a NUL-terminated `CString` that outlives
//! the call; every library-owned output string is copied and then released exactly once with
//! `helm_free_string`; chart handles are freed after use; the library is loaded once per process and
//! never unloaded (a Go runtime cannot be unloaded).
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{manifests_from_rendered, RenderError, RenderRequest, Renderer};

type FreeString = unsafe extern "C" fn(*mut c_char);
type ChartLoad = unsafe extern "C" fn(*const c_char, *mut u64, *mut *mut c_char) -> i32;
type ChartFree = unsafe extern "C" fn(u64, *mut *mut c_char) -> i32;
type Render =
    unsafe extern "C" fn(u64, *const c_char, *const c_char, *mut *mut c_char, *mut *mut c_char) -> i32;
type ChartCrds = unsafe extern "C" fn(u64, *mut *mut c_char, *mut *mut c_char) -> i32;
type Version = unsafe extern "C" fn() -> *mut c_char;
type PackageRun =
    unsafe extern "C" fn(*const c_char, *const c_char, *mut *mut c_char, *mut *mut c_char) -> i32;

/// Error codes of `helm_c.h` (`helm_error_code`) that deserve their own message.
const PANIC: i32 = -5;

/// The loaded library and its functions.
#[derive(Debug)]
struct HelmLib {
    path: PathBuf,
    free_string: FreeString,
    chart_load: ChartLoad,
    chart_free: ChartFree,
    render: Render,
    chart_crds: ChartCrds,
    package_run: PackageRun,
    sdk_version: String,
    // Keeps the library mapped; never dropped because it lives in a static.
    _lib: libloading::Library,
}

static LOADED: OnceLock<Result<HelmLib, String>> = OnceLock::new();

/// Loads the library at `path` once per process; later calls must name the same file.
fn load(path: &Path) -> Result<&'static HelmLib, RenderError> {
    let loaded = LOADED.get_or_init(|| load_uncached(path));
    match loaded {
        Err(e) => Err(RenderError::HelmLibrary(e.clone())),
        Ok(lib) if lib.path != path => Err(RenderError::HelmLibrary(format!(
            "{} is already loaded; one Go runtime per process, so {} cannot be loaded as well",
            lib.path.display(),
            path.display()
        ))),
        Ok(lib) => Ok(lib),
    }
}

fn load_uncached(path: &Path) -> Result<HelmLib, String> {
    if !path.is_file() {
        return Err(format!(
            "{} does not exist (install it with scripts/deps/helm.sh)",
            path.display()
        ));
    }
    // SAFETY: loading runs the library's initialisers: the Go runtime starts its threads and installs
    // handlers for synchronous signals only (c-shared mode); tests in tests/helm_signals.rs check that
    // tokio's SIGTERM handling and wasmtime's trap handling keep working with it loaded.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    // SAFETY: the symbol types match helm_c.h of helm-c-sdk 0.2.2 (as declared in helm_python/_native.py).
    unsafe {
        let sym = |name: &str| {
            format!(
                "{} has no symbol {name}: is it libhelm_c.so 0.2.2?",
                path.display()
            )
        };
        let free_string = *lib
            .get::<FreeString>(b"helm_free_string\0")
            .map_err(|_| sym("helm_free_string"))?;
        let chart_load = *lib
            .get::<ChartLoad>(b"helm_chart_load\0")
            .map_err(|_| sym("helm_chart_load"))?;
        let chart_free = *lib
            .get::<ChartFree>(b"helm_chart_free\0")
            .map_err(|_| sym("helm_chart_free"))?;
        let render = *lib
            .get::<Render>(b"helm_render\0")
            .map_err(|_| sym("helm_render"))?;
        let chart_crds = *lib
            .get::<ChartCrds>(b"helm_chart_crds\0")
            .map_err(|_| sym("helm_chart_crds"))?;
        let package_run = *lib
            .get::<PackageRun>(b"helm_package_run\0")
            .map_err(|_| sym("helm_package_run"))?;
        let version = *lib
            .get::<Version>(b"helm_sdk_version\0")
            .map_err(|_| sym("helm_sdk_version"))?;
        let sdk_version = take(free_string, version()).unwrap_or_default();
        Ok(HelmLib {
            path: path.to_owned(),
            free_string,
            chart_load,
            chart_free,
            render,
            chart_crds,
            package_run,
            sdk_version,
            _lib: lib,
        })
    }
}

/// Copies a library-owned string and frees it.
///
/// SAFETY: `p` is NULL or a NUL-terminated string allocated by the library and not yet freed.
unsafe fn take(free: FreeString, p: *mut c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let s = CStr::from_ptr(p).to_string_lossy().into_owned();
    free(p);
    Some(s)
}

fn cstring(what: &str, s: &str) -> Result<CString, RenderError> {
    CString::new(s).map_err(|_| RenderError::InvalidInput(format!("{what} contains a NUL byte")))
}

/// A chart handle, freed on drop.
struct Chart<'a> {
    lib: &'a HelmLib,
    handle: u64,
}

impl Drop for Chart<'_> {
    fn drop(&mut self) {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: the handle came from helm_chart_load and is freed once; the error string is released.
        unsafe {
            (self.lib.chart_free)(self.handle, &mut err);
            take(self.lib.free_string, err);
        }
    }
}

impl HelmLib {
    fn error(&self, op: &'static str, chart: &Path, code: i32, err: Option<String>) -> RenderError {
        let detail = err.unwrap_or_else(|| format!("error code {code}"));
        // A recovered Go panic is reported as an error, never as a crash of the controller.
        if code == PANIC || detail.contains("panic:") || detail.starts_with("panic") {
            RenderError::HelmPanicked {
                chart: chart.to_owned(),
                detail,
            }
        } else {
            RenderError::Helm {
                op: op.into(),
                chart: chart.to_owned(),
                detail,
            }
        }
    }

    fn load_chart(&self, path: &Path) -> Result<Chart<'_>, RenderError> {
        let c_path = cstring("chart path", &path.to_string_lossy())?;
        let mut handle = 0u64;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated input, valid out-pointers; the error string is taken once.
        let code = unsafe { (self.chart_load)(c_path.as_ptr(), &mut handle, &mut err) };
        let err = unsafe { take(self.free_string, err) };
        if code != 0 {
            return Err(self.error("load chart", path, code, err));
        }
        Ok(Chart { lib: self, handle })
    }

    fn render_chart(&self, chart: &Chart<'_>, req: &RenderRequest<'_>) -> Result<String, RenderError> {
        let values = cstring("values", &req.values.to_string())?;
        let mut opts = serde_json::json!({
            "name": req.release_name,
            "namespace": req.namespace,
            "is_install": true,
        });
        if let Some(kv) = req.kube_version {
            opts["kube_version"] = kv.into();
        }
        let opts = cstring("render options", &opts.to_string())?;
        let mut out: *mut c_char = std::ptr::null_mut();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in load_chart; both output strings are taken exactly once.
        let code = unsafe { (self.render)(chart.handle, values.as_ptr(), opts.as_ptr(), &mut out, &mut err) };
        let (out, err) = unsafe { (take(self.free_string, out), take(self.free_string, err)) };
        if code != 0 {
            return Err(self.error("render", req.chart, code, err));
        }
        Ok(out.unwrap_or_default())
    }

    fn package(&self, chart_dir: &Path, destination: &Path) -> Result<PathBuf, RenderError> {
        let c_path = cstring("chart path", &chart_dir.to_string_lossy())?;
        let opts = serde_json::json!({"destination": destination.to_string_lossy()});
        let opts = cstring("package options", &opts.to_string())?;
        let mut out: *mut c_char = std::ptr::null_mut();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in load_chart; both output strings are taken exactly once.
        let code = unsafe { (self.package_run)(c_path.as_ptr(), opts.as_ptr(), &mut out, &mut err) };
        let (out, err) = unsafe { (take(self.free_string, out), take(self.free_string, err)) };
        if code != 0 {
            return Err(self.error("package", chart_dir, code, err));
        }
        out.filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| RenderError::Output("helm_package_run returned no archive path".into()))
    }

    fn crds(&self, chart: &Chart<'_>, path: &Path) -> Result<Vec<String>, RenderError> {
        let mut out: *mut c_char = std::ptr::null_mut();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in load_chart.
        let code = unsafe { (self.chart_crds)(chart.handle, &mut out, &mut err) };
        let (out, err) = unsafe { (take(self.free_string, out), take(self.free_string, err)) };
        if code != 0 {
            return Err(self.error("read CRDs of", path, code, err));
        }
        #[derive(serde::Deserialize)]
        struct Crd {
            #[serde(default)]
            data: String,
        }
        let crds: Vec<Crd> = serde_json::from_str(out.as_deref().unwrap_or("[]"))
            .map_err(|e| RenderError::Output(format!("helm_chart_crds returned unexpected JSON: {e}")))?;
        Ok(crds.into_iter().map(|c| c.data).collect())
    }
}

/// Renders with `libhelm_c.so` in-process (about a millisecond for a small chart).
#[derive(Debug)]
pub struct HelmLibRenderer {
    lib: &'static HelmLib,
}

impl HelmLibRenderer {
    /// Loads the library from `path` (once per process).
    pub fn load(path: &Path) -> Result<Self, RenderError> {
        Ok(Self { lib: load(path)? })
    }

    /// Loads the library found by [`discover_helm_lib`].
    pub fn discover() -> Result<Self, RenderError> {
        Self::load(&discover_helm_lib()?)
    }

    /// The Helm SDK version inside the library, e.g. `v4.2.3`.
    pub fn sdk_version(&self) -> &str {
        &self.lib.sdk_version
    }
}

impl Renderer for HelmLibRenderer {
    fn name(&self) -> String {
        format!("libhelm_c (Helm {})", self.lib.sdk_version)
    }

    fn render(&self, req: &RenderRequest<'_>) -> Result<Vec<serde_json::Value>, RenderError> {
        let chart = self.lib.load_chart(req.chart)?;
        let rendered = self.lib.render_chart(&chart, req)?;
        let map: std::collections::BTreeMap<String, String> = serde_json::from_str(&rendered)
            .map_err(|e| RenderError::Output(format!("helm_render returned unexpected JSON: {e}")))?;
        let mut sources: Vec<(String, String)> = Vec::new();
        if req.include_crds {
            for (i, crd) in self.lib.crds(&chart, req.chart)?.into_iter().enumerate() {
                sources.push((format!("crds/{i}"), crd));
            }
        }
        sources.extend(map);
        manifests_from_rendered(req.chart, sources)
    }

    fn package(&self, chart_dir: &Path, destination: &Path) -> Result<PathBuf, RenderError> {
        self.lib.package(chart_dir, destination)
    }
}

/// Environment variable naming `libhelm_c.so` explicitly.
pub const HELM_LIB_ENV: &str = "STACKHOST_HELM_LIB";

/// Finds `libhelm_c.so`: `$STACKHOST_HELM_LIB`, else `.venv/lib/python3*/site-packages/helm_python/lib/`
/// in the current directory or one of its parents, else the same below the repository this crate was
/// built from (for `cargo test`).
pub fn discover_helm_lib() -> Result<PathBuf, RenderError> {
    if let Some(p) = std::env::var_os(HELM_LIB_ENV) {
        return Ok(PathBuf::from(p));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    roots.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(Path::to_path_buf),
    );
    for root in roots {
        if let Some(p) = venv_lib(&root.join(".venv")) {
            return Ok(p);
        }
    }
    Err(RenderError::HelmLibrary(format!(
        "libhelm_c.so not found: run scripts/deps/helm.sh (creates .venv with helm-python-sdk==0.2.2) or set {HELM_LIB_ENV}"
    )))
}

fn venv_lib(venv: &Path) -> Option<PathBuf> {
    let lib_dir = venv.join("lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pythons.sort();
    pythons
        .into_iter()
        .map(|p| p.join("site-packages/helm_python/lib/libhelm_c.so"))
        .find(|p| p.is_file())
}
