//! Text ↔ token ids, from a GGUF file's metadata or a Hugging Face directory.
//!
//! [`Tokenizer`] wraps a [`tokenizers::Tokenizer`] and the facts around it
//! that the engine needs: BOS/EOS ids and strings, whether BOS is added, and
//! the chat template.
//!
//! From GGUF ([`Tokenizer::from_gguf`]) two tokenizer models are rebuilt from
//! the `tokenizer.ggml.*` keys, matching the Hugging Face tokenizers the files
//! were converted from:
//!
//! - `gpt2`: byte-level BPE from `tokens` and `merges` (`"a b"` strings),
//!   with the pre-tokeniser named by `tokenizer.ggml.pre` (see
//!   [`SUPPORTED_PRE_TOKENIZERS`]);
//! - `llama`: SentencePiece BPE (Llama 2, Mistral) from `tokens` and
//!   `scores`, as BPE with byte fallback whose merges are ordered by the score
//!   of the merged piece, which is how SentencePiece chooses what to merge.
//!
//! Tokens whose `token_type` is control (3) become special tokens and
//! user-defined ones (4) plain added tokens: either way text such as
//! `<|im_start|>` encodes to its single id, wherever it appears. Only special
//! tokens are dropped by `decode(.., skip_special_tokens = true)`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use serde_json::Value as Json;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::model::gguf::{GgufFile, GgufValue};

/// The `tokenizer.ggml.pre` values [`Tokenizer::from_gguf`] understands.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "default",
    "gpt2",
    "smollm",
    "starcoder",
    "refact",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "qwen2",
    "deepseek-r1-qwen",
];

/// Llama 3's pre-tokeniser regex (`tokenizer.ggml.pre = "llama-bpe"`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokeniser regex: like Llama 3's, but digits one by one.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF `tokenizer.ggml.token_type` values.
mod token_type {
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
}

/// SentencePiece's stand-in for a space.
const SPM_SPACE: &str = "\u{2581}";

/// Everything that can go wrong building or using a [`Tokenizer`]. Messages
/// name the file and, for GGUF metadata, the key.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required GGUF metadata key is absent.
    #[error("{file}: missing metadata key '{key}', which the tokenizer needs")]
    MissingKey {
        /// The file.
        file: String,
        /// The key.
        key: String,
    },
    /// A GGUF metadata key or configuration field with the wrong type or an
    /// invalid value.
    #[error("{file}: '{key}' {problem}")]
    BadValue {
        /// The file.
        file: String,
        /// The metadata key or JSON field.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `tokenizer.ggml.model` names a model that is not implemented.
    #[error(
        "{file}: tokenizer model '{model}' (tokenizer.ggml.model) is not supported; supported are 'gpt2' (byte-level BPE) and 'llama' (SentencePiece)"
    )]
    UnsupportedModel {
        /// The file.
        file: String,
        /// The value found.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokeniser that is not implemented.
    #[error(
        "{file}: pre-tokenizer '{pre}' (tokenizer.ggml.pre) is not supported; supported are {}",
        SUPPORTED_PRE_TOKENIZERS.join(", ")
    )]
    UnsupportedPreTokenizer {
        /// The file.
        file: String,
        /// The value found.
        pre: String,
    },
    /// The `tokenizers` library rejected the vocabulary, merges or file.
    #[error("{file}: cannot build the tokenizer: {message}")]
    Build {
        /// The file.
        file: String,
        /// The library's message.
        message: String,
    },
    /// A file of a Hugging Face directory could not be read.
    #[error("{file}: cannot read: {error}")]
    Io {
        /// The file.
        file: String,
        /// The operating system's error.
        #[source]
        error: io::Error,
    },
    /// A JSON file of a Hugging Face directory is malformed.
    #[error("{file}: invalid JSON: {error}")]
    Json {
        /// The file.
        file: String,
        /// The parser's error.
        #[source]
        error: serde_json::Error,
    },
    /// Encoding failed inside the `tokenizers` library.
    #[error("{file}: cannot encode text: {message}")]
    Encode {
        /// The tokenizer's file.
        file: String,
        /// The library's message.
        message: String,
    },
    /// Decoding failed inside the `tokenizers` library.
    #[error("{file}: cannot decode token ids: {message}")]
    Decode {
        /// The tokenizer's file.
        file: String,
        /// The library's message.
        message: String,
    },
    /// A token id at or beyond the vocabulary size.
    #[error("{file}: token id {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange {
        /// The tokenizer's file.
        file: String,
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
}

