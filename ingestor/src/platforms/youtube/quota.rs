//! The YouTube Data API quota: what each call costs, what this process has
//! spent today (the day ends at midnight Pacific time, when Google resets
//! the quota), the wait after `quotaExceeded`, and how often a channel that
//! is not live can be checked within the budget.
//!
//! The figures are Google's ("Quota costs", YouTube Data API v3):
//! `videos.list`, `channels.list` and `playlistItems.list` 1 unit,
//! `search.list` 100, `liveChatMessages.list` 5, and
//! `liveChatMessages.streamList` 5 per connection. Every request costs at
//! least 1, even a refused one.
//!
//! The writes commands make (`super::sender`): `liveChatMessages.insert`
//! and `liveChatMessages.delete` cost 20 units each, as their reference
//! pages say ("Quota impact: A call to this method has a quota cost of 20
//! units", developers.google.com/youtube/data/live/reference/rest/v3/
//! liveChatMessages/insert and .../liveChatMessages/delete, read in
//! 2026). `liveChatBans.insert` and `liveChatBans.delete`: their reference
//! pages (.../liveChatBans/insert, .../liveChatBans/delete) name no cost
//! and the "Quota costs" table as found lists no live-chat rows, so 50
//! units each is a conservative assumption (what the table charges other
//! writes), not a documented figure.
//!
//! A share of the daily budget (`YOUTUBE_COMMAND_QUOTA_SHARE`, when a
//! sender is configured) is reserved for commands: reading may not use it,
//! and commands may use only it, so sending cannot starve reading.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc, Weekday};

/// A call to the Data API and its cost in quota units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `videos.list`.
    VideosList,
    /// `channels.list`.
    ChannelsList,
    /// `playlistItems.list`.
    PlaylistItemsList,
    /// `search.list`.
    SearchList,
    /// `liveChatMessages.list`.
    LiveChatMessagesList,
    /// `liveChatMessages.streamList` (per connection).
    StreamList,
    /// `liveChatMessages.insert` (a command's `send`).
    LiveChatMessagesInsert,
    /// `liveChatMessages.delete` (a command's `delete`).
    LiveChatMessagesDelete,
    /// `liveChatBans.insert` (`timeout`, `ban`).
    LiveChatBansInsert,
    /// `liveChatBans.delete` (`unban`).
    LiveChatBansDelete,
}

impl Call {
    /// Its cost in units.
    pub fn cost(self) -> u64 {
        match self {
            Self::VideosList | Self::ChannelsList | Self::PlaylistItemsList => 1,
            Self::SearchList => 100,
            Self::LiveChatMessagesList | Self::StreamList => 5,
            // Documented (the methods' reference pages).
            Self::LiveChatMessagesInsert | Self::LiveChatMessagesDelete => 20,
            // Not documented where we looked: a conservative assumption.
            Self::LiveChatBansInsert | Self::LiveChatBansDelete => ASSUMED_WRITE_COST,
        }
    }

    /// Its name, as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::VideosList => "videos.list",
            Self::ChannelsList => "channels.list",
            Self::PlaylistItemsList => "playlistItems.list",
            Self::SearchList => "search.list",
            Self::LiveChatMessagesList => "liveChatMessages.list",
            Self::StreamList => "liveChatMessages.streamList",
            Self::LiveChatMessagesInsert => "liveChatMessages.insert",
            Self::LiveChatMessagesDelete => "liveChatMessages.delete",
            Self::LiveChatBansInsert => "liveChatBans.insert",
            Self::LiveChatBansDelete => "liveChatBans.delete",
        }
    }
}

/// The cost assumed for a write whose cost Google's pages do not state
/// (`liveChatBans.insert` and `.delete`): what the "Quota costs" table
/// charges other writes.
pub const ASSUMED_WRITE_COST: u64 = 50;

/// Share of the daily quota the checks of channels that are not live may
/// use when their interval is derived from the budget; the rest is left for
/// reading chats (streams, and polling where streaming is unavailable).
pub const OFFLINE_SHARE: f64 = 0.5;

/// The shortest derived interval between two checks of one channel.
pub const MIN_OFFLINE_INTERVAL: Duration = Duration::from_secs(60);

