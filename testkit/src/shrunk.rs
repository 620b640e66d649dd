//! Proptest's minimal failing inputs, read back: a failing case prints its input with
//! `{:?}` ("minimal failing input: stack = [...], programs = [...]"); [`parse_rw_case`]
//! turns that text into the stack and the programs again, so a divergence found with fresh
//! seeds (in CI) can be kept under `tests/data/` and replayed as a fixed test.
//!
//! Hand-written: `Op` and `Node` have no serde derives, and the text is `Debug` output,
//! which no crate parses; the reader below knows only the shapes `Debug` gives these types
//! (structs, tuple variants, unit variants, maps, lists, strings, numbers).

use std::collections::BTreeMap;

use crate::ops::{Op, WriteHow};
use crate::spec::{Layer, Node};

/// One value of `{:?}` output.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Num(i64),
    /// `Name`, `true`, `None`.
    Unit(String),
    /// `Name { field: value, ... }`.
    Struct(String, BTreeMap<String, Value>),
    /// `Name(value, ...)`, or `(value, ...)` with an empty name.
    Tuple(String, Vec<Value>),
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

struct Reader<'a> {
    s: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn fail(&self, what: &str) -> ! {
        let end = (self.at + 40).min(self.s.len());
        panic!(
            "shrunk input, byte {}: expected {what} at {:?}",
            self.at,
            &self.s[self.at..end]
        )
    }

    fn skip_space(&mut self) {
        let rest = &self.s[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.s[self.at..].chars().next()
    }

    /// Consumes `tok` if it comes next.
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_space();
        let hit = self.s[self.at..].starts_with(tok);
        if hit {
            self.at += tok.len();
        }
        hit
    }

    fn expect(&mut self, tok: &str) {
        if !self.eat(tok) {
            self.fail(tok)
        }
    }

    fn word(&mut self) -> String {
        self.skip_space();
        let rest = &self.s[self.at..];
        let n = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        if n == 0 {
            self.fail("a name or a number")
        }
        self.at += n;
        rest[..n].to_string()
    }

    fn string(&mut self) -> String {
        self.expect("\"");
        let mut out = String::new();
        let s = self.s;
        let mut chars = s[self.at..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return out;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('0') => out.push('\0'),
                    Some('u') => {
                        let hex: String = chars
                            .by_ref()
                            .map(|(_, c)| c)
                            .skip(1)
                            .take_while(|&c| c != '}')
                            .collect();
                        let code = u32::from_str_radix(&hex, 16).ok();
                        out.push(code.and_then(char::from_u32).unwrap_or_else(|| {
                            self.fail("a \\u{...} escape");
                        }));
                    }
                    Some(c) => out.push(c),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.fail("the end of a string")
    }

    /// Values up to `close`, separated by commas (a trailing one allowed).
    fn items<T>(&mut self, close: &str, mut item: impl FnMut(&mut Self) -> T) -> Vec<T> {
        let mut out = vec![];
        while !self.eat(close) {
            out.push(item(self));
            if !self.eat(",") {
                self.expect(close);
                break;
            }
        }
        out
    }

    fn value(&mut self) -> Value {
        match self.peek() {
            Some('"') => Value::Str(self.string()),
            Some('[') => {
                self.expect("[");
                Value::List(self.items("]", Self::value))
            }
            Some('{') => {
                self.expect("{");
                Value::Map(self.items("}", |r| {
                    let k = r.value();
                    r.expect(":");
                    (k, r.value())
                }))
            }
            Some('(') => {
                self.expect("(");
                Value::Tuple(String::new(), self.items(")", Self::value))
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let w = self.word();
                Value::Num(w.parse().unwrap_or_else(|_| self.fail("a number")))
            }
            Some(_) => {
                let name = self.word();
                if self.eat("{") {
                    let fields = self.items("}", |r| {
                        let f = r.word();
                        r.expect(":");
                        (f, r.value())
                    });
                    Value::Struct(name, fields.into_iter().collect())
                } else if self.eat("(") {
                    Value::Tuple(name, self.items(")", Self::value))
                } else {
                    Value::Unit(name)
                }
            }
            None => self.fail("a value"),
        }
    }
}

impl Value {
    fn str(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            v => panic!("shrunk input: expected a string, found {v:?}"),
        }
    }

    fn num(&self) -> i64 {
        match self {
            Value::Num(n) => *n,
            v => panic!("shrunk input: expected a number, found {v:?}"),
        }
    }

    fn bool(&self) -> bool {
        match self {
            Value::Unit(b) if b == "true" => true,
            Value::Unit(b) if b == "false" => false,
            v => panic!("shrunk input: expected a bool, found {v:?}"),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.list().iter().map(|v| v.num() as u8).collect()
    }

    fn list(&self) -> &[Value] {
        match self {
            Value::List(l) => l,
            v => panic!("shrunk input: expected a list, found {v:?}"),
        }
    }

    fn field(&self, name: &str) -> &Value {
        match self {
            Value::Struct(_, f) => f
                .get(name)
                .unwrap_or_else(|| panic!("shrunk input: no field {name} in {self:?}")),
            v => panic!("shrunk input: expected a struct, found {v:?}"),
        }
    }

    fn name(&self) -> &str {
        match self {
            Value::Unit(n) | Value::Struct(n, _) | Value::Tuple(n, _) => n,
            v => panic!("shrunk input: expected a variant, found {v:?}"),
        }
    }
}

