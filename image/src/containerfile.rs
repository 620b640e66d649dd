//! Containerfile (Dockerfile) parsing: the text becomes a list of instructions, each with
//! its line number and its text as written (for error messages and the history's
//! `created_by`). Variables are not substituted here: that depends on the build's state
//! (ARG, ENV), so the builder calls [`substitute`] when it executes a step.
//!
//! What is read, as Docker's parser reads it: a `# escape=` parser directive (`\` or a
//! backtick) before anything else, `#` comment lines (also inside continuations), lines
//! continued by the escape character at their end, keywords in any case, the JSON (exec)
//! form of RUN/CMD/ENTRYPOINT/SHELL/COPY/ADD, `--flag=value` options of FROM/COPY/ADD/RUN,
//! `ENV K=V ...` and the legacy `ENV K V`, heredocs in RUN (refused in COPY/ADD).

use anyhow::{bail, Result};

/// A command in shell form (run by SHELL) or exec form (argv as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Shell(String),
    Exec(Vec<String>),
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inst {
    From {
        image: String,
        alias: Option<String>,
    },
    Run(Cmd),
    /// COPY and ADD (`add` true): sources, destination, `--from`, `--chown`, `--chmod`.
    Copy {
        add: bool,
        srcs: Vec<String>,
        dest: String,
        from: Option<String>,
        chown: Option<String>,
        chmod: Option<String>,
    },
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Workdir(String),
    User(String),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Cmd(Cmd),
    Entrypoint(Cmd),
    Shell(Vec<String>),
    /// VOLUME, HEALTHCHECK, STOPSIGNAL, ONBUILD: accepted (real Containerfiles have them)
    /// and recorded in the history, but the store's image config has no place for them.
    Unkept(String),
}

/// An instruction where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// The instruction as written, continuations joined (one line).
    pub text: String,
    pub inst: Inst,
}

/// Parses a whole Containerfile.
pub fn parse(text: &str) -> Result<Vec<Instruction>> {
    let mut escape = '\\';
    let mut lines = text.lines().enumerate().peekable();
    // Parser directives: `# key=value` lines at the very top.
    while let Some((_, l)) = lines.peek() {
        let Some(d) = l.trim().strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = d.split_once('=') else {
            break;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "escape" => {
                escape = match v.trim() {
                    "\\" => '\\',
                    "`" => '`',
                    other => bail!("line 1: escape must be \\ or `, not {other:?}"),
                }
            }
            "syntax" | "check" => {}
            _ => break,
        }
        lines.next();
    }
    let mut out = Vec::new();
    while let Some((n, l)) = lines.next() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut joined = String::new();
        let mut cur = l.trim_end().to_string();
        loop {
            match cur.strip_suffix(escape) {
                Some(head) => {
                    joined.push_str(head);
                    // The next non-comment, non-empty line continues it.
                    let mut next = None;
                    for (_, l) in lines.by_ref() {
                        let t = l.trim();
                        if t.is_empty() || t.starts_with('#') {
                            continue;
                        }
                        next = Some(l.trim_end().to_string());
                        break;
                    }
                    match next {
                        Some(c) => cur = c,
                        None => break,
                    }
                }
                None => {
                    joined.push_str(&cur);
                    break;
                }
            }
        }
        let mut text = joined.trim().to_string();
        let inst = match heredocs(&text) {
            Some(words) if is_run(&text) => {
                // RUN with heredocs: the lines up to each terminator belong to it.
                let mut bodies = Vec::new();
                for (word, strip_tabs) in &words {
                    let mut body = String::new();
                    let mut closed = false;
                    for (_, l) in lines.by_ref() {
                        let l = if *strip_tabs {
                            l.trim_start_matches('\t')
                        } else {
                            l
                        };
                        if l == word {
                            closed = true;
                            break;
                        }
                        body.push_str(l);
                        body.push('\n');
                    }
                    if !closed {
                        bail!("line {}: heredoc {word} is never closed", n + 1);
                    }
                    bodies.push((word.clone(), body));
                }
                let cmd = text[3..].trim();
                let script = match (cmd.split_whitespace().count(), bodies.as_slice()) {
                    // `RUN <<EOF`: the document is the script.
                    (1, [(_, body)]) => body.clone(),
                    // `RUN cmd <<EOF`: the shell reads the documents as it would.
                    _ => {
                        let mut s = cmd.to_string();
                        for (word, body) in &bodies {
                            s.push('\n');
                            s.push_str(body);
                            s.push_str(word);
                        }
                        s
                    }
                };
                text = format!("RUN {script}").trim_end().to_string();
                Inst::Run(Cmd::Shell(script))
            }
            _ => instruction(&text, escape).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?,
        };
        out.push(Instruction {
            line: n + 1,
            text,
            inst,
        });
    }
    Ok(out)
}

