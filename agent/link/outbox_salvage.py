"""Salvage the pending rows of a corrupt outbox file before it is moved aside (issue 15).

Why: a unit that finds its outbox corrupt at start (power cut on a cheap SD card, a bad sector)
used to move the file aside and start empty, so every message still waiting in it -- alarms
included -- was never sent.  Rows of a damaged SQLite file are usually still on disk; this module
copies every row it can read into a fresh outbox, and counts the ones it knows it lost.

Method.  Python's ``sqlite3`` has no ``.recover`` (that is a feature of the ``sqlite3`` shell and
of the separate recovery extension), and the agent must not depend on the shell being installed,
so two passes are run and merged by row id (``INSERT OR IGNORE``: the first copy of an id wins):

1. **Through SQLite**, if the file still opens: the table is read by rowid ranges
   (``WHERE id BETWEEN a AND b``); a range that raises is bisected, down to 16 ids, so one bad
   page costs only the rows on it.  This is exact for every row whose b-tree path is intact.
2. **Page scan**, always: the file, overlaid with the committed frames of its ``-wal`` (frames
   checked by salt and checksum, only up to the last commit frame), is read page by page and every
   b-tree leaf page is parsed by the SQLite file format (https://www.sqlite.org/fileformat2.html:
   section 1.6 b-tree pages and cell layout, 1.6 overflow pages, 2.1 record format, 4 WAL format).
   A table-leaf cell whose record has the outbox's ten columns with the right types (id alias
   NULL, texts, a JSON payload, integer seq) is a row; an index-leaf cell ``(kind, id, rowid)`` of
   the ``outbox_kind_id`` index says that id was still pending.  This reaches rows the b-tree can no
   longer (a smashed interior page, a garbage file header), like ``.recover``'s
   ``lost_and_found``.

Lost rows = ids listed in an index page (or by SQLite's index) for which no row could be read.

Limits (said plainly):

* A row whose table leaf page *and* index entry are both destroyed is lost without being counted;
  the controller still sees it as a ``seq`` gap if a later row of that boot survives.
* Pages on the freelist are skipped when the header (page 1) is readable.  Without a readable
  header, a freed page may still hold rows that were acknowledged long ago: they are salvaged
  again and the controller discards them as duplicates (``(unit_id, boot_id, seq)``).
* The page size comes from the header or the WAL header; if both are garbage, 4096 (SQLite's
  default, which the outbox never changes) and the other legal sizes are tried and the size that
  yields the most rows is taken.  A reserved-bytes value in a destroyed header is taken as 0.
* WAL frames are applied up to the last valid commit; a torn transaction at the end is ignored,
  as SQLite itself would.
* The scan reads the file through ``mmap`` and streams rows into the new outbox, so memory stays
  bounded; time is linear in the file size (roughly a few seconds per 100 MB in CPython).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.link.outbox_store import OutboxRow

_HEADER_MAGIC = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)
_TABLE_LEAF, _INDEX_LEAF = 0x0D, 0x0A
_MIN_BISECT_IDS = 16
_CHUNK_IDS = 1000


@dataclass
class SalvageReport:
    """What a salvage found; ``lost`` counts pending ids whose row could not be read."""

    source: str
    method: str = ""
    page_size: int = 0
    pages: int = 0
    wal_frames: int = 0
    header_ok: bool = False
    sql_rows: int = 0
    scan_rows: int = 0
    salvaged: int = 0
    pending_ids_seen: int = 0
    lost: int = 0
    lost_ids_sample: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


RowSink = Callable[[OutboxRow], None]
IdSink = Callable[[int], None]


# --------------------------------------------------------------------------- pass 1: through SQLite
def walk_with_sqlite(path: Path, sink: RowSink, pending: IdSink, report: SalvageReport) -> None:
    """Read what SQLite can still read, by rowid ranges with bisection on errors."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as err:
        report.errors.append(f"sqlite open: {err}")
        return
    try:
        lo = _first_value(db, ("SELECT MIN(id) FROM outbox",), report) or 1
        hi = _first_value(db, ("SELECT MAX(id) FROM outbox", "SELECT seq FROM sqlite_sequence WHERE name='outbox'"),
                          report)
        if hi is None:
            return
        with contextlib.suppress(sqlite3.Error):  # the index may be readable where the table is not
            for (rid,) in db.execute("SELECT id FROM outbox INDEXED BY outbox_kind_id ORDER BY kind, id"):
                pending(int(rid))
        lo, hi = int(lo), int(hi)
        stack = [(a, min(a + _CHUNK_IDS - 1, hi)) for a in range(lo, hi + 1, _CHUNK_IDS)][::-1]  # lowest first
        while stack:
            a, b = stack.pop()
            try:
                rows = db.execute("SELECT id, topic, payload, kind, boot_id, seq, created_mono_s, created_utc, "
                                  "attempts, offline FROM outbox WHERE id BETWEEN ? AND ? ORDER BY id",
                                  (a, b)).fetchall()
            except sqlite3.Error as err:
                if b - a + 1 <= _MIN_BISECT_IDS:
                    report.errors.append(f"ids {a}..{b}: {err}")
                    continue
                mid = (a + b) // 2
                stack += [(mid + 1, b), (a, mid)]
                continue
            for r in rows:
                row = _checked_row(int(r[0]), list(r), json_payload=False)
                if row is not None:
                    sink(row)
                    report.sql_rows += 1
    finally:
        db.close()


