//! Kernel parity, side by side: the same shell steps on kernel overlayfs (`redirect_dir=on`)
//! and on layerfs over copies of the same layers, every step's outcome compared. Each test
//! here is a reduced case where layerfs once differed.

use std::fs;
use std::path::Path;

use testkit::pair::{sh, write, Pair, CHECK_INOS, SAVE_INOS};
use testkit::require_root;

/// Was `../shared/repros/hardlink-removed-name.sh`: after `ln X Y; unlink Y`, xattr calls
/// and opens of X went to the removed name Y (ENOENT, EPERM over the whiteout there, or the
/// other file once Y was created again, e.g. a `security.capability` on the wrong binary).
#[test]
fn operations_on_a_file_act_on_a_name_it_still_has_after_a_link_is_removed() {
    if !require_root() {
        return;
    }
    let p = Pair::new(1, |_, d| {
        write(d, "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        write(d, "etc/hostname", "box\n");
        for f in ["etc/passwd", "etc/hostname"] {
            sh(&format!("setfattr -n user.k1 -v 1 {}", d.join(f).display()));
        }
    });
    p.steps(&[
        r#"ln "$M/etc/passwd" "$M/etc/p2""#,
        r#"unlink "$M/etc/p2""#,
        r#"setfattr -n user.k0 -v 0x76 "$M/etc/passwd""#,
        r#"setfattr -x user.k1 "$M/etc/passwd""#,
        r#"getfattr --absolute-names -d -m user "$M/etc/passwd""#,
        r#"chown 1000:1000 "$M/etc/passwd""#,
        r#"cat "$M/etc/passwd""#,
        r#"truncate -s 3 "$M/etc/passwd"; cat "$M/etc/passwd""#,
        r#"ln "$M/etc/hostname" "$M/etc/h2""#,
        r#"unlink "$M/etc/h2""#,
        r#"touch "$M/etc/h2""#,
        r#"setfattr -n user.k2 -v 0x85 "$M/etc/hostname""#,
        r#"getfattr --absolute-names -d -m user "$M/etc/h2" "$M/etc/hostname""#,
        // The first name removed, the link kept: the file lives on under the link.
        r#"ln "$M/etc/hostname" "$M/etc/h3"; unlink "$M/etc/hostname""#,
        r#"setfattr -n user.k3 -v 3 "$M/etc/h3"; echo more >> "$M/etc/h3""#,
        r#"touch "$M/etc/hostname"; getfattr --absolute-names -d -m user "$M/etc/hostname""#,
        r#"cat "$M/etc/h3"; getfattr --absolute-names -d -m user "$M/etc/h3""#,
        // A renamed link, then the other name removed.
        r#"ln "$M/etc/h3" "$M/etc/h4"; mv "$M/etc/h4" "$M/h5"; unlink "$M/etc/h3""#,
        r#"setfattr -n user.k4 -v 4 "$M/h5"; getfattr --absolute-names -d -m user "$M/h5""#,
        r#"stat -c '%h %s' "$M/h5""#,
    ]);
}

/// `touch x; ln x y; rm x; ln y x` at once (no pause): no stale entry or attribute of the
/// removed name may refuse the link.
#[test]
fn a_name_removed_from_a_hard_linked_file_can_be_linked_again_at_once() {
    if !require_root() {
        return;
    }
    let p = Pair::new(1, |_, d| write(d, "lower-file", "l\n"));
    p.steps(&[
        r#"cd "$M"; touch x; ln x y; rm x; ln y x; stat -c '%h %s' x y"#,
        r#"cd "$M"; ln lower-file l2; rm lower-file; ln l2 lower-file; cat lower-file"#,
        r#"cd "$M"; stat -c %h lower-file l2"#,
        r#"cd "$M"; mkdir d; ln x d/x; rm x; ln d/x x; rm d/x; ln x d/x; ls d"#,
    ]);
}

/// A lower file with two names, one name written (copied up), then a remount: the copy
/// shows its own content and number, the other name the lower's, looked up in either
/// order. (Within one mount both names still share one node: SEMANTICS.)
#[test]
fn after_a_remount_a_copied_up_name_of_a_lower_hard_link_shows_its_own_content() {
    if !require_root() {
        return;
    }
    let mut p = Pair::new(1, |_, d| {
        write(d, "f", "data\n");
        fs::create_dir(d.join("c")).unwrap();
        fs::hard_link(d.join("f"), d.join("c/f")).unwrap();
    });
    p.step(r#"echo more >> "$M/f""#);
    for order in [["c/f", "f"], ["f", "c/f"]] {
        p.unmount();
        p.mount();
        let cmd = format!(
            r#"cd "$M"; stat -c '%n %h %s' {a} {b}; cat {a} {b}"#,
            a = order[0],
            b = order[1]
        );
        p.step(&cmd);
    }
}

/// The merged tree, one line per entry: path, type, and a file's content.
const TREE: &str =
    r#"cd "$M" && find . -printf '%p %y\n' | sort && find . -type f | sort | xargs -r cat"#;

/// A directory renamed on a writable mount, its upper then stacked as a lower (a build's
/// next step): the redirect in that lower must be followed, as the kernel does, or the
/// directory shows empty.
#[test]
fn directories_renamed_in_an_earlier_upper_keep_their_contents_when_it_is_stacked() {
    if !require_root() {
        return;
    }
    let mut p = Pair::new(1, |_, d| {
        write(d, "a/dir100/a", "A\n");
        write(d, "a/dir100/sub/b", "B\n");
        write(d, "a/same/c", "C\n");
        fs::create_dir_all(d.join("a/empty100")).unwrap();
    });
    p.steps(&[
        r#"mv "$M/a/dir100" "$M/a/empty100/x""#,
        r#"mv "$M/a/same" "$M/a/same2""#,
        r#"echo new > "$M/a/empty100/x/n""#,
    ]);
    p.stack_upper();
    p.steps(&[
        TREE,
        r#"cat "$M/a/empty100/x/a" "$M/a/same2/c""#,
        // Renamed again on top of the redirected lower, then stacked once more.
        r#"mv "$M/a/empty100/x/sub" "$M/top"; mv "$M/a/same2" "$M/a/same3""#,
        TREE,
    ]);
    p.stack_upper();
    p.step(TREE);
}

/// Redirects written by hand in lower layers (relative, absolute, chained through two
/// layers, one through a whited-out path, one into an opaque directory), read as the kernel
/// reads them.
#[test]
fn redirects_in_lower_layers_are_followed_as_the_kernel_follows_them() {
    if !require_root() {
        return;
    }
    let p = Pair::new(3, |i, d| match i {
        0 => {
            write(d, "src/f", "0\n");
            write(d, "deep/er/g", "0g\n");
            write(d, "op/h", "0h\n");
            write(d, "gone/i", "0i\n");
        }
        1 => {
            // Relative: "rel" is what "src" was; "src" is whited out.
            fs::create_dir_all(d.join("rel")).unwrap();
            write(d, "rel/f1", "1\n");
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v src {0}/rel && mknod {0}/src c 0 0",
                d.display()
            ));
            // Absolute, two levels down.
            fs::create_dir_all(d.join("moved")).unwrap();
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v /deep/er {0}/moved && \
                 mkdir {0}/deep && mknod {0}/deep/er c 0 0",
                d.display()
            ));
            // Opaque beats the redirect.
            fs::create_dir_all(d.join("op2")).unwrap();
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v /op {0}/op2 && \
                 setfattr -n trusted.overlay.opaque -v y {0}/op2",
                d.display()
            ));
            // Through a whiteout in this very layer: nothing below shows.
            sh(&format!("mknod {}/gone c 0 0", d.display()));
        }
        _ => {
            // Chained: top "chain" was layer 1's "moved" (itself "/deep/er" below).
            fs::create_dir_all(d.join("chain")).unwrap();
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v /moved {0}/chain && mknod {0}/moved c 0 0",
                d.display()
            ));
            fs::create_dir_all(d.join("g2")).unwrap();
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v /gone {}/g2",
                d.display()
            ));
        }
    });
    p.steps(&[
        TREE,
        r#"ls "$M/rel" "$M/chain" "$M/op2" "$M/g2""#,
        r#"mv "$M/chain" "$M/rel/c2"; ls "$M/rel/c2""#,
        TREE,
    ]);
}

