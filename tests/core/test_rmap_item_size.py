"""scripts/rmap_item_size.py, the figures docs/architecture.md quotes, still
reads the header: the C record is the size csrc/internal.h asserts, and
the Python object it is compared with is larger even empty."""
import importlib.util
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_rmap_item_size_script(capsys):
    path = os.path.join(ROOT, "scripts", "rmap_item_size.py")
    spec = importlib.util.spec_from_file_location("rmap_item_size", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with open(os.path.join(ROOT, "csrc", "internal.h")) as f:
        asserted = re.search(r"_Static_assert\(sizeof\(struct rmap_item\) == (\d+)", f.read())
    assert out["c_rmap_item_bytes"] == int(asserted.group(1))
    assert 0 < out["c_chunk_record_bytes_per_item"] < 1
    assert out["python_slotted_record_fields_only_bytes_empty"] > 3 * out["c_rmap_item_bytes"]
    assert out["python_slotted_item_bytes_typical"] == (out["python_slotted_item_bytes_empty"]
                                                        + out["python_int_objects_bytes"])