/// This process's quota bookkeeping. Shared by every channel of the source.
#[derive(Debug)]
pub struct Quota {
    daily: u64,
    /// Units a day reserved for commands (out of `daily`).
    reserved: u64,
    exceeded_wait: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    day: Option<NaiveDate>,
    /// Spent by reading.
    spent: u64,
    /// Spent by commands.
    commands_spent: u64,
    /// Reading's share is spent: reads wait until then.
    reading_until: Option<DateTime<Utc>>,
    /// YouTube answered `quotaExceeded`: every call waits until then.
    exceeded_until: Option<DateTime<Utc>>,
}

impl Quota {
    /// A budget of `daily` units; after `quotaExceeded` calls wait
    /// `exceeded_wait`, or until the quota resets (midnight Pacific) when
    /// `None`.
    pub fn new(daily: u64, exceeded_wait: Option<Duration>) -> Self {
        Self {
            daily,
            reserved: 0,
            exceeded_wait,
            state: Mutex::new(State::default()),
        }
    }

    /// Reserves `share` (0 to 1) of the daily budget for commands: reading
    /// may not use it, commands may use only it.
    #[must_use]
    pub fn with_command_share(mut self, share: f64) -> Self {
        self.reserved = ((self.daily as f64) * share.clamp(0.0, 1.0)).floor() as u64;
        self
    }

    /// Units a day reading may spend: the budget less the commands' share.
    fn reading_budget(&self) -> u64 {
        self.daily - self.reserved
    }

    /// Units a day reserved for commands.
    pub fn command_budget(&self) -> u64 {
        self.reserved
    }

    /// Charges a command's write about to be made at `now`, if the
    /// commands' share of today's budget still affords it and no
    /// `quotaExceeded` blocks calls. Counted in the same day's total as
    /// reading.
    ///
    /// # Errors
    /// When it would pass the share, or calls are blocked: until when.
    pub fn spend_command(&self, call: Call, now: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        let total = {
            let mut s = self.state.lock().expect("quota lock");
            Self::roll(&mut s, now);
            if let Some(until) = s.exceeded_until.filter(|u| *u > now) {
                return Err(until);
            }
            if s.commands_spent + call.cost() > self.reserved {
                return Err(next_reset(now));
            }
            s.commands_spent += call.cost();
            s.spent + s.commands_spent
        };
        metrics::counter!("chatbus_ingestor_youtube_quota_units_total", "method" => call.name())
            .increment(call.cost());
        metrics::gauge!("chatbus_ingestor_youtube_quota_used_today").set(total as f64);
        Ok(())
    }

    /// Starts a new Pacific day's counts when `now` is in one.
    fn roll(s: &mut State, now: DateTime<Utc>) {
        let today = pacific_date(now);
        if s.day != Some(today) {
            s.day = Some(today);
            s.spent = 0;
            s.commands_spent = 0;
        }
    }

    /// Charges a call about to be made at `now`, if today's budget
    /// (`YOUTUBE_DAILY_QUOTA`) still affords it: the budget is a limit this
    /// process keeps itself, whatever YouTube's answers ask for. Else no
    /// call is made until the quota resets (midnight Pacific), the moment
    /// returned; logged once a day.
    ///
    /// # Errors
    /// When the call would pass the budget: when calls may start again.
    pub fn spend(&self, call: Call, now: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        let spent = {
            let mut s = self.state.lock().expect("quota lock");
            Self::roll(&mut s, now);
            if s.spent + call.cost() > self.reading_budget() {
                let until = next_reset(now);
                let first = s.reading_until.is_none_or(|b| b < until);
                s.reading_until = Some(until);
                drop(s);
                if first {
                    tracing::warn!(platform = "youtube", daily = self.daily, reserved_for_commands = self.reserved, %until, "YOUTUBE_DAILY_QUOTA (less the commands' share) is spent for today: no YouTube read until the quota resets");
                }
                return Err(until);
            }
            s.spent += call.cost();
            s.spent + s.commands_spent
        };
        metrics::counter!("chatbus_ingestor_youtube_quota_units_total", "method" => call.name())
            .increment(call.cost());
        metrics::gauge!("chatbus_ingestor_youtube_quota_used_today").set(spent as f64);
        Ok(())
    }

    /// The shortest wait between two polls of each of `chats` polled
    /// chats so that polling uses at most the chats' share
    /// (1 − [`OFFLINE_SHARE`]) of the daily budget: `86,400 s × 5 ×
    /// chats / (daily × (1 − share))`.
    pub fn poll_interval(&self, chats: usize) -> Duration {
        let per_day = (self.reading_budget() as f64 * (1.0 - OFFLINE_SHARE)).max(1.0);
        let cost = Call::LiveChatMessagesList.cost() as f64;
        Duration::from_secs_f64(86_400.0 * cost * chats.max(1) as f64 / per_day)
    }

