//! A log as lines of HTML: ANSI colours and bold become styled spans,
//! every other escape sequence is dropped, and a carriage return keeps
//! what was written after it (a progress bar shows its last state).
//!
//! The same rules run in the browser for output that arrives while a page
//! follows a log (`static/testbot.js`, `sgr`): keep the two in step.

use std::fmt::Write;

/// The graphic rendition in force: what SGR codes have set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pen {
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    fg: Option<Colour>,
    bg: Option<Colour>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    /// One of the 16 named colours, 0–15: a class, so the theme picks it.
    Named(u8),
    /// 256-colour or true colour: an inline style.
    Rgb(u8, u8, u8),
}

impl Pen {
    fn plain(&self) -> bool {
        *self == Pen::default()
    }

    /// Applies one SGR sequence's parameters.
    fn apply(&mut self, params: &str) {
        let codes: Vec<u16> = params
            .split([';', ':'])
            .map(|p| p.parse::<u16>().unwrap_or(0))
            .collect();
        let mut i = 0;
        while i < codes.len() {
            match codes[i] {
                0 => *self = Pen::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => {
                    self.bold = false;
                    self.dim = false
                }
                23 => self.italic = false,
                24 => self.underline = false,
                c @ 30..=37 => self.fg = Some(Colour::Named((c - 30) as u8)),
                c @ 90..=97 => self.fg = Some(Colour::Named((c - 90 + 8) as u8)),
                39 => self.fg = None,
                c @ 40..=47 => self.bg = Some(Colour::Named((c - 40) as u8)),
                c @ 100..=107 => self.bg = Some(Colour::Named((c - 100 + 8) as u8)),
                49 => self.bg = None,
                c @ (38 | 48) => {
                    let (colour, used) = extended(&codes[i + 1..]);
                    if let Some(colour) = colour {
                        if c == 38 {
                            self.fg = Some(colour)
                        } else {
                            self.bg = Some(colour)
                        }
                    }
                    i += used;
                }
                _ => {}
            }
            i += 1;
        }
        if params.is_empty() {
            *self = Pen::default();
        }
    }

    fn open(&self, out: &mut String) {
        let mut class = String::new();
        let mut style = String::new();
        for (on, name) in [
            (self.bold, "b"),
            (self.dim, "d"),
            (self.italic, "i"),
            (self.underline, "u"),
        ] {
            if on {
                class.push_str(name);
                class.push(' ');
            }
        }
        for (colour, prefix, property) in [(self.fg, "f", "color"), (self.bg, "g", "background")] {
            match colour {
                Some(Colour::Named(n)) => {
                    let _ = write!(class, "{prefix}{n} ");
                }
                Some(Colour::Rgb(r, g, b)) => {
                    let _ = write!(style, "{property}:#{r:02x}{g:02x}{b:02x};");
                }
                None => {}
            }
        }
        out.push_str("<span");
        if !class.is_empty() {
            let _ = write!(out, " class=\"{}\"", class.trim_end());
        }
        if !style.is_empty() {
            let _ = write!(out, " style=\"{style}\"");
        }
        out.push('>');
    }
}

/// `38;5;n` or `38;2;r;g;b` after the 38 or 48: the colour, and how many
/// codes it took.
fn extended(rest: &[u16]) -> (Option<Colour>, usize) {
    match rest {
        [5, n, ..] => (Some(palette(*n.min(&255) as u8)), 2),
        [2, r, g, b, ..] => (
            Some(Colour::Rgb(
                (*r).min(255) as u8,
                (*g).min(255) as u8,
                (*b).min(255) as u8,
            )),
            4,
        ),
        _ => (None, rest.len()),
    }
}

