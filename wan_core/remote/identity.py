"""Who a provider is: its names, where it lives, what its key is called and how it words its refusals.

A leaf module, so that keys and http can name the provider without importing the adapters' base class
(provider.py imports http for ApiClient).
"""

from __future__ import annotations

import os
from typing import Collection, Mapping

# Answers to a submit that every provider documents as refused before a job exists: safe to send it again.
REFUSED_BEFORE_A_JOB = frozenset({429})


class ProviderIdentity:
    def __init__(self, name: str, label: str, default_base_url: str, error_reasons: Mapping[str, type] | None = None,
                 refused_submit_statuses: Collection[int] = REFUSED_BEFORE_A_JOB):
        self.name = name  # the --provider value and the key's entry in the keys file
        self.label = label
        self.default_base_url = default_base_url
        self.error_reasons = dict(error_reasons or {})  # provider reason -> error class, where the status is vaguer
        # Submit answers after which no job exists, so the submit is sent again; any other failure may have created
        # one, and sending it again could bill twice.
        self.refused_submit_statuses = frozenset(refused_submit_statuses)
        self.key_env = f"{name.upper()}_API_KEY"
        self.base_url_env = f"{name.upper()}_BASE_URL"

    def base_url(self) -> str:
        return (os.environ.get(self.base_url_env) or self.default_base_url).rstrip("/")
