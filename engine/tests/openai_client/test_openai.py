"""Real-client tests for `kiln serve`, the OpenAI-compatible server.

These tests talk to a running server the way applications do: through the
official `openai` Python package, and through raw `httpx` where a request
cannot be expressed with the client (malformed JSON, invalid UTF-8, SSE
framing). They cover completions and chat completions (plain, streamed,
`n > 1`, `stop`, `logprobs`, `seed`, `echo`, vLLM's extra sampling fields),
the error contract (status codes and `{"error": {...}}` bodies, never a
5xx for bad input), `/v1/models`, `/health`, `/metrics`, `/tokenize`,
`/detokenize`, and validate real responses against the server's own
`/openapi.json` with jsonschema (Draft 2020-12).

The expected texts assume the default model, SmolLM2-135M-Instruct.

Run, against a server that is already up:

    kiln serve --port 8123 --max-body-bytes 64KiB &
    pip install -r engine/tests/openai_client/requirements.txt
    KILN_BASE_URL=http://127.0.0.1:8123 \
        python -m unittest engine/tests/openai_client/test_openai.py -v

or `python engine/tests/openai_client/test_openai.py`. Set `KILN_API_KEY`
when the server was started with an API key. CI starts the server with
`--max-body-bytes 64KiB` so that the 413 test runs; with a larger limit
that test is skipped.
"""

import json
import math
import os
import re
import unittest

import httpx
import jsonschema
import openai
from openai import OpenAI

BASE_URL = os.environ.get("KILN_BASE_URL", "http://127.0.0.1:8123").rstrip("/")
API_KEY = os.environ.get("KILN_API_KEY", "unused")
TIMEOUT = 120.0

PROMPT = "The capital of France is"
PROMPT_IDS = [504, 3575, 282, 4649, 314]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

# Filled by setUpModule.
MODEL = None
CLIENT = None
HTTP = None