/// A redirect in a lower layer whose absolute path crosses an opaque directory in a layer
/// below, where the directory it names carries an absolute redirect of its own: the kernel
/// walks on into the layers below that one (`ovl_check_redirect` clears the stop the opaque
/// directory set), and a relative redirect there does not. What the writable differential
/// found (2026-12-06) after directories renamed in one generation were renamed again in
/// the next: layerfs ended the walk at the opaque directory and showed `d/e` empty.
#[test]
fn an_absolute_redirect_below_an_opaque_directory_on_the_path_resumes_the_walk() {
    if !require_root() {
        return;
    }
    let p = Pair::new(3, |i, d| match i {
        0 => {
            write(d, "x/f", "0f\n");
            write(d, "a2/q/h", "0h\n");
        }
        1 => {
            // `a` and `a2` are opaque; their `c` was renamed from elsewhere.
            for (dir, to) in [("a", "/x"), ("a2", "q")] {
                fs::create_dir_all(d.join(dir).join("c")).unwrap();
                sh(&format!(
                    "setfattr -n trusted.overlay.opaque -v y {0}/{dir} && \
                     setfattr -n trusted.overlay.redirect -v {to} {0}/{dir}/c",
                    d.display()
                ));
            }
        }
        _ => {
            for (e, to) in [("e", "/a/c"), ("e2", "/a2/c")] {
                fs::create_dir_all(d.join("d").join(e)).unwrap();
                sh(&format!(
                    "setfattr -n trusted.overlay.redirect -v {to} {}/d/{e}",
                    d.display()
                ));
            }
        }
    });
    p.steps(&[
        TREE,
        r#"ls "$M/d/e" "$M/d/e2""#,
        r#"mv "$M/d/e" "$M/e3" && ls "$M/e3" && cat "$M/e3/f""#,
        TREE,
    ]);
}

