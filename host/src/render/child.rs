//! Rendering in a child process, so that a render can be stopped.
//!
//! Helm runs Go templates, and a Go template loop cannot be interrupted from outside: in-process, a
//! chart with `{{ range until 100000000 }}` holds a thread and gigabytes of memory until it ends.
//! [`ProcessRenderer`] therefore runs each render in the stackhost binary re-executed with the hidden
//! subcommand `internal-render` ([`SUBCOMMAND`]): the job goes in on stdin as JSON, the answer (the
//! objects, or the [`RenderError`] as data) comes back on stdout, capped in size. The child is killed
//! when the render passes its deadline ([`RenderError::TimedOut`]) or when the caller stops it
//! ([`RenderError::Cancelled`], e.g. its release is being deleted). Inside the child the usual
//! in-process renderer runs ([`super::default_renderer`]), with all its output limits.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RenderError, RenderRequest, Renderer, MAX_RENDERED_BYTES};

/// The hidden subcommand of the stackhost binary that serves one job on stdin/stdout.
pub const SUBCOMMAND: &str = "internal-render";

/// Most bytes a child may answer with: the rendered objects as JSON (the child already refused more
/// than [`MAX_RENDERED_BYTES`] of YAML; JSON of the same objects is about as large) plus room.
const MAX_ANSWER_BYTES: usize = 2 * MAX_RENDERED_BYTES + (1 << 20);
/// Most bytes of a job read from stdin (a chart path and values).
const MAX_JOB_BYTES: u64 = 16 << 20;
/// How much of the child's stderr is kept for a message.
const STDERR_TAIL: usize = 2048;

/// One job for the child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Job {
    #[serde(rename_all = "camelCase")]
    Render {
        chart: PathBuf,
        values: Value,
        release_name: String,
        namespace: String,
        kube_version: Option<String>,
        include_crds: bool,
    },
    #[serde(rename_all = "camelCase")]
    Package {
        chart_dir: PathBuf,
        destination: PathBuf,
    },
}

/// The child's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Answer {
    Objects(Vec<Value>),
    Packaged(PathBuf),
    Failed(RenderError),
}

/// What one render process may use before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessLimits {
    /// Wall time (`--render-timeout`).
    pub timeout: Duration,
    /// Resident memory in bytes (`--render-max-memory-mib`).
    pub memory: u64,
}

/// Default of `--render-max-memory-mib`. A render process of the real SCS stacks peaks at 70-82 MiB
/// (the cilium addon chart is the largest; about 70 MiB of it is the process itself).
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// Renders by running `<program> internal-render` per job, stopped at its [`ProcessLimits`].
#[derive(Debug, Clone)]
pub struct ProcessRenderer {
    program: PathBuf,
    limits: ProcessLimits,
}

impl ProcessRenderer {
    /// Runs `program` (a stackhost binary) for each render, each within `limits`.
    pub fn new(program: impl Into<PathBuf>, limits: ProcessLimits) -> Self {
        Self {
            program: program.into(),
            limits,
        }
    }

    /// This process's own binary as the program.
    pub fn current_exe(limits: ProcessLimits) -> Result<Self, RenderError> {
        let program = std::env::current_exe()
            .map_err(|e| RenderError::Process(format!("cannot find the stackhost binary: {e}")))?;
        Ok(Self::new(program, limits))
    }

    fn run(&self, job: &Job, chart: &Path, stop: &AtomicBool) -> Result<Answer, RenderError> {
        let input = serde_json::to_vec(job).map_err(|e| RenderError::InvalidInput(e.to_string()))?;
        let mut child = Command::new(&self.program)
            .arg(SUBCOMMAND)
            // Go's collector works to stay under this; the cap below is what is enforced.
            .env("GOMEMLIMIT", format!("{}MiB", (self.limits.memory >> 20) * 3 / 4))
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RenderError::Process(format!("cannot start {}: {e}", self.program.display())))?;
        let started = Instant::now();
        tracing::debug!(chart = %chart.display(), pid = child.id(), "render process started");
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // Separate threads, so that a child that writes before it has read everything cannot block.
        let writer = std::thread::spawn(move || {
            if let Some(mut stdin) = stdin {
                // A child that exits early (a bad program) closes the pipe: its exit says why.
                let _ = stdin.write_all(&input);
            }
        });
        let overflow = Arc::new(AtomicBool::new(false));
        let overflow_ = overflow.clone();
        let reader = std::thread::spawn(move || {
            let mut answer = Vec::new();
            if let Some(stdout) = stdout {
                let mut limited = stdout.take(MAX_ANSWER_BYTES as u64 + 1);
                let _ = limited.read_to_end(&mut answer);
                if answer.len() > MAX_ANSWER_BYTES {
                    overflow_.store(true, Ordering::Relaxed);
                }
            }
            answer
        });
        let errors = std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(stderr) = stderr {
                let _ = stderr.take(1 << 20).read_to_end(&mut text);
            }
            let tail = text.len().saturating_sub(STDERR_TAIL);
            String::from_utf8_lossy(&text[tail..]).trim().to_owned()
        });
        let mut pause = Duration::from_millis(1);
        let stopped = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(RenderError::Process(format!("cannot wait for the render: {e}"))),
            }
            let why = if stop.load(Ordering::Relaxed) {
                Some(RenderError::Cancelled(chart.to_owned()))
            } else if started.elapsed() >= self.limits.timeout {
                Some(RenderError::TimedOut {
                    chart: chart.to_owned(),
                    after: self.limits.timeout,
                })
            } else if resident_bytes(child.id()).is_some_and(|used| used > self.limits.memory) {
                Some(RenderError::OutOfMemory {
                    chart: chart.to_owned(),
                    limit_mib: self.limits.memory >> 20,
                })
            } else if overflow.load(Ordering::Relaxed) {
                Some(RenderError::Process(format!(
                    "rendering {} answered with more than {MAX_ANSWER_BYTES} bytes",
                    chart.display()
                )))
            } else {
                None
            };
            if let Some(why) = why {
                let _ = child.kill();
                let _ = child.wait();
                break Err(why);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        let _ = writer.join();
        let answer = reader.join().unwrap_or_default();
        let stderr = errors.join().unwrap_or_default();
        let status = stopped?;
        if overflow.load(Ordering::Relaxed) {
            return Err(RenderError::Process(format!(
                "rendering {} answered with more than {MAX_ANSWER_BYTES} bytes",
                chart.display()
            )));
        }
        match serde_json::from_slice::<Answer>(&answer) {
            Ok(answer) => Ok(answer),
            Err(_) => Err(RenderError::Process(format!(
                "{} {SUBCOMMAND} ended with {status} without an answer{}",
                self.program.display(),
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            ))),
        }
    }
}