def setUpModule():
    global MODEL, CLIENT, HTTP
    HTTP = httpx.Client(
        base_url=BASE_URL,
        timeout=TIMEOUT,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    try:
        HTTP.get("/health").raise_for_status()
    except httpx.HTTPError as e:
        raise RuntimeError(
            f"no kiln server answering at {BASE_URL} (set KILN_BASE_URL): {e}"
        ) from e
    # No retries: a 5xx must surface as a failure, not be retried away.
    CLIENT = OpenAI(
        base_url=BASE_URL + "/v1", api_key=API_KEY, max_retries=0, timeout=TIMEOUT
    )
    models = CLIENT.models.list().data
    MODEL = models[0].id


def tearDownModule():
    if CLIENT is not None:
        CLIENT.close()
    if HTTP is not None:
        HTTP.close()


def complete(**kw):
    """A completion with the default prompt, greedy and short unless told."""
    args = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    args.update(kw)
    return CLIENT.completions.create(**args)


def chat(**kw):
    """A chat completion of the default question, greedy and short unless told."""
    args = {"model": MODEL, "messages": QUESTION, "max_tokens": 16, "temperature": 0}
    args.update(kw)
    return CLIENT.chat.completions.create(**args)


def sse_events(path, body):
    """POST a streaming request with raw httpx; returns (response, data
    payloads in order, the raw text). Asserts nothing itself."""
    with HTTP.stream("POST", path, json=body) as r:
        raw = r.read().decode("utf-8")
    datas = []
    for event in raw.split("\n\n"):
        lines = [l for l in event.split("\n") if l.startswith("data:")]
        if lines:
            datas.append("\n".join(l[len("data:"):].lstrip(" ") for l in lines))
    return r, datas, raw


class ErrorAssertions:
    """Checks of the OpenAI error contract."""

    def assert_error_body(self, body, status):
        self.assertIsInstance(body, dict, body)
        self.assertEqual(set(body), {"error"}, body)
        err = body["error"]
        self.assertTrue({"message", "type", "param", "code"} <= set(err), err)
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"], err)
        self.assertIsInstance(err["type"], str)
        self.assertTrue(err["param"] is None or isinstance(err["param"], str), err)
        self.assertEqual(err["code"], status, err)
        return err

    def assert_http_error(self, response, status):
        self.assertEqual(response.status_code, status, response.text)
        self.assertTrue(
            response.headers.get("content-type", "").startswith("application/json"),
            response.headers,
        )
        return self.assert_error_body(response.json(), status)

    def assert_client_error(self, exc_type, status, fn, **kw):
        """Call `fn(**kw)`, expect `exc_type` with `status`; return the error."""
        with self.assertRaises(exc_type) as cm:
            fn(**kw)
        exc = cm.exception
        self.assertEqual(exc.status_code, status)
        return self.assert_error_body(exc.response.json(), status)


# --------------------------------------------------------------------------
# 1, 2, 8, 10: plain requests and the side endpoints
# --------------------------------------------------------------------------


class TestModels(unittest.TestCase):
    def test_exactly_one_model(self):
        models = CLIENT.models.list().data
        self.assertEqual(len(models), 1)
        self.assertEqual(models[0].id, MODEL)
        self.assertEqual(models[0].object, "model")
        self.assertIn("smollm2", MODEL.lower())

    def test_retrieve_is_not_a_5xx(self):
        r = HTTP.get(f"/v1/models/{MODEL}")
        self.assertLess(r.status_code, 500, r.text)


class TestCompletions(unittest.TestCase):
    def test_greedy_paris(self):
        r = complete()
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(r.model, MODEL)
        self.assertEqual(len(r.choices), 1)
        self.assertTrue(r.choices[0].text.startswith(" Paris"), r.choices[0].text)

    def test_usage_adds_up(self):
        r = complete(max_tokens=8)
        u = r.usage
        self.assertEqual(u.prompt_tokens, len(PROMPT_IDS))
        self.assertGreater(u.completion_tokens, 0)
        self.assertLessEqual(u.completion_tokens, 8)
        self.assertEqual(u.prompt_tokens + u.completion_tokens, u.total_tokens)

    def test_max_tokens_gives_length(self):
        r = complete(max_tokens=3)
        self.assertEqual(r.usage.completion_tokens, 3)
        self.assertEqual(r.choices[0].finish_reason, "length")

    def test_default_max_tokens_is_16(self):
        # OpenAI's (and vLLM's) default for legacy completions is 16 tokens.
        # Streamed with ignore_eos and counted through logprobs, so that a
        # server that generates more is cut off after 17 tokens.
        stream = CLIENT.completions.create(
            model=MODEL,
            prompt=PROMPT,
            temperature=0,
            logprobs=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        tokens, finish = 0, None
        with stream:
            for chunk in stream:
                for ch in chunk.choices:
                    if ch.logprobs is not None:
                        tokens += len(ch.logprobs.tokens)
                    finish = finish or ch.finish_reason
                if finish or tokens > 16:
                    break
        self.assertEqual(tokens, 16)
        self.assertEqual(finish, "length")

    def test_echo_prepends_prompt(self):
        r = complete(echo=True, max_tokens=4)
        text = r.choices[0].text
        self.assertTrue(text.startswith(PROMPT), text)
        self.assertTrue(text[len(PROMPT):].startswith(" Paris"), text)

    def test_token_id_prompt_matches_text_prompt(self):
        a = complete(prompt=PROMPT, max_tokens=8)
        b = complete(prompt=PROMPT_IDS, max_tokens=8)
        self.assertEqual(a.choices[0].text, b.choices[0].text)
        self.assertEqual(b.usage.prompt_tokens, len(PROMPT_IDS))

    def test_prompt_list_gives_one_choice_each(self):
        r = complete(prompt=[PROMPT, "1, 2, 3,"], max_tokens=4)
        self.assertEqual([c.index for c in r.choices], [0, 1])
        self.assertTrue(r.choices[0].text.startswith(" Paris"), r.choices[0].text)


class TestChat(unittest.TestCase):
    def test_paris(self):
        r = chat(max_tokens=32)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(len(r.choices), 1)
        c = r.choices[0]
        self.assertEqual(c.message.role, "assistant")
        self.assertIn("Paris", c.message.content)
        self.assertEqual(c.finish_reason, "stop")

    def test_usage_adds_up(self):
        u = chat().usage
        self.assertGreater(u.prompt_tokens, 0)
        self.assertEqual(u.prompt_tokens + u.completion_tokens, u.total_tokens)

    def test_max_completion_tokens(self):
        r = chat(max_tokens=None, max_completion_tokens=2)
        self.assertEqual(r.usage.completion_tokens, 2)
        self.assertEqual(r.choices[0].finish_reason, "length")

    def test_every_role_accepted(self):
        msgs = [
            {"role": "system", "content": "Answer briefly."},
            {"role": "developer", "content": "Use English."},
            {"role": "user", "content": "Hi", "name": "bob"},
            {"role": "assistant", "content": None},
            {"role": "tool", "content": "42"},
            {"role": "user", "content": "What is the capital of France?"},
        ]
        r = chat(messages=msgs, max_tokens=4)
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertTrue(r.choices[0].message.content)

    def test_text_content_parts(self):
        msgs = [{"role": "user", "content": [{"type": "text", "text": QUESTION[0]["content"]}]}]
        a = chat(messages=msgs)
        b = chat()
        self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)


class TestTokenizer(unittest.TestCase):
    def test_tokenize(self):
        r = HTTP.post("/tokenize", json={"prompt": PROMPT})
        self.assertEqual(r.status_code, 200, r.text)
        body = r.json()
        self.assertEqual(body["tokens"], PROMPT_IDS)
        self.assertEqual(body["count"], 5)
        self.assertGreater(body["max_model_len"], 5)

    def test_detokenize_round_trip(self):
        r = HTTP.post("/detokenize", json={"tokens": PROMPT_IDS})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["prompt"], PROMPT)

    def test_tokenize_messages_counts_chat_prompt(self):
        r = HTTP.post("/tokenize", json={"messages": QUESTION})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["count"], chat(max_tokens=1).usage.prompt_tokens)


