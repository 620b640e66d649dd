//! The `layerfs` command: mount a layer stack (fuse-overlayfs compatible) and its tools.

// No `unsafe` in the binary: raw syscalls go through `layerfs_base::sys`.
#![forbid(unsafe_code)]

mod cmd;
mod runtime;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// A userspace union filesystem with kernel overlayfs semantics, served over FUSE.
///
/// `layerfs -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W] MOUNTPOINT` mounts the stack:
/// read-only without an upper, writable (changes in U, in the kernel's format) with one. The
/// same syntax as overlayfs and fuse-overlayfs, so podman can use layerfs as its
/// mount_program, and mount(8) as the helper of type fuse.layerfs.
#[derive(Parser, Debug)]
#[command(
    name = "layerfs",
    version,
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true,
    override_usage = USAGE
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    mount: MountArgs,
}

const USAGE: &str =
    "layerfs [OPTIONS] -o lowerdir=TOP:...:BOTTOM[,...] [SOURCE] MOUNTPOINT\n       \
                     layerfs <COMMAND>";

/// The subcommands alone: parsing with it gives clap's own error (and suggestion) for a
/// first word that is neither a subcommand nor an option.
#[derive(Parser, Debug)]
#[command(name = "layerfs", version, override_usage = USAGE)]
struct CmdOnly {
    #[command(subcommand)]
    _cmd: Cmd,
}

/// Parses the command line. `layerfs WORD ...` without `-o`, WORD no path, is no mount (a
/// mount needs `lowerdir=`): WORD was meant as a subcommand, and clap says which one it
/// resembles instead of the mount complaining about missing options.
fn parse(mut argv: Vec<std::ffi::OsString>) -> Cli {
    store_after_subcommand(&mut argv);
    let cli = Cli::parse_from(argv.iter());
    // A path (a slash, or a name that exists) is a mount point missing its options.
    let first_is_word = argv.get(1).is_some_and(|a| {
        let s = a.to_string_lossy();
        !s.starts_with('-') && !s.contains('/') && !std::path::Path::new(a).exists()
    });
    if cli.cmd.is_none() && cli.mount.options.is_empty() && first_is_word {
        if let Err(e) = CmdOnly::try_parse_from(argv.iter()) {
            e.exit();
        }
    }
    cli
}

