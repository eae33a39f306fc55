"""A small WebHDFS client (requests): create, read, rename, mkdirs, list, delete.

CREATE and OPEN are two steps: the NameNode answers 307 with the DataNode's address, the data goes there.
The redirect names the DataNode as the NameNode knows it (127.0.0.1:9864 on the native stack, a
container name in docker); `datanode_url` replaces it when the client sees the DataNode elsewhere.
Errors are classified for the runtime: unreachable/busy → TransientError, refused → FatalError.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from consumers.errors import FatalError, TransientError

log = logging.getLogger(__name__)

# RemoteExceptions no retry fixes; anything else (safe mode, no DataNode, standby) is retried.
PERMANENT = {
    "AccessControlException",
    "InvalidPathException",
    "ParentNotDirectoryException",
    "IllegalArgumentException",
    "UnsupportedOperationException",
    "SecurityException",
    "AuthorizationException",
    "PathIsNotEmptyDirectoryException",
}


class WebHdfs:
    def __init__(
        self, base_url: str, user: str, datanode_url: str | None = None, timeout_s: float = 60.0
    ) -> None:
        self.base = base_url.rstrip("/") + "/webhdfs/v1"
        self.user = user
        self.datanode = urlsplit(datanode_url) if datanode_url else None
        self.timeout_s = timeout_s
        # One session per thread: the HDFS sink uploads several files at once.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    @property
    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            self._sessions.append(session)
        return session

    def _url(self, path: str) -> str:
        if not path.startswith("/") or "/../" in path + "/" or "/./" in path + "/" or "//" in path:
            raise ValueError(f"not a normalised absolute path: {path!r}")
        return self.base + quote(path, safe="/")

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout_s, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            raise TransientError(f"WebHDFS {what}: {type(exc).__name__}: {exc}") from exc

    def _call(
        self, method: str, path: str, op: str, ok: tuple[int, ...] = (200,), **params: Any
    ) -> requests.Response:
        what = f"{op} {path}"
        response = self._request(
            method, self._url(path), what, params={"op": op, "user.name": self.user, **params}
        )
        if response.status_code in ok:
            return response
        raise self._error(response, what)

    @staticmethod
    def _error(response: requests.Response, what: str) -> TransientError | FatalError | OSError:
        try:
            remote = response.json().get("RemoteException", {})
        except ValueError:
            remote = {}
        name = remote.get("exception", "")
        detail = remote.get("message", response.text[:300])
        message = f"WebHDFS {what}: HTTP {response.status_code} {name}: {detail}"
        if name == "FileNotFoundException" or (response.status_code == 404 and not name):
            return FileNotFoundError(message)
        if name == "FileAlreadyExistsException":
            return FileExistsError(message)
        if name in PERMANENT:
            return FatalError(message)
        return TransientError(message)

    def _datanode_location(self, redirect: requests.Response) -> str:
        location = redirect.headers.get("Location", "")
        if self.datanode is not None:
            parts = urlsplit(location)
            location = urlunsplit((self.datanode.scheme, self.datanode.netloc, parts.path, parts.query, ""))
        return location

    def create(self, path: str, data: bytes, *, overwrite: bool = True, create_parent: bool = True) -> None:
        """Write a whole file. Not overwriting: FileExistsError when it exists. Not creating the
        parent: FileNotFoundError when the directory is gone (what fences the HDFS sink's uploads)."""
        first = self._call(
            "PUT",
            path,
            "CREATE",
            ok=(307,),
            overwrite=str(overwrite).lower(),
            createparent=str(create_parent).lower(),
        )
        second = self._request(
            "PUT",
            self._datanode_location(first),
            f"CREATE {path} (DataNode)",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if second.status_code != 201:
            raise self._error(second, f"CREATE {path} (DataNode)")

    def read(self, path: str) -> bytes:
        """A file's whole content."""
        first = self._call("GET", path, "OPEN", ok=(307,))
        second = self._request("GET", self._datanode_location(first), f"OPEN {path} (DataNode)")
        if second.status_code != 200:
            raise self._error(second, f"OPEN {path} (DataNode)")
        return bytes(second.content)

    def rename(self, source: str, destination: str) -> bool:
        self._url(destination)  # validates
        response = self._call("PUT", source, "RENAME", destination=destination)
        return bool(response.json().get("boolean"))

    def mkdirs(self, path: str) -> None:
        self._call("PUT", path, "MKDIRS")

    def list(self, path: str) -> list[dict[str, Any]] | None:
        """The entries of a directory, or None when it does not exist."""
        try:
            response = self._call("GET", path, "LISTSTATUS")
        except FileNotFoundError:
            return None
        statuses: list[dict[str, Any]] = response.json()["FileStatuses"]["FileStatus"]
        return statuses

    def exists(self, path: str) -> bool:
        try:
            self._call("GET", path, "GETFILESTATUS")
        except FileNotFoundError:
            return False
        return True

    def delete(self, path: str, recursive: bool = False) -> bool:
        response = self._call("DELETE", path, "DELETE", recursive=str(recursive).lower())
        return bool(response.json().get("boolean"))

    def close(self) -> None:
        for session in self._sessions:
            session.close()
        self._sessions.clear()