/// A tokenizer with the special-token facts a model's prompt and stop logic
/// need.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it came from, for messages.
    file: String,
    /// One past the largest token id.
    vocab_size: usize,
    bos_token_id: Option<u32>,
    bos_token: Option<String>,
    eos_token_ids: Vec<u32>,
    eos_token: Option<String>,
    pad_token_id: Option<u32>,
    /// Add BOS in `encode(.., true)` (when the library does not already).
    add_bos: bool,
    /// Add EOS in `encode(.., true)` (when the library does not already).
    add_eos: bool,
    chat_template: Option<String>,
    special_ids: HashSet<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("file", &self.file)
            .field("vocab_size", &self.vocab_size)
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Rebuilds the tokenizer stored in a GGUF file's `tokenizer.*` metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, TokenizerError> {
        let meta = Meta { gguf };
        let model = meta.required_str("tokenizer.ggml.model")?;
        let tokens = meta.str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = meta.token_types(n)?;
        let mut inner = match model {
            "gpt2" => {
                let pre = meta.str("tokenizer.ggml.pre")?.unwrap_or("default");
                let merges = meta.merges()?;
                byte_level_bpe(&meta, &tokens, merges, pre)?
            }
            "llama" => {
                let scores = meta.scores(n)?;
                let unk_id = meta.token_id("tokenizer.ggml.unknown_token_id", n)?;
                let add_space_prefix = meta.bool("tokenizer.ggml.add_space_prefix")?;
                sentencepiece_bpe(
                    &meta,
                    &tokens,
                    &scores,
                    unk_id.unwrap_or(0),
                    add_space_prefix.unwrap_or(true),
                )?
            }
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    file: meta.file(),
                    model: other.to_owned(),
                })
            }
        };

        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (&token, &ty) in tokens.iter().zip(&types) {
            match ty {
                token_type::CONTROL | token_type::UNKNOWN => {
                    special.push(AddedToken::from(token, true));
                }
                token_type::USER_DEFINED => {
                    user_defined.push(AddedToken::from(token, false).normalized(false));
                }
                _ => {}
            }
        }
        inner.add_special_tokens(&special);
        inner.add_tokens(&user_defined);

        let token_str = |id: Option<u32>| {
            id.and_then(|id| tokens.get(id as usize))
                .map(|t| (*t).to_owned())
        };
        let bos_token_id = meta.token_id("tokenizer.ggml.bos_token_id", n)?;
        let eos_id = meta.token_id("tokenizer.ggml.eos_token_id", n)?;
        let mut eos_token_ids = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = meta.token_id(key, n)? {
                push_unique(&mut eos_token_ids, id);
            }
        }
        let special_ids = special_ids(&inner, &[bos_token_id, eos_id]);
        Ok(Self {
            vocab_size: n,
            file: meta.file(),
            bos_token: token_str(bos_token_id),
            bos_token_id,
            eos_token: token_str(eos_id),
            eos_token_ids,
            pad_token_id: meta.token_id("tokenizer.ggml.padding_token_id", n)?,
            add_bos: meta
                .bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(model == "llama"),
            add_eos: meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            chat_template: meta.str("tokenizer.chat_template")?.map(str::to_owned),
            special_ids,
            inner,
        })
    }

    /// Loads a Hugging Face model directory: `tokenizer.json`, and when
    /// present `tokenizer_config.json` (chat template, BOS/EOS strings,
    /// `add_bos_token`), `chat_template.jinja` (which takes precedence over the
    /// config's template) and `generation_config.json` (more EOS ids).
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let tokenizer_path = dir.join("tokenizer.json");
        let file = tokenizer_path.display().to_string();
        let inner = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            if tokenizer_path.exists() {
                TokenizerError::Build {
                    file: file.clone(),
                    message: e.to_string(),
                }
            } else {
                TokenizerError::Io {
                    file: file.clone(),
                    error: io::Error::new(io::ErrorKind::NotFound, "no tokenizer.json there"),
                }
            }
        })?;
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&max| max as usize + 1);

        let config_path = dir.join("tokenizer_config.json");
        let config = read_json_if_exists(&config_path)?.unwrap_or(Json::Null);
        let config_file = config_path.display().to_string();
        let token_content = |key: &str| -> Result<Option<String>, TokenizerError> {
            match config.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.clone())),
                Some(Json::Object(o)) => match o.get("content") {
                    Some(Json::String(s)) => Ok(Some(s.clone())),
                    _ => Err(bad_value(&config_file, key, "has no string 'content'")),
                },
                Some(_) => Err(bad_value(
                    &config_file,
                    key,
                    "should be a string or an object with 'content'",
                )),
            }
        };
        let bos_token = token_content("bos_token")?;
        let eos_token = token_content("eos_token")?;
        let pad_token = token_content("pad_token")?;
        let config_bool = |key: &str| match config.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad_value(&config_file, key, "should be true or false")),
        };
        let add_bos_token = config_bool("add_bos_token")?;
        let add_eos_token = config_bool("add_eos_token")?;

        let mut chat_template = chat_template_from_config(&config_file, &config)?;
        let jinja_path = dir.join("chat_template.jinja");
        if jinja_path.exists() {
            let text = fs::read_to_string(&jinja_path).map_err(|error| TokenizerError::Io {
                file: jinja_path.display().to_string(),
                error,
            })?;
            chat_template = Some(text);
        }

        let lookup = |token: &Option<String>| token.as_deref().and_then(|t| inner.token_to_id(t));
        let mut bos_token_id = lookup(&bos_token);
        let mut eos_token_ids = Vec::new();
        if let Some(id) = lookup(&eos_token) {
            eos_token_ids.push(id);
        }
        let generation_path = dir.join("generation_config.json");
        if let Some(generation) = read_json_if_exists(&generation_path)? {
            let generation_file = generation_path.display().to_string();
            let ids = |key: &str| match generation.get(key) {
                None | Some(Json::Null) => Ok(Vec::new()),
                Some(Json::Array(items)) => items
                    .iter()
                    .map(|v| json_token_id(&generation_file, key, v, vocab_size))
                    .collect(),
                Some(v) => Ok(vec![json_token_id(&generation_file, key, v, vocab_size)?]),
            };
            for id in ids("eos_token_id")? {
                push_unique(&mut eos_token_ids, id);
            }
            if bos_token_id.is_none() {
                bos_token_id = ids("bos_token_id")?.first().copied();
            }
        }
        let bos_token = bos_token.or_else(|| bos_token_id.and_then(|id| inner.id_to_token(id)));
        let eos_token =
            eos_token.or_else(|| eos_token_ids.first().and_then(|&id| inner.id_to_token(id)));

        // tokenizer.json's post-processor normally adds BOS/EOS itself; the
        // config's flags only matter where it does not.
        let probe = inner
            .encode_fast("", true)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default();
        let add_bos = add_bos_token == Some(true)
            && bos_token_id.is_some()
            && probe.first().copied() != bos_token_id;
        let add_eos = add_eos_token == Some(true)
            && eos_token_ids
                .first()
                .is_some_and(|&eos| probe.last() != Some(&eos));

        let special_ids = special_ids(&inner, &[bos_token_id, eos_token_ids.first().copied()]);
        Ok(Self {
            file,
            vocab_size,
            bos_token_id,
            bos_token,
            eos_token_ids,
            eos_token,
            pad_token_id: lookup(&pad_token),
            add_bos,
            add_eos,
            chat_template,
            special_ids,
            inner,
        })
    }

    /// Write this tokenizer as a Hugging Face directory holds it:
    /// `tokenizer.json`, `tokenizer_config.json` (BOS/EOS/pad strings,
    /// `add_bos_token`, chat template) and `generation_config.json` (every
    /// EOS id). [`Tokenizer::from_hf_dir`] reads them back to an equal
    /// tokenizer.
    pub fn write_hf_files(&self, dir: &Path) -> Result<(), TokenizerError> {
        let io = |file: &Path, error: io::Error| TokenizerError::Io {
            file: file.display().to_string(),
            error,
        };
        let tokenizer_path = dir.join("tokenizer.json");
        self.inner
            .save(&tokenizer_path, false)
            .map_err(|e| TokenizerError::Build {
                file: tokenizer_path.display().to_string(),
                message: e.to_string(),
            })?;
        let pad = self.pad_token_id.and_then(|id| self.inner.id_to_token(id));
        let config = serde_json::json!({
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": pad,
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "chat_template": self.chat_template,
        });
        let generation = serde_json::json!({
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids,
        });
        for (name, value) in [
            ("tokenizer_config.json", config),
            ("generation_config.json", generation),
        ] {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(&value).unwrap_or_default();
            fs::write(&path, text).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }

    /// Token ids of `text`. Special-token strings in the text (`<|im_end|>`)
    /// always become their single id; `add_special_tokens` adds BOS (and EOS)
    /// where the model asks for them.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode {
                file: self.file.clone(),
                message: e.to_string(),
            })?;
        let mut ids = encoding.get_ids().to_vec();
        if add_special_tokens {
            if let (true, Some(bos)) = (self.add_bos, self.bos_token_id) {
                ids.insert(0, bos);
            }
            if let (true, Some(&eos)) = (self.add_eos, self.eos_token_ids.first()) {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    /// The text of `ids`; with `skip_special_tokens`, special tokens (control
    /// tokens, BOS, EOS) are left out. Bytes that do not form valid UTF-8
    /// become U+FFFD. Fails on an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizerError::IdOutOfRange {
                file: self.file.clone(),
                id,
                vocab_size: self.vocab_size,
            });
        }
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| !(skip_special_tokens && self.special_ids.contains(id)))
            .collect();
        self.inner
            .decode(&kept, false)
            .map_err(|e| TokenizerError::Decode {
                file: self.file.clone(),
                message: e.to_string(),
            })
    }

    /// The vocabulary entry of `id` (byte-level or SentencePiece form, e.g.
    /// `"Ġthe"`, `"▁the"`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of vocabulary entry `token`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// One past the largest token id.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Ids that end generation: EOS first, then end-of-turn / end-of-message
    /// ids and any further EOS ids the model declares.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// The BOS id, if the model has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// The padding id, if the model declares one.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }

    /// The BOS token's text (for chat templates).
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS token's text (for chat templates).
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Whether `encode(.., true)` adds BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
            || self
                .inner
                .encode_fast("", true)
                .is_ok_and(|e| e.get_ids().first().copied() == self.bos_token_id)
    }

    /// The Jinja chat template the model ships with.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Whether `id` is a special (control) token: BOS, EOS, `<|im_start|>` and
    /// the like.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// Where the tokenizer was loaded from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The raw bytes a token stands for (a token may hold part of a UTF-8
    /// character, so these are not always valid UTF-8 on their own), as
    /// OpenAI's `logprobs.bytes` reports them. Special tokens give their
    /// text; unknown ids give nothing.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(tok) = self.inner.id_to_token(id) else {
            return Vec::new();
        };
        if self.special_ids.contains(&id) {
            return tok.into_bytes();
        }
        if self.is_byte_level() {
            let map = unicode_to_byte();
            if let Some(bytes) = tok.chars().map(|c| map.get(&c).copied()).collect() {
                return bytes;
            }
            return tok.into_bytes();
        }
        // SentencePiece: `<0xNN>` byte-fallback tokens, `▁` for spaces.
        if let Some(hex) = tok.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')) {
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                return vec![b];
            }
        }
        tok.replace('\u{2581}', " ").into_bytes()
    }

    /// Whether the decoder is GPT-2 style byte-level BPE.
    fn is_byte_level(&self) -> bool {
        self.inner
            .get_decoder()
            .and_then(|d| serde_json::to_string(d).ok())
            .is_some_and(|j| j.contains("\"ByteLevel\""))
    }
}

