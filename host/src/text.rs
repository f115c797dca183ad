//! Rules for untrusted text (team files, guest output) shown to a person,
//! shared by every place that shows it: which characters could act on a
//! terminal or hide in plain sight instead of being read.

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

#[cfg(test)]
mod tests {
    use super::acts_on_terminal;

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
}
