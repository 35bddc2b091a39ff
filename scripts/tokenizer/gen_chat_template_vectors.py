#!/usr/bin/env python3
"""gen_chat_template_vectors.py — renders chat-template test conversations
with the real Jinja templates (as transformers' apply_chat_template does:
jinja2 sandbox, trim_blocks, lstrip_blocks, tojson = json.dumps with
ensure_ascii=False) and writes tests/data/tokenizer/chat_template_vectors.json,
which tests/unit/test_tokenizer_chat.c compares quench's C renderer against.

Needs jinja2 (PyPI). Run from the repository root:
    [QN_FIXTURES=DIR] python3 scripts/tokenizer/gen_chat_template_vectors.py [FIXTURES_DIR]
quench itself never runs this; the output file is committed.
"""
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

fixtures = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "QN_FIXTURES", os.path.join("..", "shared", "fixtures"))
templates = {
    "glm45": os.path.join(fixtures, "glm45_config_rtpllm", "chat_template.jinja"),
    "qwen2.5": os.path.join(fixtures, "chat_templates", "Qwen-Qwen2.5-7B-Instruct.jinja"),
    "qwen3": os.path.join(fixtures, "chat_templates", "Qwen-Qwen3-0.6B.jinja"),
}


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def render(src, messages, tools=None, add_generation_prompt=False, enable_thinking=None):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    kw = dict(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt)
    if enable_thinking is not None:
        kw["enable_thinking"] = enable_thinking
    return env.from_string(src).render(**kw)


weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                          "days": {"type": "integer"}}, "required": ["city"]}}}
convs = {
    "single_user": [{"role": "user", "content": "What is 2+2?"}],
    "system_user": [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Hi 你好 👋"}],
    "multi_turn": [{"role": "system", "content": "Be helpful."},
                   {"role": "user", "content": "Name a prime."},
                   {"role": "assistant", "content": "7"},
                   {"role": "user", "content": "Another one?"}],
    "ends_with_assistant": [{"role": "user", "content": "Say hi"},
                            {"role": "assistant", "content": "hi"}],
    "think_in_content": [{"role": "user", "content": "q1"},
                         {"role": "assistant", "content": "<think>\nstep one\n</think>\n\nanswer one"},
                         {"role": "user", "content": "q2"},
                         {"role": "assistant", "content": "<think>r2</think>answer two"}],
    "reasoning_field": [{"role": "system", "content": "You are a helpful math tutor."},
                        {"role": "user", "content": "What is 15 * 24?"},
                        {"role": "assistant", "reasoning_content": "15 * 24 = 360",
                         "content": "The answer is 360."}],
    "content_parts": [{"role": "user", "content": [{"type": "text", "text": "part one, "},
                                                   {"type": "text", "text": "part two"}]}],
    "nothink_suffix": [{"role": "user", "content": "quick one /nothink"}],
    "whitespace_content": [{"role": "user", "content": "  spaced\n"},
                           {"role": "assistant", "content": "\n  padded answer \n"}],
    "tools_call": [{"role": "system", "content": "Use tools."},
                   {"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": "",
                    "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                    "arguments": {"city": "Paris", "days": 3}}}]},
                   {"role": "tool", "content": "{\"temp\": 21}"},
                   {"role": "tool", "content": "sunny"},
                   {"role": "user", "content": "Thanks"}],
}

# which (template, conversation) pairs the C renderer claims to reproduce
plain = ["single_user", "system_user", "multi_turn", "ends_with_assistant", "content_parts",
         "whitespace_content"]
cases = []
for tname, path in templates.items():
    src = open(path, encoding="utf-8").read()
    names = list(convs)
    if tname == "qwen2.5":
        names = plain + ["tools_call"]
    for cname in names:
        for agp in (False, True):
            for et in (None, False, True):
                if tname == "qwen2.5" and et is not None:
                    continue
                tools = [weather] if cname == "tools_call" else None
                try:
                    text = render(src, convs[cname], tools, agp, et)
                except Exception as e:  # a template error is not a case
                    print(f"skip {tname}/{cname}: {e}", file=sys.stderr)
                    continue
                cases.append({"template": tname, "name": cname, "messages": convs[cname],
                              "tools": tools, "add_generation_prompt": agp,
                              "enable_thinking": et, "expected": text})

out = {"note": "generated by scripts/tokenizer/gen_chat_template_vectors.py with jinja2 "
               + jinja2.__version__ + " from the templates in ../shared/fixtures",
       "cases": cases}
path = os.path.join("tests", "data", "tokenizer", "chat_template_vectors.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"wrote {len(cases)} cases to {path}")
