import json
import math

import numpy as np

from blazedistill.jsonsafe import json_safe


def test_non_finite_become_null_and_numpy_scalars_plain():
    value = {"a": [math.nan, np.float32(1.5), (np.int64(3), math.inf)], "b": {"c": -math.inf, "d": "x"}}
    safe = json_safe(value)
    assert safe == {"a": [None, 1.5, [3, None]], "b": {"c": None, "d": "x"}}
    assert type(safe["a"][1]) is float and type(safe["a"][2][0]) is int
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
