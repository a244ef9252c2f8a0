//! The one duration syntax of every flag: a number with a unit (`1500ms`,
//! `2s`, `5m`, `1h 30m`), parsed by humantime. A bare number is refused: `40`
//! meant seconds in one binary and milliseconds in another before.

use std::time::Duration;

/// The longest duration any flag takes. Far beyond every sensible setting,
/// and small enough that adding it to a clock reading can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a duration with a unit; refuses bare numbers and anything longer
/// than [`MAX_DURATION`]. For clap: `#[arg(value_parser = parse_duration)]`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "{s:?} has no unit; write e.g. {s}ms or {s}s (units: ms, s, m, h, d)"
        ));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 500ms, 10s, 2m or 1h: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is longer than the limit of 10 years"));
    }
    Ok(d)
}

/// Flags of `cmd` (and its subcommands) that take a duration but do not show
/// it as `<DURATION>` in `--help`: a flag whose default value is a duration
/// with a unit, or whose value name is missing while another says DURATION.
/// Each binary's tests call this on its clap command, so a new duration flag
/// cannot slip in with a bare `<VALUE>`.
pub fn duration_flags_without_value_name(cmd: &clap::Command) -> Vec<String> {
    let mut found = Vec::new();
    collect_unnamed(cmd, cmd.get_name(), &mut found);
    found
}

fn collect_unnamed(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let named = arg
            .get_value_names()
            .is_some_and(|names| names.iter().any(|n| n.as_str().contains("DURATION")));
        let duration_default = arg.get_default_values().iter().any(|v| {
            v.to_str().is_some_and(|v| {
                v.starts_with(|c: char| c.is_ascii_digit()) && parse_duration(v).is_ok()
            })
        });
        if duration_default && !named {
            found.push(format!("{path} --{}", arg.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        collect_unnamed(sub, &format!("{path} {}", sub.get_name()), found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_must_say_duration() {
        #[allow(dead_code)]
        #[derive(clap::Parser)]
        struct Good {
            #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
            wait: Duration,
            #[arg(long, default_value = "3")]
            count: u32,
        }
        #[allow(dead_code)]
        #[derive(clap::Parser)]
        struct Bad {
            #[arg(long, default_value = "5s", value_parser = parse_duration)]
            wait: Duration,
        }
        use clap::CommandFactory;
        assert!(duration_flags_without_value_name(&Good::command()).is_empty());
        assert_eq!(
            duration_flags_without_value_name(&Bad::command()),
            vec!["meshwatch-entry --wait".to_owned()]
        );
    }

    #[test]
    fn units_are_required_and_mean_one_thing() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["40", "1.5", "", "-1s", "2 weeks later", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_duration("40").unwrap_err().contains("no unit"));
    }

    #[test]
    fn huge_values_are_errors_not_panics() {
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("11years").is_err());
        assert!(parse_duration("3650d").is_ok());
    }
}
