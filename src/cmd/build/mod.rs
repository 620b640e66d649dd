//! `layerfs build [-f Containerfile] [-t NAME] CONTEXT`: a Containerfile becomes layers in
//! the store, one per instruction that changes files, daemonless and (as a user) rootless.
//!
//! - RUN runs the command with `layerfs run` (this binary, as a child) over a fresh upper
//!   on the stage's layers: the runtime and its namespaces, exactly as a user gets them.
//! - COPY/ADD write through a writable layerfs mount of the same stack ([`copy`]).
//! - Either upper becomes a layer with `commit`'s conversion ([`super::commit::upper_layer`])
//!   and is unpacked into the store's `tmp/` ([`Store::stage`]); the next step stacks it.
//! - The other instructions change the config; every instruction is a history entry whose
//!   `created_by` is its line, so `inspect` shows which line made each layer.
//! - Nothing is published before the last step succeeded: the image and every layer it
//!   made appear together ([`Store::publish`]) or, on failure, not at all (staged layers
//!   are removed when dropped). Stages other than the last are kept as unnamed images, so
//!   their layers stay referenced and cached (podman's intermediate images).
//! - The layer cache ([`cache`]) reuses a step's layer when its key is unchanged.

mod cache;
mod context;
mod copy;
mod steps;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use layerfs_image::containerfile::{self, Cmd, Inst, Instruction};
use layerfs_image::store::{
    normalize_name, record_id, HistoryEntry, ImageRecord, LayerRecord, RunConfig, Staged, Store,
};
use layerfs_image::unpack;

use super::commit::upper_layer;
use super::imagecmd::{as_store_owner, lowerdir_option, private_mounts, Mounted, StoreArgs};
use context::Context;
use layerfs_image::deliver::{aligned_history, rfc3339};

/// Build an image from a Containerfile (Dockerfile): one layer per RUN, COPY and ADD.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The Containerfile (default: CONTEXT/Containerfile, else CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Name the image NAME[:TAG] (repeatable).
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Set a build argument (ARG) K to V; repeatable.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Make the layers of each stage one layer (the base image's layers stay as they are).
    #[arg(long)]
    pub squash: bool,
    /// Run every step, reusing no cached layer.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The build context: COPY and ADD read from it.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// What a stage starts from.
enum Base {
    Scratch,
    Stage(usize),
    Image(Box<ImageRecord>),
}

/// A stage as the build goes.
#[derive(Clone, Default)]
struct Stage {
    alias: Option<String>,
    layers: Vec<LayerRecord>,
    config: RunConfig,
    history: Vec<HistoryEntry>,
    shell: Vec<String>,
    /// ARGs in scope, with their values.
    args: Vec<(String, String)>,
    /// The cache key of the stage so far.
    key: String,
    /// Layers this build added (as opposed to the base's).
    made: usize,
    /// A WORKDIR not yet created in the tree.
    workdir_pending: bool,
    /// A CMD was given in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// When the newest layer was made: the time of the steps after it that make none, so
    /// a build whose every layer came from the cache gives the same image id again.
    stamp: String,
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

pub fn run(args: BuildArgs) -> Result<i32> {
    let file = match &args.file {
        Some(f) => f.clone(),
        None => ["Containerfile", "Dockerfile"]
            .iter()
            .map(|n| args.context.join(n))
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "{}: no Containerfile or Dockerfile (give one with -f)",
                    args.context.display()
                )
            })?,
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let insts = containerfile::parse(&text).with_context(|| file.display().to_string())?;
    let mut build_args = BTreeMap::new();
    for kv in &args.build_args {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => build_args.insert(kv.clone(), std::env::var(kv).unwrap_or_default()),
        };
    }
    // ARGs before the first FROM: usable in FROM lines (and redeclared in a stage).
    let mut globals = Vec::new();
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for i in insts {
        match (&i.inst, stages.last_mut()) {
            (Inst::From { .. }, _) => stages.push(vec![i]),
            (Inst::Arg(list), None) => {
                for (k, d) in list {
                    let v = build_args.get(k).cloned().or_else(|| d.clone());
                    globals.push((k.clone(), v.unwrap_or_default()));
                }
            }
            (_, None) => bail!(
                "{}:{}: {} before the first FROM",
                file.display(),
                i.line,
                i.text
            ),
            (_, Some(s)) => s.push(i),
        }
    }
    if stages.is_empty() {
        bail!("{}: no FROM instruction", file.display());
    }
    // Bases are resolved (imported if a SOURCE) before entering the store's namespace.
    let root = args.store.root();
    let mut bases = Vec::new();
    let mut aliases: Vec<Option<String>> = Vec::new();
    for st in &stages {
        let Inst::From { image, alias } = &st[0].inst else {
            unreachable!("stages start with FROM")
        };
        let image = containerfile::substitute(image, &|n| lookup(&globals, n))?;
        let base = if image == "scratch" {
            Base::Scratch
        } else if let Some(j) = aliases
            .iter()
            .position(|a| a.as_deref() == Some(image.to_ascii_lowercase().as_str()))
        {
            Base::Stage(j)
        } else {
            let (_, record) = super::image_source::store_image(&image, &root)
                .with_context(|| format!("line {}: {}", st[0].line, st[0].text))?;
            Base::Image(Box::new(record))
        };
        bases.push(base);
        aliases.push(alias.clone());
    }
    let ctx = Context::open(&args.context)?;
    as_store_owner(|| {
        private_mounts()?;
        let store = Store::open(&root)?;
        sweep(&store);
        let mut b = Builder {
            cache: cache::Cache::open(&store)?,
            tmp: tempfile::Builder::new()
                .prefix(&format!("build-{}-", std::process::id()))
                .tempdir_in(store.root().join("tmp"))
                .context("creating a build directory in the store")?,
            store: &store,
            ctx: &ctx,
            args: &args,
            build_args: &build_args,
            globals: &globals,
            staged: Vec::new(),
            to_cache: Vec::new(),
            stages: Vec::new(),
            n_stages: stages.len(),
        };
        for (i, (st, base)) in stages.iter().zip(bases).enumerate() {
            b.stage(i, st, base)?;
        }
        b.finish()
    })
}

