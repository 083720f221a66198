#!/usr/bin/env python3
"""Render chat templates with Python's jinja2 the way Hugging Face transformers does.

Reads a JSON list of cases from stdin, each
  {"template": SRC, "messages": [...], "add_generation_prompt": bool,
   "bos_token": str, "eos_token": str}
and writes a JSON list of results, each {"ok": true, "text": OUT} or
{"ok": false, "error": MESSAGE}. Exit status 77 when jinja2 is not installed.

The environment is transformers' (chat_template_utils._compile_jinja_template):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[loopcontrols]), a raise_exception global, and its tojson filter
(json.dumps with ensure_ascii=False). {% generation %} blocks render their body.
"""
import json
import sys

try:
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2 import nodes
except ImportError:
    sys.exit(77)


class GenerationTracker(Extension):
    """{% generation %}...{% endgeneration %}: the body, as transformers' AssistantTracker renders it."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def main():
    env = make_env()
    cases = json.load(sys.stdin)
    compiled = {}
    out = []
    for case in cases:
        src = case["template"]
        try:
            if src not in compiled:
                compiled[src] = env.from_string(src)
            text = compiled[src].render(
                messages=case["messages"],
                add_generation_prompt=case.get("add_generation_prompt", False),
                bos_token=case.get("bos_token", ""),
                eos_token=case.get("eos_token", ""),
            )
            out.append({"ok": True, "text": text})
        except Exception as e:  # a template error is a result to compare, not a failure here
            out.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout, ensure_ascii=True)


if __name__ == "__main__":
    main()
