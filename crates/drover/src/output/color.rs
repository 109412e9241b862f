//! Colour for states in tables: only when stdout is a terminal, `NO_COLOR`
//! is unset or empty (<https://no-color.org>) and the output is for people.
//! Plain ANSI SGR sequences; no crate.

use std::io::IsTerminal;
use std::sync::OnceLock;

static ENABLED: OnceLock<bool> = OnceLock::new();

/// Decide once, from the output format and the environment, whether to
/// colour; called by `main` before any command prints.
pub fn init(format: super::Format) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let _ = ENABLED.set(!format.machine() && !no_color && std::io::stdout().is_terminal());
}

fn enabled() -> bool {
    *ENABLED.get().unwrap_or(&false)
}

/// What a state word means to someone scanning a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    Warn,
    Plain,
}

/// The tone of a state, outcome or health word as drover prints them.
pub fn tone(word: &str) -> Tone {
    let head = word.split([' ', '(']).next().unwrap_or(word);
    match head {
        "running" | "healthy" | "succeeded" | "success" | "ok" | "valid" | "in-sync" => Tone::Good,
        "failed" | "exited" | "lost" | "unhealthy" | "crashed" | "revoked" | "refused"
        | "error" | "unstable" => Tone::Bad,
        "drifted" | "out-of-sync" | "stopping" | "starting" | "created" | "pending" | "rolling"
        | "draining" | "condemned" | "degraded" | "backoff" => Tone::Warn,
        _ => Tone::Plain,
    }
}

/// `word` in its tone's colour when colour is on, else unchanged.
pub fn state(word: &str) -> String {
    paint(tone(word), word, enabled())
}

/// `text` in the colour of the state word `like` (`OUT OF SYNC` as
/// `out-of-sync`).
pub fn paint_as(text: &str, like: &str) -> String {
    paint(tone(like), text, enabled())
}

fn paint(tone: Tone, word: &str, on: bool) -> String {
    let code = match tone {
        Tone::Good => "32",
        Tone::Bad => "31",
        Tone::Warn => "33",
        Tone::Plain => return word.to_string(),
    };
    if on {
        format!("\x1b[{code}m{word}\x1b[0m")
    } else {
        word.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_tones_and_colour_only_when_on() {
        assert_eq!(tone("running"), Tone::Good);
        assert_eq!(tone("exited (killed by signal 9)"), Tone::Bad);
        assert_eq!(tone("failed"), Tone::Bad);
        assert_eq!(tone("out-of-sync"), Tone::Warn);
        assert_eq!(tone("drifted"), Tone::Warn);
        assert_eq!(tone("-"), Tone::Plain);
        assert_eq!(paint(Tone::Good, "running", true), "\x1b[32mrunning\x1b[0m");
        assert_eq!(paint(Tone::Good, "running", false), "running");
        assert_eq!(paint(Tone::Plain, "x", true), "x");
    }
}
