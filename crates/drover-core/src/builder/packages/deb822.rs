//! RFC 822-style control data as Debian writes it (Packages indexes,
//! Release files, `.sources` files, control files): paragraphs separated by
//! blank lines, `Field: value` lines, continuation lines that start with a
//! space or tab. Field names compare case-insensitively; order is kept.
//! Names and values are borrowed from the input: a 50 MB Packages index
//! parses without a copy of its text.

use std::fmt;

/// One `Field: value`. `value` runs from the first non-blank character
/// after the colon to the end of the field's last continuation line, with
/// the continuation lines as written (newlines and leading blanks kept:
/// callers that need lines, like Release's checksum lists, split it;
/// relation fields treat the newlines as blanks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// A paragraph (stanza): its fields in order, and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    pub line: usize,
    pub fields: Vec<Field<'a>>,
}

impl<'a> Paragraph<'a> {
    /// The value of field `name` (any case).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|f| f.name.len() == name.len() && f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    }
}

/// Malformed control data, located by line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Every paragraph of `text`.
pub fn parse(text: &str) -> Result<Vec<Paragraph<'_>>, ParseError> {
    paragraphs(text).collect()
}

/// The paragraphs of `text`, one at a time (a Packages index need not be
/// held as a vector of all its paragraphs).
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        text,
        pos: 0,
        line: 0,
        failed: false,
    }
}

/// Iterator returned by [`paragraphs`]; stops after the first error.
pub struct Paragraphs<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    failed: bool,
}

impl<'a> Paragraphs<'a> {
    /// The next line (without its `\n` or `\r\n`) and its start offset.
    fn next_line(&mut self) -> Option<(usize, &'a str)> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.text[start..];
        let (line, advance) = match rest.find('\n') {
            Some(n) => (&rest[..n], n + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        self.line += 1;
        Some((start, line.strip_suffix('\r').unwrap_or(line)))
    }

    fn fail(
        &mut self,
        line: usize,
        message: impl Into<String>,
    ) -> Option<Result<Paragraph<'a>, ParseError>> {
        self.failed = true;
        Some(Err(ParseError {
            line,
            message: message.into(),
        }))
    }
}

/// A cheap case-insensitive hash of a field name.
fn name_hash(name: &str) -> usize {
    let b = name.as_bytes();
    let (first, last) = (
        b[0].to_ascii_lowercase(),
        b[b.len() - 1].to_ascii_lowercase(),
    );
    b.len()
        .wrapping_mul(31)
        .wrapping_add(usize::from(first) * 7)
        .wrapping_add(usize::from(last))
}

fn is_blank(line: &str) -> bool {
    line.bytes().all(|b| b == b' ' || b == b'\t')
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut para = Paragraph {
            line: 0,
            fields: Vec::with_capacity(24),
        };
        // Where the current field's value starts and ends in `text`.
        let mut open: Option<(usize, usize)> = None;
        let mut seen = 0u64;
        while let Some((start, line)) = self.next_line() {
            let first = line.as_bytes().first().copied().unwrap_or(b' ');
            if first == b'#' {
                continue;
            }
            if (first == b' ' || first == b'\t') && is_blank(line) {
                if para.line == 0 {
                    continue;
                }
                break;
            }
            if first == b' ' || first == b'\t' {
                match open.as_mut() {
                    Some((_, end)) => *end = start + line.len(),
                    None => {
                        return self.fail(self.line, "continuation line without a field before it");
                    }
                }
                continue;
            }
            if let Some((vstart, vend)) = open.take() {
                close(&mut para, self.text, vstart, vend);
            }
            let Some(colon) = line.find(':') else {
                return self.fail(
                    self.line,
                    format!("expected `Field: value`, found {:?}", truncate(line)),
                );
            };
            let name = &line[..colon];
            if name.is_empty()
                || name
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return self.fail(self.line, format!("bad field name {:?}", truncate(name)));
            }
            // A field twice is an error; a 64-bit filter keeps the check
            // from comparing every pair of names.
            let bit = 1u64 << (name_hash(name) % 64);
            if seen & bit != 0
                && para
                    .fields
                    .iter()
                    .any(|f| f.name.len() == name.len() && f.name.eq_ignore_ascii_case(name))
            {
                return self.fail(
                    self.line,
                    format!("field {name:?} appears twice in one paragraph"),
                );
            }
            seen |= bit;
            if para.line == 0 {
                para.line = self.line;
            }
            let vstart = start + colon + 1;
            para.fields.push(Field { name, value: "" });
            open = Some((vstart, start + line.len()));
        }
        if let Some((vstart, vend)) = open {
            close(&mut para, self.text, vstart, vend);
        }
        if para.line == 0 { None } else { Some(Ok(para)) }
    }
}

/// Set the last field's value to `text[start..end]` without surrounding blanks.
fn close<'a>(para: &mut Paragraph<'a>, text: &'a str, start: usize, end: usize) {
    let value =
        text[start..end].trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r' || c == '\n');
    if let Some(f) = para.fields.last_mut() {
        f.value = value;
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_fields_and_continuations() {
        let text = "Package: a\nVersion: 1.0\nDescription: short\n more\n .\n\tlast\n\n\n\
                    package: b\r\nDEPENDS: x,\r\n y\r\n";
        let paras = parse(text).unwrap();
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0].line, 1);
        assert_eq!(paras[0].get("package"), Some("a"));
        assert_eq!(
            paras[0].get("Description"),
            Some("short\n more\n .\n\tlast")
        );
        assert_eq!(paras[1].line, 9);
        assert_eq!(paras[1].get("Package"), Some("b"));
        assert_eq!(paras[1].get("depends"), Some("x,\r\n y"));
        let names: Vec<_> = paras[0].fields.iter().map(|f| f.name).collect();
        assert_eq!(names, ["Package", "Version", "Description"]);
    }

    #[test]
    fn empty_values_blank_separator_lines_and_comments() {
        let text = "# comment\nSHA256:\n abc 1 x\nEmpty:\n  \t \nA: b";
        let paras = parse(text).unwrap();
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0].get("sha256"), Some("abc 1 x"));
        assert_eq!(paras[0].get("Empty"), Some(""));
        assert_eq!(paras[1].get("A"), Some("b"));
        assert_eq!(paras[1].line, 6);
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n\n \n").unwrap().is_empty());
    }

    #[test]
    fn malformed_input_is_located() {
        let err = parse("A: b\nno colon here\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.to_string()
                .starts_with("line 2: expected `Field: value`"),
            "{err}"
        );
        let err = parse("\n continuation\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse("A: 1\nB: 2\na: 3\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.to_string().contains("twice"), "{err}");
        let err = parse("A: 1\n\n: x\n").unwrap_err();
        assert_eq!(err.line, 3);
        // Iteration stops at the first error.
        let all: Vec<_> = paragraphs("x\nA: 1\n\nB: 2\n").collect();
        assert_eq!(all.len(), 1);
    }
}
