"""File guards for every node: reads and writes stay inside ComfyUI's input, output and temp folders.

``resolve_input_file`` and ``output_folder`` keep every read and write inside those folders after resolving links
(``os.path.realpath``). Refusals never show a server path and never say whether a path outside those folders
exists. ``prefix_problem`` also refuses save prefixes the OS cannot take (control characters, names or paths over
its byte limits, a subfolder that exists as a file), and ``saving`` turns any other OS error of a write into the
pack's error. ``file_fingerprint`` hashes in chunks after checking the header. See docs/hardening.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import unicodedata

from .common import NodeInputError, input_error

HASH_CHUNK = 1 << 20
IMAGE_HEADERS = ((b"\x89PNG\r\n\x1a\n", "PNG"),)
# bytes the save nodes add to the prefix's file name part: '_00001_360_TB.png' is 17; counters may grow
NAME_TAIL_BYTES = 24
DEFAULT_NAME_MAX, DEFAULT_PATH_MAX = 255, 4096  # Linux; used where os.pathconf cannot tell

_ESCAPE = "must name a file inside ComfyUI's {folder} folder (no '..', no absolute path, no link leaving the folder)"


def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    real = os.path.realpath(path)
    try:
        return os.path.commonpath([root, real]) == root
    except ValueError:  # different drives
        return False


def _relative_name_ok(name: str) -> bool:
    if not name or "\x00" in name or os.path.isabs(name) or os.path.splitdrive(name)[0] or name.startswith(("/", "\\")):
        return False
    parts = name.replace("\\", "/").split("/")
    return ".." not in parts


def resolve_input_file(node: str, name_input: str, name) -> str:
    """Real path of an image-combo value ('x.png', 'sub/x.png', 'x.png [output]'), inside input/output/temp.

    Refuses traversal, absolute paths and links leaving the folder with one message that shows no server path
    and is the same whether or not the target exists.
    """
    import folder_paths

    if not isinstance(name, str):
        raise input_error(node, name_input, name, "is not a file name", "pick a file from the list")
    plain, base = folder_paths.annotated_filepath(name.strip())
    folder = (
        "input"
        if base is None
        else {folder_paths.get_output_directory(): "output", folder_paths.get_temp_directory(): "temp"}.get(
            base, "input"
        )
    )
    base = base or folder_paths.get_input_directory()
    plain = plain.strip()
    if not _relative_name_ok(plain) or not _inside(base, os.path.join(base, plain)):
        raise input_error(
            node,
            name_input,
            name,
            _ESCAPE.format(folder=folder),
            f"upload the file (or copy it into ComfyUI's {folder} folder) and pick it from the list",
        )
    path = os.path.realpath(os.path.join(base, plain))
    if not os.path.isfile(path):
        raise input_error(
            node,
            name_input,
            name,
            f"no such file in ComfyUI's {folder} folder",
            "upload the file first and pick it from the list",
        )
    return path


def sniff_image(path: str) -> str | None:
    """The image format named by the file's first bytes, or None."""
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, kind in IMAGE_HEADERS:
        if head.startswith(magic):
            return kind
    return None


def require_image_file(node: str, name_input: str, name, kinds: tuple[str, ...] = ("PNG",)) -> str:
    """``resolve_input_file`` plus a header check, so a non-image is refused before anything parses it."""
    path = resolve_input_file(node, name_input, name)
    if sniff_image(path) not in kinds:
        raise input_error(
            node,
            name_input,
            name,
            f"is not a {' or '.join(kinds)} file (checked by its header)",
            "pick a 16-bit greyscale PNG (e.g. one written by Save Depth PNG 16-bit)",
        )
    return path


