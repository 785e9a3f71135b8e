//! Stop conditions: EOS, stop token ids, `max_tokens` ([`check_token`]) and
//! stop strings that may span several tokens ([`StopStringMatcher`]).
//!
//! The token checks follow vLLM v1's `check_stop`: nothing stops a sequence
//! while it has fewer than `min_tokens` generated tokens; then EOS (unless
//! `ignore_eos`), then `stop_token_ids`, then `max_tokens`. Stop strings are
//! matched on the detokenised text, after the token checks.
//!
//! Per generated token, as vLLM v1 does it (`n` counts this token):
//!
//! ```text
//! sampled = sampler.sample(logits_row, params)?; sampler.record(sampled.token)
//! finish  = check_token(params, eos_ids, sampled.token, n)
//! delta   = if finish is Stop (EOS or stop token) and !include_stop_str_in_output
//!               { "" }  else { detok.push(tokenizer, sampled.token)? }
//! if finish.is_some() { delta += detok.finish(tokenizer)? }
//! if n <= min_tokens  { emit(delta) }               // stop strings not checked yet
//! else match matcher.push(delta) {
//!     StopMatch { text, stop: Some(s) } => { emit(text); finish = (Stop, StopString(s)) }
//!     StopMatch { text, stop: None }    => emit(text),
//! }
//! if finish.is_some() { emit(matcher.flush()) }     // also on abort
//! ```

use serde::Serialize;

use crate::sampler::SamplingParams;

/// Why a sequence finished, in the OpenAI API's wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// EOS, a stop token id or a stop string.
    Stop,
    /// `max_tokens` (or the model's context length) reached.
    Length,
    /// The request was cancelled, for example by a client disconnect.
    Abort,
}

impl FinishReason {
    /// `"stop"`, `"length"` or `"abort"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What made a sequence finish with [`FinishReason::Stop`].
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// The model's end-of-sequence token.
    Eos,
    /// One of the request's `stop_token_ids`.
    StopToken(u32),
    /// One of the request's `stop` strings.
    StopString(String),
}

/// Checks the token just generated, `num_generated` being the number of
/// generated tokens including it. Returns `None` while the sequence goes on.
///
/// As vLLM v1: while `num_generated < min_tokens` nothing stops it; then an
/// EOS token (one of `eos_token_ids`, unless `ignore_eos`) or a stop token
/// id gives [`FinishReason::Stop`] (so an EOS that is also the last allowed
/// token reports a stop, not a length); then reaching `max_tokens` gives
/// [`FinishReason::Length`].
pub fn check_token(
    params: &SamplingParams,
    eos_token_ids: &[u32],
    token: u32,
    num_generated: usize,
) -> Option<(FinishReason, Option<StopReason>)> {
    if num_generated < params.min_tokens {
        return None;
    }
    if !params.ignore_eos && eos_token_ids.contains(&token) {
        return Some((FinishReason::Stop, Some(StopReason::Eos)));
    }
    if params.stop_token_ids.contains(&token) {
        return Some((FinishReason::Stop, Some(StopReason::StopToken(token))));
    }
    if num_generated >= params.max_tokens {
        return Some((FinishReason::Length, None));
    }
    None
}

/// What [`StopStringMatcher::push`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopMatch {
    /// Text that is safe to emit now.
    pub text: String,
    /// The stop string that matched; generation stops when it is `Some`.
    pub stop: Option<String>,
}

/// Finds stop strings in streamed text, across delta boundaries.
///
/// It holds back the longest end of the text that could still be the start
/// of a stop string, and releases it once it cannot be (or at
/// [`flush`](Self::flush)). When stop strings overlap, the one that is
/// complete first in the text wins (of two that end at the same place, the
/// longer); this does not depend on how the text was cut into deltas.
#[derive(Clone, Debug)]
pub struct StopStringMatcher {
    stops: Vec<String>,
    include_stop_str_in_output: bool,
    /// Text received but not yet emitted; never contains a whole stop
    /// string.
    held: String,
    stopped: bool,
}

