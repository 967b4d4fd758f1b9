//! How deployctl's text looks where it lands: colour and human times
//! ("3 minutes ago") on a terminal only, exact times and plain text for
//! logs and pipes, and tables cut to the terminal's width.
//!
//! Colour follows the conventions `anstream` reads: `NO_COLOR` (any
//! non-empty value) turns it off, `CLICOLOR_FORCE` on, `TERM=dumb` off, and
//! a stream that is not a terminal gets none.

use anstream::ColorChoice;
use anstyle::{AnsiColor, Style};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use std::io::IsTerminal;
use std::sync::OnceLock;

/// What stdout and stderr are, decided once per run.
pub struct Term {
    /// stdout is a terminal: spinners, human times, width-cut tables.
    pub tty: bool,
    /// Colour on stdout.
    pub color: bool,
    /// Colour on stderr.
    pub color_err: bool,
    /// Columns of the terminal, when stdout is one.
    pub width: Option<usize>,
}

/// The run's [`Term`].
pub fn term() -> &'static Term {
    static TERM: OnceLock<Term> = OnceLock::new();
    TERM.get_or_init(|| {
        let tty = std::io::stdout().is_terminal();
        let color = |choice| !matches!(choice, ColorChoice::Never);
        Term {
            tty,
            color: color(anstream::AutoStream::choice(&std::io::stdout())),
            color_err: color(anstream::AutoStream::choice(&std::io::stderr())),
            width: match tty {
                true => columns(),
                false => None,
            },
        }
    })
}

/// The terminal's width in columns: what the terminal says (even one that
/// reports no rows), else `COLUMNS`.
fn columns() -> Option<usize> {
    let from_terminal = terminal_size::terminal_size_of(std::io::stdout())
        .map(|(width, _)| width.0 as usize)
        .or_else(|| {
            // terminal_size answers nothing when rows are 0 (`script`).
            // SAFETY: winsize is plain data that TIOCGWINSZ fills.
            let mut size: libc::winsize = unsafe { std::mem::zeroed() };
            let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
            (ok == 0).then_some(size.ws_col as usize)
        });
    let from_env = || std::env::var("COLUMNS").ok()?.parse().ok();
    from_terminal.filter(|width| *width > 0).or_else(from_env)
}

/// The colours deployctl uses, each with one meaning.
#[derive(Clone, Copy)]
pub enum Paint {
    /// Succeeded, active.
    Good,
    /// Failed, cancelled, interrupted; an error.
    Bad,
    /// Lines a step wrote to stderr; warnings.
    Warn,
    /// Ids, durations and other secondary text.
    Dim,
    /// Headings.
    Bold,
}

impl Paint {
    fn style(self) -> Style {
        match self {
            Paint::Good => AnsiColor::Green.on_default(),
            Paint::Bad => AnsiColor::Red.on_default().bold(),
            Paint::Warn => AnsiColor::Yellow.on_default(),
            Paint::Dim => Style::new().dimmed(),
            Paint::Bold => Style::new().bold(),
        }
    }

    /// `text` in this colour when stdout takes colour, else as it is.
    pub fn out(self, text: &str) -> String {
        paint(term().color, self.style(), text)
    }

    /// `text` in this colour when stderr takes colour, else as it is.
    pub fn err(self, text: &str) -> String {
        paint(term().color_err, self.style(), text)
    }
}

fn paint(on: bool, style: Style, text: &str) -> String {
    match on && !text.is_empty() {
        true => format!("{style}{text}{style:#}"),
        false => text.to_string(),
    }
}

/// The colour a deployment state is shown in.
pub fn state_paint(state: deployd::machine::State) -> Option<Paint> {
    use deployd::machine::State;
    match state {
        State::Succeeded => Some(Paint::Good),
        State::Failed | State::Cancelled | State::Interrupted => Some(Paint::Bad),
        _ => None,
    }
}

/// A moment as people read it on a terminal ("3 minutes ago"), and exactly
/// (RFC 3339, UTC, whole seconds) anywhere else, where a script or a log
/// reads it later.
pub fn when(at: DateTime<Utc>) -> String {
    match term().tty {
        true => ago(at),
        false => exact(at),
    }
}

