"""Where block tasks run: in-process threads (default), processes, a LocalCluster or a remote Dask cluster.

All back-ends share one interface: :meth:`Runner.run` takes a task function and a list of argument
tuples and yields ``(item, result)`` as tasks finish, keeping at most ``window`` tasks in flight so
memory stays bounded whatever the number of blocks (no volume-sized graph is ever built: the graph
of a run is ``window`` tasks at a time). The network travels as bytes once per worker: threads share
the driver's object, process pools receive it in their initializer, Dask workers get it scattered
(broadcast) once and keep one deserialized copy per process (:func:`~.network.cached_network`).
Each task reads its own tile and halo from the input, so no image data moves between workers.

A ``tcp://`` address is probed before ``distributed.Client`` connects (:func:`probe_scheduler`):
the client waits for the scheduler's handshake without a deadline and reads any 8 bytes as a frame
length, so a peer that accepts and stays silent hung a run for minutes and an HTTP server made it
try to allocate exabytes. The probe reads the handshake itself, with a deadline.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from micro_sym.errors import MicroSymError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Runner:
    """Base: a bounded window of futures over some executor."""

    name = "base"

    def __init__(self, workers: int, window: int | None = None):
        self.workers = max(1, int(workers))
        self.window = max(1, int(window or 2 * self.workers))

    def bind(self, net, device: str) -> None:
        """Make the network available to workers (once)."""
        self.net, self.device = net, device

    def net_ref(self, net=None):
        """What tasks receive to find ``net`` (default: the bound network): object, bytes future or nothing.

        ``--method auto`` may run another network than the bound one on some inputs (a hexagonal
        lattice's); threads share it as an object."""
        return self.net if net is None else net

    def submit(self, fn, *args):
        raise NotImplementedError

    def run(self, fn, items, args_of):
        """Yield ``(item, result)`` for every item, at most ``window`` in flight; errors propagate."""
        items = list(items)
        pending = {}
        it = iter(items)
        try:
            for item in it:
                pending[self.submit(fn, *args_of(item))] = item
                if len(pending) >= self.window:
                    done = self._wait(pending)
                    for fut in done:
                        yield pending.pop(fut), self._result(fut)
            while pending:
                done = self._wait(pending)
                for fut in done:
                    yield pending.pop(fut), self._result(fut)
        finally:
            for fut in pending:
                fut.cancel()

    def _wait(self, pending):
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        return sorted(done, key=lambda f: id(f))

    def _result(self, fut):
        return fut.result()

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers > 1 else ''})"


def release_large_blocks() -> None:
    """Make glibc serve every allocation of 1 MiB or more with its own ``mmap``, returned to the system
    when freed. By default glibc raises that threshold as large blocks are freed and then keeps
    tile-sized arrays in its per-thread heaps, so a long run's resident memory grew with the number of
    tiles, not with the block (bench/bench_engine_2d.py). Nothing happens where libc is not glibc."""
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3  # from glibc's malloc.h
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(m_mmap_threshold, 1 << 20)
    except (OSError, AttributeError):
        pass


