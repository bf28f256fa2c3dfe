"""What the first pass over a message's recipients keeps of each: a ``Census`` (blind indexes and
segment class, nothing readable) and ``PackedRecipients`` (their fields, packed), so that 100,000
recipients never have to be held as models or JSON (``registration`` builds the rows from these)."""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence

from politetenant.crypto import Keyring, normalise_email
from politetenant.tracker.messages.api_models import RecipientIn
from politetenant.tracker.messages.generalise import Combination, combination_of

BATCH_ROWS = 5_000  # rows per COPY / INSERT batch: large enough to amortise, small enough to stay bounded
INDEX_BYTES = 32  # a blind index (HMAC-SHA256)


class AttributeEncoder:
    """Canonical JSON of attribute maps, memoised: 100,000 recipients share a few departments."""

    def __init__(self) -> None:
        self._cache: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode

    def __call__(self, attributes: dict[str, str]) -> bytes | None:
        if not attributes:
            return None
        key = tuple(attributes.items())  # unsorted: cheaper; maps in another order get an entry of their own
        encoded = self._cache.get(key)
        if encoded is None:
            if len(self._cache) >= 10_000:  # all distinct: the memo would only cost memory
                self._cache.clear()
            encoded = self._cache[key] = self._encode(attributes).encode()
        return encoded


class Census:
    """The first pass over a message's recipients: per recipient, its blind index under each loaded key
    version (for the objection list, and the stored ``email_index``) and its segment class (for
    ``generalise``), packed in arrays: about 40 bytes a recipient and nothing readable.

    Past ``limit`` recipients it only counts, so an oversized message is refused without the work."""

    def __init__(self, keyring: Keyring, segments: Sequence[str], limit: int | None = None) -> None:
        self._names = sorted(set(segments))
        self._limit = limit
        self.count = 0
        self.indexes = bytearray()  # newest key version, INDEX_BYTES per recipient
        self._index = keyring.index_mac(keyring.current.version).digest  # blind_index, without its look-ups
        self._older = [
            (keyring.index_mac(v).digest, bytearray()) for v in keyring.versions if v != keyring.current.version
        ]
        self._class_ids: dict[Combination, int] = {}
        self.class_of = array("i")

    def add(self, recipient: RecipientIn) -> None:
        self.count += 1
        if self._limit is not None and self.count > self._limit:
            return
        normalised = normalise_email(recipient.email).encode("utf-8")
        self.indexes += self._index(normalised)
        for index, indexes in self._older:
            indexes += index(normalised)
        combination = combination_of(recipient.attributes, self._names)
        self.class_of.append(self._class_ids.setdefault(combination, len(self._class_ids)))

    @property
    def classes(self) -> list[Combination]:
        """Segment combinations by class id."""
        return list(self._class_ids)

    def index(self, position: int) -> bytes:
        """The recipient's blind index under the newest key version."""
        return bytes(self.indexes[position * INDEX_BYTES : (position + 1) * INDEX_BYTES])

    def all_indexes(self, position: int) -> list[bytes]:
        """Its indexes under every loaded version: the objection list may predate a rotation."""
        at = slice(position * INDEX_BYTES, (position + 1) * INDEX_BYTES)
        return [self.index(position), *(bytes(older[at]) for _, older in self._older)]


_NO_NAME = 0xFFFF  # a name's length (UTF-8 of at most 200 characters) that says there is none
_NO_ATTRIBUTES, _OWN_ATTRIBUTES = -1, -2  # an attribute reference: none, or (_OWN_ATTRIBUTES - length) in place
_SHARED_MOST = 4_096  # distinct attribute maps kept once and referred to; past that, packed in place