/// GPT-2's byte-level map, inverted: vocabulary character → byte.
fn unicode_to_byte() -> &'static HashMap<char, u8> {
    static MAP: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    MAP.get_or_init(|| {
        (0..=255u8)
            .map(|b| (crate::model::synthetic::byte_to_char(b), b))
            .collect()
    })
}

/// Typed access to a GGUF file's tokenizer keys, with errors naming the key.
struct Meta<'a> {
    gguf: &'a GgufFile,
}

impl<'a> Meta<'a> {
    fn file(&self) -> String {
        self.gguf.name().to_owned()
    }

    fn bad(&self, key: &str, problem: impl Into<String>) -> TokenizerError {
        bad_value(self.gguf.name(), key, problem)
    }

    fn missing(&self, key: &str) -> TokenizerError {
        TokenizerError::MissingKey {
            file: self.file(),
            key: key.to_owned(),
        }
    }

    fn wrong_type(&self, key: &str, expected: &str, value: &GgufValue) -> TokenizerError {
        self.bad(
            key,
            format!("should be {expected}, but it is a {}", value.type_name()),
        )
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        match self.gguf.get(key) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, "a string", v)),
        }
    }

    fn required_str(&self, key: &str) -> Result<&'a str, TokenizerError> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.gguf.get(key) {
            None => Ok(None),
            Some(GgufValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, "a bool", v)),
        }
    }

    fn array(&self, key: &str) -> Result<&'a [GgufValue], TokenizerError> {
        match self.gguf.get(key) {
            None => Err(self.missing(key)),
            Some(GgufValue::Array(items)) => Ok(items),
            Some(v) => Err(self.wrong_type(key, "an array", v)),
        }
    }

    fn str_array(&self, key: &str) -> Result<Vec<&'a str>, TokenizerError> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .ok_or_else(|| self.bad(key, format!("element {i} is not a string")))
            })
            .collect()
    }

    /// A token id that must lie inside a vocabulary of `n` tokens.
    fn token_id(&self, key: &str, n: usize) -> Result<Option<u32>, TokenizerError> {
        let Some(value) = self.gguf.get(key) else {
            return Ok(None);
        };
        match value.as_u64() {
            Some(id) if id < n as u64 => Ok(u32::try_from(id).ok()),
            Some(id) => Err(self.bad(
                key,
                format!("is token id {id}, outside the vocabulary of {n} tokens"),
            )),
            None => Err(self.wrong_type(key, "a token id", value)),
        }
    }

    /// `tokenizer.ggml.token_type`, or all normal when absent.
    fn token_types(&self, n: usize) -> Result<Vec<i64>, TokenizerError> {
        const KEY: &str = "tokenizer.ggml.token_type";
        if self.gguf.get(KEY).is_none() {
            return Ok(vec![1; n]);
        }
        let types = self.array(KEY)?;
        if types.len() != n {
            return Err(self.bad(KEY, format!("has {} entries for {n} tokens", types.len())));
        }
        types
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64()
                    .ok_or_else(|| self.bad(KEY, format!("element {i} is not an integer")))
            })
            .collect()
    }

    /// `tokenizer.ggml.scores`, one per token.
    fn scores(&self, n: usize) -> Result<Vec<f64>, TokenizerError> {
        const KEY: &str = "tokenizer.ggml.scores";
        let scores = self.array(KEY)?;
        if scores.len() != n {
            return Err(self.bad(KEY, format!("has {} entries for {n} tokens", scores.len())));
        }
        scores
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64()
                    .ok_or_else(|| self.bad(KEY, format!("element {i} is not a number")))
            })
            .collect()
    }

    /// `tokenizer.ggml.merges` as `(left, right)` pairs, in rank order.
    fn merges(&self) -> Result<Vec<(String, String)>, TokenizerError> {
        const KEY: &str = "tokenizer.ggml.merges";
        self.str_array(KEY)?
            .into_iter()
            .enumerate()
            .map(|(i, merge)| match merge.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
                _ => Err(self.bad(
                    KEY,
                    format!("element {i} ({merge:?}) is not two tokens separated by a space"),
                )),
            })
            .collect()
    }
}