class TestHealthAndMetrics(unittest.TestCase):
    def test_health(self):
        r = HTTP.get("/health")
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.json()["status"], "ok")

    def test_metrics_names(self):
        complete(max_tokens=2)
        r = HTTP.get("/metrics")
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["content-type"].startswith("text/plain"), r.headers)
        for name in (
            "kiln_num_requests_running",
            "kiln_kv_cache_usage_perc",
            "kiln_time_to_first_token_seconds_bucket",
            "kiln_prompt_tokens_total",
        ):
            self.assertIn(name, r.text)

    def test_prompt_tokens_counter_grows(self):
        def counter():
            text = HTTP.get("/metrics").text
            m = re.search(r"^kiln_prompt_tokens_total (\S+)$", text, re.M)
            self.assertIsNotNone(m, text)
            return float(m.group(1))

        before = counter()
        complete(max_tokens=1)
        self.assertGreaterEqual(counter() - before, len(PROMPT_IDS))

    def test_unknown_route_is_json_404(self):
        r = HTTP.get("/v1/no-such-endpoint")
        self.assertEqual(r.status_code, 404)
        ErrorAssertions.assert_error_body(self, r.json(), 404)


# --------------------------------------------------------------------------
# 3, 4: streaming and n > 1
# --------------------------------------------------------------------------


