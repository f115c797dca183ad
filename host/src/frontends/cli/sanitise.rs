//! Text from a team file or a guest, made safe to print: nothing in it can
//! move the cursor, erase or recolour earlier lines, reorder what follows
//! (bidirectional overrides), or hide in plain sight (zero-width characters).

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

/// Shown in place of every character that could act on the terminal.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Whether line breaks survive: `Lines` for multi-line text (output, a
/// description, an error's backtrace), `OneLine` for names and paths.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Lines,
    OneLine,
}

/// `text` with every control character (other than tab, and newline when
/// `keep` is [`Keep::Lines`]), bidirectional override or isolate, and
/// zero-width character replaced by `�`. The one function every printed
/// piece of team-file or guest text goes through.
pub fn printable(text: &str, keep: Keep) -> Cow<'_, str> {
    let unsafe_char = |c: char| match c {
        '\n' => keep == Keep::OneLine,
        c => crate::text::acts_on_terminal(c),
    };
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    text.chars()
        .map(|c| if unsafe_char(c) { REPLACEMENT } else { c })
        .collect::<String>()
        .into()
}

/// A path as it should be shown: `dir/./agent.wasm` as `dir/agent.wasm`,
/// and made printable.
pub fn shown_path(path: &Path) -> String {
    let tidy: PathBuf = path
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    let tidy = if tidy.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        tidy
    };
    printable(&tidy.to_string_lossy(), Keep::OneLine).into_owned()
}

/// Multi-line `text` whose lines after the first are indented by `indent`,
/// so none of them can pass for a line of its own.
pub fn indented(text: &str, indent: &str) -> String {
    printable(text, Keep::Lines).replace('\n', &format!("\n{indent}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutralises_escapes_bidi_and_zero_width_characters() {
        let text = "a\u{1b}[2Jb\u{202E}c\u{2066}d\u{200B}e\u{FEFF}f\rg\nh\ti";
        assert_eq!(printable(text, Keep::Lines), "a�[2Jb�c�d�e�f�g\nh\ti");
        assert_eq!(printable(text, Keep::OneLine), "a�[2Jb�c�d�e�f�g�h\ti");
        assert!(matches!(printable("plain", Keep::Lines), Cow::Borrowed(_)));
    }

    #[test]
    fn paths_lose_current_dir_components() {
        assert_eq!(shown_path(Path::new("dir/./nope.wasm")), "dir/nope.wasm");
        assert_eq!(shown_path(Path::new("./a/./b")), "a/b");
        assert_eq!(shown_path(Path::new(".")), ".");
    }
}
