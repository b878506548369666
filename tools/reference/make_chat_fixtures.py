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
    "tools_long_ids": {"tools": [WEATHER_TOOL],
                       "messages": [{"role": "system", "content": "Use tools when needed."},
                                    {"role": "user", "content": "Weather in Lima?"},
                                    {"role": "assistant", "content": None,
                                     "tool_calls": [call("get_weather", "{\"city\": \"Lima\"}", "call_abcdefghijk")]},
                                    {"role": "tool", "tool_call_id": "call_abcdefghijk", "content": "{\"temp\": 18}"},
                                    {"role": "assistant", "content": "18 degrees in Lima."},
                                    {"role": "user", "content": "Thanks!"}]},
    "assistant_prefix": {"messages": [{"role": "user", "content": "Continue this."},
                                      {"role": "assistant", "content": "Sure, ", "prefix": True}]},
}

# Extra template variables (transformers passes **kwargs through): each variant renders every conversation.
EXTRA_VARIANTS = {"deepseek-v3.1": [{}, {"enable_thinking": True}, {"thinking": False}]}

TOKENS = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "qwen2.5": ("", "<|im_end|>"),
    "deepseek-r1-distill-qwen": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-r1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "gemma3": ("<bos>", "<eos>"),
    "deepseek-v3.1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "mistral-small-3.1": ("<s>", "</s>"),
}

# Engine unit cases: template -> expected output (None: jinja2 raises). Expected values are checked against jinja2.
ENGINE_CASES = [
 ("{{ 1 + 2 * 3 }}", "7"), ("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}", "3 -4 2 3.5 1024"),
 ("{{ 'a' ~ 1 ~ none }}", "a1None"), ("{{ 'ab' * 3 }}", "ababab"), ("{{ 1.0 }} {{ 1e20 }} {{ 0.1 + 0.2 }} {{ 1e-05 }}", "1.0 1e+20 0.30000000000000004 1e-05"),
 ("{{ '  x  ' | trim + '|' }}", "x|"), ("{{ [1,2,3] | length }}{{ 'héllo' | length }}", "35"),
 ("{{ {'b': 1, 'a': [1, 'x', none, true]} | tojson }}", '{"b": 1, "a": [1, "x", null, true]}'),
 ("{{ {'k': 'é\"'} | tojson(indent=2) }}", '{\n  "k": "é\\""\n}'),
 ("{{ x | default('d') }}{{ none | default('d') }}", "dNone"),
 ("{{ [3,1,2] | first }}{{ [3,1,2] | last }}{{ [1,2] | join(', ') }}", "321, 2"),
 ("{{ 'Hello World' | upper }} {{ 'ABC' | lower }} {{ 'hello world' | title }} {{ 'hELLO' | capitalize }}", "HELLO WORLD abc Hello World Hello"),
 ("{{ 'aaa' | replace('a', 'b', 2) }}", "bba"),
 ("{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;"),
 ("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }} {% endfor %}", "10TrueFalse33 21FalseFalse32 32FalseTrue31 "),
 ("{% for x in [] %}a{% else %}empty{% endfor %}", "empty"),
 ("{% for x in range(10) if x is odd %}{{ x }}{% endfor %}", "13579"),
 ("{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}", "012"),
 ("{% set ns = namespace(c=0) %}{% for x in range(4) %}{% set ns.c = ns.c + x %}{% endfor %}{{ ns.c }}", "6"),
 ("{% set y = 1 %}{% for x in range(3) %}{% set y = 5 %}{% endfor %}{{ y }}", "1"),
 ("{% macro greet(name, p='Hi') %}{{ p }} {{ name }}{% endmacro %}{{ greet('Bob') }}/{{ greet('Al', p='Yo') }}", "Hi Bob/Yo Al"),
 ("{{ '  a b  '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}", "a b|axx|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']"),
 ("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'x</think>y</think>z'.split('</think>')[-1] }}", "TrueTruez"),
 ("{{ [1,2,3,4,5][1:4] }}{{ [1,2,3,4,5][::-1] }}{{ 'hello'[-3:] }}{{ [1,2,3][-1] }}", "[2, 3, 4][5, 4, 3, 2, 1]llo3"),
 ("{{ 'b' in 'abc' }}{{ 2 not in [1,2] }}{{ 'k' in {'k': 1} }}", "TrueFalseTrue"),
 ("{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number }}{{ 1.5 is integer }}{{ {} is mapping }}{{ [] is iterable }}{{ 4 is divisibleby 2 }}{{ 3 is even }}{{ true is boolean }}", "FalseTrueTrueTrueFalseTrueTrueTrueFalseTrue"),
 ("{{ 'yes' if 1 > 2 else 'no' }}{{ 'a' if false }}.", "no."),
 ("{{ [{'a': 1}, {'a': 2}] | map(attribute='a') | list }}{{ [{'r': 'u'}, {'r': 's'}] | selectattr('r', 'equalto', 's') | list | length }}", "[1, 2]1"),
 ("{{ [1, 2, 3, 4] | select('odd') | list }}{{ ['a', 'b', 'a'] | reject('equalto', 'a') | list }}{{ [1, 2, 1] | unique | list }}", "[1, 3]['b'][1, 2]"),
 ("{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('b', 9) }}{{ {'a': 1}.keys() | list }}{{ {'a': 1}.values() | list }}", "19['a'][1]"),
 ("{{ '3' | int + 1 }}{{ 3 | string + 'x' }}{{ 'ab' | list }}", "43x['a', 'b']"),
 ("a\n  {%- if true %}\n   b\n  {% endif %}\nc", "a   b\nc"),
 ("  {% if true %}\nx\n{% endif %}\ny", "x\ny"),
 ("{{ 'a' }}  {#- c -#}  {{ 'b' }}", "ab"),
 ("{{ 'tab\\there\\n' }}{{ \"q'\" }}{{ '\\u00e9' }}", "tab\there\nq'é"),
 ("{% set x %}in{{ 1 }}{% endset %}{{ x }}", "in1"),
 ("{{ x.y is defined }}", None),
 ("{{ foo.bar }}", None),
 ("{{ raise_exception('boom') }}", None),
 ("{{ 'a' + none }}", None),
]