class TestStreaming(unittest.TestCase):
    def check_chunks_common(self, chunks, n=1):
        """Same id everywhere, exactly one finish_reason per choice index."""
        self.assertTrue(chunks)
        self.assertEqual(len({c.id for c in chunks}), 1, [c.id for c in chunks])
        finishes = {}
        for c in chunks:
            for ch in c.choices:
                if ch.finish_reason is not None:
                    finishes.setdefault(ch.index, []).append(ch.finish_reason)
        self.assertEqual(sorted(finishes), list(range(n)), finishes)
        for idx, f in finishes.items():
            self.assertEqual(len(f), 1, f"choice {idx}: {f}")
            self.assertIn(f[0], ("stop", "length"))
        return {i: f[0] for i, f in finishes.items()}

    def test_completion_stream_equals_non_stream(self):
        ref = complete(max_tokens=12)
        chunks = list(complete(max_tokens=12, stream=True))
        text = "".join(ch.text for c in chunks for ch in c.choices)
        self.assertEqual(text, ref.choices[0].text)
        finishes = self.check_chunks_common(chunks)
        self.assertEqual(finishes[0], ref.choices[0].finish_reason)
        for c in chunks:
            self.assertEqual(c.object, "text_completion")
            self.assertEqual(c.model, MODEL)
            self.assertIsNone(c.usage)

    def test_chat_stream_equals_non_stream(self):
        ref = chat(max_tokens=16)
        chunks = list(chat(max_tokens=16, stream=True))
        first = chunks[0].choices[0]
        self.assertEqual(first.delta.role, "assistant")
        text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
        self.assertEqual(text, ref.choices[0].message.content)
        finishes = self.check_chunks_common(chunks)
        self.assertEqual(finishes[0], ref.choices[0].finish_reason)
        for c in chunks:
            self.assertEqual(c.object, "chat.completion.chunk")

    def test_completion_stream_include_usage(self):
        ref = complete(max_tokens=6)
        chunks = list(
            complete(max_tokens=6, stream=True, stream_options={"include_usage": True})
        )
        last = chunks[-1]
        self.assertEqual(last.choices, [])
        self.assertIsNotNone(last.usage)
        self.assertEqual(last.usage.prompt_tokens, ref.usage.prompt_tokens)
        self.assertEqual(last.usage.completion_tokens, ref.usage.completion_tokens)
        self.assertEqual(
            last.usage.prompt_tokens + last.usage.completion_tokens,
            last.usage.total_tokens,
        )
        for c in chunks[:-1]:
            self.assertTrue(c.choices)
            self.assertIsNone(c.usage)
        self.check_chunks_common(chunks)

    def test_chat_stream_include_usage(self):
        ref = chat(max_tokens=6)
        chunks = list(chat(max_tokens=6, stream=True, stream_options={"include_usage": True}))
        last = chunks[-1]
        self.assertEqual(last.choices, [])
        self.assertEqual(last.usage.completion_tokens, ref.usage.completion_tokens)
        self.assertEqual(last.usage.prompt_tokens, ref.usage.prompt_tokens)
        self.assertEqual(
            last.usage.prompt_tokens + last.usage.completion_tokens,
            last.usage.total_tokens,
        )
        self.check_chunks_common(chunks)

    def test_raw_sse_framing_ends_with_done(self):
        for path, body in (
            ("/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "temperature": 0}),
            ("/v1/chat/completions", {"messages": QUESTION, "max_tokens": 4, "temperature": 0}),
        ):
            body = dict(body, model=MODEL, stream=True)
            with self.subTest(path=path):
                r, datas, raw = sse_events(path, body)
                self.assertEqual(r.status_code, 200, raw)
                self.assertTrue(
                    r.headers["content-type"].startswith("text/event-stream"), r.headers
                )
                self.assertGreaterEqual(len(datas), 2, raw)
                self.assertEqual(datas[-1], "[DONE]")
                self.assertEqual(datas.count("[DONE]"), 1)
                self.assertTrue(raw.rstrip("\n").endswith("data: [DONE]"), raw[-200:])
                for d in datas[:-1]:
                    self.assertNotIn("error", json.loads(d))

    def test_completion_n2_stream(self):
        chunks = list(complete(n=2, temperature=0.8, seed=7, max_tokens=6, stream=True))
        self.check_chunks_common(chunks, n=2)
        texts = {0: "", 1: ""}
        for c in chunks:
            for ch in c.choices:
                texts[ch.index] += ch.text
        self.assertTrue(texts[0] and texts[1], texts)

    def test_chat_n2_stream(self):
        chunks = list(chat(n=2, temperature=0.8, seed=7, max_tokens=6, stream=True))
        self.check_chunks_common(chunks, n=2)
        first_delta = {}
        for c in chunks:
            for ch in c.choices:
                first_delta.setdefault(ch.index, ch.delta)
        self.assertEqual(sorted(first_delta), [0, 1])
        for idx, d in first_delta.items():
            self.assertEqual(d.role, "assistant", f"choice {idx}")


class TestN(unittest.TestCase):
    def test_completion_n3(self):
        r = complete(n=3, temperature=0.8, seed=42, max_tokens=8)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1, 2])
        for c in r.choices:
            self.assertTrue(c.text, c)
            self.assertIn(c.finish_reason, ("stop", "length"))
        u = r.usage
        self.assertEqual(u.prompt_tokens + u.completion_tokens, u.total_tokens)
        self.assertGreaterEqual(u.completion_tokens, 3)

    def test_chat_n3(self):
        r = chat(n=3, temperature=0.8, seed=42, max_tokens=8)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1, 2])
        for c in r.choices:
            self.assertEqual(c.message.role, "assistant")
            self.assertTrue(c.message.content, c)
            self.assertIn(c.finish_reason, ("stop", "length"))

    def test_n3_with_seed_is_reproducible(self):
        a = complete(n=3, temperature=0.8, seed=42, max_tokens=8)
        b = complete(n=3, temperature=0.8, seed=42, max_tokens=8)
        self.assertEqual([c.text for c in a.choices], [c.text for c in b.choices])


# --------------------------------------------------------------------------
# 5, 6, 7: stop, logprobs, seed and vLLM's extras
# --------------------------------------------------------------------------


class TestStop(unittest.TestCase):
    def test_stop_list(self):
        r = complete(stop=["."], max_tokens=12)
        c = r.choices[0]
        self.assertNotIn(".", c.text)
        self.assertTrue(c.text.startswith(" Paris"), c.text)
        self.assertEqual(c.finish_reason, "stop")
        self.assertEqual(c.model_extra.get("stop_reason"), ".")

    def test_stop_string(self):
        r = complete(stop=".", max_tokens=12)
        c = r.choices[0]
        self.assertEqual(c.text, " Paris")
        self.assertEqual(c.finish_reason, "stop")

    def test_stop_in_stream(self):
        chunks = list(complete(stop=["."], max_tokens=12, stream=True))
        text = "".join(ch.text for c in chunks for ch in c.choices)
        self.assertEqual(text, " Paris")
        reasons = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
        self.assertEqual(reasons, ["stop"])

    def test_chat_stop(self):
        r = chat(stop=[" Paris"], max_tokens=16)
        c = r.choices[0]
        self.assertNotIn("Paris", c.message.content)
        self.assertEqual(c.finish_reason, "stop")


