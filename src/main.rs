//! The `layerfs` command: mount a layer stack (fuse-overlayfs compatible) and its tools.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// A userspace union filesystem with kernel overlayfs semantics, served over FUSE.
///
/// `layerfs -o lowerdir=TOP:...:BOTTOM MOUNTPOINT` mounts the stack read-only; the same
/// syntax as overlayfs and fuse-overlayfs, so podman can use layerfs as its mount_program.
#[derive(Parser, Debug)]
#[command(name = "layerfs", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    mount: MountArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount a layer stack (the same as calling layerfs without a subcommand).
    Mount(MountArgs),
    /// Unmount a layerfs mount (`fusermount3 -u` and `umount` work too).
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
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
    /// Where to mount the merged view.
    mountpoint: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let debug = match &cli.cmd {
        Some(Cmd::Mount(m)) => m.debug,
        None => cli.mount.debug,
        _ => false,
    };
    // After an external `umount`, fuser's own unmount-on-exit fails harmlessly with EINVAL
    // and warns; keep that out of the default log.
    let default_level = if debug {
        "debug"
    } else {
        "warn,fuser::session=error"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_micros()
        .init();
    let result = match cli.cmd {
        Some(Cmd::Mount(m)) => cmd::mount::run(m),
        Some(Cmd::Umount { mountpoint }) => cmd::umount::run(&mountpoint),
        None => cmd::mount::run(cli.mount),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layerfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
