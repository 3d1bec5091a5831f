"""The package layout says how the moderation path goes: mail comes in (intake/), is judged
(rules/), waits for moderators (moderation/) and goes out (delivery/). intake/ and delivery/ share
only the small modules beside them (store, posts, config, ...): neither imports the other, and
neither imports moderation/. Checked on the source, so a stray import fails here, not in review."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "listmod"


def imported_modules(path: Path) -> set[str]:
    """Absolute names (listmod.x.y) of the listmod modules a file imports, at any depth."""
    package = ["listmod", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("listmod")}


def imports_of(subpackage: str) -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): imported_modules(p) for p in (PACKAGE / subpackage).rglob("*.py")}


def test_intake_imports_neither_delivery_nor_moderation():
    for module, names in imports_of("intake").items():
        wrong = {n for n in names if n.startswith(("listmod.delivery", "listmod.moderation"))}
        assert not wrong, f"{module} imports {sorted(wrong)}"


def test_delivery_imports_neither_intake_nor_moderation():
    for module, names in imports_of("delivery").items():
        wrong = {n for n in names if n.startswith(("listmod.intake", "listmod.moderation"))}
        assert not wrong, f"{module} imports {sorted(wrong)}"


def test_the_shared_modules_import_none_of_the_stages():
    # the daemon's wiring and the command line (with doctor, which reaches every server) use all stages
    shared = [p for p in PACKAGE.glob("*.py") if p.stem not in ("cli", "daemon", "doctor", "__main__")]
    for path in shared:
        wrong = {n for n in imported_modules(path)
                 if n.startswith(("listmod.intake", "listmod.delivery", "listmod.moderation"))}
        assert not wrong, f"{path.name} imports {sorted(wrong)}"


def test_the_check_sees_an_import_when_there_is_one(tmp_path):
    probe = PACKAGE / "intake" / "server.py"
    assert "listmod.rules.context" in imported_modules(probe)
    assert "listmod.store.GroupWriter" in imported_modules(probe)
