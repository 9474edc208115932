"""Writes the generated documentation pages: the home page, the changelog, guides and results.

* `README.md` -> `docs/index.md` (the site's home is the README, its links
  pointed at the site's pages: never a copy that can go stale);
* `CHANGELOG.md` -> `docs/changelog.md`;
* `guides/*.py` (keras.io format: a header docstring, markdown in module-level
  strings, code in between) -> `docs/guides/<name>.md`;
* `examples/results/` -> `docs/results/`, `evidence/results/` ->
  `docs/evidence-results/` (the evidence pages link to them).

All outputs are build products (git-ignored). Run before `mkdocs build`.
"""

import ast
import os
import re
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


def readme_to_index(text):
    """The README as the site's home page: links to repository files become links to the site's pages."""

    def page(match):
        label, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        if path.startswith("docs/"):
            path = path[len("docs/") :]
        elif path.startswith("guides/") and path.endswith(".py"):
            path = path[: -len(".py")] + ".md"
        elif path.startswith("examples/results/"):
            path = "results/" + path[len("examples/results/") :]
        elif path.startswith("evidence/results/"):
            path = "evidence-results/" + path[len("evidence/results/") :]
        elif path == "CHANGELOG.md":
            path = "changelog.md"
        return f"[{label}]({path}{'#' + anchor if anchor else ''})"

    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", page, text)


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
    evidence = os.path.join(ROOT, "evidence", "results")
    if os.path.isdir(evidence):
        shutil.copytree(evidence, os.path.join(DOCS, "evidence-results"), dirs_exist_ok=True)
    with open(os.path.join(ROOT, "README.md")) as f:
        index = readme_to_index(f.read())
    with open(os.path.join(DOCS, "index.md"), "w") as f:
        f.write(index)
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        changelog = readme_to_index(f.read())
    with open(os.path.join(DOCS, "changelog.md"), "w") as f:
        f.write(changelog)


if __name__ == "__main__":
    main()
