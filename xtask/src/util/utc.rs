//! UTC times from Unix seconds, formatted and read back without a time zone database.

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

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days-from-civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Reads a point in time with its offset, as PostgreSQL and RFC 3339 write it, into Unix
/// microseconds: `2026-12-06 14:05:00+01`, `2026-12-06T13:05:00.25Z`, `2026-12-06 13:05+0000`.
/// A time without an offset is refused: it means another instant in every time zone.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    let usage = "write it with its offset, e.g. '2026-12-06 14:05:00+01' or 2026-12-06T13:05:00Z";
    let bad = || format!("{text:?} is not a point in time; {usage}");
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() < 16 || !matches!(bytes[10], b' ' | b'T' | b't') {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<u32, String> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    if bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return Err(bad());
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute) = (number(11..13)?, number(14..16)?);
    let mut rest = &text[16..];
    let mut second = 0;
    let mut micros = 0i64;
    if let Some(after) = rest.strip_prefix(':') {
        second = number(17..19)?;
        rest = after.get(2..).ok_or_else(bad)?;
        if let Some(fraction) = rest.strip_prefix('.') {
            let length = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if length == 0 || length > 9 {
                return Err(bad());
            }
            let mut scaled: i64 = fraction[..length].parse().map_err(|_| bad())?;
            for _ in length..6 {
                scaled *= 10;
            }
            for _ in 6..length {
                scaled /= 10;
            }
            micros = scaled;
            rest = &fraction[length..];
        }
    }
    let offset_seconds: i64 = match rest {
        "Z" | "z" => 0,
        "" => {
            return Err(format!(
                "{text:?} has no offset, so it names a different instant in every time zone; {usage}"
            ));
        }
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if !digits.bytes().all(|byte| byte.is_ascii_digit())
                || !matches!(digits.len(), 2 | 4)
                || rest[1..].len() > 5
            {
                return Err(bad());
            }
            let hours: i64 = digits[..2].parse().map_err(|_| bad())?;
            let minutes: i64 = if digits.len() == 4 {
                digits[2..].parse().map_err(|_| bad())?
            } else {
                0
            };
            if hours > 15 || minutes > 59 {
                return Err(bad());
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 0,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return Err(format!("{text:?} names no real date and time; {usage}"));
    }
    let seconds = days_from_civil(i64::from(year), month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_seconds;
    Ok(seconds * 1_000_000 + micros)
}

/// Unix microseconds as PostgreSQL reads them back exactly: `2026-12-06 13:05:00.250000+00`.
pub fn postgres_instant(micros: i64) -> String {
    let (year, month, day, hour, minute, second) = civil(micros.div_euclid(1_000_000));
    let fraction = micros.rem_euclid(1_000_000);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{fraction:06}+00")
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

    #[test]
    fn instants_are_read_with_their_offset_and_written_back_for_postgres() {
        let base = 1_795_473_125 * 1_000_000;
        assert_eq!(parse_instant("2026-11-23T22:32:05Z"), Ok(base));
        assert_eq!(parse_instant("2026-11-23 23:32:05+01"), Ok(base));
        assert_eq!(parse_instant("2026-11-23 21:02:05-01:30"), Ok(base));
        assert_eq!(
            parse_instant("2026-11-23 22:32:05.25+0000"),
            Ok(base + 250_000)
        );
        assert_eq!(parse_instant("2026-11-23 22:32+00"), Ok(base - 5_000_000));
        assert_eq!(
            postgres_instant(base + 250_000),
            "2026-11-23 22:32:05.250000+00"
        );
        assert_eq!(parse_instant(&postgres_instant(base + 7)), Ok(base + 7));
        assert_eq!(
            parse_instant("2000-02-29T00:00:00Z"),
            Ok(951_782_400 * 1_000_000)
        );
        for refused in [
            "2026-11-23 22:32:05",
            "yesterday",
            "2026-02-30 10:00:00Z",
            "2026-11-23 25:00:00Z",
            "2026-11-23T22:32:05+1",
            "2026-11-23T22:32:05 +01",
        ] {
            let error = parse_instant(refused).unwrap_err();
            assert!(error.contains(refused), "{error}");
            assert!(error.contains("offset"), "{error}");
        }
    }
}
