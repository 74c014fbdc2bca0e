//! The duration grammar of `#[timeout(after = "..")]`: a positive whole
//! number directly followed by a unit, `ms`, `s`, `m`, `h` or `d`
//! (`"30m"`, `"90s"`, `"1500ms"`), read as whole milliseconds.

/// The units, longest spelling first so that `ms` is not read as `m` + `s`.
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// What every duration error ends with: how to write one.
const HOW: &str = "write a positive whole number directly followed by a unit (`ms`, `s`, `m`, `h` or `d`), as in \"30m\"";

/// Parses a duration in milliseconds, or says in plain words what is wrong
/// with it (the message names the text and shows how to write one).
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let fail = |reason: &str| Err(format!("invalid duration \"{text}\": {reason}; {HOW}"));
    if text.trim().is_empty() {
        return fail("it is empty");
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return if text.starts_with('-') {
            fail("a timeout cannot be negative")
        } else {
            fail("it does not start with a number")
        };
    }
    if unit.starts_with(['.', ',']) {
        return fail("the number must be whole: use a smaller unit (\"90m\" rather than \"1.5h\")");
    }
    if unit.is_empty() {
        return fail("the unit is missing");
    }
    let Some(&(_, factor)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        let trimmed = unit.trim();
        return if UNITS.iter().any(|(name, _)| *name == trimmed) {
            fail("no space is allowed in a duration")
        } else {
            fail(&format!("unknown unit `{trimmed}`"))
        };
    };
    let too_long = || {
        fail(&format!(
            "it is longer than the longest timeout, {} ms (about 584 million years)",
            u64::MAX
        ))
    };
    let Ok(count) = number.parse::<u64>() else {
        return too_long();
    };
    if count == 0 {
        return fail("a timeout of zero would fire at once");
    }
    match count.checked_mul(factor) {
        Some(ms) => Ok(ms),
        None => too_long(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn every_unit() {
        assert_eq!(parse_ms("1500ms"), Ok(1_500));
        assert_eq!(parse_ms("90s"), Ok(90_000));
        assert_eq!(parse_ms("30m"), Ok(1_800_000));
        assert_eq!(parse_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_ms("1ms"), Ok(1));
    }

    #[test]
    fn largest_values() {
        assert_eq!(parse_ms(&format!("{}ms", u64::MAX)), Ok(u64::MAX));
        assert!(parse_ms(&format!("{}s", u64::MAX)).is_err());
        assert!(parse_ms("18446744073709551616ms").is_err());
        assert!(parse_ms("213503982335d").is_err());
        assert_eq!(parse_ms("213503982334d"), Ok(213_503_982_334 * 86_400_000));
    }

    fn reason(text: &str) -> String {
        parse_ms(text).expect_err(text)
    }

    #[test]
    fn malformed() {
        assert!(reason("30").contains("the unit is missing"));
        assert!(reason("m").contains("does not start with a number"));
        assert!(reason("-5m").contains("cannot be negative"));
        assert!(reason("0s").contains("zero"));
        assert!(reason("000ms").contains("zero"));
        assert!(reason("5 weeks").contains("unknown unit `weeks`"));
        assert!(reason("5 m").contains("no space"));
        assert!(reason("1.5h").contains("whole"));
        assert!(reason("").contains("empty"));
        assert!(reason(" ").contains("empty"));
        assert!(reason("+5m").contains("does not start with a number"));
        assert!(reason("5M").contains("unknown unit `M`"));
        assert!(reason("5mss").contains("unknown unit `mss`"));
        assert!(reason("30m ").contains("no space"));
        assert!(reason("99999999999999999999999m").contains("longer than"));
        assert!(reason("30").starts_with("invalid duration \"30\": "));
        assert!(reason("30").ends_with("as in \"30m\""));
    }
}