class ThreadRunner(Runner):
    """In-process threads sharing one network; torch threads = cores ÷ worker threads."""

    name = "threads"

    def __init__(self, workers: int | None = None, window: int | None = None):
        cores = available_cores()
        # Two threads on two cores overlap zarr I/O and grain labelling with the forward pass.
        super().__init__(workers or min(2, cores), window)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="micro-sym")
        self.torch_threads = max(1, cores // self.workers)
        self._caller_threads = None  # the caller's torch threads, given back on close
        release_large_blocks()

    def bind(self, net, device):
        import torch

        from micro_sym.inference.network import set_exclusive_forward_threads

        super().bind(net, device)
        if self._caller_threads is None:
            self._caller_threads = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        set_exclusive_forward_threads(available_cores())

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._caller_threads is not None:
            import torch

            from micro_sym.inference.network import set_exclusive_forward_threads

            torch.set_num_threads(self._caller_threads)
            set_exclusive_forward_threads(None)
            self._caller_threads = None


def _init_process(payload, sha, device, torch_threads):
    from micro_sym.inference.network import cached_network

    release_large_blocks()
    cached_network(payload, sha, device, torch_threads)


class ProcessRunner(Runner):
    """A ``spawn`` process pool; the network is deserialized once per process by its initializer.

    Another network (``--method auto`` on a hexagonal input) is written once to a file in a scratch
    folder of the runner's; tasks carry its path, and each process reads it once, on the first task that
    needs it (:func:`~.network.cached_network`)."""

    name = "processes"

    def __init__(self, workers: int | None = None, window: int | None = None):
        super().__init__(workers or min(2, available_cores()), window)
        self.pool = None
        self.scratch = None
        self.other_files = {}

    def bind(self, net, device):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        super().bind(net, device)
        threads = max(1, available_cores() // self.workers)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init_process,
                                        initargs=(net.to_bytes(), net.sha256, device, threads))

    def net_ref(self, net=None):
        if net is None or net is self.net:
            return None  # workers already hold it (cached by sha)
        if net.sha256 not in self.other_files:
            import tempfile
            from pathlib import Path

            from micro_sym.inference.network import NetworkFile

            self.scratch = self.scratch or tempfile.TemporaryDirectory(prefix="micro_sym_networks_")
            path = Path(self.scratch.name) / f"{net.sha256}.pickle"
            path.write_bytes(net.to_bytes())
            self.other_files[net.sha256] = NetworkFile(str(path))
        return self.other_files[net.sha256]

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def close(self):
        try:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if self.scratch is not None:
                self.scratch.cleanup()


#: Seconds a ``tcp://`` scheduler has to accept the connection and send its handshake.
HANDSHAKE_TIMEOUT = 10.0
# A Dask handshake is a small msgpack dict (~60 bytes); anything claiming more is not one.
_MAX_HANDSHAKE_BYTES = 1 << 16


def probe_scheduler(address: str, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Check that ``address`` is a Dask scheduler, within ``timeout`` seconds, before a Client connects.

    A Dask TCP server writes its handshake (an 8-byte length, then msgpack frames holding a dict
    with ``python``, ``compression`` and ``pickle-protocol``) as soon as it accepts a connection,
    before it reads anything; the probe reads and decodes it and closes. ``tls://`` addresses are
    only checked for a listening port (their first bytes are the TLS handshake the client starts).

    Raises
    ------
    MicroSymError
        One line: ``ADDRESS: connection refused``, ``ADDRESS: not a Dask scheduler (no handshake
        within N s)``, ``ADDRESS: not a Dask scheduler (it answered '...')``, unknown host, ...
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, loc = parse_address(address)
        host, port = parse_host_port(loc, 8786)
    except ValueError as err:
        raise MicroSymError(f"--scheduler {address}: expected tcp://HOST:PORT ({err})") from None
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise MicroSymError(f"{address}: connection refused") from None
    except socket.gaierror:
        raise MicroSymError(f"{address}: unknown host '{host}'") from None
    except TimeoutError:  # socket.timeout is TimeoutError
        raise MicroSymError(f"{address}: no answer to a connection within {timeout:g} s") from None
    except OSError as err:
        raise MicroSymError(f"{address}: cannot connect ({err.strerror or err})") from None
    with sock:
        if scheme != "tcp":
            return
        head = _recv(sock, 8, deadline)
        if head is None:
            raise MicroSymError(f"{address}: not a Dask scheduler (no handshake within {timeout:g} s)")
        if len(head) < 8:
            raise MicroSymError(f"{address}: not a Dask scheduler (it closed the connection without a handshake)"
                                if not head else _foreign(address, head))
        (nbytes,) = struct.unpack("Q", head)
        if not 8 <= nbytes <= _MAX_HANDSHAKE_BYTES:
            sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            try:
                head += sock.recv(64)  # a little more of the reply, for the message
            except OSError:
                pass
            raise _foreign(address, head)
        body = _recv(sock, nbytes, deadline)
        if body is None:
            raise MicroSymError(f"{address}: not a Dask scheduler (no handshake within {timeout:g} s)")
        if len(body) < nbytes or not _is_handshake(body):
            raise _foreign(address, head + body)


def _recv(sock, n: int, deadline: float) -> bytes | None:
    """Up to ``n`` bytes before ``deadline``: fewer if the peer closes, None if the time runs out first."""
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            return None
        except OSError:
            return buf
        if not chunk:
            return buf
        buf += chunk
    return buf


def _is_handshake(body: bytes) -> bool:
    """Whether ``body`` decodes as the frames of a Dask comm handshake."""
    try:
        from distributed.protocol.core import loads
        from distributed.protocol.utils import unpack_frames

        msg = loads(unpack_frames(body))
    except Exception:  # any decoding error: not Dask's protocol
        return False
    return isinstance(msg, dict) and "python" in msg


def _foreign(address: str, data: bytes) -> MicroSymError:
    text = "".join(c if c.isprintable() else " " for c in data[:48].decode("latin-1")).strip()
    text = " ".join(text.split())
    return MicroSymError(f"{address}: not a Dask scheduler (it answered '{text}')" if text else
                         f"{address}: not a Dask scheduler (its reply is not a Dask handshake)")


class DaskRunner(Runner):
    """``distributed``: a LocalCluster of worker processes or an existing scheduler at ``tcp://``.

    ``connect_timeout``: seconds an existing scheduler has to answer (:func:`probe_scheduler`).
    """

    def __init__(self, address: str | None = None, workers: int | None = None, window: int | None = None,
                 connect_timeout: float | None = None):
        from distributed import Client, LocalCluster

        self.cluster = None
        if address is not None:
            probe_scheduler(address, HANDSHAKE_TIMEOUT if connect_timeout is None else float(connect_timeout))
        try:
            if address is None:
                n = workers or min(2, available_cores())
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=40)
                self.client = Client(self.cluster)
                self.name = "local-cluster"
            else:
                self.client = Client(address, timeout="20s")
                self.name = address
        except OSError as err:
            raise MicroSymError(f"{address or 'local-cluster'}: cannot start or reach the Dask scheduler ({err})") from None
        n_workers = len(self.client.scheduler_info().get("workers", {})) or 1
        threads = sum(w.get("nthreads", 1) for w in self.client.scheduler_info().get("workers", {}).values()) or 1
        super().__init__(n_workers, window or 2 * threads)
        self.threads = threads

    def bind(self, net, device):
        super().bind(net, device)
        # One copy of the bytes per worker; tasks receive a reference, not the payload.
        self.payload = self.client.scatter(net.to_bytes(), broadcast=True, hash=True)
        self.other_payloads = {}

    def net_ref(self, net=None):
        if net is None or net is self.net:
            return self.payload
        if net.sha256 not in self.other_payloads:  # another network: scattered once, when first needed
            self.other_payloads[net.sha256] = self.client.scatter(net.to_bytes(), broadcast=True, hash=True)
        return self.other_payloads[net.sha256]

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def _wait(self, pending):
        from distributed import wait as dwait

        done, _ = dwait(list(pending), return_when="FIRST_COMPLETED")
        return list(done)

    def close(self):
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def make_runner(scheduler: str = "threads", workers: int | None = None, window: int | None = None,
                connect_timeout: float | None = None) -> Runner:
    """A runner for ``threads`` | ``processes`` | ``local-cluster`` | ``tcp://HOST:PORT``.

    ``connect_timeout`` (default :data:`HANDSHAKE_TIMEOUT`): seconds a ``tcp://`` scheduler has to
    accept and send its handshake; past it, or with a peer that is not Dask, a one-line
    :class:`MicroSymError`.
    """
    if scheduler == "threads":
        return ThreadRunner(workers, window)
    if scheduler == "processes":
        return ProcessRunner(workers, window)
    if scheduler == "local-cluster":
        return DaskRunner(None, workers, window)
    if scheduler.startswith(("tcp://", "tls://")):
        return DaskRunner(scheduler, workers, window, connect_timeout)
    raise MicroSymError(f"--scheduler {scheduler}: expected threads, processes, local-cluster or tcp://HOST:PORT")
