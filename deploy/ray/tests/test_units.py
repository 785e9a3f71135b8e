"""Unit tests of kiln_ray's pure parts (no Ray cluster, no kiln)."""

from __future__ import annotations

import unittest

from kiln_ray.config import ConfigError, KilnConfig
from kiln_ray.prefix import MIN_PREFIX_CHARS, prefix_keys, prompt_text
from kiln_ray.protocol import error_body, sse_error_event


class PromptText(unittest.TestCase):
    def test_completion_prompts(self) -> None:
        self.assertEqual(prompt_text({"prompt": "abc"}), "abc")
        self.assertEqual(prompt_text({"prompt": ["first", "second"]}), "first")
        self.assertEqual(prompt_text({"prompt": [1, 2, 3]}), "1 2 3")
        self.assertEqual(prompt_text({"prompt": [[4, 5], [6]]}), "4 5")
        self.assertEqual(prompt_text({}), "")
        self.assertEqual(prompt_text(None), "")

    def test_chat_messages(self) -> None:
        body = {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
            ]
        }
        self.assertEqual(prompt_text(body), "<system>Be brief.\n<user>Hi")


class PrefixKeys(unittest.TestCase):
    def test_short_text_has_no_keys(self) -> None:
        self.assertEqual(list(prefix_keys("x" * (MIN_PREFIX_CHARS - 1))), [])

    def test_shared_prefix_shares_keys(self) -> None:
        shared = "s" * 300
        a = list(prefix_keys(shared + "a" * 50))
        b = list(prefix_keys(shared + "b" * 50))
        self.assertEqual(a[:3], b[:3])  # 64, 128, 256 characters
        self.assertNotEqual(a[-1], b[-1])

    def test_whole_text_is_a_key(self) -> None:
        text = "t" * 100
        self.assertEqual(list(prefix_keys(text))[-1], hash(text))

    def test_max_chars(self) -> None:
        self.assertEqual(len(list(prefix_keys("u" * 10_000, max_chars=256))), 3)


class Config(unittest.TestCase):
    def test_from_dict(self) -> None:
        config = KilnConfig.from_dict({"binary": "kiln", "args": ["--kv-cache-memory", "1GiB"]})
        self.assertEqual(config.args, ("--kv-cache-memory", "1GiB"))

    def test_managed_flags_are_rejected(self) -> None:
        with self.assertRaises(ConfigError):
            KilnConfig.from_dict({"args": ["--port", "9000"]})
        with self.assertRaises(ConfigError):
            KilnConfig.from_dict({"args": ["--host=0.0.0.0"]})

    def test_unknown_keys_are_rejected(self) -> None:
        with self.assertRaises(ConfigError):
            KilnConfig.from_dict({"binry": "kiln"})

    def test_missing_binary(self) -> None:
        with self.assertRaises(ConfigError):
            KilnConfig(binary="no-such-kiln-binary").resolved_binary()


class Errors(unittest.TestCase):
    def test_bodies(self) -> None:
        self.assertIn(b'"code": 502', error_body(502, "gone"))
        self.assertTrue(sse_error_event(503, "gone").startswith(b"data: {"))


if __name__ == "__main__":
    unittest.main()