def _first_value(db: sqlite3.Connection, queries: tuple[str, ...], report: SalvageReport) -> int | None:
    """The first query's integer result that SQLite can still compute (each walks other pages)."""
    for q in queries:
        try:
            row = db.execute(q).fetchone()
        except sqlite3.Error as err:
            report.errors.append(f"{q}: {err}")
            continue
        if row is not None and row[0] is not None:
            return int(row[0])
    return None


# --------------------------------------------------------------------------- pass 2: page scan
class _Pages:
    """Page images of the main file overlaid with the committed frames of its WAL."""

    def __init__(self, main: bytes | mmap.mmap, wal: bytes | mmap.mmap | None, report: SalvageReport) -> None:
        self.main = main
        self.report = report
        self.header_ok = len(main) >= 100 and main[:16] == _HEADER_MAGIC
        size = 0
        if self.header_ok:
            raw = struct.unpack(">H", main[16:18])[0]
            size = 65536 if raw == 1 else raw
            if size not in _PAGE_SIZES:
                self.header_ok, size = False, 0
        self.wal_frames: dict[int, tuple[bytes | mmap.mmap, int]] = {}
        wal_size = self._read_wal(wal) if wal is not None else 0
        if size and wal_size and wal_size != size:
            report.errors.append(f"WAL page size {wal_size} != header page size {size}; WAL ignored")
            self.wal_frames = {}
        self.page_size = size or wal_size
        self.reserved = main[20] if self.header_ok else 0

    def _read_wal(self, wal: bytes | mmap.mmap) -> int:
        if len(wal) < 32:
            return 0
        magic, _version, size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", wal[:32])
        if magic not in _WAL_MAGIC or size not in _PAGE_SIZES:
            return 0
        big = magic & 1
        s0, s1 = _wal_checksum(wal[:24], 0, 0, big)
        if (s0, s1) != (c1, c2):
            self.report.errors.append("WAL header checksum mismatch; WAL ignored")
            return 0
        committed: dict[int, tuple[bytes | mmap.mmap, int]] = {}
        pending: dict[int, tuple[bytes | mmap.mmap, int]] = {}
        off, frames = 32, 0
        while off + 24 + size <= len(wal):
            pgno, commit, fs1, fs2, fc1, fc2 = struct.unpack(">6I", wal[off:off + 24])
            if (fs1, fs2) != (salt1, salt2) or pgno == 0:
                break
            s0, s1 = _wal_checksum(wal[off:off + 8], s0, s1, big)
            s0, s1 = _wal_checksum(wal[off + 24:off + 24 + size], s0, s1, big)
            if (s0, s1) != (fc1, fc2):
                break
            pending[pgno] = (wal, off + 24)
            if commit:
                committed.update(pending)
                pending.clear()
                frames += 1
            off += 24 + size
        self.wal_frames = committed
        self.report.wal_frames = len(committed)
        return size if committed else 0

    def count(self, page_size: int) -> int:
        n = len(self.main) // page_size
        return max([n, *self.wal_frames]) if self.wal_frames else n

    def page(self, pgno: int, page_size: int) -> bytes | None:
        src = self.wal_frames.get(pgno) if page_size == self.page_size else None
        if src is not None:
            buf, off = src
            return bytes(buf[off:off + page_size])
        off = (pgno - 1) * page_size
        if pgno < 1 or off + page_size > len(self.main):
            return None
        return bytes(self.main[off:off + page_size])

    def freelist(self, page_size: int) -> set[int]:
        """Trunk and leaf pages of the freelist (header offsets 32 and 36), if the header is sound."""
        first = self.page(1, page_size)
        if not self.header_ok or first is None or first[:16] != _HEADER_MAGIC:
            return set()
        trunk, total = struct.unpack(">II", first[32:40])
        free: set[int] = set()
        limit = self.count(page_size)
        while trunk and trunk not in free and len(free) <= total and trunk <= limit:
            free.add(trunk)
            data = self.page(trunk, page_size)
            if data is None:
                break
            nxt, n = struct.unpack(">II", data[:8])
            n = min(n, (page_size - 8) // 4)
            free.update(struct.unpack(f">{n}I", data[8:8 + 4 * n]))
            trunk = nxt
        return free


def _wal_checksum(data: bytes | mmap.mmap, s0: int, s1: int, big: int) -> tuple[int, int]:
    """SQLite's WAL checksum (fileformat2 section 4.2): Fibonacci-weighted sums of 32-bit words."""
    n = len(data) // 4
    words = struct.unpack(f"{'>' if big else '<'}{n}I", data[:4 * n])
    for i in range(0, n - 1, 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """SQLite varint (1-9 bytes, big-endian, 7 bits per byte, 8 in the ninth); (value, new pos)."""
    v = 0
    for i in range(8):
        if pos + i >= len(buf):
            raise ValueError("varint past end")
        b = buf[pos + i]
        v = (v << 7) | (b & 0x7F)
        if b < 0x80:
            return v, pos + i + 1
    if pos + 8 >= len(buf):
        raise ValueError("varint past end")
    return (v << 8) | buf[pos + 8], pos + 9


def _record(payload: bytes) -> list[object]:
    """Decode a record (fileformat2 section 2.1) into Python values; raises ValueError if malformed."""
    hsize, pos = _varint(payload, 0)
    if hsize < 1 or hsize > len(payload):
        raise ValueError("bad record header size")
    types: list[int] = []
    while pos < hsize:
        t, pos = _varint(payload, pos)
        types.append(t)
    if pos != hsize:
        raise ValueError("record header overrun")
    out: list[object] = []
    body = hsize
    for t in types:
        if t == 0:
            out.append(None)
            continue
        if 1 <= t <= 6:
            n = (1, 2, 3, 4, 6, 8)[t - 1]
            out.append(int.from_bytes(payload[body:body + n], "big", signed=True))
        elif t == 7:
            out.append(struct.unpack(">d", payload[body:body + 8])[0])
            n = 8
        elif t in (8, 9):
            out.append(t - 8)
            n = 0
        elif t >= 12:
            n = (t - 12) // 2 if t % 2 == 0 else (t - 13) // 2
            chunk = payload[body:body + n]
            out.append(bytes(chunk) if t % 2 == 0 else chunk.decode("utf-8"))
        else:
            raise ValueError(f"reserved serial type {t}")
        if body + n > len(payload):
            raise ValueError("record body overrun")
        body += n
    return out


def _checked_row(rowid: int, vals: list[object], *, json_payload: bool = True) -> OutboxRow | None:
    """An OutboxRow if ``vals`` look like an outbox row (types, sane text and, for rows found by
    the page scan, a payload that starts like the JSON envelope every real row carries)."""
    if len(vals) != 10:
        return None
    _, topic, payload, kind, boot_id, seq, mono, utc, attempts, offline = vals
    if isinstance(payload, str):
        payload = payload.encode()
    if isinstance(mono, int):
        mono = float(mono)  # REAL stored as an integer when it has no fraction (SQLite optimisation)
    ok = (isinstance(topic, str) and 0 < len(topic) <= 512 and isinstance(payload, bytes)
          and (payload[:1] == b"{" or not json_payload)
          and isinstance(kind, str) and 0 < len(kind) <= 32 and kind.isprintable()
          and isinstance(boot_id, str) and 0 < len(boot_id) <= 128 and isinstance(seq, int) and seq >= 0
          and isinstance(mono, float) and isinstance(utc, str) and len(utc) <= 64
          and isinstance(attempts, int) and isinstance(offline, int) and rowid > 0)
    if not ok:
        return None
    return OutboxRow(id=rowid, topic=str(topic), payload=bytes(payload), kind=str(kind), boot_id=str(boot_id),
                     seq=int(seq), created_mono_s=float(mono), created_utc=str(utc), attempts=int(attempts),  # type: ignore[arg-type]
                     offline=bool(offline))


def _cell_payload(pages: _Pages, page: bytes, pos: int, size: int, usable: int, max_local: int,
                  page_size: int) -> bytes:
    """The payload of a cell at ``pos`` (after its size/rowid varints), following overflow pages."""
    if size <= max_local:
        return page[pos:pos + size]
    min_local = ((usable - 12) * 32 // 255) - 23
    k = min_local + (size - min_local) % (usable - 4)
    local = k if k <= max_local else min_local
    out = bytearray(page[pos:pos + local])
    nxt = struct.unpack(">I", page[pos + local:pos + local + 4])[0]
    seen: set[int] = set()
    while len(out) < size:
        if nxt == 0 or nxt in seen:
            raise ValueError("overflow chain broken")
        seen.add(nxt)
        data = pages.page(nxt, page_size)
        if data is None:
            raise ValueError("overflow page missing")
        nxt = struct.unpack(">I", data[:4])[0]
        out += data[4:4 + min(usable - 4, size - len(out))]
    return bytes(out)


def _scan(pages: _Pages, page_size: int, reserved: int, sink: RowSink | None,
          pending: IdSink | None) -> int:
    """Parse every leaf page at ``page_size``; returns the number of rows handed to ``sink``."""
    usable = page_size - reserved
    table_max = usable - 35
    index_max = ((usable - 12) * 64 // 255) - 23
    free = pages.freelist(page_size)
    found = 0
    for pgno in range(1, pages.count(page_size) + 1):
        if pgno in free:
            continue
        page = pages.page(pgno, page_size)
        if page is None:
            continue
        hdr = 100 if pgno == 1 else 0
        kind = page[hdr]
        if kind not in (_TABLE_LEAF, _INDEX_LEAF):
            continue
        ncells = struct.unpack(">H", page[hdr + 3:hdr + 5])[0]
        first_cell = hdr + 8 + 2 * ncells
        if first_cell > usable:
            continue
        for i in range(ncells):
            ptr = struct.unpack(">H", page[hdr + 8 + 2 * i:hdr + 10 + 2 * i])[0]
            if not first_cell <= ptr < usable:
                continue
            try:
                size, pos = _varint(page, ptr)
                if kind == _TABLE_LEAF:
                    rowid, pos = _varint(page, pos)
                    vals = _record(_cell_payload(pages, page, pos, size, usable, table_max, page_size))
                    row = _checked_row(rowid, vals)
                    if row is not None:
                        found += 1
                        if sink is not None:
                            sink(row)
                else:
                    vals = _record(_cell_payload(pages, page, pos, size, usable, index_max, page_size))
                    # an index on (kind, id) of a rowid table stores (kind, id, rowid)
                    if (pending is not None and len(vals) == 3 and isinstance(vals[0], str)
                            and isinstance(vals[1], int) and vals[1] == vals[2] and vals[1] > 0):
                        pending(vals[1])
            except (ValueError, UnicodeDecodeError, struct.error, IndexError):
                continue  # a damaged cell: the rest of the page may still be fine
    return found


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap | bytes | None]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the map
    except OSError:
        yield None
        return
    try:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            yield m
    finally:
        f.close()


def scan_pages(path: Path, sink: RowSink, pending: IdSink, report: SalvageReport) -> None:
    """Pass 2: parse the leaf pages of ``path`` (and its WAL) directly."""
    with _mapped(path) as main, _mapped(Path(f"{path}-wal")) as wal:
        if main is None:
            report.errors.append("main file unreadable")
            return
        pages = _Pages(main, wal, report)
        report.header_ok = pages.header_ok
        if pages.page_size:
            size = pages.page_size
        else:  # header and WAL both unusable: take the page size that yields the most rows
            best = max(_PAGE_SIZES, key=lambda s: _scan(pages, s, 0, None, None) if len(main) >= s else -1)
            size = best
            report.errors.append(f"page size unknown; guessed {size}")
        report.page_size = size
        report.pages = pages.count(size)
        report.scan_rows = _scan(pages, size, pages.reserved, sink, pending)


def salvage(path: Path, sink: RowSink, pending: IdSink) -> SalvageReport:
    """Run both passes over ``path``; rows go to ``sink`` (duplicates by id are the sink's to
    ignore), ids named by the index go to ``pending``.  Never raises for a damaged file."""
    report = SalvageReport(source=str(path), method="sqlite rowid ranges + page scan (file+WAL)")
    walk_with_sqlite(path, sink, pending, report)
    scan_pages(path, sink, pending, report)
    return report
