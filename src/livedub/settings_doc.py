"""Markdown tables of every setting, generated from the settings models.

Run `python -m livedub.settings_doc [--write README.md]`. The README carries the output between
`<!-- settings:begin -->` and `<!-- settings:end -->`; a unit test keeps it in sync.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings

from livedub.media.settings import MediaSettings
from livedub.media.sts_link.sts_pool import StsPoolSettings
from livedub.sts.fanout import FanoutSettings
from livedub.sts.settings import StsSettings

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"

# Settings read outside the pydantic models (process launchers, the model cache).
OTHER_SETTINGS: list[tuple[str, str, str]] = [
    ("LIVEDUB_HOME", "`~/.cache/livedub`", "Model cache (`models/`), fixtures and runtime files of livedub."),
    ("RTMP_PORT", "`1935`", "RTMP port of `livedub media-server`."),
    ("RTMP_STAT_PORT", "`8089`", "HTTP port of the media server's `/stat` (nginx-rtmp XML) and `/health`."),
    ("RTMP_BIND", "`0.0.0.0`", "Address the media server binds to."),
    ("MEDIA_HOOKS_URL", "`http://127.0.0.1:8080`", "media-service base URL for nginx's on_publish hooks."),
]


def _table(*models: type[BaseSettings]) -> list[str]:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in ((n, f) for model in models for n, f in model.model_fields.items()):
        env = field.validation_alias if isinstance(field.validation_alias, str) else name.upper()
        default = field.default
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        rows.append(f"| `{env}` | {shown} | {(field.description or '').replace('|', '/')} |")
    return rows


def render() -> str:
    lines = ["#### STS service (`livedub sts`)", "", *_table(StsSettings, FanoutSettings), ""]
    lines += ["#### media-service (`livedub media`)", "", *_table(MediaSettings, StsPoolSettings), ""]
    lines += ["#### Media server and paths", "", "| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{env}` | {default} | {meaning} |" for env, default, meaning in OTHER_SETTINGS]
    return "\n".join(lines) + "\n"


def splice(readme: str) -> str:
    """The README with its settings section replaced by the current tables."""
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{render()}{END}{tail}"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if sys.argv[1:2] == ["--write"]:  # python -m livedub.settings_doc --write README.md
        target = Path(sys.argv[2])
        target.write_text(splice(target.read_text()))
    else:
        print(render())