fn bad_value(file: &str, key: &str, problem: impl Into<String>) -> TokenizerError {
    TokenizerError::BadValue {
        file: file.to_owned(),
        key: key.to_owned(),
        problem: problem.into(),
    }
}

fn build_error(meta: &Meta<'_>, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build {
        file: meta.file(),
        message: e.to_string(),
    }
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

/// The vocabulary map of `tokens`; a repeated string keeps its last id.
fn vocab_of(tokens: &[&str]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(id, &t)| (t.to_owned(), id as u32))
        .collect()
}

/// Ids of the added special tokens plus `extra` (BOS/EOS).
fn special_ids(inner: &tokenizers::Tokenizer, extra: &[Option<u32>]) -> HashSet<u32> {
    let mut ids: HashSet<u32> = inner
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, token)| token.special)
        .map(|(id, _)| id)
        .collect();
    ids.extend(extra.iter().flatten());
    ids
}

/// GPT-2 style byte-level BPE with the pre-tokeniser named by
/// `tokenizer.ggml.pre`.
fn byte_level_bpe(
    meta: &Meta<'_>,
    tokens: &[&str],
    merges: Vec<(String, String)>,
    pre: &str,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| build_error(meta, e))?;
        Ok(split.into())
    };
    let (pre_tokenizer, normalizer, ignore_merges): (
        PreTokenizerWrapper,
        Option<NormalizerWrapper>,
        bool,
    ) = match pre {
        "default" | "gpt2" => (byte_level(true).into(), None, false),
        "smollm" | "starcoder" | "refact" => (
            PreTokenizerSequence::new(vec![Digits::new(true).into(), byte_level(true).into()])
                .into(),
            None,
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => (
            PreTokenizerSequence::new(vec![split(LLAMA3_PATTERN)?, byte_level(false).into()])
                .into(),
            None,
            true,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            PreTokenizerSequence::new(vec![split(QWEN2_PATTERN)?, byte_level(false).into()]).into(),
            Some(NFC.into()),
            false,
        ),
        other => {
            return Err(TokenizerError::UnsupportedPreTokenizer {
                file: meta.file(),
                pre: other.to_owned(),
            })
        }
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_of(tokens), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| build_error(meta, e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_normalizer(normalizer)
        .with_decoder(Some(ByteLevel::default()));
    Ok(inner)
}

/// SentencePiece BPE (Llama 2, Mistral) as BPE with byte fallback: spaces
/// become `▁`, a `▁` is prepended to each stretch of text when
/// `add_space_prefix`, and characters outside the vocabulary fall back to
/// their `<0xNN>` byte tokens.
///
/// SentencePiece repeatedly merges the adjacent pair whose concatenation has
/// the highest score; the equivalent BPE merge list has, for every piece that
/// splits into two pieces, a merge ranked by the piece's score (highest first;
/// ties in vocabulary order, the splits of one piece by the ids of their
/// halves), as Hugging Face's converter builds it.
fn sentencepiece_bpe(
    meta: &Meta<'_>,
    tokens: &[&str],
    scores: &[f64],
    unk_id: u32,
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let vocab = vocab_of(tokens);
    let mut merges: Vec<(f64, u32, u32)> = Vec::new();
    for (&piece, &score) in tokens.iter().zip(scores) {
        let mut local: Vec<(u32, u32)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (left, right) = piece.split_at(at);
                Some((*vocab.get(left)?, *vocab.get(right)?))
            })
            .collect();
        local.sort_unstable();
        merges.extend(local.into_iter().map(|(l, r)| (score, l, r)));
    }
    // Stable: equal scores keep vocabulary order.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    let name = |id: u32| {
        tokens
            .get(id as usize)
            .map_or_else(String::new, |t| (*t).to_owned())
    };
    let merges = merges
        .into_iter()
        .map(|(_, l, r)| (name(l), name(r)))
        .collect();
    let unk = tokens.get(unk_id as usize).copied().unwrap_or("<unk>");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk.to_owned())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| build_error(meta, e))?;

    let replace = |from: &str, to: &str| {
        Replace::new(from.to_owned(), to.to_owned()).map_err(|e| build_error(meta, e))
    };
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    let mut decoders: Vec<DecoderWrapper> = vec![
        replace(SPM_SPACE, " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        normalizers.push(Prepend::new(SPM_SPACE.to_owned()).into());
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    normalizers.push(replace(" ", SPM_SPACE)?.into());

    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// Parses `path` as JSON, or `None` when there is no such file.
fn read_json_if_exists(path: &Path) -> Result<Option<Json>, TokenizerError> {
    let file = path.display().to_string();
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(TokenizerError::Io { file, error }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| TokenizerError::Json { file, error })
}

/// `chat_template` of a `tokenizer_config.json`: a string, or a list of
/// `{name, template}` of which the one named `default` is used.
fn chat_template_from_config(file: &str, config: &Json) -> Result<Option<String>, TokenizerError> {
    const KEY: &str = "chat_template";
    match config.get(KEY) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Array(items)) => {
            for item in items {
                let name = item.get("name").and_then(Json::as_str);
                let template = item.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => return Ok(Some(t.to_owned())),
                    (Some(_), Some(_)) => {}
                    _ => {
                        return Err(bad_value(
                            file,
                            KEY,
                            "lists an entry without string 'name' and 'template'",
                        ))
                    }
                }
            }
            Ok(None)
        }
        Some(_) => Err(bad_value(
            file,
            KEY,
            "should be a string or a list of {name, template}",
        )),
    }
}

