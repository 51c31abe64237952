"""The build's one job beyond pyproject.toml: compile the sidecar's request path to C with mypyc.

The code is `mypy --strict` clean, so mypyc can compile it as written: no second language, no hand-written C.
Compiled, a proxied request costs about a third fewer instructions than interpreted (tests/bench/
bench_proxy_inprocess.py --callgrind). `MESHTRACE_PURE_PYTHON=1` at install time skips the compilation (no C
compiler, or debugging with pdb); the same modules then run interpreted, only slower.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _compiled_modules() -> list[str]:
    """meshtrace/compiled.py's MODULES, as paths in the staged tree; read, not imported (the build environment
    has none of the package's dependencies)."""
    tree = ast.parse((HERE / "meshtrace" / "compiled.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODULES" for t in node.targets):
            return [name.replace(".", "/") + ".py" for name in ast.literal_eval(node.value)]
    raise SystemExit("meshtrace/compiled.py has no MODULES")


def _staged_tree() -> Path:
    """A tree of links in which `proxy/` and `integrations/` sit inside `meshtrace/`, as pyproject's package-dir
    installs them: mypyc names each module after its path, and must see `meshtrace.proxy.exchange`, not
    `proxy.exchange`."""
    root = HERE / "build" / "mypyc-src"
    package = root / "meshtrace"
    package.mkdir(parents=True, exist_ok=True)
    links = {entry.name: entry for entry in (HERE / "meshtrace").iterdir() if entry.name != "__pycache__"}
    links["proxy"] = HERE / "proxy"
    links["integrations"] = HERE / "integrations"
    for name, target in links.items():
        link = package / name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    # Types are checked by `mypy --strict` on the real tree; here mypy only informs the compiler. The build runs in
    # pip's isolated environment, where the runtime dependencies are absent: their values are then `Any` to it,
    # and modules it only follows (not compiled) may not check clean that way: their errors are not reported.
    (root / "mypy.ini").write_text("[mypy]\npython_version = 3.11\nignore_missing_imports = True\n"
                                   "follow_imports = silent\n")
    return root


def _ext_modules() -> list[object]:
    if os.environ.get("MESHTRACE_PURE_PYTHON") == "1":
        return []
    from mypyc.build import mypycify

    root = _staged_tree()
    cwd = Path.cwd()
    os.chdir(root)          # mypyc names modules (and its generated files) from paths relative to here
    try:
        return list(mypycify(_compiled_modules(), opt_level="3", group_name="meshtrace_native",
                             target_dir=str(HERE / "build" / "mypyc-c")))
    finally:
        os.chdir(cwd)


setup(ext_modules=_ext_modules())
