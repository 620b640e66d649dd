//! Layer stacks as data: a generator (proptest) and a writer for each whiteout form.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        owner: u32,
        xattr: Option<(String, Vec<u8>)>,
        hardlink: bool,
    },
    Dir {
        opaque: bool,
        mode: u32,
        children: BTreeMap<String, Node>,
    },
    Symlink(String),
    Fifo,
    Whiteout,
}

/// A layer's root directory contents.
pub type Layer = BTreeMap<String, Node>;

/// How whiteouts and opaque directories are written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// char device 0:0 and `trusted.overlay.opaque=y`
    Kernel,
    /// empty files with `trusted.overlay.whiteout` in a dir marked `trusted.overlay.opaque=x`
    /// (kernel >= 6.7); opaque dirs as in `Kernel`
    KernelXattr,
    /// `.wh.NAME` and `.wh..wh..opq`
    Oci,
}

/// Names drawn from a small pool so layers collide often; includes a long and a unicode
/// name. The long one is 251 bytes so its OCI whiteout `.wh.NAME` still fits in NAME_MAX.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("dir".to_string()),
        Just("ünïcødé ✓".to_string()),
        Just("x".repeat(251)),
        Just(".hidden".to_string()),
    ]
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        4 => (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::sample::select(vec![0o644u32, 0o755, 0o600, 0o4755, 0o444]),
            prop::sample::select(vec![0u32, 1000]),
            prop::option::weighted(0.3, (prop::sample::select(vec!["user.a".to_string(), "trusted.t".to_string()]), prop::collection::vec(any::<u8>(), 0..8))),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(data, mode, owner, xattr, hardlink)| Node::File { data, mode, owner, xattr, hardlink }),
        1 => prop::sample::select(vec!["a", "../../etc/passwd", "/etc", "dir/a", "nowhere"])
            .prop_map(|t| Node::Symlink(t.to_string())),
        1 => Just(Node::Fifo),
        3 => Just(Node::Whiteout),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        (
            prop::bool::weighted(0.2),
            prop::sample::select(vec![0o755u32, 0o700, 0o1777]),
            prop::collection::btree_map(name(), inner, 0..5),
        )
            .prop_map(|(opaque, mode, children)| Node::Dir {
                opaque,
                mode,
                children,
            })
    })
}

/// A stack of 1..=4 layers, top first.
pub fn stack() -> impl Strategy<Value = Vec<Layer>> {
    prop::collection::vec(prop::collection::btree_map(name(), node(), 0..6), 1..=4)
}

/// A stack deep enough (17..=24 layers) that directories are read in parallel.
pub fn deep_stack() -> impl Strategy<Value = Vec<Layer>> {
    prop::collection::vec(prop::collection::btree_map(name(), node(), 0..4), 17..=24)
}

/// Sets xattr `name` on `path` itself (not a symlink's target); panics naming both on failure.
pub fn setxattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated; value pointer/len describe a live slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// mknod of `path`; panics naming it on failure.
pub fn mknod(path: &Path, mode: u32, dev: u64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `p` is NUL-terminated.
    let r = unsafe { libc::mknod(p.as_ptr(), mode, dev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn chown(path: &Path, owner: u32) {
    std::os::unix::fs::lchown(path, Some(owner), Some(owner)).unwrap();
}

fn write_dir(dir: &Path, children: &BTreeMap<String, Node>, form: Form, dir_opaque: bool) {
    let mut xattr_whiteouts = false;
    for (name, node) in children {
        let p = dir.join(name);
        match node {
            Node::File {
                data,
                mode,
                owner,
                xattr,
                hardlink,
            } => {
                std::fs::write(&p, data).unwrap();
                chown(&p, *owner);
                // chown clears setuid: set the mode last.
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                    .unwrap();
                if let Some((n, v)) = xattr {
                    setxattr(&p, n, v);
                }
                if *hardlink {
                    std::fs::hard_link(&p, dir.join(format!("{name}.lnk"))).unwrap();
                }
            }
            Node::Dir {
                opaque,
                mode,
                children,
            } => {
                std::fs::create_dir(&p).unwrap();
                write_dir(&p, children, form, *opaque);
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                    .unwrap();
                if *opaque {
                    match form {
                        Form::Kernel | Form::KernelXattr => {
                            setxattr(&p, "trusted.overlay.opaque", b"y")
                        }
                        Form::Oci => std::fs::write(p.join(".wh..wh..opq"), b"").unwrap(),
                    }
                }
            }
            Node::Symlink(t) => std::os::unix::fs::symlink(t, &p).unwrap(),
            Node::Fifo => mknod(&p, libc::S_IFIFO | 0o644, 0),
            Node::Whiteout => match form {
                Form::Kernel => mknod(&p, libc::S_IFCHR, 0),
                // In an opaque ("y") directory only the device form is honoured.
                Form::KernelXattr if dir_opaque => mknod(&p, libc::S_IFCHR, 0),
                Form::KernelXattr => {
                    std::fs::write(&p, b"").unwrap();
                    setxattr(&p, "trusted.overlay.whiteout", b"");
                    xattr_whiteouts = true;
                }
                Form::Oci => std::fs::write(dir.join(format!(".wh.{name}")), b"").unwrap(),
            },
        }
    }
    if xattr_whiteouts {
        // The kernel honours xattr whiteouts in a directory marked "x".
        setxattr(dir, "trusted.overlay.opaque", b"x");
    }
}

/// Writes the stack under `base/NAME-i` in `form`; returns the layer dirs, top first.
pub fn write_stack(base: &Path, stack: &[Layer], form: Form) -> Vec<PathBuf> {
    stack
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let d = base.join(format!("{form:?}-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            write_dir(&d, layer, form, false);
            // Root xattrs: the merged root shows the top layer root's.
            setxattr(&d, "user.layer", i.to_string().as_bytes());
            d
        })
        .collect()
}

/// The stack without hard links inside layers (see docs/SEMANTICS.md: after a remount, a
/// hard link made through the mount to the copy of a lower hard link shows the origin's
/// number, where the kernel shows the copy's).
pub fn without_hardlinks(stack: &[Layer]) -> Vec<Layer> {
    fn strip(l: &BTreeMap<String, Node>) -> BTreeMap<String, Node> {
        l.iter()
            .map(|(k, n)| {
                let n = match n {
                    Node::File {
                        data,
                        mode,
                        owner,
                        xattr,
                        ..
                    } => Node::File {
                        data: data.clone(),
                        mode: *mode,
                        owner: *owner,
                        xattr: xattr.clone(),
                        hardlink: false,
                    },
                    Node::Dir {
                        opaque,
                        mode,
                        children,
                    } => Node::Dir {
                        opaque: *opaque,
                        mode: *mode,
                        children: strip(children),
                    },
                    other => other.clone(),
                };
                (k.clone(), n)
            })
            .collect()
    }
    stack.iter().map(strip).collect()
}