/// Two redirects on one walk through a layer: `/p/q` meets `p`, redirected to `/r/s` (the
/// path is now `/r/s/q`), then `q`, redirected to `x` (relative: `/r/s/x`) or to `/y`. The
/// second must replace the component it is on, counted from the path's end as the kernel
/// counts it (`ovl_lookup_layer`), not its place in the path before the first. Found with
/// random stacks of redirects and opaque directories compared with the kernel (2026-12-06);
/// layerfs walked `/r/x/q` and `/y/q` and showed `d/e` and `d/e2` empty.
#[test]
fn a_second_redirect_on_one_walk_rewrites_the_path_as_the_kernel_does() {
    if !require_root() {
        return;
    }
    let p = Pair::new(3, |i, d| match i {
        0 => {
            write(d, "r/s/x/f", "0f\n");
            write(d, "y/g", "0g\n");
        }
        1 => {
            for (dir, to) in [("p", "x"), ("p2", "/y")] {
                fs::create_dir_all(d.join(dir).join("q")).unwrap();
                sh(&format!(
                    "setfattr -n trusted.overlay.redirect -v /r/s {0}/{dir} && \
                     setfattr -n trusted.overlay.redirect -v {to} {0}/{dir}/q",
                    d.display()
                ));
            }
        }
        _ => {
            for (e, to) in [("e", "/p/q"), ("e2", "/p2/q")] {
                fs::create_dir_all(d.join("d").join(e)).unwrap();
                sh(&format!(
                    "setfattr -n trusted.overlay.redirect -v {to} {}/d/{e}",
                    d.display()
                ));
            }
        }
    });
    p.steps(&[
        TREE,
        r#"mv "$M/d/e2" "$M/e3" && ls "$M/e3" && cat "$M/e3/g""#,
        TREE,
    ]);
}

