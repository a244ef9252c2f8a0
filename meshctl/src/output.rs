//! Terminal output: colour only when asked for or when stdout is a terminal.

use std::io::IsTerminal;

use crate::ColorChoice;

/// Whether and how to colour output.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn new(choice: ColorChoice) -> Self {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        Self { color }
    }

    pub fn plain() -> Self {
        Self { color: false }
    }

    pub(crate) fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Colours a log level (or status word) by severity.
    pub fn level(self, level: &str) -> String {
        let code = match level.to_ascii_lowercase().as_str() {
            "error" | "not_serving" | "firing" | "down" | "suspected" => "31",
            "warn" | "warning" | "not_ready" | "unknown" => "33",
            "info" | "serving" | "resolved" | "alive" | "up" => "32",
            _ => "2",
        };
        self.paint(code, level)
    }
}

/// Pads `text` to `width` display columns (ASCII-width assumption, like most log tools).
pub fn pad(text: &str, width: usize) -> String {
    format!("{text:<width$}")
}