def file_fingerprint(path: str) -> str:
    """sha256 of a file read in 1 MiB chunks (never the whole file at once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _os_limits(root: str) -> tuple[int, int]:
    """(longest file or folder name, longest path) in bytes on the file system holding ``root``."""
    limits = []
    for name, default in (("PC_NAME_MAX", DEFAULT_NAME_MAX), ("PC_PATH_MAX", DEFAULT_PATH_MAX)):
        try:
            limits.append(int(os.pathconf(root, name)) or default)
        except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no such folder yet
            limits.append(default)
    return limits[0], limits[1]


def _control_character(text: str) -> str | None:
    for char in text:
        if unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X}"
    return None


def _short(text: str, keep: int = 24) -> str:
    return text if len(text) <= keep else text[:keep] + "..."


def _os_problem(node: str, name_input: str, prefix: str, root: str, normalised: str) -> str | None:
    """Byte limits of the OS, and subfolders that exist as files (``prefix_problem`` after its own checks)."""
    name_max, path_max = _os_limits(root)
    parts = normalised.replace("\\", "/").split("/")
    for index, part in enumerate(parts):
        size = len(os.fsencode(part))
        last = index == len(parts) - 1
        if size + (NAME_TAIL_BYTES if last else 0) > name_max:
            what = "file name" if last else "subfolder name"
            limit = name_max - NAME_TAIL_BYTES if last else name_max
            tail = f" ({NAME_TAIL_BYTES} are kept for the counter and extension the node appends)" if last else ""
            return str(
                input_error(
                    node,
                    name_input,
                    prefix,
                    f"its {what} '{_short(part)}' is {size} bytes (UTF-8); the OS allows {name_max} bytes per "
                    f"name, so at most {limit} here{tail}",
                    f"shorten that part to {limit} bytes or less (each CJK character takes 3 bytes, many emoji 4)",
                )
            )
    room = path_max - 1 - len(os.fsencode(root)) - 1 - NAME_TAIL_BYTES  # PATH_MAX counts the final NUL
    size = len(os.fsencode(normalised))
    if size > room:
        return str(
            input_error(
                node,
                name_input,
                prefix,
                f"is {size} bytes (UTF-8); with ComfyUI's output folder in front and the node's file name ending "
                f"the path would exceed the OS limit of {path_max} bytes",
                f"shorten the prefix to at most {max(room, 0)} bytes (fewer or shorter subfolders)",
            )
        )
    folder = root
    for index, part in enumerate(parts[:-1]):
        folder = os.path.join(folder, part)
        if os.path.lexists(folder) and not os.path.isdir(folder):
            sub = "/".join(parts[: index + 1])
            return str(
                input_error(
                    node,
                    name_input,
                    prefix,
                    f"its subfolder '{_short(sub, 60)}' exists in ComfyUI's output folder as a file, not a folder",
                    "use another subfolder name (or move that file away)",
                )
            )
    return None


def prefix_problem(node: str, name_input: str, prefix, root: str | None = None) -> str | None:
    """Why a filename_prefix cannot be used under ComfyUI's output folder (None when it can).

    Refused: empty, control characters, absolute or '..' (or links leaving the folder), no file name or a
    hidden one, a name over the OS's bytes per name (the file name with ``NAME_TAIL_BYTES`` to spare), a path
    over its bytes per path, a subfolder that exists as a file. Messages show no server path.
    """
    import folder_paths

    root = root or folder_paths.get_output_directory()
    fix = "use a relative prefix such as 'ldm3d/depth16' (no '..', no absolute path, no link leaving the folder)"
    if not isinstance(prefix, str) or not prefix.strip():
        return str(input_error(node, name_input, prefix, "is empty (it would write a hidden, nameless file)", fix))
    control = _control_character(prefix)
    if control:
        return str(
            input_error(
                node,
                name_input,
                prefix,
                f"contains the control character {control} (line breaks, tabs and the like would end up in "
                "the file name)",
                "remove it: use letters, digits, '-', '_' and '/' for subfolders",
            )
        )
    if not _relative_name_ok(prefix):
        return str(input_error(node, name_input, prefix, "would write outside ComfyUI's output folder", fix))
    normalised = os.path.normpath(prefix)
    base = os.path.basename(normalised)
    if not base or base.startswith(".") or prefix.endswith(("/", "\\")):
        return str(
            input_error(
                node,
                name_input,
                prefix,
                "has no file name part (or a hidden one starting with '.')",
                "end the prefix with a name, e.g. 'ldm3d/depth16'",
            )
        )
    folder = os.path.join(root, os.path.dirname(normalised))
    if not _inside(root, folder):
        return str(input_error(node, name_input, prefix, "would write outside ComfyUI's output folder", fix))
    return _os_problem(node, name_input, prefix, root, normalised)


@contextlib.contextmanager
def saving(node: str, name_input: str, prefix):
    """Writes inside this block raise the pack's error on an OS error (disk full, read-only, ...), no path."""
    try:
        yield
    except OSError as err:
        raise input_error(
            node,
            name_input,
            prefix,
            f"the file could not be written ({err.strerror or type(err).__name__})",
            "check that ComfyUI's output folder is writable and has free space, or use another prefix",
        ) from None


def output_folder(node: str, name_input: str, prefix, width: int = 0, height: int = 0):
    """``folder_paths.get_save_image_path`` after the containment check (links resolved, also after %date%).

    Returns (folder, filename, counter, subfolder). Raises NodeInputError naming the input; no server path.
    """
    import folder_paths

    root = folder_paths.get_output_directory()
    problem = prefix_problem(node, name_input, prefix, root)
    if problem is None and "%" in prefix:
        expanded = prefix
        for var, val in (("%width%", str(width)), ("%height%", str(height))):
            expanded = expanded.replace(var, val)
        problem = prefix_problem(node, name_input, expanded, root) if "%" not in expanded else None
    if problem:
        raise NodeInputError(problem)
    with saving(node, name_input, prefix):
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, root, width, height)
    if not _inside(root, folder):
        raise input_error(
            node,
            name_input,
            prefix,
            "would write outside ComfyUI's output folder",
            "use a relative prefix without links that leave the output folder",
        )
    return folder, filename, counter, subfolder


def output_file(node: str, name_input: str, prefix, folder: str, name: str) -> str:
    """Full path of one file to write; refuses a name that is (or links) outside the output folder."""
    import folder_paths

    path = os.path.join(folder, name)
    if os.path.islink(path) or not _inside(folder_paths.get_output_directory(), path):
        raise input_error(
            node,
            name_input,
            prefix,
            f"the file name {name!r} is taken by a link",
            "remove the link from the output folder or change the prefix",
        )
    return path