/// In a stack whose lowers are earlier uppers (files copied up there, with origin records,
/// and hard links), link, rename and copy-up of lower files keep their inode numbers where
/// the kernel keeps them (not for a lower file with several links: the kernel's copy-up
/// breaks the link, and the copy shows its own number), and so does a remount; on one
/// filesystem, and with the uppers on another filesystem than the first lower.
#[test]
fn inode_numbers_survive_link_and_rename_in_stacks_of_earlier_uppers() {
    if !require_root() {
        return;
    }
    for tmpfs_upper in [false, true] {
        inode_numbers_in_stacks_of_earlier_uppers(tmpfs_upper);
    }
}

fn inode_numbers_in_stacks_of_earlier_uppers(tmpfs_upper: bool) {
    let fill = |_: usize, d: &Path| {
        for f in ["a", "b", "c", "d", "e"] {
            write(d, &format!("dir/{f}"), f);
        }
    };
    let mut p = Pair::new_on(1, fill, tmpfs_upper);
    // The first run: copy-ups (origin records), hard links, new files.
    p.steps(&[
        r#"cd "$M/dir" && chmod 600 a b && ln c c2 && echo n > new && ln new new2 && echo s > solo"#,
    ]);
    p.stack_upper();
    // Files with one link below: the kernel keeps their numbers.
    let files = "FILES='dir/a dir/b dir/d dir/e dir/solo'";
    // Lower files with several links: the copy shows a new number, on both (each name of
    // a lower hard link is a node of its own; it was one node showing the lower number
    // before node ids were apart from inode numbers).
    let linked = "FILES='dir/c dir/c2 dir/new dir/new2'";
    let check = format!("{files}; {CHECK_INOS}");
    p.step(&format!("{files}; {SAVE_INOS}"));
    p.step(&format!("{linked}; {SAVE_INOS}"));
    p.steps(&[
        r#"cd "$M/dir" && ln a a2 && ln d d2 && ln new new3 && ln solo solo2"#,
        r#"cd "$M/dir" && mv b b2 && mv b2 b && mv c2 c3 && mv c3 c2 && mv e e2 && mv e2 e"#,
        r#"cd "$M/dir" && chmod 640 new2 && touch c && mv solo s && mv s solo"#,
        &check,
    ]);
    p.step(&format!("{linked}; {CHECK_INOS}"));
    // Remounted: the copies' numbers come back from their origin records, also for a copy
    // from the other filesystem.
    p.unmount();
    p.mount();
    p.step(&check);
    // Stacked again: a copy in a lower layer shows its own number (the kernel reads origin
    // records in the upper only), on both.
    p.stack_upper();
    p.step(&check);
}