/// Removes what builds that died (killed, or their machine) left in the store's `tmp/`:
/// a build keeps everything it has not published (uppers, staged layers, mountpoints) in
/// `tmp/build-<pid>-*`, so a directory whose process is gone is garbage. Mounts left in it
/// (a COPY's, as root) are detached first.
fn sweep(store: &Store) {
    let tmp = store.root().join("tmp");
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("build-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        let mut mounts: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            if let Err(e) = super::umount::unmount(&m, true) {
                log::warn!("{e:#}");
            }
        }
        log::info!("removing {}, left by build {pid}", dir.display());
        if let Err(e) = layerfs_image::store::remove_tree(&dir) {
            log::warn!("removing {}: {e:#}", dir.display());
        }
    }
}

/// A name's value among `K=V` pairs (the last wins).
fn lookup(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

struct Builder<'a> {
    store: &'a Store,
    ctx: &'a Context,
    args: &'a BuildArgs,
    build_args: &'a BTreeMap<String, String>,
    globals: &'a [(String, String)],
    cache: cache::Cache,
    /// Layers made by this build, unpacked in `tmp` until published (dropped before it).
    staged: Vec<Staged>,
    /// Cache entries to record once the layers are published.
    to_cache: Vec<(String, cache::Entry)>,
    stages: Vec<Stage>,
    n_stages: usize,
    /// Where uppers, workdirs, mountpoints and staged layers of this build live:
    /// `STORE/tmp/build-<pid>-*`, the store's filesystem, swept if the build dies.
    tmp: tempfile::TempDir,
}

/// An upper (with its workdir) that steps write into.
struct Upper {
    dir: tempfile::TempDir,
}

impl Upper {
    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }
    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }
}