fn is_run(text: &str) -> bool {
    text.get(..4)
        .is_some_and(|k| k[..3].eq_ignore_ascii_case("RUN") && k.ends_with(char::is_whitespace))
}

/// The heredoc words of a line (`<<EOF`, `<<-EOF`: tabs stripped, `<<'EOF'`, `<<"EOF"`), in
/// order; None without any.
fn heredocs(text: &str) -> Option<Vec<(String, bool)>> {
    let words: Vec<(String, bool)> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("<<"))
        .filter(|w| !w.is_empty() && !w.starts_with('<'))
        .map(|w| {
            let (w, strip) = match w.strip_prefix('-') {
                Some(rest) => (rest, true),
                None => (w, false),
            };
            (w.trim_matches(|c| c == '\'' || c == '"').to_string(), strip)
        })
        .filter(|(w, _)| !w.is_empty())
        .collect();
    (!words.is_empty()).then_some(words)
}

fn instruction(text: &str, escape: char) -> Result<Inst> {
    let (kw, rest) = match text.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim()),
        None => (text, ""),
    };
    let kw = kw.to_ascii_uppercase();
    if matches!(kw.as_str(), "COPY" | "ADD") && heredocs(rest).is_some() {
        bail!("{kw}: heredocs are supported in RUN only");
    }
    let need = |what: &str| -> Result<()> {
        if rest.is_empty() {
            bail!("{kw} needs {what}");
        }
        Ok(())
    };
    Ok(match kw.as_str() {
        "FROM" => {
            let (_, rest) = flags(rest, &["platform"])?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                [image] => Inst::From {
                    image: image.to_string(),
                    alias: None,
                },
                [image, as_, alias] if as_.eq_ignore_ascii_case("as") => Inst::From {
                    image: image.to_string(),
                    alias: Some(alias.to_ascii_lowercase()),
                },
                _ => bail!("FROM IMAGE [AS NAME], not {rest:?}"),
            }
        }
        "RUN" => {
            let (f, rest) = flags(rest, &["mount", "network", "security"])?;
            if let Some((name, _)) = f.first() {
                bail!("RUN --{name} is not supported");
            }
            need("a command")?;
            Inst::Run(command(rest)?)
        }
        "CMD" => Inst::Cmd(command(rest)?),
        "ENTRYPOINT" => Inst::Entrypoint(command(rest)?),
        "SHELL" => match json_array(rest) {
            Some(v) if !v.is_empty() => Inst::Shell(v),
            _ => bail!("SHELL needs the JSON form, [\"executable\", \"parameters\"]"),
        },
        "COPY" | "ADD" => {
            let (f, rest) = flags(rest, &["from", "chown", "chmod", "link", "parents"])?;
            let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let mut words = match json_array(rest) {
                Some(v) => v,
                None => words(rest, escape)?,
            };
            if words.len() < 2 {
                bail!("{kw} needs a source and a destination");
            }
            let dest = words.pop().expect("two words");
            Inst::Copy {
                add: kw == "ADD",
                srcs: words,
                dest,
                from: get("from"),
                chown: get("chown"),
                chmod: get("chmod"),
            }
        }
        "ENV" => {
            need("NAME=VALUE")?;
            Inst::Env(pairs(rest, escape, true)?)
        }
        "LABEL" => {
            need("KEY=VALUE")?;
            Inst::Label(pairs(rest, escape, false)?)
        }
        "ARG" => {
            need("a name")?;
            let mut out = Vec::new();
            for w in words(rest, escape)? {
                match w.split_once('=') {
                    Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
                    None => out.push((w, None)),
                }
            }
            Inst::Arg(out)
        }
        "WORKDIR" => {
            need("a directory")?;
            Inst::Workdir(rest.to_string())
        }
        "USER" => {
            need("a user")?;
            Inst::User(rest.to_string())
        }
        "EXPOSE" => {
            need("a port")?;
            Inst::Expose(rest.split_whitespace().map(str::to_string).collect())
        }
        "MAINTAINER" => Inst::Label(vec![("maintainer".into(), rest.to_string())]),
        "VOLUME" | "HEALTHCHECK" | "STOPSIGNAL" | "ONBUILD" => Inst::Unkept(kw),
        other => bail!("unknown instruction {other}"),
    })
}

