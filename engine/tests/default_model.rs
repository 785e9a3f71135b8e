//! The default model answers the questions in the README.

mod common;

use kiln::chat::{ChatMessage, ChatTemplate};
use kiln::sampler::SamplingParams;
use kiln::stop::{FinishReason, StopReason};

#[test]
fn greedy_completion_and_chat_both_say_paris() {
    let mut engine = common::engine_with(Default::default(), Default::default());
    let tok = engine.tokenizer().clone();
    let greedy = SamplingParams {
        temperature: 0.0,
        max_tokens: 8,
        ..SamplingParams::default()
    };

    let prompt = tok.encode("The capital of France is", true).unwrap();
    let out = engine.generate(&[prompt], &greedy).unwrap().remove(0);
    assert!(out.text.starts_with(" Paris"), "{:?}", out.text);

    let template = ChatTemplate::new(
        tok.chat_template()
            .expect("the GGUF carries a chat template"),
        tok.bos_token(),
        tok.eos_token(),
    )
    .unwrap();
    let text = template
        .render(
            &[ChatMessage {
                role: "user".into(),
                content: "What is the capital of France?".into(),
            }],
            true,
        )
        .unwrap();
    assert!(
        text.starts_with("<|im_start|>system\n"),
        "default system prompt: {text:?}"
    );
    let prompt = tok.encode(&text, true).unwrap();
    let params = SamplingParams {
        max_tokens: 64,
        ..greedy
    };
    let out = engine.generate(&[prompt], &params).unwrap().remove(0);
    assert!(out.text.contains("Paris"), "{:?}", out.text);
    let finish = out.finish.expect("finished");
    assert_eq!(finish.reason, FinishReason::Stop, "{:?}", out.text);
    assert_eq!(finish.stop_reason, Some(StopReason::Eos));
    assert_eq!(out.tokens.last(), tok.token_to_id("<|im_end|>").as_ref());
    assert!(!out.text.contains("<|im_end|>"));
}