impl Builder<'_> {
    fn say(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn stage(&mut self, index: usize, insts: &[Instruction], base: Base) -> Result<()> {
        let mut st = match base {
            Base::Scratch => Stage {
                key: cache::key("", &[b"scratch"]),
                stamp: EPOCH.into(),
                ..Stage::default()
            },
            Base::Stage(j) => Stage {
                made: 0,
                cmd_set: false,
                ..self.stages[j].clone()
            },
            Base::Image(r) => {
                let history = aligned_history(r.layers.len(), r.history);
                Stage {
                    key: cache::key("", &[r.id.as_bytes()]),
                    stamp: r.created.clone().unwrap_or_else(|| EPOCH.into()),
                    layers: r.layers,
                    config: r.config,
                    history,
                    ..Stage::default()
                }
            }
        };
        if let Inst::From { alias, .. } = &insts[0].inst {
            st.alias = alias.clone();
        }
        st.args.clear();
        if st.shell.is_empty() {
            st.shell = vec!["/bin/sh".into(), "-c".into()];
        }
        // --squash: every step of the stage writes into one upper, committed at its end.
        let mut squashed: Option<Upper> = None;
        for (n, inst) in insts.iter().enumerate() {
            let prefix = if self.n_stages > 1 {
                format!("[{}/{}] ", index + 1, self.n_stages)
            } else {
                String::new()
            };
            self.say(&format!(
                "{prefix}STEP {}/{}: {}",
                n + 1,
                insts.len(),
                inst.text
            ));
            self.instruction(&mut st, inst, &mut squashed)
                .with_context(|| {
                    format!(
                        "step {}/{} (line {}) {}",
                        n + 1,
                        insts.len(),
                        inst.line,
                        inst.text
                    )
                })?;
        }
        if let Some(up) = squashed {
            let by = format!("layerfs build --squash ({} steps)", insts.len());
            self.commit(&mut st, &up, by, None)?;
        }
        self.stages.push(st);
        Ok(())
    }

    /// The value of a name for substitution: the stage's ARGs, then its ENV.
    fn var(st: &Stage, name: &str) -> Option<String> {
        let env = st
            .config
            .env
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string));
        env.or_else(|| lookup(&st.args, name))
    }

    fn subst(st: &Stage, s: &str) -> Result<String> {
        containerfile::substitute(s, &|n| Self::var(st, n))
    }

    fn instruction(
        &mut self,
        st: &mut Stage,
        inst: &Instruction,
        squashed: &mut Option<Upper>,
    ) -> Result<()> {
        let note = |st: &mut Stage| {
            st.history.push(HistoryEntry {
                created: Some(st.stamp.clone()),
                created_by: Some(inst.text.clone()),
                comment: None,
                empty_layer: true,
            });
        };
        match &inst.inst {
            Inst::From { .. } => return Ok(()),
            Inst::Arg(list) => {
                for (k, d) in list {
                    let v = self
                        .build_args
                        .get(k)
                        .cloned()
                        .or_else(|| d.as_ref().map(|d| Self::subst(st, d)).transpose().ok()?)
                        .or_else(|| lookup(self.globals, k))
                        .unwrap_or_default();
                    st.args.push((k.clone(), v));
                }
            }
            Inst::Env(pairs) => {
                for (k, v) in pairs {
                    let v = Self::subst(st, v)?;
                    st.config.env.retain(|kv| kv.split('=').next() != Some(k));
                    st.config.env.push(format!("{k}={v}"));
                }
            }
            Inst::Workdir(d) => {
                let d = Self::subst(st, d)?;
                let base = if st.config.working_dir.is_empty() {
                    "/".to_string()
                } else {
                    st.config.working_dir.clone()
                };
                st.config.working_dir = copy::normalize(&if d.starts_with('/') {
                    d
                } else {
                    format!("{base}/{d}")
                });
                st.workdir_pending = true;
            }
            Inst::User(u) => st.config.user = Self::subst(st, u)?,
            Inst::Label(pairs) => {
                for (k, v) in pairs {
                    st.config
                        .labels
                        .insert(Self::subst(st, k)?, Self::subst(st, v)?);
                }
            }
            Inst::Expose(ports) => {
                for p in ports {
                    let p = Self::subst(st, p)?;
                    let p = if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    };
                    if !st.config.exposed_ports.contains(&p) {
                        st.config.exposed_ports.push(p);
                    }
                }
            }
            Inst::Cmd(c) => {
                st.config.cmd = self.argv(st, c);
                st.cmd_set = true;
            }
            Inst::Entrypoint(c) => {
                st.config.entrypoint = self.argv(st, c);
                // Docker: a new ENTRYPOINT drops a CMD inherited from the base image (one
                // set in this stage stays).
                if !st.cmd_set {
                    st.config.cmd.clear();
                }
            }
            Inst::Shell(s) => st.shell = s.clone(),
            Inst::Unkept(kw) => {
                log::warn!(
                    "line {}: {kw} is not kept (the store's image config has no {kw})",
                    inst.line
                )
            }
            Inst::Run(_) | Inst::Copy { .. } => return self.layer_step(st, inst, squashed),
        }
        note(st);
        Ok(())
    }

    fn argv(&self, st: &Stage, c: &Cmd) -> Vec<String> {
        match c {
            Cmd::Exec(v) => v.clone(),
            Cmd::Shell(s) => {
                let mut v = st.shell.clone();
                v.push(s.clone());
                v
            }
        }
    }

    /// The directory of a layer: staged by this build, else in the store.
    fn layer_dir(&self, diff_id: &str) -> Result<PathBuf> {
        match self
            .staged
            .iter()
            .find(|s| s.diff_id == diff_id)
            .and_then(|s| s.path())
        {
            Some(p) => Ok(p.to_path_buf()),
            None => self.store.layer_dir(diff_id),
        }
    }

    /// The stage's layer directories, top first; an empty directory for an empty image
    /// (a mount needs a lower).
    fn lowers(&self, st: &Stage) -> Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = st
            .layers
            .iter()
            .rev()
            .map(|l| self.layer_dir(&l.diff_id))
            .collect::<Result<_>>()?;
        if out.is_empty() {
            let empty = self.tmp.path().join("empty");
            std::fs::create_dir_all(&empty)?;
            out.push(empty);
        }
        Ok(out)
    }

    fn new_upper(&self) -> Result<Upper> {
        let dir = tempfile::Builder::new()
            .prefix("step-")
            .tempdir_in(self.tmp.path())
            .context("creating an upper for the step")?;
        for sub in ["upper", "work"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        Ok(Upper { dir })
    }

    /// The state a RUN depends on besides its text: env, args, user, workdir, shell.
    fn state(st: &Stage) -> Vec<u8> {
        serde_json::to_vec(&(
            &st.config.env,
            &st.args,
            &st.config.user,
            &st.config.working_dir,
            &st.shell,
        ))
        .expect("serializable")
    }

    fn layer_step(
        &mut self,
        st: &mut Stage,
        inst: &Instruction,
        squashed: &mut Option<Upper>,
    ) -> Result<()> {
        // The cache key: what the step reads besides the tree below it.
        let reads = match &inst.inst {
            Inst::Copy {
                srcs, from: None, ..
            } => {
                let mut all = Vec::new();
                for s in srcs {
                    all.extend(self.ctx.sources(&Self::subst(st, s)?)?);
                }
                self.ctx.digest(&all)?
            }
            Inst::Copy { from: Some(f), .. } => match self.stage_ref(f) {
                Some(j) => self.stages[j].key.clone(),
                None => bail!("COPY --from={f}: no earlier stage of that name or number"),
            },
            _ => String::new(),
        };
        let key = cache::key(
            &st.key,
            &[inst.text.as_bytes(), &Self::state(st), reads.as_bytes()],
        );
        let use_cache = !self.args.no_cache && !self.args.squash;
        if use_cache {
            if let Some(e) = self.cache.get(self.store, &key) {
                self.say(&format!("--> Using cache {}", short(&e.layer.diff_id)));
                st.layers.push(e.layer.clone());
                st.history.push(e.history.clone());
                st.stamp = e.history.created.clone().unwrap_or_else(|| EPOCH.into());
                st.key = key;
                st.made += 1;
                st.workdir_pending = false;
                return Ok(());
            }
        }
        let fresh;
        let up = match squashed {
            Some(u) => u,
            None if self.args.squash => squashed.insert(self.new_upper()?),
            None => {
                fresh = self.new_upper()?;
                &fresh
            }
        };
        let lowers = self.lowers(st)?;
        if st.workdir_pending || matches!(inst.inst, Inst::Copy { .. }) {
            let mp = tempfile::Builder::new()
                .prefix("mnt-")
                .tempdir_in(self.tmp.path())?;
            let opts = format!(
                "{},upperdir={},workdir={}",
                lowerdir_option(&lowers),
                up.upper().display(),
                up.work().display()
            );
            let m = Mounted::new(&opts, mp.path())?;
            let root = layerfs_base::sys::open_host_dir(mp.path())?;
            if let Inst::Copy { .. } = &inst.inst {
                self.copy(st, inst, root.as_fd())?;
            }
            if !st.config.working_dir.is_empty() {
                copy::mkdir_p(root.as_fd(), &st.config.working_dir, None)?;
            }
            drop(root);
            drop(m);
            st.workdir_pending = false;
        }
        if let Inst::Run(c) = &inst.inst {
            self.run(st, c, up, &lowers)?;
        }
        st.key = key.clone();
        if self.args.squash {
            st.history.push(HistoryEntry {
                created: Some(st.stamp.clone()),
                created_by: Some(inst.text.clone()),
                comment: None,
                empty_layer: true,
            });
            return Ok(());
        }
        self.commit(st, up, inst.text.clone(), Some(key))
    }

    /// The upper as a layer: converted, unpacked into the store's `tmp/`, stacked.
    fn commit(
        &mut self,
        st: &mut Stage,
        up: &Upper,
        created_by: String,
        key: Option<String>,
    ) -> Result<()> {
        let lowers = self.lowers(st)?;
        let mut tar = upper_layer(self.store, &up.upper(), &lowers, None)?;
        let diff_id = tar.diff_id.clone();
        let staged = self.store.stage_in(
            self.tmp.path(),
            tar.reader()?,
            Some(&diff_id),
            &unpack::Options::for_this_process(),
        )?;
        let layer = LayerRecord {
            diff_id: tar.diff_id.clone(),
            size: tar.size,
            blob: None,
            skipped_devices: staged.stats.skipped_devices.clone(),
        };
        let history = HistoryEntry {
            created: Some(rfc3339(None)),
            created_by: Some(created_by),
            comment: None,
            empty_layer: false,
        };
        self.say(&format!("--> {}", short(&layer.diff_id)));
        if let Some(k) = key {
            self.to_cache.push((
                k,
                cache::Entry {
                    layer: layer.clone(),
                    history: history.clone(),
                },
            ));
        }
        self.staged.push(staged);
        st.stamp = history.created.clone().unwrap_or_else(|| EPOCH.into());
        st.layers.push(layer);
        st.history.push(history);
        st.made += 1;
        Ok(())
    }

    fn stage_ref(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| s.alias.as_deref() == Some(lower.as_str()))
            .or_else(|| name.parse().ok().filter(|&j: &usize| j < self.stages.len()))
    }

    /// Publishes the last stage as the image (with every layer made) and the others as
    /// unnamed images, then records the cache.
    fn finish(mut self) -> Result<i32> {
        let last = self.stages.last().expect("at least one stage");
        let names: Vec<String> = self.args.tags.iter().map(|t| normalize_name(t)).collect();
        let record = |st: &Stage, names: Vec<String>| ImageRecord {
            id: record_id(&st.layers, &st.config, &st.history),
            names,
            layers: st.layers.clone(),
            config: st.config.clone(),
            history: st.history.clone(),
            created: Some(st.stamp.clone()),
            source: "build".into(),
        };
        let image = record(last, names.clone());
        if image.layers.is_empty() {
            bail!("the image has no layers (FROM scratch and no RUN, COPY or ADD)");
        }
        self.say(&format!(
            "COMMIT {}",
            names.first().map_or("<none>", String::as_str)
        ));
        self.store
            .publish(std::mem::take(&mut self.staged), &image)?;
        for st in &self.stages[..self.stages.len() - 1] {
            if st.made > 0 {
                self.store.publish(Vec::new(), &record(st, Vec::new()))?;
            }
        }
        for (k, e) in &self.to_cache {
            self.cache.put(k, e)?;
        }
        let id = image.id.trim_start_matches("sha256:");
        self.say(&format!("--> {}", &id[..12]));
        for n in &names {
            self.say(&format!("Successfully tagged {n}"));
        }
        self.say(id);
        Ok(0)
    }
}

fn short(digest: &str) -> &str {
    let h = digest.trim_start_matches("sha256:");
    &h[..12.min(h.len())]
}
