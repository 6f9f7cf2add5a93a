//! The idle state machine (paper §3.1): from the owner's criteria and the
//! machine's signals, whether this volunteer runs, lingers, suspends, gives
//! its objects back or waits. Pure: the time and the signals are arguments.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::signals::Sample;

/// Consecutive samples a signal must be over its threshold before it counts
/// as busy (one sample a second: a burst of a couple of seconds does not).
pub const BUSY_AFTER: u32 = 3;
/// Consecutive samples it must then stay under the threshold, less
/// [`MARGIN`], before it counts as quiet again.
pub const QUIET_AFTER: u32 = 5;
/// Percentage points under a CPU threshold that count as quiet (a signal
/// hovering at the threshold flips nothing).
pub const MARGIN: f64 = 10.0;

/// When the volunteer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RunWhen {
    /// Only while the machine is idle by the criteria.
    Idle,
    /// Whenever asked (the criteria are not checked).
    Always,
}

/// A daily window, in minutes after midnight UTC; it may wrap past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First minute in it.
    pub from: u32,
    /// First minute after it.
    pub to: u32,
}

impl Window {
    fn contains(&self, minute: u32) -> bool {
        if self.from <= self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

/// The owner's criteria.
#[derive(Clone, Debug, PartialEq)]
pub struct Criteria {
    /// When the volunteer computes.
    pub run_when: RunWhen,
    /// The owner counts as away after this long without input.
    pub user_idle: Duration,
    /// Other programs using more than this share of the machine (percent of
    /// all cores) make it busy.
    pub other_cpu_above: f64,
    /// With the owner back, keep running while other programs use at most
    /// this (percent); `None`: suspend as soon as the owner is back.
    pub linger_cpu_above: Option<f64>,
    /// Suspended this long, the volunteer gives its objects back.
    pub suspend_grace: Duration,
    /// Windows the volunteer may compute in; empty: any time.
    pub schedule: Vec<Window>,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria {
            run_when: RunWhen::Always,
            user_idle: Duration::from_secs(180),
            other_cpu_above: 25.0,
            linger_cpu_above: Some(50.0),
            suspend_grace: Duration::from_secs(60),
            schedule: Vec::new(),
        }
    }
}

/// What the volunteer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Joined, hosts nothing (new objects go to neighbours).
    Waiting,
    /// Runs objects.
    Running,
    /// The owner is back but the load is low: keeps running, at the lowest
    /// priority.
    Lingering,
    /// The owner needs the machine: starts no call; objects stay, callers
    /// queue.
    Suspended,
    /// Busy past the grace: passes every object on to neighbours.
    GivingBack,
}

impl State {
    /// Its name in `g2 status` and the logs.
    pub fn name(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Running => "running",
            State::Lingering => "lingering",
            State::Suspended => "suspended",
            State::GivingBack => "giving back",
        }
    }
}

/// A yes/no reading of a noisy signal, with hysteresis: it turns on after
/// [`BUSY_AFTER`] samples over the threshold and off after [`QUIET_AFTER`]
/// samples under the threshold less [`MARGIN`].
#[derive(Clone, Debug, Default)]
struct Debounced {
    on: bool,
    run: u32,
}

impl Debounced {
    fn feed(&mut self, value: Option<f64>, threshold: f64) -> bool {
        let Some(v) = value else {
            // unknown: no change
            self.run = 0;
            return self.on;
        };
        let toward = if self.on {
            v < threshold - MARGIN
        } else {
            v > threshold
        };
        self.run = if toward { self.run + 1 } else { 0 };
        let needed = if self.on { QUIET_AFTER } else { BUSY_AFTER };
        if self.run >= needed {
            self.on = !self.on;
            self.run = 0;
        }
        self.on
    }
}

/// A change of state, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// From.
    pub from: State,
    /// To.
    pub to: State,
    /// The criterion that decided it.
    pub reason: String,
}

/// The state machine.
#[derive(Clone, Debug)]
pub struct Machine {
    criteria: Criteria,
    state: State,
    since: Instant,
    reason: String,
    cpu_busy: Debounced,
    over_linger: Debounced,
}

