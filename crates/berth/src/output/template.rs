//! A Go `text/template` subset over JSON values, for `--format` as docker users
//! script it: `{{.Id}}`, `{{.Config.Cmd}}`, `{{json .Config}}`, `{{.Repository}}:{{.Tag}}`,
//! `{{range .RepoTags}}{{.}} {{end}}`, `{{index .Labels "k"}}`, `{{join .Args ","}}`,
//! `{{if .X}}…{{else}}…{{end}}`, `{{println .X}}`, `{{upper .X}}`, `{{len .X}}`, pipes.
//!
//! Hand-written because the one Rust port of Go templates (gtmpl) prints slices and
//! maps in Rust's Debug syntax, while scripts depend on Go's `[a b]` and `map[k:v]`.
//! Values print as Go's fmt `%v` prints the structs docker marshals.

use serde_json::Value;

/// A template error, with docker's wording where it has one.
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipeline(Vec<Command>);

#[derive(Debug, Clone)]
struct Command(Vec<Arg>);

#[derive(Debug, Clone)]
enum Arg {
    /// `.A.B` (empty path is `.`)
    Field(Vec<String>),
    /// `$` or `$.A`
    Root(Vec<String>),
    Ident(String),
    Str(String),
    Num(f64),
    Bool(bool),
    Sub(Pipeline),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses `src`.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let mut toks = tokenize(src)?;
        toks.reverse();
        let (nodes, end) = parse_nodes(&mut toks)?;
        if let Some(e) = end {
            return Err(TemplateError(format!("unexpected {{{{{e}}}}}")));
        }
        Ok(Template { nodes })
    }

    /// Renders with `dot` as the data.
    pub fn render(&self, dot: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        exec(&self.nodes, dot, dot, &mut out)?;
        Ok(out)
    }
}

enum Tok {
    Text(String),
    Action(String),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("{{") {
        let mut text = &rest[..i];
        let mut inner = &rest[i + 2..];
        if let Some(s) = inner.strip_prefix("- ") {
            text = text.trim_end();
            inner = s;
        }
        let j = inner
            .find("}}")
            .ok_or_else(|| TemplateError("unclosed action".into()))?;
        let mut action = &inner[..j];
        let mut after = &inner[j + 2..];
        if let Some(a) = action.strip_suffix(" -") {
            action = a;
            after = after.trim_start();
        }
        if !text.is_empty() {
            out.push(Tok::Text(text.to_string()));
        }
        out.push(Tok::Action(action.trim().to_string()));
        rest = after;
    }
    if !rest.is_empty() {
        out.push(Tok::Text(rest.to_string()));
    }
    Ok(out)
}

