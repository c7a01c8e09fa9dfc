"""One router per resource, all under ``/api/v1`` (``api.app``)."""
