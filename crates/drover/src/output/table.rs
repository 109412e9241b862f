//! The one table formatter: columns as wide as their widest cell (header
//! included), two spaces between them, numbers right-aligned where asked,
//! the last column never padded. Widths count characters, not bytes, and
//! skip the ANSI colour sequences `color` adds.

/// A table being filled; [`Table::print`] or [`Table::render`] at the end.
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
    indent: usize,
    show_headers: bool,
}

impl Table {
    /// A table with these column headers, all left-aligned.
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_string()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
            indent: 0,
            show_headers: true,
        }
    }

    /// Right-align the column named `header` (numbers, sizes).
    pub fn right(mut self, header: &str) -> Table {
        if let Some(i) = self.headers.iter().position(|h| h == header) {
            self.right[i] = true;
        }
        self
    }

    /// Indent every line by `n` spaces (rows nested under a heading).
    pub fn indent(mut self, n: usize) -> Table {
        self.indent = n;
        self
    }

    /// No header line (rows under a sentence that names them).
    pub fn without_headers(mut self) -> Table {
        self.show_headers = false;
        self
    }

    /// Add a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The lines of the table, each without a trailing newline.
    pub fn render(&self) -> Vec<String> {
        let mut widths: Vec<usize> = if self.show_headers {
            self.headers.iter().map(|h| width(h)).collect()
        } else {
            vec![0; self.headers.len()]
        };
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let header = self.show_headers.then_some(&self.headers);
        header
            .into_iter()
            .chain(&self.rows)
            .map(|cells| self.line(cells, &widths))
            .collect()
    }

    /// Print the table to stdout (through `outln!`).
    pub fn print(&self) {
        for line in self.render() {
            outln!("{line}");
        }
    }

    fn line(&self, cells: &[String], widths: &[usize]) -> String {
        let mut line = " ".repeat(self.indent);
        let last = cells.len().saturating_sub(1);
        for (i, (cell, &w)) in cells.iter().zip(widths).enumerate() {
            let pad = " ".repeat(w - width(cell));
            if self.right[i] {
                line += &pad;
                line += cell;
            } else {
                line += cell;
                if i < last {
                    line += &pad;
                }
            }
            if i < last {
                line += "  ";
            }
        }
        line.truncate(line.trim_end().len());
        line
    }
}

/// The width of `s` on a terminal: characters, not counting ANSI escape
/// sequences (`ESC [ ... letter`).
pub fn width(s: &str) -> usize {
    let mut n = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Regression (issue 19): in `images` the LAYERS column was not padded
    /// and a long tag shifted every column; in `ps` a long state overflowed
    /// STATE. Every column now starts at the same offset on every line.
    #[test]
    fn columns_line_up_whatever_the_cell_widths() {
        let mut t = Table::new(&["NAME", "LAYERS", "STATE", "SIZE"]).right("LAYERS");
        t.row(cells(&["a:1", "3", "running", "1 KiB"]));
        t.row(cells(&[
            "a-very-long-registry-name/with/path:and-a-long-tag",
            "12",
            "exited (killed by signal 9)",
            "10.0 MiB",
        ]));
        let lines = t.render();
        let col = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(col(&lines[0], "STATE"), col(&lines[1], "running"));
        assert_eq!(col(&lines[1], "running"), col(&lines[2], "exited"));
        assert_eq!(col(&lines[0], "SIZE"), col(&lines[2], "10.0"));
        // Right-aligned numbers end where their header ends.
        let end = |l: &str, w: &str| col(l, w) + w.len();
        assert_eq!(end(&lines[0], "LAYERS"), end(&lines[1], " 3"));
        assert_eq!(end(&lines[0], "LAYERS"), end(&lines[2], "12"));
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn colour_sequences_and_wide_characters_do_not_shift_columns() {
        let mut t = Table::new(&["STATE", "X"]);
        t.row(cells(&["\x1b[32mrunning\x1b[0m", "a"]));
        t.row(cells(&["exited—", "b"]));
        let lines = t.render();
        assert_eq!(width(&lines[1]), width(&lines[2]));
        assert_eq!(width("\x1b[1;31mab\x1b[0m"), 2);
    }

    #[test]
    fn indent_and_no_headers() {
        let mut t = Table::new(&["A", "B"]).indent(2).without_headers();
        t.row(cells(&["x", "y"]));
        assert_eq!(t.render(), ["  x  y"]);
    }
}
