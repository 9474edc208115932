"""Writes the generated documentation pages: guides and results.

* `guides/*.py` (keras.io format: a header docstring, markdown in module-level
  strings, code in between) -> `docs/guides/<name>.md`;
* `examples/results/` -> `docs/results/` (the evidence pages link to it).

Both outputs are build products (git-ignored). Run before `mkdocs build`.
"""

import ast
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDES, DOCS = os.path.join(ROOT, "guides"), os.path.join(ROOT, "docs")


def guide_to_markdown(source):
    """Markdown of one keras.io-format guide script."""
    tree = ast.parse(source)
    lines = source.split("\n")
    header, *body = tree.body
    fields = dict(line.split(": ", 1) for line in ast.literal_eval(header.value).strip().split("\n") if ": " in line)
    out = [f"# {fields.pop('Title')}", ""]
    out += [f"**{key}:** {value}<br>" for key, value in fields.items()] + [""]
    code = []

    def flush():
        text = "\n".join(code).strip("\n")
        if text:
            out.extend(["```python", text, "```", ""])
        code.clear()

    position = header.end_lineno
    for node in body:
        between = lines[position : node.lineno - 1]
        segment = lines[node.lineno - 1 : node.end_lineno]
        position = node.end_lineno
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            code.extend(between)
            flush()
            out.extend([node.value.value.strip(), ""])
        else:
            code.extend(between + segment)
    flush()
    return "\n".join(out)


def main():
    target = os.path.join(DOCS, "guides")
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(GUIDES)):
        if name.endswith(".py"):
            with open(os.path.join(GUIDES, name)) as f:
                markdown = guide_to_markdown(f.read())
            with open(os.path.join(target, name[:-3] + ".md"), "w") as f:
                f.write(markdown + f"\n\n*Run it:* `python guides/{name}`\n")
    shutil.copytree(os.path.join(ROOT, "examples", "results"), os.path.join(DOCS, "results"), dirs_exist_ok=True)


if __name__ == "__main__":
    main()