impl StopStringMatcher {
    /// A matcher for `stops` (empty strings are ignored); with
    /// `include_stop_str_in_output` the matched stop string ends the
    /// emitted text, else the text ends just before it.
    pub fn new(stops: &[String], include_stop_str_in_output: bool) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            include_stop_str_in_output,
            held: String::new(),
            stopped: false,
        }
    }

    /// A matcher for a request's `stop` and `include_stop_str_in_output`.
    pub fn from_params(params: &SamplingParams) -> Self {
        Self::new(&params.stop, params.include_stop_str_in_output)
    }

    /// Whether there are no stop strings to look for (every delta then
    /// passes through unchanged).
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Whether a stop string has matched; later pushes return nothing.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the next text delta; returns the text that can be emitted and
    /// the stop string if one is now complete.
    pub fn push(&mut self, delta: &str) -> StopMatch {
        if self.stopped {
            return StopMatch::default();
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(delta);

        // (end, start, stop index) of the match that completes first.
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, stop) in self.stops.iter().enumerate() {
            if let Some(start) = buf.find(stop.as_str()) {
                let key = (start + stop.len(), start, i);
                let better = match best {
                    None => true,
                    Some((end, first, _)) => key.0 < end || (key.0 == end && key.1 < first),
                };
                if better {
                    best = Some(key);
                }
            }
        }
        if let Some((end, start, i)) = best {
            self.stopped = true;
            buf.truncate(if self.include_stop_str_in_output {
                end
            } else {
                start
            });
            return StopMatch {
                text: buf,
                stop: Some(self.stops[i].clone()),
            };
        }

        let mut split = buf.len() - self.partial_match_len(&buf);
        while !buf.is_char_boundary(split) {
            split -= 1;
        }
        self.held = buf.split_off(split);
        StopMatch {
            text: buf,
            stop: None,
        }
    }

    /// Releases the held-back text, for a sequence that ends for another
    /// reason (EOS, a stop token, `max_tokens`, abort).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest end of `text` that is a proper start
    /// of some stop string.
    fn partial_match_len(&self, text: &str) -> usize {
        let text = text.as_bytes();
        let mut longest = 0;
        for stop in &self.stops {
            let stop = stop.as_bytes();
            let max = (stop.len() - 1).min(text.len());
            for len in (longest + 1..=max).rev() {
                if text.ends_with(&stop[..len]) {
                    longest = len;
                    break;
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str], include: bool) -> StopStringMatcher {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        StopStringMatcher::new(&stops, include)
    }

    /// Feeds `deltas`; returns the emitted text (with the flush when no stop
    /// string matched) and the matched stop string.
    fn feed(m: &mut StopStringMatcher, deltas: &[&str]) -> (String, Option<String>) {
        let mut out = String::new();
        for d in deltas {
            let r = m.push(d);
            out.push_str(&r.text);
            if r.stop.is_some() {
                return (out, r.stop);
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn finish_reason_wording() {
        assert_eq!(FinishReason::Stop.as_str(), "stop");
        assert_eq!(FinishReason::Length.as_str(), "length");
        assert_eq!(FinishReason::Abort.to_string(), "abort");
        assert_eq!(
            serde_json::to_string(&FinishReason::Length).unwrap(),
            "\"length\""
        );
    }

    #[test]
    fn check_token_eos_stop_tokens_and_length() {
        let p = SamplingParams {
            max_tokens: 4,
            stop_token_ids: vec![7],
            ..SamplingParams::default()
        };
        let eos = [2, 3];
        assert_eq!(check_token(&p, &eos, 5, 1), None);
        assert_eq!(
            check_token(&p, &eos, 3, 1),
            Some((FinishReason::Stop, Some(StopReason::Eos)))
        );
        assert_eq!(
            check_token(&p, &eos, 7, 2),
            Some((FinishReason::Stop, Some(StopReason::StopToken(7))))
        );
        assert_eq!(
            check_token(&p, &eos, 5, 4),
            Some((FinishReason::Length, None))
        );
        // EOS as the last allowed token is a stop.
        assert_eq!(
            check_token(&p, &eos, 2, 4),
            Some((FinishReason::Stop, Some(StopReason::Eos)))
        );
        let ignore = SamplingParams {
            ignore_eos: true,
            ..p.clone()
        };
        assert_eq!(check_token(&ignore, &eos, 2, 1), None);
        assert_eq!(
            check_token(&ignore, &eos, 7, 1),
            Some((FinishReason::Stop, Some(StopReason::StopToken(7))))
        );
        assert_eq!(
            check_token(&ignore, &eos, 2, 4),
            Some((FinishReason::Length, None))
        );
    }

    #[test]
    fn check_token_min_tokens() {
        let p = SamplingParams {
            min_tokens: 3,
            max_tokens: 3,
            stop_token_ids: vec![7],
            ..SamplingParams::default()
        };
        assert_eq!(check_token(&p, &[2], 2, 1), None);
        assert_eq!(check_token(&p, &[2], 7, 2), None);
        assert_eq!(
            check_token(&p, &[2], 2, 3),
            Some((FinishReason::Stop, Some(StopReason::Eos)))
        );
        assert_eq!(
            check_token(&p, &[2], 5, 3),
            Some((FinishReason::Length, None))
        );
    }

    #[test]
    fn stop_string_split_across_three_deltas() {
        let mut m = matcher(&["###"], false);
        let r = m.push("Hello #");
        assert_eq!(
            r,
            StopMatch {
                text: "Hello ".into(),
                stop: None
            }
        );
        assert_eq!(m.push("#").text, "");
        let r = m.push("# tail");
        assert_eq!(
            r,
            StopMatch {
                text: String::new(),
                stop: Some("###".into())
            }
        );
        assert!(m.is_stopped());
        assert_eq!(m.push("more"), StopMatch::default());
        assert_eq!(m.flush(), "");

        let mut m = matcher(&["END"], false);
        assert_eq!(
            feed(&mut m, &["the E", "N", "D. more"]),
            ("the ".to_string(), Some("END".to_string()))
        );
    }

    #[test]
    fn false_partial_match_is_emitted_intact() {
        let mut m = matcher(&["</s>"], false);
        assert_eq!(m.push("a <").text, "a ");
        assert_eq!(m.push("/").text, "");
        // "</x" cannot start "</s>": released whole.
        assert_eq!(m.push("x>").text, "</x>");
        // A partial match at the end is released by flush.
        assert_eq!(m.push("b </").text, "b ");
        assert_eq!(m.flush(), "</");
        // Overlapping restart: "<</s>" still finds the stop string.
        let mut m = matcher(&["</s>"], false);
        assert_eq!(
            feed(&mut m, &["x<", "<", "/s", ">"]),
            ("x<".into(), Some("</s>".into()))
        );
    }

    #[test]
    fn earliest_stop_string_wins() {
        let mut m = matcher(&["world", "lo"], false);
        assert_eq!(
            feed(&mut m, &["hello world"]),
            ("hel".into(), Some("lo".into()))
        );
        // The match that completes first wins, however the text is cut.
        for deltas in [&["xyz"][..], &["x", "y", "z"], &["xy", "z"]] {
            let mut m = matcher(&["xyz", "y"], true);
            assert_eq!(
                feed(&mut m, deltas),
                ("xy".into(), Some("y".into())),
                "{deltas:?}"
            );
        }
        // Same end: the longer one.
        for deltas in [&["abc"][..], &["a", "b", "c"]] {
            let mut m = matcher(&["bc", "abc"], true);
            assert_eq!(feed(&mut m, deltas), ("abc".into(), Some("abc".into())));
        }
    }

    #[test]
    fn stop_string_at_the_very_start() {
        let mut m = matcher(&["\n\n"], false);
        assert_eq!(
            feed(&mut m, &["\n", "\nabc"]),
            (String::new(), Some("\n\n".into()))
        );
        let mut m = matcher(&["Stop"], false);
        assert_eq!(
            feed(&mut m, &["Stop"]),
            (String::new(), Some("Stop".into()))
        );
    }

    #[test]
    fn include_stop_str_in_output() {
        let mut m = matcher(&["###"], true);
        assert_eq!(
            feed(&mut m, &["ab #", "#", "# cd"]),
            ("ab ###".into(), Some("###".into()))
        );
    }

    #[test]
    fn multibyte_text_and_stop_strings() {
        let mut m = matcher(&["日本語"], false);
        assert_eq!(m.push("こんにちは日").text, "こんにちは");
        assert_eq!(m.push("本").text, "");
        assert_eq!(m.push("人").text, "日本人");
        let mut m = matcher(&["é!"], false);
        assert_eq!(
            feed(&mut m, &["caf", "é", "!"]),
            ("caf".into(), Some("é!".into()))
        );
    }

    #[test]
    fn no_stop_strings_pass_everything_through() {
        let mut m = StopStringMatcher::from_params(&SamplingParams::default());
        assert!(m.is_empty());
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.flush(), "");
        let mut m = matcher(&[""], false);
        assert!(m.is_empty());
        assert_eq!(m.push("abc").text, "abc");
    }
}
