//! `keyscribe cache dir|list|clear`: the cache of analyses that `summarize` and `search`
//! reuse.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};

use keyscribe::cache::AnalysisCache;

use super::io::write_stdout;
use super::print;

/// Arguments of `keyscribe cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
}

#[derive(Debug, Subcommand)]
enum CacheAction {
    /// Print the cache directory ($KEYSCRIBE_CACHE_DIR, else $XDG_CACHE_HOME/keyscribe, else
    /// ~/.cache/keyscribe).
    Dir,
    /// List the cached analyses: when each was made, its size and the video it describes.
    List {
        /// Print the list as JSON on stdout: [{"key", "video", "modified", "bytes"}].
        #[arg(long)]
        json: bool,
    },
    /// Remove every cached analysis and say how much space that freed. Model weights live
    /// in the Hugging Face cache and are not touched (see `keyscribe models`).
    Clear,
}

/// Runs a `cache` action.
pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let cache = AnalysisCache::from_env();
    let root = cache.root().display().to_string();
    match args.action {
        CacheAction::Dir => write_stdout(format!("{root}\n").as_bytes()),
        CacheAction::List { json } => {
            let entries = cache
                .entries()
                .with_context(|| format!("reading the cache {root}"))?;
            if json {
                let rows: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|entry| {
                        serde_json::json!({
                            "key": entry.key,
                            "video": entry.video,
                            "modified": entry.modified.map(utc_date),
                            "bytes": entry.bytes,
                        })
                    })
                    .collect();
                return write_stdout(
                    format!("{}\n", serde_json::to_string_pretty(&rows)?).as_bytes(),
                );
            }
            let text: String = entries
                .iter()
                .map(|entry| {
                    format!(
                        "{}  {:>10}  {}\n",
                        entry
                            .modified
                            .map(utc_date)
                            .unwrap_or_else(|| "?".repeat(20)),
                        human_bytes(entry.bytes),
                        entry.video.as_deref().unwrap_or("(unreadable analysis)")
                    )
                })
                .collect();
            write_stdout(text.as_bytes())?;
            let total: u64 = entries.iter().map(|entry| entry.bytes).sum();
            print::note(format_args!(
                "{}, {} in {root}",
                analyses(entries.len()),
                human_bytes(total)
            ));
            Ok(())
        }
        CacheAction::Clear => {
            let cleared = cache
                .clear()
                .with_context(|| format!("clearing the cache {root}"))?;
            print::note(format_args!(
                "removed {} ({}) from {root}; model weights were left alone",
                analyses(cleared.entries),
                human_bytes(cleared.bytes)
            ));
            Ok(())
        }
    }
}

/// `1 cached analysis`, `2 cached analyses`.
fn analyses(count: usize) -> String {
    if count == 1 {
        "1 cached analysis".to_string()
    } else {
        format!("{count} cached analyses")
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_date(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default();
    let days = (seconds / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let clock = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        clock / 3600,
        clock / 60 % 60,
        clock % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A size in bytes for people: `812 B`, `3.4 KiB`, `1.2 MiB`, `2.0 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_utc_calendar_dates() {
        let at = |seconds: u64| utc_date(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        // 2000-02-29 (a leap day in a century year) 12:34:56.
        assert_eq!(at(951_827_696), "2000-02-29 12:34:56 UTC");
        // 2026-12-31 23:59:59.
        assert_eq!(at(1_798_761_599), "2026-12-31 23:59:59 UTC");
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
