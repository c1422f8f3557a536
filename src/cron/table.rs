//! The cron actor's schedules, ordered by when each is due next.
//!
//! Pure bookkeeping, no timers: the actor asks for [`Table::earliest`] to
//! arm its single timer and calls [`Table::settle_next`] when it wakes up.
//! Each schedule's due time is its next scheduled time plus its jitter
//! offset; the queue holds `(due, job)` for every schedule that is not
//! suspended and fires again, so the earliest is the first element.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};

use super::{CronError, CronFire, CronSchedule, ScheduleInfo, ScheduleSpec, jitter_offset};

/// Missed runs counted one by one in a single catch-up; past this, the
/// catch-up jumps to the most recent run and the count stays at this
/// (a lower bound), so a per-second schedule after weeks of downtime does
/// not stall the actor.
pub(crate) const CATCH_UP_LIMIT: u64 = 100_000;

/// Every schedule, and the queue of due times.
#[derive(Default)]
pub(crate) struct Table {
    entries: BTreeMap<Arc<str>, Entry>,
    queue: BTreeSet<(DateTime<Utc>, Arc<str>)>,
}

/// One schedule and its state.
struct Entry {
    job: Arc<str>,
    spec: ScheduleSpec,
    schedule: CronSchedule,
    deadline: Option<TimeDelta>,
    offset: Duration,
    offset_delta: TimeDelta,
    suspended: bool,
    /// The first scheduled time not yet settled (fired or skipped).
    next: Option<DateTime<Utc>>,
    /// The last scheduled time that ran.
    last_run: Option<DateTime<Utc>>,
    /// Skipped since the last fire: reported with the next one.
    pending_skipped: u64,
    skipped_total: u64,
}

/// What settling one due schedule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Its most recent due run is to be started.
    Fire(CronFire),
    /// Every due run was later than the starting deadline: none starts.
    Skipped {
        /// The job.
        job: Arc<str>,
        /// How many runs were skipped.
        count: u64,
    },
}