/// The xterm 256-colour palette.
fn palette(n: u8) -> Colour {
    match n {
        0..=15 => Colour::Named(n),
        16..=231 => {
            let n = n - 16;
            let level = |x: u8| if x == 0 { 0 } else { 55 + x * 40 };
            Colour::Rgb(level(n / 36), level(n / 6 % 6), level(n % 6))
        }
        _ => {
            let v = 8 + (n - 232) * 10;
            Colour::Rgb(v, v, v)
        }
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // Other control characters would show as boxes, or not at all.
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

/// Renders one line (without its newline) as HTML, starting with `pen`
/// and leaving in it what the line set, for the next line.
pub fn line_html(line: &str, pen: &mut Pen) -> String {
    // What a carriage return overwrote is gone: keep what came after the
    // last one that has text after it.
    let line = match line.trim_end_matches('\r').rfind('\r') {
        Some(i) => &line[i + 1..],
        None => line.trim_end_matches('\r'),
    };
    let mut out = String::with_capacity(line.len() + 16);
    let mut open = false;
    if !pen.plain() {
        pen.open(&mut out);
        open = true;
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        if bytes[i] != 0x1b {
            i += 1;
            continue;
        }
        escape_into(&mut out, &line[text_start..i]);
        // ESC [ params final: CSI; ESC ] ... BEL or ESC \: OSC; ESC x: two bytes.
        let mut j = i + 1;
        match bytes.get(j) {
            Some(b'[') => {
                j += 1;
                let start = j;
                while j < bytes.len() && !(0x40..=0x7e).contains(&bytes[j]) {
                    j += 1;
                }
                if j < bytes.len() {
                    if bytes[j] == b'm' {
                        let before = pen.clone();
                        pen.apply(&line[start..j]);
                        if *pen != before {
                            if open {
                                out.push_str("</span>");
                                open = false;
                            }
                            if !pen.plain() {
                                pen.open(&mut out);
                                open = true;
                            }
                        }
                    }
                    j += 1;
                }
            }
            Some(b']') => {
                while j < bytes.len() && bytes[j] != 0x07 {
                    if bytes[j] == 0x1b && bytes.get(j + 1) == Some(&b'\\') {
                        j += 1;
                        break;
                    }
                    j += 1;
                }
                j += 1;
            }
            Some(_) => j += 1,
            None => {}
        }
        i = j.min(bytes.len());
        text_start = i;
    }
    escape_into(&mut out, &line[text_start..]);
    if open {
        out.push_str("</span>");
    }
    out
}

/// Several lines as HTML, colours carried from line to line.
pub fn to_html(text: &str) -> String {
    let mut pen = Pen::default();
    text.split('\n')
        .map(|l| line_html(l, &mut pen))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Text without its escape sequences and control characters (newlines
/// and tabs kept), for a one-line summary.
pub fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> Vec<String> {
        let mut pen = Pen::default();
        text.split('\n').map(|l| line_html(l, &mut pen)).collect()
    }

    #[test]
    fn colours_and_bold_become_spans_and_no_escape_byte_is_left() {
        let out = render("\x1b[1;31mFAIL\x1b[0m test_x <a>\n\x1b[32mok\x1b[m");
        assert_eq!(out[0], "<span class=\"b f1\">FAIL</span> test_x &lt;a&gt;");
        assert_eq!(out[1], "<span class=\"f2\">ok</span>");
        assert!(out.iter().all(|l| !l.contains('\x1b')));
    }

    #[test]
    fn a_colour_set_on_one_line_carries_to_the_next() {
        let out = render("\x1b[33mwarn\nstill yellow\x1b[39m plain");
        assert_eq!(out[1], "<span class=\"f3\">still yellow</span> plain");
    }

    #[test]
    fn extended_colours_are_inline_styles_and_other_sequences_vanish() {
        let out = render(
            "\x1b[38;5;196mred\x1b[0m \x1b[48;2;0;0;255mblue\x1b[0m\x1b[2K\x1b]0;title\x07x",
        );
        assert_eq!(
            out[0],
            "<span style=\"color:#ff0000;\">red</span> <span style=\"background:#0000ff;\">blue</span>x"
        );
    }

    #[test]
    fn a_carriage_return_keeps_what_came_after_it() {
        assert_eq!(render("10%\r50%\r100% done\r")[0], "100% done");
    }

    #[test]
    fn stripped_text_keeps_words_and_lines_only() {
        assert_eq!(
            strip("\x1b[31mred\x1b[0m ok\r\n\x1b]0;t\x07next\x07"),
            "red ok\nnext"
        );
        assert_eq!(
            to_html("\x1b[31ma\nb"),
            "<span class=\"f1\">a</span>\n<span class=\"f1\">b</span>"
        );
    }

    #[test]
    fn cut_sequences_do_not_panic() {
        for s in [
            "\x1b",
            "\x1b[",
            "\x1b[31",
            "\x1b]0;x",
            "a\x1b[38;5m",
            "\x1b[38;2;1m",
        ] {
            let out = render(s);
            assert!(!out[0].contains('\x1b'), "{s:?}");
        }
    }
}
