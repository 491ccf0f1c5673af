#!/usr/bin/env python3
"""Expected renderings of Jinja chat templates, for tests/test_jinja.cpp, made with
jinja2 configured as transformers' _compile_jinja_template configures it
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, the
{% generation %} tag, tojson as json.dumps(ensure_ascii=False), raise_exception,
strftime_now) and rendered as render_jinja_template does (messages, tools=None,
documents=None, add_generation_prompt, special tokens, extra kwargs,
continue_final_message's cut):

  tests/fixtures/chat_templates/real.json      real templates (read at test time from the
      files scripts/fetch_vocab.sh downloads; only their size is stored here) x conversations
  tests/fixtures/chat_templates/features.json  small templates written for this file, one
      language feature each, with jinja2's output or the error it raises

strftime_now formats the fixed time FIXED_NOW so the outputs do not depend on the clock.

    ../refenv/bin/pip install jinja2 gguf
    ../refenv/bin/python tools/reference/make_chat_template_fixtures.py
"""
import datetime
import json
import os
import sys

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "chat_templates")
FIXED_NOW = datetime.datetime(2024, 7, 26, 10, 5, 9)
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class GenerationTag(Extension):
    """{% generation %}...{% endgeneration %}: renders its body (transformers only tracks offsets)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def make_environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_environment()


def apply_chat_template(source, case):
    """render_jinja_template for one conversation, continue_final_message included."""
    messages = json.loads(json.dumps(case["messages"]))
    final = None
    if case.get("continue_final_message"):
        content = messages[-1]["content"]
        if isinstance(content, list):
            block = next(b for b in reversed(content) if "text" in b)
            final, block["text"] = block["text"], block["text"] + CONTINUE_TAG
        else:
            final, messages[-1]["content"] = content, content + CONTINUE_TAG
    kwargs = {}
    for token in ("bos_token", "eos_token"):
        if case.get(token):
            kwargs[token] = case[token]
    kwargs.update(case.get("extra", {}))
    kwargs.setdefault("tools", None)
    kwargs.setdefault("documents", None)
    rendered = ENV.from_string(source).render(messages=messages, add_generation_prompt=case["add_generation_prompt"], **kwargs)
    if final is not None:
        tag = CONTINUE_TAG.strip()
        if final.strip() not in rendered or tag not in rendered:
            raise ValueError("continue_final_message is set but the final message does not appear in the chat")
        at = rendered.rindex(tag)
        rendered = rendered[:at] if rendered[at : at + len(CONTINUE_TAG)] == CONTINUE_TAG else rendered[:at].rstrip()
    return rendered


def real_templates():
    from gguf import GGUFReader

    templates = {}
    gguf_path = "third_party/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    reader = GGUFReader(os.path.join(ROOT, gguf_path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    templates["smollm2"] = {
        "gguf": gguf_path,
        "key": "tokenizer.chat_template",
        "text": reader.fields["tokenizer.chat_template"].contents(),
        "bos_token": tokens[reader.fields["tokenizer.ggml.bos_token_id"].contents()],
        "eos_token": tokens[reader.fields["tokenizer.ggml.eos_token_id"].contents()],
    }
    for name in ("qwen2_5", "llama3", "llama2"):
        path = f"third_party/tokenizers/{name}/tokenizer_config.json"
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            config = json.load(f)
        if "chat_template" not in config:
            continue  # llama2's tokenizer_config.json has none

        def token(value):
            return value.get("content") if isinstance(value, dict) else value

        templates[name] = {
            "tokenizer_config": path,
            "key": "chat_template",
            "text": config["chat_template"],
            "bos_token": token(config.get("bos_token")) or "",
            "eos_token": token(config.get("eos_token")) or "",
        }
    return templates


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS = [
    ("system_user", [{"role": "system", "content": "You are a radiology assistant."}, {"role": "user", "content": "Describe the CT scan."}]),
    ("user_only", [{"role": "user", "content": "What is shown in this MRI?"}]),
    (
        "multi_turn",
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Is there a fracture?"},
            {"role": "assistant", "content": "No fracture is visible."},
            {"role": "user", "content": "Any effusion?"},
        ],
    ),
    ("unicode", [{"role": "user", "content": "Läsion im Schädel? 肺结节 🙂 — «ок» \u200b"}]),
    ("empty_content", [{"role": "system", "content": ""}, {"role": "user", "content": ""}]),
    ("jinja_braces", [{"role": "user", "content": "{{ messages }} {% if x %} {# note #} {% raw %} }}"}]),
    ("whitespace", [{"role": "user", "content": "  \n padded question \t\n"}, {"role": "assistant", "content": "\n answer  "}]),
    ("newlines", [{"role": "user", "content": "line one\r\nline two\n\nline four"}]),
]


def real_cases(templates):
    cases = []
    for tid, tmpl in templates.items():
        for conv_name, messages in CONVERSATIONS:
            for gen in (True, False):
                cases.append({"template": tid, "name": f"{conv_name}/gen={gen}", "messages": messages, "add_generation_prompt": gen})
        cases.append(
            {
                "template": tid,
                "name": "continue_final_message",
                "messages": CONVERSATIONS[2][1] + [{"role": "assistant", "content": "There is a small "}],
                "add_generation_prompt": False,
                "continue_final_message": True,
            }
        )
        cases.append({"template": tid, "name": "missing_content", "messages": [{"role": "user"}], "add_generation_prompt": True})
    tool_chat = [
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "c"}}}]},
        {"role": "tool", "content": '{"temp": 21.5, "sky": "clear"}'},
        {"role": "tool", "content": "second result"},
        {"role": "assistant", "content": "It is 21.5 °C and clear."},
    ]
    if "qwen2_5" in templates:
        cases.append({"template": "qwen2_5", "name": "tools", "messages": tool_chat, "add_generation_prompt": True, "extra": {"tools": [WEATHER_TOOL]}})
        cases.append({"template": "qwen2_5", "name": "tools_with_system", "messages": CONVERSATIONS[0][1], "add_generation_prompt": True, "extra": {"tools": [WEATHER_TOOL]}})
    for case in cases:
        tmpl = templates[case["template"]]
        case["bos_token"], case["eos_token"] = tmpl["bos_token"], tmpl["eos_token"]
        try:
            case["expected"] = apply_chat_template(tmpl["text"], case)
        except jinja2.exceptions.UndefinedError as e:
            case["error"] = str(e)
    return cases


# --- Feature templates: one language feature each, rendered over FEATURE_CONTEXT ---

FEATURE_CONTEXT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ],
    "xs": [3, 1, 2],
    "names": ["bob", "Alice", "carol", "alice"],
    "d": {"b": 1, "a": [1, 2], "c": None},
    "s": "  Hello, World  ",
    "n": 7,
    "f": 2.5,
    "t": True,
    "empty": "",
    "nothing": None,
    "users": [{"name": "ann", "age": 31, "admin": True}, {"name": "Bob", "age": 25}, {"name": "cy", "age": 31, "admin": False}],
    "nested": {"a": {"b": {"c": "deep"}}, "list": [[1, 2], [3, 4]]},
    "uni": "héllo wörld ß 日本語 🙂",
    "tools": [WEATHER_TOOL],
    "big": 9007199254740993,
}

FEATURE_CASES = [
    # output and literals
    ("text_only", "plain text, no tags"),
    ("print_string", "{{ 'single' }} {{ \"double\" }} {{ 'it\\'s' }} {{ \"tab\\there\" }} {{ 'a' 'b' }}"),
    ("string_escapes", "{{ 'nl\\n|cr\\r|bs\\\\|q\\\"|x\\x41|u\\u00e9|U\\U0001F600|oct\\101|bell\\a|unknown\\q' }}"),
    ("print_numbers", "{{ 1 }} {{ -3 }} {{ 1.5 }} {{ 2.0 }} {{ 1e3 }} {{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1e-7 }} {{ 1.5e16 }} {{ 123456789.125 }}"),
    ("print_constants", "{{ true }} {{ false }} {{ none }} {{ True }} {{ False }} {{ None }}"),
    ("print_containers", "{{ [1, 'a', none, true, 1.5] }} {{ {'k': 'v', 'n': [1, {'x': none}]} }} {{ [] }} {{ {} }}"),
    ("print_repr_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'nl\\n', 'tab\\t', 'bs\\\\'] }}"),
    ("print_repr_unicode", "{{ [uni, '\\x00\\x7f\\u200b\\u2028'] }}"),
    ("print_context_values", "{{ d }} {{ users[1] }} {{ nothing }} {{ t }} {{ f }} {{ big }}"),
    ("print_undefined", "[{{ missing }}][{{ d.missing }}][{{ users[9] }}]"),
    ("tuples", "{% set a, b = 1, 2 %}{{ a }}-{{ b }} {% set p = (3, 4) %}{{ p[1] }} {{ (5,)|length }}"),
    # whitespace control, trim_blocks, lstrip_blocks
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter\n"),
    ("lstrip_blocks", "<ul>\n    {% for x in xs %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>\n"),
    ("lstrip_not_variables", "line\n    {{ 'kept indent' }}\n"),
    ("lstrip_text_before_tag", "text  {% if true %}x{% endif %}  tail"),
    ("strip_markers", "a   {%- if true -%}   b   {%- endif -%}   c\n{{- ' d ' -}}\n e"),
    ("strip_newlines", "one\n\n  {{- 'two' }}\n\n{{ 'three' -}}\n\n  four"),
    ("plus_markers", "  {%+ if true +%}\nkeep\n  {%+ endif +%}\nend"),
    ("comments", "a{# a comment #}b\n  {# own line #}\nc{#- strip -#}  d\n{#+ keep +#}\ne"),
    ("comment_multiline", "x\n{# line one\n   line two #}\ny"),
    ("raw_block", "{% raw %}{{ not rendered }} {% if %}{% endraw %}|{%- raw -%}  {{ x }}  {%- endraw -%}|"),
    ("raw_lstrip", "a\n    {% raw %}\n{{ y }}\n    {% endraw %}\nb"),
    ("trailing_newline_dropped", "text\n"),
    ("two_trailing_newlines", "text\n\n"),
    ("crlf_newlines", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc"),
    ("braces_in_data", "{ not a tag } {x} }} %} #}"),
    # if / elif / else
    ("if_elif_else", "{% for v in [0, 1, 2, 3] %}{% if v == 0 %}zero{% elif v == 1 %}one{% elif v == 2 %}two{% else %}many{% endif %},{% endfor %}"),
    ("if_truthiness", "{% for v in [0, 1, '', 'a', [], [0], {}, {'a': 1}, none, 0.0, 0.5] %}{{ 'T' if v else 'F' }}{% endfor %}"),
    ("if_undefined", "{% if missing %}yes{% else %}no{% endif %} {% if d.missing %}yes{% else %}no{% endif %}"),
    ("inline_if", "{{ 'a' if t else 'b' }} {{ 'a' if not t else 'b' }} [{{ 'x' if false }}] {{ 1 if false else 2 if false else 3 }}"),
    # for loops
    ("for_loop_vars", "{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }} {% endfor %}"),
    ("for_prev_next", "{% for x in xs %}[{{ loop.previtem }}|{{ x }}|{{ loop.nextitem }}]{% endfor %}"),
    ("for_prev_next_defined", "{% for x in xs %}{{ loop.previtem is defined }}{{ loop.nextitem is defined }} {% endfor %}"),
    ("for_cycle", "{% for x in xs %}{{ loop.cycle('odd', 'even') }} {% endfor %}"),
    ("for_else", "{% for x in [] %}item{% else %}empty{% endfor %} {% for x in xs %}{{ x }}{% else %}empty{% endfor %}"),
    ("for_filter", "{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.role }}:{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}"),
    ("for_filter_empty", "{% for x in xs if x > 10 %}{{ x }}{% else %}none above 10{% endfor %}"),
    ("for_unpack_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"),
    ("for_unpack_pairs", "{% for a, b in nested.list %}{{ a }}+{{ b }}={{ a + b }} {% endfor %}"),
    ("for_dict_keys", "{% for k in d %}{{ k }}{% endfor %}"),
    ("for_string", "{% for ch in 'héllo' %}[{{ ch }}]{% endfor %}"),
    ("for_undefined", "{% for x in missing %}x{% else %}nothing{% endfor %}"),
    ("for_nested_loop", "{% for a in [1, 2] %}{% set outer = loop %}{% for b in 'xy' %}{{ outer.index }}{{ b }}{{ loop.index }} {% endfor %}{% endfor %}"),
    ("for_range", "{% for i in range(3) %}{{ i }}{% endfor %} {% for i in range(1, 10, 3) %}{{ i }}{% endfor %} {% for i in range(5, 0, -2) %}{{ i }}{% endfor %}"),
    ("for_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
    ("for_break_nested", "{% for a in range(3) %}{% for b in range(3) %}{% if b == 1 %}{% break %}{% endif %}{{ a }}{{ b }} {% endfor %}{% endfor %}"),
    # scoping
    ("scope_for_does_not_leak", "{% set x = 0 %}{% for i in xs %}{% set x = i %}{% endfor %}{{ x }}"),
    ("scope_for_fresh_iteration", "{% set x = 9 %}{% for i in xs %}[{{ x }}]{% set x = i %}{% endfor %}"),
    ("scope_if_leaks", "{% if true %}{% set y = 5 %}{% endif %}{{ y }}"),
    ("scope_loop_var_gone", "{% for i in xs %}{% endfor %}[{{ i }}]"),
    ("namespace", "{% set ns = namespace(total=0, seen=[]) %}{% for x in xs %}{% set ns.total = ns.total + x %}{% endfor %}{{ ns.total }}"),
    ("namespace_flags", "{% set ns = namespace(found=false) %}{% for m in messages %}{% if m.role == 'assistant' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}"),
    ("namespace_from_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{% set ns.c = 3 %}{{ ns.c }}"),
    ("set_block", "{% set block %}\n  inner {{ n }}\n{% endset %}[{{ block }}]"),
    ("set_block_filter", "{% set shout | upper %}quiet words{% endset %}{{ shout }}"),
    ("with_block", "{% set x = 1 %}{% with x = 2, y = x %}{{ x }}{{ y }}{% endwith %}{{ x }}"),
    # macros
    ("macro_basic", "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', 'Hi') }} {{ greet(greeting='Yo', name='Cy') }}"),
    ("macro_missing_arg", "{% macro m(a, b) %}[{{ a }}|{{ b }}|{{ b is defined }}]{% endmacro %}{{ m(1) }}"),
    ("macro_default_uses_param", "{% macro m(a, b=a * 2) %}{{ a }},{{ b }}{% endmacro %}{{ m(3) }}"),
    ("macro_sees_globals", "{% macro m() %}{{ z }}{% endmacro %}{% set z = 3 %}{{ m() }}"),
    ("macro_recursion", "{% macro fact(k) %}{% if k <= 1 %}1{% else %}{{ k * fact(k - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }}"),
    ("macro_varargs_kwargs", "{% macro m(a) %}{{ a }}{{ varargs|list }}{{ varargs|length }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k='v') }}"),
    ("macro_in_loop", "{% macro item(m) %}<{{ m.role }}>{% endmacro %}{% for m in messages %}{{ item(m) }}{% endfor %}"),
    ("call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ n }}{% endcall %}"),
    ("call_block_args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(v) each(xs) %}[{{ v }}]{% endcall %}"),
    ("filter_block", "{% filter upper %}shout {{ n }}{% endfilter %} {% filter replace('a', 'o') | title %}banana split{% endfilter %}"),
    ("generation_block", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}|{% endfor %}"),
    # expressions
    ("attribute_and_item", "{{ d.a }} {{ d['a'] }} {{ d.a[1] }} {{ d['a'].0 }} {{ nested.a.b.c }} {{ nested['a']['b']['c'] }} {{ users[0].name }} {{ users[-1]['name'] }}"),
    ("method_vs_key", "{{ d.items()|map('list')|list }} {{ d.keys()|list }} {{ d.values()|list }} {{ d['keys'] is defined }} {{ [d.get('b'), d.get('zz'), d.get('zz', 'dflt')] }}"),
    ("slices", "{{ xs[1:] }} {{ xs[:2] }} {{ xs[::-1] }} {{ xs[::2] }} {{ xs[-2:] }} {{ 'héllo'[1:3] }} {{ 'abcdef'[::-2] }} {{ xs[5:] }} {{ xs[1:-1] }}"),
    ("extreme_steps", "{{ xs[::9223372036854775807] }} {{ xs[::-9223372036854775807] }} {{ range(0, 9223372036854775807, 9223372036854775806)|list }} {{ users|map(attribute='00000000000000000000000001')|list|length }}"),
    ("negative_index", "{{ xs[-1] }} {{ 'abc'[-1] }} {{ messages[-1].content }}"),
    ("arithmetic", "{{ 1 + 2 }} {{ 7 - 10 }} {{ 3 * 4 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -2 }} {{ 2 ** 3 ** 2 }}"),
    ("arithmetic_float", "{{ 0.1 + 0.2 }} {{ 1.5 * 2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 10 / 4 }} {{ 2 ** 0.5 }} {{ 1 + true }} {{ 3.0 == 3 }}"),
    ("arithmetic_sequences", "{{ 'ab' * 3 }} {{ 2 * 'xy' }} {{ [1] * 3 }} {{ [1, 2] + [3] }} {{ 'a' + 'b' }} {{ 'x' * 0 }}|"),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 'x' + 1 ~ 2 }} {{ 2 * 3 ~ 4 }} {{ not true or true }} {{ not (true or true) }}"),
    ("concat", "{{ 'a' ~ 1 ~ none ~ true ~ missing ~ [1] }}"),
    ("comparisons", "{{ 1 < 2 }} {{ 2 <= 2 }} {{ 3 > 4 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ none == none }}"),
    ("in_operator", "{{ 'ell' in 'hello' }} {{ 2 in xs }} {{ 'a' in d }} {{ 'z' not in d }} {{ 5 not in xs }} {{ 'x' in missing }} {{ [1, 2] in nested.list }}"),
    ("and_or_values", "{{ 0 or 'fallback' }} {{ 'first' or 'second' }} {{ 1 and 'both' }} {{ '' and 'never' }}| {{ none or [] or 0 }}"),
    ("ternary_chain", "{% for v in [1, 2, 3] %}{{ 'one' if v == 1 else 'two' if v == 2 else 'other' }} {% endfor %}"),
    ("list_and_dict_literals", "{{ [1, [2, [3]]]|length }} {{ {'a': 1, 'b': {'c': 2}}.b.c }} {{ [1, 2, 3,] }} {{ {'x': 1,} }} {{ {'b': 1, 'a': 2}|list }}"),
    ("dict_int_keys", "{% set gears = {0: 0, 512: 128, 1024: 256} %}{% for k, v in gears|dictsort %}{{ k + 1 }}:{{ v }} {% endfor %}{{ gears[512] }} {{ 512 in gears }} {{ gears }} {{ gears|tojson }} {{ gears.get(1024) }} {{ {true: 1, none: 2, 1.5: 3} }}"),
    ("markup_concat", "{{ '<b>'|safe + '<i>' }} {{ 'x&' + 'y'|safe }} {{ ('<'|safe + '>') is escaped }} {{ '<'|e }} {{ '<'|e|e }} {{ '<'|safe ~ '<' }} {{ ('a'|safe) is escaped }} {{ 'a' is escaped }}"),
    ("dict_literal_order", "{{ {'z': 1, 'a': 2, 'm': 3} }} {{ {'z': 1, 'a': 2}|tojson }}"),
    ("undefined_comparisons", "{{ missing == missing }} {{ missing == none }} {{ missing != 1 }} {{ missing is none }}"),
    ("string_methods", "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ s.upper() }}|{{ s.lower() }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}"),
    ("string_split", "{{ 'a,b,,c'.split(',') }} {{ '  a  b c '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ ' x  y '.split(None, 1) }} {{ 'a\\nb\\r\\nc'.splitlines() }}"),
    ("string_predicates", "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'hello'.endswith('x') }}"),
    ("string_replace_find", "{{ 'aaa'.replace('a', 'b') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.find('z') }} {{ 'banana'.count('an') }}"),
    ("string_format", "{{ '{} and {}'.format('a', 'b') }} {{ '{1}{0}'.format('x', 'y') }} {{ '{name}!'.format(name='Ann') }} {{ '{{literal}} {}'.format(1) }} {{ '{!r}'.format('q') }}"),
    ("string_join_method", "{{ ', '.join(['a', 'b', 'c']) }} {{ '-'.join('xyz') }}"),
    ("string_unicode_methods", "{{ uni.upper() }} {{ uni|length }} {{ uni[0] }} {{ uni[-1] }} {{ 'ÉCOLE'.lower() }} {{ 'ǆemal'.title() }}"),
    ("percent_format", "{{ '%s is %d years' % ('Ann', 31) }} {{ '%05.2f|%-4s|%x' % (3.14159, 'ab', 255) }} {{ '%(a)s-%(b)s' % {'a': 1, 'b': 2} }} {{ '100%%' % () }}"),
    # filters
    ("filter_trim", "[{{ s|trim }}] [{{ 'xxhixx'|trim('x') }}] [{{ 12|trim }}] [{{ missing|trim }}]"),
    ("filter_length_count", "{{ xs|length }} {{ 'héllo'|length }} {{ d|count }} {{ missing|length }} {{ ''|length }}"),
    ("filter_case", "{{ 'Hello'|upper }} {{ 'Hello'|lower }} {{ 'hello WORLD'|capitalize }} {{ 'hello world-wide (web) [x] {y} <z>'|title }} {{ 42|upper }}"),
    ("filter_replace", "{{ 'hello'|replace('l', 'L') }} {{ 'aaaa'|replace('a', 'b', 2) }} {{ 5|replace('5', 'five') }}"),
    ("filter_join", "{{ xs|join }} {{ xs|join(', ') }} {{ users|join(' ', attribute='name') }} {{ [1, none, true]|join('|') }} {{ d|join('-') }}"),
    ("filter_first_last", "{{ xs|first }} {{ xs|last }} {{ 'abc'|first }} {{ 'abc'|last }} [{{ []|first }}] {{ d|first }} {{ users|first|attr('keys') is defined }}"),
    ("filter_default", "{{ missing|default('dflt') }} {{ missing|d('short') }} {{ none|default('not used') }} {{ ''|default('empty', true) }} {{ 0|default(5, boolean=true) }} {{ n|default(0) }} [{{ missing|default }}]"),
    ("filter_tojson", "{{ d|tojson }} {{ 'é\"\\n\\u2028'|tojson }} {{ [1.0, 2.5, none, true]|tojson }} {{ {'a': [1, {'b': 2}], 'c': []}|tojson(indent=2) }}"),
    ("filter_tojson_options", "{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ {'a': [1, 2]}|tojson(separators=(',', ':')) }} {{ 'é'|tojson(ensure_ascii=true) }} {{ [1, [2]]|tojson(indent='\\t') }}"),
    ("filter_tojson_tools", "{% for tool in tools %}{{ tool|tojson }}{% endfor %}\n{{ tools[0].function.parameters|tojson(indent=4) }}"),
    ("filter_tojson_numbers", "{{ [1e16, 1e-7, 0.1, 100.0, -0.0, 123456789012345678]|tojson }}"),
    ("filter_string", "{{ 5|string }}{{ none|string }}{{ [1, 'a']|string }}{{ missing|string }}{{ (5|string) ~ 'x' }}"),
    ("filter_int_float", "{{ '42'|int }} {{ '42.7'|int }} {{ 'x'|int }} {{ 'x'|int(-1) }} {{ 4.9|int }} {{ -4.9|int }} {{ '0x1A'|int(0, 16) }} {{ ' 12 '|int }} {{ true|int }} {{ none|int }} {{ '1_000'|int }}"),
    ("filter_float", "{{ '1.5'|float }} {{ 'x'|float }} {{ 3|float }} {{ '1e3'|float }} {{ ' 2 '|float }} {{ 'x'|float(9.5) }} {{ none|float }}"),
    ("filter_list_items", "{{ 'abc'|list }} {{ d|list }} {{ d|items|map('list')|list }} {{ missing|items|list }} {{ xs|list }}"),
    ("filter_map", "{{ users|map(attribute='name')|list }} {{ names|map('upper')|list }} {{ users|map(attribute='admin', default='n/a')|list }} {{ nested.list|map('first')|list }} {{ nested.list|map(attribute='1')|list }}"),
    ("filter_select_reject", "{{ xs|select('odd')|list }} {{ xs|reject('odd')|list }} {{ [0, 1, '', none, 'a']|select|list }} {{ range(10)|select('divisibleby', 3)|list }} {{ xs|select('>', 1)|list }}"),
    ("filter_selectattr", "{{ users|selectattr('admin')|map(attribute='name')|list }} {{ users|rejectattr('admin')|map(attribute='name')|list }} {{ users|selectattr('age', 'equalto', 31)|map(attribute='name')|join(',') }} {{ messages|selectattr('role', 'eq', 'user')|list|length }}"),
    ("filter_unique", "{{ names|unique|list }} {{ names|unique(case_sensitive=true)|list }} {{ users|unique(attribute='age')|map(attribute='name')|list }} {{ [1, 2, 1, 3, 2]|unique|list }}"),
    ("filter_sort", "{{ xs|sort }} {{ names|sort }} {{ names|sort(case_sensitive=true) }} {{ xs|sort(reverse=true) }} {{ users|sort(attribute='name')|map(attribute='name')|list }} {{ users|sort(attribute='age,name')|map(attribute='name')|list }}"),
    ("filter_dictsort", "{% for k, v in d|dictsort %}{{ k }}={{ v }} {% endfor %}{{ {'b': 1, 'A': 2, 'a': 3}|dictsort|map('first')|join }} {{ {'b': 1, 'A': 2, 'a': 3}|dictsort(true)|map('first')|join }} {{ {'x': 2, 'y': 1}|dictsort(by='value')|map('last')|list }} {{ {'x': 2, 'y': 1}|dictsort(reverse=true)|map('first')|list }}"),
    ("filter_reverse", "{{ xs|reverse|list }} {{ 'héllo'|reverse }} {{ d|reverse|list }}"),
    ("filter_round_abs", "{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ 2.9|round(0, 'floor') }} {{ 5|round }} {{ 1234.5|round(-2) }} {{ -3|abs }} {{ -2.5|abs }} {{ 42.55|round(1, 'floor') }}"),
    ("filter_min_max_sum", "{{ xs|min }} {{ xs|max }} {{ xs|sum }} {{ names|max }} {{ names|min(case_sensitive=true) }} {{ users|sum(attribute='age') }} {{ users|max(attribute='age')|attr('items') is defined }} {{ []|sum }}"),
    ("filter_indent", "[{{ 'a\\nb\\n\\nc'|indent }}] [{{ 'a\\nb'|indent(2, true) }}] [{{ 'a\\n\\nb'|indent('> ', blank=true) }}] [{{ 'one'|indent(first=true) }}]"),
    ("filter_center_escape_safe", "[{{ 'ab'|center(7) }}] {{ '<a href=\"x\">&\\''|e }} {{ '<b>'|escape }} {{ '<i>'|safe }}"),
    ("filter_format", "{{ '%s-%s'|format('a', 'b') }} {{ '%.3f'|format(2.0) }} {{ '%(x)s!'|format(x='kw') }}"),
    ("filter_batch_slice", "{{ xs|batch(2)|list }} {{ 'abcde'|batch(2, '-')|list }} {{ range(7)|slice(3)|list }} {{ range(5)|slice(3, 'x')|list }}"),
    ("undefined_in_lists", "{{ users|map(attribute='admin')|list }} {{ [missing, 1] }} [{{ users|map(attribute='admin')|join(',') }}] {{ [missing][0] is defined }} {{ [missing] == [d.zz] }}"),
    ("float_parity", "{{ 2.5 is odd }} {{ 3.0 is odd }} {{ 4.0 is even }} {{ 4.5 is divisibleby 1.5 }}"),
    ("percent_single_argument", "{{ '%s' % [1, 2] }} {{ '%s!' % {'a': 1} }} {{ 'plain' % [] }} {{ '%s' % 'x' }} {{ '%d%%' % 50 }}"),
    ("filter_attr", "{{ users[0]|attr('name') }}|{{ d|attr('items') is defined }}"),
    ("filter_chains", "{{ messages|map(attribute='content')|map('upper')|join(' / ')|replace('!', '?')|trim }} {{ xs|sort|reverse|first }}"),
    ("filter_on_expression_operands", "{{ 'x' + s|trim + 'y' }} {{ -3|abs }} {{ (-3)|abs }} {{ 'a ' ~ ' b '|trim }}"),
    # tests
    ("test_defined", "{{ n is defined }} {{ missing is defined }} {{ missing is undefined }} {{ d.a is defined }} {{ d.zz is defined }} {{ nothing is defined }}"),
    ("test_types", "{{ 'a' is string }} {{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 1 is integer }} {{ true is integer }} {{ 1.5 is float }} {{ d is mapping }} {{ xs is mapping }} {{ none is none }} {{ true is boolean }} {{ 1 is boolean }}"),
    ("test_iterable_sequence", "{{ xs is iterable }} {{ 'ab' is iterable }} {{ d is iterable }} {{ 5 is iterable }} {{ missing is iterable }} {{ xs is sequence }} {{ 'ab' is sequence }} {{ 5 is sequence }} {{ none is iterable }}"),
    ("test_values", "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'aB' is lower }}"),
    ("test_comparisons", "{{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 1 is ne 2 }} {{ 2 is gt 1 }} {{ 2 is ge 2 }} {{ 1 is lt 2 }} {{ 1 is le 0 }} {{ 2 is greaterthan 3 }} {{ 1 is lessthan 3 }} {{ 2 is in xs }} {{ 'q' is in 'abc' }}"),
    ("test_negated", "{{ n is not defined }} {{ missing is not defined }} {{ nothing is not none }} {{ 'x' is not string }} {{ not n is defined }}"),
    ("test_misc", "{{ range is callable }} {{ n is callable }} {{ 'upper' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }} {{ none is sameas none }} {{ true is sameas true }} {{ 'a' is escaped }}"),
    ("test_in_select", "{{ messages|selectattr('content', 'string')|list|length }} {{ xs|select('in', [1, 3])|list }} {{ [none, 1, 'a']|reject('none')|list }}"),
    # globals
    ("global_range", "{{ range(4)|list }} {{ range(2, 5)|list }} {{ range(10, 0, -3)|list }} {{ range(0)|list }}"),
    ("global_dict", "{{ dict(a=1, b='x') }} {{ dict({'k': 1}, j=2) }} {{ dict()|length }}"),
    ("global_strftime_now", "{{ strftime_now('%Y-%m-%d %H:%M:%S') }} | {{ strftime_now('%d %b %Y') }} | {{ strftime_now('%A, %B %-d') }}"),
    ("global_shadowed", "{% set range = 'mine' %}{{ range }}"),
    # chat-template idioms
    ("idiom_system_first", "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}{% else %}{% set system = 'default' %}{% set rest = messages %}{% endif %}<<{{ system }}>>{% for m in rest %}[{{ m.role }}:{{ m.content }}]{% endfor %}"),
    ("idiom_alternation", "{% for m in messages[1:] %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{{ m.role[0] }}{% endfor %}"),
    ("idiom_content_parts", "{% for m in msgs %}{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}{% if part.type == 'text' %}{{ part.text }}{% elif part.type == 'image' %}<image>{% endif %}{% endfor %}{% endif %}|{% endfor %}",
     {"msgs": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}, {"role": "assistant", "content": "A scan."}]}),
    ("idiom_tool_calls", "{% for m in msgs %}{% if m.tool_calls is defined and m.tool_calls %}{% for tc in m.tool_calls %}{% set fn = tc.function if tc.function is defined else tc %}<call>{{ {'name': fn.name, 'arguments': fn.arguments}|tojson }}</call>{% endfor %}{% endif %}{% endfor %}",
     {"msgs": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1, "é": "ü"}}}]}]}),
    ("idiom_multiline_template",
     "{%- for message in messages %}\n    {%- if message['role'] == 'user' %}\n        {{- '<|user|>\\n' + message['content'] | trim + '<|end|>\\n' }}\n    {%- elif message['role'] == 'assistant' %}\n        {{- '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}\n    {%- else %}\n        {{- '<|system|>\\n' + message['content'] + '<|end|>\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|assistant|>\\n' }}\n{%- endif %}\n",
     {"add_generation_prompt": True}),
    ("idiom_indented_blocks", "{% for m in messages %}\n  {% if m.role == 'user' %}\n    User: {{ m.content }}\n  {% else %}\n    Other: {{ m.content }}\n  {% endif %}\n{% endfor %}\n"),
    ("idiom_bos_eos", "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token if m.role == 'assistant' }}{% endfor %}", {"bos_token": "<s>", "eos_token": "</s>"}),
    ("idiom_date_string", "{% if not date_string is defined %}{% set date_string = '26 Jul 2024' %}{% endif %}Today: {{ date_string }}"),
    ("idiom_last_user_index", "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{{ ns.last }}"),
    ("idiom_reverse_search", "{% for m in messages[::-1] %}{% if m.role == 'user' %}{{ m.content }}{% break %}{% endif %}{% endfor %}"),
    ("idiom_json_args_string", "{% set args = '{\"a\": 1}' %}{% if args is string %}{{ args }}{% else %}{{ args|tojson }}{% endif %}"),
]

# (name, template, message fragment[, context]): jinja2 must fail and its message contain
# the fragment; a fragment starting with "=" is m3d's wording where jinja2's differs.
ERROR_CASES = [
    ("syntax_unclosed_if", "{% if true %}never closed", "=t:1:26: Unexpected end of template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'."),
    ("syntax_unknown_tag", "line\n{% frobnicate %}", "Encountered unknown tag 'frobnicate'."),
    ("syntax_wrong_end_tag", "{% for x in xs %}{% endif %}{% endfor %}", "Encountered unknown tag 'endif'. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'."),
    ("syntax_nesting_mistake", "{% for x in xs %}{% if x %}{% endfor %}", "You probably made a nesting mistake. Jinja is expecting this tag, but currently looking for 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'."),
    ("syntax_bad_expression", "{{ 1 + }}", "=t:1:8: unexpected 'end of print statement'"),
    ("syntax_unclosed_variable", "text\n\n{{ x ", "=t:3:6: unexpected end of template, expected 'end of print statement'"),
    ("syntax_unclosed_comment", "a {# comment", "Missing end of comment tag"),
    ("syntax_unclosed_raw", "{% raw %} stuff", "Missing end of raw directive"),
    ("syntax_unbalanced_bracket", "{{ [1, 2) }}", "unexpected ')', expected ']'"),
    ("syntax_stray_bracket", "{{ 1 ] }}", "unexpected ']'"),
    ("syntax_unknown_filter", "{{ xs|frobnicate }}", "No filter named 'frobnicate'."),
    ("syntax_unknown_test", "{{ xs is frobnicate }}", "No test named 'frobnicate'."),
    ("syntax_bad_char", "{{ 1 ! 2 }}", "=t:1:6: unexpected char '!'"),
    ("syntax_default_after", "{% macro m(a=1, b) %}{% endmacro %}", "non-default argument follows default argument"),
    ("syntax_endfor_extra", "{% for x in xs %}{% endfor x %}", "expected token 'end of statement block', got 'x'"),
    ("syntax_chained_is", "{{ 1 is number is number }}", "=t:1:"),
    ("syntax_assign_const", "{% set true = 1 %}", "=can't assign"),
    ("syntax_extends", "{% extends 'base.html' %}", "=the 'extends' tag is not supported"),
    ("syntax_multiline_position", "ok\n{% for m in messages %}\n  {{ m.content\n{% endfor %}", "=t:4:1: expected token 'end of print statement', got '{'"),
    ("runtime_raise_exception", "{% if messages|length > 2 %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}", "Conversation roles must alternate user/assistant/user/assistant/..."),
    ("runtime_undefined_chain", "{{ missing.attr }}", "'missing' is undefined"),
    ("runtime_undefined_attr_chain", "{{ d.zz.yy }}", "'dict object' has no attribute 'zz'"),
    ("runtime_undefined_list_chain", "{{ xs[10].name }}", "list object has no element 10"),
    ("runtime_undefined_none_chain", "{{ nothing.foo.bar }}", "'None' has no attribute 'foo'"),
    ("runtime_undefined_arith", "{{ missing + 1 }}", "'missing' is undefined"),
    ("runtime_undefined_call", "{{ missing() }}", "'missing' is undefined"),
    ("runtime_undefined_tojson", "{{ missing|tojson }}", "Object of type Undefined is not JSON serializable"),
    ("runtime_concat_types", "{{ 'a' + 1 }}", "can only concatenate str (not \"int\") to str"),
    ("runtime_add_types", "{{ 1 + 'a' }}", "unsupported operand type(s) for +: 'int' and 'str'"),
    ("runtime_compare_types", "{{ 1 < 'a' }}", "'<' not supported between instances of 'int' and 'str'"),
    ("runtime_division_by_zero", "{{ 1 / 0 }}", "division by zero"),
    ("runtime_not_iterable", "{% for x in nothing %}{% endfor %}", "'NoneType' object is not iterable"),
    ("runtime_unpack", "{% for a, b in [[1, 2], [3]] %}{% endfor %}", "not enough values to unpack (expected 2, got 1)"),
    ("runtime_len", "{{ n|length }}", "object of type 'int' has no len()"),
    ("runtime_in_string", "{{ 1 in 'abc' }}", "'in <string>' requires string as left operand, not int"),
    ("runtime_sandbox_append", "{% set l = [] %}{{ l.append(1) }}", "access to attribute 'append' of 'list' object is unsafe."),
    ("runtime_sandbox_update", "{{ d.update({'x': 1}) }}", "access to attribute 'update' of 'dict' object is unsafe."),
    ("runtime_namespace_assign", "{% set x = 5 %}{% set x.y = 1 %}", "cannot assign attribute on non-namespace object"),
    ("runtime_range_too_big", "{{ range(200000)|length }}", "Range too big"),
    ("runtime_unknown_filter_in_if", "{% if true %}{{ xs|frobnicate }}{% endif %}", "No filter named 'frobnicate'"),
    ("runtime_float_overflow", "{{ 10.0 ** 400 }}", "Numerical result out of range"),
    ("runtime_percent_arguments", "{{ '%s %s' % ('a',) }}", "not enough arguments for format string"),
    ("runtime_percent_unused", "{{ '%s' % ('a', 'b') }}", "not all arguments converted during string formatting"),
    ("runtime_undefined_in_tojson", "{{ [missing]|tojson }}", "Object of type Undefined is not JSON serializable"),
    ("runtime_error_line", "ok\n{% for m in messages %}\n{{ m.content + 1 }}\n{% endfor %}", "=t:3:"),
]


def render_feature(name, source, context, expect_error=False):
    try:
        return ENV.from_string(source).render(**context)
    except Exception as e:
        if not expect_error:
            raise SystemExit(f"feature case {name!r} failed in jinja2: {type(e).__name__}: {e}") from e
        raise


def feature_cases():
    """Each case renders over FEATURE_CONTEXT updated with its own "context" (stored once)."""
    out = []
    for case in FEATURE_CASES:
        name, source, extra = case[0], case[1], case[2] if len(case) > 2 else {}
        entry = {"name": name, "template": source}
        if extra:
            entry["context"] = extra
        entry["expected"] = render_feature(name, source, dict(FEATURE_CONTEXT, **extra))
        out.append(entry)
    for name, source, fragment, *rest in ERROR_CASES:
        extra = rest[0] if rest else {}
        entry = {"name": name, "template": source}
        if extra:
            entry["context"] = extra
        try:
            rendered = render_feature(name, source, dict(FEATURE_CONTEXT, **extra), expect_error=True)
        except jinja2.exceptions.TemplateSyntaxError as e:
            entry["jinja2_error"] = f"{type(e).__name__}: {e.message} (line {e.lineno})"
        except Exception as e:  # noqa: BLE001 - any jinja2 / Python error is the expectation
            entry["jinja2_error"] = f"{type(e).__name__}: {e}"
        else:
            raise SystemExit(f"error case {name!r} rendered without error: {rendered!r}")
        if fragment.startswith("="):  # our wording differs; the fragment is what m3d says
            entry["error"] = fragment[1:]
        elif fragment not in entry["jinja2_error"]:
            raise SystemExit(f"error case {name!r}: {fragment!r} not in jinja2's {entry['jinja2_error']!r}")
        else:
            entry["error"] = fragment
        out.append(entry)
    return out


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    templates = real_templates()
    real = {
        "generator": f"tools/reference/make_chat_template_fixtures.py, jinja2 {jinja2.__version__}",
        "templates": {
            tid: {k: v for k, v in t.items() if k != "text"} | {"bytes": len(t["text"].encode("utf-8"))} for tid, t in templates.items()
        },
        "cases": real_cases(templates),
    }
    features = {
        "generator": real["generator"],
        "now": FIXED_NOW.strftime("%Y-%m-%dT%H:%M:%S"),
        "context": FEATURE_CONTEXT,
        "cases": feature_cases(),
    }
    for name, data in (("real.json", real), ("features.json", features)):
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
    print(f"jinja2 {jinja2.__version__}: {len(real['cases'])} real cases over {sorted(templates)}, {len(features['cases'])} feature cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
