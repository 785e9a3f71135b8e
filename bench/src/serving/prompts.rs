//! Synthetic prompts of a target length in tokens.
//!
//! Each prompt is `"{index} w1 w2 …"`: a leading request number, so no two
//! prompts share a prefix (a server's prefix cache cannot serve one request
//! from another's), then common English words drawn from a seeded generator.
//! Most tokenizers encode each such word with its leading space as one
//! token, so the fallback estimate is one token per word. When the server
//! offers vLLM's `POST /tokenize`, two sample prompts calibrate a linear
//! model `tokens = overhead + per_word · words` (the overhead covers the BOS
//! token and the leading number) and the word count is solved from it.

use std::time::Duration;

use serde_json::{json, Value};

use super::arrivals::SplitMix64;

/// Common English words, nearly all one token (with the leading space) in
/// BPE tokenizers of the GPT-2, Llama 3 and Qwen families.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "time", "people", "year",
    "way", "day", "man", "thing", "woman", "life", "child", "world", "school", "state", "family",
    "group", "country", "problem", "hand", "part", "place", "case", "week", "company", "system",
    "program", "question", "work", "number", "night", "point", "home", "water", "room", "mother",
    "area", "money", "story", "fact", "month", "lot", "right", "study", "book", "eye", "job",
    "word", "business", "issue", "side", "kind", "head", "house", "service", "friend", "father",
    "power", "hour", "game", "line", "end", "member", "law", "car", "city", "name", "team",
    "minute", "idea", "body", "back", "face", "level", "office", "door", "health", "person", "art",
    "war", "history", "party", "result", "change", "morning", "reason", "girl", "moment", "air",
    "teacher", "force", "good", "new", "first", "last", "long", "great", "little", "own", "other",
    "old", "big", "high", "small", "large", "next", "early", "young", "few", "public", "bad",
    "same", "able", "make", "know", "take", "see", "come", "think", "look", "want", "give", "use",
    "find", "tell", "ask", "seem", "feel", "try", "leave", "call", "keep", "let", "begin", "help",
    "show", "hear", "play", "run", "move", "live", "believe", "bring", "happen", "write", "sit",
    "stand", "lose", "pay", "meet", "learn", "lead", "understand", "watch", "follow", "stop",
    "speak", "read", "spend", "grow", "open", "walk", "win", "teach", "offer", "remember", "love",
    "consider", "appear", "buy", "wait", "serve", "die", "send", "build", "stay", "fall", "cut",
    "reach", "kill", "raise", "pass", "sell", "decide", "return", "explain", "hope", "develop",
    "carry", "break", "receive", "agree", "support", "hit", "produce", "eat", "cover", "catch",
    "draw", "choose",
];

/// How prompt length in words maps to length in tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenModel {
    /// Tokens a prompt costs beyond its words (BOS, the leading number).
    pub overhead: f64,
    /// Tokens per word.
    pub per_word: f64,
    /// Whether the model was measured with the server's tokenizer (`true`)
    /// or assumed (`false`: one token per word and per leading number).
    pub calibrated: bool,
}

impl TokenModel {
    /// The assumption when the server cannot tokenize: one token per word,
    /// one for the leading number.
    pub const ESTIMATE: TokenModel = TokenModel {
        overhead: 1.0,
        per_word: 1.0,
        calibrated: false,
    };

    /// The model through two measured points `(words, tokens)`; `None` when
    /// they do not describe a growing length.
    pub fn fit(a: (usize, u64), b: (usize, u64)) -> Option<TokenModel> {
        let (w1, t1) = (a.0 as f64, a.1 as f64);
        let (w2, t2) = (b.0 as f64, b.1 as f64);
        if w1 == w2 {
            return None;
        }
        let per_word = (t2 - t1) / (w2 - w1);
        if !per_word.is_finite() || per_word <= 0.0 {
            return None;
        }
        Some(TokenModel {
            overhead: t1 - per_word * w1,
            per_word,
            calibrated: true,
        })
    }

    /// Words to draw for a prompt of about `tokens` tokens (at least one).
    pub fn words_for(&self, tokens: usize) -> usize {
        let words = ((tokens as f64 - self.overhead) / self.per_word).round();
        if words.is_finite() && words >= 1.0 {
            words as usize
        } else {
            1
        }
    }

    /// Expected tokens of a prompt of `words` words (rounded).
    pub fn tokens_for(&self, words: usize) -> u64 {
        (self.overhead + self.per_word * words as f64)
            .round()
            .max(0.0) as u64
    }
}

/// One prompt to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    /// Position in the run (also the prompt's leading number).
    pub index: usize,
    /// The prompt text.
    pub text: String,
    /// Its expected length in tokens (from the [`TokenModel`]).
    pub expected_tokens: u64,
}