/// Leading `--name=value` flags (only `known` ones) and the rest.
fn flags<'a>(mut rest: &'a str, known: &[&str]) -> Result<(Vec<(String, String)>, &'a str)> {
    let mut out = Vec::new();
    while let Some(f) = rest.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let (name, value) = f[..end].split_once('=').unwrap_or((&f[..end], ""));
        if !known.contains(&name) {
            bail!("unknown flag --{name}");
        }
        out.push((name.to_string(), value.to_string()));
        rest = f[end..].trim_start();
    }
    Ok((out, rest))
}

/// `["a", "b"]` as strings, or None when the text is not a JSON array of strings (then it
/// is the shell form, as Docker reads it).
fn json_array(s: &str) -> Option<Vec<String>> {
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str(s).ok()
}

fn command(rest: &str) -> Result<Cmd> {
    Ok(match json_array(rest) {
        Some(v) => Cmd::Exec(v),
        None => Cmd::Shell(rest.to_string()),
    })
}

/// Splits on unquoted whitespace; quotes removed, the escape character escapes the next.
pub fn words(s: &str, escape: char) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            (c, _) if c == escape && quote != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                in_word = true;
            }
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (c, _) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unterminated quote in {s:?}");
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `K=V K2="v 2"`, or (`legacy`, for ENV) `K the rest as value`.
fn pairs(rest: &str, escape: char, legacy: bool) -> Result<Vec<(String, String)>> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let value = rest[first.len()..].trim();
        return Ok(vec![(first.to_string(), value.to_string())]);
    }
    words(rest, escape)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("expected KEY=VALUE, not {w:?}"),
        })
        .collect()
}