/// A token id from a JSON config field.
fn json_token_id(
    file: &str,
    key: &str,
    value: &Json,
    vocab_size: usize,
) -> Result<u32, TokenizerError> {
    match value.as_u64() {
        Some(id) if id < vocab_size as u64 => {
            u32::try_from(id).map_err(|_| bad_value(file, key, "is not a 32-bit token id"))
        }
        Some(id) => Err(bad_value(
            file,
            key,
            format!("is token id {id}, outside the vocabulary of {vocab_size} tokens"),
        )),
        None => Err(bad_value(
            file,
            key,
            "should be a token id or a list of them",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::GgufWriter;

    /// A byte-level BPE vocabulary: three control tokens, one user-defined
    /// token, and enough pieces for "the", " the", digits and a chat turn.
    const BPE_TOKENS: &[&str] = &[
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<think>",
        "t",
        "h",
        "e",
        "Ġ",
        "th",
        "the",
        "Ġt",
        "Ġth",
        "Ġthe",
        "0",
        "1",
        "2",
        "4",
        "20",
        "u",
        "s",
        "r",
        "Ċ",
        "H",
        "i",
        "Hi",
        "!",
    ];
    const BPE_MERGES: &[&str] = &["Ġ t", "Ġt h", "t h", "Ġth e", "th e", "2 0", "H i"];

    fn id(token: &str) -> u32 {
        BPE_TOKENS.iter().position(|t| *t == token).unwrap() as u32
    }

    fn bpe_writer(pre: &str) -> GgufWriter {
        let mut types = vec![1i32; BPE_TOKENS.len()];
        types[..3].fill(3);
        types[3] = 4;
        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.model", "gpt2").unwrap();
        w.add_metadata("tokenizer.ggml.pre", pre).unwrap();
        w.add_metadata("tokenizer.ggml.tokens", BPE_TOKENS.to_vec())
            .unwrap();
        w.add_metadata("tokenizer.ggml.token_type", types).unwrap();
        w.add_metadata("tokenizer.ggml.merges", BPE_MERGES.to_vec())
            .unwrap();
        w.add_metadata("tokenizer.ggml.bos_token_id", 1u32).unwrap();
        w.add_metadata("tokenizer.ggml.eos_token_id", 2u32).unwrap();
        w.add_metadata("tokenizer.ggml.padding_token_id", 2u32)
            .unwrap();
        w.add_metadata("tokenizer.chat_template", "{{ bos_token }}")
            .unwrap();
        w
    }

    fn load(w: &GgufWriter) -> Result<Tokenizer, TokenizerError> {
        let gguf = GgufFile::from_bytes("tok.gguf", w.to_bytes().unwrap()).unwrap();
        Tokenizer::from_gguf(&gguf)
    }

    #[test]
    fn byte_level_bpe_encodes_merges_digits_and_special_tokens() {
        let tok = load(&bpe_writer("smollm")).unwrap();
        assert_eq!(tok.encode("the", true).unwrap(), vec![id("the")]);
        assert_eq!(
            tok.encode("the the", false).unwrap(),
            vec![id("the"), id("Ġthe")]
        );
        // The merge "2 0" exists, but digits are split one by one first.
        assert_eq!(
            tok.encode("2024", false).unwrap(),
            vec![id("2"), id("0"), id("2"), id("4")]
        );
        let chat = tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
        assert_eq!(
            chat,
            vec![1, id("u"), id("s"), id("e"), id("r"), id("Ċ"), id("Hi"), 2]
        );
        assert_eq!(
            tok.decode(&chat, false).unwrap(),
            "<|im_start|>user\nHi<|im_end|>"
        );
        assert_eq!(tok.decode(&chat, true).unwrap(), "user\nHi");

        // A user-defined token is one id but not special.
        let think = tok.encode("<think>Hi", false).unwrap();
        assert_eq!(think, vec![3, id("Hi")]);
        assert_eq!(tok.decode(&think, true).unwrap(), "<think>Hi");
        assert!(tok.is_special(1) && tok.is_special(2) && !tok.is_special(3));
        assert!(!tok.is_special(id("the")));
    }

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
    }

    #[test]
    fn gguf_special_ids_and_template() {
        let tok = load(&bpe_writer("smollm")).unwrap();
        assert_eq!(tok.vocab_size(), BPE_TOKENS.len());
        assert_eq!(tok.bos_token_id(), Some(1));
        assert_eq!(tok.bos_token(), Some("<|im_start|>"));
        assert_eq!(tok.eos_token_ids(), &[2]);
        assert_eq!(tok.eos_token(), Some("<|im_end|>"));
        assert_eq!(tok.pad_token_id(), Some(2));
        assert_eq!(tok.chat_template(), Some("{{ bos_token }}"));
        assert!(!tok.adds_bos());
        assert_eq!(tok.token_to_id("Ġthe"), Some(id("Ġthe")));
        assert_eq!(tok.id_to_token(id("Ġthe")).as_deref(), Some("Ġthe"));
        let e = tok.decode(&[999], false).unwrap_err().to_string();
        assert!(e.contains("999") && e.contains("tok.gguf"), "{e}");
    }

    #[test]
    fn add_bos_and_eot() {
        let mut w = bpe_writer("gpt2");
        w.add_metadata("tokenizer.ggml.add_bos_token", true)
            .unwrap();
        w.add_metadata("tokenizer.ggml.eot_token_id", 0u32).unwrap();
        let tok = load(&w).unwrap();
        assert!(tok.adds_bos());
        assert_eq!(tok.encode("the", true).unwrap(), vec![1, id("the")]);
        assert_eq!(tok.encode("the", false).unwrap(), vec![id("the")]);
        assert_eq!(tok.eos_token_ids(), &[2, 0]);
        // Without digit splitting the "2 0" merge applies.
        assert_eq!(
            tok.encode("2024", false).unwrap(),
            vec![id("20"), id("2"), id("4")]
        );
    }

    #[test]
    fn llama3_and_qwen2_pre_tokenizers() {
        let tok = load(&bpe_writer("llama-bpe")).unwrap();
        assert_eq!(
            tok.encode("the the!", false).unwrap(),
            vec![id("the"), id("Ġthe"), id("!")]
        );
        assert_eq!(
            tok.encode("2024", false).unwrap(),
            vec![id("20"), id("2"), id("4")]
        );
        let tok = load(&bpe_writer("qwen2")).unwrap();
        assert_eq!(
            tok.encode("2024", false).unwrap(),
            vec![id("2"), id("0"), id("2"), id("4")]
        );
    }

    #[test]
    fn unsupported_or_broken_metadata_is_named() {
        let e = load(&bpe_writer("mystery")).unwrap_err().to_string();
        assert!(
            e.contains("'mystery'") && e.contains("tokenizer.ggml.pre"),
            "{e}"
        );

        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.model", "t5").unwrap();
        w.add_metadata("tokenizer.ggml.tokens", vec!["a"]).unwrap();
        let e = load(&w).unwrap_err().to_string();
        assert!(e.contains("'t5'") && e.contains("not supported"), "{e}");

        let mut w = bpe_writer("smollm");
        w.add_metadata("tokenizer.ggml.eot_token_id", 500u32)
            .unwrap();
        let e = load(&w).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.ggml.eot_token_id") && e.contains("500"),
            "{e}"
        );

        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.model", "gpt2").unwrap();
        let e = load(&w).unwrap_err().to_string();
        assert!(
            e.contains("missing metadata key 'tokenizer.ggml.tokens'"),
            "{e}"
        );

        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.model", "gpt2").unwrap();
        w.add_metadata("tokenizer.ggml.tokens", vec!["a", "b"])
            .unwrap();
        w.add_metadata("tokenizer.ggml.merges", vec!["a b"])
            .unwrap();
        let e = load(&w).unwrap_err().to_string();
        assert!(e.contains("cannot build the tokenizer"), "{e}");

        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.model", "gpt2").unwrap();
        w.add_metadata("tokenizer.ggml.tokens", vec!["a", "b"])
            .unwrap();
        w.add_metadata("tokenizer.ggml.merges", vec!["ab"]).unwrap();
        let e = load(&w).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.ggml.merges") && e.contains("element 0"),
            "{e}"
        );
    }

    /// The SmolLM2-135M-Instruct vocabulary entries (at their real ids) and,
    /// in their real relative order, the merges that fire when tokenising the
    /// three texts of the test below. With every merge that fires present, BPE
    /// takes the same steps as with the full 48,900 merges.
    #[rustfmt::skip]
    const REAL_TOKENS: &[(u32, &str)] = &[
        (28, ","), (32, "0"), (33, "1"), (34, "2"), (35, "3"), (36, "4"), (37, "5"), (54, "F"),
        (56, "H"), (57, "I"), (68, "T"), (81, "a"), (83, "c"), (85, "e"), (86, "f"), (88, "h"),
        (89, "i"), (92, "l"), (94, "n"), (95, "o"), (96, "p"), (98, "r"), (99, "s"),
        (100, "t"), (101, "u"), (198, "Ċ"), (216, "Ġ"), (253, "Ġa"), (255, "he"), (259, "er"),
        (263, "Ġo"), (265, "Ġc"), (266, "es"), (269, "it"), (271, "is"), (272, "al"),
        (276, "an"), (282, "Ġof"), (314, "Ġis"), (319, "ce"), (376, "us"), (394, "pp"),
        (426, "ĠF"), (504, "The"), (512, "ap"), (524, "ance"), (566, "Ġapp"), (735, "les"),
        (788, "In"), (1201, "ital"), (1408, "Ġcap"), (2133, "ĠFr"), (3575, "Ġcapital"),
        (4093, "user"), (4649, "ĠFrance"), (13855, "Ġapples"), (26843, "Hi"),
    ];
    #[rustfmt::skip]
    const REAL_MERGES: &[&str] = &[
        "Ġ a", "h e", "e r", "Ġ o", "Ġ c", "e s", "i t", "i s", "a l", "a n", "Ġo f", "Ġ is",
        "c e", "u s", "p p", "Ġ F", "T he", "a p", "an ce", "Ġa pp", "l es", "I n", "it al",
        "Ġc ap", "ĠF r", "Ġcap ital", "us er", "ĠFr ance", "Ġapp les", "H i",
    ];

    /// Ids checked against Hugging Face's SmolLM2 tokenizer configuration and
    /// an independent byte-level BPE over the full GGUF vocabulary.
    #[test]
    fn smollm2_ids_on_a_subset_of_its_vocabulary() {
        let n = REAL_TOKENS.iter().map(|&(id, _)| id).max().unwrap() as usize + 1;
        let mut tokens: Vec<String> = (0..n).map(|i| format!("<unused{i}>")).collect();
        tokens[..3].clone_from_slice(&[
            "<|endoftext|>".to_owned(),
            "<|im_start|>".to_owned(),
            "<|im_end|>".to_owned(),
        ]);
        for &(id, token) in REAL_TOKENS {
            tokens[id as usize] = token.to_owned();
        }
        let mut types = vec![1i32; n];
        types[..3].fill(3);
        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.model", "gpt2").unwrap();
        w.add_metadata("tokenizer.ggml.pre", "smollm").unwrap();
        w.add_metadata("tokenizer.ggml.tokens", tokens).unwrap();
        w.add_metadata("tokenizer.ggml.token_type", types).unwrap();
        w.add_metadata("tokenizer.ggml.merges", REAL_MERGES.to_vec())
            .unwrap();
        w.add_metadata("tokenizer.ggml.bos_token_id", 1u32).unwrap();
        w.add_metadata("tokenizer.ggml.eos_token_id", 2u32).unwrap();
        w.add_metadata("tokenizer.ggml.add_bos_token", false)
            .unwrap();
        let tok = load(&w).unwrap();
        let cases: [(&str, &[u32]); 3] = [
            ("The capital of France is", &[504, 3575, 282, 4649, 314]),
            (
                "In 2024, 12345 apples",
                &[788, 216, 34, 32, 34, 36, 28, 216, 33, 34, 35, 36, 37, 13855],
            ),
            ("<|im_start|>user\nHi<|im_end|>", &[1, 4093, 198, 26843, 2]),
        ];
        for (text, ids) in cases {
            assert_eq!(tok.encode(text, true).unwrap(), ids, "{text:?}");
            assert_eq!(tok.decode(ids, false).unwrap(), text);
        }
    }

    /// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte
    /// tokens, then pieces with scores.
    fn spm_writer() -> (GgufWriter, Vec<String>) {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut scores = vec![0f32; 3];
        let mut types = vec![2i32, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(6);
        }
        let pieces = [
            ("▁", -1.0),
            ("h", -2.0),
            ("e", -3.0),
            ("l", -4.0),
            ("o", -5.0),
            ("w", -6.0),
            ("r", -7.0),
            ("d", -8.0),
            ("ll", -10.0),
            ("he", -11.0),
            ("▁h", -12.0),
            ("llo", -13.0),
            ("hello", -14.0),
            ("▁hello", -15.0),
            ("▁w", -16.0),
            ("or", -17.0),
            ("▁wor", -18.0),
        ];
        for (piece, score) in pieces {
            tokens.push(piece.into());
            scores.push(score);
            types.push(1);
        }
        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.model", "llama").unwrap();
        w.add_metadata("tokenizer.ggml.tokens", tokens.clone())
            .unwrap();
        w.add_metadata("tokenizer.ggml.scores", scores).unwrap();
        w.add_metadata("tokenizer.ggml.token_type", types).unwrap();
        w.add_metadata("tokenizer.ggml.bos_token_id", 1u32).unwrap();
        w.add_metadata("tokenizer.ggml.eos_token_id", 2u32).unwrap();
        w.add_metadata("tokenizer.ggml.unknown_token_id", 0u32)
            .unwrap();
        (w, tokens)
    }

    #[test]
    fn sentencepiece_merges_by_score_with_byte_fallback() {
        let (w, tokens) = spm_writer();
        let tok = load(&w).unwrap();
        let ids = |pieces: &[&str]| -> Vec<u32> {
            pieces
                .iter()
                .map(|p| tokens.iter().position(|t| t == p).unwrap() as u32)
                .collect()
        };
        assert!(tok.adds_bos());
        // "▁hello": ll (-10) before he (-11) before ▁h (-12), then llo,
        // hello and ▁hello.
        assert_eq!(tok.encode("hello", true).unwrap(), ids(&["<s>", "▁hello"]));
        // "▁world": ▁w (-16) and or (-17), then ▁wor; 'l' and 'd' stay.
        assert_eq!(
            tok.encode("hello world", false).unwrap(),
            ids(&["▁hello", "▁wor", "l", "d"])
        );
        // 'é' is not in the vocabulary: its UTF-8 bytes C3 A9.
        let e = tok.encode("hé", false).unwrap();
        assert_eq!(e, ids(&["▁h", "<0xC3>", "<0xA9>"]));
        assert_eq!(tok.decode(&e, false).unwrap(), "hé");
        let text = "<s>hello world</s>";
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(enc, ids(&["<s>", "▁hello", "▁wor", "l", "d", "</s>"]));
        assert_eq!(tok.decode(&enc, true).unwrap(), "hello world");
        assert_eq!(tok.bos_token(), Some("<s>"));
        assert!(tok.is_special(0) && tok.is_special(1) && !tok.is_special(300));
    }

    #[test]
    fn hf_dir_reads_tokenizer_config_and_generation_config() {
        let dir = tempfile::tempdir().unwrap();
        let gguf_tok = load(&bpe_writer("smollm")).unwrap();
        gguf_tok
            .inner()
            .save(dir.path().join("tokenizer.json"), false)
            .unwrap();
        let config = r#"{
            "bos_token": {"content": "<|im_start|>", "special": true},
            "eos_token": "<|im_end|>",
            "add_bos_token": true,
            "chat_template": [
                {"name": "tool_use", "template": "tools"},
                {"name": "default", "template": "{{ messages }}"}
            ]
        }"#;
        fs::write(dir.path().join("tokenizer_config.json"), config).unwrap();
        fs::write(
            dir.path().join("generation_config.json"),
            r#"{"eos_token_id": [2, 0], "bos_token_id": 1}"#,
        )
        .unwrap();
        let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
        assert_eq!(tok.vocab_size(), BPE_TOKENS.len());
        assert_eq!(tok.bos_token_id(), Some(1));
        assert_eq!(tok.eos_token_ids(), &[2, 0]);
        assert_eq!(tok.bos_token(), Some("<|im_start|>"));
        assert_eq!(tok.eos_token(), Some("<|im_end|>"));
        assert_eq!(tok.chat_template(), Some("{{ messages }}"));
        assert_eq!(tok.encode("the", true).unwrap(), vec![1, id("the")]);
        assert_eq!(tok.encode("the", false).unwrap(), vec![id("the")]);

        fs::write(dir.path().join("chat_template.jinja"), "jinja file").unwrap();
        fs::write(
            dir.path().join("generation_config.json"),
            r#"{"eos_token_id": 0}"#,
        )
        .unwrap();
        let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
        assert_eq!(tok.chat_template(), Some("jinja file"));
        assert_eq!(tok.eos_token_ids(), &[2, 0]);

        fs::write(
            dir.path().join("generation_config.json"),
            r#"{"eos_token_id": "x"}"#,
        )
        .unwrap();
        let e = Tokenizer::from_hf_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("generation_config.json") && e.contains("eos_token_id"),
            "{e}"
        );

        let e = Tokenizer::from_hf_dir(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
    }
}