/// `"{index} "` followed by `words` words drawn for `index` from `seed`.
pub fn prompt_text(index: usize, words: usize, seed: u64) -> String {
    let mut rng = SplitMix64::stream(seed, (PROMPT_STREAM << 32) ^ index as u64);
    let mut text = index.to_string();
    for _ in 0..words {
        text.push(' ');
        text.push_str(WORDS[rng.below(WORDS.len())]);
    }
    text
}

/// `n` distinct prompts of about `tokens` tokens each under `model`.
pub fn build(n: usize, tokens: usize, seed: u64, model: &TokenModel) -> Vec<Prompt> {
    let words = model.words_for(tokens);
    let expected_tokens = model.tokens_for(words);
    (0..n)
        .map(|index| Prompt {
            index,
            text: prompt_text(index, words, seed),
            expected_tokens,
        })
        .collect()
}

/// Measures the server's tokenizer with `POST {base}/tokenize` on two sample
/// prompts around `tokens` tokens; falls back to [`TokenModel::ESTIMATE`]
/// when the endpoint is missing or answers something unusable.
pub async fn calibrate(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    tokens: usize,
    seed: u64,
    timeout: Duration,
) -> TokenModel {
    let short = tokens.max(8);
    let long = 2 * short;
    // An index no benchmark prompt uses.
    let sample = |words| prompt_text(usize::MAX, words, seed);
    let url = format!("{base}/tokenize");
    let count = |words: usize| {
        let body = json!({ "model": model, "prompt": sample(words) });
        let request = http.post(&url).json(&body).timeout(timeout);
        async move {
            let response = request.send().await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            token_count(&response.json::<Value>().await.ok()?)
        }
    };
    let Some(t_short) = count(short).await else {
        return TokenModel::ESTIMATE;
    };
    let Some(t_long) = count(long).await else {
        return TokenModel::ESTIMATE;
    };
    TokenModel::fit((short, t_short), (long, t_long)).unwrap_or(TokenModel::ESTIMATE)
}

/// The token count in a `/tokenize` answer: `count`, else the length of
/// `tokens`.
fn token_count(answer: &Value) -> Option<u64> {
    answer
        .get("count")
        .and_then(Value::as_u64)
        .or_else(|| Some(answer.get("tokens")?.as_array()?.len() as u64))
}

/// The generator streams that prompt words are drawn from (one per prompt,
/// this value in the high half of the stream number).
const PROMPT_STREAM: u64 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_distinct_and_numbered() {
        let prompts = build(50, 32, 0, &TokenModel::ESTIMATE);
        for (i, p) in prompts.iter().enumerate() {
            let mut words = p.text.split(' ');
            assert_eq!(words.next(), Some(i.to_string().as_str()));
            // 32 tokens = 1 for the number + 31 words.
            assert_eq!(words.count(), 31);
            assert_eq!(p.expected_tokens, 32);
        }
        for a in 0..prompts.len() {
            for b in a + 1..prompts.len() {
                assert_ne!(prompts[a].text, prompts[b].text);
                // Word draws differ too, not only the numbers.
                let wa: Vec<_> = prompts[a].text.split(' ').skip(1).collect();
                let wb: Vec<_> = prompts[b].text.split(' ').skip(1).collect();
                assert_ne!(wa, wb);
            }
        }
    }

    #[test]
    fn prompts_depend_on_the_seed_only() {
        assert_eq!(prompt_text(3, 20, 9), prompt_text(3, 20, 9));
        assert_ne!(prompt_text(3, 20, 9), prompt_text(3, 20, 10));
    }

    #[test]
    fn word_list_has_no_spaces_or_duplicates() {
        let mut w: Vec<_> = WORDS.to_vec();
        assert!(w.iter().all(|s| !s.is_empty() && !s.contains(' ')));
        w.sort_unstable();
        w.dedup();
        assert_eq!(w.len(), WORDS.len());
    }

    #[test]
    fn fit_solves_the_linear_model() {
        // tokens = 3 + 2 · words
        let m = TokenModel::fit((10, 23), (20, 43)).unwrap();
        assert_eq!(m.overhead, 3.0);
        assert_eq!(m.per_word, 2.0);
        assert!(m.calibrated);
        assert_eq!(m.words_for(103), 50);
        assert_eq!(m.tokens_for(50), 103);
        assert_eq!(m.words_for(1), 1);
        assert_eq!(TokenModel::fit((10, 23), (10, 23)), None);
        assert_eq!(TokenModel::fit((10, 23), (20, 23)), None);
    }

    #[test]
    fn token_count_reads_count_or_tokens() {
        assert_eq!(token_count(&json!({"count": 5, "tokens": [1]})), Some(5));
        assert_eq!(token_count(&json!({"tokens": [1, 2, 3]})), Some(3));
        assert_eq!(token_count(&json!({"error": "no"})), None);
    }
}