class TestLogprobs(unittest.TestCase):
    def test_completion_logprobs(self):
        r = complete(logprobs=3, max_tokens=8)
        c = r.choices[0]
        lp = c.logprobs
        self.assertIsNotNone(lp)
        n = len(lp.tokens)
        self.assertEqual(n, r.usage.completion_tokens)
        self.assertEqual(len(lp.token_logprobs), n)
        self.assertEqual(len(lp.top_logprobs), n)
        self.assertEqual(len(lp.text_offset), n)
        self.assertEqual("".join(lp.tokens), c.text)
        self.assertEqual(lp.text_offset[0], 0)
        for i in range(n):
            tok, chosen, top = lp.tokens[i], lp.token_logprobs[i], lp.top_logprobs[i]
            self.assertLessEqual(chosen, 0.0)
            self.assertIsInstance(top, dict)
            self.assertEqual(len(top), 3, top)
            for v in top.values():
                self.assertLessEqual(v, 0.0)
            # Greedy: the chosen token is the most likely one.
            self.assertIn(tok, top)
            self.assertTrue(math.isclose(top[tok], chosen, abs_tol=1e-5), (tok, chosen, top))
            self.assertTrue(math.isclose(max(top.values()), chosen, abs_tol=1e-5), top)
            if i + 1 < n:
                self.assertEqual(lp.text_offset[i + 1], lp.text_offset[i] + len(tok))

    def test_completion_logprobs_zero_gives_chosen_only(self):
        r = complete(logprobs=0, max_tokens=4)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.token_logprobs), r.usage.completion_tokens)
        for v in lp.token_logprobs:
            self.assertLessEqual(v, 0.0)

    def test_completion_stream_logprobs(self):
        ref = complete(logprobs=2, max_tokens=6)
        chunks = list(complete(logprobs=2, max_tokens=6, stream=True))
        tokens, values = [], []
        for c in chunks:
            for ch in c.choices:
                if ch.logprobs is not None:
                    tokens += ch.logprobs.tokens
                    values += ch.logprobs.token_logprobs
        self.assertEqual(tokens, ref.choices[0].logprobs.tokens)
        for a, b in zip(values, ref.choices[0].logprobs.token_logprobs):
            self.assertTrue(math.isclose(a, b, abs_tol=1e-4), (a, b))

    def test_chat_logprobs(self):
        # Six tokens end the answer before its EOS (finish_reason "length").
        r = chat(logprobs=True, top_logprobs=2, max_tokens=6)
        c = r.choices[0]
        self.assertEqual(c.finish_reason, "length")
        content = c.logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens)
        self.assertEqual("".join(e.token for e in content), c.message.content)
        for e in content:
            self.assertLessEqual(e.logprob, 0.0)
            self.assertEqual(e.bytes, list(e.token.encode("utf-8")))
            self.assertEqual(len(e.top_logprobs), 2)
            for t in e.top_logprobs:
                self.assertLessEqual(t.logprob, 0.0)
                self.assertEqual(t.bytes, list(t.token.encode("utf-8")))
            # Greedy: the chosen token is the most likely one.
            best = max(e.top_logprobs, key=lambda t: t.logprob)
            self.assertEqual(best.token, e.token)
            self.assertTrue(math.isclose(best.logprob, e.logprob, abs_tol=1e-5))

    def test_chat_logprobs_when_stopped_by_eos(self):
        # The EOS token that ends the answer is counted in usage and has a
        # logprobs entry (as in vLLM), but no text in the content.
        r = chat(logprobs=True, max_tokens=32)
        c = r.choices[0]
        self.assertEqual(c.finish_reason, "stop")
        content = c.logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens)
        joined = "".join(e.token for e in content)
        self.assertTrue(joined.startswith(c.message.content), (joined, c.message.content))
        self.assertEqual("".join(e.token for e in content[:-1]), c.message.content)
        self.assertLessEqual(content[-1].logprob, 0.0)

    def test_chat_logprobs_bytes_rebuild_multibyte_text(self):
        # Emoji are split over several byte-level tokens; `bytes` carries each
        # token's raw UTF-8 bytes so that a client can join them back.
        r = chat(
            messages=[{"role": "user", "content": "Write one emoji only, a smiling face."}],
            logprobs=True,
            max_tokens=12,
        )
        c = r.choices[0]
        self.assertEqual(c.finish_reason, "length")
        self.assertTrue(any(ord(ch) > 127 for ch in c.message.content), c.message.content)
        raw = b"".join(bytes(e.bytes) for e in c.logprobs.content)
        self.assertEqual(raw.decode("utf-8", errors="replace"), c.message.content)

    def test_chat_without_logprobs_has_none(self):
        self.assertIsNone(chat(max_tokens=2).choices[0].logprobs)


