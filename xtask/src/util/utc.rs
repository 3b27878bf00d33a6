//! UTC times from Unix seconds, formatted without a time zone database.

/// Civil date and time (year, month, day, hour, minute, second) of Unix seconds, in UTC.
fn civil(epoch_seconds: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = epoch_seconds.div_euclid(86_400);
    let seconds_of_day = epoch_seconds.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
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
    (
        year,
        month,
        day,
        (seconds_of_day / 3600) as u32,
        (seconds_of_day % 3600 / 60) as u32,
        (seconds_of_day % 60) as u32,
    )
}

/// RFC 3339, e.g. `2026-11-23T22:32:05Z`.
pub fn rfc3339(epoch_seconds: i64) -> String {
    let (year, month, day, hour, minute, second) = civil(epoch_seconds);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// Compact and safe in file names, e.g. `20261123T223205Z`.
pub fn compact(epoch_seconds: i64) -> String {
    let (year, month, day, hour, minute, second) = civil(epoch_seconds);
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z")
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_473_125), "2026-11-23T22:32:05Z");
        assert_eq!(compact(1_795_473_125), "20261123T223205Z");
    }
}
