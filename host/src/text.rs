//! Text helpers shared across the crate: which characters of untrusted text
//! (team files, guest output) could act on a terminal or hide in plain sight
//! instead of being read, and how long text is cut to a size limit.

/// Whether `c` could move the cursor, erase or recolour what is on screen
/// (control characters other than tab and newline), reorder what follows
/// (bidirectional marks, embeddings, overrides and isolates), or be invisible
/// (zero-width spaces and joiners, word joiner and invisible operators,
/// byte-order mark). Tab and newline are left to the caller: whether a line
/// break is allowed depends on what is shown.
pub fn acts_on_terminal(c: char) -> bool {
    match c {
        '\t' | '\n' => false,
        c if c.is_control() => true,
        // Arabic letter mark; LRM/RLM sit in the zero-width range below.
        '\u{061C}' => true,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => true,
        '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' => true,
        _ => false,
    }
}

/// `text` cut to at most `limit` bytes, ending on a character boundary.
pub fn cut(text: &str, limit: usize) -> &str {
    &text[..text.floor_char_boundary(limit)]
}

/// `text` cut to at most `limit` bytes on a character boundary and followed
/// by `note(bytes)`, `bytes` being how long it was, when it does not fit;
/// `text` as it is when it does.
pub fn cut_with_note(mut text: String, limit: usize, note: impl FnOnce(usize) -> String) -> String {
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    text.truncate(text.floor_char_boundary(limit));
    text.push_str(&note(total));
    text
}

#[cfg(test)]
mod tests {
    use super::{acts_on_terminal, cut, cut_with_note};

    #[test]
    fn escapes_bidi_and_invisible_characters_are_caught_and_text_is_not() {
        for c in [
            '\u{1b}', '\r', '\u{7f}', '\u{9b}', '\u{202E}', '\u{2067}', '\u{061C}', '\u{200B}',
            '\u{200F}', '\u{2060}', '\u{FEFF}',
        ] {
            assert!(acts_on_terminal(c), "{:?}", c);
        }
        for c in ['a', 'é', '→', '\t', '\n', ' ', '中'] {
            assert!(!acts_on_terminal(c), "{:?}", c);
        }
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("abc", 2), "ab");
        // `é` is two bytes: a limit inside it keeps the text before it.
        assert_eq!(cut("aéb", 2), "a");
        assert_eq!(cut("aéb", 3), "aé");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn a_note_follows_only_text_that_was_cut() {
        let note = |total: usize| format!(" [cut from {total} bytes]");
        assert_eq!(cut_with_note("abc".to_string(), 3, note), "abc");
        assert_eq!(
            cut_with_note("aéé".to_string(), 4, note),
            "aé [cut from 5 bytes]"
        );
    }
}
