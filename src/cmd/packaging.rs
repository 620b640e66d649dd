//! What a package installs besides the binary: shell completions (`layerfs completions
//! SHELL`, clap_complete) and man pages (`layerfs man-pages DIR`, clap_mangen; hidden, run
//! by `scripts/package` before `cargo deb`). Both are generated from the same clap
//! definition as `--help`, so they cannot drift from it. A hidden subcommand rather than an
//! xtask: the command definition lives in the binary (src/main.rs), and an xtask would
//! need it moved into the library or duplicated.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Command;

/// The shells `completions` writes for.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script of `cmd` for `shell` to stdout.
pub fn completions(mut cmd: Command, shell: Shell) -> Result<()> {
    use clap_complete::shells;
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    match shell {
        Shell::Bash => clap_complete::generate(shells::Bash, &mut cmd, &name, &mut out),
        Shell::Zsh => clap_complete::generate(shells::Zsh, &mut cmd, &name, &mut out),
        Shell::Fish => clap_complete::generate(shells::Fish, &mut cmd, &name, &mut out),
    }
    super::image_source::emit(&String::from_utf8_lossy(&out))
}

/// Writes `layerfs.1` and one `layerfs-SUB.1` per visible subcommand into `dir`; the
/// file names written.
pub fn man_pages(cmd: Command, dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    let mut written = Vec::new();
    let mut write = |c: Command, name: String| -> Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .title(name.clone())
            .render(&mut out)?;
        let file = dir.join(format!("{name}.1"));
        std::fs::write(&file, out).with_context(|| format!("writing {}", file.display()))?;
        written.push(name);
        Ok(())
    };
    let top = cmd.get_name().to_string();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("{top}-{}", sub.get_name());
        write(
            sub.clone().bin_name(format!("{top} {}", sub.get_name())),
            name,
        )?;
    }
    write(cmd, top)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("tool")
            .about("A tool")
            .subcommand(Command::new("one").about("First"))
            .subcommand(Command::new("secret").hide(true))
    }

    #[test]
    fn a_man_page_per_visible_subcommand() {
        let d = tempfile::tempdir().unwrap();
        let mut names = man_pages(cli(), d.path()).unwrap();
        names.sort();
        assert_eq!(names, vec!["tool", "tool-one"]);
        let page = std::fs::read_to_string(d.path().join("tool-one.1")).unwrap();
        assert!(page.contains(".TH tool-one"), "{page}");
        assert!(page.contains("First"), "{page}");
    }
}