class TestSeedAndExtras(unittest.TestCase):
    def test_seed_reproducible(self):
        kw = {"temperature": 1.0, "seed": 1234, "max_tokens": 12}
        a = complete(**kw).choices[0].text
        b = complete(**kw).choices[0].text
        self.assertEqual(a, b)

    def test_seed_reproducible_with_top_k(self):
        kw = {"temperature": 1.0, "seed": 1234, "max_tokens": 12, "extra_body": {"top_k": 50}}
        a = complete(**kw).choices[0].text
        b = complete(**kw).choices[0].text
        self.assertEqual(a, b)

    def test_chat_seed_reproducible(self):
        kw = {"temperature": 1.0, "seed": 99, "max_tokens": 12}
        a = chat(**kw).choices[0].message.content
        b = chat(**kw).choices[0].message.content
        self.assertEqual(a, b)

    def test_vllm_extras_accepted(self):
        r = complete(
            max_tokens=8,
            temperature=0.7,
            top_p=0.9,
            seed=5,
            extra_body={
                "top_k": 20,
                "min_p": 0.05,
                "repetition_penalty": 1.1,
                "ignore_eos": False,
                "min_tokens": 2,
            },
        )
        self.assertGreaterEqual(r.usage.completion_tokens, 2)
        self.assertLessEqual(r.usage.completion_tokens, 8)

    def test_top_k_1_is_greedy(self):
        greedy = complete(max_tokens=8).choices[0].text
        r = complete(max_tokens=8, temperature=1.0, seed=3, extra_body={"top_k": 1})
        self.assertEqual(r.choices[0].text, greedy)

    def test_ignore_eos(self):
        r = chat(max_tokens=16, extra_body={"ignore_eos": True})
        self.assertEqual(r.usage.completion_tokens, 16)
        self.assertEqual(r.choices[0].finish_reason, "length")
        r = complete(max_tokens=16, extra_body={"ignore_eos": True})
        self.assertEqual(r.usage.completion_tokens, 16)
        self.assertEqual(r.choices[0].finish_reason, "length")

    def test_min_tokens_delays_stop(self):
        # The greedy answer ends (EOS) after fewer than 12 tokens.
        self.assertLess(chat(max_tokens=12).usage.completion_tokens, 12)
        r = chat(max_tokens=12, extra_body={"min_tokens": 12})
        self.assertEqual(r.usage.completion_tokens, 12)
        self.assertEqual(r.choices[0].finish_reason, "length")


# --------------------------------------------------------------------------
# 9: the error contract
# --------------------------------------------------------------------------