/// The resident memory of process `pid` (Linux `/proc`; `None` elsewhere or once it is gone).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

impl Renderer for ProcessRenderer {
    fn name(&self) -> String {
        format!("{} {SUBCOMMAND}", self.program.display())
    }

    fn render(&self, req: &RenderRequest<'_>) -> Result<Vec<Value>, RenderError> {
        self.render_until(req, &AtomicBool::new(false))
    }

    fn render_until(&self, req: &RenderRequest<'_>, stop: &AtomicBool) -> Result<Vec<Value>, RenderError> {
        let job = Job::Render {
            chart: req.chart.to_owned(),
            values: req.values.clone(),
            release_name: req.release_name.to_owned(),
            namespace: req.namespace.to_owned(),
            kube_version: req.kube_version.map(str::to_owned),
            include_crds: req.include_crds,
        };
        match self.run(&job, req.chart, stop)? {
            Answer::Objects(objects) => Ok(objects),
            Answer::Failed(e) => Err(e),
            Answer::Packaged(_) => Err(RenderError::Output("a package path instead of objects".into())),
        }
    }

    fn package(&self, chart_dir: &Path, destination: &Path) -> Result<PathBuf, RenderError> {
        let job = Job::Package {
            chart_dir: chart_dir.to_owned(),
            destination: destination.to_owned(),
        };
        match self.run(&job, chart_dir, &AtomicBool::new(false))? {
            Answer::Packaged(path) => Ok(path),
            Answer::Failed(e) => Err(e),
            Answer::Objects(_) => Err(RenderError::Output("objects instead of a package path".into())),
        }
    }
}

/// Ends this render process soon after its parent is gone: a controller killed with SIGKILL cannot stop
/// its renders, and a looping template would otherwise run on, orphaned, until it ends.
/// The parent names itself in [`PARENT_ENV`]: a parent killed before this process got here is noticed too.
fn exit_with_parent() {
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(std::os::unix::process::parent_id);
    std::thread::spawn(move || loop {
        if std::os::unix::process::parent_id() != parent {
            eprintln!("the controller that started this render is gone; stopping");
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(250));
    });
}

/// The environment variable that carries the render's parent process id.
pub const PARENT_ENV: &str = "STACKHOST_RENDER_PARENT";

/// The child's side (`stackhost internal-render`): reads one job from stdin, runs it with the
/// in-process renderer and writes the answer to stdout. Returns the exit code: 0 when an answer was
/// written (a failed render is an answer too).
pub fn serve() -> i32 {
    exit_with_parent();
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_JOB_BYTES).read_to_end(&mut input) {
        eprintln!("cannot read the render job: {e}");
        return 2;
    }
    let job: Job = match serde_json::from_slice(&input) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("invalid render job: {e}");
            return 2;
        }
    };
    let answer = match super::default_renderer() {
        Err(e) => Answer::Failed(e),
        Ok(renderer) => match &job {
            Job::Render {
                chart,
                values,
                release_name,
                namespace,
                kube_version,
                include_crds,
            } => {
                let req = RenderRequest {
                    chart,
                    values,
                    release_name,
                    namespace,
                    kube_version: kube_version.as_deref(),
                    include_crds: *include_crds,
                };
                renderer.render(&req).map_or_else(Answer::Failed, Answer::Objects)
            }
            Job::Package {
                chart_dir,
                destination,
            } => renderer
                .package(chart_dir, destination)
                .map_or_else(Answer::Failed, Answer::Packaged),
        },
    };
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, &answer)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cannot write the render answer: {e}");
            2
        }
    }
}