    /// Today's Pacific day and the units spent by reading and by commands,
    /// for the fleet's heartbeat.
    pub fn shared_state(&self, now: DateTime<Utc>) -> serde_json::Value {
        let mut s = self.state.lock().expect("quota lock");
        Self::roll(&mut s, now);
        serde_json::json!({
            "day": s.day.map(|d| d.to_string()),
            "spent": s.spent,
            "commands_spent": s.commands_spent,
        })
    }

    /// Another fleet instance's [`Quota::shared_state`]: for the same day,
    /// this process counts at least what it spent (the quota is one per
    /// Google project, whichever instance reads).
    pub fn adopt(&self, state: &serde_json::Value, now: DateTime<Utc>) {
        let mut s = self.state.lock().expect("quota lock");
        Self::roll(&mut s, now);
        let same_day = state["day"].as_str() == s.day.map(|d| d.to_string()).as_deref();
        if !same_day {
            return;
        }
        s.spent = s.spent.max(state["spent"].as_u64().unwrap_or(0));
        s.commands_spent = s
            .commands_spent
            .max(state["commands_spent"].as_u64().unwrap_or(0));
    }

    /// Units spent today (Pacific day), as counted by this process.
    #[cfg(test)]
    pub fn spent_today(&self, now: DateTime<Utc>) -> u64 {
        let s = self.state.lock().expect("quota lock");
        if s.day == Some(pacific_date(now)) {
            s.spent + s.commands_spent
        } else {
            0
        }
    }

    /// The API answered `quotaExceeded` at `now`: every call waits until the
    /// returned moment.
    pub fn exceeded(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let until = match self.exceeded_wait {
            Some(wait) => now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
            None => next_reset(now),
        };
        let mut s = self.state.lock().expect("quota lock");
        let until = s.exceeded_until.map_or(until, |b| b.max(until));
        s.exceeded_until = Some(until);
        until
    }

    /// Until when reads must wait, if they must (YouTube's `quotaExceeded`,
    /// or reading's share spent).
    pub fn blocked_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut s = self.state.lock().expect("quota lock");
        if s.exceeded_until.is_some_and(|u| u <= now) {
            s.exceeded_until = None;
        }
        if s.reading_until.is_some_and(|u| u <= now) {
            s.reading_until = None;
        }
        s.exceeded_until.max(s.reading_until)
    }

    /// How often each of `channels` channels that are not live can be
    /// checked, at `check_cost` units a check, within [`OFFLINE_SHARE`] of
    /// the daily budget (never more often than [`MIN_OFFLINE_INTERVAL`]).
    pub fn offline_interval(&self, channels: usize, check_cost: u64) -> Duration {
        offline_interval(self.reading_budget(), channels, check_cost)
    }
}

/// The interval between checks of each of `channels` channels at
/// `check_cost` units a check, so that the checks use [`OFFLINE_SHARE`] of
/// `daily` units a day: `86,400 s × check_cost × channels / (daily × share)`,
/// at least [`MIN_OFFLINE_INTERVAL`].
pub fn offline_interval(daily: u64, channels: usize, check_cost: u64) -> Duration {
    let per_day = (daily as f64 * OFFLINE_SHARE).max(1.0);
    let secs = 86_400.0 * check_cost as f64 * channels.max(1) as f64 / per_day;
    Duration::from_secs_f64(secs).max(MIN_OFFLINE_INTERVAL)
}

/// The UTC offset of US Pacific time at `utc` (hours): -7 while daylight
/// saving time is on (from 02:00 on the second Sunday of March to 02:00 on
/// the first Sunday of November, local time), else -8.
pub fn pacific_offset_hours(utc: DateTime<Utc>) -> i64 {
    let year = utc.year();
    // 02:00 PST = 10:00 UTC; 02:00 PDT = 09:00 UTC.
    let start = nth_sunday(year, 3, 2).and_hms_opt(10, 0, 0).expect("valid");
    let end = nth_sunday(year, 11, 1).and_hms_opt(9, 0, 0).expect("valid");
    let naive = utc.naive_utc();
    if naive >= start && naive < end {
        -7
    } else {
        -8
    }
}