impl Machine {
    /// Starts: running under `always`, waiting (until the first sample
    /// says otherwise) under `idle`.
    pub fn new(criteria: Criteria, now: Instant) -> Machine {
        let (state, reason) = match criteria.run_when {
            RunWhen::Always => (State::Running, "run-when = always".to_string()),
            RunWhen::Idle => (State::Waiting, "starting".to_string()),
        };
        Machine {
            criteria,
            state,
            since: now,
            reason,
            cpu_busy: Debounced::default(),
            over_linger: Debounced::default(),
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why it is in it.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Since when.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The criteria.
    pub fn criteria(&self) -> &Criteria {
        &self.criteria
    }

    /// Takes one sample, taken at `now` (`minute`: minutes after midnight
    /// UTC), with `hosting` objects running here; the change it makes.
    pub fn step(
        &mut self,
        now: Instant,
        minute: u32,
        s: &Sample,
        hosting: usize,
    ) -> Option<Change> {
        if self.criteria.run_when == RunWhen::Always {
            return None;
        }
        let c = &self.criteria;
        let cpu_busy = self.cpu_busy.feed(s.other_cpu_pct, c.other_cpu_above);
        let over_linger = match c.linger_cpu_above {
            Some(t) => self.over_linger.feed(s.other_cpu_pct, t),
            None => true,
        };
        let user_here = s.user_idle.is_some_and(|d| d < c.user_idle);
        // what keeps the volunteer from computing at all, first found
        let blocked: Option<String> = if !c.schedule.is_empty()
            && !c.schedule.iter().any(|w| w.contains(minute))
        {
            Some("outside the schedule".into())
        } else if s.on_battery == Some(true) {
            Some("on battery".into())
        } else if cpu_busy {
            Some(format!(
                "other programs use {:.0}% of the CPU (other-cpu-above = {})",
                s.other_cpu_pct.unwrap_or(0.0),
                c.other_cpu_above
            ))
        } else if user_here && over_linger {
            Some(match c.linger_cpu_above {
                Some(t) => format!(
                    "the owner is at the machine and other programs use {:.0}% of the CPU (linger-cpu-above = {t})",
                    s.other_cpu_pct.unwrap_or(0.0)
                ),
                None => format!(
                    "the owner is at the machine (input {} s ago; user-idle-min = {})",
                    s.user_idle.map_or(0, |d| d.as_secs()),
                    c.user_idle.as_secs() / 60
                ),
            })
        } else {
            None
        };
        let (to, reason) = match (self.state, blocked) {
            (State::Running | State::Lingering, Some(why)) => (State::Suspended, why),
            (State::Suspended, Some(why))
                if now.saturating_duration_since(self.since) >= c.suspend_grace =>
            {
                (
                    State::GivingBack,
                    format!(
                        "{why}, for longer than suspend-grace-s = {}",
                        c.suspend_grace.as_secs()
                    ),
                )
            }
            (State::GivingBack, Some(_)) if hosting == 0 => (
                State::Waiting,
                "every object was passed on; waiting for the machine to be idle".into(),
            ),
            (State::Suspended | State::GivingBack | State::Waiting, Some(_)) => return None,
            // free to compute
            (State::Running, None) if user_here => (
                State::Lingering,
                format!(
                    "the owner is back (input {} s ago) but other programs use little CPU",
                    s.user_idle.map_or(0, |d| d.as_secs())
                ),
            ),
            (State::Lingering, None) if !user_here => (State::Running, "the owner is away".into()),
            (State::Running | State::Lingering, None) => return None,
            // lingering only continues work: back from a stop, the owner
            // must be away
            (State::Suspended | State::GivingBack | State::Waiting, None) if user_here => {
                return None;
            }
            (State::Suspended | State::GivingBack | State::Waiting, None) => {
                (State::Running, "the machine is idle".into())
            }
        };
        let change = Change {
            from: self.state,
            to,
            reason: reason.clone(),
        };
        self.state = to;
        self.since = now;
        self.reason = reason;
        Some(change)
    }
}

/// Parses a schedule window `HH:MM-HH:MM`, in UTC or with an offset
/// (`18:00-08:00+01:00`, `Z` for UTC).
pub fn parse_window(text: &str) -> Result<Window, String> {
    let bad = |why: &str| {
        format!(
            "schedule window {text:?}: {why} (expected HH:MM-HH:MM, optionally followed by +HH:MM, -HH:MM or Z)"
        )
    };
    let t = text.trim();
    let (times, offset) = match t
        .char_indices()
        .skip(5)
        .find(|(_, c)| matches!(c, '+' | 'Z'))
    {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => match t.rfind('-') {
            // a second '-' after the range is an offset
            Some(i) if i > 5 && t[..i].contains('-') => (&t[..i], &t[i..]),
            _ => (t, "Z"),
        },
    };
    let (a, b) = times
        .split_once('-')
        .ok_or_else(|| bad("no '-' between the times"))?;
    let minute = |s: &str| -> Result<u32, String> {
        let (h, m) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("a time without ':'"))?;
        let h: u32 = h.parse().map_err(|_| bad("hours not a number"))?;
        let m: u32 = m.parse().map_err(|_| bad("minutes not a number"))?;
        if h > 24 || m > 59 || (h == 24 && m > 0) {
            return Err(bad("a time past 24:00"));
        }
        Ok(h * 60 + m)
    };
    let shift: i64 = match offset {
        "Z" | "z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let m = minute(&o[1..]).map_err(|_| bad("a bad offset"))?;
            if m > 14 * 60 {
                return Err(bad("an offset over 14 hours"));
            }
            sign * i64::from(m)
        }
    };
    // local time = UTC + offset, so UTC = local - offset
    let utc = |local: u32| -> u32 { (i64::from(local) - shift).rem_euclid(24 * 60) as u32 };
    let (from, to) = (minute(a)?, minute(b)?);
    if from == to {
        return Err(bad("an empty window"));
    }
    Ok(Window {
        from: utc(from % (24 * 60)),
        to: utc(to % (24 * 60)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_criteria() -> Criteria {
        Criteria {
            run_when: RunWhen::Idle,
            user_idle: Duration::from_secs(120),
            other_cpu_above: 25.0,
            linger_cpu_above: Some(50.0),
            suspend_grace: Duration::from_secs(10),
            schedule: Vec::new(),
        }
    }

    fn sample(cpu: f64, idle_s: Option<u64>) -> Sample {
        Sample {
            other_cpu_pct: Some(cpu),
            user_idle: idle_s.map(Duration::from_secs),
            ..Sample::default()
        }
    }

    /// Feeds `s` once a second from `t` for `n` seconds; the states seen.
    fn feed(m: &mut Machine, t: &mut Instant, s: &Sample, n: u32, hosting: usize) -> Vec<State> {
        let mut seen = Vec::new();
        for _ in 0..n {
            *t += Duration::from_secs(1);
            if let Some(c) = m.step(*t, 600, s, hosting) {
                seen.push(c.to);
            }
        }
        seen
    }

    #[test]
    fn always_runs_whatever_the_signals() {
        let t0 = Instant::now();
        let mut m = Machine::new(Criteria::default(), t0);
        assert_eq!(m.state(), State::Running);
        let mut t = t0;
        assert!(feed(&mut m, &mut t, &sample(100.0, Some(0)), 100, 3).is_empty());
    }

    #[test]
    fn every_transition_of_a_busy_owner_and_back() {
        let t0 = Instant::now();
        let mut m = Machine::new(idle_criteria(), t0);
        let mut t = t0;
        assert_eq!(m.state(), State::Waiting);
        // idle machine: runs
        assert_eq!(
            feed(&mut m, &mut t, &sample(2.0, Some(600)), 1, 0),
            [State::Running]
        );
        // the owner comes back, load low: lingers; leaves again: runs
        assert_eq!(
            feed(&mut m, &mut t, &sample(5.0, Some(3)), 1, 4),
            [State::Lingering]
        );
        assert_eq!(
            feed(&mut m, &mut t, &sample(5.0, Some(300)), 1, 4),
            [State::Running]
        );
        // another program loads the machine: suspended after BUSY_AFTER samples
        let busy = sample(90.0, Some(300));
        let seen = feed(&mut m, &mut t, &busy, BUSY_AFTER, 4);
        assert_eq!(seen, [State::Suspended]);
        assert!(
            m.reason().contains("other-cpu-above = 25"),
            "{}",
            m.reason()
        );
        // still busy after the grace: gives back; once nothing runs here: waits
        assert_eq!(feed(&mut m, &mut t, &busy, 9, 4), []);
        assert_eq!(feed(&mut m, &mut t, &busy, 1, 4), [State::GivingBack]);
        assert!(
            m.reason().contains("suspend-grace-s = 10"),
            "{}",
            m.reason()
        );
        assert_eq!(feed(&mut m, &mut t, &busy, 3, 2), []);
        assert_eq!(feed(&mut m, &mut t, &busy, 1, 0), [State::Waiting]);
        // the load stops: runs again after QUIET_AFTER quiet samples
        let quiet = sample(3.0, Some(300));
        assert_eq!(feed(&mut m, &mut t, &quiet, QUIET_AFTER - 1, 0), []);
        assert_eq!(feed(&mut m, &mut t, &quiet, 1, 0), [State::Running]);
        // a short load, gone within the grace: suspended, then running again
        assert_eq!(
            feed(&mut m, &mut t, &busy, BUSY_AFTER, 3),
            [State::Suspended]
        );
        assert_eq!(
            feed(&mut m, &mut t, &quiet, QUIET_AFTER, 3),
            [State::Running]
        );
    }

    #[test]
    fn the_owner_back_with_the_load_high_suspends_and_without_linger_at_once() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut m = Machine::new(idle_criteria(), t0);
        feed(&mut m, &mut t, &sample(2.0, Some(600)), 1, 0);
        assert_eq!(m.state(), State::Running);
        // back at the machine, 40% load: under other-cpu-above? no (40 > 25): suspended
        let seen = feed(&mut m, &mut t, &sample(40.0, Some(1)), BUSY_AFTER, 2);
        assert_eq!(seen, [State::Lingering, State::Suspended]);
        // no lingering: the owner's return suspends at once
        let mut no_linger = idle_criteria();
        no_linger.linger_cpu_above = None;
        let mut m = Machine::new(no_linger, t0);
        feed(&mut m, &mut t, &sample(2.0, Some(600)), 1, 0);
        assert_eq!(
            feed(&mut m, &mut t, &sample(2.0, Some(1)), 1, 2),
            [State::Suspended]
        );
        assert!(m.reason().contains("user-idle-min = 2"), "{}", m.reason());
        // a stopped volunteer does not start lingering: it waits for the owner to leave
        assert_eq!(
            feed(&mut m, &mut t, &sample(2.0, Some(1)), 20, 2),
            [State::GivingBack]
        );
        assert_eq!(
            feed(&mut m, &mut t, &sample(2.0, Some(1)), 1, 0),
            [State::Waiting]
        );
        assert_eq!(feed(&mut m, &mut t, &sample(2.0, Some(5)), 5, 0), []);
        assert_eq!(
            feed(&mut m, &mut t, &sample(2.0, Some(500)), 1, 0),
            [State::Running]
        );
    }

    #[test]
    fn a_signal_hovering_at_the_threshold_does_not_flap() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut m = Machine::new(idle_criteria(), t0);
        feed(&mut m, &mut t, &sample(2.0, Some(600)), 1, 0);
        // 24 / 26 / 24 / 26 ...: never three in a row over 25
        let mut changes = Vec::new();
        for i in 0..60 {
            let cpu = if i % 2 == 0 { 24.0 } else { 26.0 };
            changes.extend(feed(&mut m, &mut t, &sample(cpu, Some(600)), 1, 3));
        }
        assert!(changes.is_empty(), "{changes:?}");
        // once busy, 20% (under 25 but not under 25 - MARGIN) keeps it busy
        feed(&mut m, &mut t, &sample(30.0, Some(600)), BUSY_AFTER, 3);
        assert_eq!(m.state(), State::Suspended);
        assert_eq!(feed(&mut m, &mut t, &sample(20.0, Some(600)), 4, 3), []);
        assert_eq!(m.state(), State::Suspended);
        assert_eq!(
            feed(&mut m, &mut t, &sample(14.0, Some(600)), QUIET_AFTER, 3),
            [State::Running]
        );
    }

    #[test]
    fn battery_schedule_and_unknown_signals() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut c = idle_criteria();
        c.schedule = vec![parse_window("18:00-08:00").unwrap()];
        let mut m = Machine::new(c, t0);
        let idle = sample(1.0, Some(900));
        // 10:00 UTC is outside the window: waits; 20:00 inside: runs
        t += Duration::from_secs(1);
        assert_eq!(m.step(t, 600, &idle, 0), None);
        t += Duration::from_secs(1);
        assert_eq!(
            m.step(t, 20 * 60, &idle, 0).map(|c| c.to),
            Some(State::Running)
        );
        // on battery: suspended
        let battery = Sample {
            on_battery: Some(true),
            ..idle.clone()
        };
        t += Duration::from_secs(1);
        let c = m.step(t, 20 * 60, &battery, 2).unwrap();
        assert_eq!((c.to, c.reason.as_str()), (State::Suspended, "on battery"));
        // signals the machine cannot read block nothing
        let unknown = Sample::default();
        t += Duration::from_secs(1);
        assert_eq!(
            m.step(t, 20 * 60, &unknown, 2).map(|c| c.to),
            Some(State::Running)
        );
    }

    #[test]
    fn schedule_windows_parse_with_offsets_or_say_what_is_wrong() {
        assert_eq!(
            parse_window("18:00-08:00").unwrap(),
            Window {
                from: 1080,
                to: 480
            }
        );
        assert_eq!(
            parse_window("18:00-08:00Z").unwrap(),
            Window {
                from: 1080,
                to: 480
            }
        );
        assert_eq!(
            parse_window("18:00-08:00+01:00").unwrap(),
            Window {
                from: 1020,
                to: 420
            }
        );
        assert_eq!(
            parse_window("00:30-02:00-01:00").unwrap(),
            Window { from: 90, to: 180 }
        );
        for (bad, says) in [
            ("18:00", "no '-'"),
            ("25:00-08:00", "past 24:00"),
            ("aa:00-08:00", "hours not a number"),
            ("08:00-08:00", "empty window"),
            ("18:00-08:00+15:00", "over 14 hours"),
        ] {
            let e = parse_window(bad).unwrap_err();
            assert!(
                e.contains(says) && e.contains("expected HH:MM-HH:MM"),
                "{bad}: {e}"
            );
        }
    }
}
