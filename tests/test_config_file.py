"""`config_file.load`: every shipped config reads by path with no `configs` package importable, as a launcher reads
it from a checkout (configs/ is not installed)."""
import sys
from pathlib import Path

import ml_collections
import pytest

from jaxprobe import config_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(p.relative_to(CONFIGS) for p in CONFIGS.rglob("*.py")
                                        if p.name != "__init__.py"), ids=str)
def test_every_config_loads_by_path_without_the_configs_package(path, monkeypatch):
    monkeypatch.setitem(sys.modules, "configs", None)  # `import configs...` now raises ImportError
    assert isinstance(config_file.load(CONFIGS / path), ml_collections.ConfigDict)


def test_a_missing_file_is_named():
    with pytest.raises(FileNotFoundError, match="nonesuch.py"):
        config_file.load(CONFIGS / "nonesuch.py")
