"""Downloads of published files (checkpoints, reference statistics, feature
extractor weights) into a local cache, on first use.

``fetch(url)`` returns the path of a complete local copy:

* the cache is ``$BENCH_CACHE/downloads/`` (default ``~/.cache/bench/downloads/``),
  one file per URL, named after the URL's last path component;
* a cached file is returned without touching the network;
* otherwise the file is downloaded (``urllib``, 10 s connect/read timeout,
  a tqdm progress bar on stderr) to a temporary name in the same folder and
  renamed only once complete: its size must match the server's
  ``Content-Length`` and ``expected_size`` when given. On any failure the
  temporary file is removed, so the cache never holds a partial file;
* without network access, :class:`OfflineError` is raised at once, with a
  one-line message naming the URL and how to do without it (the
  ``--checkpoint PATH`` / ``--ref-stats PATH`` flags, or copying the file into
  the cache by hand).

``$BENCH_URL_BASE`` points downloads at a mirror: ``https://HOST/PATH`` is
fetched from ``$BENCH_URL_BASE/HOST/PATH`` (the layout ``wget -x`` writes;
serve it with ``python -m http.server``). The cache key stays the official URL.
"""
from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CONNECT_TIMEOUT = 10.0  # seconds, for the connection and for each read
CHUNK = 1 << 20
DEFAULT_HINT = "pass a local copy with --checkpoint PATH (network) / --ref-stats PATH (FID statistics)"


class FetchError(RuntimeError):
    """A download failed (HTTP error, size mismatch, interrupted transfer)."""


class OfflineError(FetchError):
    """The server could not be reached at all (no network, DNS failure, refused, timed out)."""


def cache_dir(cache=None) -> Path:
    """The download folder: ``cache`` or ``$BENCH_CACHE`` or ``~/.cache/bench``, plus ``downloads/``."""
    root = cache or os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench"
    return Path(root).expanduser() / "downloads"


def cached_path(url: str, cache=None) -> Path:
    """Where ``url`` is (or would be) cached."""
    name = Path(urllib.parse.urlsplit(url).path).name
    if not name or name in (".", ".."):
        raise ValueError(f"cannot name a cache file after URL {url!r}")
    return cache_dir(cache) / name


def mirrored(url: str) -> str:
    """``url`` as fetched: through ``$BENCH_URL_BASE`` (``BASE/HOST/PATH``) when it is set."""
    base = os.environ.get("BENCH_URL_BASE")
    if not base:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{base.rstrip('/')}/{parts.netloc}{parts.path}"


def _hint_text(hint, dest):
    return f"{hint or DEFAULT_HINT}, or put the file at {dest}"


def fetch(url: str, *, expected_size: int | None = None, cache=None, desc: str | None = None,
          hint: str | None = None, progress: bool = True) -> Path:
    """The local path of ``url``'s file, downloaded into the cache on first use.

    ``hint`` replaces the default advice (the ``--checkpoint`` / ``--ref-stats``
    flags) in error messages. Raises :class:`OfflineError` when the server cannot
    be reached and :class:`FetchError` on any other failed download; neither
    leaves a file behind."""
    dest = cached_path(url, cache)
    if dest.is_file() and (expected_size is None or dest.stat().st_size == expected_size):
        return dest
    source = mirrored(url)
    via = "" if source == url else f" (mirror of {url}, BENCH_URL_BASE)"
    try:
        response = urllib.request.urlopen(urllib.request.Request(source, headers={"User-Agent": "sampler-bench"}),
                                          timeout=CONNECT_TIMEOUT)
    except urllib.error.HTTPError as e:
        raise FetchError(f"cannot download {source}{via}: HTTP {e.code} {e.reason}; "
                         f"{_hint_text(hint, dest)}") from None
    except (urllib.error.URLError, OSError) as e:  # refused, unreachable, DNS failure, timeout
        reason = getattr(e, "reason", e)
        raise OfflineError(f"cannot download {source}{via}: no network access ({reason}); "
                           f"{_hint_text(hint, dest)}") from None

    tmp = None
    try:
        with response:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            with os.fdopen(fd, "wb") as f:
                length = response.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                got = _copy(response, f, length if length is not None else expected_size, desc or dest.name,
                            progress, f"{source}{via}", _hint_text(hint, dest))
                f.flush()
                os.fsync(f.fileno())
        for what, want in (("Content-Length", length), ("expected size", expected_size)):
            if want is not None and got != want:
                raise FetchError(f"download of {source}{via} is {got} bytes, {what} says {want} "
                                 f"(interrupted or wrong file); {_hint_text(hint, dest)}")
        os.replace(tmp, dest)
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def _copy(response, f, total, desc, progress, what, hint) -> int:
    """Stream ``response`` into ``f`` with a progress bar; the number of bytes copied."""
    from tqdm import tqdm
    got = 0
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False,
              disable=not progress) as bar:
        while True:
            try:
                chunk = response.read(CHUNK)
            except Exception as e:  # reset, timeout, http.client.IncompleteRead ...
                raise FetchError(f"download of {what} interrupted after {got} bytes "
                                 f"({type(e).__name__}: {e}); {hint}") from None
            if not chunk:
                return got
            f.write(chunk)
            got += len(chunk)
            bar.update(len(chunk))
