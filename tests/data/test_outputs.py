"""data.core.outputs: outputs checked before any work and written whole or not at all; stdin decoded
strictly line by line (data.core.parallel.iter_lines)."""

from __future__ import annotations

import io
import os

import pytest

from data.core.outputs import OutputError, atomic_output, atomic_path, check_output, same_file
from data.core.parallel import DataError, iter_lines


def entries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_an_error_part_way_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(b"old\xffcontent\n")
    with pytest.raises(RuntimeError, match="part-way"):
        with atomic_output(target, overwrite=True) as f:
            f.write("new line\n" * 1000)
            f.flush()
            raise RuntimeError("part-way")
    assert target.read_bytes() == b"old\xffcontent\n"
    assert entries(tmp_path) == ["out.txt"]
    with pytest.raises(KeyboardInterrupt):  # an interrupt too
        with atomic_path(tmp_path / "plot.png") as tmp:
            tmp.write_bytes(b"half a png")
            raise KeyboardInterrupt
    assert entries(tmp_path) == ["out.txt"]


def test_the_output_appears_whole_at_the_end_with_ordinary_permissions(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_output(target) as f:
        f.write("a\nb\n")
        assert not target.exists()  # nothing at the target until the block ends
        (tmp,) = [p for p in tmp_path.iterdir()]
        assert tmp.name.startswith(".out.txt.") and tmp.parent == tmp_path  # same folder: rename is atomic
    assert target.read_bytes() == b"a\nb\n" and entries(tmp_path) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    target.chmod(0o640)
    with atomic_output(target, overwrite=True, mode="wb") as f:
        f.write(b"c\n")
    assert target.read_bytes() == b"c\n" and target.stat().st_mode & 0o777 == 0o640  # mode kept


def test_atomic_path_keeps_the_suffix_for_writers_that_infer_the_format(tmp_path):
    with atomic_path(tmp_path / "a.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"\x89PNG")
    assert (tmp_path / "a.png").read_bytes() == b"\x89PNG" and entries(tmp_path) == ["a.png"]


def test_an_existing_output_needs_overwrite(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("keep\n")
    with pytest.raises(OutputError) as error:
        with atomic_output(target) as f:
            f.write("lost\n")
    assert (
        str(error.value)
        == f"--output {target} exists; pass --overwrite to replace it, or choose another path"
    )
    assert target.read_text() == "keep\n" and entries(tmp_path) == ["out.txt"]
    with atomic_output(target, overwrite=True) as f:
        f.write("new\n")
    assert target.read_text() == "new\n"


def test_the_input_is_refused_as_output_even_through_a_hard_link(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("precious\n")
    link = tmp_path / "link.txt"
    os.link(source, link)
    symlink = tmp_path / "sym.txt"
    symlink.symlink_to(source)
    assert same_file(link, source) and not same_file(tmp_path / "absent", source)
    for path in (source, link, symlink):
        with pytest.raises(OutputError, match="same file as the input") as error:
            check_output(path, overwrite=True, inputs=[None, source])
        assert str(path) in str(error.value) and str(source) in str(error.value)
    assert source.read_text() == "precious\n" and isinstance(error.value, DataError)


def test_folders_devices_and_missing_folders_are_refused(tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, overwrite=True)
    with pytest.raises(OutputError, match="not a regular file"):
        check_output("/dev/null", overwrite=True)
    with pytest.raises(OutputError, match="does not exist; create it first"):
        check_output(tmp_path / "no" / "out.txt")
    assert entries(tmp_path) == []


def test_stdin_bytes_are_decoded_line_by_line_and_bad_ones_named():
    stream = io.BytesIO("w1 w2\r\nw\u00e4\n\nlast".encode())
    assert list(iter_lines(stream, "<stdin>")) == ["w1 w2", "w\u00e4", "", "last"]
    lines = iter_lines(io.BytesIO(b"ok\nw1 w2 \xff\xfe w3\n"), "<stdin>")
    assert next(lines) == "ok"  # read as needed: the bad line is only seen when reached
    with pytest.raises(DataError) as error:
        next(lines)
    assert str(error.value).startswith("<stdin>, line 2: not valid UTF-8 (invalid start byte at byte 6)")
