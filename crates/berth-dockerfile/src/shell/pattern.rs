//! Shell patterns for `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}`: `*` matches any
//! string, `?` any one character, `\` escapes `*`, `?` and `\` (and is dropped
//! before `}` and `/`). Bracket expressions are not supported, as in Docker.
//!
//! Matched directly on characters (shortest or longest) instead of through a
//! regex translation, so no regex engine is needed.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern(Vec<Tok>);

impl Pattern {
    /// Compiles `p`.
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let mut out = Vec::new();
        let mut it = p.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => out.push(Tok::Star),
                '?' => out.push(Tok::Any),
                '\\' => match it.peek() {
                    Some('}') | Some('/') => {}
                    Some(&n) if matches!(n, '*' | '?' | '\\') => {
                        it.next();
                        out.push(Tok::Lit(n));
                    }
                    Some(&n) => return Err(format!("invalid escape '\\{n}'")),
                    None => return Err("trailing backslash".into()),
                },
                c => out.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern(out))
    }

    /// Whether the whole of `s` matches.
    fn full_match(&self, s: &[char]) -> bool {
        fn m(p: &[Tok], s: &[char]) -> bool {
            match p.first() {
                None => s.is_empty(),
                Some(Tok::Star) => (0..=s.len()).any(|i| m(&p[1..], &s[i..])),
                Some(Tok::Any) => !s.is_empty() && m(&p[1..], &s[1..]),
                Some(Tok::Lit(c)) => s.first() == Some(c) && m(&p[1..], &s[1..]),
            }
        }
        m(&self.0, s)
    }

    /// Removes the shortest (or longest) matching prefix.
    pub fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let ends: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=v.len()).rev())
        } else {
            Box::new(0..=v.len())
        };
        for end in ends {
            if self.full_match(&v[..end]) {
                return v[end..].iter().collect();
            }
        }
        value.to_string()
    }

    /// Removes the shortest (or longest) matching suffix.
    pub fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let starts: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new(0..=v.len())
        } else {
            Box::new((0..=v.len()).rev())
        };
        for start in starts {
            if self.full_match(&v[start..]) {
                return v[..start].iter().collect();
            }
        }
        value.to_string()
    }

    /// Replaces the first (or every) leftmost-longest match with `repl`.
    pub fn replace(&self, value: &str, repl: &str, all: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        let mut replaced = false;
        while i <= v.len() {
            if replaced && !all {
                break;
            }
            let found = (i..=v.len()).rev().find(|&end| self.full_match(&v[i..end]));
            match found {
                Some(end) => {
                    out.push_str(repl);
                    replaced = true;
                    if end == i {
                        // Empty match: keep one character and move on.
                        if let Some(c) = v.get(i) {
                            out.push(*c);
                        }
                        i += 1;
                    } else {
                        i = end;
                    }
                }
                None => {
                    if let Some(c) = v.get(i) {
                        out.push(*c);
                    }
                    i += 1;
                }
            }
        }
        out.extend(v.get(i..).unwrap_or(&[]).iter());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_replaces() {
        let p = Pattern::parse("*/").unwrap();
        assert_eq!(p.trim_prefix("a/b/c", false), "b/c");
        assert_eq!(p.trim_prefix("a/b/c", true), "c");
        let p = Pattern::parse("/*").unwrap();
        assert_eq!(p.trim_suffix("a/b/c", false), "a/b");
        assert_eq!(p.trim_suffix("a/b/c", true), "a");
        let p = Pattern::parse("o").unwrap();
        assert_eq!(p.replace("foo", "0", false), "f0o");
        assert_eq!(p.replace("foo", "0", true), "f00");
        assert!(Pattern::parse("\\x").is_err());
    }
}