impl Table {
    /// Adds or replaces the schedule of `spec.job`. A new schedule starts
    /// from now; with `last_run`, from that time (missed runs after it are
    /// settled by the missed-run rule at the next [`Table::settle_next`]).
    /// A replaced schedule keeps its `last_run` and skip counts.
    pub(crate) fn upsert(
        &mut self,
        spec: ScheduleSpec,
        now: DateTime<Utc>,
    ) -> Result<(), CronError> {
        let schedule = spec.validate()?;
        let job: Arc<str> = Arc::from(spec.job.as_str());
        let offset = jitter_offset(&job, spec.jitter.unwrap_or_default());
        let offset_delta = TimeDelta::from_std(offset).unwrap_or_default();
        let deadline = spec
            .starting_deadline
            .map(|d| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX));
        let previous = self.take(&job);
        let (prev_last_run, pending_skipped, skipped_total) = previous
            .map(|p| (p.last_run, p.pending_skipped, p.skipped_total))
            .unwrap_or_default();
        let last_run = spec.last_run.max(prev_last_run);
        let from = match (spec.last_run, last_run) {
            (Some(_), Some(last)) => last,
            // From now: the first run due after now (a scheduled time just
            // past still runs if its jitter offset has not elapsed).
            _ => {
                let start = now.checked_sub_signed(offset_delta).unwrap_or(now);
                prev_last_run.map_or(start, |l| l.max(start))
            }
        };
        let entry = Entry {
            job: job.clone(),
            next: schedule.next_after(from),
            suspended: spec.suspend,
            spec,
            schedule,
            deadline,
            offset,
            offset_delta,
            last_run,
            pending_skipped,
            skipped_total,
        };
        if let Some(due) = entry.due() {
            self.queue.insert((due, job.clone()));
        }
        self.entries.insert(job, entry);
        Ok(())
    }

    /// Removes a schedule; false if there was none.
    pub(crate) fn remove(&mut self, job: &str) -> bool {
        self.take(job).is_some()
    }

    /// Stops a schedule from firing until resumed. Idempotent.
    pub(crate) fn suspend(&mut self, job: &str) -> Result<(), CronError> {
        let entry = self
            .entries
            .get_mut(job)
            .ok_or_else(|| CronError::NotFound(job.to_owned()))?;
        if let Some(due) = entry.due() {
            self.queue.remove(&(due, entry.job.clone()));
        }
        entry.suspended = true;
        entry.spec.suspend = true;
        Ok(())
    }

    /// Lets a suspended schedule fire again. Runs missed while suspended
    /// are settled by the missed-run rule (only the most recent may start).
    pub(crate) fn resume(&mut self, job: &str) -> Result<(), CronError> {
        let entry = self
            .entries
            .get_mut(job)
            .ok_or_else(|| CronError::NotFound(job.to_owned()))?;
        if entry.suspended {
            entry.suspended = false;
            entry.spec.suspend = false;
            if let Some(due) = entry.due() {
                self.queue.insert((due, entry.job.clone()));
            }
        }
        Ok(())
    }

    /// When the earliest schedule is due.
    pub(crate) fn earliest(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|(due, _)| *due)
    }

    /// Settles the earliest schedule if it is due at `now`: its most recent
    /// due run fires (older ones are counted as skipped), unless it is later
    /// than the starting deadline. `None` when nothing is due.
    pub(crate) fn settle_next(&mut self, now: DateTime<Utc>) -> Option<Settled> {
        let (due, job) = self.queue.pop_first()?;
        if due > now {
            self.queue.insert((due, job));
            return None;
        }
        let entry = self.entries.get_mut(&job)?;
        let settled = entry.settle(now);
        if let Some(due) = entry.due() {
            self.queue.insert((due, job));
        }
        settled
    }

    /// The next scheduled time of `job` (`None` while suspended).
    pub(crate) fn next_run(&self, job: &str) -> Option<DateTime<Utc>> {
        self.entries
            .get(job)
            .filter(|e| !e.suspended)
            .and_then(|e| e.next)
    }

    /// What is known of `job`.
    pub(crate) fn info(&self, job: &str) -> Option<ScheduleInfo> {
        self.entries.get(job).map(Entry::info)
    }

    /// Every schedule, sorted by job.
    pub(crate) fn list(&self) -> Vec<ScheduleInfo> {
        self.entries.values().map(Entry::info).collect()
    }

    /// How many schedules there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many are queued (not suspended, firing again).
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    fn take(&mut self, job: &str) -> Option<Entry> {
        let entry = self.entries.remove(job)?;
        if let Some(due) = entry.due() {
            self.queue.remove(&(due, entry.job.clone()));
        }
        Some(entry)
    }
}

impl Entry {
    /// When it fires next, if it is queued.
    fn due(&self) -> Option<DateTime<Utc>> {
        if self.suspended {
            return None;
        }
        self.next?.checked_add_signed(self.offset_delta)
    }

    /// Settles every run due at `now`. See [`Table::settle_next`].
    fn settle(&mut self, now: DateTime<Utc>) -> Option<Settled> {
        let first = self.next?;
        let horizon = now.checked_sub_signed(self.offset_delta).unwrap_or(now);
        let (mut latest, mut missed) = (first, 0u64);
        let next = loop {
            match self.schedule.next_after(latest) {
                Some(n) if n <= horizon => {
                    latest = n;
                    missed += 1;
                    if missed >= CATCH_UP_LIMIT {
                        if let Some(last) = self
                            .schedule
                            .last_at_or_before(horizon)
                            .filter(|l| *l > latest)
                        {
                            latest = last;
                        }
                        tracing::warn!(
                            job = %self.job,
                            counted = missed,
                            "cron: too many missed runs to count; skipping ahead to the latest"
                        );
                        break self.schedule.next_after(latest);
                    }
                }
                other => break other,
            }
        };
        self.next = next;
        let late = now
            - latest
                .checked_add_signed(self.offset_delta)
                .unwrap_or(latest);
        if self.deadline.is_some_and(|deadline| late > deadline) {
            let count = missed.saturating_add(1);
            self.pending_skipped = self.pending_skipped.saturating_add(count);
            self.skipped_total = self.skipped_total.saturating_add(count);
            return Some(Settled::Skipped {
                job: self.job.clone(),
                count,
            });
        }
        let skipped = self.pending_skipped.saturating_add(missed);
        self.pending_skipped = 0;
        self.skipped_total = self.skipped_total.saturating_add(missed);
        self.last_run = Some(latest);
        Some(Settled::Fire(CronFire {
            job: self.job.to_string(),
            scheduled_for: latest,
            fired_at: now,
            skipped,
        }))
    }