/// A rename of a directory with lower content onto a non-empty directory without any
/// (upper only) fails with ENOTEMPTY from the upper filesystem, after the source was copied
/// up with its redirect, which stays, as on the kernel (`ovl_rename` checks only a target
/// with lower content before it changes anything); into another directory and within one,
/// and for a directory already renamed (its redirect stays). Found by the rw differential: the kernel mounting layerfs's upper listed a whiteout of
/// the lower source directory, which on the kernel's own upper had become a merged one.
#[test]
fn a_failed_rename_onto_an_upper_only_directory_leaves_the_source_copied_up() {
    if !require_root() {
        return;
    }
    let mut p = Pair::new(1, |_, d| {
        write(d, "a/c/f", "f\n");
        write(d, "a/d/f", "f\n");
        write(d, "g/f", "f\n");
    });
    // A renamed directory (redirected) onto an upper-only one at its lower place: the
    // redirect it has stays (it named the destination's lower place before, and lost it).
    p.step(r#"cd "$M" && mv g h && mkdir -p g/x && python3 -c 'import os; os.rename("h", "g")'; ls h g"#);
    p.unmount();
    p.mount();
    p.step(r#"cd "$M" && ls h g"#);
    p.steps(&[
        r#"cd "$M" && mkdir -p up/c/x && mv -T a/c up/c; echo $?; ls a/c up/c"#,
        r#"cd "$M" && mkdir -p a/e/x && mv -T a/d a/e; echo $?; ls a/d a/e"#,
        r#"cd "$M/../upper" && find . | sort && getfattr --absolute-names -n trusted.overlay.redirect a/c"#,
    ]);
    // Within one directory the kernel's redirect is relative ("d"), layerfs's absolute
    // ("/a/d"); both name the same lower directory.
    p.step(r#"cd "$M/../upper" && getfattr -n trusted.overlay.redirect a/d >/dev/null && echo a/d redirected"#);
}

/// POSIX: after rewinddir, readdir shows the directory as it is now, with names created
/// since opendir (and without the ones removed since).
#[test]
fn rewinddir_shows_names_added_since_opendir() {
    if !require_root() {
        return;
    }
    let p = Pair::new(1, |_, d| {
        write(d, "d/lower1", "1");
        write(d, "d/lower2", "2");
    });
    p.step(
        r#"perl -e '
            my $d = "$ENV{M}/d";
            opendir(my $h, $d) or die "opendir: $!";
            my @first = sort grep { !/^\.\.?$/ } readdir($h);
            for my $i (1..300) { open(my $f, ">", "$d/new$i") or die "create: $!"; }
            unlink("$d/lower1") or die "unlink: $!";
            rewinddir($h);
            my @again = sort grep { !/^\.\.?$/ } readdir($h);
            print scalar(@first), " then ", scalar(@again), " ", join(",", @again[0..3]), "\n";
        '"#,
    );
}

/// POSIX ACLs as the kernel's VFS applies them: chmod updates the ACL's owner, group-or-
/// mask and other entries; a directory's default ACL is inherited, with the mode the
/// creator asked for cutting the mask; set-gid directories pass on their group and set-gid.
#[test]
fn posix_acls_and_set_gid_follow_the_kernel() {
    if !require_root() {
        return;
    }
    let p = Pair::new(1, |_, d| {
        write(d, "f", "f");
        write(d, "g", "g");
        fs::create_dir_all(d.join("dacl")).unwrap();
        fs::create_dir_all(d.join("sg")).unwrap();
        sh(&format!("setfacl -m u:1000:rwx,g:100:r {}/f", d.display()));
        sh(&format!(
            "chown 0:100 {0}/sg && chmod 2775 {0}/sg",
            d.display()
        ));
        write(d, "dacl/old", "o");
        fs::create_dir_all(d.join("dacl/olddir")).unwrap();
        write(d, "sg/old", "o");
        fs::create_dir_all(d.join("sg/olddir")).unwrap();
        // For an unprivileged user (uid 1000, in no group): set-gid files it may write.
        fs::create_dir_all(d.join("pub")).unwrap();
        for f in ["pub/mine", "pub/theirs", "pub/punch", "pub/zero"] {
            write(d, f, "0123456789");
        }
        sh(&format!(
            "cd {} && chmod 777 pub && chown 1000:100 pub/mine && chmod 2775 pub/mine && \
             chown 0:100 pub/theirs pub/punch pub/zero && chmod 2777 pub/theirs pub/punch pub/zero",
            d.display()
        ));
    });
    // The test directories must be reachable by the unprivileged user.
    sh(&format!(
        "chmod 755 {}",
        p.sides[0].root.parent().unwrap().display()
    ));
    for d in &p.sides {
        sh(&format!(
            "chmod 755 {} {}",
            d.root.display(),
            d.p("mnt").display()
        ));
    }
    let user = "setpriv --reuid=1000 --regid=1000 --clear-groups";
    let acl = r#"getfacl -cp "$M/$F" 2>&1 | sort | tr '\n' ' '"#;
    p.steps(&[
        &format!(r#"F=f; chmod 440 "$M/f" && stat -c %a "$M/f" && {acl}"#),
        &format!(r#"F=f; chmod 750 "$M/f" && stat -c %a "$M/f" && {acl}"#),
        &format!(r#"F=g; setfacl -m u:1000:rw "$M/g" && stat -c %a "$M/g" && {acl}"#),
        &format!(r#"F=dacl; setfacl -d -m u:1000:rwx,g::rwx,o::r "$M/dacl" && {acl}"#),
        &format!(r#"F=dacl/new; (umask 022; touch "$M/dacl/new") && stat -c %a "$M/$F" && {acl}"#),
        &format!(r#"F=dacl/sub; (umask 077; mkdir "$M/dacl/sub") && stat -c %a "$M/$F" && {acl}"#),
        &format!(r#"F=dacl/sub/deeper; mkdir -m 700 "$M/$F" && stat -c %a "$M/$F" && {acl}"#),
        r#"mkdir "$M/sg/sub" && touch "$M/sg/file" && stat -c '%a %g' "$M/sg/sub" "$M/sg/file""#,
        &format!(r#"F=sg; setfacl -d -m g::rwx "$M/sg" && mkdir "$M/sg/sub2" && stat -c '%a %g' "$M/sg/sub2" && {acl}"#),
        // Over a whiteout (a lower name removed, then made again): the same inheritance.
        &format!(r#"F=dacl/old; rm "$M/$F" && (umask 077; touch "$M/$F") && stat -c %a "$M/$F" && {acl}"#),
        &format!(r#"F=dacl/olddir; rmdir "$M/$F" && mkdir -m 750 "$M/$F" && stat -c %a "$M/$F" && {acl}"#),
        &format!(r#"F=sg/old; rm "$M/$F" && touch "$M/$F" && stat -c '%a %g' "$M/$F" && {acl}"#),
        &format!(r#"F=sg/olddir; rmdir "$M/$F" && mkdir "$M/$F" && stat -c '%a %g' "$M/$F" && {acl}"#),
        // Made by an unprivileged user in a set-gid directory with a default ACL.
        &format!(r#"chmod 777 "$M/sg" && {user} mkdir "$M/sg/u" && {user} touch "$M/sg/uf" && stat -c '%a %u %g' "$M/sg/u" "$M/sg/uf""#),
        // chmod by the owner, not in the file's group: set-gid dropped.
        &format!(r#"{user} chmod 2755 "$M/pub/mine"; stat -c %a "$M/pub/mine""#),
        // Written or allocated by a user who is not the owner: set-gid dropped.
        &format!(r#"{user} fallocate -l 20 "$M/pub/theirs"; stat -c '%a %s' "$M/pub/theirs""#),
        &format!(r#"{user} fallocate -p -o 2 -l 2 "$M/pub/punch"; stat -c %a "$M/pub/punch""#),
        &format!(r#"{user} fallocate -z -o 2 -l 2 "$M/pub/zero"; stat -c %a "$M/pub/zero""#),
    ]);
}

/// What each of the calls FUSE may not carry answers on a mount (`root`): the errno or
/// the result, per call.
fn special_calls(root: &Path) -> Vec<String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let res = |r: libc::c_long| -> String {
        if r < 0 {
            let e = std::io::Error::last_os_error();
            format!("errno {}", e.raw_os_error().unwrap_or(0))
        } else {
            format!("ok {r}")
        }
    };
    let open = |p: &str| {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(root.join(p))
            .unwrap()
    };
    let (src, dst) = (open("big"), open("dst"));
    let mut out = Vec::new();
    // SAFETY: for each call, fds are open for the call's duration; pointers are to live,
    // properly sized values; paths are NUL-terminated.
    unsafe {
        const FICLONE: libc::c_ulong = 0x4004_9409;
        let r = libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd());
        out.push(format!("FICLONE {}", res(r as _)));
        // struct file_dedupe_range with one destination.
        const FIDEDUPERANGE: libc::c_ulong = 0xc018_9436;
        let mut arg = [0u64; 3 + 4];
        arg[1] = 4096; // src_length
        arg[2] = 1; // dest_count (u16) + reserved
        arg[3] = dst.as_raw_fd() as u64; // dest_fd (s64)
        let r = libc::ioctl(src.as_raw_fd(), FIDEDUPERANGE, arg.as_mut_ptr());
        let status = arg[6] as u32 as i32;
        out.push(format!("FIDEDUPERANGE {} status {status}", res(r as _)));
        for (name, mode) in [
            ("INSERT_RANGE", libc::FALLOC_FL_INSERT_RANGE),
            ("COLLAPSE_RANGE", libc::FALLOC_FL_COLLAPSE_RANGE),
            (
                "PUNCH_HOLE",
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            ),
            ("ZERO_RANGE", libc::FALLOC_FL_ZERO_RANGE),
        ] {
            let r = libc::fallocate(src.as_raw_fd(), mode, 4096, 4096);
            out.push(format!("fallocate {name} {}", res(r as _)));
        }
        let r = libc::open(
            c(root).as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR,
            0o600 as libc::c_uint,
        );
        out.push(format!("O_TMPFILE {}", res(if r < 0 { -1 } else { 0 })));
        if r >= 0 {
            libc::close(r);
        }
        let r = libc::renameat2(
            libc::AT_FDCWD,
            c(&root.join("dst")).as_ptr(),
            libc::AT_FDCWD,
            c(&root.join("dst2")).as_ptr(),
            libc::RENAME_WHITEOUT,
        );
        out.push(format!("RENAME_WHITEOUT {}", res(r as _)));
        let mut p = libc::pollfd {
            fd: src.as_raw_fd(),
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        };
        let r = libc::poll(&mut p, 1, 0);
        out.push(format!("poll {} revents {:#x}", res(r as _), p.revents));
    }
    out
}

/// Calls that FUSE carries partly or not at all: what layerfs answers, against the kernel
/// over an upper filesystem without reflink (ext4 in CI).
#[test]
fn special_file_calls_answer_as_the_kernel_or_as_pinned() {
    if !require_root() {
        return;
    }
    let p = Pair::new(1, |_, d| {
        fs::write(d.join("big"), vec![7u8; 3 * 4096]).unwrap();
        fs::write(d.join("dst"), vec![7u8; 3 * 4096]).unwrap();
    });
    let k = special_calls(&p.sides[0].p("mnt"));
    let l = special_calls(&p.sides[1].p("mnt"));
    // What FUSE cannot carry (SEMANTICS lists why): EOPNOTSUPP, where the kernel's
    // overlay passes the call to the upper filesystem.
    // And RENAME_WHITEOUT, EINVAL on the kernel's overlay, which layerfs carries out (a
    // nested overlay's whiteout at the old name), so that a kernel overlay can have its
    // upper on a layerfs mount (tests/nested.rs).
    let pinned = [
        "RENAME_WHITEOUT ok 0",
        "FIDEDUPERANGE errno 95 status 0",
        "fallocate INSERT_RANGE errno 95",
        "fallocate COLLAPSE_RANGE errno 95",
    ];
    for (k, l) in k.iter().zip(&l) {
        if pinned.contains(&l.as_str()) && l.split(' ').next() == k.split(' ').next() {
            continue;
        }
        assert_eq!(k, l, "kernel (left), layerfs (right): {k:?} / {l:?}");
    }
    assert_eq!(k.len(), l.len());
}

/// Every name of each directory in `$@`, sorted, with whether the number `readdir` gives
/// (`d_ino`; `ls -i` shows `stat`'s) is the one `lstat` shows.
const LIST: &str = r#"python3 -c '
import os, sys
for d in sys.argv[1:]:
    print(d + ":")
    for e in sorted(os.scandir(os.environ["M"] + "/" + d), key=lambda e: e.name):
        same = e.inode() == os.lstat(e.path).st_ino
        print(" " + e.name + ("" if same else " listed as another inode"))
'"#;

/// Listings are cached by the kernel on writable mounts too (no directory handles): after
/// every kind of change, made in the directory or by a copy-up, rename or removal around
/// it, a listing shows the names and numbers the kernel's overlayfs shows.
#[test]
fn listings_stay_right_after_every_kind_of_change() {
    if !require_root() {
        return;
    }
    let p = Pair::new(2, |i, d| {
        for f in ["a", "b", "c", "x"] {
            write(d, &format!("d/{f}{i}"), f);
        }
        write(d, &format!("d2/f{i}"), "f");
        write(d, &format!("e/k{i}"), "k");
        write(d, &format!("e/sub/s{i}"), "s");
    });
    let l = |dirs: &str| format!("{LIST} {dirs}");
    let first = p.step(&l("d"));
    assert_eq!(first, "0 d:\n a0\n a1\n b0\n b1\n c0\n c1\n x0\n x1");
    p.steps(&[
        &l("d d2 e e/sub ."),
        &format!("touch $M/d/new; {}", l("d")),
        &format!("rm $M/d/a0 $M/d/a1; {}", l("d")),
        &format!("mv $M/d/b1 $M/d/b9; {}", l("d")),
        &format!("mv $M/d/c0 $M/e/c0; {}", l("d e")),
        &format!("mkdir $M/d/sub; {}", l("d")),
        &format!("rmdir $M/d/sub; {}", l("d")),
        // Copy-ups: of the directory itself, then of a file in it.
        &format!("chmod 700 $M/d2; {}", l("d2 .")),
        &format!("echo more >> $M/d2/f1; {}", l("d2")),
        // A merged directory renamed (a redirect), and a lower one with it.
        &format!("mv $M/e $M/e2; {}", l(". e2 e2/sub")),
        &format!("mv $M/e2/sub $M/d/sub; {}", l("d d/sub e2")),
        &format!("rm -r $M/d2; {}", l(".")),
        &format!("mkdir $M/d2; touch $M/d2/only; {}", l(". d2")),
    ]);
}

/// A position saved with `telldir` resumes in a new process on a new mount (no listing
/// cached anywhere: the kernel asks from that offset at once) where the first one was.
#[test]
fn seekdir_in_a_new_process_resumes_a_merged_listing() {
    if !require_root() {
        return;
    }
    let mut p = Pair::new(1, |_, d| {
        for i in 0..400 {
            write(d, &format!("big/lower-entry-with-a-long-name-{i:03}"), "");
        }
    });
    let save = |m: &str| {
        format!(
            r#"for i in $(seq 0 99); do touch "$M/big/upper-{m}-$i"; done
            perl -e 'opendir(my $h, "$ENV{{M}}/big") or die; readdir($h) for 1..250;
                print telldir($h), "\n"; print "$_\n" for readdir($h);' > "$M/../{m}-pos""#
        )
    };
    p.step(&save("x"));
    p.unmount();
    p.mount();
    let resumed = p.step(
        r#"pos=$(head -1 "$M/../x-pos"); tail -n +2 "$M/../x-pos" > "$M/../x-want"
        perl -e 'opendir(my $h, "$ENV{M}/big") or die; seekdir($h, $ARGV[0]);
            print "$_\n" for readdir($h);' "$pos" > "$M/../x-got"
        cmp "$M/../x-want" "$M/../x-got" && wc -l < "$M/../x-got""#,
    );
    // 2 dots and 500 names, 250 read before the position.
    assert_eq!(resumed, "0 252");
}
