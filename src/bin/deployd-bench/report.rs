//! What a scenario hands back: tables of figures, goals with their verdicts,
//! and notes; printed as a human table or as JSON.
//!
//! Figures are medians and percentiles over sorted samples (nearest rank),
//! never means alone: the machines these run on are noisy, and a mean hides
//! the tail that the goals are about.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

/// Percentiles of a set of latency samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    /// Sorts `samples` in place. An empty set gives zeros with `n = 0`.
    pub fn of(samples: &mut [Duration]) -> Stats {
        samples.sort_unstable();
        Stats {
            n: samples.len(),
            p50_ms: ms(percentile(samples, 50.0)),
            p99_ms: ms(percentile(samples, 99.0)),
            max_ms: ms(samples.last().copied().unwrap_or_default()),
        }
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at
/// least `p`% of the samples at or below it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One scenario on one store.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub store: String,
    pub tables: Vec<Table>,
    pub goals: Vec<Goal>,
    pub notes: Vec<String>,
}

/// Rows of figures under named columns; cells are numbers or text.
#[derive(Debug, Serialize, Deserialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

impl Report {
    pub fn new(scenario: &str, store: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            store: store.to_string(),
            tables: Vec::new(),
            goals: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn table(&mut self, title: &str, columns: &[&str]) -> &mut Table {
        self.tables.push(Table {
            title: title.to_string(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        });
        self.tables.last_mut().expect("just pushed")
    }

    pub fn goal(&mut self, goal: &str, measured: String, met: bool) {
        self.goals.push(Goal {
            goal: goal.to_string(),
            measured,
            met,
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The report as aligned text tables.
    pub fn human(&self) -> String {
        let mut out = format!("== {} on {} ==\n", self.scenario, self.store);
        for table in &self.tables {
            out.push_str(&table.human());
        }
        if !self.goals.is_empty() {
            out.push_str("\ngoals:\n");
            for goal in &self.goals {
                let verdict = if goal.met { "MET  " } else { "UNMET" };
                let _ = writeln!(out, "  [{verdict}] {}: {}", goal.goal, goal.measured);
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

impl Table {
    pub fn row(&mut self, cells: Vec<Value>) {
        self.rows.push(cells);
    }

    fn human(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(render).collect())
            .collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &cells {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |values: &[String]| {
            let mut text = String::from(" ");
            for (value, width) in values.iter().zip(&widths) {
                let _ = write!(text, " {value:>width$}");
            }
            text.push('\n');
            text
        };
        let mut out = format!("\n{}\n", self.title);
        out.push_str(&line(&self.columns));
        for row in &cells {
            out.push_str(&line(row));
        }
        out
    }
}

/// Numbers with a precision that suits their size; text as is.
fn render(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (_, _, Some(f)) if f.abs() >= 100.0 => format!("{f:.0}"),
            (_, _, Some(f)) if f.abs() >= 1.0 => format!("{f:.2}"),
            (_, _, Some(f)) => format!("{f:.3}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A float cell (JSON has no NaN: those become null).
pub fn num(value: f64) -> Value {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

pub fn text(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

pub fn int(value: impl Into<i64>) -> Value {
    Value::from(value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        samples.reverse();
        let stats = Stats::of(&mut samples);
        assert_eq!(stats.n, 100);
        assert_eq!(stats.p50_ms, 50.0);
        assert_eq!(stats.p99_ms, 99.0);
        assert_eq!(stats.max_ms, 100.0);
        assert_eq!(percentile(&[Duration::from_millis(7)], 99.0).as_millis(), 7);
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn cells_render_by_size() {
        assert_eq!(render(&num(1234.567)), "1235");
        assert_eq!(render(&num(12.345)), "12.35");
        assert_eq!(render(&num(0.1234)), "0.123");
        assert_eq!(render(&int(42)), "42");
        assert_eq!(render(&Value::Null), "-");
    }
}
