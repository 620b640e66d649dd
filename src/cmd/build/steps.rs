//! The two steps that make layers: RUN (`layerfs run` over the step's upper) and COPY/ADD
//! (into a writable mount of the stage, see [`super::copy`]).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use layerfs_image::containerfile::{Cmd, Inst, Instruction};

use super::super::imagecmd::{lowerdir_option, Mounted};
use super::{copy, Builder, Stage, Upper};

impl Builder<'_> {
    /// RUN: `layerfs run` over the upper, the command's output streamed.
    pub(super) fn run(&self, st: &Stage, c: &Cmd, up: &Upper, lowers: &[PathBuf]) -> Result<()> {
        let exe = std::env::current_exe().context("finding the layerfs binary")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("run").arg("--keep-tmp").arg("-o").arg(format!(
            "{},upperdir={},workdir={}",
            lowerdir_option(lowers),
            up.upper().display(),
            up.work().display()
        ));
        // ARGs reach the command's environment, ENV wins over them (as Docker).
        for (k, v) in &st.args {
            if Self::var(st, k).as_deref() == Some(v.as_str()) {
                cmd.arg("-e").arg(format!("{k}={v}"));
            }
        }
        for kv in &st.config.env {
            cmd.arg("-e").arg(kv);
        }
        if !st.config.user.is_empty() {
            cmd.arg("--user").arg(&st.config.user);
        }
        if !st.config.working_dir.is_empty() {
            cmd.arg("--cwd").arg(&st.config.working_dir);
        }
        cmd.arg("--").args(self.argv(st, c));
        cmd.stdin(std::process::Stdio::null());
        let status = cmd.status().context("starting layerfs run")?;
        match status.code() {
            Some(0) => Ok(()),
            Some(code) => bail!("the command exited with status {code}"),
            None => bail!("the command's runtime was killed ({status})"),
        }
    }

    /// COPY/ADD into the mounted stage at `root`.
    pub(super) fn copy(
        &self,
        st: &Stage,
        inst: &Instruction,
        root: std::os::fd::BorrowedFd<'_>,
    ) -> Result<()> {
        let Inst::Copy {
            add,
            srcs,
            dest,
            from,
            chown,
            chmod,
        } = &inst.inst
        else {
            unreachable!("a COPY or ADD")
        };
        let dest = Self::subst(st, dest)?;
        let abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!(
                "{}/{dest}",
                if st.config.working_dir.is_empty() {
                    "/"
                } else {
                    &st.config.working_dir
                }
            )
        };
        let attrs = copy::Attrs {
            owner: chown
                .as_deref()
                .map(|s| copy::owner(root, &Self::subst(st, s)?))
                .transpose()?,
            mode: chmod
                .as_deref()
                .map(|m| {
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .with_context(|| format!("--chmod={m}: not an octal mode"))
                })
                .transpose()?,
            keep_owner: from.is_some(),
        };
        // The sources as host paths: in the context, or in an earlier stage's tree.
        // The sources: (root, path below it) on the host. In the context, or in an earlier
        // stage's tree, resolved inside its root (its symlinks never reach the host's
        // files): the root is then `/proc/self/fd/N` of the entry's parent, held open.
        let (_mp, _mounted);
        let mut found: Vec<(PathBuf, String)> = Vec::new();
        let mut _held = Vec::new();
        match from {
            None => {
                for s in srcs {
                    for rel in self.ctx.sources(&Self::subst(st, s)?)? {
                        found.push((self.ctx.root.clone(), rel));
                    }
                }
            }
            Some(f) => {
                let j = self.stage_ref(f).context("no such stage")?;
                _mp = tempfile::Builder::new()
                    .prefix("from-")
                    .tempdir_in(self.tmp.path())?;
                let lowers = self.lowers(&self.stages[j])?;
                _mounted = Mounted::new(&lowerdir_option(&lowers), _mp.path())?;
                let stage_root = layerfs_base::sys::open_host_dir(_mp.path())?;
                for s in srcs {
                    let (fd, parent, name) =
                        copy::in_root(stage_root.as_fd(), &Self::subst(st, s)?)
                            .with_context(|| format!("stage {f}"))?;
                    _held.push(fd);
                    found.push((parent, name));
                }
            }
        }
        // The ignore rules hold for the context only.
        let ctx_rules = |rel: &str| self.ctx.ignored(rel);
        let no_rules = |_: &str| false;
        let skip: copy::Skip<'_> = if from.is_none() {
            &ctx_rules
        } else {
            &no_rules
        };
        // Docker's rule: a destination ending in `/` (or `.`) is a directory, as is one
        // that exists as one, or the target of several sources.
        let into_dir = dest.ends_with('/')
            || dest == "."
            || dest.ends_with("/.")
            || found.len() > 1
            || copy::is_dir(root, &abs);
        for (src_root, rel) in &found {
            let src = src_root.join(rel);
            let md = std::fs::symlink_metadata(&src)
                .with_context(|| format!("reading {}", src.display()))?;
            if *add && from.is_none() && md.is_file() && copy::is_archive(&src) {
                let dir = copy::mkdir_p(root, &abs, attrs.owner)?;
                copy::extract(&src, dir.as_fd())?;
                continue;
            }
            if md.is_dir() {
                // A directory's content goes into the destination.
                let dir = copy::mkdir_p(root, &abs, attrs.owner)?;
                for e in sorted_names(&src)? {
                    let child = if rel.is_empty() {
                        e.clone()
                    } else {
                        format!("{rel}/{e}")
                    };
                    if !skip(&child) {
                        copy::copy_entry(src_root, &child, dir.as_fd(), &e, attrs, skip)?;
                    }
                }
                continue;
            }
            let (parent, name) = if into_dir {
                let base = Path::new(rel)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (abs.clone(), base)
            } else {
                let a = copy::normalize(&abs);
                let (p, n) = a.rsplit_once('/').unwrap_or(("", &a));
                (format!("/{p}"), n.to_string())
            };
            let dir = copy::mkdir_p(root, &parent, attrs.owner)?;
            copy::copy_entry(src_root, rel, dir.as_fd(), &name, attrs, skip)?;
        }
        Ok(())
    }
}

fn sorted_names(dir: &Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}
