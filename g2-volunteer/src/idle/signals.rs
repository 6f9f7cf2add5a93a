//! What the volunteer reads of its machine, about once a second: the CPU
//! used by everything but G2 and its workers, the load average, the time
//! since the owner's last input (where the machine can tell), and whether
//! it runs on battery. Behind [`Signals`], with a file-fed fake for tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// One reading; `None` where the machine cannot tell.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// CPU used by other programs since the last reading, percent of all cores.
    pub other_cpu_pct: Option<f64>,
    /// The 1-minute load average.
    pub load_avg: Option<f64>,
    /// Time since the last keyboard, mouse or terminal input.
    #[serde(with = "opt_secs", default)]
    pub user_idle: Option<Duration>,
    /// Whether the machine runs on battery.
    pub on_battery: Option<bool>,
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs_f64()).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64))
    }
}

/// A source of readings.
pub trait Signals: Send {
    /// Reads the machine now; `ours` are the pids of G2's own processes (the
    /// volunteer and its workers), whose CPU does not count as the owner's.
    fn sample(&mut self, ours: &[u32]) -> Sample;
}

/// The real machine, through `/proc`, `/dev` and `/sys`.
#[derive(Default)]
pub struct MachineSignals {
    /// The last `/proc/stat` totals: (all jiffies, busy jiffies).
    last_total: Option<(u64, u64)>,
    /// The last CPU jiffies of each of our processes.
    last_ours: HashMap<u32, u64>,
}

impl Signals for MachineSignals {
    fn sample(&mut self, ours: &[u32]) -> Sample {
        Sample {
            other_cpu_pct: self.other_cpu(ours),
            load_avg: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse().ok()),
            user_idle: user_idle(),
            on_battery: on_battery(Path::new("/sys/class/power_supply")),
        }
    }
}

impl MachineSignals {
    fn other_cpu(&mut self, ours: &[u32]) -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let (total, busy) = parse_cpu_line(stat.lines().next()?)?;
        let mut now_ours = HashMap::new();
        for pid in ours {
            if let Some(j) = process_jiffies(*pid) {
                now_ours.insert(*pid, j);
            }
        }
        // only processes read both times count (one that started or ended
        // between the readings is counted from the next one)
        let ours_delta: u64 = now_ours
            .iter()
            .filter_map(|(pid, j)| Some(j.saturating_sub(*self.last_ours.get(pid)?)))
            .sum();
        let last = self.last_total.replace((total, busy));
        self.last_ours = now_ours;
        let (last_total, last_busy) = last?;
        let dt = total.saturating_sub(last_total);
        if dt == 0 {
            return None;
        }
        let other = busy.saturating_sub(last_busy).saturating_sub(ours_delta);
        Some((other as f64 * 100.0 / dt as f64).clamp(0.0, 100.0))
    }
}

/// (all, busy) jiffies of the `cpu` line of `/proc/stat`.
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest counted in user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total, total.saturating_sub(idle)))
}

/// utime + stime of process `pid` (all its threads), in jiffies.
fn process_jiffies(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of the line; here, after the name and state, 11 and 12
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Time since the newest input on a terminal or input device, where any is
/// readable (a terminal's or an input device's access time moves with
/// input).
fn user_idle() -> Option<Duration> {
    let mut newest: Option<SystemTime> = None;
    let mut look = |dir: &str, keep: &dyn Fn(&str) -> bool| {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !keep(&name) {
                continue;
            }
            if let Ok(t) = e.metadata().and_then(|m| m.accessed()) {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    };
    look("/dev/pts", &|n| n.chars().all(|c| c.is_ascii_digit()));
    look("/dev/input", &|n| {
        n.starts_with("event") || n.starts_with("mouse")
    });
    look("/dev", &|n| {
        n.strip_prefix("tty")
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
    });
    newest.map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
}

/// Whether the machine runs on battery: a mains supply reports it is not
/// online. `None` when there is no mains supply to ask (a desktop without
/// one listed, a server, a container).
fn on_battery(dir: &Path) -> Option<bool> {
    let mut mains_seen = false;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let kind = std::fs::read_to_string(p.join("type")).unwrap_or_default();
        if kind.trim() == "Mains" {
            mains_seen = true;
            if std::fs::read_to_string(p.join("online")).is_ok_and(|o| o.trim() == "1") {
                return Some(false);
            }
        }
    }
    mains_seen.then_some(true)
}

/// Readings from a JSON file (a [`Sample`]), read at every sample: the hook
/// tests use to make a volunteer's machine look busy or idle. A file that
/// cannot be read keeps the last reading (and is logged once).
pub struct FileSignals {
    path: PathBuf,
    last: Sample,
    warned: bool,
}

impl FileSignals {
    /// Readings from `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            last: Sample::default(),
            warned: false,
        }
    }
}

impl Signals for FileSignals {
    fn sample(&mut self, _ours: &[u32]) -> Sample {
        let read = std::fs::read(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Sample>(&b).map_err(|e| e.to_string()));
        match read {
            Ok(s) => {
                self.last = s;
                self.warned = false;
            }
            Err(e) if !self.warned => {
                warn!(path = %self.path.display(), "idle signals file: {e}; keeping the last reading");
                self.warned = true;
            }
            Err(_) => {}
        }
        self.last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_and_a_process_line_are_read() {
        assert_eq!(
            parse_cpu_line("cpu  100 5 50 800 20 1 2 3 0 0"),
            Some((981, 161))
        );
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4"), None);
        assert_eq!(parse_cpu_line("cpu 1 2"), None);
        // this process
        assert!(process_jiffies(std::process::id()).is_some());
        assert_eq!(process_jiffies(u32::MAX), None);
    }

    #[test]
    fn the_machine_is_read_as_percentages() {
        let mut s = MachineSignals::default();
        let me = [std::process::id()];
        assert_eq!(
            s.sample(&me).other_cpu_pct,
            None,
            "no reading before two samples"
        );
        std::thread::sleep(Duration::from_millis(50));
        let pct = s.sample(&me).other_cpu_pct.expect("a reading");
        assert!((0.0..=100.0).contains(&pct), "{pct}");
        assert!(s.sample(&me).load_avg.is_some_and(|l| l >= 0.0));
    }

    #[test]
    fn battery_is_read_from_mains_supplies_only() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(on_battery(d.path()), None, "no supply listed");
        let bat = d.path().join("BAT0");
        std::fs::create_dir_all(&bat).unwrap();
        std::fs::write(bat.join("type"), "Battery\n").unwrap();
        assert_eq!(on_battery(d.path()), None);
        let ac = d.path().join("AC");
        std::fs::create_dir_all(&ac).unwrap();
        std::fs::write(ac.join("type"), "Mains\n").unwrap();
        std::fs::write(ac.join("online"), "0\n").unwrap();
        assert_eq!(on_battery(d.path()), Some(true));
        std::fs::write(ac.join("online"), "1\n").unwrap();
        assert_eq!(on_battery(d.path()), Some(false));
    }

    #[test]
    fn a_signals_file_is_read_and_a_bad_one_keeps_the_last_reading() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("signals.json");
        let mut f = FileSignals::new(p.clone());
        assert_eq!(f.sample(&[]), Sample::default());
        std::fs::write(&p, r#"{"other_cpu_pct": 90, "user_idle": 5}"#).unwrap();
        let s = f.sample(&[]);
        assert_eq!(s.other_cpu_pct, Some(90.0));
        assert_eq!(s.user_idle, Some(Duration::from_secs(5)));
        std::fs::write(&p, "not json").unwrap();
        assert_eq!(f.sample(&[]), s);
    }
}
