//! The exit codes of every meshwatch binary (sysexits where one fits), and the
//! clap entry that maps a bad flag to one line and [`Exit::Usage`].

use std::ffi::OsString;
use std::fmt::Display;
use std::process::ExitCode;

/// Why a binary stopped. A wrapped child's own code (the shipper) is passed
/// through as is and is not one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Clean stop.
    Ok,
    /// A failure while running (1).
    Runtime,
    /// Bad flags or environment (EX_USAGE, 64).
    Usage,
    /// A needed resource is unavailable: cannot bind, cannot start (EX_UNAVAILABLE, 69).
    Unavailable,
    /// A file or lock cannot be created, e.g. the data dir is held by another
    /// process (EX_CANTCREAT, 73).
    CantCreate,
}

impl Exit {
    /// The numeric process exit code.
    pub const fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Runtime => 1,
            Self::Usage => 64,
            Self::Unavailable => 69,
            Self::CantCreate => 73,
        }
    }

    /// Prints `program: message` on stderr and returns this exit code.
    pub fn fail(self, program: &str, message: impl Display) -> ExitCode {
        eprintln!("{program}: {message}");
        self.into()
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

impl From<Exit> for i32 {
    fn from(exit: Exit) -> Self {
        i32::from(exit.code())
    }
}

/// Parses the process arguments into `A`. `--help` and `--version` print and
/// return `Err(Exit::Ok)`; a bad flag prints one line naming it
/// (`order: invalid value 'x' for '--listen <ADDR>': … (see order --help)`)
/// and returns `Err(Exit::Usage)`.
pub fn parse_args<A: clap::Parser>(program: &str) -> Result<A, Exit> {
    parse_args_from(program, std::env::args_os())
}

/// [`parse_args`] over explicit arguments (the first is the program name).
pub fn parse_args_from<A, I, T>(program: &str, args: I) -> Result<A, Exit>
where
    A: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match A::try_parse_from(args) {
        Ok(a) => Ok(a),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(Exit::Ok)
        }
        Err(e) => {
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            Exit::Usage.fail(program, format_args!("{first} (see {program} --help)"));
            Err(Exit::Usage)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Demo {
        #[arg(long, value_parser = crate::parse_duration)]
        wait: Option<std::time::Duration>,
    }

    #[test]
    fn codes_are_the_documented_ones() {
        let codes: Vec<u8> = [
            Exit::Ok,
            Exit::Runtime,
            Exit::Usage,
            Exit::Unavailable,
            Exit::CantCreate,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 64, 69, 73]);
        assert_eq!(i32::from(Exit::Usage), 64);
    }

    #[test]
    fn bad_flag_is_usage_and_good_flags_parse() {
        let bad = parse_args_from::<Demo, _, _>("demo", ["demo", "--wait", "40"]);
        assert_eq!(bad.err(), Some(Exit::Usage));
        let bad = parse_args_from::<Demo, _, _>("demo", ["demo", "--nope"]);
        assert_eq!(bad.err(), Some(Exit::Usage));
        let help = parse_args_from::<Demo, _, _>("demo", ["demo", "--help"]);
        assert_eq!(help.err(), Some(Exit::Ok));
        let ok = parse_args_from::<Demo, _, _>("demo", ["demo", "--wait", "1500ms"]);
        assert_eq!(
            ok.ok().and_then(|d| d.wait),
            Some(std::time::Duration::from_millis(1500))
        );
    }
}
