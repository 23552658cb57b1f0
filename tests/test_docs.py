"""The documentation site builds strictly, and its configuration reference covers every setting.

The build is `make docs`'s: ``mkdocs build --strict``, so a broken link or anchor, a docstring
the API reference cannot render, or a missing page fails here. The configuration reference
is generated on every build from livehub/settings.py (docs/gen_config.py through
docs/hooks.py), so it cannot drift; these tests check that what it generates is complete and
says what the code says.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from livehub.centrifugo_keys import CENTRIFUGO_KEYS
from livehub.settings import Namespace, NamespaceOptions, Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))

import gen_config  # noqa: E402  (docs/gen_config.py)


def _text(page: Path) -> str:
    """A built page's article, as text."""
    source = page.read_text()
    article = source[source.find("<article") : source.find("</article>")]
    return html.unescape(re.sub(r"<[^>]+>", "", article))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    warnings = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert not warnings, "\n".join(warnings)
    return out


def test_every_page_of_the_nav_is_built(site: Path) -> None:
    for page in (
        "quickstart",
        "guide/fastapi",
        "configuration",
        "deployment",
        "operations",
        "migration/centrifugo",
        "migration/socketio",
        "migration/broadcast",
        "reference/hub",
    ):
        assert (site / page / "index.html").is_file(), page


def test_api_reference_is_generated_from_docstrings(site: Path) -> None:
    text = _text(site / "reference" / "hub" / "index.html")
    assert "Publish JSON data (or a Pydantic model) to a channel; returns its stream position." in text
    assert "on_subscribe" in text and "api_router" in text
    assert ":class:" not in text  # the Sphinx roles became code spans (docs/griffe_roles.py)


def _leaf_paths(model: type[BaseModel], path: str = "") -> list[str]:
    """Every setting's dotted path, the way a config file spells it (``[]``: any list item)."""
    found = []
    for name, field in model.model_fields.items():
        child = f"{path}.{name}".lstrip(".")
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += _leaf_paths(annotation, child)
        elif typing.get_origin(annotation) is list and isinstance(typing.get_args(annotation)[0], type):
            item = typing.get_args(annotation)[0]
            if issubclass(item, BaseModel):
                found += _leaf_paths(item, child + "[]")
                continue
            found.append(child)
        else:
            found.append(child)
    return found


def _rows(page: str) -> dict[str, list[str]]:
    """``section.key`` -> its table row's cells, from the generated Markdown."""
    rows: dict[str, list[str]] = {}
    section = ""
    for line in page.splitlines():
        heading = re.fullmatch(r"## `([^`]+)`", line)
        if heading:
            section = heading.group(1)
        elif line.startswith("| `") and section:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[f"{section}.{cells[0].strip('`')}"] = cells
    return rows


def test_configuration_reference_has_every_setting_with_type_default_and_meaning() -> None:
    rows = _rows(gen_config.render())
    namespace_only = set(Namespace.model_fields) - set(NamespaceOptions.model_fields)
    expected = {
        p
        for p in _leaf_paths(Settings)
        # an item of channel.namespaces takes every option of channel.without_namespace, listed there
        if not p.startswith("channel.namespaces[].") or p.rsplit(".", 1)[1] in namespace_only
    }
    assert set(rows) == expected
    missing_meaning = sorted(key for key, cells in rows.items() if not cells[4])
    assert not missing_meaning, f"no #: comment in livehub/settings.py and no note: {missing_meaning}"
    assert rows["client.ping_interval"][1:3] == ["duration", "`25s`"]
    assert rows["client.queue_max_size"][1:3] == ["integer (≥ 1024)", "`1048576`"]
    assert rows["log.format"][1] == '"text" \\| "json"'


def test_configuration_reference_names_centrifugo_keys_from_the_list() -> None:
    rows = _rows(gen_config.render())
    for key, cells in rows.items():
        section, name = key.rsplit(".", 1)
        if name in CENTRIFUGO_KEYS.get(section, frozenset()):
            assert cells[3] == "same", key
        else:
            assert cells[3] == "*livehub only*", key
    assert rows["engine.url"][3] == "*livehub only*"
    assert rows["client.token.hmac_secret_key"][3] == "same"


def test_configuration_reference_quotes_the_code_comments() -> None:
    rows = _rows(gen_config.render())
    assert rows["client.channel_limit"][4] == "Maximum channels per connection (error 106 beyond it)."


def test_notes_only_fill_in_for_settings_without_a_comment() -> None:
    """A note for a field that is gone, or that now has its own ``#:`` comment, must go."""
    import livehub.settings as settings_module

    comments = gen_config.doc_comments()
    for key in gen_config.NOTES:
        class_name, field = key.split(".")
        model = getattr(settings_module, class_name)
        assert field in model.model_fields, f"NOTES[{key!r}]: no such setting"
        assert (class_name, field) not in comments, f"NOTES[{key!r}]: the code comments it now"


def test_configuration_page_is_in_the_built_site(site: Path) -> None:
    text = _text(site / "configuration" / "index.html")
    for key in ("hmac_secret_key", "channel_position_check_delay", "message_size_limit", "presence_ttl"):
        assert key in text


def _nested(section: str, key: str, value: object) -> dict[str, object]:
    """``{"a": {"b": {key: value}}}`` for section ``a.b``; ``x[]`` becomes a list of one item."""
    data: dict[str, object] = {key: value}
    for part in reversed([p for p in section.split(".") if p]):
        if part.endswith("[]"):
            data = {part[:-2]: [{"name": "ns", **data}]}
        else:
            data = {part: data}
    return data


def test_the_refused_centrifugo_options_listed_are_refused_and_pass_switched_off() -> None:
    """The migration guide's generated table says what ``livehub checkconfig`` does."""
    from livehub.settings import config_problems

    listed = 0
    for line in gen_config.unsupported().splitlines()[2:]:
        section_cell, options_cell = (c.strip() for c in line.strip("|").split("|"))
        section = "" if section_cell == "(top level)" else section_cell.strip("`")
        for option in re.findall(r"`([^`]+)`", options_cell):
            on = config_problems(Settings(**_nested(section, option, "on")))
            assert any("Centrifugo's option, not supported" in p for p in on), (section, option, on)
            assert config_problems(Settings(**_nested(section, option, False))) == [], (section, option)
            listed += 1
    assert listed > 100