/// `2026-11-30T19:55:01Z`.
pub fn exact(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// How long ago, in words: `just now`, `40 seconds ago`, `1 minute ago`,
/// `3 hours ago`, `2 days ago`.
pub fn ago(at: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - at).num_seconds();
    let (count, unit) = match seconds {
        ..5 => return "just now".into(),
        5..60 => (seconds, "second"),
        60..3600 => (seconds / 60, "minute"),
        3600..86400 => (seconds / 3600, "hour"),
        _ => (seconds / 86400, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural} ago")
}

/// `12.3s`, `4m05s`, `2h07m`.
pub fn duration(delta: TimeDelta) -> String {
    let millis = delta.num_milliseconds().max(0);
    let seconds = millis / 1000;
    match seconds {
        0..60 => format!("{:.1}s", millis as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// `line` cut to the terminal's width on a terminal (a status line that
/// would wrap); whole elsewhere.
pub fn fit(line: &str) -> String {
    match term().width.filter(|width| *width > 0) {
        Some(width) => clip(line, width),
        None => line.to_string(),
    }
}

/// `text` with its control characters made visible (`\u{1b}`), so that what
/// a step or a client wrote can neither recolour the terminal, move its
/// cursor, retitle it nor fake a line of ours. Tabs stay.
pub fn safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let shown: String = text
        .chars()
        .map(|c| match c.is_control() && c != '\t' {
            true => c.escape_unicode().to_string(),
            false => c.to_string(),
        })
        .collect();
    std::borrow::Cow::Owned(shown)
}

/// `text`'s first line, made [`safe`], marked `…` when more lines follow:
/// the one line a summary or a table cell shows of a multi-line error.
pub fn one_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = safe(lines.next().unwrap_or("")).into_owned();
    match lines.next() {
        Some(_) => format!("{first} …"),
        None => first,
    }
}

/// `text` as a table cell or a status line shows it: its first line, made
/// [`safe`]; on a terminal cut to `width` characters, elsewhere whole (a
/// script or a log gets the full first line).
pub fn cell(text: &str, width: usize) -> String {
    let line = one_line(text);
    match term().tty {
        true => clip(&line, width),
        false => line,
    }
}

/// `text`'s first line, at most `width` characters, `…` marking a cut.
pub fn clip(text: &str, width: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    let cut = first.lines().count() < text.lines().count();
    if first.chars().count() <= width && !cut {
        return first.to_string();
    }
    let keep = width.saturating_sub(1).min(first.chars().count());
    let mut clipped: String = first.chars().take(keep).collect();
    clipped.push('…');
    clipped
}

/// One column of a [`table`].
pub struct Column {
    pub title: &'static str,
    /// Cut to make the table fit the terminal (free text: messages,
    /// errors); other columns are never cut.
    pub flexible: bool,
    /// Left out on a terminal too narrow for the table even with its
    /// flexible columns cut; lower numbers go first. `None`: always shown.
    pub spare: Option<u8>,
}

impl Column {
    pub const fn fixed(title: &'static str) -> Column {
        Column {
            title,
            flexible: false,
            spare: None,
        }
    }

    pub const fn flexible(title: &'static str) -> Column {
        Column {
            title,
            flexible: true,
            spare: None,
        }
    }

    /// This column may be left out on a narrow terminal, `rank` lowest
    /// first.
    pub const fn spare(mut self, rank: u8) -> Column {
        self.spare = Some(rank);
        self
    }
}

/// The narrowest a flexible column is cut to.
const FLEXIBLE_MIN: usize = 12;
/// The width a flexible column keeps before spare columns are left out.
const FLEXIBLE_READABLE: usize = 28;

/// A table cell: its text and the colour it is shown in.
pub type Cell = (String, Option<Paint>);

/// Print rows under a header, columns padded to their widest cell. On a
/// terminal, so that each line fits its width: columns empty in every row
/// are left out, flexible columns are cut to 28 characters, then spare
/// columns are left out (lowest rank first), then flexible columns are cut
/// to no less than 12. Off a terminal every
/// column is printed whole, in the same place, for scripts. A cell's
/// [`Paint`] is applied after padding, so colour never skews the layout.
pub fn table(columns: &[Column], rows: Vec<Vec<Cell>>) {
    let count = |text: &str| text.chars().count();
    let mut shown: Vec<usize> = (0..columns.len()).collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| count(c.title)).collect();
    for row in &rows {
        for (width, (cell, _)) in widths.iter_mut().zip(row) {
            *width = (*width).max(count(cell));
        }
    }
    let natural = widths.clone();
    if let Some(limit) = term().width.filter(|width| *width > 0) {
        let empty = |i: usize| rows.iter().all(|row| row[i].0.is_empty());
        shown.retain(|&i| rows.is_empty() || !empty(i));
        let total = |shown: &[usize], widths: &[usize]| {
            shown.iter().map(|&i| widths[i]).sum::<usize>() + 2 * shown.len().saturating_sub(1)
        };
        // Cut free text to a readable width, then leave out spare columns,
        // then cut free text further.
        let cut_to = |shown: &[usize], widths: &mut Vec<usize>, least: usize| {
            while total(shown, widths) > limit {
                let widest = (shown.iter().copied())
                    .filter(|&i| columns[i].flexible && widths[i] > least)
                    .max_by_key(|&i| widths[i]);
                let Some(i) = widest else { break };
                widths[i] -= 1;
            }
        };
        cut_to(&shown, &mut widths, FLEXIBLE_READABLE);
        while total(&shown, &widths) > limit {
            let spare = (shown.iter().copied())
                .filter(|&i| columns[i].spare.is_some())
                .min_by_key(|&i| columns[i].spare);
            let Some(spare) = spare else { break };
            shown.retain(|&i| i != spare);
        }
        cut_to(&shown, &mut widths, FLEXIBLE_MIN);
        // Give room left over back to cut columns, up to their whole width.
        let mut grown = true;
        while grown && total(&shown, &widths) < limit {
            grown = false;
            for &i in &shown {
                if columns[i].flexible && widths[i] < natural[i] && total(&shown, &widths) < limit {
                    widths[i] += 1;
                    grown = true;
                }
            }
        }
    }
    let header: Vec<Cell> = columns
        .iter()
        .map(|c| (c.title.to_string(), Some(Paint::Bold)))
        .collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        let cells = shown.iter().map(|&i| (&row[i], &widths[i]));
        for (index, ((cell, paint), width)) in cells.enumerate() {
            let cell = match count(cell) > *width {
                true => clip(cell, *width),
                false => cell.clone(),
            };
            let pad = " ".repeat(width - count(&cell));
            let shown_cell = match paint {
                Some(paint) => paint.out(&cell),
                None => cell,
            };
            line.push_str(&shown_cell);
            if index + 1 < shown.len() {
                line.push_str(&pad);
                line.push_str("  ");
            }
        }
        println!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_words() {
        let now = Utc::now();
        assert_eq!(ago(now), "just now");
        assert_eq!(ago(now - TimeDelta::seconds(61)), "1 minute ago");
        assert_eq!(ago(now - TimeDelta::minutes(3)), "3 minutes ago");
        assert_eq!(ago(now - TimeDelta::hours(5)), "5 hours ago");
        assert_eq!(ago(now - TimeDelta::days(1)), "1 day ago");
    }

    #[test]
    fn clipping_keeps_the_first_line_and_marks_the_cut() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly ten", 11), "exactly ten");
        assert_eq!(clip("a longer line", 6), "a lon…");
        assert_eq!(clip("first\nsecond", 20), "first…");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(safe("plain\ttext"), "plain\ttext");
        assert_eq!(safe("a\x1b[31mred"), "a\\u{1b}[31mred");
        assert_eq!(safe("bell\x07 and \u{9b}"), "bell\\u{7} and \\u{9b}");
    }
}
