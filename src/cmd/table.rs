//! Plain aligned tables for human output: at most 80 columns wide off a
//! terminal, as wide as the terminal on one (long cells are cut with `…`),
//! and job and worker states coloured on a terminal unless NO_COLOR is set.

/// The widest a table may be off a terminal (or on a narrower one).
const WIDTH: usize = 80;

/// The widest a table may be now: the terminal's width when standard
/// output is one wider than [`WIDTH`], else [`WIDTH`].
fn width() -> usize {
    let out = std::io::stdout();
    if !std::io::IsTerminal::is_terminal(&out) {
        return WIDTH;
    }
    rustix::termios::tcgetwinsize(&out)
        .map(|w| usize::from(w.ws_col))
        .ok()
        .filter(|&w| w > WIDTH)
        .map_or(WIDTH, |w| w.min(1000))
}
/// No column is cut narrower than this.
const MIN_COLUMN: usize = 8;

pub struct Table {
    rows: Vec<Vec<String>>,
    /// The column whose cells are states, coloured by what they say.
    state_column: Option<usize>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_uppercase()).collect()],
            state_column: header.iter().position(|h| *h == "state" || *h == "status"),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| super::visible(&c).into_owned())
                .collect(),
        );
    }

    pub fn print(&self) {
        print!("{}", self.render(super::color_stdout()));
    }

    pub fn render(&self, color: bool) -> String {
        self.render_within(color, width())
    }

    fn render_within(&self, color: bool, most: usize) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // Shrink the widest columns until the table fits.
        let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
        while total(&widths) > most {
            let (i, &w) = widths
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| **w)
                .expect("a column");
            if w <= MIN_COLUMN {
                break;
            }
            widths[i] = w - 1;
        }
        let mut out = String::new();
        for (r, row) in self.rows.iter().enumerate() {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let cell = cut(cell, widths[i]);
                let padded = if i + 1 == row.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}  ", w = widths[i])
                };
                if color && r > 0 && Some(i) == self.state_column {
                    line.push_str(&paint(&cell, &padded));
                } else {
                    line.push_str(&padded);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn paint(state: &str, text: &str) -> String {
    let code = match state.split_whitespace().next().unwrap_or("") {
        "passed" | "idle" => "32",
        "failed" | "error" | "timed_out" | "offline" | "quarantined" => "31",
        "running" | "busy" => "33",
        "queued" | "draining" | "canceled" => "36",
        _ => return text.to_string(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// A time for a table: `MM-DD HH:MM:SS` in UTC.
pub fn short_time(rfc3339: &str) -> String {
    rfc3339
        .get(5..19)
        .map(|s| s.replace('T', " "))
        .unwrap_or_else(|| rfc3339.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["id", "state"]);
        t.row(vec!["1".into(), "passed".into()]);
        t.row(vec!["100".into(), "failed".into()]);
        assert_eq!(t.render(false), "ID   STATE\n1    passed\n100  failed\n");
    }

    #[test]
    fn wide_tables_fit_80_columns() {
        let mut t = Table::new(&["name", "status", "jobtypes", "last seen"]);
        t.row(vec![
            "w".repeat(40),
            "idle".into(),
            "x,".repeat(40),
            "11-25 01:02:03".into(),
        ]);
        let out = t.render_within(false, WIDTH);
        for line in out.lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
        assert!(out.contains('…'));
        // On a wide terminal, as wide as it is: nothing cut.
        let wide = t.render_within(false, 200);
        assert!(!wide.contains('…'), "{wide}");
        assert!(wide.lines().all(|l| l.chars().count() <= 200));
    }

    #[test]
    fn states_are_coloured_only_when_asked() {
        let mut t = Table::new(&["id", "state"]);
        t.row(vec!["1".into(), "failed".into()]);
        assert!(t.render(true).contains("\x1b[31m"));
        assert!(!t.render(false).contains('\x1b'));
        assert_eq!(short_time("2026-11-25T01:41:32.196Z"), "11-25 01:41:32");
    }
}
