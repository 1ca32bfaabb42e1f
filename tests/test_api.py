import subprocess
import sys

import pytest

import blazedistill


@pytest.mark.parametrize("name", blazedistill.__all__)
def test_every_public_name_resolves(name):
    assert callable(getattr(blazedistill, name))


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        blazedistill.nope  # noqa: B018


def test_import_is_cheap():
    code = "import sys, blazedistill; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
