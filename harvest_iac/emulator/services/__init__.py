"""The emulator's services, one module per family of RPCs. Order matters only when two
services define the same method name (the first wins)."""

from __future__ import annotations

from harvest_iac.emulator.services.apps import AppService
from harvest_iac.emulator.services.billing import BillingService
from harvest_iac.emulator.services.classes import ClassService
from harvest_iac.emulator.services.containers import ContainerService
from harvest_iac.emulator.services.dicts import DictService
from harvest_iac.emulator.services.environments import EnvironmentService
from harvest_iac.emulator.services.functions import FunctionService
from harvest_iac.emulator.services.images import ImageService
from harvest_iac.emulator.services.invocations import InvocationService
from harvest_iac.emulator.services.logs import LogService
from harvest_iac.emulator.services.mounts import MountService
from harvest_iac.emulator.services.queues import QueueService
from harvest_iac.emulator.services.sandboxes import SandboxService
from harvest_iac.emulator.services.secrets import SecretService
from harvest_iac.emulator.services.volumes import VolumeService
from harvest_iac.emulator.services.web import WebService

SERVICE_CLASSES: list[type] = [
    EnvironmentService,
    AppService,
    FunctionService,
    InvocationService,
    ClassService,
    LogService,
    ContainerService,
    WebService,
    ImageService,
    MountService,
    SandboxService,
    SecretService,
    VolumeService,
    DictService,
    QueueService,
    BillingService,
]
