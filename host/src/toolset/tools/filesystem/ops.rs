//! Each filesystem tool: its arguments checked, its work done through the
//! granted directory's capability, its answer or error as text.

use super::paths::{self, Root, Target, resolve};
use super::walk;
use super::{MAX_ENTRIES, MAX_READ_BYTES};
use crate::toolset::tools::args::Args;
use serde_json::{Value, json};
use std::io::Read;

#[derive(Debug, Clone, Copy)]
pub(super) enum Tool {
    Read,
    ReadMany,
    Edit,
    Write,
    Tree,
    List,
    Search,
    CreateDirectory,
    RemoveDirectory,
}

/// Files one `read_multiple_files` call reads.
const MAX_FILES_PER_READ: usize = 50;

impl Tool {
    pub fn named(name: &str) -> Option<Tool> {
        Some(match name {
            super::READ_FILE => Tool::Read,
            super::READ_MULTIPLE_FILES => Tool::ReadMany,
            super::EDIT_FILE => Tool::Edit,
            super::WRITE_FILE => Tool::Write,
            super::DIRECTORY_TREE => Tool::Tree,
            super::LIST_DIRECTORY => Tool::List,
            super::SEARCH_FILES_CONTENT => Tool::Search,
            super::CREATE_DIRECTORY => Tool::CreateDirectory,
            super::REMOVE_DIRECTORY => Tool::RemoveDirectory,
            _ => return None,
        })
    }

    pub fn run(self, roots: &[Root], args: &Args) -> Result<String, String> {
        if roots.is_empty() {
            return Err(paths::NO_GRANTS.to_string());
        }
        match self {
            Tool::Read => {
                args.only(&["path"])?;
                read_text(&resolve(roots, &required(args, "path")?)?)
            }
            Tool::ReadMany => read_many(roots, args),
            Tool::Edit => edit(roots, args),
            Tool::Write => {
                args.only(&["path", "content"])?;
                let target = resolve(roots, &required(args, "path")?)?;
                let content = required(args, "content")?;
                write_text(&target, &content)?;
                Ok(format!("wrote {} bytes to {}", content.len(), target.shown))
            }
            Tool::Tree => {
                args.only(&["path"])?;
                walk::tree(&resolve(roots, &optional_path(args)?)?)
            }
            Tool::List => {
                args.only(&["path"])?;
                list(&resolve(roots, &optional_path(args)?)?)
            }
            Tool::Search => {
                args.only(&["path", "query", "is_regex", "excludePatterns"])?;
                let target = resolve(roots, &optional_path(args)?)?;
                let query = required(args, "query")?;
                let is_regex = flag(args, "is_regex")?;
                let excluded = args.strings("excludePatterns", "pattern")?;
                walk::search(&target, &query, is_regex, &excluded)
            }
            Tool::CreateDirectory => each_path(roots, args, "created", |target| {
                target.writable()?;
                (target.dir.create_dir_all(&target.rel)).map_err(|error| target.explain(error))
            }),
            Tool::RemoveDirectory => each_path(roots, args, "removed", |target| {
                target.writable()?;
                if target.is_root() {
                    return Err(format!(
                        "{} is a granted directory itself and cannot be removed",
                        target.shown
                    ));
                }
                (target.dir.remove_dir(&target.rel)).map_err(|error| target.explain(error))
            }),
        }
    }
}

fn required(args: &Args, name: &str) -> Result<String, String> {
    args.string(name)?
        .ok_or_else(|| format!("{name} is required"))
}

/// `path`, where a missing one means the working directory.
fn optional_path(args: &Args) -> Result<String, String> {
    Ok(args.string("path")?.unwrap_or_default())
}

fn flag(args: &Args, name: &str) -> Result<bool, String> {
    match args.raw(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(value)) => Ok(*value),
        Some(_) => Err(format!("{name} must be true or false")),
    }
}

