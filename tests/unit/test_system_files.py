"""Every system file livedub reads comes from a Debian package that scripts/setup.sh installs.

A package installed by hand (or pulled in as a Recommends on one machine) must never hide a missing install step:
each file or binary the code uses is looked up with `dpkg -S` and its package must be in the setup's APT_PACKAGES
or among their (recursive) Depends, which apt always installs; Recommends are not (`--no-install-recommends`).

The paths come from the constants the code itself uses. A scan of src/ for literal system paths and for the
programs it runs makes sure a new one cannot be added without being checked here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from livedub import fixture
from livedub.dubbing.translate.apertium import MODES as APERTIUM_MODES
from livedub.mediaserver.nginx import RTMP_MODULE
from livedub.stack import publish_argv
from livedub.sts.settings import StsSettings
from livedub.testing import corpus, fixture_music

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="a Debian system (dpkg) is what setup.sh targets"),
]

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup.sh"
SYSTEM_PREFIXES = ("/usr/", "/etc/", "/opt/", "/var/lib/", "/lib/", "/bin/", "/sbin/")
APERTIUM_MODES_DIR = Path("/usr/share/apertium/modes")  # where apertium looks up `apertium <mode>`


def _sts_binary(field: str) -> str:
    return str(StsSettings.model_fields[field].default)


# Programs livedub runs, by the name the code runs them with.
BINARIES: dict[str, str] = {
    publish_argv(Path("in.mp4"), "rtmp://127.0.0.1/live/x/in")[0]: "publisher, fixtures, test patterns",
    "ffprobe": "tests/e2e stream analysis",
    "nginx": "mediaserver.nginx (with RTMP_MODULE)",
    _sts_binary("apertium_binary"): "sts apertium translator",
    _sts_binary("espeak_binary"): "sts espeak-ng TTS",
    "stress-ng": "busy-machine tests",
}


def system_files() -> dict[Path, str]:
    """Path -> what reads it, from the constants the code uses."""
    files: dict[Path, str] = {
        fixture.TRANSCRIPTS: "fixture transcripts",
        RTMP_MODULE: "nginx rtmp module",
        fixture_music.MUSIC_DIR / f"{fixture_music.MUSIC_TRACK}.wav": "speech-over-music bed",
    }
    for names in fixture.SLOT_PROMPTS:
        files.update({fixture.SOUNDS_DIR / f"{name}.wav": "fixture prompt" for name in names})
    for language in corpus.LANGUAGES:
        files[Path(corpus.TRANSCRIPTS.format(lang=language))] = "corpus transcripts"
        files[corpus.SOUNDS_DIR / language] = "corpus prompts"
        files.update({corpus.SOUNDS_DIR / language / f"{n}.wav": "music fixture prompt" for n in fixture_music.PROMPTS})
    files.update({APERTIUM_MODES_DIR / f"{mode}.mode": "apertium mode" for mode in APERTIUM_MODES.values()})
    files[_espeak_library()] = "phonemizer (Kokoro's IPA)"
    return files


def _espeak_library() -> Path:
    """The libespeak-ng that phonemizer loads: a path, or a soname that the dynamic linker resolves."""
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    library = str(EspeakWrapper.library())
    if os.path.isabs(library):
        return Path(library)
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    paths = [line.split(" => ")[-1] for line in cache.splitlines() if line.strip().startswith(library + " ")]
    return Path(paths[0]) if paths else Path(library)


# Literal system paths in src/ that are checked through system_files() (directly or as the template they fill).
CHECKED_LITERALS = {
    str(fixture.SOUNDS_DIR),
    str(fixture.TRANSCRIPTS),
    str(corpus.SOUNDS_DIR),
    corpus.TRANSCRIPTS,
    str(RTMP_MODULE),
    str(fixture_music.MUSIC_DIR),
}


def apt_packages() -> list[str]:
    match = re.search(r"^APT_PACKAGES=\(([^)]*)\)", SETUP.read_text(), re.MULTILINE)
    assert match, "APT_PACKAGES=(...) not found in scripts/setup.sh"
    return match.group(1).split()


@cache
def _dpkg_database() -> tuple[dict[str, str], dict[str, set[str]]]:
    """(installed package -> its Depends + Pre-Depends, virtual name -> installed providers)."""
    fmt = "${Package}\t${db:Status-Abbrev}\t${Provides}\t${Depends}, ${Pre-Depends}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True, check=True).stdout
    depends: dict[str, str] = {}
    providers: dict[str, set[str]] = {}
    for line in out.splitlines():
        package, status, provides, deps = line.split("\t")
        if not status.startswith("ii"):
            continue
        depends[package] = deps
        for name in _names(provides):
            providers.setdefault(name, set()).add(package)
    return depends, providers


def _names(field: str) -> list[str]:
    """Package names of a dependency field, without versions and architecture qualifiers."""
    return [m.group(1) for m in re.finditer(r"([a-z0-9][a-z0-9+.-]+)(?::[a-z0-9]+)?\s*(?:\([^)]*\))?", field)]


def installed_by_setup() -> frozenset[str]:
    return closure(tuple(apt_packages()))


@cache
def closure(packages: tuple[str, ...]) -> frozenset[str]:
    """`packages` and everything they Depend on, recursively (each alternative that is installed)."""
    depends, providers = _dpkg_database()
    seen: set[str] = set()
    todo = list(packages)
    while todo:
        name = todo.pop()
        for package in (({name} & depends.keys()) | providers.get(name, set())) - seen:
            seen.add(package)
            todo.extend(_names(depends[package]))
    return frozenset(seen)


_OWNERS: dict[str, set[str]] = {}


def lookup_owners(paths: list[str]) -> None:
    """One `dpkg -S` for many paths (one call each would take seconds); the answers go to `_OWNERS`."""
    todo = sorted({p for path in paths for p in (path, os.path.realpath(path))} - _OWNERS.keys())
    if not todo:
        return
    out = subprocess.run(["dpkg-query", "-S", *todo], capture_output=True, text=True).stdout  # exit 1: some unowned
    _OWNERS.update({path: set() for path in todo})
    for line in out.splitlines():
        head, _, owned = line.rpartition(": ")
        if owned in _OWNERS and not head.startswith("diversion"):
            _OWNERS[owned].update(p.strip().split(":")[0] for p in head.split(","))


def dpkg_owners(path: str) -> set[str]:
    lookup_owners([path])
    return _OWNERS[path]


@cache
def _alternative_registrars(link: Path) -> set[str]:
    """Installed packages whose maintainer scripts register `link` with update-alternatives."""
    pattern = re.compile(re.escape(str(link)) + r"\s")
    info = Path("/var/lib/dpkg/info")
    return {p.name.split(".")[0].split(":")[0] for p in info.glob("*.postinst") if pattern.search(p.read_text())}


def required_packages(path: Path) -> list[set[str]]:
    """For `path` to be there, one package of each set must be installed.

    The owners of the file (of its real path when only a link leads to it, like /bin under usrmerge), and for each
    update-alternatives link on the way (asterisk's sounds/en -> /etc/alternatives/...) the packages registering it.
    """
    links = [p for p in (path, *path.parents) if p.is_symlink() and os.readlink(p).startswith("/etc/alternatives/")]
    owned = dpkg_owners(str(path)) or dpkg_owners(os.path.realpath(path))
    return [owned, *(_alternative_registrars(link) for link in links)]


def _check(path: Path, what: str, installed: frozenset[str] | None = None) -> str | None:
    installed = installed_by_setup() if installed is None else installed
    if not path.exists():
        return f"{path} ({what}) is missing"
    for packages in required_packages(path):
        if not packages:
            return f"{path} ({what}) belongs to no Debian package"
        if not packages & installed:
            return f"{path} ({what}) comes from {sorted(packages)}, which setup.sh does not install"
    return None


def test_setup_lists_the_packages_the_team_needs() -> None:
    packages = apt_packages()
    for needed in ("asterisk-core-sounds-en", "asterisk-core-sounds-es", "asterisk-moh-opsound-wav", "stress-ng"):
        assert needed in packages


def test_every_system_file_is_installed_by_the_setup() -> None:
    files = system_files()
    lookup_owners([str(path) for path in files])
    problems = [p for path, what in files.items() if (p := _check(path, what))]
    assert not problems, "\n".join(problems)


def test_every_program_run_is_installed_by_the_setup() -> None:
    problems = []
    for name, what in BINARIES.items():
        path = shutil.which(name)
        if path is None:
            problems.append(f"{name} ({what}) is not on PATH")
        elif problem := _check(Path(path), what):
            problems.append(problem)
    assert not problems, "\n".join(problems)


def test_the_transcripts_come_from_packages_the_wav_ones_only_recommend() -> None:
    """The trap this test file exists for: the -wav packages do not bring the transcripts."""
    for language in corpus.LANGUAGES:
        transcripts = Path(corpus.TRANSCRIPTS.format(lang=language))
        assert dpkg_owners(str(transcripts)) == {f"asterisk-core-sounds-{language}"}
        assert f"asterisk-core-sounds-{language}" in installed_by_setup()


def test_a_package_missing_from_the_setup_is_caught() -> None:
    """Without asterisk-core-sounds-en in the list, its transcripts and its sounds/en link are flagged."""
    without = closure(tuple(p for p in apt_packages() if p != "asterisk-core-sounds-en"))
    assert "asterisk-core-sounds-en-wav" in without  # the files behind the link are still there...
    assert _check(fixture.TRANSCRIPTS, "transcripts", without)
    assert _check(corpus.SOUNDS_DIR / "en", "prompts", without)  # ...but not the link that leads to them
    assert _check(fixture.SOUNDS_DIR / "conf-full.wav", "prompt", without)
    assert _check(corpus.SOUNDS_DIR / "es", "prompts", without) is None


# ------------------------------------------------------------------------------ nothing in src/ escapes the checks


def _src_trees() -> list[ast.Module]:
    return [ast.parse(path.read_text()) for path in sorted((ROOT / "src").rglob("*.py"))]


def literal_system_paths() -> set[str]:
    found = set()
    for tree in _src_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.update({node.value} if node.value.startswith(SYSTEM_PREFIXES) else set())
    return found


SUBPROCESS_CALLS = {"run", "Popen", "check_output", "check_call", "call"}
ARGV_NAMES = {"argv", "cmd", "command"}


def programs_run() -> set[str]:
    """Programs named literally: `shutil.which("x")`, `["x", ...]` given to subprocess or bound to argv/cmd."""
    found: set[str] = set()
    for tree in _src_trees():
        for node in ast.walk(tree):
            lists: list[ast.expr] = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                if node.func.attr == "which" and isinstance(node.args[0], ast.Constant):
                    found.add(str(node.args[0].value))
                elif node.func.attr in SUBPROCESS_CALLS:
                    lists.append(node.args[0])
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in ARGV_NAMES for t in node.targets
            ):
                lists.append(node.value)
            for value in lists:
                if isinstance(value, ast.List) and value.elts and isinstance(value.elts[0], ast.Constant):
                    found.add(str(value.elts[0].value))
    return found


def test_every_literal_system_path_in_src_is_checked() -> None:
    unchecked = literal_system_paths() - CHECKED_LITERALS
    assert not unchecked, f"add these to system_files()/CHECKED_LITERALS: {sorted(unchecked)}"


def test_every_program_src_runs_is_checked() -> None:
    found = programs_run()
    assert {"ffmpeg", "nginx"} <= found  # the scan sees what it is meant to see
    assert not found - BINARIES.keys(), f"add these to BINARIES: {sorted(found - BINARIES.keys())}"
