"""The core's use cases, bundled for the bus adapter (one object to pass around)."""

from __future__ import annotations

from dataclasses import dataclass

from .fast_delete import FastDelete
from .filesystems import Registry
from .jobmanager import JobManager
from .quotas import Quotas
from .schedules import Schedules
from .subvolumes import Subvolumes


@dataclass(frozen=True)
class Services:
    registry: Registry
    subvolumes: Subvolumes
    jobs: JobManager
    quotas: Quotas
    fast_delete: FastDelete
    schedules: Schedules
