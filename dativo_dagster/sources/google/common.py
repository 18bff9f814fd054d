"""What the Google sources share: connection settings, the credential, buckets, the client of a read."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from dativo_dagster.api.limits import RateLimitSettings, credential_fingerprint
from dativo_dagster.api.source import ApiConnection, ApiSource
from dativo_dagster.api.transport import ApiTransport
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.google.auth import GoogleCredentials
from dativo_dagster.sources.google.client import GoogleApi, google_sender


class GoogleConnection(ApiConnection):
    """Google connection settings; ``base_url`` replaces both www.googleapis.com and sheets.googleapis.com."""


class GoogleSource(ApiSource):
    """Base of the Drive and Sheets sources: one credential, Drive's and Sheets' buckets."""

    vendor: ClassVar[str] = "Google"
    default_base_url: ClassVar[str] = "https://www.googleapis.com"
    # Sheets allows 60 read requests per minute per user by default: a bucket of 5 refilled at
    # 0.9/s lets through at most 5 + 54 = 59 in any minute. Drive's per-user query quota is far
    # larger (12,000 per minute); 20/s keeps a folder walk polite without slowing downloads.
    default_rate_limits: ClassVar[Mapping[str, RateLimitSettings]] = {
        "default": RateLimitSettings(rps=20, burst=20),
        "sheets": RateLimitSettings(rps=0.9, burst=5),
    }
    connection_model = GoogleConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._credential_lock = threading.Lock()
        self._google_credentials: GoogleCredentials | None = None

    def google_credentials(self) -> GoogleCredentials:
        """The credential (CFG001 when it is incomplete or unusable); its token is shared by the reads."""
        with self._credential_lock:
            if self._google_credentials is None:
                self._google_credentials = GoogleCredentials(
                    self.credentials, project_dir=self.project_dir, data_roots=self.data_roots
                )
            return self._google_credentials

    @property
    def fingerprint(self) -> str:
        """The buckets' and breaker's name: Google's quotas are per user (the service account or the
        OAuth user), so one account given as a key file or as JSON text shares one set of buckets."""
        credentials = self.google_credentials()
        return credential_fingerprint(self.base_url, credentials.identity.principal)

    def transport(self, stats: SourceStats, *, name: str | None = None) -> ApiTransport:
        """The toolkit's transport with Google's 401/403 answers read (quota, sharing, expiry)."""
        transport = super().transport(stats, name=name)
        transport.sender = google_sender(transport.sender)
        return transport

    def api(self, stats: SourceStats, obj: ObjectPlan | None = None) -> GoogleApi:
        """Authorized requests for one object read (or a connection check)."""
        label = obj.label if obj is not None else f"{self.type} source"
        return GoogleApi(self.transport(stats), self.google_credentials(), base_url=self.settings.base_url, label=label)
