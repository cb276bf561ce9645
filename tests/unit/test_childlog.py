"""Backend output → rotating private log, through a real pipe: rotation bounds, decoding, masking, stop."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.supervision.childlog import BackendLog, Pump

SECRET = "sk-live-0123456789abcdef"


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def files_of(log: BackendLog) -> list[Path]:
    return sorted(log.path.parent.glob(log.path.name + "*"))


def total_size(log: BackendLog) -> int:
    return sum(p.stat().st_size for p in files_of(log))


def text_of(log: BackendLog) -> str:
    return log.path.read_text(encoding="utf-8") if log.path.exists() else ""


@pytest.fixture
def make_log(tmp_path: Path) -> Iterator[Callable[..., BackendLog]]:
    logs: list[BackendLog] = []

    def make(max_bytes: int = 1 << 20, backups: int = 3, secrets: tuple[str, ...] = ()) -> BackendLog:
        log = BackendLog(tmp_path / "logs" / "mlx.log", max_bytes=max_bytes, backups=backups, secrets=secrets)
        logs.append(log)
        return log

    (tmp_path / "logs").mkdir()
    yield make
    for log in logs:
        log.close()


class PipeRig:
    """A real pipe: the test writes to `w` like a backend would, a Pump copies `r` into the log."""

    def __init__(self, log: BackendLog) -> None:
        self.log = log
        r, self.w = os.pipe()
        self.w_open = True
        self.pump = Pump(r, log)
        self.pump.start()

    def write(self, data: bytes) -> None:
        os.write(self.w, data)

    def close_writer(self) -> None:
        if self.w_open:
            os.close(self.w)
            self.w_open = False

    def finish(self) -> None:
        """EOF on the pipe; the pump must notice and exit."""
        self.close_writer()
        assert wait_for(lambda: not self.pump.is_alive()), "pump did not exit on EOF"


@pytest.fixture
def rig(make_log: Callable[..., BackendLog]) -> Iterator[Callable[..., PipeRig]]:
    rigs: list[PipeRig] = []

    def make(**kw: object) -> PipeRig:
        made = PipeRig(make_log(**kw))
        rigs.append(made)
        return made

    yield make
    for made in rigs:
        made.close_writer()
        made.pump.join(2.0)
        assert not made.pump.is_alive(), "pump thread leaked"


# --- rotation --------------------------------------------------------------------------------


def test_rotation_keeps_total_size_bounded(make_log: Callable[..., BackendLog]) -> None:
    log = make_log(max_bytes=4096, backups=3)
    limit = 4096 * 4
    for i in range(2000):
        log.write_text(f"line {i:05d} " + "x" * (i % 97) + "\n")
        if i % 50 == 0:
            assert total_size(log) <= limit
    assert total_size(log) <= limit
    assert len(files_of(log)) == 4
    assert all(p.stat().st_size <= 4096 for p in files_of(log))
    assert "line 01999" in text_of(log)
    assert total_size(log) > 4096 * 2  # the backups really hold older output


def test_one_huge_write_is_split_and_bounded(make_log: Callable[..., BackendLog]) -> None:
    log = make_log(max_bytes=4096, backups=2)
    log.write_text("y" * 100_000 + "\nend\n")
    assert total_size(log) <= 4096 * 3
    assert text_of(log).endswith("end\n")


def test_rotation_bound_holds_for_multibyte_output(make_log: Callable[..., BackendLog]) -> None:
    log = make_log(max_bytes=4096, backups=3)
    worst = 0
    for _ in range(60):
        log.write_text("\ufffd" * 512)
        worst = max(worst, total_size(log))
    assert worst <= 4096 * 4


def test_rotation_without_backups_stays_bounded(make_log: Callable[..., BackendLog]) -> None:
    log = make_log(max_bytes=4096, backups=0)
    for i in range(500):
        log.write_text(f"line {i:05d} " + "x" * 90 + "\n")
    assert total_size(log) <= 4096


def test_log_files_are_private(make_log: Callable[..., BackendLog]) -> None:
    old = os.umask(0)
    try:
        log = make_log(max_bytes=4096, backups=2)
        for i in range(300):
            log.write_text(f"{i} " + "z" * 60 + "\n")
    finally:
        os.umask(old)
    assert len(files_of(log)) == 3
    for path in files_of(log):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# --- tail, banner, secrets -------------------------------------------------------------------


def test_last_lines_keep_the_tail_and_skip_banners(make_log: Callable[..., BackendLog]) -> None:
    log = make_log()
    log.banner(4242, ("python", "-m", "mlx_lm.server"))
    for i in range(300):
        log.write_text(f"loading {i}\n")
    log.note("exited with code 1")
    log.write_text("\r\n\n   \npartial")
    assert log.last_lines(3) == ["loading 298", "loading 299", "partial"]
    assert len(log.last_lines(500)) == 201  # 200 remembered lines + the partial one
    assert log.last_line() == "partial"
    assert not any(line.startswith("=====") for line in log.last_lines(500))
    text = text_of(log)
    assert "===== " in text and "started pid 4242: python -m mlx_lm.server" in text
    assert "exited with code 1" in text


def test_last_lines_joins_pieces_of_a_line(make_log: Callable[..., BackendLog]) -> None:
    log = make_log()
    assert log.last_line() == ""
    log.write_text("hel")
    log.write_text("lo\nwor")
    log.write_text("ld\r\n")
    assert log.last_lines() == ["hello", "world"]


def test_long_lines_are_trimmed_in_memory(make_log: Callable[..., BackendLog]) -> None:
    log = make_log()
    log.write_text("a" * 10_000 + "\n")
    assert log.last_lines() == ["a" * 500]
    assert text_of(log) == "a" * 10_000 + "\n"


def test_secrets_are_masked_in_file_and_tail(make_log: Callable[..., BackendLog]) -> None:
    log = make_log(secrets=(SECRET,))
    log.banner(1, ("srv", "--api-key", "other-key-123", "--model", SECRET + "-suffix"))
    log.write_text(f"using key {SECRET}\nAuthorization: Bearer abc.def\n")
    text = text_of(log)
    assert SECRET not in text
    assert "other-key-123" not in text
    assert "abc.def" not in text
    assert "using key ***" in text
    assert "srv --api-key *** --model ***-suffix" in text
    assert log.last_lines() == ["using key ***", "Authorization: Bearer ***"]


# --- the pump, with a real pipe --------------------------------------------------------------


def test_pump_copies_until_eof_and_closes_its_end(rig: Callable[..., PipeRig]) -> None:
    r = rig()
    r.write(b"hello\nworld\n")
    r.finish()
    with pytest.raises(OSError):  # checked before anything else can reuse the descriptor number
        os.fstat(r.pump.fd)
    assert text_of(r.log) == "hello\nworld\n"
    assert r.log.last_lines() == ["hello", "world"]


def test_invalid_utf8_becomes_replacement_chars(rig: Callable[..., PipeRig]) -> None:
    r = rig()
    r.write(b"ok \xff\xfe bad\n")
    assert wait_for(lambda: "bad" in text_of(r.log))
    assert r.pump.is_alive()
    r.write(b"still \xc3\xa9 fine\n")
    r.finish()
    assert text_of(r.log) == "ok \ufffd\ufffd bad\nstill \xe9 fine\n"


def test_multibyte_char_split_across_writes(rig: Callable[..., PipeRig]) -> None:
    r = rig()
    euro = "€".encode()  # 3 bytes
    r.write(b"price: " + euro[:1])
    assert wait_for(lambda: "price: " in text_of(r.log))
    r.write(euro[1:2])
    time.sleep(0.05)  # give the pump a chance to (wrongly) decode a lone byte
    r.write(euro[2:] + b" 5\n")
    r.finish()
    assert text_of(r.log) == "price: € 5\n"


def test_truncated_char_at_eof_becomes_one_replacement(rig: Callable[..., PipeRig]) -> None:
    r = rig()
    r.write(b"end " + "€".encode()[:2])
    r.finish()
    assert text_of(r.log) == "end \ufffd"


def test_pump_masks_secrets(rig: Callable[..., PipeRig]) -> None:
    r = rig(secrets=(SECRET,))
    r.write(f"token is {SECRET}\n".encode())
    r.finish()
    assert text_of(r.log) == "token is ***\n"


def test_pump_masks_a_secret_split_across_reads(rig: Callable[..., PipeRig]) -> None:
    r = rig(secrets=(SECRET,))
    r.write(f"token is {SECRET[:10]}".encode())
    # The first read has been taken by the pump once it is either written or held back.
    assert wait_for(lambda: "token is" in text_of(r.log) or "token is" in r.log._held)
    r.write(f"{SECRET[10:]}\n".encode())
    r.finish()
    assert SECRET not in text_of(r.log)
    assert text_of(r.log) == "token is ***\n"


def test_pump_handles_a_burst_bigger_than_the_pipe(rig: Callable[..., PipeRig]) -> None:
    r = rig(max_bytes=1 << 22, backups=1)
    line = b"0123456789" * 10 + b"\n"
    for _ in range(3000):  # ~300 KiB: the writer blocks unless the pump keeps up
        r.write(line)
    r.finish()
    assert text_of(r.log) == line.decode() * 3000


def test_stop_returns_even_if_the_pipe_stays_open(rig: Callable[..., PipeRig]) -> None:
    r = rig()
    r.write(b"last words\n")
    started = time.monotonic()
    r.pump.stop(timeout=1.0)
    assert wait_for(lambda: not r.pump.is_alive(), timeout=1.5 - (time.monotonic() - started))
    assert time.monotonic() - started < 1.5
    assert r.w_open  # the writer never closed: a grandchild could still hold it
    assert "last words" in text_of(r.log)  # what was readable was drained first
