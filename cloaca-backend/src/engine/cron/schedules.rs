//! Schedule management: the cron methods of a runner, grouped on one
//! object ([`Schedules`], from `Runner::schedules()`).

use super::expression::CronSchedule;
use super::input::{check_instance_name, check_params};
use crate::engine::error::{Error, Result};
use crate::engine::model::Context;
use crate::engine::runner::shared::Shared;
use crate::engine::store::{CronRun, CronStats, ScheduleRecord};
use crate::engine::time::now_ms;

/// The cron schedules of a runner's database.
pub(crate) struct Schedules<'r> {
    shared: &'r Shared,
}

impl<'r> Schedules<'r> {
    pub(crate) fn new(shared: &'r Shared) -> Self {
        Schedules { shared }
    }

    /// Stores a new enabled schedule of the registered workflow `name`,
    /// its first tick computed from now.
    pub(crate) fn register(&self, name: &str, expression: &str, timezone: &str) -> Result<ScheduleRecord> {
        self.insert(name, expression, timezone, None)
    }

    /// Stores a named instance of the registered workflow `name`: a
    /// schedule whose every tick starts from a snapshot of `params`.
    pub(crate) fn register_instance(
        &self,
        name: &str,
        instance_name: &str,
        expression: &str,
        timezone: &str,
        params: Context,
    ) -> Result<ScheduleRecord> {
        self.insert(name, expression, timezone, Some((instance_name, params)))
    }

    fn insert(&self, name: &str, expression: &str, timezone: &str, instance: Option<(&str, Context)>) -> Result<ScheduleRecord> {
        self.shared.ensure_running()?;
        if self.shared.registry.get(name).is_none() {
            return Err(Error::UnknownWorkflow { name: name.to_string(), registered: self.shared.registry.names() });
        }
        if let Some((instance_name, params)) = &instance {
            check_instance_name(name, instance_name)?;
            check_params(params)?;
        }
        let now = now_ms();
        let (instance_name, params) = instance.map(|(n, p)| (n.to_string(), p)).unzip();
        let record = ScheduleRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workflow_name: name.to_string(),
            cron_expression: expression.to_string(),
            timezone: timezone.to_string(),
            enabled: true,
            next_run_at: CronSchedule::parse(expression, timezone)?.next_after(now)?,
            last_run_at: None,
            skipped_ticks: 0,
            created_at: now,
            updated_at: now,
            instance_name,
            params,
        };
        self.shared.store.insert_schedule(&record)?;
        self.shared.wake_scheduler();
        Ok(record)
    }

    /// The stored schedule `id`.
    pub(crate) fn get(&self, id: &str) -> Result<ScheduleRecord> {
        self.shared.store.get_schedule(id)?.ok_or_else(|| Error::UnknownSchedule(id.to_string()))
    }

    /// Replaces a schedule's expression (and time zone, when given); its
    /// next tick is computed from now.
    pub(crate) fn update(&self, id: &str, expression: &str, timezone: Option<&str>) -> Result<ScheduleRecord> {
        self.change(id, |record, now| {
            let timezone = timezone.unwrap_or(&record.timezone).to_string();
            record.next_run_at = CronSchedule::parse(expression, &timezone)?.next_after(now)?;
            record.cron_expression = expression.to_string();
            record.timezone = timezone;
            Ok(())
        })
    }

    /// Enables or disables a schedule. Enabling a disabled one starts from
    /// the next tick after now: ticks missed while disabled are not caught up.
    pub(crate) fn set_enabled(&self, id: &str, enabled: bool) -> Result<ScheduleRecord> {
        self.change(id, |record, now| {
            if enabled && !record.enabled {
                record.next_run_at = CronSchedule::parse(&record.cron_expression, &record.timezone)?.next_after(now)?;
            }
            record.enabled = enabled;
            Ok(())
        })
    }

    /// Reads the schedule, applies `change` and stores it if nobody fired
    /// a tick of it meanwhile (its next_run_at is unchanged); otherwise reads
    /// again. Writing back a next_run_at read before a tick was fired would
    /// make that tick due again.
    fn change(&self, id: &str, mut change: impl FnMut(&mut ScheduleRecord, i64) -> Result<()>) -> Result<ScheduleRecord> {
        loop {
            let mut record = self.get(id)?;
            let read_next_run_at = record.next_run_at;
            let now = now_ms();
            change(&mut record, now)?;
            if self.shared.store.update_schedule(&record, read_next_run_at, now)? {
                record.updated_at = now;
                self.shared.wake_scheduler();
                return Ok(record);
            }
        }
    }

    /// Deletes a schedule and its history; executions it started go on.
    pub(crate) fn delete(&self, id: &str) -> Result<()> {
        if !self.shared.store.delete_schedule(id)? {
            return Err(Error::UnknownSchedule(id.to_string()));
        }
        Ok(())
    }

    /// Every schedule (or only the enabled ones), oldest first.
    pub(crate) fn list(&self, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<ScheduleRecord>> {
        self.shared.store.list_schedules(enabled_only, limit, offset)
    }

    /// The executions a schedule's ticks started, newest tick first.
    pub(crate) fn history(&self, id: &str, limit: i64, offset: i64) -> Result<Vec<CronRun>> {
        self.get(id)?;
        self.shared.store.cron_history(id, limit, offset)
    }

    /// Counts over the executions of ticks scheduled since `since`.
    pub(crate) fn stats(&self, since: i64) -> Result<CronStats> {
        self.shared.store.cron_stats(since)
    }
}
