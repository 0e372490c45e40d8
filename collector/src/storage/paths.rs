//! Configured directories made absolute once, at start-up.
//!
//! Everything below the data directory is handed to DataFusion's object store, which only knows
//! absolute paths: a relative `./vigil-data` became the object `%2E/vigil-data/…` and every
//! query over a flushed file failed. Resolving here, once, keeps relative paths a config concern.

use std::path::{Component, Path, PathBuf};

/// Why a configured directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path:?}: {reason}")]
pub struct PathError {
    pub what: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

/// `path` as an absolute, canonical directory (created if missing): `~` and `~/…` expand to
/// `$HOME`, a relative path is taken from the working directory, symlinks are followed.
/// `~user/…` is refused, since only a shell knows other users' homes reliably.
pub fn resolve_dir(path: &Path, what: &'static str) -> Result<PathBuf, PathError> {
    let fail = |reason: String| PathError {
        what,
        path: path.to_path_buf(),
        reason,
    };
    if path.as_os_str().is_empty() {
        return Err(fail("the path is empty".into()));
    }
    let expanded = expand_home(path, std::env::var_os("HOME").map(PathBuf::from))
        .map_err(|reason| fail(reason.into()))?;
    let absolute = if expanded.is_absolute() {
        expanded
    } else {
        std::env::current_dir()
            .map_err(|e| {
                fail(format!(
                    "the working directory is unknown ({e}); give an absolute path"
                ))
            })?
            .join(expanded)
    };
    std::fs::create_dir_all(&absolute)
        .map_err(|e| fail(format!("cannot create {}: {e}", absolute.display())))?;
    let canonical = std::fs::canonicalize(&absolute)
        .map_err(|e| fail(format!("cannot resolve {}: {e}", absolute.display())))?;
    if !canonical.is_dir() {
        return Err(fail(format!("{} is not a directory", canonical.display())));
    }
    Ok(canonical)
}

/// Expands a leading `~` the way a shell does for the current user.
fn expand_home(path: &Path, home: Option<PathBuf>) -> Result<PathBuf, &'static str> {
    let mut components = path.components();
    let Some(Component::Normal(first)) = components.next() else {
        return Ok(path.to_path_buf());
    };
    let first = first.to_string_lossy();
    if first == "~" {
        let home = home.ok_or("starts with ~ but $HOME is not set; give the path in full")?;
        return Ok(home.join(components.as_path()));
    }
    if first.starts_with('~') {
        return Err("~user paths are not expanded; give the path in full");
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_is_expanded_and_other_users_are_refused() {
        let home = Some(PathBuf::from("/home/ada"));
        assert_eq!(
            expand_home(Path::new("~/data"), home.clone()).unwrap(),
            PathBuf::from("/home/ada/data")
        );
        assert_eq!(
            expand_home(Path::new("~"), home.clone()).unwrap(),
            PathBuf::from("/home/ada")
        );
        assert!(expand_home(Path::new("~bob/data"), home.clone()).is_err());
        assert!(expand_home(Path::new("~/data"), None).is_err());
        // A tilde that is not the first component is an ordinary name.
        assert_eq!(
            expand_home(Path::new("./~/x"), home.clone()).unwrap(),
            PathBuf::from("./~/x")
        );
        assert_eq!(
            expand_home(Path::new("/abs/x"), home).unwrap(),
            PathBuf::from("/abs/x")
        );
    }

    #[test]
    fn relative_dotted_and_symlinked_paths_become_one_absolute_directory() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real dir ünï");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let canonical_real = std::fs::canonicalize(&real).unwrap();

        assert_eq!(
            resolve_dir(&link, "data directory").unwrap(),
            canonical_real
        );
        let dotted = root.path().join("real dir ünï/../real dir ünï/./");
        assert_eq!(
            resolve_dir(&dotted, "data directory").unwrap(),
            canonical_real
        );
        let created = resolve_dir(&root.path().join("new/nested"), "data directory").unwrap();
        assert!(created.is_absolute() && created.is_dir());

        let file = root.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let error = resolve_dir(&file, "data directory").unwrap_err();
        assert!(error.to_string().contains("data directory"), "{error}");
        assert!(resolve_dir(Path::new(""), "data directory").is_err());
    }
}
