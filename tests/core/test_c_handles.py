"""The C core's handles have types.  rmap_items and stable nodes
are named by one-field structs (rmap_id, snode_id in csrc/internal.h), so
passing one kind where the other is expected does not compile.  Checked on
the kernel function the issue names, stable_tree_append(m, item, node),
by compiling csrc/ksm.c with one more function appended that calls it
(gcc -fsyntax-only): in the right order it compiles, swapped it does not.
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSRC = os.path.join(ROOT, "csrc")


def _compile_ksm_with(tmp_path, extra):
    with open(os.path.join(CSRC, "ksm.c")) as f:
        src = f.read() + "\n" + extra + "\n"
    path = tmp_path / "ksm_probe.c"
    path.write_text(src)
    return subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                           "-I", CSRC, str(path)], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("call, compiles", [
    ("stable_tree_append(m, item, node)", True),
    ("stable_tree_append(m, node, item)", False),
    ("remove_rmap_item_from_tree(m, item)", True),
    ("remove_rmap_item_from_tree(m, node)", False),
    ("stable_node_erase(m, item)", False),
])
def test_swapped_handles_do_not_compile(tmp_path, call, compiles):
    r = _compile_ksm_with(tmp_path, "void probe(ke_machine *m, rmap_id item, snode_id node);\n"
                                    "void probe(ke_machine *m, rmap_id item, snode_id node)\n"
                                    "{\n    (void)item; (void)node;\n    " + call + ";\n}")
    if compiles:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode != 0
        assert "incompatible type" in r.stderr, r.stderr
