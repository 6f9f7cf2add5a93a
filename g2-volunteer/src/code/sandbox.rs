//! Confining worker processes: code from the network runs with no more of the
//! owner's machine than it needs.
//!
//! A worker is not started directly. The volunteer starts its own executable
//! (the *launcher*) with [`LAUNCH_ARG`], the settings and the bundle's path; the
//! launcher confines itself, layer by layer, then `exec`s the bundle, which
//! inherits every layer:
//!
//! 1. the lowest CPU priority (nice 19);
//! 2. resource limits: data memory, open files, processes, no core dumps;
//! 3. Landlock (Linux ≥ 5.13): the filesystem shrinks to reading and executing
//!    the system's libraries and the binary, and reading and writing its scratch
//!    dir; with Landlock ABI 4 (Linux ≥ 6.7), no TCP bind or connect either;
//! 4. seccomp: `socket()` fails for every family but Unix sockets (no network),
//!    which also sets `no_new_privs` (no setuid gains through `exec`).
//!
//! Each layer the kernel lacks is skipped with a warning; the launcher writes
//! what it put in force to `<scratch>/.g2-sandbox` for `g2 status`. A host
//! binary calls [`launch_if_asked`] first thing in `main` (`g2` and
//! `tsp-islands` do); without it, workers run unconfined and the volunteer
//! says so.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// The first argument that makes a host binary a launcher.
pub const LAUNCH_ARG: &str = "__g2-launch-worker";

/// The file in a worker's scratch dir that lists the layers in force.
pub const LAYERS_FILE: &str = ".g2-sandbox";

static CAN_LAUNCH: AtomicBool = AtomicBool::new(false);

/// How workers are confined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Confine workers at all (on unless the host binary cannot launch).
    pub enabled: bool,
    /// The executable that confines itself and then runs the worker (default:
    /// this process's own, which must call [`launch_if_asked`]).
    pub launcher: Option<PathBuf>,
    /// Data memory limit (heap and private writable mappings), MiB.
    pub memory_mb: u64,
    /// Open file limit.
    pub open_files: u64,
    /// Process and thread limit (not enforced for root).
    pub processes: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            launcher: None,
            memory_mb: 4096,
            open_files: 256,
            processes: 512,
        }
    }
}

/// The command that starts `binary` confined as `cfg` says.
pub fn command(
    cfg: &SandboxConfig,
    binary: &Path,
    scratch: &Path,
) -> Result<tokio::process::Command, String> {
    let launcher = match (&cfg.launcher, cfg.enabled) {
        (_, false) => None,
        (Some(l), true) => Some(l.clone()),
        (None, true) if CAN_LAUNCH.load(Ordering::Relaxed) => {
            Some(std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?)
        }
        (None, true) => {
            tracing::warn!(
                "this host binary does not call g2_volunteer::code::sandbox::launch_if_asked: its workers run unconfined"
            );
            None
        }
    };
    let Some(launcher) = launcher else {
        return Ok(tokio::process::Command::new(binary));
    };
    let settings = serde_json::to_string(cfg).map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(launcher);
    cmd.arg(LAUNCH_ARG).arg(settings).arg(scratch).arg(binary);
    Ok(cmd)
}

/// The layers in force, for `g2 status`: what the launcher of the newest
/// worker wrote, or why there are none.
pub fn describe(cfg: &SandboxConfig) -> Vec<String> {
    if !cfg.enabled {
        return vec!["off: workers run as plain child processes".into()];
    }
    if cfg.launcher.is_none() && !CAN_LAUNCH.load(Ordering::Relaxed) {
        return vec!["off: this host binary cannot launch confined workers".into()];
    }
    vec![format!(
        "nice 19, data {} MiB, {} open files, {} processes, Landlock, seccomp (per worker below)",
        cfg.memory_mb, cfg.open_files, cfg.processes
    )]
}

/// The layers the launcher of the worker in `scratch` put in force.
pub fn layers_in(scratch: &Path) -> Vec<String> {
    std::fs::read_to_string(scratch.join(LAYERS_FILE))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// When this process was started as a launcher ([`LAUNCH_ARG`]), confines
/// itself and `exec`s the worker (never returns); otherwise notes that this
/// binary can launch and returns. Call it first thing in `main`.
pub fn launch_if_asked() {
    CAN_LAUNCH.store(true, Ordering::Relaxed);
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some(std::ffi::OsStr::new(LAUNCH_ARG)) {
        return;
    }
    let code = match launch(&args[2..]) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("g2 worker launcher: {e}");
            126
        }
    };
    std::process::exit(code);
}

