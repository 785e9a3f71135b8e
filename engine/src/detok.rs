//! Incremental detokenisation: turns generated token ids into text deltas
//! that never split a UTF-8 character.
//!
//! This is the prefix/read-offset method of Hugging Face TGI and vLLM. The
//! detokenizer keeps a short window of token ids: `prefix_offset..read_offset`
//! is text already emitted (kept as context, so that decoders which treat
//! the first token of a string specially, such as SentencePiece's leading
//! space, see the same context as a full decode), and `read_offset..` is
//! new. Each step decodes the window with and without the new tokens and
//! emits the difference, unless the text ends in U+FFFD: then the last
//! token is an incomplete UTF-8 sequence and the text waits for the token
//! that completes it.

/// Token-id to text decoding, as a tokenizer provides it.
pub trait Decode {
    /// Decodes `ids` into text; with `skip_special_tokens` special tokens
    /// decode to nothing. Bytes that do not form valid UTF-8 (for example a
    /// multi-byte character cut after its first token) decode to U+FFFD,
    /// the way byte-level BPE decoders decode lossily.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String>;
}

/// Prompt tokens kept as context before the first generated token.
const PROMPT_CONTEXT_TOKENS: usize = 5;

/// Tokens held back waiting for a UTF-8 character to complete before the
/// text is emitted anyway (with U+FFFD): no character needs more than four
/// bytes, so this only triggers on output that is not UTF-8 at all.
const MAX_HELD_TOKENS: usize = 16;

/// Emitted tokens kept before the window is compacted.
const COMPACT_AFTER_TOKENS: usize = 64;

/// The U+FFFD replacement character that lossy decoding produces.
const REPLACEMENT: char = '\u{FFFD}';

/// Incremental detokenizer of one sequence.
#[derive(Clone, Debug)]
pub struct IncrementalDetokenizer {
    /// Token ids from `prefix_offset` on, after compaction.
    ids: Vec<u32>,
    /// Start of the context window in `ids`.
    prefix_offset: usize,
    /// End of the text already emitted, in `ids`.
    read_offset: usize,
    skip_special_tokens: bool,
    /// Every delta returned so far.
    output: String,
}

impl IncrementalDetokenizer {
    /// A detokenizer for the text generated after `prompt_ids`; the last
    /// five prompt tokens are decoding context, so the first generated
    /// token decodes with the leading space a full decode would give it.
    pub fn new(prompt_ids: &[u32], skip_special_tokens: bool) -> Self {
        let start = prompt_ids.len().saturating_sub(PROMPT_CONTEXT_TOKENS);
        let ids = prompt_ids[start..].to_vec();
        Self {
            read_offset: ids.len(),
            ids,
            prefix_offset: 0,
            skip_special_tokens,
            output: String::new(),
        }
    }

    /// Appends a generated token and returns the text it completes: empty
    /// while the text ends inside a UTF-8 character (or the token decodes
    /// to nothing), then everything held back once a later token completes
    /// the character. A delta ends in U+FFFD only after 16 tokens in a row
    /// failed to complete a character (output that is not UTF-8 at all).
    pub fn push<D: Decode + ?Sized>(&mut self, dec: &D, token: u32) -> Result<String, String> {
        self.ids.push(token);
        let window = &self.ids[self.prefix_offset..];
        let prefix_len = self.read_offset - self.prefix_offset;
        let prefix_text = dec.decode(&window[..prefix_len], self.skip_special_tokens)?;
        let new_text = dec.decode(window, self.skip_special_tokens)?;
        if new_text == prefix_text {
            // The new tokens add nothing (a skipped special token): they
            // join the emitted text without changing it.
            self.read_offset = self.ids.len();
            return Ok(String::new());
        }
        let prefix_chars = prefix_text.chars().count();
        let held = self.ids.len() - self.read_offset;
        if new_text.chars().count() <= prefix_chars
            || (new_text.ends_with(REPLACEMENT) && held < MAX_HELD_TOKENS)
        {
            return Ok(String::new());
        }
        Ok(self.advance(&new_text, prefix_chars))
    }

