//! `layerfs build` end to end on a busybox-static base: instructions, the layer cache,
//! multi-stage, a failing RUN, rootless; the merged tree beside `podman build`'s; and
//! `df`. The seeds' 50 MB example on the Debian base is in `build_debian.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::podman::Podman;
use testkit::{require_root, tree, BIN};

/// A busybox root with what a build step needs (/tmp 1777, passwd with a user `app`).
fn busybox_root(root: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/test installs it)");
    for app in [
        "sh", "ls", "cat", "echo", "dd", "rm", "mkdir", "id", "ln", "chmod", "test", "pwd", "date",
        "true", "false",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:4321:\n").unwrap();
    std::fs::write(root.join("etc/hosts"), "").unwrap();
    std::fs::write(root.join("etc/resolv.conf"), "").unwrap();
}

/// A temp dir with a busybox root imported as `bb` into `store/`, and a `ctx/` directory.
struct Setup {
    t: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let t = tempfile::tempdir().unwrap();
        busybox_root(&t.path().join("root"));
        std::fs::create_dir(t.path().join("ctx")).unwrap();
        let s = Setup { t };
        let lower = format!("lowerdir={}", s.path("root").display());
        s.ok(&["import", &lower, "--name", "bb"]);
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.t.path().join(rel)
    }

    fn store(&self) -> String {
        self.path("store").display().to_string()
    }

    fn layerfs(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg(args[0])
            .arg("--store")
            .arg(self.store())
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .expect("run layerfs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.layerfs(args);
        assert!(
            o.status.success(),
            "layerfs {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn build(&self, name: &str, extra: &[&str]) -> String {
        let ctx = self.path("ctx").display().to_string();
        let mut args = vec!["build", "-t", name];
        args.extend_from_slice(extra);
        args.push(&ctx);
        self.ok(&args)
    }

    /// The image record (`images --json`) named `name`.
    fn record(&self, name: &str) -> serde_json::Value {
        let all: serde_json::Value = serde_json::from_str(&self.ok(&["images", "--json"])).unwrap();
        let full = format!("{name}:latest");
        all.as_array()
            .unwrap()
            .iter()
            .find(|i| i["names"].as_array().unwrap().iter().any(|n| n == &full))
            .unwrap_or_else(|| panic!("no image {name}"))
            .clone()
    }

    /// A read-only mount of a store image, unmounted when dropped.
    fn mount(&self, image: &str) -> Mount {
        let mp = tempfile::tempdir().unwrap().keep();
        self.ok(&["mount", image, mp.to_str().unwrap()]);
        Mount(mp)
    }

    /// Entries of the store's layers/ and tmp/ (nothing half-made may stay).
    fn store_entries(&self) -> (usize, usize) {
        let n = |d: &str| {
            std::fs::read_dir(self.path("store").join(d))
                .unwrap()
                .count()
        };
        (n("layers"), n("tmp"))
    }
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new(BIN).arg("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The image's last line of output is its id.
fn image_id(out: &str) -> String {
    out.lines().last().unwrap_or("").to_string()
}

#[test]
fn env_workdir_user_copy_and_config_instructions_shape_the_image() {
    if !require_root() {
        return;
    }
    let s = Setup::new();
    s.write("ctx/hello.txt", "hello\n");
    s.write("ctx/skip.log", "left out\n");
    s.write("ctx/.dockerignore", "*.log\n");
    s.write(
        "ctx/Containerfile",
        "FROM bb\n\
         ARG WHO=world\n\
         ENV GREETING=hi \\\n    PLACE=\"the box\"\n\
         WORKDIR /app\n\
         COPY --chown=app:app hello.txt ./\n\
         COPY . /ctx/\n\
         RUN echo \"$GREETING $WHO in $PLACE at $(pwd)\" > out && umask > umask && id -u > uid\n\
         USER app\n\
         RUN id -u > /tmp/uid-as-user\n\
         LABEL org.example.k=v\n\
         EXPOSE 8080\n\
         CMD [\"/app/out\"]\n\
         ENTRYPOINT [\"cat\"]\n",
    );
    let out = s.build("img", &["--build-arg", "WHO=you"]);
    for step in [
        "STEP 1/13: FROM bb",
        "STEP 7/13: RUN echo",
        "STEP 13/13: ENTRYPOINT",
    ] {
        assert!(out.contains(step), "no {step:?} in\n{out}");
    }
    let run = s.ok(&["run", "img"]);
    assert_eq!(run, "hi you in the box at /app\n");
    let cat = |p: &str| s.ok(&["run", "img", "--", p]);
    assert_eq!(cat("/app/umask"), "0022\n");
    assert_eq!(cat("/app/uid"), "0\n", "USER applies from its line on");
    assert_eq!(cat("/app/hello.txt"), "hello\n");
    // Owners and what was left out, seen on a mount of the image.
    let m = s.mount("img");
    use std::os::unix::fs::MetadataExt;
    let md = |p: &str| std::fs::symlink_metadata(m.0.join(p)).unwrap();
    assert_eq!(
        (md("app/hello.txt").uid(), md("app/hello.txt").gid()),
        (1234, 4321)
    );
    // WORKDIR's directory was first made by the COPY --chown into it: the user's (buildah).
    assert_eq!((md("app").uid(), md("app/out").uid()), (1234, 0));
    assert_eq!(md("app/out").mode() & 0o777, 0o644);
    assert_eq!(md("ctx/hello.txt").uid(), 0, "COPY without --chown: root's");
    assert!(m.0.join("ctx/Containerfile").exists());
    assert!(
        !m.0.join("ctx/skip.log").exists(),
        ".dockerignore'd file copied"
    );
    // A RUN's /tmp is the image's (no tmpfs hides what it wrote, as in buildah).
    assert_eq!(
        std::fs::read_to_string(m.0.join("tmp/uid-as-user")).unwrap(),
        "1234\n"
    );
    assert_eq!(md("tmp/uid-as-user").uid(), 1234);
    drop(m);
    let rec = s.record("img");
    let cfg = &rec["config"];
    assert_eq!(cfg["working_dir"], "/app");
    assert_eq!(cfg["user"], "app");
    assert_eq!(cfg["entrypoint"], serde_json::json!(["cat"]));
    assert_eq!(cfg["cmd"], serde_json::json!(["/app/out"]));
    assert_eq!(cfg["labels"]["org.example.k"], "v");
    assert_eq!(cfg["exposed_ports"], serde_json::json!(["8080/tcp"]));
    let env = cfg["env"].as_array().unwrap();
    assert!(env.contains(&"PLACE=the box".into()), "{env:?}");
    assert!(
        !env.iter().any(|e| e.as_str().unwrap().starts_with("WHO=")),
        "an ARG is not kept in the image"
    );
    // LABEL and EXPOSE leave the store in an OCI config (as podman writes them) and come
    // back with an import.
    let oci = format!("oci:{}:v1", s.path("oci").display());
    s.ok(&["squash", "img", "--to", &oci]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("oci/index.json")).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| -> serde_json::Value {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(s.path("oci/blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let manifest = blob(&index["manifests"][0]["digest"]);
    let config = blob(&manifest["config"]["digest"]);
    assert_eq!(config["config"]["Labels"]["org.example.k"], "v");
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    s.ok(&["import", &oci, "--name", "back"]);
    let back = s.record("back");
    assert_eq!(back["config"]["labels"], cfg["labels"]);
    assert_eq!(back["config"]["exposed_ports"], cfg["exposed_ports"]);
    // One layer per COPY and RUN (4) on the base's one; each has its line as created_by.
    assert_eq!(rec["layers"].as_array().unwrap().len(), 5);
    let made: Vec<&str> = rec["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .map(|h| h["created_by"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(made.len(), 5);
    assert_eq!(made[1], "COPY --chown=app:app hello.txt ./");
    assert!(made[3].starts_with("RUN echo"), "{made:?}");
}

/// Lines of a build's output that a RUN printed (they start with `ran:`).
fn ran(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("ran:")).collect()
}

#[test]
fn a_second_build_runs_no_run_and_touching_a_copy_source_rebuilds_from_its_step() {
    if !require_root() {
        return;
    }
    let s = Setup::new();
    s.write("ctx/a.txt", "a\n");
    s.write("ctx/b.txt", "b\n");
    s.write(
        "ctx/Containerfile",
        "FROM bb\nRUN echo ran:1 && cat /proc/sys/kernel/random/uuid > /one\nCOPY a.txt /a.txt\n\
         RUN echo ran:2 && cat /a.txt > /two\nCOPY b.txt /b.txt\nRUN echo ran:3\n",
    );
    let first = s.build("c", &[]);
    assert_eq!(ran(&first), ["ran:1", "ran:2", "ran:3"]);
    let layer1_first = s.record("c")["layers"][1]["diff_id"].clone();
    let layers = s.store_entries().0;
    // Again: every layer from the cache, no RUN, the same image.
    let second = s.build("c", &[]);
    assert!(ran(&second).is_empty(), "a RUN ran again:\n{second}");
    assert_eq!(second.matches("--> Using cache").count(), 5, "{second}");
    assert_eq!(image_id(&first), image_id(&second));
    assert_eq!(s.store_entries(), (layers, 0));
    // Touching a.txt (same content, new mtime) rebuilds from its COPY on.
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(s.path("ctx/a.txt"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let third = s.build("c", &[]);
    assert_eq!(ran(&third), ["ran:2", "ran:3"], "{third}");
    assert_eq!(third.matches("--> Using cache").count(), 1, "{third}");
    let layer1_third = s.record("c")["layers"][1]["diff_id"].clone();
    // --no-cache runs everything.
    let fourth = s.build("c", &["--no-cache"]);
    assert_eq!(ran(&fourth), ["ran:1", "ran:2", "ran:3"]);
    // The RUN before the COPY kept its layer (the uuid it wrote) until --no-cache.
    assert_eq!(layer1_third, layer1_first);
    assert_ne!(s.record("c")["layers"][1]["diff_id"], layer1_first);
}

#[test]
fn multi_stage_copies_from_an_earlier_stage_and_keeps_only_the_last() {
    if !require_root() {
        return;
    }
    let s = Setup::new();
    s.write(
        "ctx/Containerfile",
        "FROM bb AS builder\nWORKDIR /src\n\
         RUN echo artifact > out.bin && chmod 751 out.bin && echo junk > /junk\n\
         FROM bb\nCOPY --from=builder /src/out.bin /usr/local/bin/tool\n\
         COPY --from=0 /src /copied\nRUN test ! -e /junk && cat /usr/local/bin/tool\n",
    );
    let out = s.build("ms", &[]);
    assert!(out.contains("[1/2] STEP 3/3: RUN") && out.contains("[2/2] STEP 4/4: RUN"));
    let m = s.mount("ms");
    use std::os::unix::fs::MetadataExt;
    let tool = std::fs::symlink_metadata(m.0.join("usr/local/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o751, "COPY --from keeps the mode");
    assert_eq!(
        std::fs::read_to_string(m.0.join("copied/out.bin")).unwrap(),
        "artifact\n"
    );
    assert!(!m.0.join("junk").exists() && !m.0.join("src").exists());
    drop(m);
    // The final image has the base and its own three layers; the builder stage is kept as
    // an unnamed image (its layers referenced, cached), like podman's intermediate images.
    assert_eq!(s.record("ms")["layers"].as_array().unwrap().len(), 4);
    let again = s.build("ms", &[]);
    assert_eq!(again.matches("--> Using cache").count(), 4, "{again}");
}

#[test]
fn a_failing_run_names_its_step_line_and_status_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let s = Setup::new();
    s.write(
        "ctx/Containerfile",
        "FROM bb\nRUN dd if=/dev/zero of=/big bs=1k count=64 2>/dev/null\n\n\
         # a comment\nRUN echo about to fail && \\\n    exit 7\nRUN echo never\n",
    );
    let before = s.store_entries();
    let ctx = s.path("ctx").display().to_string();
    let o = s.layerfs(&["build", "-t", "broken", &ctx]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("step 3/4 (line 5) RUN echo about to fail &&") && err.contains("status 7"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("about to fail") && !out.contains("never"));
    // No image, and neither the layer of the step that succeeded nor anything staged.
    assert_eq!(s.store_entries(), before);
    let images = s.ok(&["images", "--json"]);
    assert!(!images.contains("broken"));
    assert!(!std::fs::read_dir(s.path("store/build-cache"))
        .map(|d| d.count() > 0)
        .unwrap_or(false));
}

#[test]
fn the_same_containerfile_built_by_podman_gives_the_same_tree() {
    if !require_root() {
        return;
    }
    let s = Setup::new();
    s.write("ctx/hello.txt", "hello\n");
    s.write("ctx/dir/f1", "f1\n");
    s.write("ctx/sub/deep/x", "deep\n");
    s.write("ctx/secret.log", "left out\n");
    s.write("ctx/.dockerignore", "*.log\n");
    std::os::unix::fs::symlink("deep/x", s.path("ctx/sub/link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        s.path("ctx/sub/deep/x"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    s.write("tarsrc/t/inner", "inner\n");
    let tar = |args: &[&str]| {
        let ok = Command::new("tar")
            .args(["--owner=0", "--group=0"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar {args:?}");
    };
    let p = |r: &str| s.path(r).display().to_string();
    tar(&["-C", &p("tarsrc"), "-cf", &p("ctx/files.tar"), "t"]);
    s.write(
        "ctx/Containerfile",
        "FROM bb\nARG WHO=world\nENV GREETING=hello\nWORKDIR /app\n\
         COPY --chown=1234:4321 hello.txt dir/ ./\nCOPY sub /opt/sub\nCOPY . /all/\n\
         ADD files.tar /opt/unpacked/\n\
         RUN echo \"$GREETING $WHO\" > greeting && mkdir -p /var/lib/x && \
             ln -s /app/greeting /var/lib/x/link && chmod 600 greeting && ln greeting hard\n\
         RUN rm /bin/false && echo t > /tmp/t && mkdir -p /etc/new && rm -r /root\n\
         RUN mv /var/lib/x /var/lib/moved && mv /opt/sub /opt/renamed\n\
         USER app\nRUN echo mine > /tmp/mine\nCMD [\"cat\", \"/app/greeting\"]\n",
    );
    s.build("same", &[]);
    let ours = s.mount("same");
    let mut mine = tree::snapshot(&ours.0);
    // podman's base: the same root as a tar.
    std::fs::create_dir(s.path("podman")).unwrap();
    let podman = Podman::new(&s.path("podman"));
    tar(&["-C", &p("root"), "-cf", &p("root.tar"), "."]);
    podman.podman(&["import", &p("root.tar"), "bb"]);
    podman.podman(&[
        "build",
        "--pull=never",
        "--network",
        "host",
        "-t",
        "same",
        &p("ctx"),
    ]);
    let merged = podman.podman(&["image", "mount", "same"]);
    let mut theirs = tree::snapshot(Path::new(merged.trim()));
    // What is not the Containerfile's doing: the root directory's mode (podman shows an
    // image mount's root as 0555), and the mount points buildah's RUN leaves in the layer
    // when the base lacks them (/etc/hostname, /run).
    for t in [&mut mine, &mut theirs] {
        t.meta.remove(Path::new(""));
        t.ino.remove(Path::new(""));
    }
    for extra in ["etc/hostname", "run"] {
        if !s.path("root").join(extra).exists() {
            theirs.meta.remove(Path::new(extra));
            theirs.ino.remove(Path::new(extra));
        }
    }
    tree::assert_same(&theirs, &mine, "layerfs build vs podman build");
    assert!(mine.meta.contains_key(Path::new("all/hello.txt")));
    assert!(!mine.meta.contains_key(Path::new("all/secret.log")));
}

#[test]
fn rootless_builds_run_steps_as_the_users_subordinate_ids_and_cache_them() {
    if !require_root() {
        return;
    }
    let _fuse = testkit::DevFuseOpen::new();
    let (uid, gid) = testkit::test_user();
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    busybox_root(&base.join("root"));
    std::fs::create_dir(base.join("ctx")).unwrap();
    std::fs::write(base.join("ctx/f"), "from the context\n").unwrap();
    std::fs::write(
        base.join("ctx/Containerfile"),
        "FROM bb\nCOPY --chown=app f /home/f\nRUN echo ran && chown app /home && id -u > /id\n\
         USER app\nRUN id -u > /home/uid\nCMD [\"cat\", \"/home/uid\", \"/id\", \"/home/f\"]\n",
    )
    .unwrap();
    let bin = base.join("layerfs");
    std::fs::copy(BIN, &bin).unwrap();
    let ok = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(base)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |args: &[&str]| -> String {
        let o = Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
            .arg("--init-groups")
            .arg(&bin)
            .arg(args[0])
            .arg("--store")
            .arg(base.join("store"))
            .args(&args[1..])
            .env("HOME", base)
            .current_dir(base)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "rootless layerfs {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let root = format!("lowerdir={}", base.join("root").display());
    as_user(&["import", &root, "--name", "bb"]);
    let ctx = base.join("ctx").display().to_string();
    let first = as_user(&["build", "-t", "rl", &ctx]);
    assert!(first.lines().any(|l| l == "ran"), "{first}");
    // Inside: root and the image's user; outside, the user's subordinate ids.
    assert_eq!(as_user(&["run", "rl"]), "1234\n0\nfrom the context\n");
    let second = as_user(&["build", "-t", "rl", &ctx]);
    assert!(!second.lines().any(|l| l == "ran"), "{second}");
    assert_eq!(image_id(&first), image_id(&second));
    // The layer's file is stored under the user's subordinate range, as rootless podman.
    use std::os::unix::fs::MetadataExt;
    let sub_start: u32 = std::fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("layerfs-test:"))
        .and_then(|r| r.split(':').next()?.parse().ok())
        .unwrap();
    let owners: Vec<u32> = std::fs::read_dir(base.join("store/layers"))
        .unwrap()
        .filter_map(|e| std::fs::symlink_metadata(e.unwrap().path().join("home/uid")).ok())
        .map(|m| m.uid())
        .collect();
    assert_eq!(
        owners,
        [sub_start + 1233],
        "image uid 1234 is the 1234th subordinate id"
    );
}

#[test]
fn squash_makes_the_new_steps_one_layer_without_what_they_deleted() {
    if !require_root() {
        return;
    }
    let s = Setup::new();
    s.write("ctx/f", "kept\n");
    s.write(
        "ctx/Containerfile",
        "FROM bb\nRUN dd if=/dev/zero of=/big bs=1k count=512 2>/dev/null\nCOPY f /f\n\
         RUN rm /big /bin/false\nRUN [\"/bin/sh\", \"-c\", \"echo exec form > /exec\"]\n\
         SHELL [\"/bin/sh\", \"-ec\"]\nRUN echo \"$0 $-\" > /shell\nVOLUME /data\n\
         RUN <<EOF\necho heredoc > /hd\necho two >> /hd\nEOF\n",
    );
    s.build("sq", &["--squash"]);
    let rec = s.record("sq");
    assert!(
        rec["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["created_by"] == "VOLUME /data"),
        "VOLUME is accepted and in the history"
    );
    let layers = rec["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "the base's layer and one new one");
    assert!(layers[1]["size"].as_u64().unwrap() < 64 << 10, "{layers:?}");
    let m = s.mount("sq");
    assert_eq!(std::fs::read_to_string(m.0.join("f")).unwrap(), "kept\n");
    assert!(!m.0.join("big").exists() && !m.0.join("bin/false").exists());
    assert!(m.0.join("bin/true").exists());
    assert_eq!(
        std::fs::read_to_string(m.0.join("exec")).unwrap(),
        "exec form\n"
    );
    assert_eq!(
        std::fs::read_to_string(m.0.join("hd")).unwrap(),
        "heredoc\ntwo\n"
    );
    let shell = std::fs::read_to_string(m.0.join("shell")).unwrap();
    assert!(
        shell.starts_with("/bin/sh ") && shell.contains('e'),
        "SHELL: {shell:?}"
    );
}

#[test]
fn a_killed_build_leaves_nothing_the_next_build_does_not_sweep() {
    if !require_root() {
        return;
    }
    let s = Setup::new();
    s.write("ctx/f", "f\n");
    s.write(
        "ctx/Containerfile",
        "FROM bb\nCOPY f /f\nRUN echo started && sleep 600\n",
    );
    let before = s.store_entries();
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(BIN)
        .args(["build", "--store", &s.store(), "-t", "killed"])
        .arg(s.path("ctx"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        if line.unwrap() == "started" {
            break;
        }
    }
    // As a terminal's Ctrl-\ or an OOM kill would: the whole group, no clean-up.
    // SAFETY: kill(2) of the process group this test just started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    let left = std::fs::read_dir(s.path("store/tmp")).unwrap().count();
    assert!(
        left > 0,
        "the killed build's directory (its COPY layer, its upper)"
    );
    // The next build removes it (its process is gone), and builds.
    s.write("ctx/Containerfile", "FROM bb\nCOPY f /f\n");
    s.build("next", &[]);
    assert_eq!(s.store_entries(), (before.0 + 1, 0));
    testkit::eventually("no mount left in the store", || {
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&s.store())
    });
}

#[test]
fn copy_resolves_paths_inside_the_image_never_on_the_host() {
    if !require_root() {
        return;
    }
    let s = Setup::new();
    // A file only the host has, which an image's absolute symlink names.
    let secret = s.path("host-secret");
    std::fs::write(&secret, "host only\n").unwrap();
    s.write("ctx/f", "f\n");
    s.write(
        "ctx/Containerfile",
        &format!(
            "FROM bb AS b\nRUN mkdir -p /usr/lib /data && echo d > /data/d && \
             ln -s usr/lib /lib && ln -s /data /datalink && ln -s {} /leak\n\
             FROM b\nWORKDIR /w\nCOPY f .\nCOPY f /lib/\nCOPY --from=b /datalink/d /from-link\n",
            secret.display()
        ),
    );
    s.build("paths", &[]);
    let m = s.mount("paths");
    let read = |p: &str| std::fs::read_to_string(m.0.join(p)).unwrap();
    assert_eq!(read("w/f"), "f\n", "COPY f . goes into WORKDIR");
    assert_eq!(
        read("usr/lib/f"),
        "f\n",
        "through the image's /lib -> usr/lib"
    );
    assert!(std::fs::symlink_metadata(m.0.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        read("from-link"),
        "d\n",
        "a stage's symlink followed inside the stage"
    );
    drop(m);
    // A symlink pointing out of the image is copied as the link it is: the host's file
    // behind it is never read.
    s.write(
        "ctx/Containerfile",
        &format!(
            "FROM bb AS b\nRUN ln -s {} /leak\nFROM bb\nCOPY --from=b /leak /x\n",
            secret.display()
        ),
    );
    s.build("leak", &[]);
    let m = s.mount("leak");
    let x = std::fs::symlink_metadata(m.0.join("x")).unwrap();
    assert!(x.file_type().is_symlink(), "the host's file was copied");
    assert_eq!(std::fs::read_link(m.0.join("x")).unwrap(), secret);
}
