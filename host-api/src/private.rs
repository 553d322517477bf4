//! Directories and files only netshim's own user may touch. The state (its
//! lock included) and the compiled-guest cache are trusted on read: any
//! other user able to write them could hang every operation (take the
//! lock), rewrite the node's records, or hand the runtime machine code.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Modes netshim creates: nobody else may enter, read or write.
pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;
/// Group and other permission bits.
const OTHERS: u32 = 0o077;
/// Group and other write bits: someone else may have written here.
const OTHERS_WRITE: u32 = 0o022;

#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is owned by uid {owner}, not by netshim's user (uid {me}); chown it to uid {me} or use another directory")]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("{path} has mode {mode:04o}: other users could have written to it; remove it or make it {want:04o} after checking its contents")]
    Writable { path: PathBuf, mode: u32, want: u32 },
    #[error("{path} is not a {what} (a symbolic link or another kind of file is refused)")]
    Kind { path: PathBuf, what: &'static str },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateError + '_ {
    move |source| PrivateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Check an opened file or directory: ours, and not writable by others.
/// Read bits for others are taken away (directories and files made by
/// earlier versions had the default mode); write bits are refused, since
/// what was written through them cannot be trusted.
fn check_open(f: &File, path: &Path, want: u32) -> Result<(), PrivateError> {
    let meta = f.metadata().map_err(io(path))?;
    if meta.uid() != me() {
        return Err(PrivateError::NotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me: me(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & OTHERS_WRITE != 0 {
        return Err(PrivateError::Writable {
            path: path.to_path_buf(),
            mode,
            want,
        });
    }
    if mode & OTHERS != 0 {
        f.set_permissions(fs::Permissions::from_mode(want))
            .map_err(io(path))?;
    }
    Ok(())
}

/// Create `path` (and missing parents) as a private directory, or adopt an
/// existing one that is ours and writable only by us.
pub fn dir(path: &Path) -> Result<(), PrivateError> {
    match DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path)(e)),
    }
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => PrivateError::Kind {
                path: path.to_path_buf(),
                what: "directory",
            },
            _ => io(path)(e),
        })?;
    check_open(&d, path, DIR_MODE)
}

/// Open a file for reading, refusing it unless it is a regular file of
/// ours that nobody else could have written. `Ok(None)` when it is absent.
pub fn open_file(path: &Path) -> Result<Option<File>, PrivateError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(PrivateError::Kind {
                path: path.to_path_buf(),
                what: "regular file",
            })
        }
        Err(e) => return Err(io(path)(e)),
    };
    if !f.metadata().map_err(io(path))?.is_file() {
        return Err(PrivateError::Kind {
            path: path.to_path_buf(),
            what: "regular file",
        });
    }
    check_open(&f, path, FILE_MODE)?;
    Ok(Some(f))
}

/// Open (creating it private if absent) a file to write, checked like
/// [`open_file`].
pub fn open_writable(path: &Path) -> Result<File, PrivateError> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => PrivateError::Kind {
                path: path.to_path_buf(),
                what: "regular file",
            },
            _ => io(path)(e),
        })?;
    if !f.metadata().map_err(io(path))?.is_file() {
        return Err(PrivateError::Kind {
            path: path.to_path_buf(),
            what: "regular file",
        });
    }
    check_open(&f, path, FILE_MODE)?;
    Ok(f)
}

/// A new private file at `path`, replacing one left by a dead writer.
pub fn create(path: &Path) -> Result<File, PrivateError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("netshim-private-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn directories_and_files_are_made_private() {
        let d = tmp("make");
        dir(&d.join("a/b")).unwrap();
        assert_eq!(mode(&d.join("a/b")), DIR_MODE);
        let f = d.join("a/b/file");
        drop(open_writable(&f).unwrap());
        assert_eq!(mode(&f), FILE_MODE);
        drop(create(&d.join("a/b/new")).unwrap());
        assert_eq!(mode(&d.join("a/b/new")), FILE_MODE);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn readable_by_others_is_tightened_writable_by_others_is_refused() {
        let d = tmp("adopt");
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        dir(&d).unwrap();
        assert_eq!(mode(&d), DIR_MODE);

        let f = d.join("f");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_file(&f).unwrap().is_some());
        assert_eq!(mode(&f), FILE_MODE);

        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        let e = open_file(&f).unwrap_err().to_string();
        assert!(e.contains("mode 0666") && e.contains("other users"), "{e}");

        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let e = dir(&d).unwrap_err().to_string();
        assert!(e.contains("mode 0777"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symbolic_links_are_refused() {
        let d = tmp("links");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("real"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        std::os::unix::fs::symlink(&d, d.join("dirlink")).unwrap();
        assert!(matches!(
            open_file(&d.join("link")),
            Err(PrivateError::Kind { .. })
        ));
        assert!(matches!(
            open_writable(&d.join("link")),
            Err(PrivateError::Kind { .. })
        ));
        assert!(matches!(
            dir(&d.join("dirlink")),
            Err(PrivateError::Kind { .. })
        ));
        assert!(open_file(&d.join("absent")).unwrap().is_none());
        fs::remove_dir_all(&d).unwrap();
    }
}