/// The `n`th Sunday of `month` in `year`.
fn nth_sunday(year: i32, month: u32, n: u32) -> NaiveDate {
    let first = NaiveDate::from_ymd_opt(year, month, 1).expect("valid month");
    let to_sunday = (7 - first.weekday().num_days_from_sunday()) % 7;
    let first_sunday = first + Days::new(u64::from(to_sunday));
    debug_assert_eq!(first_sunday.weekday(), Weekday::Sun);
    first_sunday + Days::new(7 * u64::from(n - 1))
}

/// The Pacific calendar date at `utc`.
pub fn pacific_date(utc: DateTime<Utc>) -> NaiveDate {
    (utc + chrono::Duration::hours(pacific_offset_hours(utc))).date_naive()
}

/// The next midnight Pacific time after `utc`, when YouTube resets the
/// daily quota.
pub fn next_reset(utc: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = pacific_date(utc) + Days::new(1);
    let midnight = tomorrow.and_hms_opt(0, 0, 0).expect("valid");
    // Daylight saving time changes at 02:00, never at midnight: midnight in
    // standard time (08:00 UTC) unless daylight time is on then (07:00).
    let standard = Utc.from_utc_datetime(&(midnight + chrono::Duration::hours(8)));
    if pacific_offset_hours(standard) == -7 {
        standard - chrono::Duration::hours(1)
    } else {
        standard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn pacific_time_follows_us_daylight_saving() {
        // 2026: DST from 8 March 10:00 UTC to 1 November 09:00 UTC.
        assert_eq!(pacific_offset_hours(utc("2026-01-15T12:00:00Z")), -8);
        assert_eq!(pacific_offset_hours(utc("2026-03-08T09:59:59Z")), -8);
        assert_eq!(pacific_offset_hours(utc("2026-03-08T10:00:00Z")), -7);
        assert_eq!(pacific_offset_hours(utc("2026-07-04T00:00:00Z")), -7);
        assert_eq!(pacific_offset_hours(utc("2026-11-01T08:59:59Z")), -7);
        assert_eq!(pacific_offset_hours(utc("2026-11-01T09:00:00Z")), -8);
        assert_eq!(nth_sunday(2027, 3, 2).to_string(), "2027-03-14");
        assert_eq!(nth_sunday(2027, 11, 1).to_string(), "2027-11-07");
    }

    #[test]
    fn the_quota_resets_at_the_next_pacific_midnight() {
        // Winter: midnight PST = 08:00 UTC.
        assert_eq!(
            next_reset(utc("2026-01-15T07:59:00Z")),
            utc("2026-01-15T08:00:00Z")
        );
        assert_eq!(
            next_reset(utc("2026-01-15T08:00:00Z")),
            utc("2026-01-16T08:00:00Z")
        );
        // Summer: midnight PDT = 07:00 UTC.
        assert_eq!(
            next_reset(utc("2026-07-04T18:30:00Z")),
            utc("2026-07-05T07:00:00Z")
        );
        // The day DST starts, and the day it ends.
        assert_eq!(
            next_reset(utc("2026-03-08T12:00:00Z")),
            utc("2026-03-09T07:00:00Z")
        );
        assert_eq!(
            next_reset(utc("2026-10-31T12:00:00Z")),
            utc("2026-11-01T07:00:00Z")
        );
        assert_eq!(
            next_reset(utc("2026-11-01T12:00:00Z")),
            utc("2026-11-02T08:00:00Z")
        );
    }

    #[test]
    fn spending_is_counted_per_pacific_day() {
        let q = Quota::new(10_000, None);
        let t = utc("2026-01-15T07:00:00Z");
        q.spend(Call::SearchList, t).unwrap();
        q.spend(Call::VideosList, t).unwrap();
        q.spend(Call::StreamList, t).unwrap();
        assert_eq!(q.spent_today(t), 106);
        // 08:00 UTC is midnight in Los Angeles: a new day.
        let next = utc("2026-01-15T08:00:01Z");
        assert_eq!(q.spent_today(next), 0);
        q.spend(Call::ChannelsList, next).unwrap();
        assert_eq!(q.spent_today(next), 1);
    }

    #[test]
    fn the_daily_budget_is_never_passed_and_polls_are_paced_to_it() {
        let q = Quota::new(500, None);
        let t = utc("2026-01-15T20:00:00Z");
        let mut polls = 0;
        while q.spend(Call::LiveChatMessagesList, t).is_ok() {
            polls += 1;
        }
        assert_eq!(polls, 100, "500 units at 5 a poll");
        assert_eq!(q.spent_today(t), 500);
        // Every call waits for the reset, a 1-unit one too.
        assert_eq!(q.spend(Call::VideosList, t), Err(utc("2026-01-16T08:00:00Z")));
        assert_eq!(q.blocked_until(t), Some(utc("2026-01-16T08:00:00Z")));
        // Half of 500 units for polls: 86,400 s × 5 / 250 = 1,728 s apart.
        assert_eq!(q.poll_interval(1), Duration::from_secs(1_728));
        assert_eq!(Quota::new(10_000, None).poll_interval(2).as_secs_f64(), 172.8);
    }

    #[test]
    fn the_commands_share_is_theirs_alone() {
        // 1,000 units, 10 % for commands: 900 for reading, 100 for writes.
        let q = Quota::new(1_000, None).with_command_share(0.1);
        let t = utc("2026-01-15T20:00:00Z");
        assert_eq!(q.command_budget(), 100);
        let mut polls = 0;
        while q.spend(Call::LiveChatMessagesList, t).is_ok() {
            polls += 1;
        }
        assert_eq!(polls, 180, "900 units at 5 a poll");
        // Reading spent its share; commands still have theirs.
        q.spend_command(Call::LiveChatMessagesInsert, t).unwrap();
        q.spend_command(Call::LiveChatBansInsert, t).unwrap();
        assert_eq!(q.spent_today(t), 970);
        // 70 of 100 spent: another 50 does not fit, a 20 does.
        assert!(q.spend_command(Call::LiveChatBansDelete, t).is_err());
        q.spend_command(Call::LiveChatMessagesDelete, t).unwrap();
        // A new Pacific day: both shares afresh.
        let next = utc("2026-01-16T08:00:01Z");
        q.spend_command(Call::LiveChatBansInsert, next).unwrap();
        q.spend(Call::VideosList, next).unwrap();
        // YouTube's quotaExceeded stops commands too.
        q.exceeded(next);
        assert!(q.spend_command(Call::LiveChatMessagesInsert, next).is_err());
        // Without a share, commands have nothing.
        let none = Quota::new(1_000, None);
        assert!(none.spend_command(Call::LiveChatMessagesInsert, t).is_err());
    }

    #[test]
    fn quota_exceeded_blocks_until_the_reset_or_the_configured_wait() {
        let t = utc("2026-01-15T20:00:00Z");
        let q = Quota::new(10_000, None);
        assert_eq!(q.blocked_until(t), None);
        assert_eq!(q.exceeded(t), utc("2026-01-16T08:00:00Z"));
        assert_eq!(q.blocked_until(t), Some(utc("2026-01-16T08:00:00Z")));
        assert_eq!(q.blocked_until(utc("2026-01-16T08:00:00Z")), None);

        let q = Quota::new(10_000, Some(Duration::from_secs(90)));
        assert_eq!(q.exceeded(t), utc("2026-01-15T20:01:30Z"));
    }

    #[test]
    fn the_offline_interval_fits_the_budget() {
        // Uploads check (2 units), 1 channel, 10,000 units: 86,400 × 2 / 5,000
        // = 34.6 s, raised to the 60 s floor.
        assert_eq!(offline_interval(10_000, 1, 2), Duration::from_secs(60));
        // 10 channels: 345.6 s.
        assert_eq!(offline_interval(10_000, 10, 2).as_millis(), 345_600);
        // search.list + videos.list (101 units), 1 channel: 1,745.28 s.
        assert_eq!(offline_interval(10_000, 1, 101).as_millis(), 1_745_280);
        // And the checks of n channels then spend half the quota a day.
        for n in [10, 25, 50] {
            let i = offline_interval(10_000, n, 2).as_secs_f64();
            let units = 86_400.0 / i * 2.0 * n as f64;
            assert!((units - 5_000.0).abs() < 1.0, "{n}: {units}");
        }
    }

    #[test]
    fn a_fleet_member_counts_what_another_spent_today_and_not_yesterday() {
        let now = Utc::now();
        let a = Quota::new(10_000, None);
        let b = Quota::new(10_000, None);
        for _ in 0..4 {
            a.spend(Call::LiveChatMessagesList, now).unwrap();
        }
        b.adopt(&a.shared_state(now), now);
        assert_eq!(b.spent_today(now), 20);
        // Its own count never goes down.
        b.adopt(&Quota::new(10_000, None).shared_state(now), now);
        assert_eq!(b.spent_today(now), 20);
        let yesterday = serde_json::json!({"day": "2000-01-01", "spent": 9000, "commands_spent": 0});
        b.adopt(&yesterday, now);
        assert_eq!(b.spent_today(now), 20);
    }
}