class PackedRecipients:
    """The recipients as the first pass validated them, packed for the second, so the body is neither
    kept nor validated twice: about 50 bytes a recipient against 130 of JSON.

    Per recipient: the UTF-8 of its e-mail, back to back with the others' in one ``bytes`` per ``chunk``
    recipients (fixed pieces: one buffer grown to megabytes leaves holes the allocator keeps), and
    likewise its name; their lengths; and its attributes' canonical JSON as a reference to the few
    distinct maps a message has (or, past ``_SHARED_MOST`` of them, in place after the name). E-mails
    have pieces of their own: the answer repeats them, and reads them without walking the rest. Past
    ``limit`` recipients it keeps nothing (the message is refused)."""

    def __init__(self, limit: int | None = None, chunk: int = BATCH_ROWS) -> None:
        self.count = 0
        self.chunk = chunk
        self._limit = limit
        self._emails: list[bytes] = []  # per chunk
        self._rest: list[bytes] = []  # per chunk: names and attributes kept in place
        self._pending_emails: list[bytes] = []  # the chunk being filled
        self._pending: list[bytes] = []
        self._lengths = array("H")  # two per recipient: its e-mail's and its name's (or _NO_NAME)
        self._attributes = array("i")  # per recipient: an index in _shared, _NO_ATTRIBUTES, or in place
        self._shared: list[bytes] = []
        self._shared_ids: dict[bytes, int] = {}
        self._known: dict[tuple[tuple[str, str], ...], int] = {}  # a map's items -> its index in _shared
        self._encode = AttributeEncoder()

    def add(self, recipient: RecipientIn) -> None:
        if self._limit is not None and self.count >= self._limit:
            return
        self.count += 1
        lengths = self._lengths
        email = recipient.email.encode("utf-8")
        self._pending_emails.append(email)
        lengths.append(len(email))
        if recipient.name is None:
            lengths.append(_NO_NAME)
        else:
            name = recipient.name.encode("utf-8")
            self._pending.append(name)
            lengths.append(len(name))
        attributes = recipient.attributes
        if not attributes:
            reference = _NO_ATTRIBUTES
        else:
            items = tuple(attributes.items())
            known = self._known.get(items)
            reference = self._reference(items, attributes) if known is None else known
        self._attributes.append(reference)
        if self.count % self.chunk == 0:
            self._emails.append(b"".join(self._pending_emails))
            self._rest.append(b"".join(self._pending))
            self._pending_emails.clear()
            self._pending.clear()

    def _reference(self, items: tuple[tuple[str, str], ...], attributes: dict[str, str]) -> int:
        encoded = self._encode(attributes) or b"{}"  # never empty here: add keeps no reference for {}
        shared = self._shared_ids.get(encoded)
        if shared is None and len(self._shared) < _SHARED_MOST:
            shared = self._shared_ids[encoded] = len(self._shared)
            self._shared.append(encoded)
        if shared is None:
            self._pending.append(encoded)
            return _OWN_ATTRIBUTES - len(encoded)
        if len(self._known) < 4 * _SHARED_MOST:  # the same map in another key order has an entry of its own
            self._known[items] = shared
        return shared

    @property
    def chunks(self) -> int:
        """How many chunks (``batch`` indexes) the recipients packed so far fill, the last maybe in part."""
        return -(-self.count // self.chunk)

    def emails(self, index: int) -> list[bytes]:
        """The e-mails (UTF-8) of the ``index``-th chunk: what the answer repeats."""
        data = self._emails[index] if index < len(self._emails) else b"".join(self._pending_emails)
        start, stop = index * self.chunk, min((index + 1) * self.chunk, self.count)
        emails: list[bytes] = []
        at = 0
        for size in self._lengths[2 * start : 2 * stop : 2]:
            emails.append(data[at : at + size])
            at += size
        return emails

    def batch(self, index: int) -> tuple[list[bytes], list[bytes | None], list[bytes | None]]:
        """The e-mails, names and attributes (UTF-8) of the ``index``-th ``chunk`` of recipients."""
        data = self._rest[index] if index < len(self._rest) else b"".join(self._pending)
        lengths, references, shared = self._lengths, self._attributes, self._shared
        names: list[bytes | None] = []
        attributes: list[bytes | None] = []
        at = 0
        for position in range(index * self.chunk, min((index + 1) * self.chunk, self.count)):
            size = lengths[2 * position + 1]
            if size == _NO_NAME:
                names.append(None)
            else:
                names.append(data[at : at + size])
                at += size
            reference = references[position]
            if reference >= 0:
                attributes.append(shared[reference])
            elif reference == _NO_ATTRIBUTES:
                attributes.append(None)
            else:
                size = _OWN_ATTRIBUTES - reference
                attributes.append(data[at : at + size])
                at += size
        return self.emails(index), names, attributes
