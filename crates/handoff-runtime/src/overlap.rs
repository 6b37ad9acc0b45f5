//! Refusing a publish whose source and root overlap.
//!
//! A source equal to the root, or inside it, would be copied into a staging
//! folder that is itself under the source (1,651 fsyncs of the root's own
//! tree were seen); a root inside the source would copy the staging copy
//! into itself. Paths alone cannot tell: a bind mount shows one folder
//! under two names. A folder's identity is its device and
//! inode, so the check walks up each path comparing those.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How one folder stands to the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// It is the root.
    Same,
    /// It is inside the root.
    Inside,
    /// The root is inside it.
    Contains,
}

/// How `other` overlaps `root`, or `None` when neither is the other or
/// inside it. Both must be existing directories.
pub(crate) fn relation(root: &Path, other: &Path) -> io::Result<Option<Overlap>> {
    let root_id = id(root)?;
    let other_id = id(other)?;
    Ok(if root_id == other_id {
        Some(Overlap::Same)
    } else if ancestors(other)?.contains(&root_id) {
        Some(Overlap::Inside)
    } else if ancestors(root)?.contains(&other_id) {
        Some(Overlap::Contains)
    } else {
        None
    })
}

/// How `source` and `root` overlap, as a sentence, or `None` when neither
/// is the other or inside it. Both must be existing directories.
pub(crate) fn describe(root: &Path, source: &Path) -> io::Result<Option<String>> {
    Ok(relation(root, source)?.map(|found| match found {
        Overlap::Same => "is the root itself: publish copies a payload from outside the root \
             (to commit a step written in place, use seal)"
            .to_string(),
        Overlap::Inside => format!(
            "is inside the root {}: publish copies a payload from outside the root \
             (to commit a step written in place, use seal)",
            root.display()
        ),
        Overlap::Contains => format!(
            "contains the root {}: publishing it would copy the root, and the \
             copy being made, into the new step",
            root.display()
        ),
    }))
}

/// How a fetch's local root `to` overlaps the shared `root`, as a
/// sentence, or `None`. A `to` that does not exist yet is judged by the
/// nearest folder above it that does: inside the root, it would be too.
pub(crate) fn describe_local(root: &Path, to: &Path) -> io::Result<Option<String>> {
    let existing = to
        .ancestors()
        .find(|dir| dir.is_dir())
        .unwrap_or(Path::new("/"));
    let found = match relation(root, existing)? {
        // A folder still to be made below it: inside whatever it is inside,
        // and it contains nothing yet.
        Some(Overlap::Same | Overlap::Inside) if existing != to => Some(Overlap::Inside),
        Some(Overlap::Contains) if existing != to => None,
        found => found,
    };
    let why = "a local root is a root of its own, on the reader's disk";
    Ok(found.map(|found| match found {
        Overlap::Same => format!("is the shared root itself: {why}"),
        Overlap::Inside => format!("is inside the shared root {}: {why}", root.display()),
        Overlap::Contains => format!(
            "contains the shared root {}: {why}, and its gc and fsck would see the shared \
             root's steps as strays",
            root.display()
        ),
    }))
}

fn id(path: &Path) -> io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// The identities of the folders above `dir`, up to `/`, found through
/// `..` so that a folder reached by two names is still recognised.
fn ancestors(dir: &Path) -> io::Result<HashSet<(u64, u64)>> {
    let mut seen = HashSet::new();
    let mut current = dir.to_path_buf();
    loop {
        current.push("..");
        let parent = id(&current)?;
        // `/..` is `/` itself.
        if !seen.insert(parent) {
            return Ok(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separate_folders_do_not_overlap() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("root")).unwrap();
        std::fs::create_dir_all(tmp.path().join("src")).unwrap();
        let found = describe(&tmp.path().join("root"), &tmp.path().join("src")).unwrap();
        assert_eq!(found, None);
    }

    #[test]
    fn source_equal_to_inside_or_containing_the_root_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let same = describe(&root, &root).unwrap().unwrap();
        assert!(same.contains("is the root itself"), "{same}");
        let inside = describe(&root, &root.join("a/b")).unwrap().unwrap();
        assert!(inside.contains("is inside the root"), "{inside}");
        let outer = describe(&root.join("a"), tmp.path()).unwrap().unwrap();
        assert!(outer.contains("contains the root"), "{outer}");
    }

    #[test]
    fn a_local_root_equal_to_inside_or_containing_the_shared_root_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(tmp.path().join("local")).unwrap();
        let same = describe_local(&root, &root).unwrap().unwrap();
        assert!(same.contains("is the shared root itself"), "{same}");
        // Not there yet, but it would be inside.
        let inside = describe_local(&root, &root.join("a/new/deeper"))
            .unwrap()
            .unwrap();
        assert!(inside.contains("is inside the shared root"), "{inside}");
        let new_in_root = describe_local(&root, &root.join("new")).unwrap().unwrap();
        assert!(new_in_root.contains("is inside"), "{new_in_root}");
        let outer = describe_local(&root, tmp.path()).unwrap().unwrap();
        assert!(outer.contains("contains the shared root"), "{outer}");
        assert_eq!(
            describe_local(&root, &tmp.path().join("local")).unwrap(),
            None
        );
        assert_eq!(
            describe_local(&root, &tmp.path().join("new/x")).unwrap(),
            None
        );
    }

    #[test]
    fn a_bind_mount_of_the_root_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let alias = tmp.path().join("alias");
        std::fs::create_dir_all(root.join("payload")).unwrap();
        std::fs::create_dir(&alias).unwrap();
        let mounted = std::process::Command::new("mount")
            .arg("--bind")
            .args([&root, &alias])
            .output();
        if !mounted.as_ref().is_ok_and(|out| out.status.success()) {
            eprintln!("skipped: cannot bind-mount here (needs root): {mounted:?}");
            return;
        }
        // The alias's path shares nothing with the root's: only the
        // folders' identities tell.
        let found = describe(&root, &alias.join("payload"));
        let _ = std::process::Command::new("umount").arg(&alias).status();
        let found = found.unwrap().unwrap();
        assert!(found.contains("is inside the root"), "{found}");
    }

    #[test]
    fn a_second_name_for_the_root_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("payload")).unwrap();
        let alias = tmp.path().join("alias");
        std::os::unix::fs::symlink(&root, &alias).unwrap();
        let found = describe(&root, &alias.join("payload")).unwrap().unwrap();
        assert!(found.contains("is inside the root"), "{found}");
    }
}
