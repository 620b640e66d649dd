//! The requests the adapter answers, one line each in `opcodes!`: the variant of [`Op`]
//! and the name the request is logged and counted under. The table makes the enum, its
//! names and the order of the counts; each adapter method enters its request with
//! `Adapter::enter(Op::X)` (counted) and runs its core call under that name
//! (`reply::call`). Adding a request: a line here and its method in `lib.rs`.
//!
//! The vendored fuser names requests too (its `Operation` and its debug lines, in upper
//! case): those are the wire's and stay upstream's.

macro_rules! opcodes {
    ($($op:ident $name:literal,)*) => {
        /// A request the adapter answers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op {
            $($op,)*
        }

        impl Op {
            /// Every request, in the table's order (the order of the counts).
            pub const ALL: &'static [Op] = &[$(Op::$op,)*];

            /// The name it is logged and counted under: the kernel's opcode without
            /// `FUSE_`, in lower case.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Op::$op => $name,)*
                }
            }
        }
    };
}

opcodes! {
    Lookup "lookup",
    Forget "forget",
    Getattr "getattr",
    Readlink "readlink",
    Open "open",
    Read "read",
    Flush "flush",
    Release "release",
    Lseek "lseek",
    Opendir "opendir",
    Readdir "readdir",
    Readdirplus "readdirplus",
    Releasedir "releasedir",
    Statfs "statfs",
    Getxattr "getxattr",
    Listxattr "listxattr",
    Access "access",
    Setattr "setattr",
    Mknod "mknod",
    Mkdir "mkdir",
    Unlink "unlink",
    Rmdir "rmdir",
    Symlink "symlink",
    Rename "rename",
    Link "link",
    Setxattr "setxattr",
    Removexattr "removexattr",
    Create "create",
    Write "write",
    Fsync "fsync",
    Fsyncdir "fsyncdir",
    Fallocate "fallocate",
    Ioctl "ioctl",
    CopyFileRange "copy_file_range",
    Tmpfile "tmpfile",
    Poll "poll",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_orders_and_names_each_request_once() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
            let name = op.name();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            // The name is the variant's, in snake case.
            let snake: String = format!("{op:?}")
                .chars()
                .enumerate()
                .flat_map(|(i, c)| match (i, c.is_ascii_uppercase()) {
                    (0, _) | (_, false) => vec![c.to_ascii_lowercase()],
                    _ => vec!['_', c.to_ascii_lowercase()],
                })
                .collect();
            assert_eq!(name, snake);
        }
        assert_eq!(Op::Lookup.name(), "lookup");
        assert_eq!(Op::CopyFileRange.name(), "copy_file_range");
    }

    /// Each request of the table is entered by exactly one adapter method.
    #[test]
    fn the_adapter_enters_each_request_once() {
        let adapter = include_str!("lib.rs");
        for op in Op::ALL {
            let n = adapter.matches(&format!("self.enter(Op::{op:?})")).count();
            assert_eq!(n, 1, "{op:?} entered {n} times in lib.rs");
        }
        assert_eq!(adapter.matches("self.enter(").count(), Op::ALL.len());
    }
}
