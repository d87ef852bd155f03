"""The errors a hosted job can end in; each message says what to do about it and never contains the API key."""

from __future__ import annotations

from ..errors import WanInputError


class RemoteError(Exception):
    """A hosted job could not be run; the message says what to do about it and never contains the API key."""


class RemoteInputError(RemoteError, WanInputError):
    """A parameter, media input or key that the chosen provider cannot take; nothing was sent."""


class AuthError(RemoteError):
    """The provider rejected the API key (HTTP 401 or 403)."""


class OutOfCreditError(RemoteError):
    """The account has no credit left (HTTP 402 or a balance reason)."""


class RateLimitError(RemoteError):
    """Still rate limited (HTTP 429) after every retry."""


class ProviderError(RemoteError):
    """The provider could not be reached, refused the request, or answered something unexpected."""


class TaskFailedError(RemoteError):
    """The job ran and failed on the provider's side."""


class NsfwError(RemoteError):
    """The provider's safety checker flagged the output."""


class DownloadError(RemoteError):
    """The finished video could not be downloaded, e.g. because its URL expired."""


class NotAVideoError(DownloadError):
    """The download is not a readable video."""


class RemoteTimeoutError(RemoteError):
    """The time limit ran out while the job was still running; the message has its job id."""


class RemoteCancelled(RemoteError):
    """should_stop() asked to stop waiting."""
