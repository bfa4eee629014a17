"""Every change is held to one style: ruff with the rules in pyproject.toml ([tool.ruff]): pycodestyle,
pyflakes (unused imports and names), import order, bugbear (e.g. zip without strict=) and pyupgrade."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    assert ruff.exists(), "ruff is missing: `make install` installs the dev extra, which pins it"
    done = subprocess.run([str(ruff), "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]


def test_ruff_with_these_rules_fails_on_an_unused_import_and_a_lax_zip(tmp_path):
    ruff = Path(sys.executable).parent / "ruff"
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef pairs(a, b):\n    return list(zip(a, b))\n")
    done = subprocess.run([str(ruff), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "F401" in done.stdout and "B905" in done.stdout, done.stdout


def _mypy(*args, cwd=ROOT):
    mypy = Path(sys.executable).parent / "mypy"
    assert mypy.exists(), "mypy is missing: `make install` installs the dev extra, which pins it"
    return subprocess.run([str(mypy), "--no-incremental", "--config-file", str(ROOT / "pyproject.toml"), *args],
                          capture_output=True, text=True, cwd=cwd)


def test_mypy_finds_nothing():
    done = _mypy()
    assert done.returncode == 0, done.stdout[-3000:]


def test_mypy_with_these_settings_fails_on_a_loop_that_rebinds_its_dict(tmp_path):
    """The shape mypy found in silver: `expected` iterated, then rebound to a Column inside the loop."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: int) -> int:\n    implied = {'a': 1}\n    for _, v in implied.items():\n"
                   "        implied = str(v)\n    return x\n")
    done = _mypy(str(bad), cwd=tmp_path)
    assert done.returncode == 1 and "[assignment]" in done.stdout, done.stdout


PACKAGE = ROOT / "src" / "ecom_lakehouse"


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in it (a function-level import still ties the two)."""
    import ast

    def module_of(path: Path) -> str:
        parts = path.relative_to(package.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {module_of(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package.name):
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
    return {name: targets - {name} for name, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """For each module that can reach itself, one path back to it (breadth-first, so the shortest)."""
    found = []
    for start in sorted(graph):
        parent, frontier = {}, [start]
        while frontier and start not in parent:
            step = []
            for node in frontier:
                for target in sorted(graph.get(node, ())):
                    if target not in parent:
                        parent[target] = node
                        step.append(target)
            frontier = step
        if start in parent:
            path, node = [start], parent[start]
            while node != start:
                path.append(node)
                node = parent[node]
            found.append([start, *reversed(path[1:]), start])
    return found


def test_the_package_has_no_import_cycles():
    assert cycles(import_graph(PACKAGE)) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x\n")
    assert ["pkg.a", "pkg.b", "pkg.a"] in cycles(import_graph(package))


def settings_problems(package: Path, listed: set[str]) -> list[str]:
    """Modules that read an ECOM_ variable themselves, and names read through settings but not listed
    there (or listed and never read)."""
    import re

    problems, used = [], set()
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        if path.name != "settings.py" and re.search(r"environ[^\n]*['\"]ECOM_", text):
            problems.append(f"{path.name} reads an ECOM_ variable itself")
        used |= set(re.findall(r"setting\(\"(ECOM_[A-Z_]+)\"\)", text))
    problems += [f"{name} is read but not listed" for name in sorted(used - listed)]
    problems += [f"{name} is listed but never read" for name in sorted(listed - used)]
    return problems


def test_every_ecom_variable_is_read_through_settings_and_documented():
    from ecom_lakehouse.settings import SETTINGS

    assert settings_problems(PACKAGE, set(SETTINGS)) == []
    readme = (ROOT / "README.md").read_text()
    assert [name for name in SETTINGS if name not in readme] == []


def test_the_settings_check_finds_a_direct_read_and_an_unlisted_name(tmp_path):
    (tmp_path / "settings.py").write_text('SETTINGS = {}\n')
    (tmp_path / "stage.py").write_text('import os\nDEBUG = os.environ.get("ECOM_DEBUG")\nX = setting("ECOM_NEW")\n')
    assert settings_problems(tmp_path, {"ECOM_OLD"}) == [
        "stage.py reads an ECOM_ variable itself", "ECOM_NEW is read but not listed", "ECOM_OLD is listed but never read"]


def broken_links(documents) -> list[str]:
    """Relative links in Markdown that point at no file (web links and in-page anchors are not checked)."""
    problems = []
    for doc in documents:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                problems.append(f"{doc.name}: {target}")
    return problems


def test_every_relative_link_in_the_readme_and_docs_resolves(tmp_path):
    assert broken_links([ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]) == []
    (tmp_path / "page.md").write_text("[ok](page.md) [web](https://example.com/x) [gone](docs/missing.md)")
    assert broken_links([tmp_path / "page.md"]) == ["page.md: docs/missing.md"]


def test_each_spark_lines_pins_agree_between_the_session_the_makefile_and_pyproject():
    """Delta's version for a Spark line is written three times (the jars make install fetches, the
    session's class path, the Python package): they must name the same release."""
    import tomllib

    from ecom_lakehouse.session import DELTA_FOR_SPARK

    make = dict(re.findall(r"^(\w+) := (\S+)$", (ROOT / "Makefile").read_text(), re.M))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pin = re.compile(r"^([\w-]+)(?:\[\w+\])?==(\S+)$")
    pins = {extra: dict(pin.match(p).groups() for p in extras[extra] if pin.match(p)) for extra in ("local", "spark4")}
    assert DELTA_FOR_SPARK["3.5"] == (make["DELTA_VERSION"], make["SCALA_VERSION"])
    assert DELTA_FOR_SPARK["4.0"] == (make["DELTA4_VERSION"], "2.13")
    for extra, line in (("local", "3.5"), ("spark4", "4.0")):
        assert pins[extra]["delta-spark"] == DELTA_FOR_SPARK[line][0], extra
        assert pins[extra]["pyspark"].startswith(f"{line}."), extra