/// A file's text; a directory, a file over [`MAX_READ_BYTES`] or one that
/// is not UTF-8 is refused with what to do instead.
pub(super) fn read_text(target: &Target) -> Result<String, String> {
    let metadata = (target.dir.metadata(&target.rel)).map_err(|error| target.explain(error))?;
    if metadata.is_dir() {
        return Err(format!(
            "{} is a directory; list it with list_directory",
            target.shown
        ));
    }
    let file =
        paths::open_regular(target.dir, &target.rel).map_err(|error| target.explain(error))?;
    let mut bytes = Vec::new();
    (file.take(MAX_READ_BYTES + 1))
        .read_to_end(&mut bytes)
        .map_err(|error| target.explain(error))?;
    if bytes.len() as u64 > MAX_READ_BYTES {
        return Err(format!(
            "{} is larger than the {} KiB a read returns; search it with \
             search_files_content instead",
            target.shown,
            MAX_READ_BYTES >> 10
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        format!(
            "{} is not UTF-8 text ({} bytes); the filesystem tools read text files only",
            target.shown,
            error.as_bytes().len()
        )
    })
}

fn read_many(roots: &[Root], args: &Args) -> Result<String, String> {
    args.only(&["paths", "json"])?;
    let paths = args.strings("paths", "path")?;
    if paths.is_empty() {
        return Err("paths is required: the files to read".to_string());
    }
    if paths.len() > MAX_FILES_PER_READ {
        return Err(format!(
            "{} paths given; read at most {MAX_FILES_PER_READ} at a time",
            paths.len()
        ));
    }
    let as_json = flag(args, "json")?;
    let mut total = 0u64;
    let mut read = Vec::new();
    for path in paths {
        let text = if total > MAX_READ_BYTES {
            Err(format!(
                "not read: the files before it filled the {} KiB one call returns",
                MAX_READ_BYTES >> 10
            ))
        } else {
            resolve(roots, &path).and_then(|target| read_text(&target))
        };
        let text = text.unwrap_or_else(|error| format!("error: {error}"));
        total += text.len() as u64;
        read.push((path, text));
    }
    if as_json {
        let items: Vec<Value> = (read.into_iter())
            .map(|(path, content)| json!({"path": path, "content": content}))
            .collect();
        return Ok(Value::Array(items).to_string());
    }
    Ok(read
        .into_iter()
        .map(|(path, text)| format!("=== {path} ===\n{text}\n"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn edit(roots: &[Root], args: &Args) -> Result<String, String> {
    args.only(&["path", "edits"])?;
    let target = resolve(roots, &required(args, "path")?)?;
    target.writable()?;
    let edits = match args.raw("edits") {
        Some(Value::Array(edits)) if !edits.is_empty() => edits,
        _ => return Err("edits must be a non-empty array of {oldText, newText}".to_string()),
    };
    let mut text = read_text(&target)?;
    for (index, edit) in edits.iter().enumerate() {
        let number = index + 1;
        let field = |name: &str| {
            edit.get(name).and_then(Value::as_str).ok_or_else(|| {
                format!(
                    "edit {number}: {name} must be a string (each edit is {{oldText, newText}})"
                )
            })
        };
        let (old, new) = (field("oldText")?, field("newText")?);
        if old.is_empty() {
            return Err(format!(
                "edit {number}: oldText is empty; nothing was changed"
            ));
        }
        if !text.contains(old) {
            return Err(format!(
                "edit {number}: the old text is not in {}; nothing was changed (read the file \
                 again and copy the text exactly)",
                target.shown
            ));
        }
        text = text.replacen(old, new, 1);
    }
    write_text(&target, &text)?;
    Ok(format!(
        "edited {}: {} edit(s) applied",
        target.shown,
        edits.len()
    ))
}

fn write_text(target: &Target, text: &str) -> Result<(), String> {
    target.writable()?;
    if target.is_root() {
        return Err(format!("{} is a directory", target.shown));
    }
    if let Some(parent) = target.rel.parent()
        && !parent.as_os_str().is_empty()
    {
        // Looked at first (following links, within the grant), so that a
        // parent that is a link out of the grant is reported as such.
        match target.dir.metadata(parent) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                (target.dir.create_dir_all(parent)).map_err(|error| target.explain(error))?
            }
            Err(error) => return Err(target.explain(error)),
        }
    }
    // Opened without blocking and checked before anything is written: a
    // FIFO or device planted in the grant is refused, not waited on.
    let write = || {
        use cap_std::fs::OpenOptionsExt;
        let mut file = target.dir.open_with(
            &target.rel,
            cap_std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .custom_flags(libc::O_NONBLOCK),
        )?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        file.set_len(0)?;
        std::io::Write::write_all(&mut file, text.as_bytes())
    };
    write().map_err(|error| target.explain(error))
}

fn list(target: &Target) -> Result<String, String> {
    let mut entries: Vec<(bool, String)> = Vec::new();
    let listing = target
        .dir
        .read_dir(&target.rel)
        .map_err(|error| target.explain(error))?;
    let mut cut = false;
    for entry in listing {
        let entry = entry.map_err(|error| target.explain(error))?;
        if entries.len() == MAX_ENTRIES {
            cut = true;
            break;
        }
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        entries.push((is_dir, entry.file_name().to_string_lossy().into_owned()));
    }
    entries.sort_by(|a, b| a.1.cmp(&b.1));
    let mut out: String = entries
        .into_iter()
        .map(|(is_dir, name)| match is_dir {
            true => format!("DIR  {name}\n"),
            false => format!("FILE {name}\n"),
        })
        .collect();
    if out.is_empty() {
        out = format!("{} is empty\n", target.shown);
    }
    if cut {
        out.push_str(&format!("… listing cut at {MAX_ENTRIES} entries\n"));
    }
    Ok(out)
}

/// Runs `each` on every path of `paths`, all of them, and says which
/// succeeded and why the others did not.
fn each_path(
    roots: &[Root],
    args: &Args,
    done: &str,
    each: impl Fn(&Target) -> Result<(), String>,
) -> Result<String, String> {
    args.only(&["paths"])?;
    let paths = args.strings("paths", "path")?;
    if paths.is_empty() {
        return Err("paths is required: at least one directory".to_string());
    }
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    for path in &paths {
        match resolve(roots, path).and_then(|target| each(&target)) {
            Ok(()) => succeeded.push(path.as_str()),
            Err(error) => failed.push(error),
        }
    }
    let mut out = String::new();
    if !succeeded.is_empty() {
        out.push_str(&format!("{done}: {}", succeeded.join(", ")));
    }
    match failed.is_empty() {
        true => Ok(out),
        false if succeeded.is_empty() => Err(failed.join("\n")),
        false => Err(format!("{out}\nfailed:\n{}", failed.join("\n"))),
    }
}
