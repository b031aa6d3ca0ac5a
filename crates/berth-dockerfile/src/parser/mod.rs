//! The Dockerfile syntax tree, as Docker's frontend builds it: parser directives
//! (`# syntax=`, `# escape=`, `# check=`) only before anything else, comments,
//! line continuations with the escape character (comment and blank lines inside a
//! continuation skipped), builder flags (`--from=x`), per-instruction argument
//! shapes (JSON exec form with the fallback to shell form, whitespace lists,
//! `name=value` pairs), ONBUILD sub-instructions and heredocs (`<<EOF`, `<<-EOF`,
//! quoted delimiters that turn expansion off, several on one line).
//!
//! [`Node::dump`] prints BuildKit's s-expression dump, so the tree can be checked
//! against BuildKit's own test data.

mod words;

use std::fmt::Write as _;

use crate::shell::Lex;

/// A syntax error, with the lines it covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {start_line}: {msg}")]
pub struct ParseError {
    /// First line (1-based).
    pub start_line: usize,
    /// Last line.
    pub end_line: usize,
    /// The message.
    pub msg: String,
}

fn err<T>(start_line: usize, end_line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        start_line,
        end_line,
        msg: msg.into(),
    })
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word.
    pub name: String,
    /// File descriptor (`3<<EOF`), 0 when not given.
    pub fd: u32,
    /// Whether the body is subject to expansion (delimiter not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped.
    pub chomp: bool,
    /// The body, lines with their newlines.
    pub content: String,
}

/// A parser directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// `syntax`, `escape` or `check`.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Its line.
    pub line: usize,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// Docker's rule name.
    pub rule: &'static str,
    /// The message.
    pub msg: String,
    /// Where.
    pub line: usize,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The instruction word as written (`RUN`, `run`).
    pub cmd: String,
    /// Builder flags (`--from=x`), as written after quote removal.
    pub flags: Vec<String>,
    /// The arguments, shaped by the instruction's argument parser.
    pub args: Vec<String>,
    /// ONBUILD's sub-instruction.
    pub sub: Option<Box<Node>>,
    /// Whether the arguments were written in JSON (exec) form.
    pub json: bool,
    /// The instruction's logical line (continuations joined).
    pub original: String,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line, heredoc bodies included.
    pub end_line: usize,
    /// Heredocs.
    pub heredocs: Vec<Heredoc>,
    /// Comments directly above it.
    pub comments: Vec<String>,
}

impl Node {
    /// The instruction name, lower-cased.
    pub fn name(&self) -> String {
        self.cmd.to_ascii_lowercase()
    }