class TestErrors(ErrorAssertions, unittest.TestCase):
    def test_malformed_json(self):
        r = HTTP.post(
            "/v1/completions",
            content=b'{"prompt": "hi", ',
            headers={"content-type": "application/json"},
        )
        self.assert_http_error(r, 400)

    def test_malformed_json_chat(self):
        r = HTTP.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        self.assert_http_error(r, 400)

    def test_invalid_utf8_body(self):
        r = HTTP.post(
            "/v1/completions",
            content=b'{"prompt": "\xff"}',
            headers={"content-type": "application/json"},
        )
        self.assert_http_error(r, 400)

    def test_wrong_type(self):
        self.assert_client_error(
            openai.BadRequestError, 400, complete, max_tokens="ten"
        )

    def test_non_object_body(self):
        r = HTTP.post("/v1/completions", json=[1, 2])
        self.assert_http_error(r, 400)

    def test_unknown_model(self):
        err = self.assert_client_error(
            openai.NotFoundError, 404, complete, model="no-such-model"
        )
        self.assertIn("no-such-model", err["message"])
        self.assert_client_error(
            openai.NotFoundError, 404, chat, model="no-such-model"
        )

    def test_empty_prompt(self):
        self.assert_client_error(openai.BadRequestError, 400, complete, prompt="")

    def test_missing_prompt(self):
        r = HTTP.post("/v1/completions", json={"model": MODEL, "max_tokens": 2})
        err = self.assert_http_error(r, 400)
        self.assertEqual(err["param"], "prompt")

    def test_over_context(self):
        err = self.assert_client_error(
            openai.BadRequestError, 400, complete, max_tokens=100000
        )
        self.assertIn("maximum context length", err["message"])
        self.assertEqual(err["param"], "max_tokens")
        err = self.assert_client_error(
            openai.BadRequestError, 400, chat, max_tokens=100000
        )
        self.assertIn("maximum context length", err["message"])

    def test_negative_max_tokens(self):
        err = self.assert_client_error(
            openai.BadRequestError, 400, complete, max_tokens=-5
        )
        self.assertEqual(err["param"], "max_tokens")

    def test_n_zero_and_huge(self):
        for n in (0, 100000):
            with self.subTest(n=n):
                err = self.assert_client_error(openai.BadRequestError, 400, complete, n=n)
                self.assertEqual(err["param"], "n")
                self.assert_client_error(openai.BadRequestError, 400, chat, n=n)

    def test_chat_top_logprobs_too_many(self):
        err = self.assert_client_error(
            openai.BadRequestError, 400, chat, logprobs=True, top_logprobs=50
        )
        self.assertEqual(err["param"], "top_logprobs")

    def test_completion_logprobs_too_many(self):
        err = self.assert_client_error(
            openai.BadRequestError, 400, complete, logprobs=50
        )
        self.assertEqual(err["param"], "logprobs")

    def test_negative_temperature(self):
        err = self.assert_client_error(
            openai.BadRequestError, 400, complete, temperature=-1
        )
        self.assertEqual(err["param"], "temperature")
        self.assert_client_error(openai.BadRequestError, 400, chat, temperature=-1)

    def test_token_id_out_of_vocab(self):
        for prompt in ([10**9], [-1], [[504, 10**9]]):
            with self.subTest(prompt=prompt):
                err = self.assert_client_error(
                    openai.BadRequestError, 400, complete, prompt=prompt
                )
                self.assertEqual(err["param"], "prompt")
        r = HTTP.post("/detokenize", json={"tokens": [10**9]})
        self.assert_http_error(r, 400)

    def test_oversized_body(self):
        # CI starts the server with `--max-body-bytes 64KiB`; a ~200 KB body
        # must then be refused with 413. Under a larger limit the prompt is
        # merely too long for the context (400) and this test is skipped.
        prompt = "hello " * 34000
        r = HTTP.post(
            "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1}
        )
        if r.status_code == 400:
            self.skipTest("the server's --max-body-bytes is above 200 KB")
        self.assert_http_error(r, 413)
        r = HTTP.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]},
        )
        self.assert_http_error(r, 413)

    def test_unknown_role(self):
        err = self.assert_client_error(
            openai.BadRequestError,
            400,
            chat,
            messages=[{"role": "wizard", "content": "hi"}],
        )
        self.assertEqual(err["param"], "messages")

    def test_stream_options_without_stream(self):
        err = self.assert_client_error(
            openai.BadRequestError,
            400,
            chat,
            stream_options={"include_usage": True},
        )
        self.assertEqual(err["param"], "stream_options")
        self.assert_client_error(
            openai.BadRequestError,
            400,
            complete,
            stream_options={"include_usage": True},
        )

    def test_empty_messages(self):
        err = self.assert_client_error(openai.BadRequestError, 400, chat, messages=[])
        self.assertEqual(err["param"], "messages")

    def test_missing_messages(self):
        r = HTTP.post("/v1/chat/completions", json={"model": MODEL})
        self.assert_http_error(r, 400)

    def test_unsupported_fields_refused(self):
        self.assert_client_error(
            openai.BadRequestError, 400, complete, logit_bias={"504": 5}
        )
        self.assert_client_error(openai.BadRequestError, 400, complete, suffix="x")
        self.assert_client_error(openai.BadRequestError, 400, complete, best_of=3)

    def test_out_of_range_sampling_fields(self):
        cases = [
            ("top_p", 0),
            ("top_p", 1.5),
            ("min_p", 2),
            ("presence_penalty", 5),
            ("frequency_penalty", -3),
            ("repetition_penalty", 0),
            ("top_k", -2),
            ("min_tokens", -1),
            ("max_tokens", 0),
            ("logprobs", -1),
            ("stop", ""),
            ("stop", [str(i) for i in range(17)]),
            ("stop_token_ids", [-1]),
            ("stop_token_ids", [10**9]),
        ]
        for field, value in cases:
            with self.subTest(field=field, value=value):
                err = self.assert_client_error(
                    openai.BadRequestError, 400, complete, extra_body={field: value}
                )
                self.assertEqual(err["param"], field)

    def test_min_tokens_above_max_tokens(self):
        err = self.assert_client_error(
            openai.BadRequestError, 400, chat, max_tokens=4, extra_body={"min_tokens": 20}
        )
        self.assertEqual(err["param"], "min_tokens")

    def test_non_finite_number_refused(self):
        r = HTTP.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": PROMPT, "max_tokens": 2, "top_p": 1e300},
        )
        self.assert_http_error(r, 400)

    def test_bad_bodies_are_never_5xx(self):
        bodies = [
            b"",
            b"null",
            b'"text"',
            b'{"prompt": 5}',
            b'{"prompt": [[]]}',
            b'{"prompt": []}',
            b'{"prompt": [1.5]}',
            b'{"prompt": "hi", "max_tokens": 1e99}',
            b'{"prompt": "hi", "stop": [1, 2]}',
            b'{"prompt": "hi", "seed": -1, "max_tokens": 1}',
            b'{"messages": [{"role": "user"}], "max_tokens": 1}',
            b'{"messages": [{"content": "hi"}]}',
            b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
            b'{"messages": "hi"}',
        ]
        for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
            for body in bodies:
                with self.subTest(path=path, body=body):
                    r = HTTP.post(
                        path, content=body, headers={"content-type": "application/json"}
                    )
                    self.assertLess(r.status_code, 500, r.text)
                    if r.status_code >= 400:
                        self.assert_error_body(r.json(), r.status_code)