    fn info(&self) -> ScheduleInfo {
        ScheduleInfo {
            job: self.job.to_string(),
            schedule: self.spec.schedule.clone(),
            time_zone: self.schedule.time_zone().to_owned(),
            next_run: if self.suspended { None } else { self.next },
            last_run: self.last_run,
            suspended: self.suspended,
            skipped_total: self.skipped_total,
            jitter_offset: self.offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 10, h, m, s).unwrap()
    }

    fn settle_all(table: &mut Table, now: DateTime<Utc>) -> Vec<Settled> {
        std::iter::from_fn(|| table.settle_next(now)).collect()
    }

    #[test]
    fn nothing_is_due_before_the_first_run() {
        let mut t = Table::default();
        t.upsert(ScheduleSpec::new("a", "*/5 * * * *"), at(12, 0, 30))
            .unwrap();
        assert_eq!(t.earliest(), Some(at(12, 5, 0)));
        assert!(settle_all(&mut t, at(12, 4, 59)).is_empty());
        let fired = settle_all(&mut t, at(12, 5, 0));
        assert!(matches!(&fired[..], [Settled::Fire(f)] if f.scheduled_for == at(12, 5, 0)));
        assert_eq!(t.earliest(), Some(at(12, 10, 0)));
    }

    #[test]
    fn a_late_wake_up_fires_only_the_latest_run() {
        let mut t = Table::default();
        t.upsert(ScheduleSpec::new("a", "*/5 * * * *"), at(12, 0, 30))
            .unwrap();
        let fired = settle_all(&mut t, at(13, 1, 0));
        let [Settled::Fire(f)] = &fired[..] else {
            panic!("{fired:?}")
        };
        assert_eq!((f.scheduled_for, f.skipped), (at(13, 0, 0), 11));
        assert_eq!(t.info("a").unwrap().skipped_total, 11);
    }

    #[test]
    fn skipped_runs_are_reported_with_the_next_fire() {
        let mut t = Table::default();
        let spec = ScheduleSpec::new("a", "*/5 * * * *").starting_deadline(Duration::from_secs(10));
        t.upsert(spec, at(12, 0, 30)).unwrap();
        let settled = settle_all(&mut t, at(12, 11, 0));
        assert!(matches!(&settled[..], [Settled::Skipped { count: 2, .. }]));
        let fired = settle_all(&mut t, at(12, 15, 0));
        assert!(matches!(&fired[..], [Settled::Fire(f)] if f.skipped == 2));
    }

    #[test]
    fn a_huge_catch_up_is_bounded() {
        let mut t = Table::default();
        let spec = ScheduleSpec::new("a", "* * * * * *").last_run(at(0, 0, 0));
        t.upsert(spec, at(0, 0, 0)).unwrap();
        let later = at(0, 0, 0) + TimeDelta::days(30);
        let fired = settle_all(&mut t, later);
        let [Settled::Fire(f)] = &fired[..] else {
            panic!("{fired:?}")
        };
        assert_eq!(f.scheduled_for, later);
        assert_eq!(f.skipped, CATCH_UP_LIMIT);
    }
}