fn layer(v: &Value) -> Layer {
    match v {
        Value::Map(entries) => entries.iter().map(|(k, n)| (k.str(), node(n))).collect(),
        v => panic!("shrunk input: expected a layer (a map), found {v:?}"),
    }
}

fn node(v: &Value) -> Node {
    let n = |f: &str| v.field(f).num() as u32;
    match (v.name(), v) {
        ("File", _) => Node::File {
            data: v.field("data").bytes(),
            mode: n("mode"),
            owner: n("owner"),
            xattr: match v.field("xattr") {
                Value::Tuple(some, x) if some == "Some" => match &x[..] {
                    [Value::Tuple(_, pair)] => Some((pair[0].str(), pair[1].bytes())),
                    _ => panic!("shrunk input: expected Some((name, value)), found {x:?}"),
                },
                _ => None,
            },
            hardlink: v.field("hardlink").bool(),
        },
        ("Dir", _) => Node::Dir {
            opaque: v.field("opaque").bool(),
            mode: n("mode"),
            children: layer(v.field("children")),
        },
        ("Symlink", Value::Tuple(_, t)) => Node::Symlink(t[0].str()),
        ("Fifo", _) => Node::Fifo,
        ("Whiteout", _) => Node::Whiteout,
        _ => panic!("shrunk input: not a layer entry: {v:?}"),
    }
}

fn op(v: &Value) -> Op {
    let s = |f: &str| v.field(f).str();
    let n = |f: &str| v.field(f).num();
    match v.name() {
        "Write" => Op::Write {
            path: s("path"),
            data: v.field("data").bytes(),
            how: match v.field("how") {
                Value::Unit(h) if h == "Truncate" => WriteHow::Truncate,
                Value::Unit(h) if h == "Append" => WriteHow::Append,
                Value::Tuple(h, at) if h == "At" => WriteHow::At(at[0].num() as u64),
                h => panic!("shrunk input: not a WriteHow: {h:?}"),
            },
        },
        "Truncate" => Op::Truncate {
            path: s("path"),
            len: n("len") as u64,
        },
        "Mkdir" => Op::Mkdir {
            path: s("path"),
            mode: n("mode") as u32,
        },
        "Rmdir" => Op::Rmdir { path: s("path") },
        "Unlink" => Op::Unlink { path: s("path") },
        "Rename" => Op::Rename {
            from: s("from"),
            to: s("to"),
            flags: n("flags") as u32,
        },
        "Symlink" => Op::Symlink {
            target: s("target"),
            path: s("path"),
        },
        "Link" => Op::Link {
            from: s("from"),
            to: s("to"),
        },
        "Mknod" => Op::Mknod {
            path: s("path"),
            kind: n("kind") as u32,
        },
        "Chmod" => Op::Chmod {
            path: s("path"),
            mode: n("mode") as u32,
        },
        "Chown" => Op::Chown {
            path: s("path"),
            uid: n("uid") as u32,
        },
        "Utime" => Op::Utime {
            path: s("path"),
            secs: n("secs"),
        },
        "SetXattr" => Op::SetXattr {
            path: s("path"),
            name: s("name"),
            value: v.field("value").bytes(),
        },
        "RemoveXattr" => Op::RemoveXattr {
            path: s("path"),
            name: s("name"),
        },
        "Read" => Op::Read { path: s("path") },
        "SetAcl" => Op::SetAcl {
            path: s("path"),
            default: v.field("default").bool(),
            perms: n("perms") as u16,
        },
        other => panic!("shrunk input: not an operation: {other}"),
    }
}

/// The stack and programs of a writable differential case from proptest's message
/// ("minimal failing input: stack = [...], programs = [...]", or `program = [...]` for a
/// one-generation case).
pub fn parse_rw_case(text: &str) -> (Vec<Layer>, Vec<Vec<Op>>) {
    let start = text.find("stack = ").expect("shrunk input: no `stack = `");
    let mut r = Reader {
        s: text,
        at: start + "stack = ".len(),
    };
    let stack = r.value().list().iter().map(layer).collect();
    r.expect(",");
    let programs = if r.eat("programs = ") {
        r.value()
            .list()
            .iter()
            .map(|p| p.list().iter().map(op).collect())
            .collect()
    } else {
        r.expect("program = ");
        vec![r.value().list().iter().map(op).collect()]
    };
    (stack, programs)
}