# --------------------------------------------------------------------------
# 11: responses match the server's OpenAPI document
# --------------------------------------------------------------------------


class TestOpenAPI(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        r = HTTP.get("/openapi.json")
        r.raise_for_status()
        cls.doc = r.json()

    def validate(self, instance, name):
        schema = {
            "$ref": f"#/components/schemas/{name}",
            "components": self.doc["components"],
        }
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft202012Validator(schema).validate(instance)

    def post_json(self, path, body):
        r = HTTP.post(path, json=body)
        self.assertEqual(r.status_code, 200, r.text)
        return r.json()

    def stream_chunks(self, path, body):
        r, datas, raw = sse_events(path, dict(body, stream=True))
        self.assertEqual(r.status_code, 200, raw)
        self.assertEqual(datas[-1], "[DONE]")
        return [json.loads(d) for d in datas[:-1]]

    def test_document(self):
        self.assertTrue(self.doc["openapi"].startswith("3.1"))
        for path in ("/v1/completions", "/v1/chat/completions", "/v1/models",
                     "/health", "/metrics", "/tokenize", "/detokenize"):
            self.assertIn(path, self.doc["paths"])

    def test_completion(self):
        body = self.post_json(
            "/v1/completions",
            {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logprobs": 2},
        )
        self.validate(body, "Completion")
        body = self.post_json(
            "/v1/completions",
            {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "stop": "."},
        )
        self.validate(body, "Completion")

    def test_chat_completion(self):
        body = self.post_json(
            "/v1/chat/completions",
            {"model": MODEL, "messages": QUESTION, "max_tokens": 4, "temperature": 0,
             "logprobs": True, "top_logprobs": 2},
        )
        self.validate(body, "ChatCompletion")

    def test_completion_chunks(self):
        chunks = self.stream_chunks(
            "/v1/completions",
            {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "n": 2,
             "logprobs": 1, "echo": True, "stream_options": {"include_usage": True}},
        )
        self.assertGreater(len(chunks), 2)
        for c in chunks:
            self.validate(c, "CompletionChunk")

    def test_chat_chunks(self):
        chunks = self.stream_chunks(
            "/v1/chat/completions",
            {"model": MODEL, "messages": QUESTION, "max_tokens": 4, "temperature": 0,
             "logprobs": True, "top_logprobs": 1, "stream_options": {"include_usage": True}},
        )
        self.assertGreater(len(chunks), 2)
        for c in chunks:
            self.validate(c, "ChatChunk")

    def test_model_list(self):
        r = HTTP.get("/v1/models")
        self.assertEqual(r.status_code, 200)
        self.validate(r.json(), "ModelList")

    def test_error(self):
        r = HTTP.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT, "n": 0})
        self.assertEqual(r.status_code, 400)
        self.validate(r.json(), "Error")
        r = HTTP.post("/v1/completions", json={"model": "no-such-model", "prompt": PROMPT})
        self.assertEqual(r.status_code, 404)
        self.validate(r.json(), "Error")

    def test_tokenize_response(self):
        self.validate(self.post_json("/tokenize", {"prompt": PROMPT}), "TokenizeResponse")

    def test_detokenize_response(self):
        self.validate(self.post_json("/detokenize", {"tokens": PROMPT_IDS}), "DetokenizeResponse")

    def test_health(self):
        r = HTTP.get("/health")
        self.assertEqual(r.status_code, 200)
        self.validate(r.json(), "Health")

    def test_responses_do_not_validate_when_wrong(self):
        # The schemas do constrain: a response with a missing field fails.
        body = self.post_json(
            "/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 1}
        )
        del body["choices"][0]["text"]
        with self.assertRaises(jsonschema.ValidationError):
            self.validate(body, "Completion")


if __name__ == "__main__":
    unittest.main(verbosity=2)