/// Substitutes `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alt}` from `lookup`
/// (unset names become empty); `\$` is a literal `$`.
pub fn substitute(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'$') {
            out.push('$');
            chars.next();
            continue;
        }
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            chars.next();
            let mut inner = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '}' {
                    closed = true;
                    break;
                }
                inner.push(c);
            }
            if !closed {
                bail!("missing '}}' in {s:?}");
            }
            let (name, op) = match inner.find(':') {
                Some(i) => (&inner[..i], Some(&inner[i + 1..])),
                None => (inner.as_str(), None),
            };
            let val = lookup(name).filter(|v| !v.is_empty());
            match op {
                None => out.push_str(&val.unwrap_or_default()),
                Some(o) if o.starts_with('-') => {
                    let d = substitute(&o[1..], lookup)?;
                    out.push_str(&val.unwrap_or(d));
                }
                Some(o) if o.starts_with('+') => {
                    if val.is_some() {
                        out.push_str(&substitute(&o[1..], lookup)?);
                    }
                }
                Some(o) => bail!("unsupported substitution ${{{name}:{o}}}"),
            }
        } else {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if !name_char(c) {
                    break;
                }
                name.push(c);
                chars.next();
            }
            if name.is_empty() {
                out.push('$');
            } else {
                out.push_str(&lookup(&name).unwrap_or_default());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insts(s: &str) -> Vec<Inst> {
        parse(s).unwrap().into_iter().map(|i| i.inst).collect()
    }

    #[test]
    fn continuations_comments_and_lines() {
        let p = parse(
            "# a comment\nFROM base AS Build\n\nRUN echo a \\\n  # inside\n  && echo b\nrun [\"/bin/true\", \"x y\"]\n",
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0].inst,
            Inst::From {
                image: "base".into(),
                alias: Some("build".into())
            }
        );
        assert_eq!(p[1].line, 4);
        assert_eq!(p[1].text, "RUN echo a   && echo b");
        assert_eq!(
            p[1].inst,
            Inst::Run(Cmd::Shell("echo a   && echo b".into()))
        );
        assert_eq!(p[2].line, 7);
        assert_eq!(
            p[2].inst,
            Inst::Run(Cmd::Exec(vec!["/bin/true".into(), "x y".into()]))
        );
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let p = insts("# escape=`\nFROM x\nRUN dir c:\\ `\n  /w\n");
        assert_eq!(p[1], Inst::Run(Cmd::Shell("dir c:\\   /w".into())));
        assert!(parse("# escape=x\nFROM x\n").is_err());
    }

    #[test]
    fn copy_add_flags_and_forms() {
        let p = insts(
            "COPY --from=build --chown=1:2 a b /dst/\nADD [\"x y\", \"/z\"]\nCOPY --chmod=600 f /f\n",
        );
        assert_eq!(
            p[0],
            Inst::Copy {
                add: false,
                srcs: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
                from: Some("build".into()),
                chown: Some("1:2".into()),
                chmod: None
            }
        );
        let Inst::Copy {
            add, srcs, dest, ..
        } = &p[1]
        else {
            panic!("{:?}", p[1])
        };
        assert!(add);
        assert_eq!(
            (srcs.as_slice(), dest.as_str()),
            (&["x y".to_string()][..], "/z")
        );
        let Inst::Copy { chmod, .. } = &p[2] else {
            panic!()
        };
        assert_eq!(chmod.as_deref(), Some("600"));
        assert!(parse("COPY onlyone\n").is_err());
        assert!(parse("COPY --bogus=1 a b\n").is_err());
        let e = parse("RUN --mount=type=cache,target=/x true\n").unwrap_err();
        assert!(e.to_string().contains("--mount is not supported"), "{e}");
    }

    #[test]
    fn env_label_arg_and_the_rest() {
        let p = insts(
            "ENV A=1 B=\"two words\" C=x\\ y\nENV OLD legacy value\nLABEL k=v \"q k\"=w\nARG V=3 W\nWORKDIR /app\nUSER 1000:1000\nEXPOSE 80 443/udp\nCMD [\"sh\"]\nENTRYPOINT run me\nSHELL [\"/bin/ash\", \"-c\"]\n",
        );
        assert_eq!(
            p[0],
            Inst::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x y".into())
            ])
        );
        assert_eq!(p[1], Inst::Env(vec![("OLD".into(), "legacy value".into())]));
        assert_eq!(
            p[2],
            Inst::Label(vec![("k".into(), "v".into()), ("q k".into(), "w".into())])
        );
        assert_eq!(
            p[3],
            Inst::Arg(vec![("V".into(), Some("3".into())), ("W".into(), None)])
        );
        assert_eq!(p[4], Inst::Workdir("/app".into()));
        assert_eq!(p[5], Inst::User("1000:1000".into()));
        assert_eq!(p[6], Inst::Expose(vec!["80".into(), "443/udp".into()]));
        assert_eq!(p[7], Inst::Cmd(Cmd::Exec(vec!["sh".into()])));
        assert_eq!(p[8], Inst::Entrypoint(Cmd::Shell("run me".into())));
        assert_eq!(p[9], Inst::Shell(vec!["/bin/ash".into(), "-c".into()]));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("FROM x\n\nFROBNICATE y\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("FROBNICATE"), "{e}");
        let e = parse("FROM x\nCOPY <<EOF /f\nhi\nEOF\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("heredoc"), "{e}");
        let e = parse("FROM x\nRUN <<EOF\nhi\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("never closed"), "{e}");
        assert!(parse("FROM a b c d\n").is_err());
        assert_eq!(insts("volume /data\n"), [Inst::Unkept("VOLUME".into())]);
        assert!(parse("ENV\n").is_err());
    }

    #[test]
    fn run_heredocs() {
        let p = parse(
            "FROM x\nRUN <<EOF\n# not a comment here\necho a\nEOF\nRUN cat > /f <<-'END'\n\tb $X\n\tEND\nRUN echo c\n",
        )
        .unwrap();
        assert_eq!(
            p[1].inst,
            Inst::Run(Cmd::Shell("# not a comment here\necho a\n".into()))
        );
        assert_eq!(
            p[2].inst,
            Inst::Run(Cmd::Shell("cat > /f <<-'END'\nb $X\nEND".into()))
        );
        assert_eq!((p[3].line, p[3].text.as_str()), (9, "RUN echo c"));
        assert_eq!(
            insts("RUN echo a<<b\n"),
            [Inst::Run(Cmd::Shell("echo a<<b".into()))]
        );
    }

    #[test]
    fn substitution() {
        let look = |n: &str| match n {
            "A" => Some("1".to_string()),
            "E" => Some(String::new()),
            _ => None,
        };
        let s = |t: &str| substitute(t, &look).unwrap();
        assert_eq!(s("x$A/${A}y"), "x1/1y");
        assert_eq!(s("${B:-def}-${A:-def}-${E:-e}"), "def-1-e");
        assert_eq!(s("${A:+set}${B:+set}"), "set");
        assert_eq!(s("\\$A $ $B."), "$A $ .");
        assert!(substitute("${A", &look).is_err());
    }
}
