"""core/files.atomic_write on what `--out` may name besides a plain file."""
import os
import stat
import threading

from harness.core.files import atomic_write, sha256_bytes


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    """`--out /dev/null` or a pipe: the bytes go into it and it stays what it was (a rename over
    /dev/null, as root, would have made it a plain file)."""
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert atomic_write(fifo, [b"ab", b"c"]) == sha256_bytes(b"abc")
    reader.join(10)
    assert got == [b"abc"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp file left beside it


def test_a_symlink_keeps_pointing_at_the_new_file(tmp_path):
    """A link to the leaderboard (say) stays a link; the file it names gets the new bytes, atomically."""
    target = tmp_path / "real" / "board.md"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "board.md"
    link.symlink_to(target)
    atomic_write(link, "new")
    assert link.is_symlink() and target.read_text() == "new" and link.read_text() == "new"
    assert not list(tmp_path.rglob("*.tmp"))
