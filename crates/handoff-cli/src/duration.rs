//! Durations on the command line: `500ms`, `30s`, `2m`, `1h`, or several
//! of them run together (`1m30s`).

use std::time::Duration;

/// Parse a duration such as `500ms`, `30s`, `2m`, `1h` or `1m30s`. Every
/// number needs a unit, so `30` is refused rather than guessed.
pub fn parse(text: &str) -> Result<Duration, String> {
    let err =
        |why: &str| format!("invalid duration {text:?}: {why} (examples: 500ms, 30s, 2m, 1h)");
    if text.is_empty() {
        return Err(err("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("the number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| err("it is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| err("it is too large"))?;
    }
    Ok(total)
}

/// Write a duration the way [`parse`] reads it (`1m30s`, `500ms`, `0ms`),
/// to whole milliseconds.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0ms".to_string();
    }
    let units: [(u128, &str); 4] = [(3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")];
    let mut rest = ms;
    let mut out = String::new();
    for (size, unit) in units {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn accepts_compound_durations() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
    }

    #[test]
    fn round_trips_the_format() {
        for text in ["500ms", "30s", "2m", "1h", "1m30s", "1h2m3s4ms", "0ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "", "30", "s", "soon", "1.5s", "-1s", "10 s", "5sec", "1d", "3ms4", " 1s", "1s ",
        ] {
            assert!(parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn rejects_overflow() {
        assert!(
            parse("99999999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse("18446744073709551615h")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn error_quotes_the_input() {
        let err = parse("soon").unwrap_err();
        assert!(err.starts_with("invalid duration \"soon\""), "{err}");
    }
}