ENGINE_OUT = os.path.join(ROOT, "tests/golden/chat/engine_fixtures.json")

def engine_fixtures(env):
    cases = []
    for tmpl, expected in ENGINE_CASES:
        try:
            got = env.from_string(tmpl).render()
        except Exception:
            got = None
        if got != expected:
            raise SystemExit(f"engine case disagrees with jinja2: {tmpl!r}: jinja2 {got!r}, table {expected!r}")
        cases.append({"template": tmpl, "ok": got is not None, "output": got})
    with open(ENGINE_OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": "tools/reference/make_chat_fixtures.py", "cases": cases}, f, ensure_ascii=False, indent=1)

def main():
    env = make_env()
    engine_fixtures(env)
    cases = []
    for fname in sorted(os.listdir(TPL_DIR)):
        if not fname.endswith(".jinja"):
            continue
        name = fname[:-len(".jinja")]
        src = open(os.path.join(TPL_DIR, fname), encoding="utf-8").read()
        tmpl = env.from_string(src)
        bos, eos = TOKENS.get(name, ("<s>", "</s>"))
        for conv_name, conv in CONVERSATIONS.items():
          for extra in EXTRA_VARIANTS.get(name, [{}]):
            for gen in (False, True):
                inputs = {"messages": conv["messages"], "tools": conv.get("tools"), "add_generation_prompt": gen,
                          "bos_token": bos, "eos_token": eos, "extra_context": extra}
                case = {"template": name, "conversation": conv_name, "inputs": inputs}
                try:
                    case["output"] = tmpl.render(messages=inputs["messages"], tools=inputs["tools"], documents=None,
                                                 add_generation_prompt=gen, bos_token=bos, eos_token=eos, **extra)
                    case["ok"] = True
                except Exception as e:  # jinja2 raised: our engine must fail too
                    case["ok"] = False
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
    with open(OUT, "w", encoding="utf-8") as f:
        # strftime_now("%Y-%m-%d") at generation time: the C++ test substitutes its own date for it.
        json.dump({"generator": "tools/reference/make_chat_fixtures.py", "jinja2": jinja2.__version__,
                   "today": datetime.now().strftime("%Y-%m-%d"), "cases": cases}, f, ensure_ascii=False, indent=1)
    ok = sum(c["ok"] for c in cases)
    print(f"wrote {len(cases)} cases ({ok} rendered, {len(cases) - ok} raised) to {OUT}")

if __name__ == "__main__":
    sys.exit(main())
