//! The rules in force for a service (router or gateway), read from a file
//! and hot-reloaded.
//!
//! The file is polled on an interval and re-parsed only when its content
//! changes. A file that parses replaces the active rules in one swap of an
//! `Arc<Rules>`, so a request sees either the old rules or the new ones,
//! never a mix. A file that does not parse is refused: each problem is
//! logged as `FILE:LINE:COL: message` and kept for the API to show, and the
//! old rules stay in force.
//!
//! The iCalendar feeds a rules file names (`holidays_ics`, beside it) are
//! part of its content: they are read with it, and a change to one reloads
//! the rules as a change to the file does.
//!
//! Boundary: file reading and the reload loop only; every answer about the
//! rules comes from `meridian-rules`, which stays free of I/O.

#![forbid(unsafe_code)]

use std::{
    collections::hash_map::DefaultHasher,
    hash::Hasher,
    path::{Path, PathBuf},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use meridian_rules::{Roster, Rules, RulesErrors};
use tokio::time::MissedTickBehavior;

/// The largest rules file read. The example for three regions with two
/// years of holidays is about 10 KiB; anything near this is a wrong path.
pub const RULES_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The largest `.ics` feed read. A country's holidays for twenty years are
/// about 40 KiB.
pub const ICS_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read; the message names it.
    #[error("{0}")]
    File(String),
    /// The file was read but refused; one `FILE:LINE:COL: message` a line.
    #[error("{0}")]
    Refused(RulesErrors),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The rules in force, and why the file on disk is not (when it is not).
#[derive(Debug)]
pub struct ActiveRules {
    current: RwLock<Arc<Rules>>,
    /// Problems of the last file refused since the current rules were
    /// loaded; empty when the file on disk is the one in force.
    refused: RwLock<Arc<[String]>>,
    /// Files refused since start, and when the last one was (Unix seconds).
    refusals: AtomicU64,
    last_refused_unix_s: AtomicU64,
}

impl ActiveRules {
    pub fn new(rules: Rules) -> Self {
        Self {
            current: RwLock::new(Arc::new(rules)),
            refused: RwLock::new(Arc::from([])),
            refusals: AtomicU64::new(0),
            last_refused_unix_s: AtomicU64::new(0),
        }
    }

    /// The rules in force now. Callers hold the `Arc` for a whole request,
    /// so a reload in the middle of it changes nothing they see.
    pub fn current(&self) -> Arc<Rules> {
        // A poisoned lock still holds a whole `Arc` (a swap cannot be half
        // done), so its value is safe to use.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the file on disk is not in force; empty when it is.
    pub fn refused(&self) -> Arc<[String]> {
        self.refused
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Files refused (unreadable or invalid) since start.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// When a file was last refused, in seconds since the Unix epoch; 0
    /// when none was.
    pub fn last_refused_unix_s(&self) -> u64 {
        self.last_refused_unix_s.load(Ordering::Relaxed)
    }

    fn install(&self, rules: Rules) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
        self.set_refused(Vec::new());
    }

    fn set_refused(&self, problems: Vec<String>) {
        if !problems.is_empty() {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.last_refused_unix_s.store(now, Ordering::Relaxed);
        }
        *self.refused.write().unwrap_or_else(PoisonError::into_inner) = Arc::from(problems);
    }
}

/// A rules file and the rules loaded from it.
#[derive(Debug, Clone)]
pub struct RulesSource {
    pub path: PathBuf,
    pub active: Arc<ActiveRules>,
    loaded_hash: u64,
    /// The feeds the last parse asked for, watched with the file.
    feeds: Vec<String>,
}

impl RulesSource {
    /// Loads the rules at start: a file that cannot be read or parsed is an
    /// error, since there are no old rules to keep.
    pub async fn load(path: &Path) -> Result<RulesSource> {
        let (text, hash) = read(path).await.map_err(Error::File)?;
        let (parsed, feeds) = parse(path, text).await;
        let rules = parsed?;
        let hash = with_feeds(path, hash, &feeds).await;
        tracing::info!(rules_version = %rules.version_id(), file = %path.display(), "rules loaded");
        Ok(RulesSource {
            path: path.to_owned(),
            active: Arc::new(ActiveRules::new(rules)),
            loaded_hash: hash,
            feeds,
        })
    }

    /// Polls the file every `interval` and installs each new version that
    /// parses, calling `on_install` with it first. Runs until the task is
    /// dropped or aborted.
    pub async fn watch(self, interval: Duration, on_install: impl Fn(&Rules) + Send) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick completes at once; the file was just loaded.
        ticker.tick().await;
        // The content last looked at, good or bad: an unchanged bad file is
        // refused (and logged) once, not on every tick.
        let mut seen_hash = Some(self.loaded_hash);
        let mut feeds = self.feeds.clone();
        let active = &self.active;
        loop {
            ticker.tick().await;
            let (text, hash) = match read(&self.path).await {
                Ok(read) => read,
                Err(reason) => {
                    if seen_hash.is_some() {
                        let version = active.current().version_id();
                        tracing::warn!(rules_version = %version, problem = %reason, "rules file unreadable, the active rules stay in force");
                        active.set_refused(vec![reason]);
                    }
                    // Whatever comes back next is read afresh.
                    seen_hash = None;
                    continue;
                }
            };
            let hash = with_feeds(&self.path, hash, &feeds).await;
            if seen_hash == Some(hash) {
                continue;
            }
            let (parsed, asked) = parse(&self.path, text).await;
            // The feeds just read are the ones watched from now on.
            seen_hash = Some(if asked == feeds {
                hash
            } else {
                with_feeds(&self.path, hash, &asked).await
            });
            feeds = asked;
            match parsed {
                Ok(rules) => {
                    let previous = active.current().version_id();
                    tracing::info!(rules_version = %rules.version_id(), previous = %previous, file = %self.path.display(), "rules reloaded");
                    on_install(&rules);
                    active.install(rules);
                }
                Err(error) => {
                    let problems: Vec<String> = match error {
                        Error::Refused(errors) => errors.iter().map(ToString::to_string).collect(),
                        Error::File(reason) => vec![reason],
                    };
                    let version = active.current().version_id();
                    for problem in &problems {
                        tracing::error!(rules_version = %version, problem = %problem, "rules file refused, the active rules stay in force");
                    }
                    active.set_refused(problems);
                }
            }
        }
    }
}

/// The file's text and a hash of its bytes.
async fn read(path: &Path) -> std::result::Result<(String, u64), String> {
    let label = path.display();
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.len() > RULES_FILE_BYTES_MAX => {
            return Err(format!(
                "{label}: is {} bytes; a rules file may have at most {RULES_FILE_BYTES_MAX}",
                meta.len()
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(format!("{label}: cannot read: {e}")),
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("{label}: cannot read: {e}"))?;
    let mut hasher = DefaultHasher::new();
    hasher.write(&bytes);
    let hash = hasher.finish();
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{label}: is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok((text, hash))
}

/// The rules file's hash combined with its feeds' names and bytes (a feed
/// that cannot be read counts as its error), so a changed feed reloads.
async fn with_feeds(path: &Path, hash: u64, feeds: &[String]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write_u64(hash);
    for feed in feeds {
        hasher.write(feed.as_bytes());
        match tokio::fs::read(beside(path, feed)).await {
            Ok(bytes) => hasher.write(&bytes),
            Err(e) => hasher.write(e.to_string().as_bytes()),
        }
    }
    hasher.finish()
}

fn beside(path: &Path, feed: &str) -> PathBuf {
    path.parent().unwrap_or(Path::new(".")).join(feed)
}

/// Reads a feed for the parser (which has checked the name is a plain
/// file name), with the size limit.
fn read_feed(path: &Path, feed: &str) -> std::result::Result<String, String> {
    let file = beside(path, feed);
    let meta = std::fs::metadata(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if meta.len() > ICS_FILE_BYTES_MAX {
        return Err(format!(
            "{} is {} bytes; a feed may have at most {ICS_FILE_BYTES_MAX}",
            file.display(),
            meta.len()
        ));
    }
    std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))
}

/// Parsing a large file takes milliseconds; keep it off the async workers.
/// Also returns the feeds the rules asked for, read or not.
async fn parse(path: &Path, text: String) -> (Result<Rules>, Vec<String>) {
    let name = path.display().to_string();
    let owned = path.to_owned();
    let parsed = tokio::task::spawn_blocking(move || {
        let asked = std::sync::Mutex::new(Vec::<String>::new());
        let read = |feed: &str| {
            asked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(feed.to_owned());
            read_feed(&owned, feed)
        };
        let parsed = Rules::parse_with_files(&name, &text, &read);
        (
            parsed,
            asked.into_inner().unwrap_or_else(PoisonError::into_inner),
        )
    })
    .await;
    match parsed {
        Ok((parsed, asked)) => (parsed.map_err(Error::Refused), asked),
        Err(join) => (
            Err(Error::File(format!(
                "{}: the rules parser failed: {join}",
                path.display()
            ))),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../../deploy/rules.example.toml");

    #[tokio::test]
    async fn a_bad_file_leaves_the_old_rules_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, GOOD).unwrap();
        let source = RulesSource::load(&path).await.unwrap();
        let active = source.active.clone();
        let first = active.current().version_id();
        let installed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = installed.clone();
        let watcher = tokio::spawn(source.watch(Duration::from_millis(20), move |rules| {
            seen.lock().unwrap().push(rules.version_id());
        }));

        std::fs::write(
            &path,
            GOOD.replacen("overlap_minutes", "overlap_minutes_typo", 1),
        )
        .unwrap();
        let refused = wait_for(|| !active.refused().is_empty()).await;
        assert!(refused, "the broken file is refused");
        assert!(
            active.refused()[0].starts_with(&format!("{}:", path.display())),
            "{:?}",
            active.refused()
        );
        assert_eq!(active.refusals(), 1, "one bad file, one refusal");
        assert!(
            active.last_refused_unix_s() > 1_700_000_000,
            "{}",
            active.last_refused_unix_s()
        );
        assert_eq!(
            active.current().version_id(),
            first,
            "old rules stay in force"
        );

        let changed = GOOD.replacen("version = \"", "version = \"v2-", 1);
        std::fs::write(&path, &changed).unwrap();
        assert!(
            wait_for(|| active.current().version_id() != first).await,
            "the fixed file is picked up"
        );
        assert!(active.refused().is_empty());
        assert_eq!(installed.lock().unwrap().len(), 1);
        watcher.abort();

        let err = RulesSource::load(&dir.path().join("missing.toml"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.toml: cannot read"), "{err}");
    }

    const FEED: &str = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:Closed\r\n\
                        DTSTART;VALUE=DATE:20260602\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[tokio::test]
    async fn a_changed_feed_reloads_the_rules_and_a_bad_one_is_refused_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        let feed = dir.path().join("closures.ics");
        let text = GOOD.replacen(
            "time_zone = \"Europe/Dublin\"\n",
            "time_zone = \"Europe/Dublin\"\nholidays_ics = \"closures.ics\"\n",
            1,
        );
        assert_ne!(text, GOOD);
        std::fs::write(&path, &text).unwrap();
        std::fs::write(&feed, FEED).unwrap();
        let source = RulesSource::load(&path).await.unwrap();
        let active = source.active.clone();
        // Tuesday 2 June 2026, 10:00 in Dublin: closed by the feed.
        let at: jiff::Timestamp = "2026-06-02T09:00:00Z".parse().unwrap();
        assert_eq!(active.current().on_shift("eu-west", at), Some(false));
        let watcher = tokio::spawn(source.watch(Duration::from_millis(20), |_| {}));

        std::fs::write(&feed, FEED.replace("20260602", "20260603")).unwrap();
        assert!(
            wait_for(|| active.current().on_shift("eu-west", at) == Some(true)).await,
            "the changed feed is read"
        );

        std::fs::write(
            &feed,
            FEED.replace("DTSTART;VALUE=DATE:20260602", "DTSTART:tomorrow"),
        )
        .unwrap();
        assert!(
            wait_for(|| !active.refused().is_empty()).await,
            "the broken feed is refused"
        );
        let expected = format!("{}:4:1: DTSTART", feed.display());
        assert!(
            active.refused()[0].starts_with(&expected),
            "{:?}",
            active.refused()
        );
        assert_eq!(
            active.current().on_shift("eu-west", at),
            Some(true),
            "old rules stay in force"
        );
        watcher.abort();
    }

    async fn wait_for(condition: impl Fn() -> bool) -> bool {
        for _ in 0..250 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// A region's roster in force, and why the file on disk is not (when it
/// is not). Checked against the rules in force: a rules reload that drops
/// a shift the roster names refuses the roster until one of them is fixed,
/// and the last good roster stays.
#[derive(Debug)]
pub struct ActiveRoster {
    current: RwLock<Arc<Roster>>,
    refused: RwLock<Arc<[String]>>,
}

impl ActiveRoster {
    pub fn new(roster: Roster) -> Self {
        Self {
            current: RwLock::new(Arc::new(roster)),
            refused: RwLock::new(Arc::from([])),
        }
    }

    /// The roster in force now; hold the `Arc` for a whole request.
    pub fn current(&self) -> Arc<Roster> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Problems of the last file refused; empty when the file on disk is
    /// the one in force.
    pub fn refused(&self) -> Arc<[String]> {
        self.refused
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn install(&self, roster: Roster) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(roster);
        self.set_refused(Vec::new());
    }

    fn set_refused(&self, problems: Vec<String>) {
        *self.refused.write().unwrap_or_else(PoisonError::into_inner) = Arc::from(problems);
    }
}

/// A roster file, the roster loaded from it and the rules it is checked
/// against.
#[derive(Debug, Clone)]
pub struct RosterSource {
    pub path: PathBuf,
    pub active: Arc<ActiveRoster>,
    rules: Arc<ActiveRules>,
    /// The file's hash and the rules' version it was last read with.
    seen: (u64, String),
}

impl RosterSource {
    /// Loads the roster at start, for `region`: a file that cannot be read
    /// or parsed, or that is another region's, is an error.
    pub async fn load(path: &Path, region: &str, rules: Arc<ActiveRules>) -> Result<RosterSource> {
        let (text, hash) = read(path).await.map_err(Error::File)?;
        let current = rules.current();
        let roster = parse_roster(path, &text, region, &current)?;
        tracing::info!(agents = roster.agents.len(), file = %path.display(), "roster loaded");
        Ok(RosterSource {
            path: path.to_owned(),
            active: Arc::new(ActiveRoster::new(roster)),
            seen: (hash, current.version_id()),
            rules,
        })
    }

    /// Polls the file (and the rules in force) every `interval`, installing
    /// each roster that parses for the current rules. Runs until aborted.
    pub async fn watch(mut self, region: String, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let rules = self.rules.current();
            let (text, hash) = match read(&self.path).await {
                Ok(read) => read,
                Err(reason) => {
                    if self.seen.0 != 0 {
                        tracing::warn!(problem = %reason, "roster file unreadable, the active roster stays in force");
                        self.active.set_refused(vec![reason]);
                    }
                    self.seen.0 = 0;
                    continue;
                }
            };
            let seen = (hash, rules.version_id());
            if seen == self.seen {
                continue;
            }
            self.seen = seen;
            match parse_roster(&self.path, &text, &region, &rules) {
                Ok(roster) => {
                    tracing::info!(agents = roster.agents.len(), file = %self.path.display(), "roster reloaded");
                    self.active.install(roster);
                }
                Err(error) => {
                    let problems: Vec<String> = match error {
                        Error::Refused(errors) => errors.iter().map(ToString::to_string).collect(),
                        Error::File(reason) => vec![reason],
                    };
                    for problem in &problems {
                        tracing::error!(problem = %problem, "roster file refused, the active roster stays in force");
                    }
                    self.active.set_refused(problems);
                }
            }
        }
    }
}

fn parse_roster(path: &Path, text: &str, region: &str, rules: &Rules) -> Result<Roster> {
    let label = path.display().to_string();
    let roster = Roster::parse(&label, text, rules).map_err(Error::Refused)?;
    if roster.region.as_str() != region {
        return Err(Error::File(format!(
            "{label}: is the roster of {}, not of this gateway's region {region}",
            roster.region
        )));
    }
    Ok(roster)
}