/// `layerfs --store DIR COMMAND ...` as `layerfs COMMAND --store DIR ...`: the top level's
/// options are the mount's (a subcommand after them would be read as a mount point).
fn store_after_subcommand(argv: &mut Vec<std::ffi::OsString>) {
    use clap::CommandFactory;
    let is_cmd = |a: Option<&std::ffi::OsString>| {
        a.is_some_and(|a| {
            Cli::command()
                .get_subcommands()
                .any(|c| a.to_str() == Some(c.get_name()))
        })
    };
    let n = match argv.get(1).and_then(|a| a.to_str()) {
        Some("--store") => 2,
        Some(a) if a.starts_with("--store=") => 1,
        _ => return,
    };
    if is_cmd(argv.get(1 + n)) {
        let store: Vec<_> = argv.drain(1..1 + n).collect();
        argv.splice(2..2, store);
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount a layer stack (the same as calling layerfs without a subcommand).
    Mount(MountArgs),
    /// Run a command with the merged stack as its root filesystem: new mount, pid, uts and
    /// ipc namespaces, rootless through a user namespace when not root; changes go to
    /// `upperdir` if given, else to a temporary upper removed at exit.
    Run(RunArgs),
    /// Unmount a layerfs mount (`fusermount3 -u` and `umount` work too).
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Show the processes of a supervised mount (`-o supervise`): the serving daemon, the
    /// supervisor, its options, how many restarts and the last one's pause.
    Status {
        /// The mount point.
        mountpoint: PathBuf,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Start the layerfs binary now on disk as the daemon of a supervised mount
    /// (`-o supervise`): the old one stops at a request boundary, the new one takes its
    /// requests over; applications see a pause, never an error.
    Restart {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Import an image (OCI layout or archive, docker archive, podman's store, a stack)
    /// into the layer store.
    Import(cmd::import::ImportArgs),
    /// Pull an image from a registry (docker://HOST[:PORT]/REPO[:TAG|@DIGEST]) into the
    /// layer store.
    Pull(cmd::pull::PullArgs),
    /// Push a store image to a registry (docker://HOST[:PORT]/REPO[:TAG]).
    Push(cmd::push::PushArgs),
    /// List the images of the layer store.
    Images(cmd::images::ImagesArgs),
    /// Lazily pulled layers: `lazy status [MOUNT|IMAGE] [--json]` says which layers are
    /// lazy and how far each is fetched.
    Lazy(cmd::lazy_status::LazyArgs),
    /// Remove images from the layer store, and the layers no other image uses.
    Rmi(cmd::rmi::RmiArgs),
    /// Squash an image or a stack into one layer: its merged view, nothing hidden.
    Squash(cmd::squash::SquashArgs),
    /// Turn an upper directory into one OCI layer (tar, layer dir, store image, OCI image).
    Commit(cmd::commit::CommitArgs),
    /// Show what each layer of an image or stack adds, changes, deletes and wastes.
    Inspect(cmd::inspect::InspectArgs),
    /// Show which layer provides a path, what it shadows, or what deleted it.
    Which(cmd::which::WhichArgs),
    /// Compare two images or stacks (or an upper with its lowers): A/C/D per path.
    Diff(cmd::diff::DiffArgs),
    /// Print a file as the merged view, or one layer, has it.
    Cat(cmd::cat::CatArgs),
    /// Browse an image interactively: its layers beside each layer's tree of changes
    /// (dive's view), the wasted space, and which layer has a path.
    Explore(cmd::explore::ExploreArgs),
    /// Print a shell completion script (bash, zsh, fish) to stdout.
    Completions {
        /// The shell: bash, zsh or fish.
        #[arg(value_enum)]
        shell: cmd::packaging::Shell,
    },
    /// Write the man pages (layerfs.1 and one per subcommand) into DIR (for packaging).
    #[command(hide = true)]
    ManPages {
        /// Where to write them (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Hash layers again and name each file that differs from the layer's hash list,
    /// digests or manifest: SOURCE, or (without one) every layer of the store.
    Verify(cmd::verify::VerifyArgs),
    /// Build an image from a Containerfile (Dockerfile) into the store.
    Build(cmd::build::BuildArgs),
    /// Show the store's size and what its images share (as `podman system df -v`).
    Df(cmd::df::DfArgs),
    /// Serve podman's additional layer store on DIR (storage.conf:
    /// additionallayerstores = ["DIR:ref"]): the layers of zstd:chunked and eStargz images,
    /// their files fetched from the registry when first read.
    ServeLayers(cmd::serve_layers::ServeLayersArgs),
}

/// The container's network.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetMode {
    /// The host's network namespace.
    #[default]
    Host,
    /// A new, empty network namespace (loopback only, down).
    None,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Mount options, as for `layerfs mount` (lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W]);
    /// with IMAGE, only upperdir= and workdir= (the image gives the lowers).
    #[arg(short = 'o', value_name = "OPTIONS", required_unless_present = "image")]
    options: Vec<String>,
    /// An image of the store (NAME[:TAG] or id), or any import SOURCE (imported on first
    /// use); its config (env, entrypoint, cmd, workdir, user) applies, flags overriding.
    #[arg(value_name = "IMAGE")]
    image: Option<String>,
    #[command(flatten)]
    store: cmd::imagecmd::StoreArgs,
    /// With a docker:// IMAGE the store lacks: pull it lazily (as `pull --lazy`): layers
    /// in zstd:chunked or eStargz form are mounted from their table of contents, each file
    /// fetched from the registry when first read; plain gzip or zstd layers are streamed in
    /// while mounted, the first lookup waiting for them.
    #[arg(long = "lazy")]
    pub lazy_pull: bool,
    /// The container's hostname.
    #[arg(long, default_value = "layerfs")]
    hostname: String,
    /// Set K=V in the environment (K alone copies the caller's value); repeatable.
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<String>,
    /// Working directory inside the container (default: the image's, else /).
    #[arg(long)]
    cwd: Option<String>,
    /// Network: `host` or `none`.
    #[arg(long, value_enum, default_value_t = NetMode::Host)]
    net: NetMode,
    /// Run the command as USER[:GROUP] instead of root: numbers, or names from the image's
    /// /etc/passwd and /etc/group.
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Run in a user namespace, mapping the caller to root inside (the default when not
    /// root; as root it maps root's /etc/subuid range, or root alone).
    #[arg(long)]
    rootless: bool,
    /// Bind a host path into the container: SRC:DST[:ro] (DST is created in the upper if
    /// the image lacks it); repeatable.
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    binds: Vec<String>,
    /// The command's file mode creation mask, octal (podman's default: 0022; an image
    /// cannot set it).
    #[arg(long, value_name = "OCTAL", default_value = "0022", value_parser = parse_umask)]
    umask: u32,
    /// Leave the image's /tmp (no tmpfs on it): what the command writes there stays in the
    /// upper, as in a build step (`layerfs build` runs RUN this way).
    #[arg(long)]
    keep_tmp: bool,
    /// The command and its arguments (after `--`; default: the image's).
    #[arg(last = true, required_unless_present = "image", value_name = "CMD")]
    command: Vec<String>,
    /// The ephemeral upper of a run without `upperdir=` (set by `run`, removed at exit).
    #[arg(skip)]
    pub ephemeral: Option<std::path::PathBuf>,
}

/// `--umask 0022`: an octal mask of permission bits.
fn parse_umask(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal umask (0000 to 0777)"))
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FileIoArg {
    #[default]
    Passthrough,
    Cached,
    Handles,
}

#[derive(Args, Debug, Default)]
pub struct MountArgs {
    /// Stay in the foreground instead of daemonizing.
    #[arg(short = 'f')]
    foreground: bool,
    /// Log every request (implies debug logging; use with -f to see it).
    #[arg(short = 'd')]
    debug: bool,
    /// Mount options: lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,...] (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Worker threads serving requests (default: the number of CPUs, at least 2).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// How file data is served: `passthrough` (the kernel reads the layer's file directly;
    /// needs root and kernel support, else falls back to `cached`), `cached` (no open/close
    /// round trips, the kernel keeps the page cache), or `handles` (open handles, reads
    /// served in userspace).
    #[arg(long, value_enum, default_value_t = FileIoArg::Passthrough)]
    file_io: FileIoArg,
    /// The same as `--file-io handles`.
    #[arg(long)]
    no_passthrough: bool,
    /// Append log lines to this file instead of stderr (also `LAYERFS_LOG_FILE`), so a
    /// daemonized mount's errors are kept; an error at mount time still goes to stderr.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// `[SOURCE] MOUNTPOINT`: where to mount the merged view, after the mount's source name
    /// as mount(8) and mount.fuse3 give it (`layerfs` by default; shown in
    /// /proc/self/mountinfo).
    #[arg(value_name = "[SOURCE] MOUNTPOINT", num_args = 1..=2)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    store: cmd::imagecmd::StoreArgs,
    /// With a docker:// IMAGE the store lacks: pull it lazily (as `pull --lazy`): layers
    /// in zstd:chunked or eStargz form are mounted from their table of contents, each file
    /// fetched from the registry when first read; plain gzip or zstd layers are streamed in
    /// while mounted, the first lookup waiting for them.
    #[arg(long = "lazy")]
    pub lazy_pull: bool,
}

impl MountArgs {
    /// The mount point (the last path).
    pub fn mountpoint(&self) -> Option<&PathBuf> {
        self.paths.last()
    }

    /// The source, when two paths were given.
    pub fn source(&self) -> Option<&PathBuf> {
        (self.paths.len() == 2).then(|| &self.paths[0])
    }
}

fn main() -> ExitCode {
    // Tests only: failpoints set before the command does anything (`import`, `commit`).
    #[cfg(feature = "failpoints")]
    layerfs_base::sys::faults::apply_from_env();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cli = match argv.split_first() {
        Some((argv0, rest)) if cmd::helper::invoked_as_helper(argv0) => {
            match cmd::helper::translate(rest) {
                // mount -f: pretend; the options must still parse.
                Ok(call) if call.fake => {
                    let cli = Cli::parse_from(std::iter::once(argv0.clone()).chain(call.args));
                    return match cli.cmd {
                        Some(Cmd::Mount(m)) => {
                            match layerfs_base::MountOptions::parse(&m.options) {
                                Ok(_) => ExitCode::SUCCESS,
                                Err(e) => {
                                    eprintln!("layerfs: bad mount options: {e}");
                                    ExitCode::FAILURE
                                }
                            }
                        }
                        _ => ExitCode::FAILURE,
                    };
                }
                Ok(call) => Cli::parse_from(std::iter::once(argv0.clone()).chain(call.args)),
                Err(e) => {
                    eprintln!("layerfs: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => parse(argv),
    };
    let debug = match &cli.cmd {
        Some(Cmd::Mount(m)) => m.debug,
        None => cli.mount.debug,
        _ => false,
    };
    let log_file = match &cli.cmd {
        Some(Cmd::Mount(m)) => m.log_file.clone(),
        None => cli.mount.log_file.clone(),
        _ => None,
    }
    .or_else(|| std::env::var_os("LAYERFS_LOG_FILE").map(PathBuf::from));
    let default_level = if debug { "debug" } else { "warn" };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    logger.format_timestamp_micros();
    if let Some(path) = &log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        match file {
            Ok(f) => {
                logger.target(env_logger::Target::Pipe(Box::new(f)));
            }
            Err(e) => {
                let e = anyhow::Error::new(e).context(format!("log file {}", path.display()));
                eprintln!("layerfs: {}", cmd::one_line(&e));
                return ExitCode::FAILURE;
            }
        }
    }
    logger.init();
    // With a log file, a failure is recorded there too (stderr may be gone by then).
    let fail = |prefix: &str, e: &anyhow::Error| {
        let line = cmd::one_line(e);
        if log_file.is_some() {
            log::error!("{prefix}{line}");
        }
        // A daemon's start-up error went to the parent over the pipe: printed there, once.
        if e.downcast_ref::<cmd::mount::Reported>().is_none() {
            eprintln!("{prefix}{line}");
        }
    };
    if let Some(Cmd::Run(mut r)) = cli.cmd {
        return match cmd::image_run::apply_run(&mut r).and_then(|()| cmd::run::run(r)) {
            Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
            Err(e) => {
                fail("layerfs run: ", &e);
                ExitCode::from(crate::runtime::init::EXIT_RUNTIME as u8)
            }
        };
    }
    let image_cmd = match cli.cmd.take() {
        Some(Cmd::Import(a)) => Some(cmd::import::run(a)),
        Some(Cmd::Pull(a)) => Some(cmd::pull::run(a)),
        Some(Cmd::Push(a)) => Some(cmd::push::run(a)),
        Some(Cmd::Images(a)) => Some(cmd::images::run(a)),
        Some(Cmd::Lazy(a)) => Some(cmd::lazy_status::run(a)),
        Some(Cmd::Rmi(a)) => Some(cmd::rmi::run(a)),
        Some(Cmd::Commit(a)) => Some(cmd::commit::run(a)),
        Some(Cmd::Squash(a)) => Some(cmd::squash::run(a)),
        Some(Cmd::Inspect(a)) => Some(cmd::inspect::run(a)),
        Some(Cmd::Which(a)) => Some(cmd::which::run(a)),
        Some(Cmd::Diff(a)) => Some(cmd::diff::run(a)),
        Some(Cmd::Cat(a)) => Some(cmd::cat::run(a)),
        Some(Cmd::Verify(a)) => Some(cmd::verify::run(a)),
        Some(Cmd::Build(a)) => Some(cmd::build::run(a)),
        Some(Cmd::Df(a)) => Some(cmd::df::run(a)),
        other => {
            cli.cmd = other;
            None
        }
    };
    if let Some(r) = image_cmd {
        return match r {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                fail("layerfs: ", &e);
                ExitCode::FAILURE
            }
        };
    }
    let result = match cli.cmd {
        Some(Cmd::Run(_)) => unreachable!("handled above"),
        Some(Cmd::Mount(mut m)) => {
            cmd::image_run::apply_mount(&mut m).and_then(|()| cmd::mount::run(m))
        }
        Some(Cmd::Umount { mountpoint }) => cmd::umount::run(&mountpoint),
        Some(Cmd::Status { mountpoint, json }) => cmd::supervise::status(&mountpoint, json),
        Some(Cmd::Restart { mountpoint }) => cmd::supervise::restart(&mountpoint),
        Some(Cmd::Explore(a)) => cmd::explore::run(a),
        Some(Cmd::ServeLayers(a)) => cmd::serve_layers::run(a),
        Some(Cmd::Completions { shell }) => cmd::packaging::completions(Cli::command(), shell),
        Some(Cmd::ManPages { dir }) => cmd::packaging::man_pages(Cli::command(), &dir).map(|_| ()),
        None => cmd::mount::run(cli.mount),
        Some(_) => unreachable!("image commands handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fail("layerfs: ", &e);
            ExitCode::FAILURE
        }
    }
}
