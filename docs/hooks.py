"""mkdocs hooks: the configuration reference page, rendered from the code on every build."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).parent))

import gen_config  # docs/gen_config.py, importable once docs/ is on the path

#: A page says where the generated list of unsupported Centrifugo options goes with this line.
UNSUPPORTED = "<!-- generated: unsupported centrifugo options -->"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return markdown.replace(UNSUPPORTED, gen_config.unsupported())


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    files.append(File.generated(config, gen_config.PAGE, content=gen_config.render()))
    return files
