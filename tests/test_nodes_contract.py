"""Contract of every node the pack declares (real ComfyUI schema objects, in-process)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_node_ids_are_prefixed_literals_and_unique(pack):
    ids = [cls.GET_SCHEMA().node_id for cls in pack.node_classes]
    assert len(ids) == len(set(ids))
    assert all(node_id.startswith("SDL3D_") for node_id in ids), ids
    literal_ids = set()
    for path in (REPO_ROOT / "nodes").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "node_id" and isinstance(node.value, ast.Constant):
                literal_ids.add(node.value.value)
    assert set(ids) <= literal_ids, "node_id must be a string literal (ComfyUI-Manager scans for it)"


def test_every_node_documents_itself(pack):
    for cls in pack.node_classes:
        schema = cls.GET_SCHEMA()
        info = cls.GET_NODE_INFO_V1()
        assert schema.description and len(schema.description) > 20, schema.node_id
        assert schema.category.startswith("syncdiffusion-ldm3d/"), schema.node_id
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("tooltip"), f"{schema.node_id}: input '{name}' has no tooltip"
        tooltips = info.get("output_tooltips") or []
        assert len(tooltips) == len(info["output"]) and all(tooltips), f"{schema.node_id}: output tooltips"
        input_ids = {i.id for i in schema.inputs}
        assert not input_ids & {o.id for o in schema.outputs}, f"{schema.node_id}: input and output share an id"


def test_pack_root_exports_only_the_v3_entry_point():
    tree = ast.parse((REPO_ROOT / "__init__.py").read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assert names == {"comfy_entrypoint"}
    assert "NODE_CLASS_MAPPINGS" not in assigned


def test_cores_never_import_comfyui():
    forbidden = {"comfy", "comfy_api", "folder_paths", "nodes", "server", "latent_preview", "comfy_extras"}
    for core in ("sync_core", "ldm3d_core"):
        for path in (REPO_ROOT / core).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    roots = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    roots = {(node.module or "").split(".")[0]}
                else:
                    continue
                assert not roots & forbidden, f"{path.relative_to(REPO_ROOT)} imports {roots & forbidden}"


def test_no_module_is_over_800_lines():
    for folder in ("nodes", "sync_core", "ldm3d_core", "scripts"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            assert len(path.read_text().splitlines()) <= 820, path


def test_every_node_class_in_a_feature_package_is_registered(pack):
    """A node written in nodes/<feature>/ but left out of that package's node_classes() would silently vanish
    (private bases, named with a leading underscore, and the shared base in nodes/shared/ are not nodes)."""
    registered = {cls.__name__ for cls in pack.node_classes}
    declared = set()
    for path in (REPO_ROOT / "nodes").rglob("*.py"):
        if path.parent.name == "shared":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ClassDef)
                and not node.name.startswith("_")
                and any(
                    isinstance(base, ast.Attribute) and base.attr in ("ComfyNode", "CheckedNode") for base in node.bases
                )
            ):
                declared.add(node.name)
    assert declared and declared <= registered, f"declared but not registered: {sorted(declared - registered)}"


def test_queue_checks_are_derived_from_each_schema(pack):
    """ComfyUI reads validate_inputs' signature (through first_real_override, as its executor does) to decide
    which values it hands over: every FLOAT and COMBO widget and the inputs the node's rules read, no **kwargs
    (which would repeat one message under every input). A NaN in any FLOAT widget and an unknown value in any
    non-upload COMBO is refused with a message that names that input."""
    import inspect

    from comfy_api.internal import first_real_override

    validation = pack.node_module("shared.validation")
    checked = 0
    for cls in pack.node_classes:
        assert issubclass(cls, validation.CheckedNode), cls.__name__
        inputs = cls.GET_SCHEMA().inputs
        widgets = [i for i in inputs if i.get_io_type() in ("FLOAT", "COMBO")]
        function = first_real_override(cls, "validate_inputs")
        if not widgets and not cls.RULE_INPUTS:
            assert function is None, cls.__name__
            continue
        spec = inspect.getfullargspec(function)
        assert spec.varkw is None and set(spec.args) - {"cls"} == {i.id for i in widgets} | set(cls.RULE_INPUTS)
        for widget in widgets:
            if widget.get_io_type() == "FLOAT":
                bad = float("nan")
            elif getattr(widget, "upload", None) is None:
                bad = "no such choice"
            else:
                continue
            problem = function(**{widget.id: bad})
            assert isinstance(problem, str) and f"input '{widget.id}'" in problem, (cls.__name__, widget.id)
            checked += 1
    assert checked > 60
