"""Page records in slots of a plain file, beside the SQLite store's database.

An event of a page that moves no mail reads its record with one ``pread`` and writes it
with one ``pwrite`` instead of a SQLite transaction: a write transaction shared by
processes costs an event more than all of piggyback's own code (see
``benchmarks/README.md``). The database stays the store's whole truth for everything
else, and for every page whose record does not live in a slot: one that found both its
slots taken by other live pages, that outgrew a slot, or that moved mail.

A page is placed at a slot hashed from its id. Its record lives in that slot or, when
another live page holds it, in the slot's neighbour: the two share a 4 KiB block, which
one read fetches whole. (Of 10,000 live pages, 7% found their one slot taken; 1% find
both taken.) A slot holds one page: a header (the page's 16-byte digest, its fence
number, when it was last touched, the record's length, a CRC-32 of all of it, and a mail
flag) and the record's JSON. The flag says that mail may wait for the page, so that its
events and polls read the database too: a send to the page or a membership sets it,
before the send commits, and nothing clears it (a page whose mail moves moves into its
row). A slot is free while it holds nothing readable or a record that expired. Whoever
writes a slot holds its lock (:meth:`~piggyback.stores.file_lease.LeaseFile.slot`);
readers do not, and read again under the lock what they found damaged, since a read may
overlap a write. A slot still damaged then (a write torn by a power loss) is free: the
page it held is forgotten, as an expired one is.

After the slots, the file keeps a map of one byte a slot: 0 while no page placed at
that slot has anything in the database (a row, messages, memberships), marked (not 0)
once one may.
So a page whose record is not in its slot, which is every page before its first event,
is known to have nothing in the database without reading it: a poll of such a page
reads the file only. A byte is set before the database gains anything of such a page,
in the same write transaction (so under the database's write lock). The map is trusted
only once its marker is written (:meth:`RecordFile.start_map`), which a file of a
release before the map lacks.

The bytes of pages whose rows and mail expired are cleared now and then, without
holding the write lock while the database is read. Under the lock, a new generation of
marks begins: the generation is a count, and a byte is marked with the count modulo
255, plus 1. Then the pages the database holds are read, which sees every row
committed before. Then, under the lock again, unless another generation began
meanwhile, the map keeps the bytes of those pages and those marked in the new
generation, and clears the rest (:meth:`RecordFile.clear_map`). A row committed after
the generation began was marked in it, so none is missed.

The file is sparse: :data:`SLOTS` slots of :data:`SLOT_SIZE` bytes take disk space
only where pages were written. Nothing is synced: like the database's commits
(``synchronous = NORMAL``), a write survives the process that made it, not a power loss.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from .file_lease import open_private
from .file_lease import page_digest

#: Slots in the file: pages beyond a few thousand at once start to share some, and
#: every page but two of those placed at the two slots of a block keeps its record in
#: the database.
SLOTS = 65536
#: Bytes per slot; a record longer than :data:`CAPACITY` lives in the database.
SLOT_SIZE = 2048

# magic, the page's digest, fence, touched, the record's length, CRC-32 of the rest but
# the flag, which is set alone.
_HEADER = struct.Struct("<4s16sqdII?")
_MAGIC = b"PBr1"
# What the CRC covers, with the record after it: the digest to the length.
_CHECKED_FIELDS = struct.Struct("<16sqdI")
_DIGEST_AT, _DIGEST_END = 4, 20
_CHECKED_END = _DIGEST_AT + _CHECKED_FIELDS.size
_FLAG = _HEADER.size - 1
# Fences count events: far below this, which leaves room to count on.
_FENCE_LIMIT = 1 << 62
#: The longest record a slot holds, in bytes of UTF-8.
CAPACITY = SLOT_SIZE - _HEADER.size
# The map, after the slots: its marker, its generation, then a byte a slot.
_MAP_MARKER = b"PBmap3\0\0"
_MAP_AT = SLOTS * SLOT_SIZE
# The generation of marks, a count that never wraps, then the map's bytes.
_GENERATION = struct.Struct("<Q")
_GENERATION_AT = _MAP_AT + len(_MAP_MARKER)
_MAP_BYTES_AT = _GENERATION_AT + _GENERATION.size


@dataclass(frozen=True, slots=True)
class Place:
    """Where a page's record would live: its digest, and its slot's number."""

    digest: bytes
    index: int


@dataclass(slots=True)  # not frozen: an event makes two, and frozen ones cost more
class Slot:
    """What a slot holds; never changed once made."""

    digest: bytes
    fence: int
    touched: float
    text: bytes
    #: Mail may wait for the page.
    mail: bool = False
    #: The slot's number, once read from the file.
    index: int = -1


def _mark(generation: int) -> int:
    """The byte that marks a slot in ``generation``: never 0. Generations 255 apart
    share it, so an old mark may be kept as a new one, which only marks too much."""
    return generation % 255 + 1


@functools.cache
def _only(mark: int) -> bytes:
    """A table for ``bytes.translate`` that keeps ``mark`` and makes all else 0."""
    return bytes(mark if value == mark else 0 for value in range(256))


@functools.lru_cache(maxsize=4096)  # an event places its page twice
def place(page_id: str) -> Place:
    digest = page_digest(page_id)
    return Place(digest, int.from_bytes(digest[8:], "little") % SLOTS)


def pair(index: int) -> tuple[int, int]:
    """The slots where a page placed at slot ``index`` may live: that one first, then
    its neighbour in the same 4 KiB block."""
    return index, index ^ 1


def encode(slot: Slot) -> bytes:
    return _encoded(slot.digest, slot.fence, slot.touched, slot.text, slot.mail)


def _encoded(digest: bytes, fence: int, touched: float, text: bytes, mail: bool) -> bytes:
    crc = zlib.crc32(text, zlib.crc32(_CHECKED_FIELDS.pack(digest, fence, touched, len(text))))
    return _HEADER.pack(_MAGIC, digest, fence, touched, len(text), crc, mail) + text


#: What :func:`decode` finds in a slot that was written but does not check out: read
#: during a write, or torn by a power loss. It holds no page.
DAMAGED = Slot(b"", 0, 0.0, b"")


def decode(data: bytes, index: int, at: int = 0) -> Slot | None:
    """The slot in ``data`` from ``at``, slot ``index``'s bytes: ``None`` if nothing
    was ever written there, or it was cleared; :data:`DAMAGED` if it does not check out."""
    if len(data) < at + _HEADER.size or data[at : at + 4] != _MAGIC:
        return None
    _, digest, fence, touched, length, crc, mail = _HEADER.unpack_from(data, at)
    text = data[at + _HEADER.size : at + _HEADER.size + length]
    checked = data[at + _DIGEST_AT : at + _CHECKED_END]
    if len(text) != length or zlib.crc32(text, zlib.crc32(checked)) != crc:
        return DAMAGED
    if not 0 < fence < _FENCE_LIMIT or not math.isfinite(touched):  # written by no store
        return DAMAGED
    return Slot(digest, fence, touched, text, mail, index)


class RecordFile:
    """This process's descriptor of a store's record file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self._fd = -1
        self._fd = open_private(path, "record file")
        self._mapped = False  # once seen, the map stays

    @property
    def usable(self) -> bool:
        """Open, and opened by this process."""
        return self._fd >= 0 and self.pid == os.getpid()

    def read(self, index: int) -> Slot | None:
        """What slot ``index`` holds; see :func:`decode`."""
        return decode(os.pread(self._fd, SLOT_SIZE, index * SLOT_SIZE), index)

    def find(self, where: Place) -> tuple[int, Slot | None] | None:
        """The slot of ``where``'s pair that names its page, and what it holds (see
        :func:`decode`), found in one read of both; ``None`` if neither names it. Only
        that slot is decoded: a page lives in one slot at a time, and a read that
        overlaps a write moving it into a slot or out of one may find either side of
        that write."""
        index, digest = where.index, where.digest
        data = os.pread(self._fd, 2 * SLOT_SIZE, (index & ~1) * SLOT_SIZE)
        at = (index & 1) * SLOT_SIZE
        if data[at + _DIGEST_AT : at + _DIGEST_END] != digest:
            index, at = index ^ 1, SLOT_SIZE - at  # the neighbour
            if data[at + _DIGEST_AT : at + _DIGEST_END] != digest:
                return None
        return index, decode(data, index, at)

    def owner(self, index: int) -> tuple[bytes, int, bool] | None:
        """The digest, fence and mail flag of the page slot ``index`` holds, unchecked:
        enough for a writer, who holds its lock and overwrites it whole."""
        data = os.pread(self._fd, _HEADER.size, index * SLOT_SIZE)
        if len(data) < _HEADER.size or data[:4] != _MAGIC:
            return None
        _, digest, fence, _, _, _, mail = _HEADER.unpack(data)
        return digest, fence, mail

    def rewrite(self, slot: Slot, fence: int, touched: float, text: bytes) -> bool:
        """Write the next record of ``slot``'s page, at fence ``fence + 1``, if the slot
        still holds the page at ``fence``; its mail flag stays. The caller holds the
        slot's lock. Whether it wrote."""
        found = self.owner(slot.index)
        if found is None or found[0] != slot.digest or found[1] != fence:
            return False
        data = _encoded(slot.digest, fence + 1, touched, text, found[2])
        os.pwrite(self._fd, data, slot.index * SLOT_SIZE)
        return True

    def has_map(self) -> bool:
        """Whether the file keeps its map (see the module's documentation)."""
        if not self._mapped:
            self._mapped = os.pread(self._fd, len(_MAP_MARKER), _MAP_AT) == _MAP_MARKER
        return self._mapped

    def start_map(self, in_database: bool) -> None:
        """Write the map, every byte marked if ``in_database`` (anything may be there),
        then its marker: it is trusted from then on. The caller holds the database's
        write lock."""
        os.pwrite(self._fd, bytes([in_database and _mark(0)]) * SLOTS, _MAP_BYTES_AT)
        os.pwrite(self._fd, _MAP_MARKER + _GENERATION.pack(0), _MAP_AT)
        self._mapped = True

    def new_generation(self) -> int:
        """Start a new generation of marks, for :meth:`clear_map`; the caller holds the
        database's write lock."""
        generation = (self._generation() + 1) % (1 << 64)  # garbage may be the last
        os.pwrite(self._fd, _GENERATION.pack(generation), _GENERATION_AT)
        return generation

    def clear_map(self, generation: int, marked: Iterable[int]) -> None:
        """Clear every byte of the map but those of ``marked`` and those marked since
        ``generation`` began, unless another generation has begun since: then it does
        nothing. The caller holds the database's write lock."""
        if self._generation() != generation:
            return
        mark = _mark(generation)
        bytes_ = bytearray(os.pread(self._fd, SLOTS, _MAP_BYTES_AT).translate(_only(mark)))
        for index in marked:
            bytes_[index] = mark
        os.pwrite(self._fd, bytes_, _MAP_BYTES_AT)

    def marked(self) -> int:
        """How many slots the map marks (all of them if there is no map)."""
        if not self.has_map():
            return SLOTS
        return SLOTS - os.pread(self._fd, SLOTS, _MAP_BYTES_AT).count(0)

    def in_database(self, index: int) -> bool:
        """Whether a page placed at slot ``index`` may have anything in the database."""
        return not self.has_map() or os.pread(self._fd, 1, _MAP_BYTES_AT + index) != b"\0"

    def mark_in_database(self, index: int) -> None:
        """Say that a page placed at slot ``index`` may have something in the database,
        before it does; the caller holds the database's write lock."""
        os.pwrite(self._fd, bytes([_mark(self._generation())]), _MAP_BYTES_AT + index)

    def _generation(self) -> int:
        """The generation of marks (0 where the map has none yet)."""
        data = os.pread(self._fd, _GENERATION.size, _GENERATION_AT)
        return _GENERATION.unpack(data)[0] if len(data) == _GENERATION.size else 0

    def flag_mail(self, index: int, digest: bytes) -> None:
        """Set the mail flag of the page of ``digest``, if slot ``index`` holds it; the
        caller holds the slot's lock."""
        found = self.owner(index)
        if found is not None and found[0] == digest and not found[2]:
            os.pwrite(self._fd, b"\x01", index * SLOT_SIZE + _FLAG)

    def read_locked(self, index: int) -> Slot | None:
        """What slot ``index`` holds, read under its lock: damaged is free."""
        found = self.read(index)
        return None if found is DAMAGED else found

    def write(self, index: int, slot: Slot) -> None:
        os.pwrite(self._fd, encode(slot), index * SLOT_SIZE)

    def clear(self, index: int) -> None:
        os.pwrite(self._fd, bytes(_HEADER.size), index * SLOT_SIZE)

    def __del__(self) -> None:
        # Closed only once nothing refers to it: a thread still reading or writing
        # through it keeps it, so its descriptor's number cannot meanwhile go to
        # another file. Nothing locks this file: closing it drops no lock.
        if self._fd >= 0:
            os.close(self._fd)
