//! The recursive tools, `directory_tree` and `search_files_content`:
//! walks that never follow a symbolic link and stop after
//! [`MAX_ENTRIES`] entries.

use super::paths::{Target, guest_path};
use super::{MAX_ENTRIES, MAX_READ_BYTES};
use cap_std::fs::Dir;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Matching lines one search reports.
const MAX_MATCHES: usize = 500;
/// Characters of a matching line shown.
const MAX_LINE_CHARS: usize = 300;

pub(super) fn tree(target: &Target) -> Result<String, String> {
    let dir = open_dir(target)?;
    let mut budget = MAX_ENTRIES;
    let name = match target.rel.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => guest_path(target.root, &target.rel),
    };
    let mut root = json!({"name": name, "type": "directory"});
    root["children"] = Value::Array(children(&dir, &mut budget));
    let mut out = root.to_string();
    if budget == 0 {
        out.push_str(&format!("\n… tree cut at {MAX_ENTRIES} entries"));
    }
    Ok(out)
}

fn children(dir: &Dir, budget: &mut usize) -> Vec<Value> {
    // Read no more of the listing than the budget can use: a directory of
    // millions of entries costs no more than one of a thousand.
    let mut entries: Vec<(String, bool)> = match dir.entries() {
        Ok(entries) => entries
            .take(*budget + 1)
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let kind = entry.file_type().ok()?;
                (!kind.is_symlink()).then(|| {
                    (
                        entry.file_name().to_string_lossy().into_owned(),
                        kind.is_dir(),
                    )
                })
            })
            .collect(),
        Err(_) => return Vec::new(),
    };
    entries.sort();
    let mut nodes = Vec::new();
    for (name, is_dir) in entries {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        if is_dir {
            let inner = match dir.open_dir(&name) {
                Ok(inner) => children(&inner, budget),
                Err(_) => Vec::new(),
            };
            nodes.push(json!({"name": name, "type": "directory", "children": inner}));
        } else {
            nodes.push(json!({"name": name, "type": "file"}));
        }
    }
    nodes
}

fn open_dir(target: &Target) -> Result<Dir, String> {
    target
        .dir
        .open_dir(&target.rel)
        .map_err(|error| target.explain(error))
}

enum Query {
    Text(String),
    Regex(regex::Regex),
}

impl Query {
    fn matches(&self, line: &str) -> bool {
        match self {
            Query::Text(text) => line.contains(text.as_str()),
            Query::Regex(regex) => regex.is_match(line),
        }
    }
}

struct Search<'a> {
    query: Query,
    excluded: &'a [String],
    matches: Vec<String>,
    files_with_matches: usize,
    visited: usize,
    cut: bool,
}

pub(super) fn search(
    target: &Target,
    query: &str,
    is_regex: bool,
    excluded: &[String],
) -> Result<String, String> {
    if query.is_empty() {
        return Err("query is empty; give the text to find".to_string());
    }
    let query = match is_regex {
        true => Query::Regex(
            regex::RegexBuilder::new(query)
                .size_limit(1 << 20)
                .build()
                .map_err(|error| format!("query is not a valid regular expression: {error}"))?,
        ),
        false => Query::Text(query.to_string()),
    };
    let dir = open_dir(target)?;
    let mut search = Search {
        query,
        excluded,
        matches: Vec::new(),
        files_with_matches: 0,
        visited: 0,
        cut: false,
    };
    let base = guest_path(target.root, &target.rel);
    search.walk(&dir, Path::new(""), &base);
    let mut out = match search.matches.is_empty() {
        true => format!("no matches under {}", target.shown),
        false => format!(
            "{} matching line(s) in {} file(s):\n{}",
            search.matches.len(),
            search.files_with_matches,
            search.matches.join("\n")
        ),
    };
    if search.cut {
        out.push_str(&format!(
            "\n… search stopped at {MAX_MATCHES} matches or {MAX_ENTRIES} entries; search a \
             smaller directory"
        ));
    }
    Ok(out)
}

impl Search<'_> {
    fn walk(&mut self, dir: &Dir, rel: &Path, base: &str) {
        let Ok(entries) = dir.entries() else { return };
        let room = (MAX_ENTRIES + 1).saturating_sub(self.visited);
        let mut entries: Vec<_> = entries.take(room).filter_map(Result::ok).collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            if self.cut {
                return;
            }
            self.visited += 1;
            if self.visited > MAX_ENTRIES {
                self.cut = true;
                return;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let path: PathBuf = rel.join(&name);
            if self.is_excluded(&name, &path) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                continue;
            }
            if kind.is_dir() {
                if let Ok(inner) = dir.open_dir(&name) {
                    self.walk(&inner, &path, base);
                }
            } else if kind.is_file() {
                self.search_file(dir, &name, &path, base);
            }
        }
    }

    fn search_file(&mut self, dir: &Dir, name: &str, path: &Path, base: &str) {
        let Ok(file) = super::paths::open_regular(dir, Path::new(name)) else {
            return;
        };
        let mut bytes = Vec::new();
        if file
            .take(MAX_READ_BYTES + 1)
            .read_to_end(&mut bytes)
            .is_err()
            || bytes.len() as u64 > MAX_READ_BYTES
        {
            return;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            return;
        };
        let mut found = false;
        for (number, line) in text.lines().enumerate() {
            if !self.query.matches(line) {
                continue;
            }
            if self.matches.len() == MAX_MATCHES {
                self.cut = true;
                break;
            }
            found = true;
            let shown: String = line.chars().take(MAX_LINE_CHARS).collect();
            self.matches
                .push(format!("{base}/{}:{}: {shown}", path.display(), number + 1));
        }
        if found {
            self.files_with_matches += 1;
        }
    }

    fn is_excluded(&self, name: &str, path: &Path) -> bool {
        let path = path.to_string_lossy();
        (self.excluded.iter()).any(|pattern| glob(pattern, name) || glob(pattern, &path))
    }
}

/// `*` (any run of characters) and `?` (one character) glob matching.
fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_names_and_paths() {
        assert!(glob("*.log", "build.log"));
        assert!(glob("target", "target"));
        assert!(glob("src/*", "src/main.rs"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("*.log", "build.txt"));
        assert!(!glob("target", "targets"));
    }
}