    /// BuildKit's dump of this node: `copy ["--from=x"] "a" "b"`.
    pub fn dump(&self) -> String {
        let mut s = self.name();
        if !self.flags.is_empty() {
            let q: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            write!(s, " [{}]", q.join(" ")).expect("write to string");
        }
        if let Some(sub) = &self.sub {
            write!(s, " ({})", sub.dump()).expect("write to string");
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        s.trim().to_string()
    }
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                write!(out, "\\x{:02x}", c as u32).expect("write")
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    write!(out, "\\u{:04x}", c as u32).expect("write")
                } else {
                    write!(out, "\\U{:08x}", c as u32).expect("write")
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Ast {
    /// The instructions.
    pub children: Vec<Node>,
    /// The escape character in effect.
    pub escape: char,
    /// The parser directives.
    pub directives: Vec<Directive>,
    /// Warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
}

impl Ast {
    /// The dump of the whole file, one `(…)` line per instruction.
    pub fn dump(&self) -> String {
        self.children
            .iter()
            .map(|c| format!("({})\n", c.dump()))
            .collect()
    }

    /// A directive's value.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

struct Directives {
    escape: char,
    done: bool,
    seen: Vec<Directive>,
    line: usize,
}

impl Directives {
    /// Handles `# name=value` at the top of the file. Returns whether it was one.
    fn possible(&mut self, line: &str) -> Result<bool, String> {
        self.line += 1;
        if self.done {
            return Ok(false);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(false);
        };
        let rest = rest.trim_start();
        let Some((k, v)) = rest.split_once('=') else {
            self.done = true;
            return Ok(false);
        };
        let k = k.trim_end();
        let v = v.trim();
        let valid_name = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && k.chars().all(|c| c.is_ascii_alphanumeric());
        let key = k.to_ascii_lowercase();
        if !valid_name || v.is_empty() || !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if self.seen.iter().any(|d| d.name == key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        if key == "escape" {
            self.escape = match v {
                "`" => '`',
                "\\" => '\\',
                _ => return Err(format!("invalid escape token '{v}' does not match ` or \\")),
            };
        }
        self.seen.push(Directive {
            name: key,
            value: v.to_string(),
            line: self.line,
        });
        Ok(true)
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing continuation (the escape char, optionally followed by
/// blanks, not itself escaped). Returns the line and whether it ended there.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before.to_string(), false);
    }
    (line.to_string(), true)
}

/// Parses a whole Dockerfile. Long on purpose: one pass over the lines
/// (directives, comments, continuations, heredocs) as BuildKit's parser
/// makes it, kept in one loop so their interplay reads in one place.
pub fn parse(src: &str) -> Result<Ast, ParseError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let mut d = Directives {
        escape: '\\',
        done: false,
        seen: Vec::new(),
        line: 0,
    };
    let mut children = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut i = 0;
    let mut current = 0usize;
    let trim_nl = |s: &str| s.trim_end_matches(['\r', '\n']).to_string();
    while i < lines.len() {
        let raw = lines[i];
        i += 1;
        if is_comment(raw) {
            let c = raw.trim_start()[1..].trim().to_string();
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c);
            }
        }
        let line = trim_nl(raw);
        let line = line.trim_start();
        let is_directive = d.possible(line).map_err(|m| ParseError {
            start_line: current + 1,
            end_line: current + 1,
            msg: m,
        })?;
        if is_directive {
            comments.pop();
        }
        current += 1;
        let start = current;
        let line = if is_comment(line) { "" } else { line };
        let (first, mut eol) = trim_continuation(line, d.escape);
        if eol && first.is_empty() {
            continue;
        }
        let mut buf = first;
        let mut empty_continuation = false;
        while !eol && i < lines.len() {
            let raw = lines[i];
            i += 1;
            let l = trim_nl(raw);
            d.possible(&l).map_err(|m| ParseError {
                start_line: current + 1,
                end_line: current + 1,
                msg: m,
            })?;
            current += 1;
            if is_comment(raw) {
                continue;
            }
            if l.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, e) = trim_continuation(&l, d.escape);
            eol = e;
            buf.push_str(&part);
        }
        if empty_continuation {
            warnings.push(Warning {
                rule: "NoEmptyContinuation",
                msg: format!("Empty continuation line found in: {buf}"),
                line: current,
            });
        }
        let mut node = node_from_line(&buf, d.escape).map_err(|m| ParseError {
            start_line: start,
            end_line: current,
            msg: m,
        })?;
        node.comments = std::mem::take(&mut comments);
        if can_contain_heredoc(&node) && buf.contains("<<") {
            let docs = heredocs_from_line(&buf).map_err(|m| ParseError {
                start_line: start,
                end_line: current,
                msg: m,
            })?;
            for mut h in docs {
                let mut content = h.content.clone();
                let mut terminated = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    current += 1;
                    let mut possible = raw.trim_end_matches(['\r', '\n']);
                    if h.chomp {
                        possible = possible.trim_start_matches('\t');
                    }
                    if possible == h.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw);
                }
                if !terminated {
                    return err(start, current, "unterminated heredoc");
                }
                h.content = content;
                node.heredocs.push(h);
            }
        }
        node.start_line = start;
        node.end_line = current;
        children.push(node);
    }
    if children.is_empty() {
        return err(current.max(1), current.max(1), "file with no instructions");
    }
    Ok(Ast {
        children,
        escape: d.escape,
        directives: d.seen,
        warnings,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.sub, node.name().as_str()) {
        (Some(sub), "onbuild") => sub.as_ref(),
        _ => node,
    };
    matches!(n.name().as_str(), "add" | "copy" | "run") && !n.json
}

/// Heredoc words in a line (`<<EOF`, `3<<-"EOF"`).
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let lex = Lex {
        escape: '\\',
        raw_quotes: true,
        raw_escapes: true,
        skip_process_quotes: false,
        skip_unset_env: true,
    };
    let words = lex.process_words(line, &|_| None).unwrap_or_default();
    let mut out = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc(&w)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// Parses one heredoc word: `(\d*)<<(-?)\s*(word)`.
