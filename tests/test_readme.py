"""The README is the front door: its snippets run, and the site's home page is made from it."""

import os
import re

from conftest import load_example

ROOT = os.path.join(os.path.dirname(__file__), "..")


def readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_the_quick_start_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", readme(), flags=re.S)
    assert len(blocks) == 3
    namespace = {}
    for block in blocks:  # each snippet goes on from the one before, as a reader runs them
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["model"].optimizer is not None


def test_the_site_home_is_the_readme_with_every_link_pointing_at_a_page():
    gen_pages = load_example("gen_pages", folder="docs")
    index = gen_pages.readme_to_index(readme())
    assert index.splitlines()[0] == "# keras_corrinit"
    for target in re.findall(r"\]\(([^)\s]+)\)", index):
        path = target.partition("#")[0]
        if re.match(r"[a-z]+://", target) or not path:
            continue
        if path.startswith("guides/"):
            source = os.path.join(ROOT, path[: -len(".md")] + ".py")
        elif path.startswith("results/"):
            source = os.path.join(ROOT, "examples", path)
        elif path.startswith("evidence-results/"):
            source = os.path.join(ROOT, "evidence", "results", path[len("evidence-results/") :])
        elif path == "changelog.md":
            source = os.path.join(ROOT, "CHANGELOG.md")
        else:
            source = os.path.join(ROOT, "docs", path)
        assert os.path.exists(source), f"the home page links to {target}, which the site does not have"


def test_the_readme_is_short_enough_to_read_in_two_minutes():
    assert len(readme().splitlines()) <= 130