    /// Flushes the text of tokens still held back at the end of the
    /// sequence, with U+FFFD for any character left incomplete.
    pub fn finish<D: Decode + ?Sized>(&mut self, dec: &D) -> Result<String, String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let window = &self.ids[self.prefix_offset..];
        let prefix_len = self.read_offset - self.prefix_offset;
        let prefix_text = dec.decode(&window[..prefix_len], self.skip_special_tokens)?;
        let new_text = dec.decode(window, self.skip_special_tokens)?;
        let prefix_chars = prefix_text.chars().count();
        Ok(self.advance(&new_text, prefix_chars))
    }

    /// Every delta returned by [`push`](Self::push) and
    /// [`finish`](Self::finish) so far, concatenated (before any stop-string
    /// truncation).
    pub fn output_text(&self) -> &str {
        &self.output
    }

    /// Whether tokens are held back waiting for a character to complete.
    pub fn has_pending(&self) -> bool {
        self.read_offset < self.ids.len()
    }

    /// Emits `new_text` past its first `prefix_chars` characters and moves
    /// the window forward.
    fn advance(&mut self, new_text: &str, prefix_chars: usize) -> String {
        let delta: String = new_text.chars().skip(prefix_chars).collect();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        if self.prefix_offset >= COMPACT_AFTER_TOKENS {
            self.ids.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
        self.output.push_str(&delta);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level vocabulary: each token is a byte string, some of them
    /// partial UTF-8 sequences; special tokens decode to their name.
    struct ByteVocab {
        tokens: Vec<Vec<u8>>,
        special: Vec<bool>,
    }

    impl ByteVocab {
        fn new(tokens: &[&[u8]], specials: &[&str]) -> Self {
            let mut v = Self {
                tokens: tokens.iter().map(|t| t.to_vec()).collect(),
                special: vec![false; tokens.len()],
            };
            for s in specials {
                v.tokens.push(s.as_bytes().to_vec());
                v.special.push(true);
            }
            v
        }

        fn id(&self, bytes: &[u8]) -> u32 {
            self.tokens.iter().position(|t| t == bytes).unwrap() as u32
        }
    }

    impl Decode for ByteVocab {
        fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
            let mut bytes = Vec::new();
            for &id in ids {
                let i = id as usize;
                let token = self.tokens.get(i).ok_or(format!("unknown token {id}"))?;
                if !(skip_special_tokens && self.special[i]) {
                    bytes.extend_from_slice(token);
                }
            }
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
    }

    /// A SentencePiece-like vocabulary: '▁' is a space, and a decoded
    /// string loses its one leading space.
    struct PieceVocab(Vec<&'static str>);

    impl Decode for PieceVocab {
        fn decode(&self, ids: &[u32], _skip: bool) -> Result<String, String> {
            let mut s = String::new();
            for &id in ids {
                s.push_str(self.0.get(id as usize).ok_or("unknown token")?);
            }
            let s = s.replace('▁', " ");
            Ok(s.strip_prefix(' ').unwrap_or(&s).to_string())
        }
    }

    /// Pushes `ids`, checks that no delta has U+FFFD, and returns the deltas
    /// (the last from `finish`).
    fn run(dec: &dyn Decode, prompt: &[u32], ids: &[u32], skip: bool) -> Vec<String> {
        let mut d = IncrementalDetokenizer::new(prompt, skip);
        let mut deltas: Vec<String> = ids.iter().map(|&t| d.push(dec, t).unwrap()).collect();
        deltas.push(d.finish(dec).unwrap());
        assert_eq!(d.output_text(), deltas.concat());
        deltas
    }

    fn split_vocab() -> ByteVocab {
        // "日本" = E6 97 A5 E6 9C AC, "é" = C3 A9, "😀" = F0 9F 98 80.
        ByteVocab::new(
            &[
                b"Hi",
                b" ",
                b"\xE6",
                b"\x97\xA5\xE6",
                b"\x9C",
                b"\xAC",
                b"caf",
                b"\xC3",
                b"\xA9!",
                b"\xF0",
                b"\x9F",
                b"\x98",
                b"\x80",
                b"\xF0\x9F",
                b"\x98\x80 ok",
            ],
            &["<|im_end|>"],
        )
    }

    #[test]
    fn split_multibyte_characters_never_emit_replacement() {
        let v = split_vocab();
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![b"Hi", b" ", b"\xE6", b"\x97\xA5\xE6", b"\x9C", b"\xAC"],
            vec![b"caf", b"\xC3", b"\xA9!"],
            vec![
                b"\xF0",
                b"\x9F",
                b"\x98",
                b"\x80",
                b" ",
                b"\xF0\x9F",
                b"\x98\x80 ok",
            ],
        ];
        for case in cases {
            let ids: Vec<u32> = case.iter().map(|t| v.id(t)).collect();
            let deltas = run(&v, &[], &ids, true);
            for delta in &deltas {
                assert!(!delta.contains(REPLACEMENT), "{deltas:?}");
            }
            assert_eq!(deltas.concat(), v.decode(&ids, true).unwrap());
        }
        let ids: Vec<u32> = [b"\xE6" as &[u8], b"\x97\xA5\xE6", b"\x9C", b"\xAC"]
            .iter()
            .map(|t| v.id(t))
            .collect();
        // A token that completes one character and starts the next waits
        // for the next one too.
        assert_eq!(run(&v, &[], &ids, true), vec!["", "", "", "日本", ""]);
    }

    #[test]
    fn prompt_context_is_not_reemitted() {
        let v = split_vocab();
        let prompt: Vec<u32> = [b"Hi" as &[u8], b" ", b"caf", b"\xC3", b"\xA9!", b" ", b"Hi"]
            .iter()
            .map(|t| v.id(t))
            .collect();
        let ids = [v.id(b" "), v.id(b"\xE6"), v.id(b"\x97\xA5\xE6")];
        let deltas = run(&v, &prompt, &ids, true);
        assert_eq!(deltas, vec![" ", "", "", "日\u{FFFD}"]);
    }

    #[test]
    fn unfinished_character_is_flushed_lossily_at_the_end() {
        let v = split_vocab();
        let mut d = IncrementalDetokenizer::new(&[], true);
        assert_eq!(d.push(&v, v.id(b"caf")).unwrap(), "caf");
        assert_eq!(d.push(&v, v.id(b"\xC3")).unwrap(), "");
        assert!(d.has_pending());
        assert_eq!(d.finish(&v).unwrap(), "\u{FFFD}");
        assert!(!d.has_pending());
        assert_eq!(d.finish(&v).unwrap(), "");
    }

    #[test]
    fn leading_space_comes_from_the_prompt_context() {
        let v = PieceVocab(vec!["▁Hello", "▁world", "!", "▁The"]);
        // After a prompt, "▁world" starts with a space.
        assert_eq!(run(&v, &[3, 0], &[1, 2], true), vec![" world", "!", ""]);
        // Without a prompt the first token loses it, as a full decode does.
        assert_eq!(run(&v, &[], &[0, 1], true), vec!["Hello", " world", ""]);
        // The deltas equal the full decode of prompt + output past the
        // prompt's text, over a long output (the window compacts).
        let prompt = [3, 0, 1];
        let ids: Vec<u32> = (0..300).map(|i| [0, 1, 2][i % 3]).collect();
        let all: Vec<u32> = prompt.iter().chain(&ids).copied().collect();
        let full = v.decode(&all, true).unwrap();
        let prompt_text = v.decode(&prompt, true).unwrap();
        assert_eq!(
            run(&v, &prompt, &ids, true).concat(),
            full[prompt_text.len()..]
        );
    }

    #[test]
    fn special_tokens_skipped_or_kept() {
        let v = split_vocab();
        let end = v.id(b"<|im_end|>");
        let ids = [v.id(b"Hi"), end, v.id(b" "), v.id(b"Hi")];
        assert_eq!(run(&v, &[], &ids, true), vec!["Hi", "", " ", "Hi", ""]);
        assert_eq!(
            run(&v, &[], &ids, false),
            vec!["Hi", "<|im_end|>", " ", "Hi", ""]
        );
        // A skipped special token between the two halves of a character
        // leaves them adjacent in the decode.
        let ids = [v.id(b"\xC3"), end, v.id(b"\xA9!")];
        assert_eq!(run(&v, &[], &ids, true), vec!["", "", "é!", ""]);
    }

    #[test]
    fn invalid_utf8_is_eventually_emitted() {
        let v = split_vocab();
        let lone = v.id(b"\x9C");
        let ids = vec![lone; MAX_HELD_TOKENS + 4];
        let deltas = run(&v, &[], &ids, true);
        let text = deltas.concat();
        assert!(!text.is_empty());
        assert!(text.chars().all(|c| c == REPLACEMENT));
    }

    #[test]
    fn decode_errors_propagate() {
        let v = split_vocab();
        let mut d = IncrementalDetokenizer::new(&[], true);
        assert!(d.push(&v, 999).is_err());
    }
}
