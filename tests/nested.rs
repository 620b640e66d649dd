//! Overlays stacked on a layerfs mount, side by side with the same stack on the kernel's
//! overlay: the overlay's own xattrs pass through escaped one level (the kernel's "Nesting
//! overlayfs mounts"), and a kernel overlay uses a layerfs mount as its lower and upper.

use std::fs;
use std::path::Path;
use std::process::Command;

use testkit::pair::{sh, write, Pair};
use testkit::require_root;

/// The escaped overlay xattrs (`*.overlay.overlay.*`) in a layer or an upper, as stored.
fn escaped_in(dir: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-R", "-d", "-m", r"^trusted\.overlay\.overlay\.", "."])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "getfattr in {}: {out:?}",
        dir.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `trusted.overlay.overlay.X` in a layer shows as `trusted.overlay.X`; setting or removing
/// `trusted.overlay.X` through the mount acts on `trusted.overlay.overlay.X` in the upper,
/// after a copy-up that keeps the escaped names; an escaped opaque mark hides nothing.
/// Before, every `trusted.overlay.*` name was hidden and refused (EOPNOTSUPP).
#[test]
fn overlay_xattrs_pass_through_escaped_one_level_as_the_kernel_nests_them() {
    if !require_root() {
        return;
    }
    let p = Pair::new(2, |i, d| {
        if i == 0 {
            write(d, "d/below", "b\n");
        } else {
            write(d, "f", "f\n");
            write(d, "d/top", "t\n");
            let at = |rel: &str| d.join(rel).display().to_string();
            for (name, value, rel) in [
                ("trusted.overlay.overlay.opaque", "y", "d"),
                ("trusted.overlay.overlay.redirect", "/x", "d"),
                ("trusted.overlay.overlay.metacopy", "", "f"),
                ("trusted.overlay.overlay.overlay.deep", "2", "f"),
                ("trusted.overlay.origin", "private", "f"),
                ("trusted.other", "1", "f"),
            ] {
                sh(&format!("setfattr -n {name} -v '{value}' {}", at(rel)));
            }
        }
    });
    p.steps(&[
        r#"cd "$M"; ls d; getfattr -d -m - d f"#,
        r#"cd "$M"; getfattr -n trusted.overlay.opaque d; getfattr -n trusted.overlay.overlay.deep f"#,
        r#"cd "$M"; getfattr -n trusted.overlay.origin f"#,
        r#"cd "$M"; getfattr -n trusted.overlay.overlay.overlay.deep f"#,
        r#"cd "$M"; setfattr -n trusted.overlay.whiteout -v y f; stat -c '%F %s' f"#,
        r#"cd "$M"; setfattr -n trusted.overlay.opaque -v y d; ls d"#,
        r#"cd "$M"; setfattr -n trusted.overlay.overlay.z -v 3 f; getfattr -d -m - f"#,
        r#"cd "$M"; setfattr -x trusted.overlay.metacopy f; getfattr -d -m - f"#,
        r#"cd "$M"; setfattr -x trusted.overlay.metacopy f"#,
        r#"cd "$M"; setfattr -n trusted.overlay. -v 1 f"#,
        r#"cd "$M"; getfattr -n trusted.overlay. f"#,
        r#"cd "$M"; touch new; setfattr -n trusted.overlay.redirect -v /f new; cat new; getfattr -d -m - new"#,
    ]);
    let [k, l] = [0, 1].map(|i| escaped_in(&p.sides[i].p("upper")));
    assert_eq!(
        k, l,
        "the uppers' escaped xattrs: kernel (left), layerfs (right)"
    );
    assert!(k.contains("trusted.overlay.overlay.whiteout"), "{k}");
}
