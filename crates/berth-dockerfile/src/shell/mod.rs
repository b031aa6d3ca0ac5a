//! Shell-word expansion as Docker's frontend does it: quotes, escapes, `$VAR`,
//! `${VAR}`, `${VAR:-w}`, `${VAR-w}`, `${VAR:+w}`, `${VAR+w}`, `${VAR:?m}`,
//! `${VAR?m}`, `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`, `${VAR/p/r}`,
//! `${VAR//p/r}`, and word splitting after expansion.
//!
//! This module knows nothing of Dockerfiles: it takes a word, an environment
//! lookup and the escape character. It also reports which variables a word used
//! (found and not found), which the builder's cache keys and lint checks need.

mod pattern;

use std::collections::BTreeSet;

use pattern::Pattern;

/// An expansion error (`failed to process "…": syntax error: missing '}'`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {msg}")]
pub struct ShellError {
    /// The word being processed.
    pub word: String,
    /// What went wrong.
    pub msg: String,
}

/// Lexer options.
#[derive(Debug, Clone, Copy)]
pub struct Lex {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave `$VAR` as written when VAR is unset.
    pub skip_unset_env: bool,
}

/// The result of expanding a word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    /// The expanded word (spaces kept).
    pub result: String,
    /// The expanded word split into words.
    pub words: Vec<String>,
    /// Variables the word referenced that were set.
    pub matched: BTreeSet<String>,
    /// Variables the word referenced that were not set.
    pub unmatched: BTreeSet<String>,
}

impl Lex {
    /// A lexer with `escape` and default options.
    pub fn new(escape: char) -> Self {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word`, looking variables up with `env`.
    pub fn process(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Expanded, ShellError> {
        let mut w = Word {
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match w.process_stop_on(None, self.raw_escapes) {
            Ok((result, words)) => Ok(Expanded {
                result,
                words,
                matched: w.matched,
                unmatched: w.unmatched,
            }),
            Err(msg) => Err(ShellError {
                word: word.to_string(),
                msg,
            }),
        }
    }

    /// Expands `word` into a single string.
    pub fn process_word(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ShellError> {
        self.process(word, env).map(|e| e.result)
    }

    /// Expands `word` and splits the result into words.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|e| e.words)
    }
}

/// Looks up `KEY` in a `KEY=value` list (the last one wins).
pub fn env_lookup<'a>(env: &'a [String]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k: &str| {
        env.iter().rev().find_map(|e| {
            let (ek, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            (ek == k).then(|| v.to_string())
        })
    }
}

struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct Word<'e> {
    lex: Lex,
    chars: Vec<char>,
    pos: usize,
    env: &'e dyn Fn(&str) -> Option<String>,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

impl Word<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match (self.env)(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v)
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words {
            buf: String::new(),
            words: Vec::new(),
            in_word: false,
        };
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if !self.lex.skip_process_quotes => Some(self.process_single_quote()?),
                '"' if !self.lex.skip_process_quotes => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(tmp) = special {
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            let mut ch = self.next().expect("peeked");
            if ch == self.lex.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    None => break,
                    Some(c) => ch = c,
                }
                words.add_raw_char(ch);
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(s) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let open = self.next().expect("quote");
        if self.lex.raw_quotes {
            out.push(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let open = self.next().expect("quote");
        if self.lex.raw_quotes {
            out.push(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    out.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().expect("peeked");
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                ch = self.next().expect("peeked");
                            }
                            _ => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut out = String::from("<<");
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            out.push(c);
            self.next();
        }
        out
    }

    /// Expands one `$…` word. Long on purpose: BuildKit's lexer is one
    /// state machine (`$x`, `${x}`, and each `${x:-…}` modifier), kept whole
    /// so it reads against BuildKit's `processDollar`.
    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{') | Some('}') | Some(':') => {
                return Err("syntax error: bad substitution".into());
            }
            _ => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut chs: String = first.map(String::from).unwrap_or_else(|| "\u{fffd}".into());
        let mut ch = first;
        let mut null_is_unset = false;
        if ch == Some('}') {
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            });
        }
        if ch == Some('/') {
            let replace_all = self.peek() == Some('/');
            if replace_all {
                self.next();
            }
            let (pat, _) = self.process_stop_on(Some('/'), true).map_err(|e| {
                if self.peek().is_none() {
                    "syntax error: missing '/' in ${}".to_string()
                } else {
                    e
                }
            })?;
            let (repl, _) = self.process_stop_on(Some('}'), true).map_err(|e| {
                if self.peek().is_none() {
                    "syntax error: missing '}'".to_string()
                } else {
                    e
                }
            })?;
            let value = self.get_env(&name);
            let Some(value) = value else {
                if self.lex.skip_unset_env {
                    return Ok(format!("${{{name}/{pat}/{repl}}}"));
                }
                return Ok(String::new());
            };
            let p = Pattern::parse(&pat)
                .map_err(|e| format!("invalid pattern ({pat}) in substitution: {e}"))?;
            return Ok(p.replace(&value, &repl, replace_all));
        }
        if ch == Some(':') {
            null_is_unset = true;
            ch = self.next();
            if let Some(c) = ch {
                chs.push(c);
            }
        }
        let Some(op) = ch.filter(|c| matches!(c, '+' | '-' | '?' | '#' | '%')) else {
            if ch.is_none() {
                // BuildKit says "unsupported modifier (\u{fffd})" here; the end
                // of the word is what went wrong.
                return Err("syntax error: missing '}'".into());
            }
            return Err(format!("unsupported modifier ({chs}) in substitution"));
        };
        let raw = op == '#' || op == '%';
        if null_is_unset && raw {
            return Err(format!("unsupported modifier ({chs}) in substitution"));
        }
        let (mut word, _) = self.process_stop_on(Some('}'), raw).map_err(|e| {
            if self.peek().is_none() {
                "syntax error: missing '}'".to_string()
            } else {
                e
            }
        })?;
        let value = self.get_env(&name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let unset_or_null = !set || (null_is_unset && value.is_empty());
        match op {
            '-' => Ok(if unset_or_null { word } else { value }),
            '+' => Ok(if unset_or_null { String::new() } else { word }),
            '?' => {
                if !set {
                    let m = if word.is_empty() {
                        "is not allowed to be unset".to_string()
                    } else {
                        word
                    };
                    return Err(format!("{name}: {m}"));
                }
                if null_is_unset && value.is_empty() {
                    let m = if word.is_empty() {
                        "is not allowed to be empty".to_string()
                    } else {
                        word
                    };
                    return Err(format!("{name}: {m}"));
                }
                Ok(value)
            }
            _ => {
                let mut greedy = false;
                if word.starts_with(op) {
                    greedy = true;
                    word.remove(0);
                }
                let p = Pattern::parse(&word)
                    .map_err(|e| format!("invalid pattern ({word}) in substitution: {e}"))?;
                Ok(if op == '%' {
                    p.trim_suffix(&value, greedy)
                } else {
                    p.trim_prefix(&value, greedy)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Where BuildKit's test data lives for tests (../shared beside the project).
#[cfg(test)]
pub(crate) mod tests_support {
    /// `../shared/testdata/buildkit-dockerfile`.
    pub fn testdata_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/buildkit-dockerfile")
    }
}
