"""Everything one tracker worker holds while it serves: built once at start-up, read by handlers."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from aiohttp import web

from politetenant.crypto import Keyring, Sealer, TokenCodec
from politetenant.settings import TrackerSettings
from politetenant.tracker.http.auth import Authenticator
from politetenant.tracker.ingest.buffer import Ingest
from politetenant.tracker.judging.judge import Judge
from politetenant.tracker.metrics import Metrics
from politetenant.tracker.storage.base import Store
from politetenant.tracker.storage.click_cache import ClickCache
from politetenant.tracker.storage.click_lookups import ClickLookups
from politetenant.tracker.storage.erased import ErasedRecords


@dataclass
class TrackerState:
    settings: TrackerSettings
    keyring: Keyring
    store: Store
    ingest: Ingest
    judge: Judge
    metrics: Metrics
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...]
    sealer: Sealer = field(init=False)
    tokens: TokenCodec = field(init=False)
    auth: Authenticator = field(init=False)
    click_lookups: ClickLookups = field(init=False)
    erased: ErasedRecords = field(init=False)  # the ingest buffer's: one set, read per hit and per batch
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    read_streams: int = 0
    # record -> message and (message, link) -> where it goes: bounded, each fact for a while (click_cache.py).
    click_cache: ClickCache = field(default_factory=ClickCache)
    # token -> the record it names, for tokens that verified (the same token always does): bounded, oldest out.
    verified_tokens: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    # message id -> (monotonic time read, its report's headline): the medians beside a message page.
    headline_cache: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sealer = Sealer(self.keyring)
        self.tokens = TokenCodec(self.keyring)
        self.auth = Authenticator(self.store)
        self.click_lookups = ClickLookups(self.store)
        self.erased = self.ingest.erased


STATE: web.AppKey[TrackerState] = web.AppKey("polite_state", TrackerState)
