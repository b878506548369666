#!/usr/bin/env python3
"""Renders tests/golden/chat/templates/*.jinja with jinja2 exactly as transformers' apply_chat_template does
(ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loopcontrols), tojson = json.dumps(ensure_ascii=False),
raise_exception, strftime_now) over a fixed set of conversations, and writes tests/golden/chat/chat_fixtures.json:
  {"cases": [{"template", "conversation", "inputs": {...}, "ok": bool, "output" | "error"}]}
Run: python3 tools/reference/make_chat_fixtures.py   (needs jinja2)
"""
import json, os, sys
from datetime import datetime
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPL_DIR = os.path.join(ROOT, "tests/golden/chat/templates")
OUT = os.path.join(ROOT, "tests/golden/chat/chat_fixtures.json")

def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)
    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    def strftime_now(fmt):
        return datetime.now().strftime(fmt)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
    "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Current time",
    "parameters": {"type": "object", "properties": {}}}}

def call(name, args, id_="call_1"):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}

CONVERSATIONS = {
    "user_only": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_user": {"messages": [{"role": "system", "content": "You are terse."},
                                 {"role": "user", "content": "What is 2+2?"}]},
    "multi_turn": {"messages": [{"role": "system", "content": "  Be kind.  "},
                                {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello! How can I help?"},
                                {"role": "user", "content": "Tell me a joke.\n"}]},
    "reasoning_history": {"messages": [{"role": "user", "content": "Is 7 prime?"},
                                       {"role": "assistant", "content": "<think>\n7 has no divisors but 1 and 7.\n</think>\n\nYes, 7 is prime."},
                                       {"role": "user", "content": "And 9?"}]},
    "unicode": {"messages": [{"role": "user", "content": "héllo wörld — 你好 🌍 \"quotes\" \\ back"},
                             {"role": "assistant", "content": "¡Hola! ｜▁ 日本語"},
                             {"role": "user", "content": "Ünïcödé\ttab"}]},
    "empty_content": {"messages": [{"role": "user", "content": ""},
                                   {"role": "assistant", "content": ""},
                                   {"role": "user", "content": " "}]},
    "tools_call": {"tools": [WEATHER_TOOL, TIME_TOOL],
                   "messages": [{"role": "system", "content": "You can call tools."},
                                {"role": "user", "content": "Weather in Paris?"},
                                {"role": "assistant", "content": None,
                                 "tool_calls": [call("get_weather", "{\"city\": \"Paris\"}")]},
                                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
                                {"role": "assistant", "content": "It is 21°C and clear in Paris."},
                                {"role": "user", "content": "Thanks"}]},
    "tools_dict_args": {"tools": [WEATHER_TOOL],
                        "messages": [{"role": "user", "content": "Weather in Oslo and Rome?"},
                                     {"role": "assistant", "content": "",
                                      "tool_calls": [call("get_weather", {"city": "Oslo", "unit": "c"})]},
                                     {"role": "tool", "content": "{\"temp\": -3}"}]},
    "tools_two_calls": {"tools": [WEATHER_TOOL, TIME_TOOL],
                        "messages": [{"role": "user", "content": "Weather and time?"},
                                     {"role": "assistant", "content": None,
                                      "tool_calls": [call("get_weather", "{\"city\": \"Rome\"}"),
                                                     call("get_time", "{}", "call_2")]},
                                     {"role": "tool", "content": "sunny"},
                                     {"role": "tool", "content": "12:00"}]},
    "tools_no_calls": {"tools": [WEATHER_TOOL], "messages": [{"role": "user", "content": "Just chat."}]},
    "bad_alternation": {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
    "system_only": {"messages": [{"role": "system", "content": "Only a system prompt."}]},
}

TOKENS = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "qwen2.5": ("", "<|im_end|>"),
    "deepseek-r1-distill-qwen": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-r1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "gemma3": ("<bos>", "<eos>"),
}

def main():
    env = make_env()
    cases = []
    for fname in sorted(os.listdir(TPL_DIR)):
        if not fname.endswith(".jinja"):
            continue
        name = fname[:-len(".jinja")]
        src = open(os.path.join(TPL_DIR, fname), encoding="utf-8").read()
        tmpl = env.from_string(src)
        bos, eos = TOKENS.get(name, ("<s>", "</s>"))
        for conv_name, conv in CONVERSATIONS.items():
            for gen in (False, True):
                inputs = {"messages": conv["messages"], "tools": conv.get("tools"), "add_generation_prompt": gen,
                          "bos_token": bos, "eos_token": eos, "extra_context": {}}
                case = {"template": name, "conversation": conv_name, "inputs": inputs}
                try:
                    case["output"] = tmpl.render(messages=inputs["messages"], tools=inputs["tools"], documents=None,
                                                 add_generation_prompt=gen, bos_token=bos, eos_token=eos)
                    case["ok"] = True
                except Exception as e:  # jinja2 raised: our engine must fail too
                    case["ok"] = False
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": "tools/reference/make_chat_fixtures.py", "jinja2": jinja2.__version__,
                   "cases": cases}, f, ensure_ascii=False, indent=1)
    ok = sum(c["ok"] for c in cases)
    print(f"wrote {len(cases)} cases ({ok} rendered, {len(cases) - ok} raised) to {OUT}")

if __name__ == "__main__":
    sys.exit(main())
