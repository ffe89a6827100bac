//! Unicode folding for search, the same for every store: the text a store
//! indexes and the words of every `q` go through [`fold`] here, in Rust,
//! before either database sees them, so both index and look up the same
//! words.
//!
//! Why in Rust: PostgreSQL (`unaccent` + `lower`) and SQLite (the
//! `unicode61` tokenizer) each fold a different subset of Unicode
//! (ligatures, `ß`, fullwidth forms, Roman numerals, circled digits, Greek
//! accents), so the same `q` found different rows on each; neither
//! database can run the other's folding, and SQLite can only call a Rust
//! function through unsafe FFI, which this workspace forbids.
//!
//! The folding, in order:
//! 1. compatibility decomposition (NFKD, the "K" of NFKC): `ﬁ` → `fi`,
//!    `Ａ` → `A`, `Ⅻ` → `XII`, `①` → `1`, `x²` → `x2`;
//! 2. lower case, then NFKD again (lower case may yield a composed letter:
//!    `İ` → `i̇`);
//! 3. combining marks removed: accents in every script (`é` → `e`,
//!    `ά` → `α`, `ё` → `е`);
//! 4. the two case folds lower case leaves out: `ß` → `ss`, final `ς` → `σ`;
//! 5. every character that is not a letter or a digit is a word break, and
//!    the words are joined by one space, recomposed (NFC, for Hangul).
//!
//! A folded text is thus only words and single spaces: the stores'
//! tokenizers (PostgreSQL's `simple` parser, FTS5's `unicode61`) find the
//! same words in it, and punctuation inside a word (`a-b`, `don't`) means
//! the same everywhere: a phrase of its parts.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// `text` folded (see the module docs): its words, lower case, without
/// accents or compatibility forms, separated by one space.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_break = false;
    let mut push = |c: char, out: &mut String| {
        if !c.is_alphanumeric() {
            word_break = true;
            return;
        }
        if word_break && !out.is_empty() {
            out.push(' ');
        }
        word_break = false;
        out.push(c);
    };
    for c in text
        .nfkd()
        .flat_map(char::to_lowercase)
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
    {
        match c {
            'ß' => {
                push('s', &mut out);
                push('s', &mut out);
            }
            'ς' => push('σ', &mut out),
            c => push(c, &mut out),
        }
    }
    if out.is_ascii() {
        out
    } else {
        out.nfc().collect()
    }
}

/// The words of a folded `text` (see [`fold`]).
pub fn fold_words(text: &str) -> Vec<String> {
    fold(text)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_compatibility_forms_case_and_accents() {
        for (text, folded) in [
            ("Hello, World!", "hello world"),
            ("Café NAÏVE", "cafe naive"),
            ("ﬁne ﬂow ﬀ", "fine flow ff"),
            ("Straße STRASSE", "strasse strasse"),
            ("ＡＢＣ１２３", "abc123"),
            ("Ⅻ ⅻ", "xii xii"),
            ("① ⑩", "1 10"),
            ("x²", "x2"),
            ("ΣΊΣΥΦΟΣ Ελλάδα", "σισυφοσ ελλαδα"),
            ("İstanbul", "istanbul"),
            ("ёлка", "елка"),
            ("a-b don't", "a b don t"),
            ("  ¿¡  ", ""),
            ("한국어", "한국어"),
            ("今日は", "今日は"),
            ("a\0b", "a b"),
        ] {
            assert_eq!(fold(text), folded, "{text}");
        }
        assert_eq!(fold_words("(alpha) bravo!"), ["alpha", "bravo"]);
        assert!(fold_words("'").is_empty());
    }

    #[test]
    fn folding_is_idempotent() {
        for text in ["Straße ﬁ Ⅻ ① ΣΊΣΥΦΟΣ", "İİ ǅ ᾈ", "한국어 ｶﾀｶﾅ"]
        {
            let once = fold(text);
            assert_eq!(fold(&once), once, "{text}");
        }
    }
}