pub fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, String> {
    let digits: String = src.chars().take_while(char::is_ascii_digit).collect();
    let Some(rest) = src[digits.len()..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let mut lex = Lex {
        escape: '\\',
        raw_quotes: false,
        raw_escapes: false,
        skip_process_quotes: false,
        skip_unset_env: true,
    };
    let words = lex
        .process_words(rest, &|_| None)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex
        .process_words(rest, &|_| None)
        .map_err(|e| e.to_string())?;
    if raw.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let count = |s: &str| s.matches(['\'', '"']).count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        fd: digits.parse().unwrap_or(0),
        expand: count(&words[0]) == count(&raw[0]),
        chomp,
        content: String::new(),
    }))
}

/// Strips leading tabs from every line of a `<<-` heredoc body.
pub fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// Splits a logical line into instruction, flags and arguments.
fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(words::is_ws) {
        Some(i) => (&trimmed[..i], trimmed[i..].trim_start_matches(words::is_ws)),
        None => (trimmed, ""),
    };
    let (args_str, flags) = if rest.is_empty() {
        (String::new(), Vec::new())
    } else {
        words::extract_flags(rest, escape)
    };
    let args_str = args_str.trim();
    let mut node = Node {
        cmd: cmd.to_string(),
        flags,
        original: line.to_string(),
        ..Default::default()
    };
    match cmd.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => {
            (node.args, node.json) = maybe_json_list(args_str)?;
        }
        "cmd" | "entrypoint" | "run" | "shell" => {
            (node.args, node.json) = maybe_json(args_str)?;
        }
        "arg" => node.args = words::parse_words(args_str, escape),
        "env" | "label" => node.args = name_val(args_str, &cmd.to_ascii_uppercase(), escape)?,
        "expose" | "from" => node.args = words::split_ws(args_str),
        "healthcheck" => {
            let sep = args_str.find(words::is_ws).unwrap_or(args_str.len());
            if sep > 0 {
                let typ = &args_str[..sep];
                let rest = args_str[sep..].trim_start_matches(words::is_ws);
                let (mut a, json) = maybe_json(rest)?;
                a.insert(0, typ.to_string());
                node.args = a;
                node.json = json;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !args_str.is_empty() {
                node.args = vec![args_str.to_string()];
            }
        }
        "onbuild" => {
            if !args_str.is_empty() {
                node.sub = Some(Box::new(node_from_line(args_str, escape)?));
            }
        }
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

enum Json {
    Strings(Vec<String>),
    NotStrings,
    Invalid,
}

fn parse_json(rest: &str) -> Json {
    let r = rest.trim_start();
    if !r.starts_with('[') {
        return Json::Invalid;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(r) {
        Ok(v) => {
            let mut out = Vec::with_capacity(v.len());
            for x in v {
                match x {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Strings(out)
        }
        Err(_) => Json::Invalid,
    }
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        Json::Strings(v) => Ok((v, true)),
        Json::NotStrings => Err(NOT_STRINGS.into()),
        Json::Invalid => Ok((vec![rest.to_string()], false)),
    }
}

fn maybe_json_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match parse_json(rest) {
        Json::Strings(v) => Ok((v, true)),
        Json::NotStrings => Err(NOT_STRINGS.into()),
        Json::Invalid => Ok((words::split_ws(rest), false)),
    }
}

/// ENV and LABEL: `KEY value` (old form) or `k=v k2=v2`; each pair becomes
/// `key, value, sep` in the argument list, as in BuildKit's tree.
fn name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let ws = words::parse_words(rest, escape);
    if ws.is_empty() {
        return Ok(Vec::new());
    }
    if !ws[0].contains('=') {
        let parts: Vec<&str> = match rest.find(words::is_ws) {
            Some(i) => vec![&rest[..i], rest[i..].trim_start_matches(words::is_ws)],
            None => vec![rest],
        };
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(vec![
            parts[0].to_string(),
            parts[1].to_string(),
            String::new(),
        ]);
    }
    let mut out = Vec::new();
    for w in ws {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(&w)
            ));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