enum Never {}

fn launch(args: &[std::ffi::OsString]) -> Result<Never, String> {
    let [settings, scratch, binary] = args else {
        return Err("expected: settings, scratch dir, binary".into());
    };
    let cfg: SandboxConfig =
        serde_json::from_str(&settings.to_string_lossy()).map_err(|e| format!("settings: {e}"))?;
    let scratch = PathBuf::from(scratch);
    let binary = PathBuf::from(binary);
    let layers = confine(&cfg, &scratch, &binary);
    let _ = std::fs::write(scratch.join(LAYERS_FILE), layers.join("\n"));
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&binary).exec();
    Err(format!("running {}: {err}", binary.display()))
}

/// Puts every layer it can in force on this process; one line per layer.
fn confine(cfg: &SandboxConfig, scratch: &Path, binary: &Path) -> Vec<String> {
    let mut layers = Vec::new();
    let mut note = |what: String| {
        if what.contains("skipped") {
            eprintln!("g2 worker launcher: {what}");
        }
        layers.push(what);
    };
    note(match rustix::process::setpriority_process(None, 19) {
        Ok(()) => "priority: nice 19".into(),
        Err(e) => format!("priority: skipped ({e})"),
    });
    let mib = cfg.memory_mb.saturating_mul(1024 * 1024);
    for (name, res, value) in [
        ("data memory", rlimit::Resource::DATA, mib),
        ("open files", rlimit::Resource::NOFILE, cfg.open_files),
        ("processes", rlimit::Resource::NPROC, cfg.processes),
        ("core dumps", rlimit::Resource::CORE, 0),
    ] {
        note(match rlimit::setrlimit(res, value, value) {
            Ok(()) => format!("limit {name}: {value}"),
            Err(e) => format!("limit {name}: skipped ({e})"),
        });
    }
    note(landlock_layer(scratch, binary));
    note(seccomp_layer());
    layers
}

fn landlock_layer(scratch: &Path, binary: &Path) -> String {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        path_beneath_rules,
    };
    let abi = ABI::V5;
    let result = (|| -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
        let read_exec = AccessFs::from_read(abi);
        let read = AccessFs::ReadFile | AccessFs::ReadDir;
        let all = AccessFs::from_all(abi);
        let system = [
            "/usr",
            "/lib",
            "/lib64",
            "/lib32",
            "/bin",
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
        ];
        Ruleset::default()
            .handle_access(all)?
            .handle_access(AccessNet::from_all(abi))?
            .create()?
            .add_rules(path_beneath_rules(system, read_exec))?
            .add_rules(path_beneath_rules([binary], read_exec))?
            .add_rules(path_beneath_rules(
                ["/proc/self", "/sys/devices/system/cpu", "/sys/fs/cgroup"],
                read,
            ))?
            .add_rules(path_beneath_rules(
                ["/dev/null", "/dev/urandom"],
                read | AccessFs::WriteFile,
            ))?
            .add_rules(path_beneath_rules([scratch], all))?
            .restrict_self()
    })();
    match result {
        Ok(s) => match s.ruleset {
            RulesetStatus::FullyEnforced => {
                "landlock: files limited to the system libraries, the binary and the scratch dir; no TCP".into()
            }
            RulesetStatus::PartiallyEnforced => {
                "landlock: files limited to the system libraries, the binary and the scratch dir (this kernel's Landlock lacks some rights, perhaps TCP)".into()
            }
            RulesetStatus::NotEnforced => "landlock: skipped (not supported by this kernel)".into(),
        },
        Err(e) => format!("landlock: skipped ({e})"),
    }
}

fn seccomp_layer() -> String {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        "riscv64" => TargetArch::riscv64,
        other => return format!("seccomp: skipped (no filter for {other})"),
    };
    let filter = (|| -> Result<BpfProgram, seccompiler::BackendError> {
        // socket(domain, ...) with domain other than AF_UNIX fails with EACCES
        let not_unix = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )?;
        let rules = [(libc::SYS_socket, vec![SeccompRule::new(vec![not_unix])?])]
            .into_iter()
            .collect();
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EACCES as u32),
            arch,
        )?
        .try_into()
    })();
    match filter {
        Ok(prog) => match seccompiler::apply_filter(&prog) {
            Ok(()) => "seccomp: no network sockets; no_new_privs".into(),
            Err(e) => format!("seccomp: skipped ({e})"),
        },
        Err(e) => format!("seccomp: skipped ({e})"),
    }
}