/// Parses nodes until `{{end}}` / `{{else}}`; returns which one stopped it.
fn parse_nodes(toks: &mut Vec<Tok>) -> Result<(Vec<Node>, Option<String>), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(t) = toks.pop() {
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s)),
            Tok::Action(a) => {
                if a.starts_with("/*") {
                    continue;
                }
                let (kw, rest) = a
                    .split_once(char::is_whitespace)
                    .unwrap_or((a.as_str(), ""));
                match kw {
                    "end" | "else" => return Ok((nodes, Some(a))),
                    "if" | "range" | "with" => {
                        let p = parse_pipeline(rest)?;
                        let (body, end) = parse_nodes(toks)?;
                        let els = match end.as_deref() {
                            Some("end") => Vec::new(),
                            Some(e) if e.starts_with("else") => {
                                let rest_else = e["else".len()..].trim();
                                if let Some(cond) = rest_else.strip_prefix("if ") {
                                    // else if: a nested if that consumes the shared end.
                                    let p2 = parse_pipeline(cond)?;
                                    let (b2, end2) = parse_nodes(toks)?;
                                    let e2 = match end2.as_deref() {
                                        Some("end") => Vec::new(),
                                        Some("else") => {
                                            let (e, end3) = parse_nodes(toks)?;
                                            expect_end(end3)?;
                                            e
                                        }
                                        _ => return Err(TemplateError("unexpected EOF".into())),
                                    };
                                    vec![Node::If(p2, b2, e2)]
                                } else {
                                    let (e, end2) = parse_nodes(toks)?;
                                    expect_end(end2)?;
                                    e
                                }
                            }
                            _ => return Err(TemplateError("unexpected EOF".into())),
                        };
                        nodes.push(match kw {
                            "if" => Node::If(p, body, els),
                            "range" => Node::Range(p, body, els),
                            _ => Node::With(p, body, els),
                        });
                    }
                    _ => nodes.push(Node::Action(parse_pipeline(&a)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn expect_end(e: Option<String>) -> Result<(), TemplateError> {
    match e.as_deref() {
        Some("end") => Ok(()),
        _ => Err(TemplateError("expected {{end}}".into())),
    }
}

fn parse_pipeline(s: &str) -> Result<Pipeline, TemplateError> {
    let words = split_words(s)?;
    let mut cmds = vec![Command(Vec::new())];
    for w in words {
        if w == "|" {
            cmds.push(Command(Vec::new()));
            continue;
        }
        let arg = parse_arg(&w)?;
        cmds.last_mut().expect("one command").0.push(arg);
    }
    if cmds.iter().any(|c| c.0.is_empty()) {
        return Err(TemplateError(format!("missing value for command in {s:?}")));
    }
    Ok(Pipeline(cmds))
}

fn split_words(s: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            let q = c;
            let mut w = String::from(c);
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                w.push(c);
                if c == '\\' && q == '"' {
                    if let Some(n) = chars.next() {
                        w.push(n);
                    }
                } else if c == q {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(TemplateError("unterminated quoted string".into()));
            }
            out.push(w);
        } else if c == '(' {
            let mut depth = 0;
            let mut w = String::new();
            for c in chars.by_ref() {
                if c == '(' {
                    depth += 1;
                } else if c == ')' {
                    depth -= 1;
                }
                w.push(c);
                if depth == 0 {
                    break;
                }
            }
            out.push(w);
        } else if c == '|' {
            chars.next();
            out.push("|".into());
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '|' || c == '(' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn parse_arg(w: &str) -> Result<Arg, TemplateError> {
    let path = |s: &str| -> Vec<String> {
        s.split('.')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(if w.starts_with('.') {
        Arg::Field(path(w))
    } else if let Some(r) = w.strip_prefix('$') {
        Arg::Root(path(r))
    } else if w.starts_with('"') {
        Arg::Str(
            serde_json::from_str(w)
                .map_err(|_| TemplateError(format!("bad string literal {w}")))?,
        )
    } else if let Some(r) = w.strip_prefix('`') {
        Arg::Str(r.trim_end_matches('`').to_string())
    } else if w.starts_with('(') {
        Arg::Sub(parse_pipeline(&w[1..w.len() - 1])?)
    } else if w == "true" || w == "false" {
        Arg::Bool(w == "true")
    } else if let Ok(n) = w.parse::<f64>() {
        Arg::Num(n)
    } else {
        Arg::Ident(w.to_string())
    })
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn exec(nodes: &[Node], dot: &Value, root: &Value, out: &mut String) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, root)?;
                out.push_str(&go_print(&v));
            }
            Node::If(p, a, b) => {
                if truthy(&eval_pipeline(p, dot, root)?) {
                    exec(a, dot, root, out)?;
                } else {
                    exec(b, dot, root, out)?;
                }
            }
            Node::With(p, a, b) => {
                let v = eval_pipeline(p, dot, root)?;
                if truthy(&v) {
                    exec(a, &v, root, out)?;
                } else {
                    exec(b, dot, root, out)?;
                }
            }
            Node::Range(p, a, b) => {
                let v = eval_pipeline(p, dot, root)?;
                let items: Vec<Value> = match &v {
                    Value::Array(x) => x.clone(),
                    Value::Object(o) => o.values().cloned().collect(),
                    Value::Null => Vec::new(),
                    other => {
                        return Err(TemplateError(format!(
                            "range can't iterate over {}",
                            go_print(other)
                        )));
                    }
                };
                if items.is_empty() {
                    exec(b, dot, root, out)?;
                }
                for it in &items {
                    exec(a, it, root, out)?;
                }
            }
        }
    }
    Ok(())
}

fn field(v: &Value, path: &[String]) -> Result<Value, TemplateError> {
    let mut cur = v.clone();
    for p in path {
        cur = match &cur {
            Value::Object(o) => match o.get(p) {
                Some(x) => x.clone(),
                None => {
                    return Err(TemplateError(format!(
                        "executing \"\" at <.{}>: map has no entry for key \"{p}\"",
                        path.join(".")
                    )));
                }
            },
            Value::Null => Value::Null,
            _ => {
                return Err(TemplateError(format!(
                    "executing \"\" at <.{}>: can't evaluate field {p}",
                    path.join(".")
                )));
            }
        };
    }
    Ok(cur)
}

fn eval_pipeline(p: &Pipeline, dot: &Value, root: &Value) -> Result<Value, TemplateError> {
    let mut prev: Option<Value> = None;
    for c in &p.0 {
        prev = Some(eval_command(c, dot, root, prev)?);
    }
    Ok(prev.unwrap_or(Value::Null))
}

fn eval_arg(a: &Arg, dot: &Value, root: &Value) -> Result<Value, TemplateError> {
    Ok(match a {
        Arg::Field(p) => field(dot, p)?,
        Arg::Root(p) => field(root, p)?,
        Arg::Str(s) => Value::String(s.clone()),
        Arg::Num(n) => serde_json::json!(n),
        Arg::Bool(b) => Value::Bool(*b),
        Arg::Sub(p) => eval_pipeline(p, dot, root)?,
        Arg::Ident(i) => return Err(TemplateError(format!("function {i:?} used as a value"))),
    })
}

/// Evaluates one pipeline command. Long on purpose: one arm per function
/// of Go's templates and docker's additions (`json`, `join`, `table`, …).
fn eval_command(
    c: &Command,
    dot: &Value,
    root: &Value,
    piped: Option<Value>,
) -> Result<Value, TemplateError> {
    let (head, rest) = c.0.split_first().expect("non-empty command");
    let Arg::Ident(f) = head else {
        // docker's `.Label "key"` method (ps, volume ls, network ls rows):
        // one label of the row's Labels, a map or docker's `k=v,…` string.
        if let (Arg::Field(p), [key]) = (head, rest)
            && p.last().is_some_and(|l| l == "Label")
        {
            let parent = field(dot, &p[..p.len() - 1])?;
            let key = go_print(&eval_arg(key, dot, root)?);
            return Ok(match &parent["Labels"] {
                Value::Object(m) => m.get(&key).cloned().unwrap_or(Value::String(String::new())),
                Value::String(s) => Value::String(
                    s.split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default(),
                ),
                _ => Value::String(String::new()),
            });
        }
        if !rest.is_empty() {
            return Err(TemplateError("can't give argument to non-function".into()));
        }
        return eval_arg(head, dot, root);
    };
    let mut args = rest
        .iter()
        .map(|a| eval_arg(a, dot, root))
        .collect::<Result<Vec<_>, _>>()?;
    args.extend(piped);
    let s = |i: usize| args.get(i).map(go_print).unwrap_or_default();
    Ok(match f.as_str() {
        "json" => Value::String(
            serde_json::to_string(args.first().unwrap_or(&Value::Null)).expect("json"),
        ),
        "upper" => Value::String(s(0).to_uppercase()),
        "lower" => Value::String(s(0).to_lowercase()),
        "title" => {
            let t = s(0);
            let mut c = t.chars();
            Value::String(
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default(),
            )
        }
        "println" => Value::String(args.iter().map(go_print).collect::<Vec<_>>().join(" ") + "\n"),
        "print" => Value::String(args.iter().map(go_print).collect::<Vec<_>>().join("")),
        "printf" => {
            // %s and %v only: enough for docker's documented examples.
            let fmt = s(0);
            let mut it = args.iter().skip(1);
            let mut o = String::new();
            let mut chars = fmt.chars().peekable();
            while let Some(ch) = chars.next() {
                if ch == '%' {
                    match chars.next() {
                        Some('%') => o.push('%'),
                        Some(_) => o.push_str(&it.next().map(go_print).unwrap_or_default()),
                        None => o.push('%'),
                    }
                } else {
                    o.push(ch);
                }
            }
            Value::String(o)
        }
        "len" => serde_json::json!(match args.first() {
            Some(Value::Array(a)) => a.len(),
            Some(Value::Object(o)) => o.len(),
            Some(Value::String(s)) => s.len(),
            _ => 0,
        }),
        "join" => {
            let sep = s(1);
            match args.first() {
                Some(Value::Array(a)) => {
                    Value::String(a.iter().map(go_print).collect::<Vec<_>>().join(&sep))
                }
                Some(other) => Value::String(go_print(other)),
                None => Value::String(String::new()),
            }
        }
        "split" => Value::Array(s(0).split(&s(1)).map(|x| Value::String(x.into())).collect()),
        "index" => {
            let mut cur = args.first().cloned().unwrap_or(Value::Null);
            for k in &args[1.min(args.len())..] {
                cur = match (&cur, k) {
                    (Value::Object(o), Value::String(k)) => {
                        o.get(k).cloned().unwrap_or(Value::Null)
                    }
                    (Value::Array(a), Value::Number(n)) => a
                        .get(n.as_f64().unwrap_or(-1.0) as usize)
                        .cloned()
                        .ok_or_else(|| TemplateError("index out of range".into()))?,
                    _ => Value::Null,
                };
            }
            cur
        }
        "eq" => Value::Bool(args.len() >= 2 && args[1..].iter().any(|a| *a == args[0])),
        "ne" => Value::Bool(args.len() >= 2 && args[0] != args[1]),
        // Go's lt/le/gt/ge: numbers by value, strings by bytes.
        "lt" | "le" | "gt" | "ge" => {
            let ord = match (args.first(), args.get(1)) {
                (Some(Value::Number(a)), Some(Value::Number(b))) => a
                    .as_f64()
                    .partial_cmp(&b.as_f64())
                    .ok_or_else(|| TemplateError(format!("{f}: incomparable numbers")))?,
                (Some(Value::String(a)), Some(Value::String(b))) => a.cmp(b),
                _ => {
                    return Err(TemplateError(format!(
                        "error calling {f}: incompatible types for comparison"
                    )));
                }
            };
            use std::cmp::Ordering::*;
            Value::Bool(match f.as_str() {
                "lt" => ord == Less,
                "le" => ord != Greater,
                "gt" => ord == Greater,
                _ => ord != Less,
            })
        }
        "not" => Value::Bool(!truthy(args.first().unwrap_or(&Value::Null))),
        "and" => args
            .iter()
            .find(|a| !truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => args
            .iter()
            .find(|a| truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "truncate" => {
            let n = args.get(1).and_then(Value::as_f64).unwrap_or(0.0) as usize;
            Value::String(s(0).chars().take(n).collect())
        }
        "pad" => Value::String(format!(
            "{}{}",
            " ".repeat(args.get(1).and_then(Value::as_u64).unwrap_or(0) as usize),
            s(0)
        )),
        other => return Err(TemplateError(format!("function {other:?} not defined"))),
    })
}

/// Prints a value as Go's `%v` would print the equivalent Go value.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_inner).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<_> = o.keys().collect();
            keys.sort();
            format!(
                "map[{}]",
                keys.iter()
                    .map(|k| format!("{k}:{}", go_inner(&o[k.as_str()])))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

fn go_inner(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        other => go_print(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: Value) -> String {
        Template::parse(t).unwrap().render(&v).unwrap()
    }

    #[test]
    fn docker_style_formats() {
        let v = json!({"Id":"sha256:abc","Config":{"Cmd":["sh","-c","x"],"Env":null,"Labels":{"b":"2","a":"1"}},"RepoTags":["a:1","b:2"],"Size":4261550});
        assert_eq!(r("{{.Id}}", v.clone()), "sha256:abc");
        assert_eq!(r("{{.Config.Cmd}}", v.clone()), "[sh -c x]");
        assert_eq!(r("{{json .Config.Cmd}}", v.clone()), r#"["sh","-c","x"]"#);
        assert_eq!(r("{{.Config.Labels}}", v.clone()), "map[a:1 b:2]");
        assert_eq!(r("{{index .Config.Labels \"a\"}}", v.clone()), "1");
        assert_eq!(r("{{range .RepoTags}}{{.}} {{end}}", v.clone()), "a:1 b:2 ");
        assert_eq!(r("{{join .RepoTags \",\"}}", v.clone()), "a:1,b:2");
        assert_eq!(r("{{.Size}}", v.clone()), "4261550");
        assert_eq!(r("{{if .Config.Env}}yes{{else}}no{{end}}", v.clone()), "no");
        assert_eq!(r("{{.Config.Cmd | json}}", v.clone()), r#"["sh","-c","x"]"#);
        assert_eq!(r("{{len .RepoTags}}", v.clone()), "2");
        assert_eq!(r("{{upper (index .RepoTags 0)}}", v.clone()), "A:1");
        assert_eq!(r("{{- .Id -}}  \n", v), "sha256:abc");
    }

    #[test]
    fn errors() {
        assert!(Template::parse("{{.Id").is_err());
        assert!(Template::parse("{{if .X}}").is_err());
        let t = Template::parse("{{.Nope}}").unwrap();
        assert!(t.render(&json!({"Id":1})).is_err());
        assert!(
            Template::parse("{{nofunc .X}}")
                .unwrap()
                .render(&json!({"X":1}))
                .is_err()
        );
    }

    #[test]
    fn label_method() {
        let row = serde_json::json!({"Labels": "app=web,tier=front"});
        let t = Template::parse("{{.Label \"tier\"}}|{{.Label \"nope\"}}").unwrap();
        assert_eq!(t.render(&row).unwrap(), "front|");
        let vol = serde_json::json!({"Labels": {"k": "v"}});
        assert_eq!(
            Template::parse("{{.Label \"k\"}}")
                .unwrap()
                .render(&vol)
                .unwrap(),
            "v"
        );
    }
}
